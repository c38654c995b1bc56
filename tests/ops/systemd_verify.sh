#!/usr/bin/env bash
# tests/ops/systemd_verify.sh — `systemd-analyze verify` on the units in ops/systemd/.
#
# Usage: systemd_verify.sh GATEWAY_BIN SCHEDULER_BIN NEURON_BIN
# The units name the installed paths (/usr/bin/...), which verify requires to exist, so they are
# checked from a copy whose ExecStart points at the binaries just built; nothing else changes.
# Also checks the hardening every unit must keep and that each names its env file. Fails on any
# message from verify (warnings included), exits 77 when systemd-analyze is absent. systemd need
# not be PID 1: verify reads unit files only.
set -euo pipefail
src=${CORTEX_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not installed: skipped"
    exit 77
fi
[ $# -eq 3 ] || { echo "usage: $0 GATEWAY_BIN SCHEDULER_BIN NEURON_BIN" >&2; exit 2; }
declare -A bin=([cortex-gateway]=$(realpath "$1") [cortex-scheduler]=$(realpath "$2") [neuron]=$(realpath "$3"))
declare -A envfile=([cortex-gateway]=gateway [cortex-scheduler]=scheduler [neuron]=neuron)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for unit in cortex-gateway cortex-scheduler neuron; do
    f=$src/ops/systemd/$unit.service
    grep -q "^ExecStart=/usr/bin/$unit\$" "$f" || { echo "FAIL $unit: ExecStart is not /usr/bin/$unit"; fail=1; }
    grep -q "^EnvironmentFile=/etc/cortex/${envfile[$unit]}.env\$" "$f" ||
        { echo "FAIL $unit: no EnvironmentFile=/etc/cortex/${envfile[$unit]}.env"; fail=1; }
    [ -f "$src/ops/systemd/${envfile[$unit]}.env" ] || { echo "FAIL no sample ops/systemd/${envfile[$unit]}.env"; fail=1; }
    for want in User=cortex Group=cortex ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
        NoNewPrivileges=yes 'Restart=\(on-failure\|always\)' 'RestartSec=[0-9]'; do
        grep -q "^$want" "$f" || { echo "FAIL $unit: missing $want"; fail=1; }
    done
    sed "s#^ExecStart=/usr/bin/$unit#ExecStart=${bin[$unit]}#" "$f" >"$tmp/$unit.service"
done
# the retention job: a oneshot on psql with the scheduler's settings, and its timer
grep -q '^EnvironmentFile=/etc/cortex/scheduler.env$' "$src/ops/systemd/cortex-retention.service" ||
    { echo "FAIL cortex-retention.service: not on /etc/cortex/scheduler.env"; fail=1; }
cp "$src/ops/systemd/cortex-retention.service" "$src/ops/systemd/cortex-retention.timer" "$tmp/"
if ! command -v psql >/dev/null 2>&1; then
    echo "note: no psql here; cortex-retention.service's ExecStart is checked against a stand-in"
    mkdir -p "$tmp/bin" && printf '#!/bin/sh\n' >"$tmp/bin/psql" && chmod +x "$tmp/bin/psql"
    sed -i "s#^ExecStart=/usr/bin/psql#ExecStart=$tmp/bin/psql#" "$tmp/cortex-retention.service"
fi
if ! out=$(cd "$tmp" && systemd-analyze verify ./*.service ./*.timer 2>&1) || [ -n "$out" ]; then
    echo "FAIL systemd-analyze verify:"
    echo "$out"
    fail=1
else
    echo "ok systemd-analyze verify:" $(cd "$tmp" && ls ./*.service ./*.timer | sed 's#^./##')
fi
exit $fail
