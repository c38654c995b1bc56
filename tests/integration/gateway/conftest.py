"""tests/integration/gateway/conftest.py — a fake neuron and a real cortex-gateway for the SDK tests.

The fake neuron (in this process, on a free port of 127.0.0.1) speaks the OpenAI dialect of
shared/API.md: GET /v1/models lists "tiny"; POST /v1/chat/completions answers by the last
message: a tool turn gets "It is sunny."; a user text containing "weather" gets a tool call to
get_weather (streamed in fragments); "STOPSEQ" finishes on the stop string "3" (reported in
stop_reason, as the neuron does); "SLOWSTART" sends only keep-alive comments for a while first;
"HOLD" sends the role chunk, then keep-alive comments until the client hangs up;
anything else gets "Hello there!". Usage is always 21 prompt + 5 completion tokens. POST
/tokenize counts one token per message and per tool. Every request body is recorded for the
tests to inspect.

Streams carry X-Prompt-Tokens: 21, as the real neuron announces its prompt count.

The gateway is the binary named by CORTEX_GATEWAY_BIN with an alias claude-*=tiny and
--max-tokens-cap 8192, in two modes (the `gateway` fixture is parametrised, so every SDK test
runs against both): "upstream" (--open, --upstream naming the fake neuron, the alias from
--model-aliases) and "db" (--db against a throwaway PostgreSQL where the fake neuron is
registered as a node with a ready placement of "tiny", the alias made with cortex.alias_model,
and an API key from cortex.create_api_key that the clients send). It must exit 0 on SIGTERM
(with ASan, that also means no leaks). The fixture's value is the base URL, a str, with the API
key to send as its `key` attribute.
"""
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet import Postgres

USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}


def _chunk(delta, finish=None, usage=None, choices=True):
    c = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
         if choices else []}
    if usage:
        c["usage"] = usage
    return "data: " + json.dumps(c) + "\n\n"


class FakeNeuron(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = []

    def log_message(self, *args):
        pass

    def _send(self, code, body):
        b = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": "tiny", "object": "model", "created": 1, "owned_by": "neuron"}]})
        else:
            self._send(404, {"error": {"message": "no", "type": "not_found_error"}})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeNeuron.received.append(req)
        if self.path == "/tokenize":
            # One "token" per message and per tool, so the count shows what was sent.
            n = len(req["messages"]) + len(req.get("tools", []))
            self._send(200, {"model": req["model"], "count": n, "ids": list(range(n)),
                             "max_context": 8192})
            return
        last = req["messages"][-1]
        text = last["content"] if isinstance(last["content"], str) else ""
        tool_turn = last["role"] == "tool"
        want_tool = "weather" in text and not tool_turn
        stop = "3" if "STOPSEQ" in text else None
        if not req.get("stream"):
            msg = {"role": "assistant", "content": "It is sunny." if tool_turn else "Hello there!"}
            finish = "stop"
            if want_tool:
                msg = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_abc", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
                finish = "tool_calls"
            if stop:
                msg = {"role": "assistant", "content": "1 2 "}
            choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
            if stop:
                choice["stop_reason"] = stop
            self._send(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
                             "model": "tiny", "choices": [choice], "usage": USAGE})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("X-Prompt-Tokens", str(USAGE["prompt_tokens"]))
        self.send_header("Connection", "close")
        self.end_headers()
        if "HOLD" in text:
            # A stream that stays open: the role chunk, then keep-alives until the client goes.
            try:
                self.wfile.write(_chunk({"role": "assistant", "content": ""}).encode())
                while True:
                    self.wfile.flush()
                    time.sleep(0.25)
                    self.wfile.write(b": keep-alive\n\n")
            except OSError:
                return
        if "SLOWSTART" in text:
            for _ in range(6):
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                time.sleep(0.25)
        out = [_chunk({"role": "assistant", "content": ""})]
        if want_tool:
            out += [_chunk({"content": "Let me check."}),
                    _chunk({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                                            "function": {"name": "get_weather", "arguments": ""}}]}),
                    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    _chunk({}, "tool_calls")]
        else:
            words = ["It ", "is ", "sunny."] if tool_turn else ["Hello", " there", "!"]
            out += [_chunk({"content": w}) for w in words]
            finish = _chunk({}, "stop")
            if stop:
                f = json.loads(finish[6:])
                f["choices"][0]["stop_reason"] = stop
                finish = "data: " + json.dumps(f) + "\n\n"
            out.append(finish)
        out.append(_chunk({}, usage=USAGE, choices=False))
        out.append("data: [DONE]\n\n")
        for piece in out:
            self.wfile.write(piece.encode())
            self.wfile.flush()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Neuron:
    """The running fake neuron: its port and the request bodies it received."""

    def __init__(self, port):
        self.port = port
        self.received = FakeNeuron.received


@pytest.fixture(scope="session")
def neuron():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNeuron)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Neuron(server.server_address[1])
    server.shutdown()


class Gateway(str):
    """A gateway's base URL; .key is the API key clients send."""
    key = "unused"


def _start_db(neuron):
    """A PostgreSQL in which the fake neuron serves "tiny"; returns (Postgres, gateway args)."""
    if not shutil.which("psql"):
        pytest.skip("PostgreSQL not installed")
    pg = Postgres()
    # The fake neuron never heartbeats: a long grace keeps it alive for the routes.
    pg.sql("UPDATE cortex.settings SET value = '1 day' WHERE key = 'heartbeat_grace'")
    node = pg.sql("SELECT cortex.node_register('fake-node', 'http://127.0.0.1:%d', "
                  "'[{\"kind\": \"cpu\", \"ordinal\": 0, \"memory_total_bytes\": 1073741824}]')"
                  % neuron.port)
    pg.sql("SELECT cortex.add_model('tiny')")
    pg.sql("SELECT cortex.alias_model('claude-*', 'tiny')")
    epoch = pg.sql("SELECT cortex.lease_acquire('sdk-test')")
    gpu = pg.sql("SELECT id FROM cortex.gpus WHERE node_id = %s" % node)
    model = pg.sql("SELECT id FROM cortex.models WHERE name = 'tiny'")
    pid = pg.sql("SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])" %
                 (epoch, model, node, gpu))
    pg.sql("SELECT cortex.placement_transition(%s, 'loading')" % pid)
    pg.sql("SELECT cortex.placement_transition(%s, 'ready')" % pid)
    return pg, ["--db", pg.conninfo, "--snapshot-poll=1s", "--key-cache=500ms"]


@pytest.fixture(scope="session", params=["upstream", "db"])
def gateway(request, neuron, tmp_path_factory):
    binary = os.environ.get("CORTEX_GATEWAY_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("CORTEX_GATEWAY_BIN not set")
    pg = None
    if request.param == "db":
        pg, mode = _start_db(neuron)
        key = pg.sql("SELECT secret FROM cortex.create_api_key('sdk-test')")
    else:
        mode = ["--open", f"--upstream=http://127.0.0.1:{neuron.port}",
                "--model-aliases=claude-*=tiny"]
        key = "unused"
    port, metrics = _free_port(), _free_port()
    log = open(tmp_path_factory.mktemp("gw") / "gateway.log", "w+")
    proc = subprocess.Popen([binary, f"--listen=127.0.0.1:{port}",
                             f"--metrics-listen=127.0.0.1:{metrics}", *mode,
                             "--max-tokens-cap=8192", "--ping-interval=500ms",
                             "--catalog-refresh=200ms"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = Gateway(f"http://127.0.0.1:{port}")
    base.key = key
    deadline = time.time() + 20
    while True:
        try:
            req = urllib.request.Request(base + "/v1/models",
                                         headers={"Authorization": "Bearer " + key})
            with urllib.request.urlopen(req, timeout=2) as r:
                if json.load(r)["data"]:
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, "gateway did not come up"
        time.sleep(0.1)
    yield base
    proc.terminate()
    rc = proc.wait(timeout=30)
    log.seek(0)
    if pg:
        pg.stop()
    assert rc == 0, "gateway exit status %d:\n%s" % (rc, log.read()[-4000:])
