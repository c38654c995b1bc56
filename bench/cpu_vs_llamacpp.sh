#!/usr/bin/env bash
# bench/cpu_vs_llamacpp.sh — build an optimised neuron-run, then run bench/cpu_vs_llamacpp.py.
#
# The test build (ops/test) has ASan/UBSan and -O0, which says nothing about speed, so this makes
# a separate Release build without sanitizers in $CORTEX_BUILD/release (default build/release)
# and hands its neuron-run to the benchmark. Every argument goes to the Python script
# (--runs, --threads, --record, --note, ...); with --llama-only nothing is built.
#
# Environment: CORTEX_CACHE (llama.cpp virtualenv, models; default ~/.cache/cortex),
# CORTEX_BUILD (build root; default ./build), JOBS (build parallelism; default nproc).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=SCRIPTDIR/../ops/lib/deps.sh
source ops/lib/deps.sh

build=${CORTEX_BUILD:-$root/build}/release
jobs=${JOBS:-$(nproc)}

llama_only=0
for a in "$@"; do
    [ "$a" = --llama-only ] && llama_only=1
done

if [ "$llama_only" = 0 ]; then
    if [ ! -f neuron/neuron_run.c ]; then
        echo "cpu_vs_llamacpp: this tree has no neuron-run yet (neuron/neuron_run.c);" \
            "measure the llama.cpp side alone with --llama-only" >&2
        exit 2
    fi
    deps_apt
    echo "== building neuron-run (Release, no sanitizers) in $build" >&2
    mkdir -p "$build"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCORTEX_CUDA=OFF -DCORTEX_ASAN=OFF \
        -DCORTEX_UBSAN=OFF >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log" >&2; exit 1; }
    cmake --build "$build" -j "$jobs" --target neuron-run >&2
    set -- --neuron-run "$build/neuron/neuron-run" "$@"
fi
exec python3 bench/cpu_vs_llamacpp.py "$@"
