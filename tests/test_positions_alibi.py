"""ALiBi (Press et al. 2021), additive attention bias, and the norm / block-order options of GPTConfig."""

import json

import pytest
import torch

from dodai.models.gpt import GPT, GPTConfig
from dodai.nn.attention import attention_reference, attention_sdpa
from dodai.nn.position import alibi_bias, alibi_slopes


def test_slopes_match_paper_for_8_heads():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -k for k in range(1, 9)]))


def test_slopes_non_power_of_two_rule():
    # H = 12: the 8 slopes of H = 8, then every other slope of H = 16 (2^-0.5, 2^-1.5, ...), first 4.
    want = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -(k + 0.5) for k in (0, 1, 2, 3)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(want))


@pytest.mark.parametrize("h", [1, 2, 3, 4, 6, 8, 12, 16])
def test_slopes_match_bloom(h):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    t = 5
    hf = build_alibi_tensor(torch.ones(1, t), h, torch.float32)  # (H, 1, T): slope_h * j
    torch.testing.assert_close(hf[:, 0, 1], alibi_slopes(h))
    # softmax is shift-invariant per row: HF's slope * j and our -slope * (i - j) agree up to a row constant
    ours = alibi_bias(alibi_slopes(h), t, t)  # (H, T, T)
    for i in range(t):
        torch.testing.assert_close(ours[:, i, : i + 1] - ours[:, i, :1], hf[:, 0, : i + 1])


def test_bias_values_and_cache_rows():
    b = alibi_bias(torch.tensor([0.5]), 4, 4)[0]
    assert b[3, 0].item() == -1.5 and b[3, 3].item() == 0.0 and b[2, 1].item() == -0.5
    # the last 2 query rows of a length-6 sequence = rows 4, 5 of the full matrix
    torch.testing.assert_close(alibi_bias(alibi_slopes(4), 2, 6), alibi_bias(alibi_slopes(4), 6, 6)[:, 4:])


@pytest.mark.parametrize("t,s,h_kv", [(7, 7, 4), (3, 9, 4), (1, 5, 2), (6, 6, 1)])
def test_reference_equals_sdpa_with_bias(t, s, h_kv):
    g = torch.Generator().manual_seed(t * 10 + s)
    q = torch.randn(2, 4, t, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, h_kv, s, 8, generator=g, dtype=torch.float64) for _ in range(2))
    bias = alibi_bias(alibi_slopes(4), t, s, dtype=torch.float64)
    ref = attention_reference(q, k, v, causal=True, bias=bias)
    torch.testing.assert_close(attention_sdpa(q, k, v, causal=True, bias=bias), ref)
    # the bias changes the result (it is not silently dropped)
    assert (ref - attention_reference(q, k, v, causal=True)).abs().max() > 1e-3


def tiny(**kw):
    base = dict(vocab_size=31, block_size=16, n_layer=2, n_head=4, n_embd=32, pos_encoding="alibi")
    base.update(kw)
    return GPTConfig(**base)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_alibi_cached_equals_uncached(impl):
    torch.manual_seed(0)
    model = GPT(tiny(attn_impl=impl)).eval()
    idx = torch.randint(0, 31, (2, 12))
    full, _ = model(idx)
    cache = model.new_cache(2, 12)
    parts = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, i:i + 1], cache=cache)[0] for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_alibi_has_no_position_parameters_and_sees_order():
    torch.manual_seed(0)
    m = GPT(tiny())
    assert not any("wpe" in n for n, _ in m.named_parameters())
    idx = torch.randint(0, 31, (1, 8))
    a = m(idx)[0][0, -1]
    b = m(idx[:, [1, 0, 2, 3, 4, 5, 6, 7]])[0][0, -1]  # same multiset of tokens, order changed
    assert (a - b).abs().max() > 1e-6


def test_alibi_ref_equals_sdpa_model():
    torch.manual_seed(0)
    a = GPT(tiny())
    b = GPT(tiny(attn_impl="reference"))
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 31, (2, 16))
    torch.testing.assert_close(a(idx)[0], b(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("order", ["pre", "post"])
def test_norm_and_block_order(norm, order, tmp_path):
    torch.manual_seed(0)
    cfg = tiny(norm=norm, block_order=order, pos_encoding="rope")
    m = GPT(cfg)
    names = dict(m.named_parameters())
    assert ("transformer.ln_f.weight" in names) == (order == "pre")
    assert ("transformer.h.0.ln_1.bias" in names) == (norm == "layernorm")
    idx = torch.randint(0, 31, (2, 10))
    logits, loss = m(idx, idx)
    assert torch.isfinite(loss)
    m.save(tmp_path)
    torch.testing.assert_close(GPT.load(tmp_path)(idx)[0], logits)
    if order == "post":
        # every block ends in a norm: its output has zero mean (LayerNorm) / unit RMS (RMSNorm) per token
        x = m.transformer.h[0](m.transformer.wte(idx), rope=(m.rope_cos[:10], m.rope_sin[:10]))
        if norm == "layernorm":
            torch.testing.assert_close(x.mean(-1), torch.zeros(2, 10), atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(2, 10), atol=1e-3, rtol=0)


def test_pre_ln_block_formula():
    torch.manual_seed(0)
    m = GPT(tiny(pos_encoding="none", norm="rmsnorm"))
    blk = m.transformer.h[0]
    x = torch.randn(2, 5, 32)
    h = x + blk.attn(blk.ln_1(x))
    torch.testing.assert_close(blk(x), h + blk.mlp(blk.ln_2(h)))


def test_old_config_without_new_keys_loads_with_defaults(tmp_path):
    m = GPT(tiny(pos_encoding="learned"))
    m.save(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["norm"], raw["block_order"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = GPT.load(tmp_path).config
    assert cfg.norm == "layernorm" and cfg.block_order == "pre"
