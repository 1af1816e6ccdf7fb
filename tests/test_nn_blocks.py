"""Norms, FFNs, positions and masks against torch.nn / HF / hand-written formulas."""

import math

import pytest
import torch

from dodai.nn import ffn, masks, norm, position


def test_layer_norm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    ref = torch.nn.LayerNorm(16, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = norm.LayerNorm(16, eps=1e-5).double()
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(norm.layer_norm_reference(x, ref.weight, ref.bias, 1e-5), ref(x))
    nob = norm.LayerNorm(16, bias=False)
    assert nob.bias is None and sum(p.numel() for p in nob.parameters()) == 16


def test_rms_norm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 24, dtype=torch.float64) * 3
    ref = torch.nn.RMSNorm(24, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.normal_()
    ours = norm.RMSNorm(24, eps=1e-6).double()
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(norm.rms_norm_reference(x, ref.weight, 1e-6), ref(x))
    # RMSNorm is invariant to rescaling the input (up to eps)
    torch.testing.assert_close(ours(5 * x), ours(x), atol=1e-6, rtol=1e-6)


def test_gelu_formulas_match_torch():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(ffn.gelu_reference(x), torch.nn.functional.gelu(x))
    torch.testing.assert_close(ffn.gelu_tanh_reference(x), torch.nn.functional.gelu(x, approximate="tanh"))
    # the two differ, but by little
    d = (ffn.gelu_reference(x) - ffn.gelu_tanh_reference(x)).abs().max()
    assert 0 < d < 1e-3


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
def test_mlp_formula(act):
    torch.manual_seed(1)
    m = ffn.MLP(8, 20, activation=act).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    f = {"gelu": ffn.gelu_reference, "gelu_tanh": ffn.gelu_tanh_reference, "relu": torch.relu}[act]
    h = f(x @ m.c_fc.weight.T + m.c_fc.bias)
    torch.testing.assert_close(m(x), h @ m.c_proj.weight.T + m.c_proj.bias)


def test_swiglu_matches_hf_llama_mlp():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2,
                                   num_key_value_heads=2, hidden_act="silu", mlp_bias=False)
    torch.manual_seed(0)
    ref = LlamaMLP(cfg).double()
    ours = ffn.SwiGLU(16, 40).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_swiglu_default_width_matches_mlp_params():
    c = 96
    n_mlp = sum(p.numel() for p in ffn.MLP(c, bias=False).parameters())
    n_glu = sum(p.numel() for p in ffn.SwiGLU(c).parameters())
    assert abs(n_glu - n_mlp) / n_mlp < 0.05


def test_sinusoidal_table_is_the_papers_formula():
    pe = position.sinusoidal_table(50, 16, dtype=torch.float64)
    for p in (0, 1, 7, 49):
        for i in range(8):
            w = p / 10000 ** (2 * i / 16)
            assert math.isclose(pe[p, 2 * i].item(), math.sin(w), abs_tol=1e-12)
            assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(w), abs_tol=1e-12)
    assert position.sinusoidal_table(4, 7).shape == (4, 7)  # odd widths work too


def test_rope_matches_hf_llama_and_rotates():
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    k = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    cos, sin = position.rope_cos_sin(10, 8, theta=500.0, dtype=torch.float64)
    hq, hk = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(position.apply_rope(q, cos, sin), hq)
    torch.testing.assert_close(position.apply_rope(k, cos, sin), hk)
    # a rotation keeps norms
    torch.testing.assert_close(position.apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    cos, sin = position.rope_cos_sin(40, 8, dtype=torch.float64)

    def score(m, n):
        return (position.apply_rope(q, cos[m], sin[m]) @ position.apply_rope(k, cos[n], sin[n])).item()

    assert math.isclose(score(5, 2), score(30, 27), rel_tol=1e-9)
    assert math.isclose(score(0, 0), (q @ k).item(), rel_tol=1e-9)
    assert not math.isclose(score(5, 2), score(5, 4), rel_tol=1e-3)


def test_rope_offset_and_interleaved_convention():
    cos, sin = position.rope_cos_sin(12, 6, dtype=torch.float64)
    c2, s2 = position.rope_cos_sin(4, 6, offset=8, dtype=torch.float64)
    torch.testing.assert_close(c2, cos[8:])
    torch.testing.assert_close(s2, sin[8:])
    torch.manual_seed(0)
    x = torch.randn(2, 12, 6, dtype=torch.float64)
    perm = position.interleaved_to_half_split(6)
    # rotating in the interleaved layout then permuting == permuting then rotating half-split
    torch.testing.assert_close(position.apply_rope_interleaved(x, cos, sin)[..., perm],
                               position.apply_rope(x[..., perm], cos, sin))


def test_causal_mask_is_bottom_right_aligned():
    m = masks.causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(masks.causal_mask(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    with pytest.raises(ValueError):
        masks.causal_mask(3, 2)
    pm = masks.padding_mask(torch.tensor([1, 3]), 3)
    assert pm.shape == (2, 1, 1, 3) and pm[0, 0, 0].tolist() == [True, False, False]
    add = masks.to_additive(m)
    assert add[0, 4] == float("-inf") and add[0, 0] == 0
