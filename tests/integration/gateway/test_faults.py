# tests/integration/gateway/test_faults.py — the gateway under faults, with real processes:
#   - a neuron killed (SIGKILL) in the middle of a stream: the client gets a well-formed error
#     event within 5 s, in both dialects, raised by the official SDKs as their own errors (and
#     no [DONE] / message_stop after it);
#   - PostgreSQL stopped and started again while streams run: the streams complete, new
#     requests route from the snapshot meanwhile, and afterwards every request, matched by its
#     request id, has its row in cortex.requests.
#
# Before the faults, the same setup checks what the gateway makes of the neuron's stream
# extras: stop_reason (the matched stop string) becomes Anthropic's stop_sequence, and
# X-Prompt-Tokens becomes message_start's usage.input_tokens.
#
# Needs CORTEX_NEURON_BIN and CORTEX_SMOLLM2_GGUF (ops/test provides both); the second test
# also PostgreSQL 15. Skipped otherwise.
import http.client as httpclient
import json
import os
import shutil
import signal
import threading
import time

import anthropic
import openai
import pytest

from fleet import MODEL, Postgres, Proc, free_port, http, need_neuron, start_neuron, wait_ready
T0 = {"temperature": 0}  # greedy: the same answer every time
COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


@pytest.fixture
def killable():
    """A neuron with SmolLM2 loaded and an open-mode gateway in front of it (--upstream)."""
    need_neuron()
    neuron, nurl = start_neuron()
    status, body = http("POST", nurl + "/models/load", {"model": MODEL})
    assert status == 202, body
    wait_ready(nurl)
    gport = free_port()
    gateway = Proc([os.environ["CORTEX_GATEWAY_BIN"], "--open", "--listen",
                    "127.0.0.1:%d" % gport, "--metrics-listen", "", "--upstream", nurl,
                    "--model-aliases", "claude-*=" + MODEL], "gateway")
    gateway.wait_port(gport)
    yield neuron, "http://127.0.0.1:%d" % gport
    rc = gateway.stop()
    neuron.stop()
    assert rc == 0, gateway.log_text()[-20000:]


def test_anthropic_stop_sequence_and_input_tokens_from_the_neuron(killable):
    _, api = killable
    client = anthropic.Anthropic(base_url=api, api_key="unused", max_retries=0, timeout=120)
    paris = [{"role": "user", "content": "What is the capital of France?"}]
    full = client.messages.create(model="claude-x", max_tokens=40, messages=paris, extra_body=T0)
    text = full.content[0].text
    assert " Paris" in text and full.stop_reason in ("end_turn", "max_tokens")
    assert full.stop_sequence is None
    m = client.messages.create(model="claude-x", max_tokens=40, messages=paris, extra_body=T0,
                               stop_sequences=["never-appears", " Paris"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == " Paris"
    assert m.content[0].text == text[:text.index(" Paris")]
    with client.messages.stream(model="claude-x", max_tokens=40, messages=paris, extra_body=T0,
                                stop_sequences=[" Paris"]) as s:
        events = list(s)
        final = s.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == " Paris"
    start = events[0]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == final.usage.input_tokens == m.usage.input_tokens
    assert m.usage.input_tokens > 10


def test_neuron_killed_mid_stream_openai(killable):
    neuron, api = killable
    client = openai.OpenAI(base_url=api + "/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=600,
                                            temperature=0, stream=True)
    pieces = 0
    killed_at = None
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
            assert not (chunk.choices and chunk.choices[0].finish_reason), \
                "the stream finished before the neuron was killed"
            if pieces == 3 and killed_at is None:
                neuron.proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
    assert killed_at is not None
    assert time.monotonic() - killed_at < 5
    assert not isinstance(e.value, openai.APIStatusError)  # in band: the status was 200
    assert "model server" in e.value.message, e.value.message


def test_neuron_killed_mid_stream_anthropic(killable):
    neuron, api = killable
    client = anthropic.Anthropic(base_url=api, api_key="unused", max_retries=0, timeout=60)
    killed_at = None
    events = []
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(model="claude-test", max_tokens=600, extra_body=T0,
                                    messages=COUNT) as s:
            for ev in s:
                events.append(ev.type)
                if events.count("text") == 3 and killed_at is None:
                    neuron.proc.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
    assert killed_at is not None
    assert time.monotonic() - killed_at < 5
    assert "message_stop" not in events and "message_delta" not in events, events
    assert e.value.body["type"] == "error", e.value.body
    assert e.value.body["error"]["type"] == "api_error", e.value.body


@pytest.fixture(scope="module")
def dbfleet():
    """PostgreSQL, a neuron reporting into it with SmolLM2 loaded through a placement, and a
    gateway --db in front."""
    need_neuron()
    if not shutil.which("psql"):
        pytest.skip("PostgreSQL not installed")
    pg = Postgres()
    neuron, nurl = start_neuron(["--db", pg.conninfo, "--heartbeat", "200ms", "--name",
                                 "fault-node"])
    node = pg.wait_for("SELECT id FROM cortex.nodes WHERE name = 'fault-node'")
    model = pg.wait_for("SELECT id FROM cortex.models WHERE name = '%s'" % MODEL)
    epoch = pg.sql("SELECT cortex.lease_acquire('fault-test')")
    gpu = pg.sql("SELECT id FROM cortex.gpus WHERE node_id = %s" % node)
    pid = int(pg.sql("SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])" %
                     (epoch, model, node, gpu)))
    status, body = http("POST", nurl + "/models/load", {"model": MODEL, "placement_id": pid})
    assert status == 202, body
    pg.wait_for("SELECT 1 FROM cortex.routes WHERE model = '%s'" % MODEL)
    gport, mport = free_port(), free_port()
    gateway = Proc([os.environ["CORTEX_GATEWAY_BIN"], "--listen", "127.0.0.1:%d" % gport,
                    "--metrics-listen", "127.0.0.1:%d" % mport, "--db", pg.conninfo,
                    "--snapshot-poll", "1s", "--key-cache", "500ms",
                    "--accounting-flush", "200ms"], "gateway")
    gateway.wait_port(gport)
    kid, secret = pg.sql("SELECT id || ' ' || secret FROM cortex.create_api_key('fault')").split()
    yield {"pg": pg, "api": "http://127.0.0.1:%d" % gport, "key": secret,
           "metrics": "http://127.0.0.1:%d" % mport}
    rc = gateway.stop()
    nrc = neuron.stop()
    pg.stop()
    assert rc == 0, "gateway exited with %d:\n%s" % (rc, gateway.log_text()[-20000:])
    assert nrc == 0, "neuron exited with %d:\n%s" % (nrc, neuron.log_text()[-20000:])


def test_postgres_restart_under_streams(dbfleet):
    pg, api, key = dbfleet["pg"], dbfleet["api"], dbfleet["key"]
    port = int(api.rsplit(":", 1)[1])
    auth = {"Authorization": "Bearer " + key}
    # The key is known (cached) before PostgreSQL goes away.
    assert http("GET", api + "/v1/models", headers=auth)[0] == 200
    results = {}
    started = [threading.Event() for _ in range(2)]

    def stream(i):
        rid = "pgr-stream-%d" % i
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"model": MODEL, "max_tokens": 300, "temperature": 0, "stream": True,
             "messages": COUNT}),
            dict(auth, **{"Content-Type": "application/json", "x-request-id": rid}))
        resp = conn.getresponse()
        text = ""
        for raw in resp:
            line = raw.decode()
            text += line
            if '"content":"' in line and '"content":""' not in line:
                started[i].set()
        conn.close()
        results[rid] = (resp.status, text)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for ev in started:
        assert ev.wait(120), results
    ids = ["pgr-stream-0", "pgr-stream-1"]
    pg.stop(remove=False)
    try:
        running = sum(t.is_alive() for t in threads)
        # New requests route from the snapshot while PostgreSQL is down.
        for i in range(3):
            rid = "pgr-down-%d" % i
            status, body = http("POST", api + "/v1/chat/completions",
                                {"model": MODEL, "max_tokens": 4, "temperature": 0,
                                 "messages": [{"role": "user", "content": "Hi"}]},
                                headers=dict(auth, **{"x-request-id": rid}))
            assert status == 200, body
            ids.append(rid)
    finally:
        pg.start()
    assert running == 2, "the streams ended before PostgreSQL went down: %r" % results
    for t in threads:
        t.join(300)
    for rid in ("pgr-stream-0", "pgr-stream-1"):
        status, text = results[rid]
        assert status == 200 and text.rstrip().endswith("data: [DONE]"), text[-500:]
        assert '"error"' not in text
    # Every request has its row, matched by request id.
    pg.wait_for("SELECT string_agg(request_id, ',' ORDER BY request_id) FROM cortex.requests "
                "WHERE request_id LIKE 'pgr-%'",
                want=lambda v: v == ",".join(sorted(ids)), timeout=30)
    assert pg.sql("SELECT count(*) FROM cortex.requests WHERE request_id LIKE 'pgr-stream-%' "
                  "AND status_code = 200 AND tokens_out > 0 AND NOT cancelled") == "2"
    status, text = http("GET", dbfleet["metrics"] + "/metrics")
    assert "\ncortex_gateway_accounting_dropped_total 0\n" in text, text
