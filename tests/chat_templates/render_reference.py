#!/usr/bin/env python3
"""tests/chat_templates/render_reference.py — the reference renderings of the chat-template corpus.

Renders every template in templates/ with every conversation in conversations.json using Python
jinja2 configured the way Hugging Face transformers renders chat templates
(transformers/utils/chat_template_utils.py: ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, a tojson filter that is json.dumps with ensure_ascii=False,
raise_exception() and strftime_now() globals; render(messages=, tools=, documents=,
add_generation_prompt=, **special_tokens, **kwargs)).

Before rendering, each OpenAI-shaped conversation gets the request normalisation that Cortex's
chat_template.c applies (as OpenAI-compatible servers do before calling transformers):
  1. tool_calls[].function.arguments given as a JSON string is decoded when it holds an object;
  2. an assistant message whose content is null gets content "";
  3. a content list made only of {"type": "text"} parts becomes the concatenation of their texts.

Besides the fixed corpus it generates --random N conversations (seeded, so reproducible) mixing
roles, tool calls, tool results, content parts and awkward text; they are written to the output
under "random_conversations" so the C test renders exactly the same ones.

Usage: render_reference.py [--now EPOCH] [--random N] [--seed S] --out FILE
Writes {"results": {"<template>/<conversation>": {"text": str} | {"error": str, "raised": bool}},
        "random_conversations": [...]}.
Exits 77 when jinja2 is not installed (the calling test then reports "skipped").
"""
import argparse
import json
import os
import random
import sys
from datetime import datetime

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("jinja2 is not installed", file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    pass


def make_env(now):
    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.fromtimestamp(now).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def normalise(messages):
    out = []
    for m in messages:
        m = dict(m)
        if m.get("role") == "assistant" and "content" in m and m["content"] is None:
            m["content"] = ""
        content = m.get("content")
        if isinstance(content, list) and content and all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content):
            m["content"] = "".join(p["text"] for p in content)
        if isinstance(m.get("tool_calls"), list):
            calls = []
            for c in m["tool_calls"]:
                c = dict(c)
                fn = c.get("function")
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    fn = dict(fn)
                    try:
                        args = json.loads(fn["arguments"])
                    except ValueError:
                        args = None
                    if isinstance(args, dict):
                        fn["arguments"] = args
                    c["function"] = fn
                calls.append(c)
            m["tool_calls"] = calls
        out.append(m)
    return out


PIECES = ["hello", " ", "\n", "\t", "  ", "\u00e9", "\u65e5\u672c", "\U0001F680", "'", '"',
          "\\", "<think>", "</think>", "<tool_response>", "</tool_response>", "{{x}}", "{%",
          "\u03a3", "\u00df", "\u00a0", "\u2028", "0", "true", "null"]


def random_conversations(count, seed, tools):
    rnd = random.Random(seed)

    def text():
        return "".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 8)))

    def args():
        return {rnd.choice(["city", "q", "n", "x y", "\u00e9"]):
                rnd.choice([text(), rnd.randint(-5, 5), 1.5, True, None, [1, "a"], {"k": text()}])
                for _ in range(rnd.randint(0, 3))}

    out = []
    for i in range(count):
        msgs = []
        if rnd.random() < 0.6:
            msgs.append({"role": "system", "content": text()})
        for _ in range(rnd.randint(1, 5)):
            r = rnd.random()
            if r < 0.4:
                content = text() if rnd.random() < 0.8 else [
                    {"type": "text", "text": text()}, {"type": "text", "text": text()}]
                msgs.append({"role": "user", "content": content})
            elif r < 0.7:
                msgs.append({"role": "assistant", "content": text()})
            elif r < 0.85:
                calls = [{"id": "call%05d" % rnd.randint(0, 99999), "type": "function",
                          "function": {"name": rnd.choice(["get_weather", "search_docs"]),
                                       "arguments": json.dumps(args())}}
                         for _ in range(rnd.randint(1, 2))]
                msgs.append({"role": "assistant", "content": rnd.choice([None, "", text()]),
                             "tool_calls": calls})
            else:
                msgs.append({"role": "tool", "tool_call_id": "call%05d" % rnd.randint(0, 99999),
                             "content": text()})
        conv = {"name": "random-%d" % i, "messages": msgs,
                "add_generation_prompt": rnd.random() < 0.7}
        if rnd.random() < 0.5:
            conv["tools"] = tools
        if rnd.random() < 0.3:
            conv["kwargs"] = {"enable_thinking": rnd.random() < 0.5}
        out.append(conv)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--now", type=float, default=1700000000)
    ap.add_argument("--random", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    env = make_env(args.now)
    with open(os.path.join(HERE, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)["conversations"]
    tools = next((c["tools"] for c in conversations if c.get("tools")), [])
    extra = random_conversations(args.random, args.seed, tools)
    conversations = conversations + extra
    with open(os.path.join(HERE, "special_tokens.json"), encoding="utf-8") as f:
        special = json.load(f)
    results = {}
    tdir = os.path.join(HERE, "templates")
    for fname in sorted(os.listdir(tdir)):
        if not fname.endswith(".jinja"):
            continue
        model = fname[:-len(".jinja")]
        with open(os.path.join(tdir, fname), encoding="utf-8", newline="") as f:
            template = env.from_string(f.read())
        for conv in conversations:
            ctx = dict(special.get(model, {}))
            ctx.update(conv.get("kwargs", {}))
            try:
                text = template.render(messages=normalise(conv["messages"]),
                                       tools=conv.get("tools"), documents=None,
                                       add_generation_prompt=conv.get("add_generation_prompt", False),
                                       **ctx)
                results[f"{model}/{conv['name']}"] = {"text": text}
            except Exception as e:  # the C side must fail too
                results[f"{model}/{conv['name']}"] = {
                    "error": str(e), "raised": isinstance(e, RaisedByTemplate)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"results": results, "random_conversations": extra}, f, ensure_ascii=False,
                  indent=1)


if __name__ == "__main__":
    main()
