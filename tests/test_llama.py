"""Llama decoder: parity with HF transformers on tiny random configs, invariants, hostile configs."""

from __future__ import annotations

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.llama import (
    Llama,
    LlamaConfig,
    apply_rope,
    load_llama_dir,
    permute_qk,
    rope_cos_sin,
    unpermute_qk,
)

transformers = pytest.importorskip("transformers")


def _hf_tiny(tie: bool, n_kv_head: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv_head, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=5000.0,
        tie_word_embeddings=tie, attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1: perturb them so a swapped norm would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


def _dodai_from_hf(hf) -> Llama:
    cfg = LlamaConfig.from_hf_config(hf.config.to_dict())
    return Llama.from_hf_state_dict(cfg, hf.state_dict())


@pytest.mark.parametrize("tie,n_kv", [(True, 2), (False, 2), (False, 1), (True, 4)])
def test_hf_random_init_parity(tie, n_kv):
    hf = _hf_tiny(tie, n_kv)
    model = _dodai_from_hf(hf)
    assert model.config.tie_embeddings == tie and model.config.n_kv_head == n_kv
    idx = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(idx, labels=None)
        ours, loss = model(idx, targets)
        eager, _ = model.set_eager(True)(idx)
    torch.testing.assert_close(ours, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager, ref.logits, atol=1e-5, rtol=1e-5)
    ref_loss = torch.nn.functional.cross_entropy(ref.logits.reshape(-1, 97), targets.reshape(-1))
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    # the name map round-trips to exactly HF's tensors
    back = model.to_hf_state_dict()
    hsd = hf.state_dict()
    for k, v in back.items():
        torch.testing.assert_close(v, hsd[k], atol=0, rtol=0)
    assert set(hsd) - set(back) <= {"lm_head.weight"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cached_decoding_matches_uncached_and_hf():
    hf = _hf_tiny(False, 2, seed=3)
    model = _dodai_from_hf(hf)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(2, 32)
        parts = [model(idx[:, :7], cache=cache)[0]]  # a prefill ...
        parts.append(model(idx[:, 7:12], cache=cache)[0])  # ... a chunk after a cached prefix ...
        for t in range(12, 20):  # ... then one token at a time
            parts.append(model(idx[:, t:t + 1], cache=cache)[0])
        assert cache.pos == 20
        # the HF cached path agrees too
        out = hf(idx[:, :12], use_cache=True)
        hf_steps = [out.logits]
        past = out.past_key_values
        for t in range(12, 20):
            out = hf(idx[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            hf_steps.append(out.logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(hf_steps, 1), full, atol=1e-5, rtol=1e-5)


def test_last_only_and_batch_independence():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, block_size=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                              ffn_hidden=48)).eval()
    idx = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, last_only=True)
        one, _ = model(idx[1:2])
    assert last.shape == (3, 1, 50)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    torch.testing.assert_close(one[0], full[1], atol=1e-6, rtol=1e-5)


def test_qk_permutation_inverse_and_meaning():
    """unpermute ∘ permute = id, and interleaved RoPE on permuted rows == half-split RoPE on HF rows."""
    torch.manual_seed(0)
    n_head, D, C = 3, 8, 5
    w = torch.randn(n_head * D, C)
    assert torch.equal(unpermute_qk(permute_qk(w, n_head), n_head), w)
    assert not torch.equal(permute_qk(w, n_head), w)
    x = torch.randn(C)
    pos = torch.tensor([5])
    cos, sin = rope_cos_sin(pos, D, 10000.0)  # (1, D)
    # HF: half-split rotation of q = W x, per head
    q = (w @ x).view(1, n_head, 1, D)
    hf_rot = apply_rope(q, cos, sin).view(n_head, D)
    # llama.cpp: adjacent-pair rotation of q' = W' x with W' the permuted rows
    qp = (permute_qk(w, n_head) @ x).view(n_head, D // 2, 2)
    ang = pos.float() * (1.0 / 10000.0 ** (torch.arange(0, D, 2).float() / D))  # (D/2,)
    a, b = qp[..., 0], qp[..., 1]
    rot = torch.stack((a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()), -1)  # (H, D/2, 2)
    # the interleaved result, read back through the permutation, equals the half-split one
    back = unpermute_qk(rot.reshape(n_head * D, 1), n_head).view(n_head, D)
    torch.testing.assert_close(back, hf_rot, atol=1e-6, rtol=1e-6)


def test_save_load_round_trip_and_hf_folder(tmp_path):
    hf = _hf_tiny(True, 2, seed=5)
    model = _dodai_from_hf(hf)
    model.save(tmp_path / "ours")
    again = load_llama_dir(tmp_path / "ours")
    hf.save_pretrained(tmp_path / "hf")  # HF config.json + model.safetensors with HF names
    from_hf = load_llama_dir(tmp_path / "hf")
    idx = torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        a, b, c = model(idx)[0], again(idx)[0], from_hf(idx)[0]
    assert torch.equal(a, b)
    torch.testing.assert_close(c, a, atol=1e-6, rtol=1e-6)
    assert again.output.weight is again.tok_embeddings.weight  # the tie survives a round trip


def test_bf16_runs_close_to_fp32():
    hf = _hf_tiny(False, 2, seed=6)
    model = _dodai_from_hf(hf)
    m16 = Llama.from_hf_state_dict(model.config, hf.state_dict(), dtype=torch.bfloat16)
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        a = model(idx)[0]
        b = m16(idx)[0]
    assert b.dtype == torch.bfloat16
    assert (a - b.float()).abs().max() < 0.1 * a.abs().max()


@pytest.mark.parametrize("bad", [dict(n_head=3, n_kv_head=2), dict(n_layer=0), dict(n_embd=30, n_head=4),
                                 dict(rope_theta=-1.0), dict(vocab_size="9")])
def test_bad_config_is_dodai_error(bad):
    base = dict(vocab_size=10, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=8)
    base.update(bad)
    with pytest.raises(DodaiError):
        Llama(LlamaConfig(**base))


def test_context_overflow_and_bad_input_are_dodai_errors():
    model = Llama(LlamaConfig(vocab_size=10, block_size=8, n_layer=1, n_embd=16, n_head=2, n_kv_head=1,
                              ffn_hidden=8))
    with pytest.raises(DodaiError):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(DodaiError):
        model(torch.zeros(9, dtype=torch.long))
    with pytest.raises(DodaiError):
        LlamaConfig.from_hf_config({"hidden_size": 8})
    with pytest.raises(DodaiError):
        LlamaConfig.from_gguf_metadata({"general.architecture": "gpt2"})


def _tiny_gguf(tmp_path, hf, quant_embd=False):
    """Write a tiny llama GGUF the way llama.cpp's converter does: permuted Q/K rows, llama.* keys."""
    from dodai.weights.gguf import write_gguf

    c = hf.config
    sd = hf.state_dict()
    md = {"general.architecture": "llama", "llama.context_length": c.max_position_embeddings,
          "llama.embedding_length": c.hidden_size, "llama.block_count": c.num_hidden_layers,
          "llama.feed_forward_length": c.intermediate_size, "llama.attention.head_count": c.num_attention_heads,
          "llama.attention.head_count_kv": c.num_key_value_heads, "llama.rope.freq_base": 5000.0,
          "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": c.vocab_size}
    t = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not c.tie_word_embeddings:
        t["output.weight"] = sd["lm_head.weight"]
    for i in range(c.num_hidden_layers):
        h = f"model.layers.{i}."
        t.update({
            f"blk.{i}.attn_norm.weight": sd[h + "input_layernorm.weight"],
            f"blk.{i}.attn_q.weight": permute_qk(sd[h + "self_attn.q_proj.weight"], c.num_attention_heads),
            f"blk.{i}.attn_k.weight": permute_qk(sd[h + "self_attn.k_proj.weight"], c.num_key_value_heads),
            f"blk.{i}.attn_v.weight": sd[h + "self_attn.v_proj.weight"],
            f"blk.{i}.attn_output.weight": sd[h + "self_attn.o_proj.weight"],
            f"blk.{i}.ffn_norm.weight": sd[h + "post_attention_layernorm.weight"],
            f"blk.{i}.ffn_gate.weight": sd[h + "mlp.gate_proj.weight"],
            f"blk.{i}.ffn_up.weight": sd[h + "mlp.up_proj.weight"],
            f"blk.{i}.ffn_down.weight": sd[h + "mlp.down_proj.weight"],
        })
    path = tmp_path / "tiny.gguf"
    write_gguf(path, md, t)
    return path


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_load_undoes_the_qk_permutation(tmp_path, tie):
    from dodai.models.llama import read_llama_gguf

    hf = _hf_tiny(tie, 2, seed=7)
    model = read_llama_gguf(_tiny_gguf(tmp_path, hf))
    assert model.config.tie_embeddings == tie
    idx = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
    m16 = read_llama_gguf(tmp_path / "tiny.gguf", dtype=torch.bfloat16)
    assert m16.tok_embeddings.weight.dtype == torch.bfloat16


def test_gguf_missing_tensor_and_wrong_arch(tmp_path):
    from dodai.models.llama import read_llama_gguf
    from dodai.weights.gguf import GGUFFile, write_gguf

    hf = _hf_tiny(True, 2, seed=8)
    path = _tiny_gguf(tmp_path, hf)
    with GGUFFile(path) as g:
        md = dict(g.metadata)
        tensors = {n: g.load(n) for n in g.tensors if n != "blk.1.ffn_up.weight"}
    write_gguf(tmp_path / "missing.gguf", md, tensors)
    with pytest.raises(DodaiError, match="blk.1.ffn_up.weight"):
        read_llama_gguf(tmp_path / "missing.gguf")
    write_gguf(tmp_path / "arch.gguf", {**md, "general.architecture": "falcon"}, tensors)
    with pytest.raises(DodaiError, match="falcon"):
        read_llama_gguf(tmp_path / "arch.gguf")
