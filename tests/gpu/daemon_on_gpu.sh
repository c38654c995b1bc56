#!/usr/bin/env bash
# tests/gpu/daemon_on_gpu.sh — the real neuron daemon serving the tiny fixture models on a GPU,
# checked against the same daemon on the CPU; prints a PASS/FAIL table.
#
# Usage: tests/gpu/daemon_on_gpu.sh [NEURON_OR_BUNDLE] [--device cuda:N]
#   NEURON_OR_BUNDLE: a CUDA build's neuron binary, or a folder made by tests/gpu/bundle.sh
#     (bin/neuron + lib/, used through LD_LIBRARY_PATH); default $CORTEX_NEURON_BIN, else
#     build-cuda-rel/neuron/neuron
#   --device: the GPU under test (default cuda:0); --device cpu checks the harness itself on a
#     machine without a GPU (both daemons on the CPU, GPU-only checks skipped)
# Logs (both daemons' logs, daemon_on_gpu.json) go to $OUT when set, else to a temporary folder
# named at the end (and removed when every check passed). Exit status: 0 all passed, 1 a check failed, 77 no GPU seen (skipped).
# What is checked: tests/gpu/README.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
target=${CORTEX_NEURON_BIN:-$src/build-cuda-rel/neuron/neuron}
if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    target=$1
    shift
fi
# the bundle's libraries are for the daemons only: python3 and nvidia-smi keep the host's
libs=
if [ -d "$target" ]; then
    libs=$target/lib
    target=$target/bin/neuron
fi
[ -x "$target" ] || { echo "no neuron binary at $target" >&2; exit 1; }
if LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$target" | grep -q "not found"; then
    echo "the neuron cannot start here, libraries missing (use tests/gpu/bundle.sh):" >&2
    LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$target" | grep "not found" >&2
    exit 1
fi
out=${OUT:-}
args=(--neuron "$target" --fixtures "$src/tests/fixtures")
[ -n "$libs" ] && args+=(--lib-path "$libs")
[ -n "$out" ] && args+=(--out "$out")
exec env PYTHONUNBUFFERED=1 python3 "$here/daemon_on_gpu.py" "${args[@]}" "$@"
