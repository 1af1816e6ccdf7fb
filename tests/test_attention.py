"""Attention: the explicit reference == torch SDPA (fp64), GQA, masks, and nn.MultiheadAttention parity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.nn.attention import CausalSelfAttention, attention_reference, attention_sdpa, repeat_kv
from dodai.nn.kv_cache import KVCache
from dodai.nn.masks import causal_mask


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 2), h_kv=st.sampled_from([1, 2]), group=st.sampled_from([1, 2, 3]),
       t=st.integers(1, 6), extra=st.integers(0, 4), d=st.sampled_from([4, 8]),
       causal=st.booleans(), use_mask=st.booleans(), seed=st.integers(0, 2**16))
def test_reference_equals_sdpa(b, h_kv, group, t, extra, d, causal, use_mask, seed):
    g = torch.Generator().manual_seed(seed)
    h, s = h_kv * group, t + extra
    q = torch.randn(b, h, t, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, h_kv, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, h_kv, s, d, generator=g, dtype=torch.float64)
    mask = None
    if use_mask:
        mask = torch.rand(b, 1, t, s, generator=g) > 0.3
        mask[..., -1] = True  # every query sees at least its own (last) key: no all-masked rows
    out_ref = attention_reference(q, k, v, mask=mask, causal=causal)
    out_fast = attention_sdpa(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out_fast, out_ref)


def test_reference_is_softmax_formula_and_gqa_is_repeat():
    torch.manual_seed(0)
    q = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    k = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    v = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    out, w = attention_reference(q, k, v, causal=True, return_weights=True)
    # hand computation for head 3 (uses K/V head 1), query 1 (sees keys 0, 1)
    s = torch.tensor([q[0, 3, 1] @ k[0, 1, j] for j in range(2)]) / 5 ** 0.5
    p = torch.softmax(s, 0)
    torch.testing.assert_close(w[0, 3, 1, :2], p.to(w.dtype))
    assert w[0, 3, 1, 2] == 0
    torch.testing.assert_close(out[0, 3, 1], p[0] * v[0, 1, 0] + p[1] * v[0, 1, 1])
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, 3, dtype=torch.float64))
    rk = repeat_kv(k, 2)
    assert torch.equal(rk[:, 0], k[:, 0]) and torch.equal(rk[:, 1], k[:, 0]) and torch.equal(rk[:, 3], k[:, 1])


def test_fully_masked_rows_give_zeros_not_nan():
    q = torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[False, False], [True, False]])
    out = attention_reference(q, q, q, mask=mask)
    assert torch.isfinite(out).all() and torch.equal(out[0, 0, 0], torch.zeros(4))


def test_causal_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    c, h, t = 16, 4, 7
    ref = torch.nn.MultiheadAttention(c, h, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    for impl in ("reference", "sdpa"):
        ours = CausalSelfAttention(c, h, attn_impl=impl).double()
        with torch.no_grad():
            ours.c_attn.weight.copy_(ref.in_proj_weight)  # both stack [W_q; W_k; W_v] as (3C, C)
            ours.c_attn.bias.copy_(ref.in_proj_bias)
            ours.c_proj.weight.copy_(ref.out_proj.weight)
            ours.c_proj.bias.copy_(ref.out_proj.bias)
        x = torch.randn(2, t, c, dtype=torch.float64)
        # torch's boolean attn_mask is True where attention is NOT allowed: the opposite of ours
        expected, _ = ref(x, x, x, attn_mask=~causal_mask(t), need_weights=False)
        torch.testing.assert_close(ours(x), expected)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_module_impls_agree_and_cache_matches(n_kv_head):
    torch.manual_seed(0)
    ref = CausalSelfAttention(32, 4, n_kv_head, attn_impl="reference").double()
    fast = CausalSelfAttention(32, 4, n_kv_head, attn_impl="sdpa").double()
    fast.load_state_dict(ref.state_dict())
    assert ref.c_attn.weight.shape == (32 + 2 * 8 * n_kv_head, 32)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full = fast(x)
    torch.testing.assert_close(ref(x), full)
    # the same sequence fed in chunks through a KV cache (multi-token chunks need the bottom-right mask)
    for m in (ref, fast):
        cache = KVCache(1, 2, n_kv_head, 9, 8, dtype=torch.float64)
        outs = []
        for a, b in ((0, 4), (4, 5), (5, 9)):
            outs.append(m(x[:, a:b], cache=cache))
            cache.advance(b - a)
        torch.testing.assert_close(torch.cat(outs, 1), full)


def test_gqa_equals_mha_with_repeated_kv_weights():
    torch.manual_seed(0)
    gqa = CausalSelfAttention(24, 6, 2).double()
    mha = CausalSelfAttention(24, 6, 6).double()
    d = 4
    wq, wk, wv = gqa.c_attn.weight.split([24, 2 * d, 2 * d])
    bq, bk, bv = gqa.c_attn.bias.split([24, 2 * d, 2 * d])

    def rep(w):  # (2*D, ...) -> (6*D, ...): K/V head j serves query heads 3j, 3j+1, 3j+2
        return w.view(2, 1, d, *w.shape[1:]).expand(2, 3, d, *w.shape[1:]).reshape(6 * d, *w.shape[1:])

    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.c_attn.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        mha.c_proj.load_state_dict(gqa.c_proj.state_dict())
    x = torch.randn(1, 5, 24, dtype=torch.float64)
    torch.testing.assert_close(gqa(x), mha(x))


def test_bad_head_counts_raise():
    with pytest.raises(ValueError):
        CausalSelfAttention(30, 4)
    with pytest.raises(ValueError):
        CausalSelfAttention(32, 4, 3)
    with pytest.raises(ValueError):
        CausalSelfAttention(32, 4, attn_impl="flash")
