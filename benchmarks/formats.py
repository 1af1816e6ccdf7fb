"""Weight formats, int8 KV cache and speculative decoding on SmolLM2-135M, side by side with HF fp32.

One process, the same prompt for everybody (the first ``--prompt-tokens`` tokens of dodai's held-out
python-docs text, so that the speculative acceptance rate is measured on real prose):

- per weight format (fp32, bf16, int8): weight memory, perplexity on ``--ppl-tokens`` held-out tokens
  and its change vs fp32, prefill of the prompt (s), greedy decode tok/s over ``--new-tokens``;
- fp32 weights with the int8 KV cache (dodai.nn.quant_cache): decode tok/s and cache bytes/token;
- HF transformers fp32 (subprocess via dodai.bench.bench_hf, same prompt ids, same threads);
- speculative greedy decoding (dodai.generate.speculative) with several drafts and gamma values:
  acceptance rate, tokens per target forward, tok/s, speed-up vs plain fp32 greedy measured in the
  same run, and a check that the output equals plain greedy.

    .venv/bin/python benchmarks/formats.py --threads 2 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from dodai.bench import bench_hf, peak_rss_mb
from dodai.generate.sampling import generate
from dodai.generate.speculative import SpeculativeStats, speculative_generate, truncated_draft
from dodai.models import load_model
from dodai.nn.quant_cache import new_quant_cache
from dodai.quant.int8 import quantize_model, weight_bytes
from dodai.quant.perplexity import heldout_ids, perplexity


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed_stream(stream, n):
    """(seconds to first token, tok/s over the remaining n-1, tokens)."""
    t0 = time.perf_counter()
    toks, stamps = [], []
    for tok in stream:
        toks.append(tok)
        stamps.append(time.perf_counter())
    rest = stamps[-1] - stamps[0]
    return stamps[0] - t0, (len(toks) - 1) / rest if rest > 0 else float("inf"), toks


def greedy_with_cache(model, prompt, n, cache):
    """Plain greedy decoding into a given cache (used for the int8 KV cache row)."""
    x = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(n):
            logits, _ = model(x, cache=cache, last_only=True)
            tok = int(logits[0, -1].argmax())
            yield tok
            x = torch.tensor([[tok]])


def prefill_s(model, prompt, repeats):
    times = []
    x = torch.tensor([prompt])
    with torch.inference_mode():
        model(x[:, :1], cache=model.new_cache(1, 1))  # warm-up
        for _ in range(repeats):
            cache = model.new_cache(1, len(prompt))
            t = time.perf_counter()
            model(x, cache=cache, last_only=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(args):
    """Median time of one decode step (1 token after a cached prompt) per format, formats alternating."""
    base, tok = load_model(args.model)
    prompt = heldout_ids(tok, args.prompt_tokens)
    fmts = args.formats.split(",")
    models = {f: base if f == "fp32" else quantize_model(copy.deepcopy(base), f) for f in fmts}
    caches, times = {}, {f: [] for f in fmts}
    x = torch.tensor([prompt])
    with torch.inference_mode():
        for f, m in models.items():
            caches[f] = m.new_cache(1, len(prompt) + 1)
            m(x, cache=caches[f], last_only=True)
        step = torch.tensor([[prompt[-1]]])
        for _ in range(args.interleaved):
            for f, m in models.items():
                caches[f].pos = len(prompt)  # the same step again: position 200 after the cached prompt
                t = time.perf_counter()
                m(step, cache=caches[f], last_only=True)
                times[f].append(time.perf_counter() - t)
    print(f"one decode step after {len(prompt)} cached tokens, {args.threads} threads, "
          f"{args.interleaved} steps per format, formats alternating; peak RSS {peak_rss_mb():.0f} MiB\n")
    print("| format | median step ms | tok/s | vs fp32 |")
    print("|---|---|---|---|")
    ref = statistics.median(times[fmts[0]])
    for f in fmts:
        med = statistics.median(times[f])
        print(f"| {f} | {1e3 * med:.1f} | {1 / med:.1f} | {ref / med:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--ppl-tokens", type=int, default=512)
    ap.add_argument("--formats", default="fp32,bf16,int8")
    ap.add_argument("--spec", default="L6:g3,L10:g3,L10:g5,int8:g4",
                    help="speculative configs: Lk (first k layers) or int8 (int8 copy) draft, :gN = gamma")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--interleaved", type=int, default=0,
                    help="only time N single-token decode steps per format, alternating formats step by step "
                         "(robust to a machine whose load drifts), and exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.interleaved:
        return interleaved(args)
    log(f"loading {args.model} ...")
    base, tok = load_model(args.model)
    prompt = heldout_ids(tok, args.prompt_tokens)
    ppl_ids = heldout_ids(tok, args.ppl_tokens)
    n = args.new_tokens
    rows = {}
    greedy_ref = None
    for fmt in args.formats.split(","):
        log(f"format {fmt} ...")
        m = base if fmt == "fp32" else quantize_model(copy.deepcopy(base), fmt)
        r = {"weight_mib": weight_bytes(m) / 2**20, "ppl": perplexity(m, ppl_ids)["ppl"],
             "prefill_s": prefill_s(m, prompt, args.repeats)}
        dec = []
        for _ in range(args.repeats):
            _, rate, toks = timed_stream(generate(m, prompt, n, temperature=0.0), n)
            dec.append(rate)
        r["decode_tok_s"] = statistics.median(dec)
        if fmt == "fp32":
            greedy_ref = toks
        else:
            r["greedy_agreement"] = next((i for i, (a, b) in enumerate(zip(toks, greedy_ref)) if a != b), n)
        rows[fmt] = r
        log(f"  {r}")
        if m is not base:
            del m
    # fp32 weights + int8 KV cache
    log("fp32 + int8 KV cache ...")
    dec = []
    for _ in range(args.repeats):
        qc = new_quant_cache(base, 1, len(prompt) + n)
        _, rate, toks = timed_stream(greedy_with_cache(base, prompt, n, qc), n)
        dec.append(rate)
    kv = {"decode_tok_s": statistics.median(dec), "bytes_per_token": qc.bytes_per_token(),
          "fp32_bytes_per_token": base.new_cache(1, 1).bytes_per_token(),
          "greedy_agreement": next((i for i, (a, b) in enumerate(zip(toks, greedy_ref)) if a != b), n)}
    log(f"  {kv}")
    # speculative decoding, target fp32
    spec = []
    int8_model = None
    for cfg in args.spec.split(","):
        name, g = cfg.split(":g")
        if name == "int8":
            int8_model = int8_model or quantize_model(copy.deepcopy(base), "int8")
            draft = int8_model
        else:
            draft = truncated_draft(base, int(name[1:]))
        log(f"speculative {cfg} ...")
        rates, st = [], None
        for _ in range(args.repeats):
            st = SpeculativeStats()
            _, rate, toks = timed_stream(speculative_generate(base, draft, prompt, n, gamma=int(g), stats=st), n)
            rates.append(rate)
        spec.append({"draft": name, "gamma": int(g), "acceptance": st.acceptance_rate,
                     "tokens_per_round": st.tokens_per_round, "decode_tok_s": statistics.median(rates),
                     "identical": toks == greedy_ref})
        log(f"  {spec[-1]}")
    hf = None
    if not args.no_hf:
        log("HF transformers fp32 (subprocess) ...")
        hf = bench_hf(args.model, prompt, n, args.threads, args.repeats)
        log(f"  {hf}")

    # ---- the tables
    fp = rows.get("fp32")
    print(f"\nprompt {len(prompt)} tokens (held-out python-docs text), {n} greedy new tokens, {args.threads} "
          f"threads, median of {args.repeats}; perplexity on {len(ppl_ids)} held-out tokens; "
          f"peak RSS {peak_rss_mb():.0f} MiB\n")
    print("| engine / format | weights MiB | perplexity | vs fp32 | prefill s | decode tok/s | decode vs HF |"
          " greedy = fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    hf_rate = hf.get("decode_tok_s") if hf and "skipped" not in hf else None
    for fmt, r in rows.items():
        vs = f"{100 * (r['ppl'] / fp['ppl'] - 1):+.2f} %" if fp else "-"
        ratio = f"{r['decode_tok_s'] / hf_rate:.2f}x" if hf_rate else "-"
        agree = "(reference)" if fmt == "fp32" else f"{r['greedy_agreement']}/{n}"
        print(f"| dodai {fmt} | {r['weight_mib']:.0f} | {r['ppl']:.3f} | {vs} | {r['prefill_s']:.3f} | "
              f"{r['decode_tok_s']:.1f} | {ratio} | {agree} |")
    ratio = f"{kv['decode_tok_s'] / hf_rate:.2f}x" if hf_rate else "-"
    print(f"| dodai fp32 + int8 KV cache ({kv['bytes_per_token']} vs {kv['fp32_bytes_per_token']} B/token) | "
          f"- | - | - | - | {kv['decode_tok_s']:.1f} | {ratio} | {kv['greedy_agreement']}/{n} |")
    if hf is not None:
        if "skipped" in hf:
            print(f"| HF transformers fp32 | skipped: {hf['skipped']} |")
        else:
            pre = f"{hf['prefill_s']:.3f}"
            print(f"| HF transformers fp32 | - | - | - | {pre} | {hf['decode_tok_s']:.1f} | 1.00x | - |")
    base_rate = fp["decode_tok_s"] if fp else None
    print("\n| speculative (target fp32) | gamma | acceptance | tokens / target forward | decode tok/s |"
          " speed-up vs fp32 greedy | output = greedy |")
    print("|---|---|---|---|---|---|---|")
    for s in spec:
        draft = f"first {s['draft'][1:]} of 30 layers" if s["draft"].startswith("L") else "int8 copy"
        sp = f"{s['decode_tok_s'] / base_rate:.2f}x" if base_rate else "-"
        print(f"| draft: {draft} | {s['gamma']} | {s['acceptance']:.2f} | {s['tokens_per_round']:.2f} | "
              f"{s['decode_tok_s']:.1f} | {sp} | {'yes' if s['identical'] else 'NO'} |")


if __name__ == "__main__":
    main()
