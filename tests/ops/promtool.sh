#!/usr/bin/env bash
# tests/ops/promtool.sh — ops/prometheus/ through promtool: the scrape configuration, the alert
# rules, and the rules' unit tests (alerts_test.yml). Exit 77 when promtool is absent (Debian
# package prometheus; ops/lib/deps.sh installs it).
set -uo pipefail
src=${CORTEX_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not installed: skipped"
    exit 77
fi
cd "$src/ops/prometheus" || exit 1
fails=0
run() {
    if out=$("$@" 2>&1); then
        echo "ok   $*"
    else
        echo "FAIL $*"
        echo "$out"
        fails=$((fails + 1))
    fi
}
run promtool check config prometheus.yml
run promtool check rules alerts.yml
run promtool test rules alerts_test.yml
[ $fails = 0 ]
