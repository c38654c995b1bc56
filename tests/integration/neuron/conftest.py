# tests/integration/neuron/conftest.py — starts real neuron daemons on loopback for the tests.
#
# Each daemon gets a fresh models directory holding a symlink to the SmolLM2 GGUF
# (CORTEX_SMOLLM2_GGUF), listens on 127.0.0.1 port 0 (the port is read from its log), and is
# stopped with SIGTERM at the end; a non-zero exit (a crash, or LeakSanitizer finding a leak in
# the ASan build) fails the test session.
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import openai
import pytest

MODEL = "smollm2"
SYSTEM = "You are a helpful assistant."


class Neuron:
    def __init__(self, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="cortex-neuron-test.")
        self.models = os.path.join(self.dir, "models")
        os.mkdir(self.models)
        os.symlink(os.environ["CORTEX_SMOLLM2_GGUF"], os.path.join(self.models, MODEL + ".gguf"))
        self.log_path = os.path.join(self.dir, "neuron.log")
        args = [os.environ["CORTEX_NEURON_BIN"], "--listen", "127.0.0.1:0",
                "--models-dir", self.models, "--name", "test-node", "--ctx", "1024",
                "--threads", "2", "--prefill-chunk", "64", *extra_args]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError("neuron exited at start:\n" + self.log_text())
            m = re.search(r"\(port (\d+)\)", self.log_text())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("neuron did not start:\n" + self.log_text())

    def log_text(self):
        if getattr(self, "final_log", None) is not None:
            return self.final_log
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, raw=None, headers=None):
        """One HTTP request; returns (status, headers dict (lower-case names), body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        try:
            try:
                conn.request(method, path, body=data, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (413) and closed: read that answer
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method, path, body=None):
        status, _, data = self.request(method, path, body)
        return status, json.loads(data)

    def loaded(self, model=MODEL):
        _, doc = self.json("GET", "/models")
        for m in doc["loaded"]:
            if m["name"] == model:
                return m
        return None

    def load(self, model=MODEL, timeout=120):
        status, doc = self.json("POST", "/models/load", {"model": model})
        assert status == 202, doc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.loaded(model)
            assert m is not None and m["state"] in ("loading", "ready"), m
            if m["state"] == "ready":
                return m
            time.sleep(0.1)
        raise AssertionError("model did not become ready")

    def metric(self, name, labels=""):
        """The value of one sample of /metrics (0 when absent)."""
        _, _, data = self.request("GET", "/metrics")
        for line in data.decode().splitlines():
            if line.startswith(name + labels + " "):
                return float(line.split()[-1])
        return 0.0

    def wait_idle(self, timeout=120):
        """Waits until no sequence runs and nothing is queued; returns the /models entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.loaded()
            if m and m.get("active_sequences") == 0 and m.get("queued_requests") == 0:
                return m
            time.sleep(0.05)
        raise AssertionError("sequences still active: %r" % (self.loaded(),))

    def client(self):
        return openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % self.port, api_key="unused",
                             max_retries=0, timeout=600)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        self.final_log = self.log_text()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


@contextlib.contextmanager
def loaded_neuron(args):
    """A daemon started with the extra args and SmolLM2 loaded; on leaving, it must exit 0 on
    SIGTERM (its log's tail in the failure)."""
    n = Neuron(args)
    try:
        n.load()
        yield n
    finally:
        rc = n.stop()
        assert rc == 0, "neuron exited with %d:\n%s" % (rc, n.log_text()[-20000:])


@pytest.fixture(scope="session")
def neuron():
    with loaded_neuron(["--max-batch", "16", "--queue-depth", "16", "--max-body", "1MiB"]) as n:
        yield n


@pytest.fixture(scope="session")
def client(neuron):
    return neuron.client()
