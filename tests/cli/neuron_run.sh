#!/usr/bin/env bash
# tests/cli/neuron_run.sh — neuron-run as a user runs it, on the real SmolLM2 GGUF.
#
# Usage: neuron_run.sh PATH_TO_NEURON_RUN   (model from CORTEX_SMOLLM2_GGUF; exit 77 without it)
# Checks: a greedy chat answer to "What is the capital of France?" names Paris and the speed line
# is printed; --stats-json writes the documented fields with the right counts; --chat-template
# replaces the model's template (and a broken one is refused with its position); bad usage and
# a missing model file fail with a clear message and a non-zero status.
set -u
bin=$1
model=${CORTEX_SMOLLM2_GGUF:-}
[ -n "$model" ] && [ -f "$model" ] || { echo "CORTEX_SMOLLM2_GGUF not set: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
checks=0
check() { # check DESCRIPTION CONDITION...
    local what=$1
    shift
    checks=$((checks + 1))
    if "$@"; then echo "ok - $what"; else echo "not ok - $what"; failures=$((failures + 1)); fi
}

"$bin" -m "$model" -s "You are a helpful assistant." -p "What is the capital of France?" \
    --temp 0 -n 40 -t 2 --stats-json "$tmp/stats.json" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "exit status 0" [ $rc = 0 ]
check "the answer names Paris" grep -q Paris "$tmp/out"
check "the speed line is printed" grep -Eq 'prompt: [0-9]+ tokens .* tok/s\); decode: [0-9]+ tokens' "$tmp/err"
check "stats JSON has the documented fields" python3 - "$tmp/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["backend"] == "cpu" and s["threads"] == 2, s
assert s["prompt_tokens"] > 10 and s["prompt_ms"] > 0, s
assert 0 <= s["decode_tokens"] < 40 and s["finish_reason"] == "stop", s
PY

"$bin" -m "$model" -p "Count to one hundred:" --temp 0 -n 12 --ignore-eos -t 2 -q \
    --stats-json "$tmp/len.json" >/dev/null 2>&1
check "-n 12 decodes 11 steps after the first token and ends with length" python3 - "$tmp/len.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["decode_tokens"] == 11 and s["finish_reason"] == "length", s
PY

# --chat-template replaces the model's template: Qwen2.5's adds its own system message when
# the conversation has none, which SmolLM2's template never writes.
src=${CORTEX_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
"$bin" -m "$model" -p "Hi" --temp 0 -n 1 -t 2 --show-prompt \
    --chat-template "$src/tests/chat_templates/templates/qwen2.5.jinja" >/dev/null 2>"$tmp/qwen"
check "--chat-template renders with the given template" grep -q "You are Qwen, created by Alibaba Cloud" "$tmp/qwen"
"$bin" -m "$model" -p "Hi" --temp 0 -n 1 -t 2 --show-prompt >/dev/null 2>"$tmp/own"
check "without it the model's own template is used" bash -c '! grep -q "You are Qwen" "$0" && grep -q "<|im_start|>user" "$0"' "$tmp/own"
printf '{%% if %%}' >"$tmp/bad.jinja"
"$bin" -m "$model" -p "Hi" --chat-template "$tmp/bad.jinja" >/dev/null 2>"$tmp/badtmpl"
check "a broken --chat-template fails with its line and column" grep -q "the given chat template line 1 column" "$tmp/badtmpl"

"$bin" -p "hi" >/dev/null 2>"$tmp/usage"
check "a missing -m is a usage error" [ $? != 0 ]
check "the usage error says what is missing" grep -q -- "-m MODEL" "$tmp/usage"
"$bin" -m "$tmp/nope.gguf" -p "hi" >/dev/null 2>"$tmp/missing"
check "a missing model file fails" [ $? != 0 ]
check "the error names the file" grep -q "nope.gguf" "$tmp/missing"
"$bin" -m "$model" -p "hi" --temp abc >/dev/null 2>"$tmp/badtemp"
check "a bad --temp is refused with its range" grep -q -- "--temp expects a number" "$tmp/badtemp"

echo "$((checks - failures)) passed, $failures failed"
[ $failures = 0 ]
