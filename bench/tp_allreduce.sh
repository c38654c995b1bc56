#!/usr/bin/env bash
# bench/tp_allreduce.sh — tensor-parallel decode on two GPUs of one host: the peer-memory
# all-reduce's kernel test and the TP test, then neuron-bench on the 27B shape with the
# peer-memory all-reduce, with NCCL only (--no-custom-allreduce) and on one GPU, side by side in
# one run (docs/BENCHMARKS.md). Most important first: a run cut short keeps what matters.
#
#   bench/tp_allreduce.sh [BUILD_DIR [OUT_DIR]]   (BUILD_DIR default build/gpu, built elsewhere
#                                                  for this GPU; OUT_DIR default BUILD_DIR/tp-bench)
#
# BENCH_ARGS overrides the neuron-bench shapes (default: -b 1,8,32 -x 1024 -p 512,4096 -r 3).
# Writes one log per step plus gpus.txt (7 files). NCCL: PyTorch's NVIDIA wheel when the
# loader finds none (the GPU machines' image), with NCCL_DEBUG=WARN so its reasons are logged.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/gpu}
out=${2:-$build/tp-bench}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 NCCL_DEBUG=${NCCL_DEBUG:-WARN} CORTEX_SOURCE_DIR=$root
if ! ldconfig -p | grep -q 'libnccl\.so\.2'; then
    dir=$(python3 -c 'import os, nvidia.nccl as m; print(os.path.join(list(m.__path__)[0], "lib"))' \
        2>/dev/null)
    [ -e "$dir/libnccl.so.2" ] || dir=$(dirname "$(find /opt /usr -name libnccl.so.2 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
args=${BENCH_ARGS:--b 1,8,32 -x 1024 -p 512,4096 -r 3}
bench="$build/neuron/neuron-bench -c $root/bench/configs/qwen36_27b.json $args"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvidia-smi topo -m
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$build/neuron/neuron-bench" | grep nccl
} >"$out/gpus.txt" 2>&1
cat "$out/gpus.txt"

step() { # name seconds command...
    local name=$1 limit=$2
    shift 2
    printf '\n== %s\n' "$name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    grep -v '^PASS ' "$out/$name.log" | tail -n 30
    printf '== %s: exit %d\n' "$name" "$rc"
}
step allreduce_test 60 "$build/tests/kernels/test_cuda_allreduce"
step bench_tp2_peer 120 $bench --tp 2
step bench_tp2_nccl 120 $bench --tp 2 --no-custom-allreduce
step tp_test 150 "$build/tests/kernels/test_cuda_tp"
step bench_tp1 120 $bench
step paged_test 60 "$build/tests/kernels/test_cuda_paged"
