#!/usr/bin/env bash
# bench/tp_allreduce.sh — tensor-parallel decode on two GPUs of one host: the peer-memory
# all-reduce's kernel test and the TP test, then neuron-bench on the 27B shape with the
# peer-memory all-reduce, with NCCL only (--no-custom-allreduce) and on one GPU, side by side in
# one run (docs/BENCHMARKS.md). Most important first: a run cut short keeps what matters.
#
#   bench/tp_allreduce.sh [BUILD_DIR [OUT_DIR]]   (BUILD_DIR default build/gpu, built elsewhere
#                                                  for this GPU; OUT_DIR default BUILD_DIR/tp-bench)
#
# BENCH_ARGS overrides the neuron-bench shapes (default: -b 1,8,32 -x 1024 -p 4096 -r 2).
# libnccl.so.2 is looked up where the binaries' loader does not find it (PyTorch's NVIDIA wheel).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/gpu}
out=${2:-$build/tp-bench}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 CORTEX_SOURCE_DIR=$root
if ! ldconfig -p | grep -q 'libnccl\.so\.2'; then
    lib=$(find /opt /usr /root -name 'libnccl.so.2' 2>/dev/null | head -1)
    [ -n "$lib" ] && export LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
args=${BENCH_ARGS:--b 1,8,32 -x 1024 -p 4096 -r 2}
bench="$build/neuron/neuron-bench -c $root/bench/configs/qwen36_27b.json $args"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
nvidia-smi topo -m >>"$out/gpus.txt" 2>&1

step() { # name seconds command...
    local name=$1 limit=$2
    shift 2
    printf '\n== %s\n' "$name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$out/$name.log"
    printf '== %s: exit %d\n' "$name" "$rc"
}
step allreduce_test 60 "$build/tests/kernels/test_cuda_allreduce"
step bench_tp2_peer 90 $bench --tp 2 --json "$out/tp2_peer.json"
step bench_tp2_nccl 90 $bench --tp 2 --no-custom-allreduce --json "$out/tp2_nccl.json"
step tp_test 150 "$build/tests/kernels/test_cuda_tp"
step bench_tp1 90 $bench --json "$out/tp1.json"
step paged_test 60 "$build/tests/kernels/test_cuda_paged"
grep -h -E '^(SUMMARY|FAIL)|timing:' "$out"/*_test.log
