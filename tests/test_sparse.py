"""Sparse attention (R6.5): blocked sliding-window and Longformer attention vs dense attention with the
same mask, the rolling KV cache vs uncached, and HF MistralForCausalLM parity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.nn.attention import attention_reference
from dodai.nn.sparse import longformer_attention, longformer_mask, sliding_window_attention, sliding_window_mask


def _qkv(t, h=4, hkv=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, h, t, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, hkv, t, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, hkv, t, d, generator=g, dtype=torch.float64)
    return q, k, v


def test_sliding_window_mask_counts():
    m = sliding_window_mask(10, 10, 3)
    assert m.sum(-1).tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    assert not m.triu(1).any()  # causal
    assert sliding_window_mask(6, 6, 100).equal(torch.ones(6, 6, dtype=torch.bool).tril())


@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 40), window=st.integers(1, 12))
def test_blocked_sliding_window_equals_dense(t, window):
    q, k, v = _qkv(t)
    ref = attention_reference(q, k, v, mask=sliding_window_mask(t, t, window))
    torch.testing.assert_close(sliding_window_attention(q, k, v, window), ref)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 40), w=st.integers(0, 6), data=st.data())
def test_longformer_equals_dense(t, w, data):
    glob = data.draw(st.lists(st.integers(0, t - 1), max_size=4))
    q, k, v = _qkv(t, seed=1)
    ref = attention_reference(q, k, v, mask=longformer_mask(t, w, glob))
    torch.testing.assert_close(longformer_attention(q, k, v, w, glob), ref)


def test_longformer_mask_global_rows_and_cols():
    m = longformer_mask(8, 1, [0, 5])
    assert m[0].all() and m[:, 0].all() and m[5].all() and m[:, 5].all()
    assert not m[2, 7] and m[2, 3] and not m[2, 4]


def test_hostile_inputs():
    q, k, v = _qkv(5)
    with pytest.raises(DodaiError):
        sliding_window_attention(q, k, v, 0)
    with pytest.raises(DodaiError):
        longformer_attention(q, k, v, 1, [7])
    with pytest.raises(DodaiError):
        longformer_mask(4, -1, [])


def _tiny_mistral(window=4):
    from dodai.models.mistral import Mistral, MistralConfig
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=61, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                        ffn_hidden=48, sliding_window=window, tie_embeddings=False)
    return Mistral(cfg).eval()


def test_rolling_cache_chunked_prefill_and_decode_equal_uncached():
    model = _tiny_mistral(window=4)
    ids = torch.randint(0, 61, (2, 23), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(ids)
        eager, _ = model.set_eager(True)(ids)
        model.set_eager(False)
        cache = model.new_cache(2, 64)
        parts = []
        for a, b in [(0, 7), (7, 8), (8, 9), (9, 15), (15, 23)]:  # chunks longer and shorter than W
            out, _ = model(ids[:, a:b], cache=cache)
            parts.append(out)
    torch.testing.assert_close(full, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 23 and cache.k[0].shape[2] == 4  # memory stays W slots


def test_cached_generation_equals_uncached():
    from dodai.generate.sampling import generate, generate_uncached
    model = _tiny_mistral(window=3)
    prompt = [1, 5, 9, 2, 7]
    a = list(generate(model, prompt, 20, temperature=0))
    b = list(generate_uncached(model, prompt, 20, temperature=0))
    assert a == b and len(a) == 20


def test_hf_mistral_parity():
    transformers = pytest.importorskip("transformers")
    from dodai.models.mistral import Mistral, MistralConfig
    hf_cfg = transformers.MistralConfig(vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        sliding_window=4, tie_word_embeddings=False, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM._from_config(hf_cfg, attn_implementation="eager").eval()
    cfg = MistralConfig.from_hf_config(hf_cfg.to_dict())
    assert cfg.sliding_window == 4
    ours = Mistral.from_hf_state_dict(cfg, hf.state_dict())
    ids = torch.randint(0, 67, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        mine, _ = ours(ids)
        mine_eager, _ = ours.set_eager(True)(ids)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine_eager, ref, atol=1e-5, rtol=1e-5)
    # the window matters: a dense-causal model with the same weights differs from HF
    from dodai.models.llama import Llama, LlamaConfig
    dense = Llama.from_hf_state_dict(LlamaConfig.from_hf_config(hf_cfg.to_dict()), hf.state_dict())
    with torch.no_grad():
        assert (dense(ids)[0] - ref).abs().max() > 1e-3


def test_r6_5_quick_scaling(tmp_path):
    """Quick mode: 4× longer sequence -> dense scores grow ~16×, the sparse patterns ~4× (memory, exact)."""
    from dodai.experiments.r6_5 import run
    r = run(tmp_path, quick=True)
    assert r["length_growth"] == 4
    assert r["dense_ref_memory_growth"] >= 12
    assert r["sliding_memory_growth"] <= 5 and r["longformer_memory_growth"] <= 5
    assert r["sliding_memory_growth"] * 3 < r["dense_ref_memory_growth"]
    assert (tmp_path / "scaling.png").stat().st_size > 0 and (tmp_path / "report.md").exists()


def test_sparse_gradients_equal_dense():
    """Training through the blocked kernels: gradients match the dense masked oracle (padded tail included)."""
    t, window, w, glob = 13, 5, 3, [2, 11]
    for fast, mask in [(lambda q, k, v: sliding_window_attention(q, k, v, window), sliding_window_mask(t, t, window)),
                       (lambda q, k, v: longformer_attention(q, k, v, w, glob), longformer_mask(t, w, glob))]:
        q, k, v = (x.requires_grad_() for x in _qkv(t, seed=4))
        fast(q, k, v).square().sum().backward()
        g_fast = [x.grad.clone() for x in (q, k, v)]
        q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
        attention_reference(q2, k2, v2, mask=mask).square().sum().backward()
        for a, b in zip(g_fast, (q2.grad, k2.grad, v2.grad)):
            torch.testing.assert_close(a, b)


def test_mistral_with_a_plain_cache_equals_its_rolling_cache():
    """Any cache serves a windowed model: the window comes from positions, not from the cache type."""
    from dodai.nn.kv_cache import KVCache
    model = _tiny_mistral(window=4)
    c = model.config
    ids = torch.randint(0, 61, (1, 13), generator=torch.Generator().manual_seed(5))
    outs = []
    with torch.no_grad():
        full, _ = model(ids)
        for cache in (KVCache(c.n_layer, 1, c.n_kv_head, 16, c.head_dim, torch.float32, None), model.new_cache(1, 16)):
            parts = [model(ids[:, :6], cache=cache)[0]] + [model(ids[:, t:t + 1], cache=cache)[0] for t in range(6, 13)]
            outs.append(torch.cat(parts, 1))
    torch.testing.assert_close(outs[0], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1], full, atol=1e-5, rtol=1e-5)
