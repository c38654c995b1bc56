"""tests/ops/test_haproxy.py — two gateways behind HAProxy (ops/haproxy/cortex.cfg); one is
killed (SIGKILL) during a stream of requests, and new requests keep succeeding.

Stack: PostgreSQL, a neuron on CPU with SmolLM2, the scheduler, two cortex-gateway processes in
--db mode (routing from PostgreSQL, as deployed), HAProxy on a loopback port with the shipped
configuration (only its global section, bind address and server lines replaced). Two client
workers send short completion requests through HAProxy without pause, one plain and one
streaming. Allowed to
fail: only requests that were in flight while the kill happened (from sending SIGKILL until the
process was reaped). Required: zero failures
among requests started after the kill, HAProxy's health check marks the killed gateway DOWN,
and requests keep succeeding through the surviving gateway after that.
"""
import os
import threading
import time

import pytest

import stack as S


@pytest.fixture(scope="module")
def fleet():
    S.require("haproxy", "postgres", "neuron", "scheduler", "gateway", "model")
    work = S.new_workdir("cortex-ops-haproxy.")
    procs = []
    pg = S.Postgres(work)
    try:
        pg.settings()
        neuron, _ = S.start_neuron(work, pg.conninfo)
        procs.append(neuron)
        S.wait_for(lambda: pg.sql("SELECT count(*) FROM cortex.models WHERE name = '%s'"
                                  % S.MODEL) == "1", 60, "smollm2 in the catalogue", neuron)
        sched, _ = S.start_scheduler(work, pg.conninfo)
        procs.append(sched)
        gws = []
        for name in ("gw-1", "gw-2"):
            p, api, metrics = S.start_gateway(work, pg.conninfo, name)
            procs.append(p)
            gws.append((name, p, api, metrics))
        for name, p, api, metrics in gws:
            S.wait_for(lambda: S.http("GET", api + "/health")[0] == 200, 30, name + " up", p)
        # cold start through gw-1 (the scheduler loads smollm2), then gw-2 answers warm
        ok, detail = S.chat(gws[0][2], timeout=120)
        assert ok, detail + "\n" + neuron.tail() + sched.tail()
        ok, detail = S.chat(gws[1][2])
        assert ok, detail
        lb_port = S.free_port()
        sock = os.path.join(work, "haproxy.sock")
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(S.haproxy_config(lb_port, [(n, api.split("//")[1]) for n, _, api, _ in gws],
                                     sock))
        haproxy = S.Proc("haproxy", [S.program("haproxy"), "-db", "-f", cfg], work)
        procs.append(haproxy)
        S.wait_for(lambda: os.path.exists(sock) and
                   S.haproxy_servers(sock) == {"gw-1": "UP", "gw-2": "UP"}, 30,
                   "HAProxy sees both gateways UP", haproxy)
        yield {"lb": "http://127.0.0.1:%d" % lb_port, "sock": sock, "gateways": gws,
               "haproxy": haproxy, "work": work}
    finally:
        for p in reversed(procs):
            p.stop()
        pg.stop()
        S.remove_workdir(work)


def requests_served(metrics_url):
    status, text = S.http("GET", metrics_url + "/metrics", timeout=5)
    return S.metric_value(text, "cortex_gateway_requests_total") if status == 200 else None


def test_kill_one_gateway_during_requests(fleet):
    lb, sock = fleet["lb"], fleet["sock"]
    (_, gw1, _, gw1_metrics), (_, gw2, _, gw2_metrics) = fleet["gateways"]
    before = (requests_served(gw1_metrics), requests_served(gw2_metrics))
    results = []  # (start, end, ok, detail, stream)
    lock = threading.Lock()
    stop = threading.Event()

    def worker(stream):
        while not stop.is_set():
            start = time.monotonic()
            ok, detail = S.chat(lb, max_tokens=1, stream=stream, timeout=120, raw=True)
            with lock:
                results.append((start, time.monotonic(), ok, detail, stream))

    threads = [threading.Thread(target=worker, args=(s,)) for s in (False, True)]
    for t in threads:
        t.start()
    try:
        S.wait_for(lambda: sum(1 for r in results if r[2]) >= 10, 180,
                   "10 requests through HAProxy")
        served = (requests_served(gw1_metrics), requests_served(gw2_metrics))
        assert served[0] > before[0] and served[1] > before[1], \
            "HAProxy did not spread requests over both gateways: %s -> %s" % (before, served)
        killed_at = time.monotonic()
        gw1.kill()
        killed_end = time.monotonic()  # SIGKILL sent and the process reaped
        down_at = S.wait_for(lambda: S.haproxy_servers(sock).get("gw-1", "").startswith("DOWN")
                             and time.monotonic(), 30, "HAProxy marks gw-1 DOWN", fleet["haproxy"])
        # keep going: at least 10 more requests after the check took gw-1 out
        S.wait_for(lambda: sum(1 for r in results if r[0] > down_at) >= 10, 180,
                   "10 requests after gw-1 went DOWN")
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert S.haproxy_servers(sock).get("gw-2") == "UP"
    failed = [r for r in results if not r[2]]
    in_flight_at_kill = [r for r in failed if r[0] <= killed_end and r[1] >= killed_at]
    others = [r for r in failed if r not in in_flight_at_kill]
    after_down = [r for r in results if r[0] > down_at]
    print("requests: %d, failed: %d (in flight at the kill: %d); gw-1 DOWN %.1fs after the kill;"
          " %d requests after that" % (len(results), len(failed), len(in_flight_at_kill),
                                       down_at - killed_at, len(after_down)))
    assert not others, "requests failed that were not in flight at the kill:\n%s" % "\n".join(
        "start %+.2fs stream=%s: %s" % (r[0] - killed_at, r[4], r[3]) for r in others)
    assert all(r[2] for r in after_down)
    assert any(r[4] for r in after_down) and any(not r[4] for r in after_down), \
        "both plain and streaming requests must run after the kill"
    assert requests_served(gw2_metrics) > served[1]
