# tests/gpu/daemon_on_gpu.py — the real neuron daemon serving the tiny fixture models on a GPU,
# checked against the same daemon on the CPU. Run through daemon_on_gpu.sh (which finds the
# binary and its libraries); needs only the Python standard library and, for the independent
# view of the GPU, nvidia-smi.
#
# Two daemons start on loopback: one sees the GPUs, the other runs with CUDA_VISIBLE_DEVICES
# empty, so its only device is the CPU. Each fixture (llama, qwen3_5: HF directories with seeded
# random weights) is served from a models directory that adds a byte-level tokenizer and a
# plain chat template (the fixtures ship neither; their vocabulary is the 256 bytes). Every
# check lands in a PASS / FAIL / SKIP table; the exit status is 1 when any check failed.
#
# Why answers may differ: the GPU holds the weights (and activations) in bf16, the CPU computes
# in fp32, so logits differ by rounding, and these random tiny models have nearly flat
# distributions (the best tokens are often a few hundredths of a nat apart). So two checks:
# - free-running: the greedy answers are compared token by token; they may part only where the
#   CPU saw a near tie (the GPU's token within TIE_NATS of the CPU's best), and where the tokens
#   agree their log-probabilities agree within LP_NATS;
# - teacher-forced: the CPU's answer is fed to both daemons (token-id prompts of growing length,
#   one greedy token each), so every position is compared whatever happened before it: the best
#   token's log-probability (a continuous function of the logits, so it does not jump at a tie)
#   agrees within LP_NATS at every position.
# For scale: the CPU itself with the weights rounded to bf16 moves these log-probabilities by up
# to 0.09 nats from fp32 (measured on the fixtures, 2026-11-25).
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from gpu_checks import Results, compare_greedy, token_steps, write_model_dir

FIXTURES = ("llama", "qwen3_5")
MAX_TOKENS = 24
LP_NATS = 0.2  # |logprob(GPU) - logprob(CPU)| of the same token at most this
TIE_NATS = 2 * LP_NATS  # where every logprob is within LP_NATS, a flip needs a gap under 2x
# the last prompt is long enough (>64 tokens) to take several prefill steps of --prefill-chunk
PROMPTS = ("Tell me about the sea.", "What is two plus two?", "Name three colours.",
           "Write a haiku about autumn leaves falling from the old oak tree by the river, "
           "in the evening light.")
# Prompt prefixes are saved every this many tokens (the GPU's KV block): the fixtures' short
# prompts then reach the prefix cache, so repeated prompts run from restored state.
PREFIX_INTERVAL = 32
HTTP_TIMEOUT = 60  # seconds; these models answer in milliseconds


def make_models_dir(root, fixtures_dir):
    """root/NAME for each fixture (gpu_checks.write_model_dir)."""
    for name in FIXTURES:
        write_model_dir(os.path.join(root, name), os.path.join(fixtures_dir, name))


class Daemon:
    """One neuron process on 127.0.0.1 (port 0; the port is read from its log)."""

    def __init__(self, label, binary, models, log_path, env, extra=()):
        self.label = label
        self.log_path = log_path
        self.log = open(log_path, "wb")
        args = [binary, "--listen", "127.0.0.1:0", "--models-dir", models, "--name",
                "gpu-test-" + label, "--ctx", "256", "--max-batch", "8", "--threads", "4",
                "--prefill-chunk", "64", "--prefix-interval", str(PREFIX_INTERVAL), *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError("%s neuron exited at start:\n%s" % (label, self.log_text()))
            m = re.search(r"\(port (\d+)\)", self.log_text())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("%s neuron did not start:\n%s" % (label, self.log_text()))

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None):
        """(status, body bytes) of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method, path, body=None):
        status, data = self.request(method, path, body)
        return status, json.loads(data)

    def models(self):
        return self.json("GET", "/models")[1]

    def loaded(self, name):
        return next((m for m in self.models()["loaded"] if m["name"] == name), None)

    def wait_ready(self, name, timeout=90):
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.loaded(name)
            if m is None or m["state"] not in ("loading",):
                return m
            time.sleep(0.05)
        return m

    def wait_gone(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.loaded(name) is None:
                return True
            time.sleep(0.05)
        return False

    def metrics(self):
        return self.request("GET", "/metrics")[1].decode()

    def chat(self, model, prompt):
        """A greedy non-streaming chat answer (the response object)."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 5}
        status, doc = self.json("POST", "/v1/chat/completions", body)
        if status != 200:
            raise RuntimeError("%s chat on %s: HTTP %d %r" % (self.label, model, status, doc))
        return doc

    def prompt_ids(self, model, prompt):
        """The token ids of a chat request's rendered prompt (POST /tokenize)."""
        status, doc = self.json("POST", "/tokenize", {
            "model": model, "messages": [{"role": "user", "content": prompt}]})
        if status != 200:
            raise RuntimeError("%s tokenize on %s: HTTP %d %r" % (self.label, model, status, doc))
        return doc["ids"]

    def next_token(self, model, ids):
        """(best token's text, its logprob) after the token-id prompt ids."""
        body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 1}
        status, doc = self.json("POST", "/v1/completions", body)
        if status != 200:
            raise RuntimeError("%s completion on %s: HTTP %d %r" % (self.label, model, status, doc))
        lp = doc["choices"][0]["logprobs"]
        return lp["tokens"][0], lp["token_logprobs"][0]

    def chat_stream(self, model, prompt):
        """A greedy streamed chat answer: (content text, finish reason, chunks, saw [DONE])."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": MAX_TOKENS, "stream": True,
                "stream_options": {"include_usage": True}}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        text, finish, chunks, done, usage = "", None, 0, False, None
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError("%s stream on %s: HTTP %d" % (self.label, model, resp.status))
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                ev = json.loads(line[6:])
                if "error" in ev:
                    raise RuntimeError("%s stream error: %r" % (self.label, ev["error"]))
                chunks += 1
                usage = ev.get("usage") or usage
                for c in ev.get("choices", []):
                    text += c.get("delta", {}).get("content") or ""
                    finish = c.get("finish_reason") or finish
        finally:
            conn.close()
        return text, finish, chunks, done, usage

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def compare_forced(cpu, gpu, model, prompt, cpu_doc):
    """(ok, detail): teacher-forced, the GPU's best log-probability after every prefix of the
    CPU's answer is the CPU's within LP_NATS. In this vocabulary a token's id is its byte."""
    ids = cpu.prompt_ids(model, prompt)
    answer = [b for step in token_steps(cpu_doc) for b in step[0]]
    worst, same = 0.0, 0
    for k in range(len(answer)):
        t_cpu, lp_cpu = cpu.next_token(model, ids + answer[:k])
        t_gpu, lp_gpu = gpu.next_token(model, ids + answer[:k])
        worst = max(worst, abs(lp_cpu - lp_gpu))
        same += t_cpu == t_gpu
    detail = "%d prompt + %d forced positions: max |dlogprob| %.3g, best token text equal at %d" % (
        len(ids), len(answer), worst, same)
    return worst <= LP_NATS and len(answer) > 0, detail


def nvidia_smi():
    """{index: {name, uuid, total, cc}} from nvidia-smi, or None where it is absent."""
    if not shutil.which("nvidia-smi"):
        return None
    gpus = {}
    # older drivers do not know compute_cap: then it is left out (and its check skipped)
    for fields in ("index,name,uuid,memory.total,compute_cap", "index,name,uuid,memory.total"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=" + fields,
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
        except (subprocess.SubprocessError, OSError):
            continue
        for line in out.strip().splitlines():
            f = [x.strip() for x in line.split(",")]
            gpus[int(f[0])] = {"name": f[1], "uuid": f[2], "total_mib": int(f[3]),
                               "cc": f[4] if len(f) > 4 else None}
        return gpus
    return None


def smi_processes():
    """{pid: MiB of GPU memory} as nvidia-smi lists them, or None without nvidia-smi. In a
    container the list may be empty or hold the host's pids: the caller then cannot tell."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    procs = {}
    for line in out.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == 2 and f[0].isdigit() and f[1].isdigit():
            procs[int(f[0])] = int(f[1])
    return procs


def metric(text, name, labels):
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    return None


def device_entry(doc, dev_id):
    return next((d for d in doc["devices"] if d["id"] == dev_id), None)


def check_devices(res, gpu, smi, dev):
    """The GPU daemon's report of dev ("cuda:N", which it lists) against nvidia-smi's view."""
    doc = gpu.models()
    d = device_entry(doc, dev)
    ordinal = int(dev[5:])
    res.add(True, "GPU daemon lists %s" % dev,
            ", ".join("%s (%s)" % (x["id"], x["name"]) for x in doc["devices"]))
    res.add(d["kind"] == "cuda" and d["ordinal"] == ordinal and not device_entry(doc, "cpu"),
            "%s has kind cuda, ordinal %d; no cpu device on a GPU host" % (dev, ordinal))
    if smi and ordinal in smi:
        s = smi[ordinal]
        res.add(d["name"] == s["name"], "device name = nvidia-smi's", d["name"])
        res.add(d.get("uuid") == s["uuid"], "device UUID = nvidia-smi's", d.get("uuid", ""))
        if s["cc"]:
            res.add(d.get("compute_capability") == s["cc"], "compute capability = nvidia-smi's",
                    d.get("compute_capability", ""))
        # the runtime's total leaves out what the driver reserves for itself (about 0.5 GB on
        # an H100 80GB: 85029158912 bytes against nvidia-smi's 81559 MiB)
        smi_total = s["total_mib"] * 2**20
        res.add(0.98 * smi_total <= d["memory_total_bytes"] <= smi_total,
                "memory total = nvidia-smi's less the driver's reserve (< 2%)",
                "%d bytes vs %d MiB" % (d["memory_total_bytes"], s["total_mib"]))
    else:
        res.skip("device identity = nvidia-smi's", "nvidia-smi not available")
    res.add(0 < d["budget_bytes"] <= d["memory_total_bytes"] and
            "driver_free_bytes" in d and 0 < d["driver_free_bytes"] <= d["memory_total_bytes"],
            "budget and driver free memory reported, within the total",
            "total %.2f GB, budget %.2f GB, driver free %.2f GB" % (
                d["memory_total_bytes"] / 1e9, d["budget_bytes"] / 1e9,
                d.get("driver_free_bytes", 0) / 1e9))
    return d


def load_all(res, daemon, devices_for):
    """Loads every fixture on daemon (devices_for(name) gives the request's devices)."""
    for name in FIXTURES:
        status, doc = daemon.json("POST", "/models/load",
                                  {"model": name, "devices": devices_for(name)})
        if not res.add(status == 202, "%s: load %s on %s accepted" % (
                daemon.label, name, devices_for(name)), "HTTP %d" % status):
            continue
    for name in FIXTURES:
        m = daemon.wait_ready(name)
        res.add(m is not None and m["state"] == "ready", "%s: %s ready" % (daemon.label, name),
                "state %s, %s, %.0f ms" % (m and m["state"], m and m.get("error", "no error"),
                                           (m or {}).get("load_ms", 0)) if m else "gone")


def check_answers(res, cpu, gpu, name, dev, summary):
    """The answers of model name on the device under test against the CPU daemon's."""
    a_cpu, a_gpu = cpu.chat(name, PROMPTS[0]), gpu.chat(name, PROMPTS[0])
    ok, detail = compare_greedy(a_cpu, a_gpu, LP_NATS, TIE_NATS)
    res.add(ok, "%s: greedy answer on %s = on cpu" % (name, dev), detail)
    t = a_gpu.get("timings", {})
    res.add(a_gpu["usage"]["completion_tokens"] == len(token_steps(a_gpu)) > 0 and
            "decode_per_second" in t, "%s: GPU answer has usage and timings" % name,
            "%d tokens, finish %s, prompt %.1f ms, decode %.0f tok/s" % (
                a_gpu["usage"]["completion_tokens"],
                a_gpu["choices"][0]["finish_reason"], t.get("prompt_ms", 0),
                t.get("decode_per_second", 0)))
    for daemon, answer in ((gpu, a_gpu), (cpu, a_cpu)):
        text, finish, chunks, done, usage = daemon.chat_stream(name, PROMPTS[0])
        res.add(text == answer["choices"][0]["message"]["content"] and done and
                finish == answer["choices"][0]["finish_reason"] and
                usage is not None and
                usage["completion_tokens"] == answer["usage"]["completion_tokens"] and
                usage["prompt_tokens"] == answer["usage"]["prompt_tokens"],
                "%s: streamed on %s = its non-streamed answer" % (name, daemon.label),
                "%d chunks, finish %s, [DONE] %s" % (chunks, finish, done))
    for p in (PROMPTS[0], PROMPTS[-1]):
        ok, detail_f = compare_forced(cpu, gpu, name, p, a_cpu if p == PROMPTS[0] else
                                      cpu.chat(name, p))
        res.add(ok, "%s: teacher-forced logprobs on %s = on cpu (%d-char prompt)" % (
            name, dev, len(p)), detail_f)
    summary.setdefault("answers", {})[name] = {
        "cpu": a_cpu["choices"][0]["message"]["content"],
        "gpu": a_gpu["choices"][0]["message"]["content"], "detail": detail}

    # a batch: the prompts at once on the GPU, each against the CPU's answer alone
    answers = {}

    def ask(p):
        answers[p] = gpu.chat(name, p)
    threads = [threading.Thread(target=ask, args=(p,)) for p in PROMPTS]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    details, all_ok = [], len(answers) == len(PROMPTS)
    for p in PROMPTS:
        if p not in answers:
            continue
        ok, detail = compare_greedy(cpu.chat(name, p), answers[p], LP_NATS, TIE_NATS)
        all_ok &= ok
        details.append(detail if not ok else detail.split(",")[0] + (
            " (then a near tie)" if "near tie" in detail else ""))
    res.add(all_ok, "%s: %d concurrent GPU requests = CPU answers" % (name, len(PROMPTS)),
            "; ".join(details))

    # the long prompt again: its saved prefix is restored on the GPU, same answer
    p = PROMPTS[-1]
    again = gpu.chat(name, p)
    n_prompt = again["usage"]["prompt_tokens"]
    cached = (again["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    want = (n_prompt - 1) // PREFIX_INTERVAL * PREFIX_INTERVAL
    ok, detail = compare_greedy(cpu.chat(name, p), again, LP_NATS, TIE_NATS)
    res.add(ok and cached == want > 0 and p in answers and
            again["choices"][0]["message"]["content"] ==
            answers[p]["choices"][0]["message"]["content"],
            "%s: a repeated prompt runs from its saved prefix on %s, same answer" % (name, dev),
            "%d of %d prompt tokens cached (want %d); %s" % (cached, n_prompt, want, detail))


def run(args):
    res = Results()
    out_dir = args.out or tempfile.mkdtemp(prefix="cortex-gpu-daemon.")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cortex-gpu-daemon-models.")
    models = os.path.join(work, "models")
    make_models_dir(models, args.fixtures)
    smi = nvidia_smi()
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nvidia_smi": smi}

    env_gpu = dict(os.environ)
    if args.lib_path:
        old = env_gpu.get("LD_LIBRARY_PATH")
        env_gpu["LD_LIBRARY_PATH"] = args.lib_path + (":" + old if old else "")
    env_cpu = dict(env_gpu, CUDA_VISIBLE_DEVICES="")
    if args.device == "cpu":
        env_gpu = env_cpu
    gpu = cpu = None
    try:
        gpu = Daemon("gpu", args.neuron, models, os.path.join(out_dir, "neuron-gpu.log"), env_gpu)
        cpu = Daemon("cpu", args.neuron, models, os.path.join(out_dir, "neuron-cpu.log"), env_cpu,
                     ["--memory-budget", "4GiB"])
        dev = args.device
        on_gpu = dev != "cpu"
        if device_entry(gpu.models(), dev) is None:
            print("the neuron has no device %s (a CUDA build on a GPU host is needed):\n%s" % (
                dev, gpu.log_text()[-2000:]))
            if not args.out:
                shutil.rmtree(out_dir, ignore_errors=True)
            return 77
        res.add([d["id"] for d in cpu.models()["devices"]] == ["cpu"],
                "CPU daemon (CUDA_VISIBLE_DEVICES empty) has only the cpu device")
        if on_gpu:
            before = check_devices(res, gpu, smi, dev)["driver_free_bytes"]
        else:
            res.skip("device report = the CUDA runtime's", "--device cpu: harness self-check")

        # device selection: unknown devices (and the CPU, on a GPU host) are refused
        status, doc = gpu.json("POST", "/models/load", {"model": "llama", "devices": ["cuda:7"]})
        msg = doc.get("error", {}).get("message", "")
        res.add(status == 400 and dev in msg, "load on cuda:7 refused with 400 naming %s" % dev,
                "HTTP %d: %s" % (status, msg))
        if on_gpu:
            status, doc = gpu.json("POST", "/models/load", {"model": "llama", "devices": ["cpu"]})
            res.add(status == 400, "load on cpu refused on the GPU host", "HTTP %d" % status)

        # llama by name, qwen3_5 by ordinal: both select the device
        load_all(res, gpu, lambda n: [dev] if n == "llama" or not on_gpu else [int(dev[5:])])
        load_all(res, cpu, lambda n: ["cpu"])

        doc = gpu.models()
        d = device_entry(doc, dev)
        loaded = {m["name"]: m for m in doc["loaded"]}
        reserved = sum(m["memory_bytes"] for m in loaded.values())
        res.add(all(m["devices"] == [dev] and m["memory_bytes"] > 0 for m in loaded.values())
                and len(loaded) == len(FIXTURES),
                "both models placed on %s with a reservation" % dev,
                ", ".join("%s %.1f MB" % (n, m["memory_bytes"] / 1e6) for n, m in loaded.items()))
        want_free = d["budget_bytes"] - reserved
        if on_gpu:
            want_free = min(want_free, d["driver_free_bytes"])
        res.add(d["used_bytes"] == reserved and d["free_bytes"] == want_free,
                "%s used = the models' reservations; free = budget - used%s" % (
                    dev, ", at most the driver's free" if on_gpu else ""),
                "used %d, free %d, driver free %s" % (d["used_bytes"], d["free_bytes"],
                                                      d.get("driver_free_bytes")))
        if on_gpu:
            res.add(d["driver_free_bytes"] < before,
                    "driver free memory fell after the loads (weights on the GPU)",
                    "%.1f MB less" % ((before - d["driver_free_bytes"]) / 1e6))
            log = gpu.log_text()
            res.add(all(re.search(r"model %s: running on %s" % (n, dev), log) for n in FIXTURES),
                    "the GPU daemon's log says each model runs on %s" % dev)
            procs = smi_processes()
            if not procs or gpu.proc.pid not in procs:
                res.skip("nvidia-smi shows the GPU daemon's memory",
                         "its pid is not listed (container): %r" % (procs,))
            else:
                res.add(procs[gpu.proc.pid] > 0 and cpu.proc.pid not in procs,
                        "nvidia-smi: the GPU daemon holds GPU memory, the CPU one none",
                        "%d MiB" % procs[gpu.proc.pid])
        summary["models_gpu"] = doc

        for name in FIXTURES:
            try:
                check_answers(res, cpu, gpu, name, dev, summary)
            except Exception as e:  # one model's failure must not hide the other's results
                res.add(False, "%s: answers checked to the end" % name,
                        "%s: %s" % (type(e).__name__, e))

        text = gpu.metrics()
        lab = '{device="%s"}' % dev
        used = metric(text, "cortex_neuron_memory_used_bytes", lab)
        budget = metric(text, "cortex_neuron_memory_budget_bytes", lab)
        free = metric(text, "cortex_neuron_memory_free_bytes", lab)
        res.add(used == reserved and budget == d["budget_bytes"] and free is not None,
                "/metrics reports %s budget, used and free" % dev,
                "budget %s, used %s, free %s" % (budget, used, free))
        per_model = {n: metric(text, "cortex_neuron_model_memory_bytes", '{model="%s"}' % n)
                     for n in FIXTURES}
        res.add(all(per_model[n] == loaded[n]["memory_bytes"] for n in FIXTURES),
                "/metrics reports each model's reservation", repr(per_model))
        steps = metric(text, "cortex_neuron_batch_steps_total", '{model="llama"}')
        seqs = metric(text, "cortex_neuron_batch_sequences_total", '{model="llama"}')
        if steps is None or seqs is None:
            res.skip("/metrics shows batched decode on the GPU", "batch metrics not found")
        else:
            res.add(seqs > steps, "/metrics shows batched decode on the GPU",
                    "mean batch %.2f over %d steps" % (seqs / steps, steps))

        hits = [metric(text, "cortex_neuron_prefix_cache_hits_total", '{model="%s"}' % n)
                for n in FIXTURES]
        res.add(all(h is not None and h > 0 for h in hits),
                "/metrics counts prefix cache hits on %s" % dev, repr(hits))

        for name in FIXTURES:
            status, _ = gpu.json("POST", "/models/unload", {"model": name})
            res.add(status == 202 and gpu.wait_gone(name), "%s: unloaded from %s" % (name, dev))
        d = device_entry(gpu.models(), dev)
        res.add(d["used_bytes"] == 0, "%s reservations back to 0 after the unloads" % dev,
                "used %d" % d["used_bytes"])
    except Exception as e:  # a crash of the harness or a daemon is a failure, with its cause
        res.add(False, "harness ran to the end", "%s: %s" % (type(e).__name__, e))
    finally:
        for daemon in (gpu, cpu):
            if daemon:
                rc = daemon.stop()
                res.add(rc == 0, "%s daemon stopped cleanly (SIGTERM)" % daemon.label,
                        "exit %d" % rc)
        shutil.rmtree(work, ignore_errors=True)
    summary["results"] = res.rows
    with open(os.path.join(out_dir, "daemon_on_gpu.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    for i, g in sorted((smi or {}).items()):
        print("GPU %d: %s (%s), %d MiB" % (i, g["name"], g["uuid"], g["total_mib"]))
    print(res.table())
    if args.out or res.failed():
        print("logs and daemon_on_gpu.json in %s" % out_dir)
    else:  # a temporary folder is kept only to look into a failure
        shutil.rmtree(out_dir, ignore_errors=True)
    return 1 if res.failed() else 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--neuron", required=True, help="the neuron binary (a CUDA build)")
    p.add_argument("--fixtures", required=True, help="tests/fixtures")
    p.add_argument("--out", help="folder for logs and the JSON summary")
    p.add_argument("--lib-path", help="prepended to the daemons' LD_LIBRARY_PATH (a bundle's lib/)")
    p.add_argument("--device", default="cuda:0",
                   help="device under test (cpu: check the harness itself where no GPU is)")
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
