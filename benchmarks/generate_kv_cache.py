"""Decode speed: dodai GPT with the KV cache vs without it, and HF GPT-2 ``generate`` on the same weights.

A random GPT-2-shaped model (default 6 layers, 6 heads, 384 dims, vocab 8192, context 1024) is built in
dodai, exported to HF GPT-2 format and loaded by transformers, so all three decode the same network.
Greedy decoding of --new tokens after a --prompt-token prompt, batch 1, fp32, CPU; alternating rounds.
The greedy token ids of the three runs are checked equal.

    .venv/bin/python benchmarks/generate_kv_cache.py [--new 128] [--prompt 64] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dodai.generate.sampling import generate, generate_uncached  # noqa: E402
from dodai.models.gpt import GPT, GPTConfig  # noqa: E402
from dodai.weights.hf_gpt2 import export_hf_gpt2  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=128, help="new tokens per run")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=384)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=8192, block_size=1024, n_layer=args.n_layer, n_head=6, n_embd=args.n_embd,
                    activation="gelu_tanh")
    model = GPT(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0, 1.0)  # peaked logits: greedy ties are impossible
    with tempfile.TemporaryDirectory() as d:
        export_hf_gpt2(model, d)
        hf = GPT2LMHeadModel.from_pretrained(d).eval()
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=args.new, do_sample=False,
                              min_new_tokens=args.new, pad_token_id=0, eos_token_id=None)
        return out[0, len(prompt):].tolist()

    runners = {
        "dodai cached": lambda: list(generate(model, prompt, args.new, temperature=0)),
        "dodai uncached": lambda: list(generate_uncached(model, prompt, args.new, temperature=0)),
        "HF generate (cache)": run_hf,
    }
    outs = {k: f() for k, f in runners.items()}  # warm-up, and the equality check
    same = len({tuple(v) for v in outs.values()}) == 1
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, nproc {os.cpu_count()}, "
          f"model {model.num_params(non_embedding=False):,} params, prompt {args.prompt}, new {args.new}, "
          f"{args.rounds} rounds; identical greedy ids: {same}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in runners:
        print(f"{name:22s} median {med[name]:.3f} s  {args.new / med[name]:8.1f} tok/s")
    print(f"KV-cache speed-up (uncached / cached time): {med['dodai uncached'] / med['dodai cached']:.2f}x")
    print(f"dodai cached vs HF generate (tok/s ratio): {med['HF generate (cache)'] / med['dodai cached']:.2f}x")


if __name__ == "__main__":
    main()
