"""LoRA: merged == adapter model, unmerge restores the base, only adapters train, save/load round trip."""

from __future__ import annotations

import pytest
import torch

from dodai.errors import DodaiError
from dodai.finetune.lora import (
    LoRALinear,
    count_parameters,
    inject_lora,
    load_adapters,
    lora_modules,
    merge_lora,
    remove_lora,
    save_adapters,
    unmerge_lora,
)
from dodai.models.llama import Llama, LlamaConfig

TARGETS = ("wq", "wv", "w_up")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(seed=0):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=50, block_size=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                             ffn_hidden=48)).eval()


def randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def test_adapter_starts_equal_to_base_and_only_adapters_train():
    base = tiny()
    x = torch.randint(0, 50, (2, 10))
    want = base(x)[0]
    model = tiny()
    names = inject_lora(model, rank=4, alpha=8, targets=TARGETS)
    assert len(names) == 2 * len(TARGETS)
    torch.testing.assert_close(model(x)[0], want)  # B = 0 at init
    trainable, total = count_parameters(model)
    c = model.config
    per_layer = 4 * (c.n_embd + c.n_head * c.head_dim) + 4 * (c.n_embd + c.n_kv_head * c.head_dim) \
        + 4 * (c.n_embd + c.ffn_hidden)
    assert trainable == c.n_layer * per_layer
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {f"{m}.lora_{ab}" for m in names for ab in "AB"}
    loss = model(x, targets=x)[1]
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    # with B = 0 at init, dL/dA = 0 and only B moves on the first step (Hu et al.'s design)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("lora_B"))


def test_merged_equals_adapter_and_unmerge_restores():
    model = tiny()
    x = torch.randint(0, 50, (2, 12))
    base_logits = model(x)[0].detach()
    base_w = model.layers[0].attn.wq.weight.detach().clone()
    inject_lora(model, rank=4, alpha=16, targets=TARGETS)
    randomize_b(model)
    adapted = model(x)[0].detach()
    assert (adapted - base_logits).abs().max() > 1e-3  # the adapters do something
    merge_lora(model)
    assert all(m.merged for m in lora_modules(model).values())
    torch.testing.assert_close(model(x)[0], adapted, atol=1e-5, rtol=0)
    assert (model.layers[0].attn.wq.base.weight - base_w).abs().max() > 1e-4  # ΔW is in W now
    unmerge_lora(model)
    torch.testing.assert_close(model.layers[0].attn.wq.base.weight, base_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(x)[0], adapted, atol=1e-5, rtol=0)  # unmerged: adapter path again
    merge_lora(model)
    plain = remove_lora(model, merge=False)  # unmerge then unwrap: the base model again
    assert not lora_modules(plain)
    torch.testing.assert_close(plain(x)[0], base_logits, atol=1e-5, rtol=0)


def test_save_load_round_trip(tmp_path):
    model = tiny()
    inject_lora(model, rank=2, alpha=4, targets=TARGETS)
    randomize_b(model, seed=3)
    x = torch.randint(0, 50, (1, 9))
    want = model(x)[0].detach()
    path = save_adapters(model, tmp_path / "adapters.safetensors")
    fresh = tiny()  # same base weights (same seed)
    names = load_adapters(fresh, path)
    assert len(names) == 2 * len(TARGETS)
    m = next(iter(lora_modules(fresh).values()))
    assert (m.rank, m.alpha) == (2, 4.0)
    torch.testing.assert_close(fresh(x)[0], want)


def test_hostile_inputs(tmp_path):
    with pytest.raises(DodaiError, match="no linear layer"):
        inject_lora(tiny(), targets=("nope",))
    with pytest.raises(DodaiError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), rank=0, alpha=1)
    with pytest.raises(DodaiError, match="no LoRA adapters"):
        save_adapters(tiny(), tmp_path / "a.safetensors")
    from dodai.weights.safetensors import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(DodaiError, match="not a dodai LoRA"):
        load_adapters(tiny(), tmp_path / "plain.safetensors")
    model = tiny()
    inject_lora(model, rank=2, alpha=4, targets=TARGETS)
    good = save_adapters(model, tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DodaiError):
        load_adapters(tiny(), tmp_path / "trunc.safetensors")
    other = Llama(LlamaConfig(vocab_size=50, block_size=32, n_layer=2, n_embd=16, n_head=4, n_kv_head=2,
                              ffn_hidden=48))
    with pytest.raises(DodaiError, match="shape"):
        load_adapters(other, good)
