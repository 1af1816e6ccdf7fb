"""``dodai bench generate``: prefill, decode, KV cache memory, cache vs no cache, optionally vs HF."""

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
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def _rows(d: dict, hf: dict | None) -> list[tuple[str, str]]:
    rows = [
        ("model", d["model"]),
        ("params", f"{d['params']:,}"),
        ("weight dtype", d["weight_dtype"]),
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


def run(args) -> int:
    import json
    import sys

    from dodai.bench import bench_generate, bench_hf, prompt_ids

    print(f"dodai bench generate: {args.model}, {args.threads} threads, {args.repeats} repeats ...", file=sys.stderr)
    d = bench_generate(args.model, args.prompt_tokens, args.new_tokens, args.no_cache_tokens, args.threads,
                       args.repeats, args.dtype)
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
    if args.json:
        out = dict(d)
        if hf is not None:
            out["hf"] = hf
        print(json.dumps(out, indent=1))
        return 0
    rows = _rows(d, hf)
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0

