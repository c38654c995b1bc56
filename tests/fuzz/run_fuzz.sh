#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh — builds tests/fuzz/fuzz_translate.c with clang's libFuzzer (plus
# ASan and UBSan) and runs it for a bounded time; registered with ctest as fuzz/translate.
#
#   run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS]
#
# SECONDS defaults to $CORTEX_FUZZ_SECONDS or 60. The seed corpus is made fresh from the
# hand-written cases of tests/unit/gateway/cases/ (one input per request, response and stream
# case) and tests/fuzz/seeds/; what libFuzzer finds accumulates in WORK_DIR/corpus across runs.
# A crash leaves its input in WORK_DIR/crash-* and fails the test; reproduce with
# WORK_DIR/fuzz_translate WORK_DIR/crash-….
# Exits 77 (skipped) when clang or its libFuzzer runtime is missing (ops/lib/deps.sh installs
# both).
set -euo pipefail
src=$(cd "$1" && pwd)
work=$2
seconds=${3:-${CORTEX_FUZZ_SECONDS:-60}}
mkdir -p "$work/corpus"
work=$(cd "$work" && pwd)

cc=${CORTEX_FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then
    echo "skipped: $cc not found"
    exit 77
fi
probe="$work/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return d && n; }' >"$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$work/probe" 2>/dev/null; then
    echo "skipped: $cc has no libFuzzer runtime"
    exit 77
fi

echo "== building fuzz_translate with $cc"
# shellcheck disable=SC2046
"$cc" -std=c11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -I"$src/common" -I"$src/gateway" $(pkg-config --cflags jansson) \
    "$src/tests/fuzz/fuzz_translate.c" "$src/gateway/anthropic.c" "$src/gateway/openai.c" \
    "$src/common/error.c" "$src/common/jsonutil.c" "$src/common/buf.c" "$src/common/xalloc.c" \
    "$src/common/ids.c" $(pkg-config --libs jansson) -lm -o "$work/fuzz_translate"

seeds="$work/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"
find "$src/tests/fuzz/seeds" -maxdepth 1 -type f ! -name README.md -exec cp {} "$seeds"/ \;
if command -v python3 >/dev/null; then
    python3 - "$src/tests/unit/gateway/cases" "$seeds" <<'PY'
import json, os, sys
cases, out = sys.argv[1], sys.argv[2]
n = 0
def put(mode, payload):
    global n
    n += 1
    with open(os.path.join(out, "case-%04d" % n), "wb") as f:
        f.write(bytes([mode]) + (payload if isinstance(payload, bytes) else payload.encode()))
for name in sorted(os.listdir(cases)):
    if not name.endswith(".json"):  # the folder's README
        continue
    for c in json.load(open(os.path.join(cases, name))):
        if name.endswith("_request.json"):
            put(0, json.dumps(c["input"]))
        elif name == "anthropic_response.json":
            put(1, json.dumps(c["input"]))
        elif name == "anthropic_stream.json":
            put(2, "\n".join(d if isinstance(d, str) else json.dumps(d) for d in c["data"]))
        elif name == "openai_upstream_error.json":
            status = c["status"]
            put(3, bytes([status >> 8, status & 255]) + json.dumps(c["body"]).encode())
print("seeds from cases:", n)
PY
fi

echo "== fuzzing for ${seconds}s"
cd "$work"
"$work/fuzz_translate" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/" \
    -dict="$src/tests/fuzz/translate.dict" "$work/corpus" "$seeds"
