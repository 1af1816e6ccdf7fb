"""HF GPT-2 parity: HF weights into dodai, and a dodai GPT exported in HF format, give the same logits."""

import json

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


def hf_tiny(act="gelu_new", **kw):
    cfg = transformers.GPT2Config(vocab_size=53, n_positions=20, n_embd=32, n_layer=2, n_head=4,
                                  activation_function=act, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, **kw)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("act", ["gelu_new", "gelu"])
def test_hf_gpt2_weights_into_dodai_give_same_logits(act):
    from dodai.weights.hf_gpt2 import from_hf_state_dict

    hf = hf_tiny(act)
    with torch.no_grad():  # random biases and norm gains too, so every tensor's mapping matters
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.normal_(0, 0.5 if "bias" in name else 1.0)
    m = from_hf_state_dict(hf.state_dict(), hf.config.to_dict()).eval()
    assert m.config.activation == ("gelu_tanh" if act == "gelu_new" else "gelu")
    idx = torch.randint(0, 53, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(m(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
        hf64, m64 = hf.double(), m.double()
        torch.testing.assert_close(m64(idx)[0], hf64(idx).logits, atol=1e-10, rtol=1e-10)


def test_dodai_gpt_exports_to_hf_and_loads_in_transformers(tmp_path):
    from dodai.weights.hf_gpt2 import export_hf_gpt2, load_hf_gpt2

    torch.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=41, block_size=16, n_layer=2, n_head=2, n_embd=24,
                      activation="gelu_tanh", layer_norm_eps=1e-6)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_()
    export_hf_gpt2(m, tmp_path, eos_id=40)
    hf_cfg = json.loads((tmp_path / "config.json").read_text())
    assert hf_cfg["activation_function"] == "gelu_new" and hf_cfg["eos_token_id"] == 40
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 41, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, m(idx)[0], atol=1e-5, rtol=1e-5)
        back = load_hf_gpt2(tmp_path).eval()  # and back into dodai
        torch.testing.assert_close(back(idx)[0], m(idx)[0], atol=0, rtol=0)


def test_untied_export(tmp_path):
    from dodai.weights.hf_gpt2 import export_hf_gpt2

    torch.manual_seed(2)
    m = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16, tie_weights=False)).eval()
    export_hf_gpt2(m, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 30, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, m(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(pos_encoding="rope"), dict(pos_encoding="sinusoidal"), dict(bias=False),
                                 dict(n_kv_head=1), dict(activation="swiglu")])
def test_export_refuses_what_gpt2_cannot_express(tmp_path, bad):
    from dodai.weights.hf_gpt2 import export_hf_gpt2

    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, **bad))
    with pytest.raises(DodaiError):
        export_hf_gpt2(m, tmp_path)


def test_import_is_strict():
    from dodai.weights.hf_gpt2 import from_hf_state_dict

    hf = hf_tiny()
    sd = dict(hf.state_dict())
    cfg = hf.config.to_dict()
    sd.pop("transformer.h.1.mlp.c_fc.bias")
    with pytest.raises(DodaiError, match="missing"):
        from_hf_state_dict(sd, cfg)
    with pytest.raises(DodaiError, match="shape"):
        from_hf_state_dict(hf.state_dict(), {**cfg, "n_embd": 64, "n_head": 4})
    with pytest.raises(DodaiError):
        from_hf_state_dict(hf.state_dict(), {**cfg, "model_type": "llama"})
    # checkpoints without the "transformer." prefix (OpenAI's gpt2 layout) load too
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    m = from_hf_state_dict(bare, cfg).eval()
    idx = torch.randint(0, 53, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(m(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


def _sharp_hf_and_dodai():
    from dodai.weights.hf_gpt2 import from_hf_state_dict

    hf = hf_tiny()
    with torch.no_grad():
        hf.transformer.wte.weight.normal_(0, 1.0)  # a peaked next-token distribution: real choices
    m = from_hf_state_dict(hf.state_dict(), hf.config.to_dict()).eval()
    return hf, m


def test_greedy_generate_matches_hf_generate():
    from dodai.generate.sampling import generate

    hf, m = _sharp_hf_and_dodai()
    prompt = [5, 9, 2]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=15, do_sample=False, pad_token_id=0,
                      eos_token_id=None)[0, 3:].tolist()
    assert list(generate(m, prompt, 15, temperature=0)) == ref


@pytest.mark.parametrize("kw", [dict(temperature=0.8, top_k=10), dict(temperature=1.3, top_p=0.9),
                                dict(temperature=1.0, top_k=20, top_p=0.8)])
def test_sampled_generate_matches_hf_generate_with_the_same_global_seed(kw):
    # With seed=None dodai draws from torch's global RNG exactly as HF does (one multinomial per step,
    # same processor order: temperature, top-k, top-p), so the same manual_seed gives the same tokens.
    from dodai.generate.sampling import generate

    hf, m = _sharp_hf_and_dodai()
    prompt = [1, 2, 3, 4]
    hf_kw = {"top_k": kw.get("top_k", 0), "top_p": kw.get("top_p", 1.0), "temperature": kw["temperature"]}
    torch.manual_seed(11)
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=True, pad_token_id=0,
                      eos_token_id=None, **hf_kw)[0, 4:].tolist()
    torch.manual_seed(11)
    ours = list(generate(m, prompt, 12, seed=None, **kw))
    assert ours == ref
