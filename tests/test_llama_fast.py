"""Llama's decode fast path (issue 4, "Speed") against its plain reference path.

The fast path fuses W_q|W_k|W_v and W_gate|W_up into one matmul each when autograd is off, with the
separate modules' weights re-pointed into the concatenated matrix, applies RoPE to q and k heads in
one call, and uses the fused RMSNorm kernel in fp32. The reference (``set_eager(True)``) keeps three
projections, explicit softmax attention and the RMSNorm formula written out.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from dodai.models.llama import Llama, LlamaConfig, RMSNorm


def tiny(seed: int = 0, **kw) -> Llama:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, block_size=64, n_layer=2, n_embd=48, n_head=6, n_kv_head=2, ffn_hidden=80,
               tie_embeddings=True)
    cfg.update(kw)
    return Llama(LlamaConfig(**cfg)).eval()


def eager_copy(m: Llama) -> Llama:
    return copy.deepcopy(m).set_eager(True)


def decode_logits(m: Llama, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Prefill ids[:, :-steps] with a cache, then feed the last ``steps`` tokens one at a time."""
    cache = m.new_cache(ids.shape[0], ids.shape[1])
    out = []
    with torch.inference_mode():
        lg, _ = m(ids[:, :-steps], cache=cache)
        out.append(lg)
        for t in range(ids.shape[1] - steps, ids.shape[1]):
            lg, _ = m(ids[:, t:t + 1], cache=cache)
            out.append(lg)
    return torch.cat(out, dim=1)  # (B, T, V)


def test_rmsnorm_fused_kernel_equals_formula_bitwise():
    torch.manual_seed(1)
    n = RMSNorm(48, 1e-5)
    with torch.no_grad():
        n.weight.normal_()
    for scale in (1e-3, 1.0, 300.0):
        x = torch.randn(3, 7, 48) * scale
        assert torch.equal(n(x), n.reference(x))
    xb = torch.randn(2, 5, 48).bfloat16()
    nb = copy.deepcopy(n).bfloat16()
    assert torch.equal(nb(xb), nb.reference(xb))  # bf16 takes the written-out formula


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_fast_decode_equals_reference(n_kv_head):
    m = tiny(n_kv_head=n_kv_head)
    ref = eager_copy(m)
    ids = torch.randint(0, 97, (2, 20))
    fast = decode_logits(m, ids, 6)
    with torch.no_grad():
        full_ref, _ = ref(ids)  # uncached, eager, separate projections
    torch.testing.assert_close(fast, full_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decode_logits(ref, ids, 6), full_ref, atol=1e-5, rtol=1e-5)
    assert m.layers[0].attn.__dict__.get("_qkv") is not None  # the fused path did run
    assert ref.layers[0].attn.__dict__.get("_qkv") is None  # and the reference did not fuse


def test_fast_padded_batch_equals_reference():
    m = tiny(2)
    ref = eager_copy(m)
    ids = torch.randint(1, 97, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, :5] = False
    mask[2, :2] = False
    with torch.inference_mode():
        a, _ = m(ids, attention_mask=mask)
    with torch.no_grad():
        b, _ = ref(ids, attention_mask=mask)
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)


def test_fusion_shares_storage_and_keeps_state_dict():
    m = tiny(3)
    names = list(m.state_dict())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m(torch.randint(0, 97, (1, 5)))
    assert list(m.state_dict()) == names
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k  # fusing moved the weights, it did not change them
    att, ffn = m.layers[1].attn, m.layers[1].ffn
    fused = att.__dict__["_qkv"].weight
    assert fused.shape == (6 * 8 + 2 * 2 * 8, 48)
    # W_q, W_k, W_v are consecutive row blocks of the one matrix: no second copy of the weights
    es = fused.element_size()
    assert att.wq.weight.data_ptr() == fused.data_ptr()
    assert att.wk.weight.data_ptr() == fused.data_ptr() + att.wq.weight.numel() * es
    assert att.wv.weight.data_ptr() == att.wk.weight.data_ptr() + att.wk.weight.numel() * es
    assert ffn.w_up.weight.data_ptr() == ffn.__dict__["_gate_up"].weight.data_ptr() + ffn.w_gate.weight.numel() * es
    assert isinstance(att.wq.weight, nn.Parameter) and att.wq.weight.requires_grad


def test_inplace_weight_updates_are_seen_by_the_fused_path():
    m, other = tiny(4), tiny(5)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        m(ids)  # fuse
        m.load_state_dict(other.state_dict())  # copy_ into the fused storage
        a, _ = m(ids)
        b, _ = eager_copy(other)(ids)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_training_reaches_the_parameters_and_fusion_follows():
    m = tiny(6)
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        m(ids)  # fuse first, then train on the same parameters
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    _, loss = m(ids, targets=ids)
    loss.backward()
    for blk in m.layers:
        for p in (blk.attn.wq.weight, blk.attn.wk.weight, blk.attn.wv.weight, blk.ffn.w_gate.weight,
                  blk.ffn.w_up.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0
    opt.step()
    m.eval()
    with torch.no_grad():
        a, _ = m(ids)
        b, _ = eager_copy(m)(ids)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dtype_change_and_deepcopy_refuse():
    m = tiny(7)
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        m(ids)
        c = copy.deepcopy(m)
        assert c.layers[0].attn.__dict__.get("_qkv") is None  # a copy does not carry the original's fusion
        torch.testing.assert_close(c(ids)[0], m(ids)[0], atol=0, rtol=0)
        assert c.layers[0].attn.wq.weight.data_ptr() != m.layers[0].attn.wq.weight.data_ptr()
        m.to(torch.float64)  # swaps every weight's storage: the stale fusion must not be used
        a, _ = m(ids)
        b, _ = eager_copy(m)(ids)
        assert a.dtype == torch.float64
    # (the eager softmax runs in fp32, hence not 1e-12; a stale fp32 fusion would not even run on fp64 input)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


class Wrapped(nn.Module):
    """Stands for an adapter (LoRA) that replaces a projection module: W x + a fixed offset."""

    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(x) + 0.25


def test_replaced_projection_falls_back_to_separate_modules():
    m = tiny(8)
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        m(ids)
        for blk in m.layers:
            blk.attn.wk = Wrapped(blk.attn.wk)
            blk.ffn.w_up = Wrapped(blk.ffn.w_up)
        a, _ = m(ids)
        b, _ = eager_copy(m)(ids)
    assert m.layers[0].attn.__dict__.get("_qkv") is None
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_int8_fused_equals_int8_separate():
    from dodai.quant import int8 as quant

    m = quant.quantize_model(tiny(9), "int8")
    if not m.layers[0].attn.wq.fast:
        pytest.skip("this torch has no _weight_int8pack_mm: int8 runs its reference path, nothing is fused")
    ref = eager_copy(m)
    ids = torch.randint(0, 97, (2, 14))
    fast = decode_logits(m, ids, 4)
    with torch.no_grad():
        full_ref, _ = ref(ids)
    assert m.layers[0].attn.__dict__.get("_qkv") is not None
    # the same bf16-activation kernel on the same rows; only the attention path differs
    torch.testing.assert_close(fast, full_ref, atol=2e-3, rtol=2e-3)


def test_greedy_generate_fast_equals_uncached_reference():
    from dodai.generate.sampling import generate, generate_uncached

    m = tiny(10)
    ref = eager_copy(m)
    prompt = [3, 14, 15, 92, 65]
    assert list(generate(m, prompt, 20, temperature=0.0)) == list(generate_uncached(ref, prompt, 20,
                                                                                     temperature=0.0))


def test_save_after_fusion_writes_each_weight_once(tmp_path):
    from dodai.models.llama import load_llama_dir

    m = tiny(11)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        a, _ = m(ids)  # fused: the projections are now views of shared matrices
    m.save(tmp_path)
    data_bytes = sum(p.numel() * p.element_size() for p in m.parameters())  # tied embedding counted once
    size = (tmp_path / "model.safetensors").stat().st_size
    assert data_bytes <= size < data_bytes + 8192  # only the header on top: no whole shared matrix per view
    with torch.no_grad():
        b, _ = load_llama_dir(tmp_path)(ids)
    assert torch.equal(a, b)


def test_training_forward_after_inference_mode_generation():
    """The cached RoPE table built under inference_mode must not break a later backward pass."""
    import torch

    from dodai.models.llama import Llama, LlamaConfig

    torch.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=50, block_size=64, n_layer=1, n_embd=16, n_head=2, n_kv_head=1, ffn_hidden=32))
    x = torch.randint(0, 50, (1, 12))
    with torch.inference_mode():
        m(x)
    _, loss = m(x, targets=x)
    loss.backward()
    assert m.tok_embeddings.weight.grad is not None
