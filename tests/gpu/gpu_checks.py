# tests/gpu/gpu_checks.py — what daemon_on_gpu.py and tp_fleet.py share: the models directory
# entry for a tiny fixture (its config and weights plus a byte-level tokenizer and a plain chat
# template, which the fixtures do not ship), the PASS / FAIL / SKIP table, and the comparison
# of two greedy answers that may part only at a near tie. Python standard library only.
import json
import os
import shutil

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def byte_level_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer.json with one token per byte (id = byte), no
    merges: matches the fixtures' 256-token vocabulary."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
                 list(range(0xAE, 0x100)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {"version": "1.0", "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": {chars[b]: b for b in range(256)}, "merges": []}}


def write_model_dir(dest, fixture_dir):
    """dest (created): the fixture's config and weights (copied) plus tokenizer and template."""
    os.makedirs(dest)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(fixture_dir, f), dest)
    with open(os.path.join(dest, "tokenizer.json"), "w") as f:
        json.dump(byte_level_tokenizer(), f)
    with open(os.path.join(dest, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


class Results:
    """The checks' table, each row printed as it is added (a hang still shows how far it got)."""

    def __init__(self):
        self.rows = []  # (status, name, detail)

    def add(self, ok, name, detail=""):
        self.rows.append(("PASS" if ok else "FAIL", name, detail))
        print("%s  %s  %s" % self.rows[-1], flush=True)
        return ok

    def skip(self, name, detail):
        self.rows.append(("SKIP", name, detail))
        print("%s  %s  %s" % self.rows[-1], flush=True)

    def failed(self):
        return sum(1 for r in self.rows if r[0] == "FAIL")

    def table(self):
        w = max(len(r[1]) for r in self.rows)
        lines = ["%-4s  %-*s  %s" % (s, w, n, d) for s, n, d in self.rows]
        n = {k: sum(1 for r in self.rows if r[0] == k) for k in ("PASS", "FAIL", "SKIP")}
        lines.append("%d passed, %d failed, %d skipped" % (n["PASS"], n["FAIL"], n["SKIP"]))
        return "\n".join(lines)


def token_steps(doc):
    """[(token byte string, logprob, {top token: logprob})] of a chat answer with logprobs."""
    out = []
    for e in doc["choices"][0]["logprobs"]["content"]:
        top = {bytes(t["bytes"]): t["logprob"] for t in e["top_logprobs"]}
        out.append((bytes(e["bytes"]), e["logprob"], top))
    return out


def compare_greedy(ref_doc, doc, lp_nats, tie_nats):
    """(ok, detail): doc's greedy tokens equal ref_doc's, or differ only after a near tie (doc's
    token within tie_nats of ref_doc's best there), and agreeing tokens have log-probabilities
    within lp_nats; equal tokens must also give equal text."""
    ref, got = token_steps(ref_doc), token_steps(doc)
    same, max_dlp = 0, 0.0
    while same < min(len(ref), len(got)) and ref[same][0] == got[same][0]:
        max_dlp = max(max_dlp, abs(ref[same][1] - got[same][1]))
        same += 1
    detail = "%d/%d tokens equal, max |dlogprob| %.2g" % (same, len(ref), max_dlp)
    if max_dlp > lp_nats:
        return False, detail + " > %g" % lp_nats
    if same == len(ref) == len(got):
        text_ok = ref_doc["choices"][0]["message"]["content"] == \
            doc["choices"][0]["message"]["content"]
        return text_ok, detail + ("" if text_ok else "; texts differ")
    if same == len(ref) or same == len(got):
        return False, detail + "; one answer is a prefix of the other (%d vs %d tokens)" % (
            len(ref), len(got))
    best, theirs = ref[same][1], ref[same][2].get(got[same][0])
    if theirs is None or best - theirs > tie_nats:
        return False, detail + "; diverged at token %d without a near tie (the token %s)" % (
            same, "not in the reference's top 5" if theirs is None else "%.3f nats behind" % (
                best - theirs))
    return True, detail + "; then a near tie (%.3f nats) at token %d" % (best - theirs, same)
