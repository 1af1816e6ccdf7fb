"""Generation benchmark behind ``dodai bench generate`` (R5.5: the KV cache and what it buys).

Measures, for one causal LM, batch 1, greedy decoding on the current device (CPU here):

- KV cache memory accounting: bytes per token per layer (2 x H_kv x D x bytes per element, K and V),
  per token over all layers, and the cache's total bytes for the run (prompt + new tokens);
- prefill: one forward of the prompt into an empty cache (median over repeats);
- decode tokens/s with the cache, counted over the steps after the first token (the first one
  includes the prefill);
- decode tokens/s without the cache (every step re-runs the whole sequence, O(n^2) work) at
  ``no_cache_tokens`` new tokens, next to the cached speed at the same length, and their ratio;
- peak RSS of the process (``ru_maxrss``).

Optionally the same prefill/decode numbers for HF transformers in fp32, run in a subprocess
(``python -m dodai.bench --hf-worker SPEC``) so that its memory is its own. transformers is imported
only inside that subprocess; dodai never imports it otherwise.

The prompt is a fixed, seeded sequence of token ids (not text), so dodai and HF see the same ids.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dodai.errors import DodaiError


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_ids(vocab_size: int, n: int, seed: int = 0) -> list[int]:
    """``n`` deterministic pseudo-random token ids in [0, vocab_size) (plain LCG, no torch needed)."""
    out, x = [], seed * 2654435761 + 12345
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append((x >> 33) % vocab_size)
    return out


def _timed_decode(stream, n: int) -> tuple[float, float]:
    """Consume ``n`` tokens of a generator; (seconds to the first token, tok/s over the remaining n-1)."""
    t0 = time.perf_counter()
    stamps = [time.perf_counter() for _ in stream]
    if len(stamps) != n:
        raise DodaiError(f"generation stopped after {len(stamps)} of {n} tokens")
    rest = stamps[-1] - stamps[0]
    return stamps[0] - t0, (n - 1) / rest if rest > 0 else float("inf")


def check_window(block_size: int, prompt_tokens: int, new_tokens: int, what: str = "new tokens") -> None:
    if prompt_tokens + new_tokens > block_size:
        raise DodaiError(f"prompt ({prompt_tokens} tokens) + {what} ({new_tokens}) = {prompt_tokens + new_tokens} "
                         f"exceeds the model's context window ({block_size} tokens)")


def bench_generate(model_spec: str, prompt_tokens: int = 200, new_tokens: int = 128, no_cache_tokens: int = 256,
                   threads: int = 2, repeats: int = 3, dtype: str = "float32", fmt: str = "fp32") -> dict:
    """Run the dodai side of the benchmark in this process; a JSON-able dict of the figures."""
    import torch

    from dodai.generate.sampling import generate, generate_uncached
    from dodai.models import load_model

    if prompt_tokens < 1 or new_tokens < 2 or no_cache_tokens < 2 or repeats < 1 or threads < 1:
        raise DodaiError("need --prompt-tokens >= 1, --new-tokens >= 2, --no-cache-tokens >= 2, "
                         "--repeats >= 1, --threads >= 1")
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise DodaiError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    torch.set_num_threads(threads)
    t = time.perf_counter()
    model, _tok = load_model(model_spec, dtype=dt)
    params = sum(p.numel() for p in model.parameters())  # before quantization turns weights into buffers
    if fmt != "fp32":
        from dodai.quant.int8 import quantize_model

        if dt != torch.float32:
            raise DodaiError("--format other than fp32 needs --dtype float32 (bf16 is itself a format)")
        quantize_model(model, fmt)
    load_s = time.perf_counter() - t
    cfg = model.config
    check_window(cfg.block_size, prompt_tokens, new_tokens)
    check_window(cfg.block_size, prompt_tokens, no_cache_tokens, "--no-cache-tokens")
    ids = prompt_ids(cfg.vocab_size, prompt_tokens)
    x = torch.tensor([ids])

    cache = model.new_cache(1, prompt_tokens + new_tokens)
    # logits of the last position only where the model offers it (what a generate loop needs)
    kw = {"last_only": True} if "last_only" in inspect.signature(model.forward).parameters else {}
    prefill = []
    with torch.inference_mode():
        model(x[:, :1], cache=model.new_cache(1, 1))  # warm-up
        for _ in range(repeats):
            cache.reset()
            t = time.perf_counter()
            model(x, cache=cache, **kw)
            prefill.append(time.perf_counter() - t)

    decode, first = [], []
    for _ in range(repeats):
        f, r = _timed_decode(generate(model, ids, new_tokens, temperature=0.0), new_tokens)
        first.append(f)
        decode.append(r)
    # cache vs no cache at the same length (a single run each: the uncached one is O(n^2))
    _, cached_n = _timed_decode(generate(model, ids, no_cache_tokens, temperature=0.0), no_cache_tokens)
    _, uncached_n = _timed_decode(generate_uncached(model, ids, no_cache_tokens, temperature=0.0),
                                  no_cache_tokens)
    return {
        "engine": f"dodai {dtype}",
        "model": str(model_spec),
        "params": params, "vocab_size": cfg.vocab_size,
        "weight_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "weight_format": fmt if fmt != "fp32" else str(next(model.parameters()).dtype).replace("torch.", ""),
        "n_layer": cache.n_layer, "n_kv_head": cache.n_kv_head, "head_dim": cache.head_dim,
        "kv_cache_dtype": str(cache.dtype).replace("torch.", ""),
        "kv_bytes_per_token_per_layer": cache.bytes_per_token_per_layer(),
        "kv_bytes_per_token": cache.bytes_per_token(),
        "kv_bytes_total": cache.nbytes(),
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "threads": threads, "repeats": repeats,
        "load_s": load_s,
        "prefill_s": statistics.median(prefill),
        "first_token_s": statistics.median(first),
        "decode_tok_s": statistics.median(decode),
        "no_cache_tokens": no_cache_tokens,
        "cached_tok_s_at_no_cache_tokens": cached_n,
        "uncached_tok_s": uncached_n,
        "cache_speedup": cached_n / uncached_n,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------- HF (subprocess)
# dodai never imports transformers: the HF side runs in a child process from a benchmark script of the checkout.
HF_WORKER = Path(__file__).resolve().parent.parent / "benchmarks" / "hf_generate_worker.py"


def bench_hf(model_spec: str, ids: list[int], new_tokens: int, threads: int, repeats: int) -> dict:
    """Run :func:`_hf_worker` in a fresh Python process; its dict, or one with a ``skipped`` reason."""
    spec = {"model": str(model_spec), "ids": ids, "new_tokens": new_tokens, "threads": threads,
            "repeats": repeats}
    worker = HF_WORKER
    if not worker.is_file():
        return {"engine": "HF transformers fp32", "skipped": f"the HF comparison is a benchmark script ({worker.name}) "
                "that only a source checkout has"}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, str(worker), json.dumps(spec)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"engine": "HF transformers fp32", "skipped": f"worker failed: {last}"}
    return json.loads(r.stdout.strip().splitlines()[-1])
