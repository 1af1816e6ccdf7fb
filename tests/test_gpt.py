"""GPT: config, forward/loss, init, weight tying, param groups, save/load, cached == uncached."""

import json
import math

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.gpt import GPT, GPTConfig


def tiny(**kw) -> GPTConfig:
    base = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
    base.update(kw)
    return GPTConfig(**base)


def test_config_round_trip_and_errors():
    cfg = tiny(pos_encoding="rope", n_kv_head=2, activation="gelu_tanh")
    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(DodaiError, match="unknown key 'n_heads'"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_heads": 3})
    for bad in (dict(n_embd=30), dict(n_kv_head=3), dict(pos_encoding="xpos"), dict(norm="batchnorm"),
                dict(block_order="mid"), dict(activation="swish"),
                dict(attn_impl="flash"), dict(vocab_size=0), dict(dropout=1.0), dict(n_layer="2")):
        with pytest.raises(DodaiError):
            tiny(**bad)


def test_forward_shapes_and_loss_is_cross_entropy():
    torch.manual_seed(0)
    m = GPT(tiny())
    idx = torch.randint(0, 37, (3, 10))
    tgt = torch.randint(0, 37, (3, 10))
    tgt[0, :4] = -100
    logits, loss = m(idx, tgt)
    assert logits.shape == (3, 10, 37)
    keep = tgt != -100
    expected = -torch.log_softmax(logits, -1)[keep].gather(-1, tgt[keep][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    # a fresh model is close to uniform: loss near ln V
    assert abs(loss.item() - math.log(37)) < 0.3
    assert m(idx)[1] is None
    with pytest.raises(DodaiError, match="context window"):
        m(torch.zeros(1, 25, dtype=torch.long))


def test_gpt2_init_and_weight_tying():
    torch.manual_seed(0)
    m = GPT(tiny(n_layer=8, n_embd=64, vocab_size=500))
    assert m.lm_head.weight is m.transformer.wte.weight
    assert abs(m.transformer.wte.weight.std().item() - 0.02) < 0.002
    w = m.transformer.h[0].attn.c_proj.weight
    assert abs(w.std().item() - 0.02 / math.sqrt(16)) < 0.001
    assert m.transformer.h[0].mlp.c_fc.bias.abs().max() == 0
    untied = GPT(tiny(tie_weights=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params(non_embedding=False) - GPT(tiny()).num_params(non_embedding=False) == 37 * 32


def test_num_params_and_param_groups():
    m = GPT(tiny())
    total = sum(p.numel() for p in m.parameters())
    assert m.num_params(non_embedding=False) == total
    assert m.num_params() == total - 24 * 32  # learned position table left out
    groups = m.optimizer_param_groups(0.1)
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert all(p.dim() >= 2 for p in decay) and all(p.dim() < 2 for p in no_decay)
    assert sum(p.numel() for p in decay + no_decay) == total
    assert len({id(p) for p in decay + no_decay}) == len(decay) + len(no_decay)  # tied weight once
    torch.optim.AdamW(groups)  # accepted as-is


@pytest.mark.parametrize("pe", ["learned", "sinusoidal", "rope", "none"])
def test_save_load_round_trip(tmp_path, pe):
    torch.manual_seed(0)
    m = GPT(tiny(pos_encoding=pe, n_kv_head=2)).eval()
    m.save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt" and cfg["pos_encoding"] == pe
    from dodai.weights.safetensors import load_file

    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")  # tied: saved once
    m2 = GPT.load(tmp_path)
    assert m2.lm_head.weight is m2.transformer.wte.weight
    idx = torch.randint(0, 37, (2, 12))
    torch.testing.assert_close(m2(idx)[0], m(idx)[0], rtol=0, atol=0)


def test_load_is_strict(tmp_path):
    from dodai.weights.safetensors import load_file, save_file

    m = GPT(tiny())
    m.save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(DodaiError, match="shape"):
        GPT.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = load_file(tmp_path / "model.safetensors")
    sd.pop("transformer.ln_f.bias")
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(DodaiError, match="missing"):
        GPT.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DodaiError):
        GPT.load(tmp_path)
    with pytest.raises(DodaiError):
        GPT.load(tmp_path / "nowhere")


@pytest.mark.parametrize("pe", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_cached_logits_equal_uncached(pe, impl):
    torch.manual_seed(0)
    m = GPT(tiny(pos_encoding=pe, attn_impl=impl, n_kv_head=2)).eval()
    idx = torch.randint(0, 37, (2, 20))
    with torch.no_grad():
        full, _ = m(idx)
        cache = m.new_cache(2, 20)
        parts = [m(idx[:, :7], cache=cache)[0]]  # prefill
        parts += [m(idx[:, i:i + 1], cache=cache)[0] for i in range(7, 17)]  # one token at a time
        parts.append(m(idx[:, 17:], cache=cache)[0])  # a multi-token chunk after a prefix
    assert cache.pos == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_reference_and_sdpa_models_agree_and_dropout_is_active_in_training():
    torch.manual_seed(0)
    a = GPT(tiny(attn_impl="reference", dropout=0.2))
    b = GPT(tiny(attn_impl="sdpa", dropout=0.2))
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 37, (2, 16))
    a.eval()
    b.eval()
    torch.testing.assert_close(a(idx)[0], b(idx)[0], atol=1e-5, rtol=1e-5)
    b.train()
    assert not torch.allclose(b(idx)[0], b(idx)[0])


def test_training_reduces_loss_on_a_repeating_pattern():
    torch.manual_seed(0)
    m = GPT(tiny(pos_encoding="rope", n_layer=1))
    opt = torch.optim.AdamW(m.optimizer_param_groups(0.0), lr=1e-2)
    data = torch.arange(24).remainder(5)[None].repeat(4, 1)  # 0 1 2 3 4 0 1 ...
    first = None
    for _ in range(25):
        _, loss = m(data[:, :-1], data[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_swiglu_gpt_matches_gelu_size_and_caches():
    torch.manual_seed(0)
    glu = GPT(tiny(activation="swiglu", bias=False, pos_encoding="rope")).eval()
    gelu = GPT(tiny(bias=False, pos_encoding="rope"))
    from dodai.nn.ffn import SwiGLU

    assert isinstance(glu.transformer.h[0].mlp, SwiGLU)
    assert abs(glu.num_params() - gelu.num_params()) < 0.02 * gelu.num_params()
    idx = torch.randint(0, 37, (1, 12))
    with torch.no_grad():
        cache = glu.new_cache(1, 12)
        parts = [glu(idx[:, :5], cache=cache)[0], glu(idx[:, 5:], cache=cache)[0]]
        torch.testing.assert_close(torch.cat(parts, 1), glu(idx)[0], atol=1e-5, rtol=1e-5)
