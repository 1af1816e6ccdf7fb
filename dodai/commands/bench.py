"""``dodai bench generate``: prefill, decode, KV cache memory, cache vs no cache, optionally vs HF."""

from dodai.quant import FORMATS  # a constants module: no torch import

HELP = "benchmark generation: prefill, decode tok/s, KV cache bytes, cache vs no cache (optionally vs HF)"


def add_arguments(p) -> None:
    p.add_argument("what", choices=["generate"], help="what to benchmark (generate)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="run folder, .gguf file or registry name (default smollm2-135m-instruct)")
    p.add_argument("--prompt-tokens", type=int, default=200, help="prompt length in tokens (default 200)")
    p.add_argument("--new-tokens", type=int, default=128, help="greedy tokens decoded with the cache (default 128)")
    p.add_argument("--no-cache-tokens", type=int, default=256,
                   help="new tokens for the cache vs no-cache comparison; O(n^2) without cache (default 256)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement, median reported (default 3)")
    p.add_argument("--hf", action="store_true",
                   help="also run HF transformers fp32 on the same GGUF and prompt, in a subprocess")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="dodai weight and KV cache dtype (default float32)")
    p.add_argument("--format", choices=FORMATS, default="fp32",
                   help="weight format of dodai's linear layers (dodai.quant; default fp32). int8/int4 keep "
                        "fp32 activations, embeddings and KV cache; bf16 makes everything bf16")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--batch", type=int, default=0,
                   help="also decode this many prompts of different lengths as one left-padded batch vs one "
                        "by one, total tok/s (e.g. 8; default 0 = skip)")


def _rows(d: dict, hf: dict | None) -> list[tuple[str, str]]:
    rows = [
        ("model", d["model"]),
        ("params", f"{d['params']:,}"),
        ("weight format", d["weight_format"]),
        ("KV cache bytes / token / layer",
         f"{d['kv_bytes_per_token_per_layer']:,} (2 x {d['n_kv_head']} kv heads x {d['head_dim']} x "
         f"{d['kv_cache_dtype']})"),
        ("KV cache bytes / token (all layers)", f"{d['kv_bytes_per_token']:,} ({d['n_layer']} layers)"),
        ("KV cache bytes total", f"{d['kv_bytes_total']:,} ({d['prompt_tokens'] + d['new_tokens']} positions)"),
        (f"prefill {d['prompt_tokens']} tokens (s)", f"{d['prefill_s']:.4f}"),
        (f"decode {d['new_tokens']} tokens, cached (tok/s)", f"{d['decode_tok_s']:.1f}"),
        (f"decode {d['no_cache_tokens']} tokens, cached (tok/s)", f"{d['cached_tok_s_at_no_cache_tokens']:.1f}"),
        (f"decode {d['no_cache_tokens']} tokens, no cache (tok/s)", f"{d['uncached_tok_s']:.1f}"),
        ("KV cache speed-up", f"{d['cache_speedup']:.2f}x"),
        ("peak RSS dodai (MiB)", f"{d['peak_rss_mb']:.0f}"),
    ]
    if hf is not None:
        if "skipped" in hf:
            rows.append(("HF transformers fp32", f"skipped: {hf['skipped']}"))
        else:
            rows += [
                (f"HF fp32 prefill {d['prompt_tokens']} tokens (s)",
                 f"{hf['prefill_s']:.4f} (dodai {hf['prefill_s'] / d['prefill_s']:.2f}x as fast)"),
                (f"HF fp32 decode {d['new_tokens']} tokens (tok/s)",
                 f"{hf['decode_tok_s']:.1f} (dodai {d['decode_tok_s'] / hf['decode_tok_s']:.2f}x as fast)"),
                ("peak RSS HF process (MiB)", f"{hf['peak_rss_mb']:.0f}"),
            ]
    return rows


def bench_batched(model_spec: str, n_prompts: int, new_tokens: int, threads: int, repeats: int) -> dict:
    """``n_prompts`` synthetic prompts (8, 14, 20, ... tokens), ``new_tokens`` greedy tokens each: the
    left-padded batch (:func:`dodai.generate.batch.generate_batch`) vs the single stream one prompt
    after another (:func:`dodai.generate.sampling.generate`); medians of wall time, prefill included."""
    import statistics
    import time

    import torch

    from dodai.bench import prompt_ids
    from dodai.errors import DodaiError
    from dodai.generate.batch import generate_batch
    from dodai.generate.processors import LogitsPipeline
    from dodai.generate.sampling import generate
    from dodai.models import load_model

    if n_prompts < 1:
        raise DodaiError(f"--batch must be >= 1, got {n_prompts}")
    torch.set_num_threads(threads)
    model, _ = load_model(model_spec)
    prompts = [prompt_ids(model.config.vocab_size, 8 + 6 * i, seed=i) for i in range(n_prompts)]
    greedy = LogitsPipeline(temperature=0.0)

    def median_s(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    generate_batch(model, prompts[:2], 2, greedy)  # warm-up
    t_single = median_s(lambda: [list(generate(model, p, new_tokens, temperature=0.0)) for p in prompts])
    t_batch = median_s(lambda: generate_batch(model, prompts, new_tokens, greedy))
    total = n_prompts * new_tokens
    return {"batch_prompts": n_prompts, "batch_new_tokens": new_tokens, "single_stream_tok_s": total / t_single,
            "batched_tok_s": total / t_batch, "batched_speedup": t_single / t_batch}


def _batch_rows(b: dict) -> list[tuple[str, str]]:
    n, k = b["batch_prompts"], b["batch_new_tokens"]
    return [(f"{n} prompts x {k} tokens one by one, total (tok/s)", f"{b['single_stream_tok_s']:.1f}"),
            (f"{n} prompts x {k} tokens as one batch, total (tok/s)",
             f"{b['batched_tok_s']:.1f} ({b['batched_speedup']:.2f}x the single stream)")]


def run(args) -> int:
    import json
    import sys

    from dodai.bench import bench_generate, bench_hf, prompt_ids

    print(f"dodai bench generate: {args.model}, {args.threads} threads, {args.repeats} repeats ...", file=sys.stderr)
    d = bench_generate(args.model, args.prompt_tokens, args.new_tokens, args.no_cache_tokens, args.threads,
                       args.repeats, args.dtype, args.format)
    hf = None
    if args.hf:
        print("running HF transformers fp32 in a subprocess ...", file=sys.stderr)
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            hf = {"engine": "HF transformers fp32", "skipped": "transformers is not installed "
                  "(pip install transformers gguf)"}
        else:
            ids = prompt_ids(d["vocab_size"], args.prompt_tokens)  # the very ids dodai was given
            hf = bench_hf(args.model, ids, args.new_tokens, args.threads, args.repeats)
    if args.batch:
        print(f"batched decoding: {args.batch} prompts ...", file=sys.stderr)
        d.update(bench_batched(args.model, args.batch, args.new_tokens, args.threads, args.repeats))
    if args.json:
        out = dict(d)
        if hf is not None:
            out["hf"] = hf
        print(json.dumps(out, indent=1))
        return 0
    rows = _rows(d, hf) + (_batch_rows(d) if args.batch else [])
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0

