"""tests/integration/gateway/fleet.py — helpers shared by the gateway's database tests: a
throwaway PostgreSQL (ops/lib/pg.sh, migrated with ops/migrate) that can be stopped and started
again on the same port, a process with its log in a temporary directory, and plain HTTP calls.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

SRC = os.environ.get("CORTEX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../../.."))
MODEL = "smollm2"  # the SmolLM2 GGUF as the neurons name it


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cortex-gateway-pg.")
        self.port = None
        self.start()
        subprocess.run([os.path.join(SRC, "ops/migrate"), self.conninfo], check=True,
                       stdout=subprocess.DEVNULL)

    def start(self):
        # A restart on the same port can fail for a moment on a busy machine (the old server's
        # socket or another process's brief use of the port): retry until a deadline.
        deadline = time.monotonic() + 30
        while True:
            run = subprocess.run(
                ["bash", "-c",
                 'source "$0/ops/lib/pg.sh" && pg_start "$1" $2 >&2 && echo "$CORTEX_PG"',
                 SRC, self.dir, str(self.port or "")], capture_output=True, text=True)
            if run.returncode == 0:
                break
            assert self.port and time.monotonic() < deadline, "pg_start failed:\n" + run.stderr
            time.sleep(0.5)
        out = run.stdout.strip()
        self.conninfo = out.splitlines()[-1]
        self.port = int(re.search(r"port=(\d+)", self.conninfo).group(1))

    def stop(self, remove=True):
        subprocess.run(["bash", "-c", 'source "$0/ops/lib/pg.sh" && pg_stop "$1"', SRC, self.dir],
                       check=True)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, query):
        return subprocess.run(["psql", self.conninfo, "-v", "ON_ERROR_STOP=1", "-Atqc", query],
                              check=True, capture_output=True, text=True).stdout.strip()

    def wait_for(self, query, want=lambda v: v not in ("", None), timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            value = self.sql(query)
            if want(value):
                return value
            assert time.monotonic() < deadline, "timed out waiting for %r (last %r)" % (query,
                                                                                       value)
            time.sleep(0.1)


class Proc:
    def __init__(self, args, name):
        self.dir = tempfile.mkdtemp(prefix="cortex-gateway-%s." % name)
        self.log_path = os.path.join(self.dir, name + ".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_port(self, port, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "exited at start:\n" + self.log_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("did not listen:\n" + self.log_text())

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def http(method, url, body=None, headers=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def need_neuron():
    if not os.environ.get("CORTEX_NEURON_BIN") or not os.path.exists(
            os.environ.get("CORTEX_SMOLLM2_GGUF", "/nonexistent")):
        pytest.skip("CORTEX_NEURON_BIN or CORTEX_SMOLLM2_GGUF not set")


def start_neuron(extra=()):
    """A neuron on a free port with SmolLM2 in its models directory; returns (Proc, url)."""
    models = tempfile.mkdtemp(prefix="cortex-gateway-models.")
    os.symlink(os.environ["CORTEX_SMOLLM2_GGUF"], os.path.join(models, MODEL + ".gguf"))
    port = free_port()
    proc = Proc([os.environ["CORTEX_NEURON_BIN"], "--listen", "127.0.0.1:%d" % port,
                 "--advertise", "http://127.0.0.1:%d" % port, "--models-dir", models,
                 "--ctx", "1024", "--threads", "2", "--memory-budget", str(8 << 30), *extra],
                "neuron")
    proc.wait_port(port)
    return proc, "http://127.0.0.1:%d" % port


def wait_ready(url, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("GET", url + "/models")
        states = [m["state"] for m in json.loads(body).get("loaded", []) if m["name"] == MODEL]
        if states == ["ready"]:
            return
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
