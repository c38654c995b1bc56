#!/usr/bin/env bash
# bench/launch_overlap.sh — the decode kernels launched plainly vs with programmatic dependent
# launch and L2 prefetch of the products' weights (kernels/cuda_launch.cuh), side by side in
# one run on one GPU: neuron-bench on the TP-2 rank shape (bench/configs/qwen36_27b_tp2_rank.json,
# what one GPU of a pair streams per step, without the all-reduces) and on the whole 27B shape.
# Plain and overlapped runs alternate, ROUNDS times (default 2), so drift of the card hits both;
# each line is one process (its own medians of -r repeats).
#
#   bench/launch_overlap.sh [BUILD_DIR]     (BUILD_DIR default build/gpu, built for this GPU)
#
# PREFETCH_MB (default "0 8 16 32") lists the prefetch sizes tried on the rank shape;
# RANK_ARGS / FULL_ARGS override the neuron-bench shapes. Prints one summary line per run:
# shape, mode, then neuron-bench's decode and prefill lines.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/gpu}
bench=$build/neuron/neuron-bench
rounds=${ROUNDS:-2}
rank_args=${RANK_ARGS:--b 1,8 -x 1024 -p 0 -r 3 -s 32}
full_args=${FULL_ARGS:--b 1,8,32 -x 1024 -p 4096 -r 3}
[ -x "$bench" ] || { echo "launch_overlap.sh: no $bench (build it first)" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader

one() { # label config args...
    local label=$1 config=$2
    shift 2
    printf '\n== %s\n' "$label"
    timeout 300 "$bench" -c "$root/bench/configs/$config" "$@" 2>&1 |
        grep -E 'neuron-bench|decode|prefill|^ *[0-9]|error' | head -20
}

for r in $(seq "$rounds"); do
    one "rank shape, plain (round $r)" qwen36_27b_tp2_rank.json $rank_args --no-overlap
    for mb in ${PREFETCH_MB:-0 8 16 32}; do
        one "rank shape, overlap, prefetch $mb MiB (round $r)" qwen36_27b_tp2_rank.json \
            $rank_args --prefetch-mb "$mb"
    done
done
for r in $(seq "$rounds"); do
    one "27B, plain (round $r)" qwen36_27b.json $full_args --no-overlap
    one "27B, overlap (round $r)" qwen36_27b.json $full_args
done
