# tests/integration/gateway/test_db.py — cortex-gateway --db against a real PostgreSQL and a
# real neuron (SmolLM2 on CPU): the catalogue comes from the database, a request for a model
# without a ready placement is held while the test performs the load through the neuron's API
# (standing in for the scheduler) and then completes, a revoked API key is refused, and every
# proxied request leaves one row in cortex.requests.
#
# Needs CORTEX_NEURON_BIN and CORTEX_SMOLLM2_GGUF (ops/test provides both) and PostgreSQL 15;
# skipped otherwise.
import http.client as httpclient
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from fleet import Postgres, Proc, free_port, http

MODEL = "smollm2"


@pytest.fixture(scope="module")
def fleet():
    if not os.environ.get("CORTEX_NEURON_BIN") or not os.path.exists(
            os.environ.get("CORTEX_SMOLLM2_GGUF", "/nonexistent")):
        pytest.skip("CORTEX_NEURON_BIN or CORTEX_SMOLLM2_GGUF not set")
    if not shutil.which("psql"):
        pytest.skip("PostgreSQL not installed")
    pg = Postgres()
    models = tempfile.mkdtemp(prefix="cortex-gateway-models.")
    os.symlink(os.environ["CORTEX_SMOLLM2_GGUF"], os.path.join(models, MODEL + ".gguf"))
    nport = free_port()
    neuron = Proc([os.environ["CORTEX_NEURON_BIN"], "--listen", "127.0.0.1:%d" % nport,
                   "--advertise", "http://127.0.0.1:%d" % nport, "--db", pg.conninfo,
                   "--heartbeat", "200ms", "--name", "gw-node", "--memory-budget", str(8 << 30),
                   "--models-dir", models, "--ctx", "1024", "--threads", "2"], "neuron")
    neuron.wait_port(nport)
    node = pg.wait_for("SELECT id FROM cortex.nodes WHERE name = 'gw-node'")
    pg.wait_for("SELECT id FROM cortex.models WHERE name = '%s'" % MODEL)
    pg.sql("SELECT cortex.alias_model('claude-*', '%s')" % MODEL)
    gport, mport = free_port(), free_port()
    gateway = Proc([os.environ["CORTEX_GATEWAY_BIN"], "--listen", "127.0.0.1:%d" % gport,
                    "--metrics-listen", "127.0.0.1:%d" % mport, "--db", pg.conninfo,
                    "--snapshot-poll", "1s", "--key-cache", "500ms", "--hold-timeout", "90s",
                    "--ping-interval", "500ms", "--accounting-flush", "200ms"], "gateway")
    gateway.wait_port(gport)
    f = {"pg": pg, "node": node, "neuron": "http://127.0.0.1:%d" % nport,
         "api": "http://127.0.0.1:%d" % gport, "metrics": "http://127.0.0.1:%d" % mport}
    yield f
    rc = gateway.stop()
    nrc = neuron.stop()
    pg.stop()
    assert rc == 0, "gateway exited with %d:\n%s" % (rc, gateway.log_text()[-20000:])
    assert nrc == 0, "neuron exited with %d" % nrc


def new_key(pg):
    row = pg.sql("SELECT id || ' ' || secret FROM cortex.create_api_key('gateway-test')")
    kid, secret = row.split()
    return int(kid), secret


def test_catalogue_from_db_and_keys(fleet):
    pg = fleet["pg"]
    status, _ = http("GET", fleet["api"] + "/v1/models")
    assert status == 401
    kid, secret = new_key(pg)
    status, body = http("GET", fleet["api"] + "/v1/models",
                        headers={"Authorization": "Bearer " + secret})
    assert status == 200, body
    ids = [m["id"] for m in json.loads(body)["data"]]
    assert ids == [MODEL], ids  # the pattern alias is not listed
    status, _ = http("GET", fleet["api"] + "/v1/models/claude-sonnet-4",
                     headers={"x-api-key": secret})
    assert status == 200
    status, body = http("GET", fleet["api"] + "/v1/models/nope",
                        headers={"x-api-key": secret})
    assert status == 404 and json.loads(body)["type"] == "error", body
    status, _ = http("GET", fleet["api"] + "/v1/models", headers={"x-api-key": "cx_wrong"})
    assert status == 401
    # Revoked: refused within the cache time (500 ms here).
    pg.sql("SELECT cortex.revoke_api_key(%d)" % kid)
    deadline = time.monotonic() + 5
    while True:
        status, _ = http("GET", fleet["api"] + "/v1/models",
                         headers={"Authorization": "Bearer " + secret})
        if status == 401:
            break
        assert status == 200 and time.monotonic() < deadline, status
        time.sleep(0.1)
    status, body = http("GET", fleet["metrics"] + "/metrics")
    m = re.search(r"^cortex_gateway_snapshot_age_seconds (\S+)$", body, re.M)
    assert m and 0 <= float(m.group(1)) < 10, body


def test_cold_start_held_until_loaded(fleet):
    pg = fleet["pg"]
    _, secret = new_key(pg)
    result = {}

    def ask():
        result["status"], result["body"] = http(
            "POST", fleet["api"] + "/v1/chat/completions",
            {"model": MODEL, "max_tokens": 8, "temperature": 0,
             "messages": [{"role": "user", "content": "Say hi."}]},
            headers={"Authorization": "Bearer " + secret})

    kept_alive = threading.Event()

    def ask_stream():
        # A streaming request held for the same cold start: keep-alive comments flow while it
        # waits (read incrementally so the load starts only after the first one arrived).
        conn = httpclient.HTTPConnection("127.0.0.1", int(fleet["api"].rsplit(":", 1)[1]),
                                          timeout=120)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"model": MODEL, "max_tokens": 8, "temperature": 0, "stream": True,
             "messages": [{"role": "user", "content": "Say hi."}]}),
            {"Authorization": "Bearer " + secret, "Content-Type": "application/json"})
        resp = conn.getresponse()
        result["stream_status"] = resp.status
        text = ""
        while True:
            line = resp.readline().decode()
            if not line:
                break
            text += line
            if line.startswith(": keep-alive"):
                kept_alive.set()
        result["stream"] = text
        conn.close()

    t = threading.Thread(target=ask)
    t.start()
    ts = threading.Thread(target=ask_stream)
    ts.start()
    # The gateway records demand; the test plays the scheduler: a placement, then the load.
    demand = pg.wait_for("SELECT d.id FROM cortex.demand d JOIN cortex.models m "
                         "ON m.id = d.model_id WHERE m.name = '%s' AND d.kind = 'load'" % MODEL)
    assert demand
    assert kept_alive.wait(30), "no keep-alive while held: %r" % result
    assert t.is_alive(), "the request was not held: %r" % result
    epoch = pg.sql("SELECT cortex.lease_acquire('gateway-test')")
    model = pg.sql("SELECT id FROM cortex.models WHERE name = '%s'" % MODEL)
    gpu = pg.sql("SELECT id FROM cortex.gpus WHERE node_id = %s" % fleet["node"])
    pid = int(pg.sql("SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])" %
                     (epoch, model, fleet["node"], gpu)))
    status, body = http("POST", fleet["neuron"] + "/models/load",
                        {"model": MODEL, "placement_id": pid})
    assert status == 202, body
    t.join(120)
    ts.join(120)
    assert not t.is_alive() and not ts.is_alive()
    assert result["status"] == 200, result
    assert result["stream_status"] == 200
    assert result["stream"].rstrip().endswith("data: [DONE]"), result["stream"]
    assert '"content"' in result["stream"]
    doc = json.loads(result["body"])
    assert doc["choices"][0]["message"]["content"]
    assert doc["usage"]["completion_tokens"] > 0
    # Once loaded, a streaming Anthropic request through an alias goes straight through.
    status, body = http("POST", fleet["api"] + "/v1/messages",
                        {"model": "claude-haiku-4", "max_tokens": 8, "stream": True,
                         "messages": [{"role": "user", "content": "Hi"}]},
                        headers={"x-api-key": secret, "anthropic-version": "2023-06-01"})
    assert status == 200 and "event: message_stop" in body, body


def test_request_rows(fleet):
    pg = fleet["pg"]
    kid, secret = new_key(pg)
    status, body = http("POST", fleet["api"] + "/v1/chat/completions",
                        {"model": "claude-x", "max_tokens": 4, "temperature": 0,
                         "messages": [{"role": "user", "content": "Hi"}]},
                        headers={"Authorization": "Bearer " + secret,
                                 "x-request-id": "rowtest-1"})
    assert status == 200, body
    row = pg.wait_for("SELECT concat_ws('|', dialect, endpoint, requested_model, served_model, "
                      "status_code, cold_start, tokens_in > 0, tokens_out > 0, total_ms > 0, "
                      "node IS NOT NULL) FROM cortex.requests WHERE api_key_id = %d" % kid,
                      timeout=10)
    assert row == "openai|chat|claude-x|%s|200|f|t|t|t|t" % MODEL, row
    # The two requests of the cold start test were recorded as such.
    assert pg.sql("SELECT count(*) FROM cortex.requests WHERE cold_start AND status_code = 200 "
                  "AND queue_wait_ms > 0") == "2"
    status, body = http("GET", fleet["metrics"] + "/metrics")
    m = re.search(r"^cortex_gateway_accounting_written_total (\d+)$", body, re.M)
    assert m and int(m.group(1)) >= 3, body
    assert re.search(r"^cortex_gateway_accounting_dropped_total 0$", body, re.M), body


def test_prefix_cache_reported_in_both_dialects(fleet):
    """A long shared system prompt: the neuron restores its saved prefix (--prefix-interval 256
    by default) for the second request, and the gateway reports the cached prompt tokens as
    each dialect does: OpenAI usage.prompt_tokens_details.cached_tokens, Anthropic
    usage.cache_read_input_tokens (input_tokens then counts only the rest)."""
    import anthropic
    import openai
    _, secret = new_key(fleet["pg"])
    system = " ".join("Rule %d: answer briefly and politely." % i for i in range(60))
    oa = openai.OpenAI(base_url=fleet["api"] + "/v1", api_key=secret)
    first = oa.chat.completions.create(
        model=MODEL, max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi"}])
    assert first.usage.prompt_tokens > 300, first.usage
    second = oa.chat.completions.create(
        model=MODEL, max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Bye"}])
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % 256 == 0 and cached < second.usage.prompt_tokens, second.usage
    an = anthropic.Anthropic(base_url=fleet["api"], api_key=secret)
    msg = an.messages.create(model="claude-haiku-4", max_tokens=4, system=system,
                             messages=[{"role": "user", "content": "Hello"}])
    assert msg.usage.cache_read_input_tokens == cached, msg.usage
    assert 0 < msg.usage.input_tokens < first.usage.prompt_tokens, msg.usage


def test_postgres_down_serves_from_snapshot(fleet):
    pg = fleet["pg"]
    kid, secret = new_key(pg)
    auth = {"Authorization": "Bearer " + secret}
    body = {"model": MODEL, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    status, _ = http("POST", fleet["api"] + "/v1/chat/completions", body, headers=auth)
    assert status == 200
    pg.stop(remove=False)
    try:
        # Routing, the catalogue and the (known) key keep working; rows wait in the buffer.
        for _ in range(3):
            status, text = http("POST", fleet["api"] + "/v1/chat/completions", body, headers=auth)
            assert status == 200, text
        status, text = http("GET", fleet["metrics"] + "/metrics")
        m = re.search(r"^cortex_gateway_accounting_buffered (\d+)$", text, re.M)
        assert m and int(m.group(1)) >= 3, text
    finally:
        pg.start()
    # After PostgreSQL is back the buffered rows arrive, none lost.
    pg.wait_for("SELECT count(*) FROM cortex.requests WHERE api_key_id = %d" % kid,
                want=lambda v: v == "4", timeout=30)
    status, text = http("GET", fleet["metrics"] + "/metrics")
    assert re.search(r"^cortex_gateway_accounting_dropped_total 0$", text, re.M), text
    # The snapshot is read again after the reconnect (its age drops back).
    deadline = time.monotonic() + 15
    while True:
        status, text = http("GET", fleet["metrics"] + "/metrics")
        age = float(re.search(r"^cortex_gateway_snapshot_age_seconds (\S+)$", text, re.M).group(1))
        if 0 <= age < 2:
            break
        assert time.monotonic() < deadline, age
        time.sleep(0.2)
    # Keys are looked up on their own connection, which reconnects on the next lookup after its
    # backoff (at most ~2.5 s): a key never seen before is accepted again within seconds.
    _, fresh = new_key(pg)
    deadline = time.monotonic() + 10
    while True:
        status, body = http("GET", fleet["api"] + "/v1/models",
                            headers={"Authorization": "Bearer " + fresh})
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline, (status, body)
        time.sleep(0.2)


def test_second_gateway_hold_timeout(fleet):
    """A second gateway on the same database: the same catalogue, the same keys (a revocation
    reaches both), and a model nobody can load times out with 503 / 529 and Retry-After."""
    pg = fleet["pg"]
    pg.sql("SELECT cortex.add_model('ghost')")
    gport = free_port()
    gw = Proc([os.environ["CORTEX_GATEWAY_BIN"], "--listen", "127.0.0.1:%d" % gport,
               "--metrics-listen", "", "--db", pg.conninfo, "--key-cache", "500ms",
               "--hold-timeout", "700ms"], "gateway2")
    try:
        gw.wait_port(gport)
        api2 = "http://127.0.0.1:%d" % gport
        kid, secret = new_key(pg)
        auth = {"Authorization": "Bearer " + secret}
        lists = []
        for api in (fleet["api"], api2):
            deadline = time.monotonic() + 10
            while True:  # the first gateway learns of 'ghost' by NOTIFY
                status, body = http("GET", api + "/v1/models", headers=auth)
                assert status == 200, body
                ids = sorted(m["id"] for m in json.loads(body)["data"])
                if "ghost" in ids or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            lists.append(ids)
        assert lists[0] == lists[1] == ["ghost", MODEL], lists
        # An alias made in SQL reaches both gateways within seconds (NOTIFY; the poll else).
        for api in (fleet["api"], api2):
            assert http("GET", api + "/v1/models/gpt-4o-mini", headers=auth)[0] == 404
        pg.sql("SELECT cortex.alias_model('gpt-4o-mini', '%s')" % MODEL)
        for api in (fleet["api"], api2):
            deadline = time.monotonic() + 5
            while http("GET", api + "/v1/models/gpt-4o-mini", headers=auth)[0] != 200:
                assert time.monotonic() < deadline, "alias not seen by " + api
                time.sleep(0.05)
            status, body = http("POST", api + "/v1/chat/completions",
                                {"model": "gpt-4o-mini", "max_tokens": 2, "temperature": 0,
                                 "messages": [{"role": "user", "content": "Hi"}]}, headers=auth)
            assert status == 200, body
        req = {"model": "ghost", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
        r = urllib.request.Request(api2 + "/v1/chat/completions", data=json.dumps(req).encode(),
                                   headers=dict(auth, **{"Content-Type": "application/json"}))
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(r, timeout=30)
        assert e.value.code == 503 and e.value.headers["Retry-After"], e.value.code
        assert json.loads(e.value.read())["error"]["message"]
        status, body = http("POST", api2 + "/v1/messages", req,
                            headers={"x-api-key": secret, "anthropic-version": "2023-06-01"})
        assert status == 529, body
        assert json.loads(body)["error"]["type"] == "overloaded_error", body
        assert pg.sql("SELECT count(*) FROM cortex.demand d JOIN cortex.models m ON "
                      "m.id = d.model_id WHERE m.name = 'ghost'") == "1"  # idempotent
        pg.sql("SELECT cortex.revoke_api_key(%d)" % kid)
        for api in (fleet["api"], api2):
            deadline = time.monotonic() + 5
            while http("GET", api + "/v1/models", headers=auth)[0] != 401:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        rc = gw.stop()
    assert rc == 0, gw.log_text()[-20000:]
