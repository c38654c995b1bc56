"""tests/ops/stack.py — the Cortex stack as an operator runs it, for the ops tests.

Real processes on loopback: a throwaway PostgreSQL (ops/lib/pg.sh, migrated with ops/migrate),
a neuron on CPU serving SmolLM2, the scheduler and gateways in --db mode (open, no API keys), and
HAProxy with ops/haproxy/cortex.cfg. Binaries come from CORTEX_NEURON_BIN, CORTEX_SCHEDULER_BIN
and CORTEX_GATEWAY_BIN, the model from CORTEX_SMOLLM2_GGUF (ops/test sets them all);
`require()` skips the calling test when one is missing. Every process writes its log into the
stack's folder; failures quote the log's tail.
"""
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

SRC = os.environ.get("CORTEX_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
MODEL = "smollm2"
# Fast liveness and planning so the stack reacts in seconds.
SETTINGS = {"heartbeat_interval": "1 second", "heartbeat_grace": "3 seconds",
            "scheduler_tick": "300 milliseconds", "lease_duration": "3 seconds"}


def require(*what):
    """Skips unless every named thing exists: 'neuron', 'scheduler', 'gateway' (binaries from the
    environment), 'model' (the SmolLM2 GGUF), 'postgres', or a program name on PATH."""
    for w in what:
        if w in ("neuron", "scheduler", "gateway"):
            path = os.environ.get("CORTEX_%s_BIN" % w.upper(), "")
            if not path or not os.access(path, os.X_OK):
                pytest.skip("CORTEX_%s_BIN not set" % w.upper())
        elif w == "model":
            if not os.path.isfile(os.environ.get("CORTEX_SMOLLM2_GGUF", "")):
                pytest.skip("CORTEX_SMOLLM2_GGUF not set")
        elif w == "postgres":
            if not (os.path.exists("/usr/lib/postgresql/15/bin/pg_ctl") or shutil.which("pg_ctl")):
                pytest.skip("PostgreSQL not installed")
        elif not os.access(program(w), os.X_OK) and not shutil.which(w):
            pytest.skip("%s not installed" % w)


def program(name):
    """The path of a program, also when /usr/sbin is not on PATH (haproxy, runuser)."""
    for d in ("/usr/sbin", "/sbin"):
        if not shutil.which(name) and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name) or name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, proc=None):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError("%s: %s exited (%s)\n%s" % (what, proc.name, proc.proc.returncode,
                                                            proc.tail()))
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s%s" % (
                what, "\n" + proc.tail() if proc else ""))
        time.sleep(0.1)


def http(method, url, body=None, timeout=60, headers=None):
    """(status, text); status 0 with the error text when no HTTP answer came."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, httpclient.HTTPException) as e:
        return 0, repr(e)


def metric_names(text):
    """Metric family and sample names of a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        m = re.match(r"# (?:TYPE|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if m:
            names.add(m.group(1))
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if m:
                names.add(m.group(1))
    return names


def metric_value(text, name, labels=None):
    """Sum of the samples of name whose labels include the given ones; None when none."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if not m:
            continue
        if labels and not all('%s="%s"' % kv in (m.group(1) or "") for kv in labels.items()):
            continue
        total += float(m.group(2))
        found = True
    return total if found else None


class Proc:
    """A process whose output goes to DIR/NAME.log."""

    def __init__(self, name, args, workdir, env=None):
        self.name = name
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def tail(self, n=4000):
        with open(self.log_path, "rb") as f:
            return "--- %s log:\n%s" % (self.name, f.read().decode(errors="replace")[-n:])

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL: the process dies as in a crash."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit status (SIGKILL after timeout)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Postgres:
    """A throwaway cluster in DIR/NAME (ops/lib/pg.sh) on a TCP port of 127.0.0.1."""

    def __init__(self, workdir, name="pg", port=None, migrate=True):
        self.dir = os.path.join(workdir, name)
        self.port = port or free_port()
        self._pg("pg_start \"$1\" \"$2\" >&2", self.dir, str(self.port))
        self.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=cortex" % self.port
        if migrate:
            subprocess.run([os.path.join(SRC, "ops/migrate"), self.conninfo], check=True,
                           stdout=subprocess.DEVNULL)

    def _pg(self, script, *args):
        subprocess.run(["bash", "-c", 'source "$0/ops/lib/pg.sh" && ' + script, SRC, *args],
                       check=True, timeout=180)

    def stop(self):
        self._pg('pg_stop "$1"', self.dir)

    def start(self):
        self._pg('pg_start "$1" "$2" >&2', self.dir, str(self.port))

    def sql(self, query, conninfo=None):
        return subprocess.run(["psql", "-X", conninfo or self.conninfo, "-v", "ON_ERROR_STOP=1",
                               "-Atqc", query], check=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()

    def settings(self, settings=SETTINGS):
        for k, v in settings.items():
            self.sql("SELECT cortex.set_setting('%s', '%s')" % (k, v))


def start_neuron(workdir, conninfo, name="ops-node", port=None):
    """A neuron on CPU with SmolLM2 in its models folder; returns (Proc, base URL)."""
    models = os.path.join(workdir, "models-" + name)
    os.makedirs(models, exist_ok=True)
    link = os.path.join(models, MODEL + ".gguf")
    if not os.path.exists(link):
        os.symlink(os.environ["CORTEX_SMOLLM2_GGUF"], link)
    port = port or free_port()
    p = Proc(name, [os.environ["CORTEX_NEURON_BIN"], "--listen", "127.0.0.1:%d" % port,
                    "--advertise", "http://127.0.0.1:%d" % port, "--name", name, "--db", conninfo,
                    "--models-dir", models, "--ctx", "512", "--threads", "2", "--max-batch", "4",
                    "--memory-budget", str(4 << 30), "--heartbeat", "1s"], workdir)
    return p, "http://127.0.0.1:%d" % port


def start_scheduler(workdir, conninfo, name="ops-scheduler", port=None):
    """The scheduler with fast ticks; returns (Proc, metrics URL)."""
    port = port or free_port()
    p = Proc(name, [os.environ["CORTEX_SCHEDULER_BIN"], "--db", conninfo, "--name", name,
                    "--listen", "127.0.0.1:%d" % port, "--tick", "300ms", "--lease", "3s",
                    "--neuron-backoff", "200ms"], workdir)
    return p, "http://127.0.0.1:%d" % port


def start_gateway(workdir, conninfo, name="gw-1", port=None, metrics=None):
    """A gateway in --db mode, open (no API keys); returns (Proc, API URL, metrics URL)."""
    port, metrics = port or free_port(), metrics or free_port()
    p = Proc(name, [os.environ["CORTEX_GATEWAY_BIN"], "--listen", "127.0.0.1:%d" % port,
                    "--metrics-listen", "127.0.0.1:%d" % metrics, "--db", conninfo, "--open",
                    "--snapshot-poll", "1s", "--ping-interval", "1s", "--hold-timeout", "90s",
                    "--accounting-flush", "200ms"], workdir)
    return p, "http://127.0.0.1:%d" % port, "http://127.0.0.1:%d" % metrics


def chat(base, max_tokens=2, stream=False, timeout=120, raw=False):
    """One chat request (raw: a /v1/completions request with a two-token prompt, which costs a
    sanitizer-built neuron far less); (ok, detail). A stream must end with data: [DONE]."""
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if raw:
        body["prompt"] = "Hi"
    else:
        body["messages"] = [{"role": "user", "content": "Say hi."}]
    status, text = http("POST", base + ("/v1/completions" if raw else "/v1/chat/completions"),
                        body, timeout=timeout)
    if status != 200:
        return False, "%s %s" % (status, text[:300])
    if stream:
        return text.rstrip().endswith("data: [DONE]"), text[-300:]
    try:
        return bool(json.loads(text)["choices"]), text[:300]
    except (ValueError, KeyError) as e:
        return False, "%r: %s" % (e, text[:300])


def haproxy_config(bind_port, servers, socket_path):
    """ops/haproxy/cortex.cfg for a test: its global section replaced by one that runs in the
    foreground as the current user with an admin socket at socket_path, the API bound to
    127.0.0.1:bind_port, the stats frontend dropped, and its server lines replaced by servers
    [(name, "host:port")]. Everything else (timeouts, checks, retries) is the shipped file's."""
    with open(os.path.join(SRC, "ops/haproxy/cortex.cfg")) as f:
        lines = f.read().splitlines()
    out, section, servers_done = [], None, False
    for line in lines:
        m = re.match(r"^(global|defaults|frontend|backend|listen)\b\s*(\S*)", line)
        if m:
            section = (m.group(1), m.group(2))
            if section == ("global", ""):
                out += ["global", "    stats socket %s mode 600 level admin" % socket_path,
                        "    maxconn 2000"]
                continue
            if section == ("frontend", "stats"):
                continue
        if section is None or section[0] == "global" or section == ("frontend", "stats"):
            continue
        if re.match(r"^\s*log ", line) or re.match(r"^\s*option (httplog|dontlognull)", line):
            continue
        if re.match(r"^\s*bind\s", line):
            line = "    bind 127.0.0.1:%d" % bind_port
        if re.match(r"^\s*server\s", line):
            if not servers_done:
                out += ["    server %s %s" % s for s in servers]
                servers_done = True
            continue
        out.append(line)
    assert servers_done, "no server lines in ops/haproxy/cortex.cfg"
    return "\n".join(out) + "\n"


def haproxy_servers(socket_path):
    """{server name: status} of the cortex_gateways backend, from the admin socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(socket_path)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    rows = data.decode().splitlines()
    header = rows[0].lstrip("# ").split(",")
    result = {}
    for r in rows[1:]:
        f = dict(zip(header, r.split(",")))
        if f.get("pxname") == "cortex_gateways" and f.get("svname") not in ("BACKEND", None):
            result[f["svname"]] = f.get("status", "")
    return result


def new_workdir(prefix):
    """A folder for one test module's clusters and logs; remove it with remove_workdir()."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def remove_workdir(d):
    """Removes a folder of new_workdir() once everything in it stopped, unless
    CORTEX_KEEP_TEST_DIRS is set (failures quote the logs' tails either way)."""
    if os.environ.get("CORTEX_KEEP_TEST_DIRS"):
        print("kept", d)
    else:
        shutil.rmtree(d, ignore_errors=True)
