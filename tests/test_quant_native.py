"""dodai's native int4/int8 kernels (dodai.quant.native) against the dequantize-then-matmul references."""

from __future__ import annotations

import pytest
import torch
from _native_marks import KNOWN_LAYOUT, NATIVE, needs_known_layout  # noqa: E402

from dodai.quant import int4, native
from dodai.quant.int4 import Int4Linear, int4_linear_fast, int4_linear_reference, quantize_groupwise
from dodai.quant.int8 import Int8Linear, int8_linear_fast

pytestmark = NATIVE


def _module(n, k, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=False)
    q, d, m = quantize_groupwise(lin.weight)
    return Int4Linear(q, d, m), q, d, m


def _kernel_weight(mod):
    """W from PyTorch's own kernel on the identity (independent of dodai's layout reading)."""
    eye = torch.eye(mod.in_features)
    return int4._OP(eye, mod.packed, mod.group, mod.scales_zeros.float()).t()


@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (960, 576), (576, 1536)])
def test_probed_layout_dequantizes_exactly(shape):
    mod, *_ = _module(*shape)
    bn = native.int4_tile(*shape)
    if bn == 0:  # a layout the probe does not read: Int4Linear keeps PyTorch's kernel, exactly
        assert not KNOWN_LAYOUT or shape[0] % 64
        assert torch.equal(mod.weight, _kernel_weight(mod))
        return
    assert bn in (32, 64)
    wt = native.int4_dequantize_t(mod.packed, mod.scales_zeros, mod.group, bn)
    assert wt.shape == (shape[1], shape[0])
    assert torch.equal(wt.t(), _kernel_weight(mod))
    assert torch.equal(mod.weight, _kernel_weight(mod))  # Int4Linear.weight now reads it natively


@needs_known_layout
@pytest.mark.parametrize("rows", [1, 2, 4, 7, 16, 32])
def test_int4_gemv_equals_reference(rows):
    mod, q, d, m = _module(192, 320, seed=rows)
    x = torch.randn(rows, 320)
    y = native.int4_gemv(x, mod.packed, mod.scales_zeros, 32, native.int4_tile(192, 320))
    ref = int4_linear_reference(x, q, d, m, as_kernel=True)  # fp32 activations, the kernel's bf16 pairs
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@needs_known_layout
@pytest.mark.parametrize("rows", [1, 3, 5, 17, 40])
def test_int4_linear_fast_paths(rows):
    """Decoding rows take the GEMV, prompts dequantize-then-GEMM; both on fp32 activations."""
    mod, q, d, m = _module(128, 96, seed=7)
    x = torch.randn(rows, 96)
    ref = int4_linear_reference(x, q, d, m, as_kernel=True)
    y = int4_linear_fast(x, mod.packed, mod.scales_zeros, mod.group)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # PyTorch's kernel (bf16 activations) is what runs without the native kernels
    torch_k = int4._OP(x.to(torch.bfloat16), mod.packed, 32, mod.scales_zeros).float()
    assert ((y - torch_k).norm() / ref.norm()) < 2e-2


@needs_known_layout
def test_stacked_modules_are_one_layout():
    """The decoder's fused q|k|v stacks separately packed row tiles: the native GEMV reads the stack."""
    mods = [_module(n, 128, seed=n)[0] for n in (128, 64, 64)]
    packed = torch.cat([mm.packed for mm in mods])
    sz = torch.cat([mm.scales_zeros for mm in mods], dim=1).contiguous()
    x = torch.randn(1, 128)
    y = native.int4_gemv(x, packed, sz, 32, native.int4_tile(256, 128))
    torch.testing.assert_close(y, torch.cat([mm(x) for mm in mods], dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [64, 66, 3])
@pytest.mark.parametrize("rows", [1, 2, 5, 16])
def test_int8_gemv_equals_reference(n, rows):
    torch.manual_seed(n)
    mod = Int8Linear.from_linear(torch.nn.Linear(48, n, bias=True))
    x = torch.randn(rows, 48)
    y = mod(x)  # up to GEMV_ROWS rows: the native GEMV with the bf16-rounded scales
    w = mod.qweight.float() * mod.scale_bf16.float()[:, None]
    ref = x @ w.t() + mod.bias
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert torch.equal(y, int8_linear_fast(x, mod.qweight, mod.scale_bf16, mod.bias))


def test_native_kernels_refuse_bad_tensors():
    mod, *_ = _module(64, 64)
    with pytest.raises(ValueError):
        native.int4_gemv(torch.randn(1, 64).double(), mod.packed, mod.scales_zeros, 32, 32)
    with pytest.raises(ValueError):
        native.int8_gemv(torch.randn(1, 12), torch.zeros(4, 12, dtype=torch.int8), torch.ones(4))


def test_without_native_kernels_pytorchs_kernel_runs(monkeypatch):
    mod, q, d, m = _module(64, 64, seed=3)
    x = torch.randn(1, 64)
    with_native = mod(x)
    monkeypatch.setattr(native, "_lib", False)
    assert not native.available()
    without = mod(x)
    ref = int4_linear_reference(x, q, d, m, as_kernel=True)
    assert not torch.equal(with_native, without)  # a different kernel ran (bf16 activations)
    assert ((without - ref).norm() / ref.norm()) < 2e-2


def test_unknown_layout_keeps_pytorchs_kernel(monkeypatch):
    """Whatever the CPU: when the probe reads no layout (tile 0), int4 layers run PyTorch's own kernel."""
    mod, q, d, m = _module(64, 64, seed=5)
    x = torch.randn(1, 64)
    monkeypatch.setattr(native, "int4_tile", lambda n, k: 0)
    y = mod(x)
    torch_k = int4._OP(x.to(torch.bfloat16), mod.packed, 32, mod.scales_zeros).float()
    torch.testing.assert_close(y, torch_k.to(y.dtype))


def _a8_reference(x, q, d, m):
    """W4A8 oracle in float64: x rounded to int8 per block of 32 (round(x · (1/d_x)), d_x = max|x| / 127, in fp32)
    meets the centred codes (q - 8)·scale (bf16 scales, as the kernel reads them); the zero term takes the exact
    float x."""
    from dodai.quant.int4 import kernel_scales

    scale, zero = kernel_scales(d, m)  # (N, K/g) each, as the kernel reads them
    n, k = q.shape
    g = k // scale.shape[1]
    rows = x.shape[0]
    xb = x.reshape(rows, k // 32, 32)
    dx = xb.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(dx > 0, 1 / torch.where(dx > 0, dx, 1), 0)  # fp32, as the kernel: x times 1/d, half to even
    xq = torch.round(xb * inv).reshape(rows, k)
    s_k = scale.double().repeat_interleave(g, dim=1)  # (N, K)
    z_k = zero.double().repeat_interleave(g, dim=1)
    centred = (q.double() - 8) * s_k  # (N, K)
    xd = (xq.double().reshape(rows, k // 32, 32) * dx.double()).reshape(rows, k)
    return xd @ centred.t() + x.double() @ z_k.t()


@needs_known_layout
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("shape", [(192, 320), (128, 64)])
def test_int4_a8_gemv_equals_reference(rows, shape):
    n, k = shape
    mod, q, d, m = _module(n, k, seed=rows + n)
    x = torch.randn(rows, k) * torch.logspace(-2, 1, k)  # blocks of very different magnitudes
    x[0, :32] = 0.0  # an all-zero block (scale 0) must give 0, not NaN
    y = native.int4_a8_gemv(x, mod.packed, mod.scales_zeros, 32, native.int4_tile(n, k))
    ref = _a8_reference(x, q, d, m)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # and every row alone gives the same floats: rows never mix
    alone = torch.cat([native.int4_a8_gemv(x[i:i + 1].contiguous(), mod.packed, mod.scales_zeros, 32,
                                           native.int4_tile(n, k)) for i in range(rows)])
    assert torch.equal(y, alone)
    # on ordinary activations, close to the fp32-activation product: only the rounding to 8 bits separates them
    x = torch.randn(rows, k)
    y = native.int4_a8_gemv(x, mod.packed, mod.scales_zeros, 32, native.int4_tile(n, k))
    full = int4_linear_reference(x, q, d, m, as_kernel=True)
    assert float((y - full).norm() / full.norm()) < 1e-2
