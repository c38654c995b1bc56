# tests/integration/scheduler/fleet.py — the processes of one scheduler test: a database cloned
# from a migrated template, real neurons on CPU serving the tiny HF fixtures, real schedulers.
#
# Everything talks over loopback; the tests read the outcome from PostgreSQL (psql) and from the
# neurons' GET /models, polling with deadlines.
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time

SOURCE = os.environ.get("CORTEX_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
FIXTURES = os.path.join(SOURCE, "tests", "fixtures")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def byte_level_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer.json with exactly 256 tokens (one per byte, no
    merges): the fixtures ship no tokenizer, and their vocabulary is 256."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
                 list(range(0xAE, 0x100)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    vocab = {chars[b]: b for b in range(256)}
    return {"version": "1.0", "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": []}}


# A chat template for the fixtures (they ship none): enough for a gateway's chat request.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def make_model_dir(models_dir, name, fixture="llama"):
    """models_dir/name: the fixture's config and weights (symlinks) plus a tokenizer.json and a
    chat template. fixture may also be the path of a GGUF file: models_dir/name.gguf links it."""
    if fixture.endswith(".gguf"):
        path = os.path.join(models_dir, name + ".gguf")
        os.symlink(fixture, path)
        return path
    d = os.path.join(models_dir, name)
    os.makedirs(d, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(FIXTURES, fixture, f), os.path.join(d, f))
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(byte_level_tokenizer(), f)
    with open(os.path.join(d, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)
    return d


class Proc:
    """A child process whose combined output goes to a log file."""

    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.stopped = False

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout=60):
        """SIGTERM (after SIGCONT, in case it was stopped), wait; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


class Neuron(Proc):
    def __init__(self, workdir, name, conninfo, budget, models, heartbeat="1s", advertise=None,
                 ctx=64):
        """advertise: the endpoint written into the database (default: where it listens); a
        test points it elsewhere to make the scheduler's requests fail in transport."""
        self.name = name
        self.models_dir = os.path.join(workdir, name + "-models")
        os.makedirs(self.models_dir)
        for model_name, fixture in models:
            make_model_dir(self.models_dir, model_name, fixture)
        self.port = free_port()
        args = [os.environ["CORTEX_NEURON_BIN"], "--listen", "127.0.0.1:%d" % self.port,
                "--advertise", advertise or "http://127.0.0.1:%d" % self.port, "--models-dir",
                self.models_dir, "--name", name, "--db", conninfo, "--ctx", str(ctx),
                "--max-batch", "1", "--threads", "1", "--http-threads", "4",
                "--memory-budget", str(budget), "--heartbeat", heartbeat]
        super().__init__(args, os.path.join(workdir, name + ".log"))
        wait_for(lambda: self._listening(), 60, "neuron %s listening" % name, self)

    def _listening(self):
        if not self.alive():
            raise RuntimeError("neuron exited at start:\n" + self.log_text())
        return re.search(r"\(port \d+\)", self.log_text()) is not None

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    def loaded(self):
        """{name: state} of the models this neuron has loaded or is loading."""
        _, doc = self.get("/models")
        return {m["name"]: m["state"] for m in doc["loaded"]}

    def on_disk(self):
        _, doc = self.get("/models")
        return doc


class Scheduler(Proc):
    def __init__(self, workdir, name, conninfo, extra=(), timing=True):
        """timing=False: no --tick and --lease, so the settings decide them."""
        self.name = name
        args = [os.environ["CORTEX_SCHEDULER_BIN"], "--db", conninfo, "--name", name,
                "--listen", "", "--neuron-timeout", "5s", "--neuron-attempts", "2",
                "--neuron-backoff", "200ms"]
        if timing:
            args += ["--tick", "300ms", "--lease", "3s"]
        super().__init__(args + list(extra), os.path.join(workdir, name + ".log"))


def cli_bin():
    """The cortex command, built beside cortex-scheduler."""
    return os.path.join(os.path.dirname(os.environ["CORTEX_SCHEDULER_BIN"]), "cortex")


def cortex(conninfo, *args):
    """Runs `cortex --db conninfo args...`; returns (exit status, stdout, stderr)."""
    r = subprocess.run([cli_bin(), "--db", conninfo, *args], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout, r.stderr


class Gateway(Proc):
    """cortex-gateway --db in open mode; holds requests for models that are not loaded."""

    def __init__(self, workdir, conninfo, binary):
        self.port, self.metrics_port = free_port(), free_port()
        args = [binary, "--listen", "127.0.0.1:%d" % self.port, "--metrics-listen",
                "127.0.0.1:%d" % self.metrics_port, "--db", conninfo, "--open",
                "--snapshot-poll", "1s", "--hold-timeout", "60s", "--ping-interval", "500ms",
                "--accounting-flush", "200ms"]
        super().__init__(args, os.path.join(workdir, "gateway.log"))
        wait_for(self._up, 30, "the gateway listening", self)

    def _up(self):
        if not self.alive():
            raise RuntimeError("gateway exited at start:\n" + self.log_text())
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port


def wait_for(pred, timeout, what, proc=None):
    """Polls pred() every 50 ms until it returns a true value (returned) or timeout seconds
    pass (AssertionError naming what, with the tail of proc's log)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            tail = ("\n--- %s log:\n%s" % (proc.args[0], proc.log_text()[-4000:])) if proc else ""
            raise AssertionError("timed out after %ss waiting for %s%s" % (timeout, what, tail))
        time.sleep(0.05)


class Db:
    """psql against one database; rows come back as lists of strings."""

    def __init__(self, conninfo):
        self.conninfo = conninfo

    def rows(self, sql, *args):
        cmd = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
               "-d", self.conninfo]
        for i, a in enumerate(args):
            cmd += ["-v", "p%d=%s" % (i + 1, a)]
        r = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
        return [line.split("\t") for line in r.stdout.splitlines() if line != ""]

    def value(self, sql, *args):
        rows = self.rows(sql, *args)
        return rows[0][0] if rows else None
