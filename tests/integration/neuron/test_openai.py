# tests/integration/neuron/test_openai.py — the neuron's OpenAI dialect through the official
# openai SDK (and raw HTTP for what the SDK cannot send), on SmolLM2-135M-Instruct.
#
# Expected values come from the model's known answer (Paris), from the API contract
# (finish reasons, chunk order, usage arithmetic, error forms) and from comparing the server
# with itself under different conditions (alone vs 16 at once, with vs without a stop string,
# its own chat template vs one given with --chat-template), never from constants the server
# printed.
import concurrent.futures
import json
import os
import time

import openai
import pytest

from conftest import MODEL, SYSTEM, Neuron, loaded_neuron

SRC = os.environ.get("CORTEX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../../.."))

PARIS = [{"role": "system", "content": SYSTEM},
         {"role": "user", "content": "What is the capital of France?"}]


def chat(client, messages=PARIS, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)


def test_models_lists_the_gguf_and_its_state(neuron):
    status, doc = neuron.json("GET", "/models")
    assert status == 200
    avail = {m["name"]: m for m in doc["available"]}
    m = avail[MODEL]
    assert m["format"] == "gguf" and m["architecture"] == "llama"
    assert m["size_bytes"] > 50_000_000 and m["weights_bytes"] <= m["size_bytes"]
    assert m["estimated_memory_bytes"] > m["weights_bytes"]
    loaded = neuron.loaded()
    assert loaded["state"] == "ready" and loaded["devices"] == ["cpu"]
    assert loaded["progress"]["bytes_read"] == loaded["progress"]["bytes_total"] == m["size_bytes"]
    assert loaded["memory_bytes"] == m["estimated_memory_bytes"]
    assert loaded["cache_budget_bytes"] == m["estimated_memory_bytes"] - m["weights_bytes"]
    assert loaded["cache_bytes"] == 0  # nothing runs
    assert doc["memory"]["used_bytes"] == m["estimated_memory_bytes"]
    # a host without GPUs (and this CPU-only build) has one device: the CPU with the budget
    (dev,) = doc["devices"]
    assert dev["id"] == "cpu" and dev["kind"] == "cpu" and dev["ordinal"] == 0
    assert dev["budget_bytes"] == dev["memory_total_bytes"] == doc["memory"]["budget_bytes"]
    assert dev["used_bytes"] == m["estimated_memory_bytes"]
    assert dev["free_bytes"] == dev["budget_bytes"] - dev["used_bytes"]
    assert "uuid" not in dev
    status, health = neuron.json("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["models_ready"] == 1
    ids = [m.id for m in neuron.client().models.list()]
    assert ids == [MODEL]


def test_chat_non_streaming_answers_paris(client):
    r = chat(client, max_tokens=40)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert "Paris" in c.message.content
    assert c.finish_reason == "stop"
    assert r.usage.prompt_tokens > 10 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_final_object_carries_timings(neuron):
    status, doc = neuron.json("POST", "/v1/chat/completions",
                              {"model": MODEL, "messages": PARIS, "temperature": 0,
                               "max_tokens": 5})
    assert status == 200
    t = doc["timings"]
    assert t["prompt_tokens"] == doc["usage"]["prompt_tokens"]
    assert t["prompt_ms"] > 0 and t["queue_ms"] >= 0
    assert t["decode_tokens"] == doc["usage"]["completion_tokens"] - 1
    assert t["decode_per_second"] > 0


def test_chat_streaming_with_usage_matches_non_streaming(client):
    full = chat(client, max_tokens=40).choices[0].message.content
    stream = chat(client, max_tokens=40, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_stream_ends_with_done(neuron):
    status, headers, data = neuron.request(
        "POST", "/v1/chat/completions",
        {"model": MODEL, "messages": PARIS, "temperature": 0, "max_tokens": 3, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in data.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])
    assert "usage" not in json.loads(events[-2][6:])  # no usage chunk unless asked for


def test_stop_string_cuts_the_answer(client):
    full = chat(client, max_tokens=40).choices[0].message.content
    assert " Paris" in full
    r = chat(client, max_tokens=40, stop=[" Paris", "never-appears"])
    assert r.choices[0].message.content == full[:full.index(" Paris")]
    assert r.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(client):
    r = chat(client, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = chat(client, max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_completions_and_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4,
                                  temperature=0, logprobs=2)
    c = r.choices[0]
    assert r.object == "text_completion" and c.finish_reason == "length"
    assert "Paris" in c.text
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text and len(lp.token_logprobs) == 4
    # greedy: each chosen token is the most likely alternative
    for tok, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert p <= 0 and max(top.values()) == pytest.approx(p) and top[tok] == pytest.approx(p)


def test_tokenize_counts_like_usage(neuron, client):
    status, doc = neuron.json("POST", "/tokenize", {"model": MODEL, "messages": PARIS})
    assert status == 200
    r = chat(client, max_tokens=1)
    assert doc["count"] == len(doc["ids"]) == r.usage.prompt_tokens
    assert doc["max_context"] == 1024


def stream_completion(client, prompt, max_tokens):
    """Streams one greedy completion; returns (text, completion tokens from usage)."""
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    text, tokens = "", None
    for c in stream:
        if c.choices:
            text += c.choices[0].text
        if c.usage:
            tokens = c.usage.completion_tokens
    assert tokens is not None
    return text, tokens


def test_sixteen_concurrent_streams_equal_their_solo_text_and_beat_its_speed(neuron, client):
    """Each round reads the four prompts one at a time (single-stream tokens per second of wall
    time), then sixteen streams of them at once (aggregate tokens per second), back to back so
    both see the same machine. Batching must give more than 1.25x (1.7-1.8x was measured under
    ASan on 2 busy cores); other work on a loaded test machine slows single rounds, so up to three
    rounds are measured and the best one counts."""
    prompts = ["The capital of France is", "One, two, three,", "Water is made of",
               "The sun rises in the"]
    jobs = [prompts[i % len(prompts)] for i in range(16)]
    label = '{model="smollm2"}'
    ratios, steps, seqs = [], 0, 0
    for _ in range(3):
        t0 = time.monotonic()
        alone = {p: stream_completion(client, p, 16) for p in prompts}
        solo_rate = sum(n for _, n in alone.values()) / (time.monotonic() - t0)
        assert all(text for text, _ in alone.values())
        steps -= neuron.metric("cortex_neuron_batch_steps_total", label)
        seqs -= neuron.metric("cortex_neuron_batch_sequences_total", label)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda p: stream_completion(client, p, 16), jobs))
        together_rate = sum(n for _, n in results) / (time.monotonic() - t0)
        steps += neuron.metric("cortex_neuron_batch_steps_total", label)
        seqs += neuron.metric("cortex_neuron_batch_sequences_total", label)
        for p, (text, n) in zip(jobs, results):
            assert (text, n) == alone[p], (p, text, alone[p])
        ratios.append(together_rate / solo_rate)
        if ratios[-1] > 1.25:
            break
    print("aggregate / single-stream tokens per second: %s" % ", ".join("%.2f" % r for r in ratios))
    assert max(ratios) > 1.25, "16 streams at once were not faster than one: %s" % ratios
    # the model passes of the concurrent phases really ran many sequences each
    assert seqs / steps > 4, "requests were not batched together (mean batch %.1f)" % (seqs / steps)
    neuron.wait_idle()


def test_client_disconnect_frees_the_sequence(neuron, client):
    cancelled = neuron.metric("cortex_neuron_generations_total", '{finish="cancelled"}')
    generated = neuron.metric("cortex_neuron_tokens_generated_total", '{model="smollm2"}')
    stream = client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=500,
                                       temperature=0, stream=True)
    got = 0
    for chunk in stream:
        got += 1
        if got == 3:
            break
    # the stats of the step before the third chunk are out: the running sequence's cache counts
    cache = neuron.metric("cortex_neuron_cache_bytes", '{model="smollm2"}')
    budget = neuron.metric("cortex_neuron_cache_budget_bytes", '{model="smollm2"}')
    assert 0 < cache < budget
    assert budget == neuron.loaded()["cache_budget_bytes"]
    stream.close()
    m = neuron.wait_idle()
    assert m["active_sequences"] == 0 and m["queued_requests"] == 0
    assert m["cache_bytes"] == 0
    assert neuron.metric("cortex_neuron_cache_bytes", '{model="smollm2"}') == 0
    deadline = time.monotonic() + 30
    while neuron.metric("cortex_neuron_generations_total", '{finish="cancelled"}') == cancelled:
        assert time.monotonic() < deadline, "the cancelled generation was never counted"
        time.sleep(0.05)
    made = neuron.metric("cortex_neuron_tokens_generated_total", '{model="smollm2"}') - generated
    assert made < 500, "the generation ran to the end instead of being cancelled"


def error_of(neuron, body=None, raw=None):
    status, headers, data = neuron.request("POST", "/v1/chat/completions", body, raw=raw)
    doc = json.loads(data)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    return status, doc["error"], headers


def test_bad_input_gets_openai_errors_and_the_daemon_stays_up(neuron, client):
    status, err, _ = error_of(neuron, raw=b'{"model": "smollm2", "messages": [')
    assert status == 400 and err["type"] == "invalid_request_error"
    assert "invalid JSON" in err["message"]

    status, err, _ = error_of(neuron, {"model": MODEL, "messages": PARIS, "max_tokens": "ten"})
    assert status == 400 and err["param"] == "max_tokens" and "integer" in err["message"]
    status, err, _ = error_of(neuron, {"model": MODEL, "messages": "hello"})
    assert status == 400 and err["param"] == "messages"
    status, err, _ = error_of(neuron, {"model": MODEL, "messages": [{"role": "wizard",
                                                                      "content": "x"}]})
    assert status == 400 and err["param"] == "messages[0]"
    status, err, _ = error_of(neuron, {"model": MODEL, "messages": PARIS, "temperature": "hot"})
    assert status == 400 and err["param"] == "temperature"
    status, err, _ = error_of(neuron, {"model": 42, "messages": PARIS})
    assert status == 400 and err["param"] == "model"

    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=PARIS)
    assert e.value.status_code == 404 and e.value.code == "model_not_found"

    big = b'{"model": "smollm2", "messages": [{"role": "user", "content": "' + \
        b"x" * (10 * 1024 * 1024) + b'"}]}'
    status, err, _ = error_of(neuron, raw=big)
    assert status == 413

    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": "hello " * 3000}])
    msg = e.value.body["message"]
    assert e.value.status_code == 400 and "prompt is too long" in msg
    n_tokens = int(msg.split("prompt is too long: ")[1].split(" tokens")[0])
    assert n_tokens > 3000 and "1023" in msg

    status, health = neuron.json("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert "Paris" in chat(client, max_tokens=30).choices[0].message.content


@pytest.fixture(scope="module")
def small_neuron():
    """A daemon whose model runs one sequence at a time with no queue: the 503 path."""
    with loaded_neuron(["--max-batch", "1", "--queue-depth", "0"]) as n:
        yield n


def test_full_queue_answers_503_with_retry_after(small_neuron):
    client = small_neuron.client()
    stream = client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=300,
                                       temperature=0, stream=True)
    next(iter(stream))  # admitted and running
    status, headers, data = small_neuron.request(
        "POST", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2})
    assert status == 503 and "retry-after" in headers
    assert json.loads(data)["error"]["type"]
    stream.close()
    small_neuron.wait_idle()
    r = client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_unload_frees_memory_and_load_refuses_over_budget(small_neuron):
    status, doc = small_neuron.json("POST", "/models/unload", {"model": MODEL})
    assert status == 202 and doc["state"] == "unloading"
    deadline = time.monotonic() + 60
    while small_neuron.loaded() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _, doc = small_neuron.json("GET", "/models")
    assert doc["memory"]["used_bytes"] == 0
    with pytest.raises(openai.NotFoundError):
        small_neuron.client().completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    status, doc = small_neuron.json("POST", "/models/unload", {"model": MODEL})
    assert status == 404
    status, doc = small_neuron.json("POST", "/models/load", {"model": "no-such-model"})
    assert status == 404 and doc["error"]["code"] == "model_not_found"
    status, doc = small_neuron.json("POST", "/models/load", {"model": MODEL, "devices": [3]})
    assert status == 400 and doc["error"]["param"] == "devices"


def test_memory_budget_refuses_with_409():
    n = Neuron(["--memory-budget", "64MiB"])
    try:
        status, doc = n.json("POST", "/models/load", {"model": MODEL})
        assert status == 409 and "memory budget" in doc["error"]["message"]
        assert n.loaded() is None
    finally:
        assert n.stop() == 0


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def weather_messages():
    """SmolLM2's template has no tool section, so two worked examples teach the call format;
    greedy decoding then calls the tool for Paris in the same format."""
    msgs = [{"role": "system", "content": "You answer every question by calling the get_weather "
             "tool: write <tool_call>, a JSON object with name and arguments, then </tool_call>."}]
    for city in ("Rome", "Berlin"):
        msgs.append({"role": "user", "content": "What is the weather in %s?" % city})
        msgs.append({"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", '
                     '"arguments": {"city": "%s"}}\n</tool_call>' % city})
    msgs.append({"role": "user", "content": "What is the weather in Paris?"})
    return msgs


def test_tool_call_round_trip(client):
    r = chat(client, messages=weather_messages(), tools=[WEATHER_TOOL], max_tokens=60)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and not c.message.content
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")

    # streamed: first delta of the call has index, id, type, name and empty arguments; later
    # deltas carry only argument fragments; the SDK's accumulation gives the same call
    chunks = list(chat(client, messages=weather_messages(), tools=[WEATHER_TOOL], max_tokens=60,
                       stream=True))
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].index == 0 and deltas[0].id.startswith("call_")
    assert deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert deltas[0].function.arguments == ""
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:])
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"

    # the answer goes back as a tool message; the conversation continues
    follow = weather_messages() + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}]
    r = chat(client, messages=follow, tools=[WEATHER_TOOL], max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.prompt_tokens > 150

    # tool_choice "none" hides the tools: the same text stays plain content
    r = chat(client, messages=weather_messages(), tools=[WEATHER_TOOL], tool_choice="none",
             max_tokens=60)
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert "<tool_call>" in r.choices[0].message.content


QWEN_TEMPLATE = os.path.join(SRC, "tests/chat_templates/templates/qwen2.5.jinja")


@pytest.fixture(scope="module")
def qwen_neuron():
    """SmolLM2 served with Qwen2.5's chat template, which renders tools, structured tool calls
    and tool results (SmolLM2's own template ignores all three). Both speak ChatML."""
    with loaded_neuron(["--chat-template", QWEN_TEMPLATE]) as n:
        yield n


def weather_call(call_id, city):
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": "get_weather",
                                         "arguments": json.dumps({"city": city})}}]}


def template_weather_messages(city):
    """Two earlier turns in which the assistant answered with a structured call: greedy
    SmolLM2-135M then calls the tool for a new city every time (without them it answers in
    prose)."""
    msgs = [{"role": "system", "content": "You are a weather assistant. Answer every weather "
             "question by calling get_weather."}]
    for i, prev in enumerate(("Rome", "Berlin")):
        msgs.append({"role": "user", "content": "What is the weather in %s?" % prev})
        msgs.append(weather_call("call_example%d" % i, prev))
    msgs.append({"role": "user", "content": "What is the weather in %s?" % city})
    return msgs


def test_tool_call_round_trip_with_a_tool_template(qwen_neuron, neuron):
    client = qwen_neuron.client()
    msgs = template_weather_messages("Paris")
    # the given template is the one in use: it renders the tool list, SmolLM2's own does not
    body = {"model": MODEL, "messages": msgs, "tools": [WEATHER_TOOL]}
    _, own = neuron.json("POST", "/tokenize", body)
    _, given = qwen_neuron.json("POST", "/tokenize", body)
    assert given["count"] > own["count"] + 50

    r = chat(client, messages=msgs, tools=[WEATHER_TOOL], max_tokens=40)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and not c.message.content
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # the result goes back as a tool message; the streamed answer uses it
    msgs += [weather_call(call.id, "Paris"),
             {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}]
    chunks = list(chat(client, messages=msgs, tools=[WEATHER_TOOL], max_tokens=40, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert not any(ch.choices[0].delta.tool_calls for ch in chunks if ch.choices)
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert "21" in text and "Paris" in text, text


def test_a_bad_chat_template_stops_the_start(tmp_path):
    with pytest.raises(RuntimeError) as e:
        Neuron(["--chat-template", str(tmp_path / "missing.jinja")])
    assert "--chat-template: cannot open" in str(e.value)
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m.content }\n")
    with pytest.raises(RuntimeError) as e:
        Neuron(["--chat-template", str(bad)])
    assert "--chat-template: %s line 2" % bad in str(e.value)
