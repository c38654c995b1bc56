# tests/gpu/tp_fleet.py — the whole fleet on one GPU host: a local PostgreSQL, the migrations,
# one neuron over its GPUs, the scheduler and a gateway, serving tensor-parallel models end to
# end. Run through tp_fleet.sh (which finds the binaries, a bundle's libraries and NCCL); needs
# only the Python standard library.
#
# What happens: PostgreSQL 15 is initialised and started on loopback in a temporary folder (as
# the unprivileged "postgres" account when run as root, TZ=GMT so no zone files are needed);
# `cortex migrate` applies sql/; each TP-compatible tiny fixture (qwen3_5 and llama: KV heads
# and linear key heads divide by 2) is registered twice, as NAME-tp2 (tensor_parallel = TP) and
# NAME-tp1 (tensor_parallel = 1), from a models directory that adds a byte-level tokenizer and a
# chat template; the neuron (--db), the scheduler and the gateway (--db, open) start on loopback.
# Every model is then asked for through the gateway while loaded nowhere (a cold start: the
# gateway holds the request, the scheduler places the model, the neuron loads it), and the
# outcome is read from the answers, the database (`cortex --json status`, cortex.placements,
# cortex.requests) and the neuron's GET /models. Every check lands in a PASS / FAIL / SKIP
# table; the exit status is 1 when any check failed, 77 when the host has fewer than TP GPUs.
#
# --harness: the same on a machine without GPUs: the neuron offers TP made-up GPUs
# (--test-gpus, forward passes on the CPU), so placement, accounting, the cold-start path and
# every database check run as on the GPU host; the GPU-only checks (driver memory, the log's
# "running on cuda:0,1") are skipped.
#
# TP-2 against TP-1: the two replicas of one fixture are the same weights; on the GPU the
# row-parallel products sum their halves in another order (fp32) and bf16 activations may round
# differently, so the greedy answers must be equal token for token, or part only after a near
# tie (TP-2's token within TIE_NATS of TP-1's best), with agreeing tokens' log-probabilities
# within LP_NATS (tests/kernels/test_cuda_tp.c bounds the logits by 1.5e-2).
import argparse
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from gpu_checks import Results, compare_greedy, write_model_dir

FIXTURES = (("qwen35", "qwen3_5"), ("llama", "llama"))  # (model name prefix, fixture folder)
MAX_TOKENS = 24
LP_NATS = 0.1
TIE_NATS = 2 * LP_NATS
PROMPT = "Tell me about the sea."
HTTP_TIMEOUT = 180  # a cold start waits for the scheduler's tick and the load
SETTINGS = {"heartbeat_interval": "1 second", "heartbeat_grace": "3 seconds",
            "scheduler_tick": "300 milliseconds", "lease_duration": "3 seconds"}


def make_models_dir(root, fixtures_dir, tp):
    """root/PREFIX-tpN for each fixture and N in (tp, 1): its config and weights (copied) plus
    tokenizer and template. Returns [(model name, fixture prefix, tensor_parallel)]."""
    models = []
    for prefix, fixture in FIXTURES:
        for degree in (tp, 1):
            name = "%s-tp%d" % (prefix, degree)
            d = os.path.join(root, name)
            write_model_dir(d, os.path.join(fixtures_dir, fixture))
            models.append((name, prefix, degree))
    return models


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, what):
    """Polls pred() every 100 ms until it returns a true value (returned); raises
    TimeoutError naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.1)


class Proc:
    """A child process whose combined output goes to a log file."""

    def __init__(self, name, args, log_path, env):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=60):
        """SIGTERM and wait; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def http_json(port, method, path, body=None, timeout=HTTP_TIMEOUT):
    """(status, parsed body or raw text) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def chat_stream(port, model):
    """A greedy streamed chat answer: (content text, finish reason, chunks, saw [DONE])."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0, "max_tokens": MAX_TOKENS, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    text, finish, chunks, done = "", None, 0, False
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("stream on %s: HTTP %d %r" % (model, resp.status, resp.read()))
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError("stream error: %r" % ev["error"])
            chunks += 1
            for c in ev.get("choices", []):
                text += c.get("delta", {}).get("content") or ""
                finish = c.get("finish_reason") or finish
    finally:
        conn.close()
    return text, finish, chunks, done


def well_formed(doc, model):
    """(ok, detail) of a non-streamed chat completion."""
    try:
        c = doc["choices"][0]
        ok = (doc.get("object") == "chat.completion" and doc.get("model") == model and
              c["message"]["role"] == "assistant" and isinstance(c["message"]["content"], str)
              and c["finish_reason"] in ("stop", "length") and
              doc["usage"]["completion_tokens"] == len(c["logprobs"]["content"]) > 0 and
              doc["usage"]["prompt_tokens"] > 0)
        return ok, "%d tokens, finish %s: %r" % (doc["usage"]["completion_tokens"],
                                                   c["finish_reason"], c["message"]["content"])
    except (KeyError, IndexError, TypeError) as e:
        return False, "malformed (%s): %r" % (e, doc)


def nvidia_smi_used():
    """{index: MiB used} from nvidia-smi, or None where it is absent."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    gpus = {}
    for line in out.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        gpus[int(f[0])] = {"name": f[1], "used_mib": int(f[2]), "total_mib": int(f[3])}
    return gpus


class Postgres:
    """A throwaway cluster in dir, on 127.0.0.1:port and a socket in dir/sock. As root it runs
    as the "postgres" account (created when missing), which must be able to read the binaries:
    they are copied into dir when it cannot."""

    def __init__(self, dir, bindir, libdir, env):
        self.dir, self.port = dir, free_port()
        self.env = dict(env, TZ="GMT", LC_ALL="C.UTF-8")
        if libdir:
            self.env["LD_LIBRARY_PATH"] = libdir
        self.as_user = []
        os.makedirs(os.path.join(dir, "sock"))
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self.as_user = [runuser, "-u", "postgres", "--"]
            if subprocess.run(self.as_user + ["test", "-x", os.path.join(bindir, "postgres")],
                              env=self.env).returncode != 0:
                # e.g. a checkout under /root: give the account its own copy of the tree
                top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
                    os.path.dirname(bindir)))))  # .../pg of .../pg/usr/lib/postgresql/15/bin
                shutil.copytree(top, os.path.join(dir, "pgcopy"), symlinks=True)
                bindir = os.path.join(dir, "pgcopy", os.path.relpath(bindir, top))
                if libdir:
                    self.env["LD_LIBRARY_PATH"] = os.path.join(dir, "pgcopy",
                                                               os.path.relpath(libdir, top))
            os.chmod(dir, 0o755)
            subprocess.run(["chown", "-R", "postgres:", dir], check=True)
        self.bindir = bindir
        self.env["PATH"] = bindir + ":" + self.env.get("PATH", "/usr/bin:/bin")
        self.data = os.path.join(dir, "data")
        self.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=cortex" % self.port

    def run(self, args, log):
        r = subprocess.run(self.as_user + args, env=self.env, capture_output=True, text=True,
                           timeout=120)
        with open(os.path.join(self.dir, log), "a") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(args[:2]), r.returncode,
                                                          r.stdout, r.stderr))
        return r.stdout

    def start(self):
        b = self.bindir
        self.run([b + "/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8"], "initdb.log")
        self.run([b + "/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                  "-w", "-t", "60", "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c jit=off"
                  " -c fsync=off -c max_connections=100" % (self.port,
                                                            os.path.join(self.dir, "sock")),
                  "start"], "pg_ctl.log")
        self.psql("CREATE DATABASE cortex", db="postgres")

    def psql(self, sql, db="cortex"):
        """Rows of sql as lists of strings (tab-separated, unaligned)."""
        r = subprocess.run([self.bindir + "/psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v",
                            "ON_ERROR_STOP=1", "-d", self.conninfo.replace("dbname=cortex",
                                                                           "dbname=" + db)],
                           input=sql, capture_output=True, text=True, timeout=60, env=self.env)
        if r.returncode != 0:
            raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
        return [line.split("\t") for line in r.stdout.splitlines() if line != ""]

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self.run([self.bindir + "/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                         "pg_ctl.log")
            except (RuntimeError, subprocess.SubprocessError):
                return False
        return True


def devices_of(doc):
    return {d["id"]: d for d in doc["devices"]}


def run(args):
    res = Results()
    out_dir = args.out or tempfile.mkdtemp(prefix="cortex-tp-fleet.")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cortex-tp-fleet-work.")
    os.chmod(work, 0o755)
    tp = args.tp
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tp": tp,
               "harness": args.harness, "nvidia_smi_before": nvidia_smi_used()}
    models = make_models_dir(os.path.join(work, "models"), args.fixtures, tp)
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast on a shared host
    env.setdefault("NCCL_RUNTIME_CONNECT", "0")  # connect at communicator creation, not lazily
    if args.lib_path:
        env["LD_LIBRARY_PATH"] = args.lib_path + (
            ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    pg = None
    procs = {}
    try:
        # PostgreSQL, the schema and the catalogue
        pg = Postgres(os.path.join(work, "pg"), args.pg_bin, args.pg_lib, os.environ)
        pg.start()
        version = pg.psql("SHOW server_version", db="postgres")[0][0]
        res.add(True, "PostgreSQL started on 127.0.0.1:%d" % pg.port,
                "version %s, bin %s" % (version, pg.bindir))
        cli_env = dict(env, CORTEX_SQL_DIR=os.path.join(args.source, "sql"),
                       PATH=pg.bindir + ":" + env.get("PATH", "/usr/bin:/bin"))
        if args.pg_lib:
            cli_env["LD_LIBRARY_PATH"] = cli_env.get("LD_LIBRARY_PATH", "") + ":" + \
                (pg.env.get("LD_LIBRARY_PATH") or args.pg_lib)
        r = subprocess.run([args.cli, "--db", pg.conninfo, "migrate"], capture_output=True,
                           text=True, timeout=300, env=cli_env)
        with open(os.path.join(out_dir, "migrate.log"), "w") as f:
            f.write(r.stdout + r.stderr)
        version = pg.psql("SELECT max(version) FROM cortex_meta.schema_migrations")[0][0] \
            if r.returncode == 0 else None
        if not res.add(r.returncode == 0, "cortex migrate applied sql/",
                       "schema version %s" % version if version else r.stderr[-500:]):
            raise RuntimeError("no schema")
        for k, v in SETTINGS.items():
            pg.psql("SELECT cortex.set_setting('%s', '%s')" % (k, v))
        for name, _, degree in models:
            pg.psql("SELECT cortex.add_model('%s', tensor_parallel => %d)" % (name, degree))
        rows = pg.psql("SELECT name, tensor_parallel FROM cortex.models ORDER BY name")
        res.add(sorted([n, str(d)] for n, _, d in models) == rows,
                "models registered (cortex.add_model, tensor_parallel %d and 1)" % tp,
                ", ".join("%s tp=%s" % tuple(r) for r in rows))

        # the fleet: one neuron over the host's GPUs, the scheduler, a gateway
        nport = free_port()
        nargs = [args.neuron, "--listen", "127.0.0.1:%d" % nport, "--advertise",
                 "http://127.0.0.1:%d" % nport, "--models-dir", os.path.join(work, "models"),
                 "--name", "gpu-host", "--db", pg.conninfo, "--ctx", "256", "--max-batch", "4",
                 "--threads", "2", "--prefill-chunk", "64", "--heartbeat", "1s"]
        if args.harness:
            # accounting only (nothing is allocated): each made-up GPU must exceed the
            # scheduler's device_memory_reserve_mib (1 GiB by default)
            nargs += ["--test-gpus", str(tp), "--memory-budget", "%dGiB" % (4 * tp)]
        procs["neuron"] = Proc("neuron", nargs, os.path.join(out_dir, "neuron.log"), env)
        neuron = procs["neuron"]

        def listening():
            if not neuron.alive():
                raise RuntimeError("the neuron exited at start:\n" + neuron.log_text()[-3000:])
            return re.search(r"\(port \d+\)", neuron.log_text())
        wait_for(listening, 120, "the neuron listening")
        before = http_json(nport, "GET", "/models")[1]
        gpus = sorted(d for d, v in devices_of(before).items() if v["kind"] == "cuda")
        summary["devices_before"] = before["devices"]
        if len(gpus) < tp:
            print("the neuron sees %d GPU(s), %d needed (a CUDA build on a host with %d GPUs, or"
                  " --harness):\n%s" % (len(gpus), tp, tp, neuron.log_text()[-2000:]))
            return 77
        res.add(True, "neuron lists %d GPUs" % len(gpus), ", ".join(
            "%s (%s, budget %.1f GB)" % (d["id"], d["name"], d["budget_bytes"] / 1e9)
            for d in before["devices"]))
        wait_for(lambda: pg.psql("SELECT count(*) FROM cortex.node_models nm JOIN cortex.nodes n"
                                 " ON n.id = nm.node_id WHERE n.name = 'gpu-host'")[0][0]
                 == str(len(models)), 60, "the neuron's models synced into the database")
        db_gpus = pg.psql("SELECT g.kind || ':' || g.ordinal FROM cortex.gpus g JOIN cortex.nodes n"
                          " ON n.id = g.node_id WHERE n.name = 'gpu-host' ORDER BY g.ordinal")
        res.add([r[0] for r in db_gpus] == gpus, "node registered with its GPUs (cortex.gpus)",
                ", ".join(r[0] for r in db_gpus))
        procs["scheduler"] = Proc("scheduler", [
            args.scheduler, "--db", pg.conninfo, "--name", "s1", "--listen", "", "--tick",
            "300ms", "--lease", "3s", "--neuron-timeout", "60s"],
            os.path.join(out_dir, "scheduler.log"), env)
        gport, gmport = free_port(), free_port()
        procs["gateway"] = Proc("gateway", [
            args.gateway, "--listen", "127.0.0.1:%d" % gport, "--metrics-listen",
            "127.0.0.1:%d" % gmport, "--db", pg.conninfo, "--open", "--snapshot-poll", "1s",
            "--hold-timeout", "60s" if args.harness else "150s", "--ping-interval", "500ms", "--accounting-flush", "200ms"],
            os.path.join(out_dir, "gateway.log"), env)

        def gateway_up():
            if not procs["gateway"].alive():
                raise RuntimeError("the gateway exited at start:\n" +
                                   procs["gateway"].log_text()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", gport), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(gateway_up, 30, "the gateway listening")
        res.add(pg.psql("SELECT count(*) FROM cortex.placements")[0][0] == "0",
                "fleet up: neuron, scheduler, gateway; nothing placed yet")

        # cold starts through the gateway: each model is loaded nowhere when asked for
        answers = {}
        for name, _, degree in models:
            t0 = time.monotonic()
            status, doc = http_json(gport, "POST", "/v1/chat/completions", {
                "model": name, "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0, "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 5})
            secs = time.monotonic() - t0
            ok, detail = well_formed(doc, name) if status == 200 else (False, repr(doc)[:300])
            res.add(status == 200 and ok, "%s: cold-start chat through the gateway" % name,
                    "HTTP %d in %.1f s; %s" % (status, secs, detail))
            if not (status == 200 and ok):
                break  # the next cold starts would only wait out the hold timeout too
            answers[name] = doc
        summary["answers"] = {n: d["choices"][0]["message"]["content"] for n, d in answers.items()}

        # placements: the database's view (the CLI) and the neuron's
        r = subprocess.run([args.cli, "--db", pg.conninfo, "--json", "status"],
                           capture_output=True, text=True, timeout=60, env=cli_env)
        status_doc = json.loads(r.stdout) if r.returncode == 0 else {}
        summary["cortex_status"] = status_doc
        by_model = {m["model"]: m for m in status_doc.get("models", [])}
        gpu_set = sorted(gpus[:tp])
        after = http_json(nport, "GET", "/models")[1]
        summary["neuron_models"] = after
        loaded = {m["name"]: m for m in after["loaded"]}
        devs = devices_of(after)
        for name, prefix, degree in models:
            m = by_model.get(name, {})
            pl = [p for p in m.get("placements", []) if p["state"] == "ready"]
            want = gpu_set if degree == tp else None
            ok = (len(pl) == 1 and pl[0]["node"] == "gpu-host" and
                  len(set(pl[0]["devices"])) == degree and
                  (want is None or sorted(pl[0]["devices"]) == want) and
                  all(d in gpus for d in pl[0]["devices"]))
            res.add(ok, "%s: one ready placement on %d GPU(s) of the node (cortex status)" % (
                name, degree), "; ".join("%s %s %s" % (p["node"], p["state"], p["devices"])
                                         for p in m.get("placements", [])) or "none")
            lm = loaded.get(name)
            pdevs = pl[0]["devices"] if pl else None
            res.add(lm is not None and lm["state"] == "ready" and lm["devices"] == pdevs and
                    lm["memory_bytes"] > 0,
                    "%s: the neuron runs it on the placement's devices" % name,
                    "%s, %s, %.1f MB reserved" % (lm["state"], ",".join(lm["devices"]),
                                                  lm["memory_bytes"] / 1e6) if lm else "not loaded")
        rows = pg.psql("SELECT m.name, p.id, count(pg.gpu_id), count(DISTINCT g.ordinal),"
                       " bool_and(g.node_id = p.node_id), min(p.memory_bytes)"
                       " FROM cortex.placements p JOIN cortex.models m ON m.id = p.model_id"
                       " JOIN cortex.placement_gpus pg ON pg.placement_id = p.id"
                       " JOIN cortex.gpus g ON g.id = pg.gpu_id WHERE p.state = 'ready'"
                       " GROUP BY m.name, p.id ORDER BY m.name")
        rows_by = {r[0]: r for r in rows}
        tp_names = [n for n, _, d in models if d == tp]
        res.add(all(n in rows_by and rows_by[n][2] == str(tp) and rows_by[n][3] == str(tp) and
                    rows_by[n][4] == "t" for n in tp_names),
                "cortex.placement_gpus: each TP-%d placement holds %d distinct GPUs of its node"
                % (tp, tp), "; ".join("%s placement %s: %s GPUs" % (r[0], r[1], r[2])
                                      for r in rows))
        # memory: every TP model's reservation is split over its GPUs, both hold their share
        share_ok, parts = True, []
        for n in tp_names:
            lm = loaded.get(n)
            if not lm:
                share_ok = False
                continue
            for d in lm["devices"]:
                share_ok &= devs[d]["used_bytes"] >= lm["memory_bytes"] // tp
        for d in gpu_set:
            parts.append("%s used %.1f MB" % (d, devs[d]["used_bytes"] / 1e6))
            share_ok &= devs[d]["used_bytes"] > 0
        reserved = sum(m["memory_bytes"] for m in loaded.values())
        share_ok &= sum(devs[d]["used_bytes"] for d in devs) == reserved
        res.add(share_ok, "GET /models: memory reserved on each of %s (TP share of each model)"
                % ",".join(gpu_set), "; ".join(parts) + "; %.1f MB reserved in all" % (
                    reserved / 1e6))
        if args.harness:
            res.skip("GPU driver memory fell on every TP device", "--harness: made-up GPUs")
            res.skip("the neuron's log says each TP model runs on cuda:0,1", "--harness")
        else:
            bdev = devices_of(before)
            fell = {d: bdev[d]["driver_free_bytes"] - devs[d]["driver_free_bytes"]
                    for d in gpu_set if "driver_free_bytes" in devs[d]}
            res.add(len(fell) == tp and all(v > 0 for v in fell.values()),
                    "GPU driver memory fell on every TP device after the loads",
                    ", ".join("%s %.1f MB" % (d, v / 1e6) for d, v in fell.items()))
            want = "cuda:" + ",".join(d.split(":")[1] for d in gpu_set)
            log = neuron.log_text()
            res.add(all(re.search(r"model %s: running on %s," % (re.escape(n), want), log)
                        for n in tp_names),
                    "the neuron's log says each TP model runs on %s" % want)
        summary["nvidia_smi_after"] = nvidia_smi_used()

        # TP-N answers against TP-1 answers of the same weights
        for prefix, _ in FIXTURES:
            a, b = "%s-tp1" % prefix, "%s-tp%d" % (prefix, tp)
            if a in answers and b in answers:
                ok, detail = compare_greedy(answers[a], answers[b], LP_NATS, TIE_NATS)
                res.add(ok, "%s: TP-%d greedy answer = TP-1's" % (prefix, tp), detail)
            else:
                res.add(False, "%s: TP-%d greedy answer = TP-1's" % (prefix, tp), "no answers")
        name = tp_names[0]
        if name in answers:
            text, finish, chunks, done = chat_stream(gport, name)
            res.add(done and text == answers[name]["choices"][0]["message"]["content"] and
                    finish == answers[name]["choices"][0]["finish_reason"],
                    "%s: streamed through the gateway = the non-streamed answer" % name,
                    "%d chunks, finish %s, [DONE] %s" % (chunks, finish, done))

        # the gateway's request rows (the accounting flush is asynchronous)
        def request_rows():
            rows = pg.psql("SELECT served_model, status_code, cold_start, node, placement_id,"
                           " tokens_out FROM cortex.requests WHERE NOT stream"
                           " ORDER BY served_model")
            return rows if len(rows) >= len(models) else None
        try:
            rows = wait_for(request_rows, 20, "the gateway's request rows")
        except TimeoutError:
            rows = pg.psql("SELECT served_model, status_code, cold_start, node, placement_id,"
                           " tokens_out FROM cortex.requests ORDER BY served_model")
        req = {r[0]: r for r in rows}
        for name in tp_names:
            r = req.get(name)
            out_tokens = answers.get(name, {}).get("usage", {}).get("completion_tokens")
            # node: the upstream the gateway used, i.e. the neuron's advertised endpoint
            res.add(r is not None and r[1] == "200" and r[2] == "t" and
                    r[3] == "http://127.0.0.1:%d" % nport and r[5] == str(out_tokens),
                    "%s: cortex.requests row (200, cold start, the neuron, tokens out)" % name,
                    "status %s, cold start %s, node %s, %s tokens out" % tuple(r[1:4] + r[5:6])
                    if r else "no row")
        summary["requests"] = rows
        res.add(pg.psql("SELECT count(*) FROM cortex.events WHERE kind = 'scheduler.load'"
                        " AND detail->>'cause' = 'demand'")[0][0] == str(len(models)),
                "every load was the scheduler's answer to the gateway's demand",
                "%d scheduler.load events" % len(models))
    except Exception as e:  # a crash of the harness or a process is a failure, with its cause
        res.add(False, "harness ran to the end", "%s: %s" % (type(e).__name__, e))
    finally:
        for name in ("gateway", "scheduler", "neuron"):
            if name in procs:
                rc = procs[name].stop()
                res.add(rc == 0, "%s stopped cleanly (SIGTERM)" % name, "exit %d" % rc)
        if pg:
            res.add(pg.stop(), "PostgreSQL stopped")
            for f in ("server.log", "initdb.log"):
                p = os.path.join(pg.dir, f)
                if os.path.exists(p):
                    shutil.copy(p, os.path.join(out_dir, "pg-" + f))
        shutil.rmtree(work, ignore_errors=True)
    summary["results"] = res.rows
    with open(os.path.join(out_dir, "tp_fleet.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(res.table())
    if args.out or res.failed():
        print("logs and tp_fleet.json in %s" % out_dir)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 1 if res.failed() else 0


def main():
    p = argparse.ArgumentParser(description="a TP model placed and served end to end")
    p.add_argument("--neuron", required=True)
    p.add_argument("--scheduler", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--cli", required=True, help="the cortex command")
    p.add_argument("--source", required=True, help="the checkout (sql/, tests/fixtures)")
    p.add_argument("--pg-bin", required=True, help="PostgreSQL 15's bin folder")
    p.add_argument("--pg-lib", help="LD_LIBRARY_PATH for PostgreSQL (a bundle_pg.sh lib/)")
    p.add_argument("--lib-path", help="prepended to the Cortex programs' LD_LIBRARY_PATH")
    p.add_argument("--out", help="folder for logs and the JSON summary")
    p.add_argument("--tp", type=int, default=2, help="tensor-parallel degree (the fixtures: 2)")
    p.add_argument("--harness", action="store_true",
                   help="no GPU: the neuron offers --tp made-up GPUs, computed on the CPU")
    a = p.parse_args()
    a.fixtures = os.path.join(a.source, "tests", "fixtures")
    sys.exit(run(a))


if __name__ == "__main__":
    main()
