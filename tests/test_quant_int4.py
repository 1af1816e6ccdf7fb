"""4-bit weights (dodai.quant.int4): the Q4_1 groupwise rule, the kernel path against the plain reference,
fused projections, quantize_model("int4") on tiny models, and the re-quantization of real Q4_1 blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.sampling import generate, generate_uncached
from dodai.models.llama import Llama, LlamaConfig
from dodai.quant import int4
from dodai.quant.int4 import (
    Int4Linear,
    dequantize_groupwise,
    int4_linear_reference,
    kernel_scales,
    quantize_groupwise,
)
from dodai.quant.int8 import Int8Linear, quantize_model, weight_bytes

pytestmark = pytest.mark.skipif(not int4.available(), reason="this PyTorch has no CPU 4-bit kernel")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), groups=st.integers(1, 4), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_groupwise_error_is_at_most_half_a_step(n, groups, scale, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, 32 * groups, generator=g) * scale
    q, d, m = quantize_groupwise(w)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    err = (dequantize_groupwise(q, d, m) - w).abs().reshape(n, groups, 32)
    assert (err <= d[..., None] / 2 * (1 + 1e-5) + 1e-6 * scale).all()
    # the group's min and max are grid points: code 0 at the min, 15 at the max
    blocks = w.reshape(n, groups, 32)
    torch.testing.assert_close(m, blocks.amin(-1))
    assert (q.reshape(n, groups, 32).amax(-1) == 15).all() or (d == 1).any()


def test_constant_groups_and_bad_input():
    w = torch.full((2, 64), 0.25)
    q, d, m = quantize_groupwise(w)
    assert (q == 0).all() and torch.equal(dequantize_groupwise(q, d, m), w)
    with pytest.raises(DodaiError):
        quantize_groupwise(torch.randn(4, 30))  # not a multiple of 32
    with pytest.raises(DodaiError):
        quantize_groupwise(torch.tensor([[float("nan")] * 32]))


def test_requantizing_real_q4_1_blocks_finds_the_same_codes():
    """dodai's GGUF writer's Q4_1 blocks (llama.cpp's rule), dequantized, then re-quantized here: every
    block whose codes reach both 0 and 15 gets the same codes back (the file's own grid)."""
    from dodai.weights.quants import dequantize, quantize

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    blocks = quantize(w, "Q4_1")
    wq = torch.from_numpy(np.asarray(dequantize(blocks, "Q4_1"), dtype=np.float32).reshape(w.shape))
    q, d, m = quantize_groupwise(wq)
    back = dequantize_groupwise(q, d, m)
    torch.testing.assert_close(back, wq, rtol=0, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(64, 96), (48, 32), (128, 256)])
def test_kernel_path_equals_reference(shape, bias):
    torch.manual_seed(1)
    lin = torch.nn.Linear(shape[1], shape[0], bias=bias)
    mod = Int4Linear.from_linear(lin)
    q, d, m = quantize_groupwise(lin.weight)
    x = torch.randn(3, 5, shape[1])
    y = mod(x)
    assert y.shape == (3, 5, shape[0]) and y.dtype == torch.float32
    # the kernel's arithmetic: the bf16 (scale, zero) pairs, activations rounded to bf16
    ref_k = int4_linear_reference(x.to(torch.bfloat16).float(), q, d, m, lin.bias, as_kernel=True)
    torch.testing.assert_close(y, ref_k, rtol=2e-2, atol=2e-2)
    # and close to the plain dequantized weight
    ref = int4_linear_reference(x, q, d, m, lin.bias)
    assert ((y - ref).norm() / ref.norm()) < 0.02
    # .weight recovers (q - 8)·scale + zero exactly
    scale, zero = kernel_scales(d, m)
    w_k = ((q.float().reshape(shape[0], -1, 32) - 8) * scale[..., None] + zero[..., None]).reshape(shape)
    torch.testing.assert_close(mod.weight, w_k, rtol=0, atol=1e-6)


def test_int4linear_rejects_wrong_width_and_shapes():
    mod = Int4Linear.from_linear(torch.nn.Linear(64, 32, bias=False))
    with pytest.raises(DodaiError):
        mod(torch.randn(1, 63))
    q, d, m = quantize_groupwise(torch.randn(8, 64))
    with pytest.raises(DodaiError):
        Int4Linear(q, d, m)  # 8 output rows: the kernel packs rows in tiles of 16


def small_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=80, block_size=64, n_layer=2, n_embd=128, n_head=4, n_kv_head=2, ffn_hidden=256)
    m = Llama(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.1)
    return m.eval()


def test_quantize_model_int4_on_a_llama_fused_equals_separate():
    base = small_llama()
    x = torch.randint(0, 80, (2, 10))
    with torch.no_grad():
        ref, _ = base(x)
        m4 = quantize_model(small_llama(), "int4")
        kinds = {type(mod).__name__ for mod in m4.modules()}
        assert "Linear" not in kinds
        assert isinstance(m4.output, Int8Linear)  # the vocabulary head stays 8-bit
        assert isinstance(m4.layers[0].attn.wk, Int4Linear) and isinstance(m4.layers[1].ffn.w_down, Int4Linear)
        fused, _ = m4(x)  # inference: q|k|v and gate|up fused into one 4-bit matmul each
        assert m4.layers[0].attn.__dict__.get("_qkv") is not None
        for mod in m4.modules():
            if hasattr(mod, "eager"):
                mod.eager = True
        separate, _ = m4(x)
    torch.testing.assert_close(fused, separate, rtol=2e-2, atol=2e-2)
    # Gaussian random weights are 4-bit's worst case (a step of ~range/15 on every weight, ~9 % error per
    # layer); a trained model loses far less (SmolLM2: +0.1 % perplexity, tests/test_quant.py)
    assert ((fused - ref).norm() / ref.norm()) < 0.2
    assert (fused.argmax(-1) == ref.argmax(-1)).float().mean() > 0.75
    assert weight_bytes(m4) < 0.45 * weight_bytes(base)
    with pytest.raises(DodaiError):
        quantize_model(m4, "int8")


def test_int4_model_cached_equals_uncached_generation():
    m = quantize_model(small_llama(3), "int4")
    prompt = [1, 7, 3, 9]
    assert list(generate(m, prompt, 10, temperature=0.0)) == list(generate_uncached(m, prompt, 10, temperature=0.0))


def test_layers_the_kernel_cannot_take_fall_back_to_int8():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x = torch.randn(4, 64)
    ref = net(x)
    quantize_model(net, "int4")
    assert isinstance(net[0], Int4Linear) and isinstance(net[2], Int8Linear)  # 10 outputs: no 16-row tile
    assert ((net(x) - ref).norm() / ref.norm()) < 0.2


def test_reference_is_plain_linear():
    torch.manual_seed(5)
    w = torch.randn(32, 64)
    q, d, m = quantize_groupwise(w)
    x = torch.randn(2, 64)
    torch.testing.assert_close(int4_linear_reference(x, q, d, m), F.linear(x, dequantize_groupwise(q, d, m)))
