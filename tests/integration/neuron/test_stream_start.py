# tests/integration/neuron/test_stream_start.py — what a stream tells its client before and
# after the tokens: headers, the X-Prompt-Tokens count and the role chunk go out before the
# prompt is read, ": keep-alive" comments flow while a long prompt is read, and the finish
# carries vLLM's stop_reason (the matched stop string, else null). SmolLM2-135M-Instruct.
#
# Expected values come from the API contract and from the server's own later answers
# (usage.prompt_tokens of the same request), never from constants it printed.
import http.client
import json
import time

import pytest

from conftest import MODEL, SYSTEM, loaded_neuron

PARIS = [{"role": "system", "content": SYSTEM},
         {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def pinging():
    """A neuron whose quiet streams get a keep-alive after 50 ms, reading 16 prompt tokens per
    step so a long prompt takes many steps."""
    with loaded_neuron(["--ping-interval", "50ms", "--prefill-chunk", "16"]) as n:
        yield n


def stream_lines(port, body):
    """POSTs a streaming chat request; returns (headers, [(seconds since send, line)])."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    headers = {k.lower(): v for k, v in resp.getheaders()}
    lines = [(time.monotonic() - t0, "<headers>")]
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line:
            lines.append((time.monotonic() - t0, line))
    conn.close()
    return headers, lines


def test_long_prompt_starts_at_once_and_keeps_alive(pinging):
    long_text = " ".join("The quick brown fox jumps over the lazy dog number %d." % i
                         for i in range(60))  # about 800 tokens
    headers, lines = stream_lines(pinging.port, {
        "model": MODEL, "temperature": 0, "max_tokens": 2, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": long_text + " Summarise."}]})
    kinds = []
    for _, line in lines:
        if line.startswith(": keep-alive"):
            kinds.append("ping")
        elif line.startswith("data: {"):
            doc = json.loads(line[6:])
            delta = doc["choices"][0]["delta"] if doc["choices"] else {}
            kinds.append("role" if delta.get("role") else
                         "content" if delta.get("content") else "other")
    usage = json.loads([l for _, l in lines if l.startswith("data: {")][-1][6:])
    prompt_ms = usage["timings"]["prompt_ms"]
    assert prompt_ms > 200, "the prompt was read too fast to test keep-alives: %r" % usage
    # The role chunk came first, then keep-alives while the prompt was read, then content.
    assert kinds[0] == "role", kinds
    first_content = kinds.index("content") if "content" in kinds else kinds.index("other")
    assert "ping" in kinds[1:first_content], kinds
    # The role chunk did not wait for the prompt to be read.
    t_role = next(t for t, l in lines if l.startswith("data: {"))
    t_done = lines[-1][0]
    assert t_role < t_done - prompt_ms / 1000.0 * 0.5, (t_role, t_done, prompt_ms)
    # X-Prompt-Tokens announced what usage reports at the end.
    assert int(headers["x-prompt-tokens"]) == usage["usage"]["prompt_tokens"] > 500


def test_stop_reason_names_the_matched_stop_string(neuron):
    client = neuron.client()
    full = client.chat.completions.create(model=MODEL, messages=PARIS, temperature=0,
                                          max_tokens=40)
    assert " Paris" in full.choices[0].message.content
    assert full.choices[0].model_extra.get("stop_reason") is None
    r = client.chat.completions.create(model=MODEL, messages=PARIS, temperature=0, max_tokens=40,
                                       stop=["never-appears", " Paris"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].model_extra["stop_reason"] == " Paris"
    finish = [c.choices[0] for c in client.chat.completions.create(
        model=MODEL, messages=PARIS, temperature=0, max_tokens=40, stop=[" Paris"], stream=True)
        if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["stop_reason"] == " Paris"
    # An answer ended by its length names no stop string.
    r = client.chat.completions.create(model=MODEL, messages=PARIS, temperature=0, max_tokens=1,
                                       stop=[" Paris"])
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].model_extra.get("stop_reason") is None
