#!/usr/bin/env python3
"""bench/hf_qwen35.py — HF transformers on the Qwen3.5/3.6 27B shape, for the side-by-side
numbers neuron-bench is compared with (issue 7).

    python3 bench/hf_qwen35.py [--layers N] [--prefill 512,4096] [--decode-batches 1,8,32]
                               [--decode-steps 16] [--decode-context 128] [--repeats 3]

Runs on a GPU machine with PyTorch and transformers (tested with 5.17), offline. Builds the
27B-shape text model (config below, from shared/QWEN35.md; --layers N keeps the layer pattern
but only N layers, for a quick check) with the causal-LM class that transformers registers for
`qwen3_5_text` (found by introspection and printed; Qwen3-Next's is the fallback), its weights
made directly on the GPU in bf16 by the model's own initialisation (no CPU copy, no fp32 copy).
Measures, each as the median of --repeats runs after a warm-up:
  - prefill tok/s for each prompt length (one sequence, logits for the last token only);
  - decode tok/s with the KV cache at each batch size: a prompt of --decode-context tokens per
    sequence, then --decode-steps single-token forward passes (greedy next token fed back), the
    steps' time only; batch tok/s counts every sequence's token.
Prints progress to stderr and one JSON object on stdout. Out-of-memory cases are reported as
{"error": "oom"} and skipped. Attention runs through PyTorch's SDPA; the Gated DeltaNet layers
through whatever transformers picks (its PyTorch fallback when the `fla`/`causal_conv1d` kernels
are absent, which it reports).
"""

import argparse
import json
import statistics
import sys
import time


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def find_classes(transformers):
    """The config and causal-LM classes for qwen3_5_text (or qwen3_next), by registry lookup."""
    from transformers.models.auto import configuration_auto, modeling_auto

    for model_type in ("qwen3_5_text", "qwen3_next"):
        if model_type not in configuration_auto.CONFIG_MAPPING_NAMES:
            continue
        cfg_cls = configuration_auto.CONFIG_MAPPING[model_type]
        name = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
        if name is None:
            continue
        return model_type, cfg_cls, getattr(transformers, name)
    raise SystemExit("this transformers knows neither qwen3_5_text nor qwen3_next")


def make_config(cfg_cls, model_type, layers):
    shape = dict(
        vocab_size=248320,
        hidden_size=5120,
        intermediate_size=17408,
        num_hidden_layers=layers,
        num_attention_heads=24,
        num_key_value_heads=4,
        head_dim=256,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_num_key_heads=16,
        linear_num_value_heads=48,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        max_position_embeddings=32768,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25,
        },
        layer_types=["linear_attention" if (i + 1) % 4 else "full_attention"
                     for i in range(layers)],
    )
    if model_type == "qwen3_next":  # dense MLPs: no experts in the layer pattern we test
        shape.update(num_experts=0, decoder_sparse_step=1, mlp_only_layers=list(range(layers)))
    cfg = cfg_cls(**shape)
    try:
        cfg._attn_implementation = "sdpa"
    except (AttributeError, ValueError) as e:
        log(f"could not select sdpa attention ({e}); using the default")
    return cfg


def timed(torch, fn, repeats):
    """Median seconds of fn() over repeats runs after one warm-up; fn returns its own time or
    None (then the whole call is timed)."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        own = fn()
        torch.cuda.synchronize()
        times.append(own if own is not None else time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=64)
    ap.add_argument("--prefill", default="512,4096")
    ap.add_argument("--decode-batches", default="1,8,32")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--decode-context", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    import transformers

    model_type, cfg_cls, model_cls = find_classes(transformers)
    log(f"transformers {transformers.__version__}, torch {torch.__version__}: "
        f"{model_type} -> {cfg_cls.__name__} / {model_cls.__module__}.{model_cls.__name__}")
    cfg = make_config(cfg_cls, model_type, args.layers)
    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        model = model_cls(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    weight_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    log(f"built {args.layers} layers in {time.perf_counter() - t0:.1f} s: {n_params / 1e9:.2f} B "
        f"params, {weight_gb:.1f} GB, layer types {cfg.layer_types[:4]}...")
    # which Gated DeltaNet kernels transformers picked (its PyTorch fallback or fla's)
    gdn = next((m for m in model.modules() if type(m).__name__.endswith("GatedDeltaNet")), None)
    gdn_impl = None
    if gdn is not None:
        mod = sys.modules[type(gdn).__module__]
        gdn_impl = {n: getattr(getattr(mod, n, None), "__module__", None)
                    for n in ("chunk_gated_delta_rule", "torch_chunk_gated_delta_rule",
                              "causal_conv1d_fn")
                    if hasattr(mod, n)}
    gen = torch.Generator(device="cuda").manual_seed(1)
    result = {
        "tool": "hf_qwen35.py",
        "gpu": torch.cuda.get_device_name(0),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model_class": f"{model_cls.__module__}.{model_cls.__name__}",
        "config_class": cfg_cls.__name__,
        "layers": args.layers,
        "params": n_params,
        "weight_gb": round(weight_gb, 2),
        "attn_implementation": "sdpa",
        "gdn_functions": gdn_impl,
        "repeats": args.repeats,
        "prefill": {},
        "decode": {},
    }

    def ids(batch, length):
        return torch.randint(0, cfg.vocab_size, (batch, length), device=dev, generator=gen)

    with torch.inference_mode():
        for n in [int(v) for v in args.prefill.split(",") if v]:
            prompt = ids(1, n)

            def prefill():
                model(input_ids=prompt, use_cache=True, logits_to_keep=1)

            try:
                med, all_t = timed(torch, prefill, args.repeats)
                result["prefill"][str(n)] = {"tok_s": round(n / med, 1), "ms": round(med * 1e3, 2),
                                             "runs_ms": [round(t * 1e3, 2) for t in all_t]}
                log(f"prefill {n}: {n / med:.0f} tok/s ({med * 1e3:.1f} ms)")
            except torch.OutOfMemoryError:
                result["prefill"][str(n)] = {"error": "oom"}
                log(f"prefill {n}: out of memory")
            torch.cuda.empty_cache()

        for b in [int(v) for v in args.decode_batches.split(",") if v]:
            prompt = ids(b, args.decode_context)

            def decode():
                out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                tok = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(args.decode_steps):
                    out = model(input_ids=tok, past_key_values=cache, use_cache=True)
                    cache = out.past_key_values
                    tok = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                return time.perf_counter() - t

            try:
                med, all_t = timed(torch, decode, args.repeats)
                step = med / args.decode_steps
                result["decode"][str(b)] = {
                    "tok_s": round(b / step, 2), "ms_per_step": round(step * 1e3, 2),
                    "context": args.decode_context, "steps": args.decode_steps,
                    "runs_ms_per_step": [round(t / args.decode_steps * 1e3, 2) for t in all_t]}
                log(f"decode batch {b}: {b / step:.1f} tok/s ({step * 1e3:.1f} ms per step)")
            except torch.OutOfMemoryError:
                result["decode"][str(b)] = {"error": "oom"}
                log(f"decode batch {b}: out of memory")
            torch.cuda.empty_cache()

    result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
