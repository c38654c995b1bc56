#!/usr/bin/env python3
"""bench/gateway_overhead.py — what cortex-gateway adds on top of a neuron, measured against a
fast fake upstream (bench/fake_upstream.c) so that the gateway is the only thing measured.

Three measurements, each side by side in the same run (direct to the upstream vs through the
gateway in --upstream mode, --open, default logging to a file):
  latency     wrk -c1 (one request at a time) for --duration seconds, plain and SSE chat
              completions; p50 / p99 of each side and their difference (the added latency),
              medians over --runs alternated runs;
  throughput  wrk -c32 for --duration seconds; requests/s of each side, and the gateway's
              requests per second of its own CPU time (utime + stime from /proc, i.e. per core),
              medians over --runs;
  streams     --streams SSE requests held open at once through the gateway (the upstream
              answers requests holding HOLD with a role chunk and then only keep-alives): how many got
              their first chunk, and how many were all still open and receiving after 10 s,
              with the gateway's threads and resident memory at that point.

Usage: gateway_overhead.py --gateway BIN --upstream BIN [--runs 5] [--duration 10]
       [--streams 6000] [--json OUT]. --runs 0 skips latency and throughput, --streams 0 the
streams. Needs wrk on PATH and `ulimit -n` above 2 x streams: a held stream costs the gateway 2
descriptors (client socket, neuron socket; its libcurl transfers share a few loops, see
common/http_client.h). gateway_overhead.sh sets both up. Prints the results as JSON (each phase also to
stderr as it ends) and, with --json, writes them.
"""
import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("process exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("port %d never opened" % port)


def lua(tmp, body):
    path = os.path.join(tmp, "body-%d.lua" % len(os.listdir(tmp)))
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = '
                '"application/json"\n' % json.dumps(json.dumps(body)))
    return path


def to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def wrk(url, script, conns, duration):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency", "-s",
                          script, url], check=True, capture_output=True, text=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        sys.exit("wrk saw errors:\n" + out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_us": to_us(lat["50"]), "p99_us": to_us(lat["99"]),
            "requests": int(re.search(r"(\d+) requests in", out).group(1))}


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        text = f.read()
    return {"threads": int(re.search(r"Threads:\s+(\d+)", text).group(1)),
            "rss_mib": int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024,
            "open_fds": len(os.listdir("/proc/%d/fd" % pid))}


async def hold_streams(port, pid, n, hold_s):
    """Opens n streams through the gateway (process pid); returns (first chunks seen, alive
    after hold_s, the gateway's threads and memory half way through the hold)."""
    body = json.dumps(dict(BODY, stream=True, messages=[{"role": "user", "content": "HOLD"}])).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    sem = asyncio.Semaphore(200)  # connect in waves, as clients arrive, not all in one burst
    all_tried = asyncio.Event()
    counts = {"tried": 0, "opened": 0, "alive": 0}

    def tried():
        counts["tried"] += 1
        if counts["tried"] == n:
            all_tried.set()

    async def one():
        w = None
        try:
            async with sem:
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(req)
                    await w.drain()
                    buf = b""
                    while b"data: " not in buf:
                        chunk = await asyncio.wait_for(r.read(4096), 20)
                        if not chunk:
                            return
                        buf += chunk
                    counts["opened"] += 1
                finally:
                    tried()
            await all_tried.wait()
            # Still open and fed (the gateway's keep-alives, every second) after hold_s.
            deadline = time.monotonic() + hold_s
            fed = 0
            while time.monotonic() < deadline:
                chunk = await asyncio.wait_for(r.read(4096), hold_s + 5)
                if not chunk:
                    return
                fed += 1
            if fed:
                counts["alive"] += 1
        except (OSError, asyncio.TimeoutError):
            return
        finally:
            if w:
                w.close()

    async def sample():
        await all_tried.wait()
        await asyncio.sleep(hold_s / 2)
        counts["status"] = proc_status(pid)

    await asyncio.gather(sample(), *(one() for _ in range(n)))
    return counts["opened"], counts["alive"], counts["status"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--streams", type=int, default=6000)
    ap.add_argument("--gateway-threads", type=int, default=2)
    ap.add_argument("--latency-only", action="store_true",
                    help="skip the throughput runs (e.g. under chrt -f, which must not saturate "
                         "a shared machine)")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cortex-gw-bench.")
    uport, gport = free_port(), free_port()
    upstream = subprocess.Popen([a.upstream, str(uport), "1"])
    wait_port(uport, upstream)
    glog = open(os.path.join(tmp, "gateway.log"), "w")
    gateway = subprocess.Popen([a.gateway, "--open", "--listen", "127.0.0.1:%d" % gport,
                                "--metrics-listen", "", "--upstream",
                                "http://127.0.0.1:%d" % uport, "--ping-interval", "1s",
                                "--threads", str(a.gateway_threads),
                                "--max-connections", str(a.streams + 1000),
                                "--max-in-flight", str(a.streams + 1000)],
                               stdout=glog, stderr=subprocess.STDOUT)
    wait_port(gport, gateway)
    time.sleep(0.5)  # the gateway reads the upstream's model list once at start
    result = {"load_before": os.getloadavg(), "runs": a.runs, "duration_s": a.duration}
    try:
        plain, sse = lua(tmp, BODY), lua(tmp, dict(BODY, stream=True))
        for name, script in (("plain", plain), ("sse", sse))[:a.runs and 2]:
            direct, through = [], []
            for _ in range(a.runs):
                direct.append(wrk("http://127.0.0.1:%d/v1/chat/completions" % uport, script, 1,
                                  a.duration))
                through.append(wrk("http://127.0.0.1:%d/v1/chat/completions" % gport, script,
                                   1, a.duration))
            med = lambda runs, k: statistics.median(r[k] for r in runs)
            result["latency_" + name] = latency = {
                "direct_p50_us": med(direct, "p50_us"), "direct_p99_us": med(direct, "p99_us"),
                "gateway_p50_us": med(through, "p50_us"), "gateway_p99_us": med(through, "p99_us"),
                "added_p50_us": statistics.median(t["p50_us"] - d["p50_us"]
                                                  for d, t in zip(direct, through)),
                "added_p99_us": statistics.median(t["p99_us"] - d["p99_us"]
                                                  for d, t in zip(direct, through))}
            print(name, "latency", json.dumps(latency), file=sys.stderr, flush=True)
            if a.latency_only:
                continue
            direct, through, per_core = [], [], []
            for _ in range(a.runs):
                direct.append(wrk("http://127.0.0.1:%d/v1/chat/completions" % uport, script, 32,
                                  a.duration))
                c0 = cpu_seconds(gateway.pid)
                r = wrk("http://127.0.0.1:%d/v1/chat/completions" % gport, script, 32, a.duration)
                per_core.append(r["requests"] / max(cpu_seconds(gateway.pid) - c0, 1e-9))
                through.append(r)
            result["throughput_" + name] = tput = {
                "direct_rps": med(direct, "rps"), "gateway_rps": med(through, "rps"),
                "gateway_p99_us": med(through, "p99_us"),
                "gateway_rps_per_cpu_second": statistics.median(per_core)}
            print(name, "throughput", json.dumps(tput), file=sys.stderr, flush=True)
        if a.streams:
            opened, alive, st = asyncio.run(hold_streams(gport, gateway.pid, a.streams, 10))
            result["streams"] = {
                "asked": a.streams, "opened": opened, "alive_after_10s": alive,
                "gateway_threads": st["threads"], "gateway_rss_mib": st["rss_mib"],
                "gateway_open_fds": st["open_fds"],
                "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
        result["load_after"] = os.getloadavg()
    finally:
        gateway.terminate()
        gateway.wait(60)
        upstream.kill()
        upstream.wait()
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
