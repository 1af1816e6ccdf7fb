"""Batched generation vs one stream, and KV cache vs no cache (R5.4, R5.5; issue 4 benchmark rows).

1. **Batched**: N prompts of different lengths (left padded) decoded together by
   :func:`dodai.generate.batch.generate_batch` vs the same prompts one after another through the single
   stream :func:`dodai.generate.sampling.generate`; greedy, exactly ``--new-tokens`` each (no EOS), total
   generated tokens / wall time, prefill included on both sides. Target: batched >= 4x single stream.
   The batched ids are checked equal to the single-stream ids.
2. **KV cache vs no cache**: :func:`dodai.generate.sampling.generate` vs ``generate_uncached`` (which
   re-runs the whole sequence each step) at ``--no-cache-tokens`` new tokens after a short prompt, on a
   small random GPT (nanoGPT Shakespeare size) and, at ``--smollm2-no-cache-tokens``, on the model.
   Target: >= 5x at 256 new tokens.

Medians over ``--repeats`` of wall time and of this process's CPU time; torch threads ``--threads`` (2 is
the issue's setting; on a crowded machine 1 thread avoids OpenMP threads spinning for a descheduled peer).

    .venv/bin/python benchmarks/generate_batched.py [--new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from dodai.generate.batch import generate_batch
from dodai.generate.processors import LogitsPipeline
from dodai.generate.sampling import generate, generate_uncached
from dodai.models import load_model
from dodai.models.gpt import GPT, GPTConfig

TEXTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "Photosynthesis is the process by which",
    "Here is a short poem about the moon:",
    "The three most important things to remember when learning a new language are",
    "Q: What is 12 times 7?\nA:",
    "In 1905, Albert Einstein published four papers that changed physics. The first one",
]


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall seconds, median CPU seconds of this process (``time.process_time``), last result.

    CPU time is reported next to wall time because the machine this runs on is shared: under heavy
    contention wall time mostly measures the other processes, while CPU time still measures our work.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def bench_batched(model, tok, n_prompts: int, new_tokens: int, repeats: int) -> dict:
    prompts = [tok.encode(t) for t in (TEXTS * (n_prompts // len(TEXTS) + 1))[:n_prompts]]
    greedy = LogitsPipeline(temperature=0.0)

    def single():
        return [list(generate(model, p, new_tokens, temperature=0.0)) for p in prompts]

    def batched():
        return [c.ids for c in generate_batch(model, prompts, new_tokens, greedy)]

    generate_batch(model, prompts[:2], 2, greedy)  # warm-up (first-call allocations)
    t_single, c_single, ids_single = timed(single, repeats)
    t_batch, c_batch, ids_batch = timed(batched, repeats)
    total = n_prompts * new_tokens
    return {"prompts": n_prompts, "prompt_lengths": [len(p) for p in prompts], "new_tokens": new_tokens,
            "single_s": t_single, "batched_s": t_batch, "single_tok_s": total / t_single,
            "batched_tok_s": total / t_batch, "ratio": t_single / t_batch,
            "single_cpu_s": c_single, "batched_cpu_s": c_batch, "single_tok_cpu_s": total / c_single,
            "batched_tok_cpu_s": total / c_batch, "ratio_cpu": c_single / c_batch,
            "same_ids": ids_single == ids_batch}


def bench_cache(model, prompt: list[int], new_tokens: int, repeats: int) -> dict:
    t_c, c_c, a = timed(lambda: list(generate(model, prompt, new_tokens, temperature=0.0)), repeats)
    t_u, c_u, b = timed(lambda: list(generate_uncached(model, prompt, new_tokens, temperature=0.0)), repeats)
    return {"new_tokens": new_tokens, "prompt_tokens": len(prompt), "cached_s": t_c, "uncached_s": t_u,
            "cached_tok_s": new_tokens / t_c, "uncached_tok_s": new_tokens / t_u, "ratio": t_u / t_c,
            "cached_cpu_s": c_c, "uncached_cpu_s": c_u, "cached_tok_cpu_s": new_tokens / c_c,
            "uncached_tok_cpu_s": new_tokens / c_u, "ratio_cpu": c_u / c_c, "same_ids": a == b}


def _pair(d: dict, base: str, ours: str) -> tuple[str, str, str]:
    """Table cells: baseline tok/s (wall, CPU), ours (wall, CPU), ratios (wall, CPU)."""
    return (f"{d[base + '_tok_s']:.2f}, {d[base + '_tok_cpu_s']:.2f}",
            f"{d[ours + '_tok_s']:.2f}, {d[ours + '_tok_cpu_s']:.2f}",
            f"{d['ratio']:.2f}x, {d['ratio_cpu']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name, .gguf or run folder")
    ap.add_argument("--prompts", type=int, default=8, help="concurrent prompts (default 8)")
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    ap.add_argument("--no-cache-tokens", type=int, default=256, help="new tokens, small GPT cache test")
    ap.add_argument("--smollm2-no-cache-tokens", type=int, default=32,
                    help="new tokens for the model's cache vs no-cache test (O(n^2) without cache; default 32)")
    ap.add_argument("--gpt-layers", type=int, default=4, help="small GPT for the 256-token cache test (default 4)")
    ap.add_argument("--gpt-width", type=int, default=256, help="its width, a multiple of 64 (default 256)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement, median (default 3)")
    ap.add_argument("--skip", choices=["batched", "cache"], action="append", default=[], help="skip a part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    model, tok = load_model(args.model)
    rows = []
    if "batched" not in args.skip:
        b = bench_batched(model, tok, args.prompts, args.new_tokens, args.repeats)
        print(f"batched: {b}")
        rows.append((f"{args.model}: {b['prompts']} prompts ({min(b['prompt_lengths'])}-"
                     f"{max(b['prompt_lengths'])} tokens) x {b['new_tokens']} greedy tokens, total tok/s",
                     *_pair(b, "single", "batched"), "yes" if b["same_ids"] else "NO"))
    if "cache" not in args.skip:
        torch.manual_seed(0)
        gpt = GPT(GPTConfig(vocab_size=65, block_size=512, n_layer=args.gpt_layers, n_head=args.gpt_width // 64,
                            n_embd=args.gpt_width)).eval()
        n_params = gpt.num_params()
        prompt = [int(i) for i in torch.randint(0, 65, (16,))]
        c = bench_cache(gpt, prompt, args.no_cache_tokens, args.repeats)
        print(f"cache gpt: {c}")
        rows.append((f"GPT {n_params / 1e6:.1f}M ({args.gpt_layers} x {args.gpt_width}, random): "
                     f"{c['new_tokens']} new tokens after {c['prompt_tokens']}, tok/s",
                     *_pair(c, "uncached", "cached"), "yes" if c["same_ids"] else "NO"))
        prompt = tok.encode(TEXTS[2])
        c = bench_cache(model, prompt, args.smollm2_no_cache_tokens, max(1, args.repeats - 1))
        print(f"cache {args.model}: {c}")
        rows.append((f"{args.model}: {c['new_tokens']} new tokens after {c['prompt_tokens']}, tok/s",
                     *_pair(c, "uncached", "cached"), "yes" if c["same_ids"] else "NO"))
    print()
    print("| measurement | baseline (single stream / no cache): wall, CPU | dodai (batched / KV cache): wall, "
          "CPU | ratio: wall, CPU | same ids |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
