"""Decode speed of every dodai weight format vs HF transformers fp32, on SmolLM2-135M's *shape* with
random weights (no GGUF needed, so it runs anywhere PyTorch and transformers are installed).

Speed does not depend on the weight values: the same matmuls, the same cache, the same number of steps.
One HF ``LlamaForCausalLM`` with SmolLM2-135M's config is initialised at random; dodai's Llama gets the
very same tensors (``Llama.from_hf_state_dict``) and is then converted to each format
(:func:`dodai.quant.int8.quantize_model`). Per engine: a ``--prompt-tokens`` random prompt, then greedy
decoding; decode tok/s = (N - 1) / (time(N new tokens) - time(1 new token)), i.e. the prefill and the
first token are subtracted. Engines are run round-robin, ``--repeats`` rounds, medians reported, so slow
phases of a shared machine hit all engines alike. Both sides get ``--threads`` torch threads.

    python benchmarks/decode_formats.py [--threads 2] [--repeats 5] [--formats fp32,bf16,int8,int4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
               pad_token_id=None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--formats", default="fp32,bf16,int8,int4")
    ap.add_argument("--no-hf", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import copy

    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    from dodai.generate.sampling import generate
    from dodai.models.llama import Llama, LlamaConfig
    from dodai.quant.int8 import quantize_model

    torch.manual_seed(0)
    hf_cfg = HFConfig(**SMOLLM2)
    hf = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # a trained model's scale, so that no format sees degenerate (all-equal) groups
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    base = Llama.from_hf_state_dict(LlamaConfig.from_hf_config(hf_cfg.to_dict()), sd).eval()
    engines = {}
    for fmt in args.formats.split(","):
        engines[f"dodai {fmt}"] = quantize_model(copy.deepcopy(base), fmt)
    del base
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, SMOLLM2["vocab_size"], (args.prompt_tokens,), generator=g).tolist()

    def dodai_time(model, n):
        t = time.perf_counter()
        out = list(generate(model, prompt, n, temperature=0.0))
        dt = time.perf_counter() - t
        assert len(out) == n
        return dt

    def hf_time(n):
        x = torch.tensor([prompt])
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False)
        dt = time.perf_counter() - t
        assert out.shape[1] == len(prompt) + n
        return dt

    runners = {name: (lambda n, m=m: dodai_time(m, n)) for name, m in engines.items()}
    if not args.no_hf:
        runners["HF transformers fp32"] = hf_time
    for r in runners.values():  # warm-up
        r(2)
    rates = {name: [] for name in runners}
    n = args.new_tokens
    for rep in range(args.repeats):
        for name, r in runners.items():
            t1, tn = r(1), r(n)
            rates[name].append((n - 1) / (tn - t1))
        print(f"round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), file=sys.stderr,
              flush=True)
    hf_med = statistics.median(rates["HF transformers fp32"]) if "HF transformers fp32" in rates else None
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads; SmolLM2-135M shape, random weights; {args.prompt_tokens}-token prompt, "
          f"{n} greedy tokens; medians of {args.repeats} round-robin rounds\n")
    print("| engine | decode tok/s (median) | all rounds | vs HF fp32 |")
    print("|---|---|---|---|")
    for name, v in rates.items():
        med = statistics.median(v)
        ratio = f"{med / hf_med:.2f}x" if hf_med else "-"
        print(f"| {name} | {med:.1f} | {', '.join(f'{x:.1f}' for x in v)} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
