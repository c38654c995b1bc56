# tests/integration/gateway/test_metrics.py — /metrics after real traffic, and the hardening
# limits, against a cortex-gateway in front of the fake neuron of conftest.py (static mode).
#
# Metrics: the output passes `promtool check metrics` (skipped without promtool, Debian package
# prometheus; ops/test installs it), and the series move by exactly what the test did: requests
# by model/dialect/status, histogram counts, tokens (the fake neuron reports 21 + 5 per request),
# refusals with model="", and a model the catalogue does not know creates no series.
# Hardening: a client that trickles its headers is dropped at the header deadline although it
# never goes quiet; connections beyond --max-connections are closed at once and the gateway
# serves again once they are gone; an oversized body gets 413, oversized headers 431.
# Held streams: each costs the gateway its two sockets (client, neuron) and no more descriptors
# (libcurl's per-multi socketpair is per transfer loop, not per stream).
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import USAGE, _free_port


def start_gateway(neuron, tmp_path, *extra):
    binary = os.environ.get("CORTEX_GATEWAY_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("CORTEX_GATEWAY_BIN not set")
    port, mport = _free_port(), _free_port()
    log = open(tmp_path / "gateway.log", "w+")
    proc = subprocess.Popen([binary, "--open", "--listen=127.0.0.1:%d" % port,
                             "--metrics-listen=127.0.0.1:%d" % mport,
                             "--upstream=http://127.0.0.1:%d" % neuron.port,
                             "--model-aliases=claude-*=tiny", "--catalog-refresh=200ms"]
                            + list(extra), stdout=log, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    deadline = time.time() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=2) as r:
                if json.load(r)["data"]:
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, "gateway did not come up"
        time.sleep(0.1)
    return proc, log, base, "http://127.0.0.1:%d" % mport


def stop_gateway(proc, log):
    proc.terminate()
    rc = proc.wait(timeout=30)
    log.seek(0)
    assert rc == 0, "gateway exit status %d:\n%s" % (rc, log.read()[-4000:])


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers=dict(headers or {}, **{"Content-Type":
                                                                "application/json"}))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(metrics):
    with urllib.request.urlopen(metrics + "/metrics", timeout=10) as r:
        return r.read().decode()


def value(text, series):
    """The value of one exact series line (name plus labels), or 0 when absent."""
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def gw(neuron, tmp_path):
    proc, log, base, metrics = start_gateway(neuron, tmp_path)
    yield base, metrics
    stop_gateway(proc, log)


def test_metrics_after_traffic(gw):
    base, metrics = gw
    before = scrape(metrics)
    chat = {"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        assert post(base + "/v1/chat/completions", chat)[0] == 200
    for _ in range(2):  # streamed, through an alias
        assert post(base + "/v1/messages",
                    {"model": "claude-x", "max_tokens": 5, "stream": True,
                     "messages": [{"role": "user", "content": "hi"}]},
                    {"anthropic-version": "2023-06-01"})[0] == 200
    # refused before proxying: unknown model (a name that must not become a series), bad body
    assert post(base + "/v1/chat/completions",
                dict(chat, model='evil"\nmodel\\x'))[0] == 404
    assert post(base + "/v1/chat/completions", {"model": "tiny"})[0] == 400
    after = scrape(metrics)

    def delta(series):
        return value(after, series) - value(before, series)

    assert delta('cortex_gateway_requests_total{model="tiny",dialect="openai",status="200"}') == 3
    assert delta(
        'cortex_gateway_requests_total{model="tiny",dialect="anthropic",status="200"}') == 2
    assert delta('cortex_gateway_requests_total{model="",dialect="openai",status="404"}') == 1
    assert delta('cortex_gateway_requests_total{model="",dialect="openai",status="400"}') == 1
    assert delta('cortex_gateway_request_duration_seconds_count{model="tiny",dialect="openai"}') \
        == 3
    assert delta('cortex_gateway_request_duration_seconds_bucket{model="tiny",dialect="openai",'
                 'le="+Inf"}') == 3
    assert delta('cortex_gateway_ttft_seconds_count{model="tiny",dialect="anthropic"}') == 2
    assert delta('cortex_gateway_tokens_in_total{model="tiny"}') == 5 * USAGE["prompt_tokens"]
    assert delta('cortex_gateway_tokens_out_total{model="tiny"}') == \
        5 * USAGE["completion_tokens"]
    assert delta("cortex_gateway_rejected_total") == 2
    assert "evil" not in after and "claude-x" not in after
    assert value(after, "cortex_gateway_in_flight") == 0
    assert re.search(r'^cortex_gateway_upstream_errors_total\{upstream="http://127\.0\.0\.1:\d+"\} 0$',
                     after, re.M), after
    assert re.search(r'^cortex_gateway_upstream_ejections_total\{upstream="[^"]+"\} 0$', after,
                     re.M), after
    # histogram buckets are cumulative and end at the count
    buckets = [float(v) for v in re.findall(
        r'^cortex_gateway_request_duration_seconds_bucket\{model="tiny",dialect="openai",'
        r'le="[^"]+"\} (\S+)$', after, re.M)]
    assert buckets == sorted(buckets) and buckets[-1] == value(
        after, 'cortex_gateway_request_duration_seconds_count{model="tiny",dialect="openai"}')
    # every family has HELP and TYPE
    for name in set(re.findall(r"^([a-z_:]+)(?:\{| )", after, re.M)):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert "# TYPE %s " % family in after or "# TYPE %s " % name in after, name
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=after, text=True,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_slow_client_dropped_at_header_deadline(neuron, tmp_path):
    proc, log, base, metrics = start_gateway(neuron, tmp_path, "--header-timeout=1s")
    try:
        host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        dropped_after = None
        # One header byte every 200 ms: never quiet for the inactivity timeout, yet too slow.
        for _ in range(40):
            try:
                s.sendall(b"a")
                s.settimeout(0.2)
                if s.recv(1024) == b"":
                    dropped_after = time.monotonic() - t0
                    break
            except socket.timeout:
                continue
            except OSError:
                dropped_after = time.monotonic() - t0
                break
        s.close()
        assert dropped_after is not None, "the slow client was never dropped"
        assert 0.8 <= dropped_after <= 3.0, dropped_after
        assert value(scrape(metrics), "cortex_gateway_slow_clients_dropped_total") == 1
        # A normal client is unaffected.
        assert post(base + "/v1/chat/completions",
                    {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})[0] == 200
    finally:
        stop_gateway(proc, log)


def test_connection_limit_and_body_limit(neuron, tmp_path):
    proc, log, base, metrics = start_gateway(neuron, tmp_path, "--max-connections=3",
                                             "--max-body=64KiB")
    try:
        host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        held = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
        for h in held:
            # An answered request proves the connection was accepted and counted; the start of
            # a second one (headers unfinished) keeps it open.
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = h.recv(4096)
                assert chunk, "a held connection was closed: %r" % answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        extra = socket.create_connection((host, port), timeout=5)
        extra.settimeout(5)
        try:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = extra.recv(1024)
        except OSError:
            got = b""
        extra.close()
        assert got == b"", "a connection beyond the limit was served: %r" % got
        for h in held:
            h.close()
        deadline = time.monotonic() + 5
        while True:  # served again once the held connections are gone
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        status, body = post(base + "/v1/chat/completions",
                            {"model": "tiny", "messages": [{"role": "user",
                                                            "content": "x" * 100000}]})
        assert status == 413, body
        # Oversized headers: 431. The gateway may close with part of the request unread, and
        # the reset that follows can swallow its answer on the client side: such a try is
        # inconclusive, never a pass.
        answers = []
        for _ in range(5):
            try:
                answers.append(post(base + "/v1/chat/completions", {"model": "tiny"},
                                    {"X-Big": "a" * 100000})[0])
            except OSError:
                continue
            if answers[-1] == 431:
                break
        assert answers and set(answers) == {431}, answers
        assert json.loads(body)["error"]["type"] == "invalid_request_error", body
    finally:
        stop_gateway(proc, log)


def test_held_streams_cost_two_descriptors(neuron, tmp_path):
    proc, log, base, _ = start_gateway(neuron, tmp_path)
    n = 40
    socks = []
    try:
        before = len(os.listdir("/proc/%d/fd" % proc.pid))
        body = json.dumps({"model": "tiny", "stream": True,
                           "messages": [{"role": "user", "content": "HOLD"}]}).encode()
        port = int(base.rsplit(":", 1)[1])
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            socks.append(s)
        for s in socks:  # every stream has begun: headers and the role chunk are through
            got = b""
            while b"assistant" not in got:
                piece = s.recv(65536)
                assert piece, "stream closed early: %r" % got
                got += piece
        during = len(os.listdir("/proc/%d/fd" % proc.pid))
        # A socketpair per stream (libcurl 7.88's multi handle on each worker) would be 4 each.
        assert during - before <= 2 * n + 6, "%d descriptors for %d held streams" % (
            during - before, n)
    finally:
        for s in socks:
            s.close()
    stop_gateway(proc, log)
