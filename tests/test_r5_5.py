"""R5.5 KV cache experiment (quick): cached decoding gives the recomputed tokens, and the cache's bytes."""

from __future__ import annotations

import json

import torch

from dodai.experiments.r5_5 import decode_cached, decode_uncached, run


def test_r5_5_quick(tmp_path):
    res = run(tmp_path, quick=True)
    assert res["same_tokens"] and res["max_abs_logit_diff"] < 1e-4
    kv = res["kv"]
    assert kv["bytes_per_token"] == 2 * kv["n_layer"] * kv["n_kv_head"] * kv["head_dim"] * kv["bytes_per_value"]
    assert kv["allocated_per_token"] == kv["bytes_per_token"]
    assert all(r["speedup"] > 0 for r in res["rows"])
    assert json.loads((tmp_path / "results.json").read_text())["same_tokens"] is True
    assert (tmp_path / "kv_cache.png").stat().st_size > 1000


def test_cached_and_uncached_decoders_can_disagree_when_the_cache_is_wrong():
    """The comparison is not vacuous: a cache that forgets a position changes the logits."""
    from dodai.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=32, block_size=64, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = torch.tensor([[1, 2, 3, 4]])
    a, la = decode_cached(m, prompt, 6)
    b, lb = decode_uncached(m, prompt, 6)
    assert a == b and max(float((x - y).abs().max()) for x, y in zip(la, lb)) < 1e-5
    cache = m.new_cache(1, 16)
    with torch.no_grad():
        m(prompt, cache=cache)
        for layer in range(2):
            cache.v[layer][:, :, :4] += 10.0  # corrupt the stored values of the prompt
        logits, _ = m(torch.tensor([[a[0]]]), cache=cache)
        ref, _ = m(torch.cat([prompt, torch.tensor([[a[0]]])], 1))
    assert float((logits[0, -1] - ref[0, -1]).abs().max()) > 1e-4
