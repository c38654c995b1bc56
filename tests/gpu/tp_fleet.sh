#!/usr/bin/env bash
# tests/gpu/tp_fleet.sh — a tensor-parallel model placed by the scheduler and served by the
# neuron end to end on one GPU host: a local PostgreSQL, the migrations, a neuron over the GPUs,
# the scheduler and a gateway, all started here; prints a PASS/FAIL table.
#
# Usage: tests/gpu/tp_fleet.sh [BUNDLE] [--harness] [--tp N]
#   BUNDLE: a folder made by tests/gpu/bundle.sh (bin/neuron, bin/cortex-scheduler,
#     bin/cortex-gateway, bin/cortex, lib/) with tests/gpu/bundle_pg.sh's output in BUNDLE/pg,
#     for a GPU machine without PostgreSQL, libpq or libmicrohttpd. Without it the programs come
#     from $CORTEX_NEURON_BIN, $CORTEX_SCHEDULER_BIN, $CORTEX_GATEWAY_BIN and $CORTEX_CLI_BIN
#     (default: build-cuda-rel/...; cortex beside cortex-scheduler) and PostgreSQL 15 from
#     /usr/lib/postgresql/15/bin or PATH (exit 77 when there is none).
#   --harness: no GPU needed: the neuron offers N made-up GPUs computed on the CPU (--test-gpus),
#     so everything but the GPU-only checks runs anywhere (ctest gpu/tp-fleet-harness).
#   --tp N: the tensor-parallel degree (default 2; the fixtures' heads divide by 2 only).
# NCCL: taken from the host (ldconfig, else PyTorch's nvidia-nccl wheel), never bundled.
# Logs and tp_fleet.json go to $OUT when set, else to a temporary folder named at the end
# (removed when every check passed). Exit status: 0 all passed, 1 a check failed, 77 skipped.
# What is checked: tests/gpu/README.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
bundle=
if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    bundle=$(cd "$1" && pwd)
    shift
fi
libs=
pglib=
if [ -n "$bundle" ]; then
    neuron=$bundle/bin/neuron scheduler=$bundle/bin/cortex-scheduler
    gateway=$bundle/bin/cortex-gateway cli=$bundle/bin/cortex
    libs=$bundle/lib
    pgbin=$bundle/pg/usr/lib/postgresql/15/bin
    pglib=$bundle/pg/lib
else
    neuron=${CORTEX_NEURON_BIN:-$src/build-cuda-rel/neuron/neuron}
    scheduler=${CORTEX_SCHEDULER_BIN:-$src/build-cuda-rel/scheduler/cortex-scheduler}
    gateway=${CORTEX_GATEWAY_BIN:-$src/build-cuda-rel/gateway/cortex-gateway}
    cli=${CORTEX_CLI_BIN:-$(dirname "$scheduler")/cortex}
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        pgbin=/usr/lib/postgresql/15/bin
    elif command -v pg_ctl >/dev/null 2>&1; then
        pgbin=$(dirname "$(command -v pg_ctl)")
    else
        echo "no PostgreSQL server here (and no bundle): skipped" >&2
        exit 77
    fi
fi
for b in "$neuron" "$scheduler" "$gateway" "$cli" "$pgbin/postgres" "$pgbin/initdb" "$pgbin/psql"; do
    [ -x "$b" ] || { echo "missing program $b" >&2; exit 1; }
done
# NCCL is the host's (the CUDA toolkit's, or PyTorch's wheel where the system has none)
ldpath=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if LD_LIBRARY_PATH=$ldpath ldd "$neuron" | grep -q "libnccl.*not found"; then
    nccl=$(python3 -c 'import os, nvidia.nccl as m; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null || true)
    [ -e "$nccl/libnccl.so.2" ] || nccl=$(dirname "$(find /opt /usr -name libnccl.so.2 2>/dev/null | head -1)")
    ldpath=$ldpath:$nccl
    libs=$libs:$nccl
fi
if LD_LIBRARY_PATH=$ldpath ldd "$neuron" | grep -q "not found"; then
    echo "the neuron cannot start here, libraries missing (use tests/gpu/bundle.sh):" >&2
    LD_LIBRARY_PATH=$ldpath ldd "$neuron" | grep "not found" >&2
    exit 1
fi
args=(--neuron "$neuron" --scheduler "$scheduler" --gateway "$gateway" --cli "$cli"
    --source "$src" --pg-bin "$pgbin")
[ -n "$libs" ] && args+=(--lib-path "${libs#:}")
[ -n "$pglib" ] && args+=(--pg-lib "$pglib")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec env PYTHONUNBUFFERED=1 python3 "$here/tp_fleet.py" "${args[@]}" "$@"
