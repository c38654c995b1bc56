#!/usr/bin/env bash
# tests/kernels/run_all.sh — builds the kernels and their tests for this machine's GPU and runs
# every kernel test, ending with a pass/fail table (one row per test program; each program
# prints its own table of cases above it).
#
#   tests/kernels/run_all.sh [BUILD_DIR]      (from anywhere; BUILD_DIR defaults to build/gpu)
#
# Needs only CUDA (nvcc), CMake and a C compiler: the build is configured with
# -DCORTEX_GPU_ONLY=ON, so no server library is needed. CUDA_ARCHS overrides the target GPUs
# (default: native, the GPU of this machine; without one, every supported GPU). KTEST_SEED=n
# repeats a run's random inputs. Each program's full output is also kept in
# BUILD_DIR/kernel-tests/<name>.log. Exits 1 when any test fails (a program that finds no GPU
# reports SKIP and does not fail the run). KTEST_NO_BUILD=1 skips the configure and build and
# runs the test programs already in BUILD_DIR/tests/kernels (built elsewhere for this GPU).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$root/build/gpu}
if [ -z "${CUDA_ARCHS:-}" ] && nvidia-smi -L >/dev/null 2>&1; then
    archs=native
else
    archs=${CUDA_ARCHS:-80;86;89;90} # no GPU here: build for all, the tests will skip
fi
jobs=$(nproc)

if [ "${KTEST_NO_BUILD:-0}" != 1 ]; then
    cmake -S "$root" -B "$build" -DCORTEX_GPU_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_ARCHITECTURES="$archs" >/dev/null || exit 1
    cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }
fi

export CORTEX_SOURCE_DIR=${CORTEX_SOURCE_DIR:-$root} # test_cuda_model reads tests/fixtures
logs=$build/kernel-tests
mkdir -p "$logs"
status=0
passed=0
summary=()
for exe in "$build"/tests/kernels/test_*; do
    [ -x "$exe" ] || continue
    name=${exe##*/}
    printf '\n== %s\n' "$name"
    "$exe" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^SUMMARY ' "$logs/$name.log" | tail -1)
    cases=$(sed -nE 's/.*: ([0-9]+) cases.*/\1/p' <<<"$line")
    failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
    case $rc in
    0) result=PASS ;;
    77) result=SKIP ;;
    *) result=FAIL status=1 ;;
    esac
    [ "$result" = PASS ] && passed=$((passed + 1))
    summary+=("$(printf '%-24s %6s %7s   %s (exit %d)' "$name" "${cases:--}" "${failed:--}" "$result" "$rc")")
done

printf '\n== kernel tests (%s)\n' "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
printf '%-24s %6s %7s   %s\n' test cases failed result
printf '%s\n' "${summary[@]}"
if [ $status != 0 ]; then
    echo "KERNEL TESTS FAILED"
elif [ $passed = 0 ]; then
    echo "NO KERNEL TEST RAN (no GPU here?)"
else
    echo "ALL KERNEL TESTS PASSED"
fi
exit $status
