# tests/integration/neuron/test_prefix_cache.py — prefix caching through the daemon: two
# requests sharing a long system prompt on a neuron saving prefixes every 32 tokens. The second
# reports usage.prompt_tokens_details.cached_tokens > 0 (a multiple of 32, below its prompt) and
# its greedy answer equals the same request answered cold by the session's neuron (whose
# 256-token interval is longer than these prompts, so it reads them whole); /metrics counts the
# lookups, the hit and its tokens. SmolLM2-135M-Instruct.
#
# Expected values come from the API contract and from the other requests' answers (the cold
# daemon's text, the prompt counts the server reports), never from constants it printed.
import json

import pytest

from conftest import MODEL, loaded_neuron

SYSTEM = ("You are the front desk assistant of the Harbour View Hotel. Guests ask about rooms, "
          "breakfast, parking and the spa. Breakfast is served from seven to ten in the garden "
          "room, parking costs twelve euros a night, the spa opens at nine, and late checkout "
          "can be booked at the desk. Answer politely, in one or two sentences, and never "
          "promise anything the hotel does not offer.")
INTERVAL = 32


@pytest.fixture(scope="module")
def cached():
    with loaded_neuron(["--prefix-interval", str(INTERVAL), "--prefix-cache-bytes", "64MiB"]) as n:
        yield n


def ask(n, user, stream=False):
    body = {"model": MODEL, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": user}]}
    if not stream:
        status, doc = n.json("POST", "/v1/chat/completions", body)
        assert status == 200, doc
        return doc["choices"][0]["message"]["content"], doc["usage"]
    body.update(stream=True, stream_options={"include_usage": True})
    status, _, data = n.request("POST", "/v1/chat/completions", body)
    assert status == 200
    text, usage = "", None
    for line in data.decode().splitlines():
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        for c in chunk.get("choices", []):
            text += c["delta"].get("content") or ""
        usage = chunk.get("usage") or usage
    return text, usage


def labels():
    return '{model="%s"}' % MODEL


def test_shared_system_prompt_hits(cached, neuron):
    lookups0 = cached.metric("cortex_neuron_prefix_cache_lookups_total", labels())
    hits0 = cached.metric("cortex_neuron_prefix_cache_hits_total", labels())
    tokens0 = cached.metric("cortex_neuron_prefix_cache_hit_tokens_total", labels())

    _, first = ask(cached, "Is there parking?")
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["prompt_tokens"] > 3 * INTERVAL

    text, second = ask(cached, "When is breakfast served?")
    hit = second["prompt_tokens_details"]["cached_tokens"]
    assert hit > 0 and hit % INTERVAL == 0, second
    assert hit < second["prompt_tokens"] and hit <= first["prompt_tokens"], second
    assert second["total_tokens"] == second["prompt_tokens"] + second["completion_tokens"]

    cold_text, cold = ask(neuron, "When is breakfast served?")
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    assert cold["prompt_tokens"] == second["prompt_tokens"]
    assert text == cold_text

    # the same prompt again, streamed: all of it saved but the last (partial) interval
    stream_text, again = ask(cached, "When is breakfast served?", stream=True)
    assert stream_text == cold_text
    want = (again["prompt_tokens"] - 1) // INTERVAL * INTERVAL
    assert again["prompt_tokens_details"]["cached_tokens"] == want, again

    cached.wait_idle()
    assert cached.metric("cortex_neuron_prefix_cache_lookups_total", labels()) == lookups0 + 3
    assert cached.metric("cortex_neuron_prefix_cache_hits_total", labels()) == hits0 + 2
    assert (cached.metric("cortex_neuron_prefix_cache_hit_tokens_total", labels())
            == tokens0 + hit + want)
    assert cached.metric("cortex_neuron_prefix_cache_entries", labels()) > 0
    assert cached.metric("cortex_neuron_prefix_cache_bytes", labels()) > 0
