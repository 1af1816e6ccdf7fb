"""Gemma 3 on dodai's shared decoder, tiny random configs: parity with HF ``Gemma3ForCausalLM``, the GGUF
loader, caches (rolling, full, paged) and left-padded batches against the uncached / one-by-one oracles,
fast path against the reference path, weight formats. The real 270M model: tests/test_gemma3_real.py."""

from __future__ import annotations

import copy

import pytest
import torch

from dodai.errors import DodaiError
from dodai.models.gemma3 import Gemma3, Gemma3Config, gguf_name_map
from dodai.nn.kv_cache import KVCache
from dodai.nn.rolling_cache import RollingKVCache

transformers = pytest.importorskip("transformers")

V, W = 101, 5  # vocab, sliding window: every test sequence is longer than W, so local layers drop keys


def hf_tiny(seed=0, tie=True, n_layer=7, scaling=None, final_softcap=None, attn_softcap=None, scalar=12):
    full = {"rope_type": "default", "rope_theta": 1e6}
    if scaling:
        full = {"rope_type": "linear", "factor": scaling, "rope_theta": 1e6}
    cfg = transformers.Gemma3TextConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=n_layer, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=128, sliding_window=W,
        query_pre_attn_scalar=scalar, rms_norm_eps=1e-6, tie_word_embeddings=tie, initializer_range=0.2,
        final_logit_softcapping=final_softcap, attn_logit_softcapping=attn_softcap, pad_token_id=0,
        rope_parameters={"full_attention": full, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    torch.manual_seed(seed)
    hf = transformers.Gemma3ForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():  # HF initialises Gemma's norms at 0 (scale 1): perturb them so a swapped norm shows
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return hf


def ours_from(hf) -> Gemma3:
    return Gemma3.from_hf_state_dict(Gemma3Config.from_hf_config(hf.config.to_dict()), hf.state_dict())


def ids_(b, t, seed=1):
    return torch.randint(1, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [dict(), dict(tie=False), dict(scaling=4.0), dict(final_softcap=3.0),
                                dict(attn_softcap=2.0, scalar=16)])  # HF's Gemma 3 ignores attn softcapping
def test_hf_parity(kw):
    hf = hf_tiny(**kw)
    model = ours_from(hf)
    c = model.config
    assert c.layer_types == ("local",) * 5 + ("global", "local") and c.sliding_window == W
    idx, targets = ids_(2, 23), ids_(2, 23, seed=2)
    with torch.no_grad():
        ref = hf(idx).logits
        fast, loss = model(idx, targets)
        eager, _ = copy.deepcopy(model).set_eager(True)(idx)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(ref.reshape(-1, V), targets.reshape(-1)),
                               atol=1e-5, rtol=1e-5)
    back = model.to_hf_state_dict()
    for k, v in hf.state_dict().items():
        if k in back:
            assert torch.equal(back[k], v), k


def test_each_gemma_feature_changes_the_function():
    """A demonstration that the parity above is not vacuous: turning any one Gemma feature off moves the logits."""
    hf = hf_tiny()
    model = ours_from(hf)
    idx = ids_(1, 23)
    with torch.no_grad():
        ref = model(idx)[0]
        for change in [dict(sliding_window=64), dict(rope_theta_local=1e6), dict(qk_norm=False), dict(post_norms=False),
                       dict(embed_scale=False), dict(act="silu"), dict(attn_scale=16.0), dict(norm_offset=0.0)]:
            cfg = copy.deepcopy(model.config)
            for k, v in change.items():
                setattr(cfg, k, v)
            other = Gemma3(cfg)
            other.load_state_dict(model.state_dict(), strict=False)
            assert (other(idx)[0] - ref).abs().max() > 1e-3, change


def _tiny_gguf(tmp_path, hf, name="tiny.gguf", **extra):
    """A tiny gemma3 GGUF written the way llama.cpp's converter does (norms stored as 1 + g, no Q/K permutation),
    with a small SentencePiece vocabulary so that load_model can build the tokenizer too."""
    from dodai.weights.gguf import write_gguf

    c = hf.config
    ours = ours_from(hf)
    sd = ours.state_dict()
    tensors = {}
    for g, o in gguf_name_map(ours.config).items():
        t = sd[o]
        tensors[g] = t + 1.0 if g.endswith("norm.weight") else t
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(V - 4)]
    md = {"general.architecture": "gemma3", "gemma3.context_length": c.max_position_embeddings,
          "gemma3.embedding_length": c.hidden_size, "gemma3.block_count": c.num_hidden_layers,
          "gemma3.feed_forward_length": c.intermediate_size, "gemma3.attention.head_count": c.num_attention_heads,
          "gemma3.attention.head_count_kv": c.num_key_value_heads, "gemma3.attention.key_length": c.head_dim,
          "gemma3.attention.value_length": c.head_dim, "gemma3.rope.freq_base": 1e6,
          "gemma3.attention.sliding_window": W, "gemma3.attention.layer_norm_rms_epsilon": 1e-6,
          "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.scores": [-1000.0] * 4 + [-float(i) for i in range(V - 4)],
          "tokenizer.ggml.token_type": [3] * 4 + [1] * (V - 4), "tokenizer.ggml.bos_token_id": 2,
          "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.unknown_token_id": 3,
          "tokenizer.ggml.padding_token_id": 0, **extra}
    path = tmp_path / name
    write_gguf(path, md, tensors, types={"tokenizer.ggml.token_type": "array[int32]"})
    return path


def test_gguf_file_loads_through_load_model(tmp_path):
    from dodai.models import load_model

    hf = hf_tiny(seed=3, n_layer=6)
    model, tok = load_model(str(_tiny_gguf(tmp_path, hf)))
    assert isinstance(model, Gemma3) and model.config.tie_embeddings
    # the query scalar the file does not name is the head size (llama.cpp): 16 here, not HF's 12
    assert model.config.attn_scale == 16.0 and model.config.layer_types[5] == "global"
    idx = ids_(2, 19)
    hf.config.query_pre_attn_scalar = 16
    ref_model = transformers.Gemma3ForCausalLM._from_config(hf.config, attn_implementation="eager").eval()
    ref_model.load_state_dict(hf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], ref_model(idx).logits, atol=1e-5, rtol=1e-5)
    # pieces: a..z = 4..29, aa..zz = 30..55, …; no "▁" and no byte pieces, so a space is the unknown id 3
    assert tok.encode("aab zz") == [30, 5, 3, 55] and tok.bos_id == 2 and tok.add_bos
    m16, _ = load_model(str(tmp_path / "tiny.gguf"), dtype=torch.bfloat16)
    assert m16.tok_embeddings.weight.dtype == torch.bfloat16


def test_gguf_pattern_and_local_base_from_metadata(tmp_path):
    from dodai.models import load_model

    hf = hf_tiny(seed=4, n_layer=4)
    path = _tiny_gguf(tmp_path, hf, **{"gemma3.attention.sliding_window_pattern": [True, False, True, False],
                                      "gemma3.rope.freq_base_swa": 5000.0})
    model, _ = load_model(str(path))
    assert model.config.layer_types == ("local", "global", "local", "global")
    assert model.config.rope_theta_local == 5000.0


def _decode(model, ids, cache, chunks):
    parts = []
    with torch.no_grad():
        for a, b in chunks:
            parts.append(model(ids[:, a:b], cache=cache)[0])
    return torch.cat(parts, 1)


CHUNKS = [(0, 7), (7, 8), (8, 15), (15, 16), (16, 17), (17, 23)]  # chunks longer and shorter than W, after a past


@pytest.mark.parametrize("eager", [False, True])
def test_every_cache_equals_uncached(eager):
    from dodai.nn.paged_cache import BlockPool, PagedKVCache

    model = ours_from(hf_tiny(seed=5)).set_eager(eager)
    c = model.config
    ids = ids_(2, 23, seed=6)
    with torch.no_grad():
        full, _ = model(ids)
    rolling = model.new_cache(2, 23)
    assert isinstance(rolling, RollingKVCache)
    caches = [rolling, KVCache(c.n_layer, 2, c.n_kv_head, 23, c.head_dim),
              PagedKVCache(BlockPool.for_model(model, num_blocks=16, block_size=4), 2)]
    for cache in caches:
        torch.testing.assert_close(_decode(model, ids, cache, CHUNKS), full, atol=1e-5, rtol=1e-5)
    assert rolling.k[0].shape[2] == W and rolling.k[5].shape[2] == 23  # local: W slots, global: the context
    assert rolling.nbytes() < caches[1].nbytes()


def test_one_token_decode_after_long_prefill_uses_only_the_window():
    model = ours_from(hf_tiny(seed=7))
    ids = ids_(1, 30, seed=8)
    with torch.no_grad():
        full, _ = model(ids)
    out = _decode(model, ids, model.new_cache(1, 30), [(0, 20)] + [(t, t + 1) for t in range(20, 30)])
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def _padded(prompts):
    from dodai.nn.padding import left_pad

    return left_pad(prompts, pad_id=0)


@pytest.mark.parametrize("eager", [False, True])
def test_left_padded_forward_equals_each_row_alone(eager):
    model = ours_from(hf_tiny(seed=9)).set_eager(eager)
    prompts = [ids_(1, n, seed=n)[0].tolist() for n in (17, 4, 11)]
    ids, mask = _padded(prompts)
    with torch.no_grad():
        batched, _ = model(ids, attention_mask=mask)
        for b, p in enumerate(prompts):
            alone, _ = model(torch.tensor([p]))
            torch.testing.assert_close(batched[b, -len(p):], alone[0], atol=1e-5, rtol=1e-5)


def test_left_padded_forward_matches_hf():
    hf = hf_tiny(seed=10)
    model = ours_from(hf)
    prompts = [ids_(1, n, seed=n)[0].tolist() for n in (16, 3, 9)]
    ids, mask = _padded(prompts)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask.long()).logits
        ours, _ = model(ids, attention_mask=mask)
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("paged", [False, True])
def test_left_padded_generation_equals_one_by_one(paged):
    from dodai.generate.batch import generate_batch
    from dodai.generate.processors import LogitsPipeline
    from dodai.nn.paged_cache import BlockPool

    model = ours_from(hf_tiny(seed=11))
    prompts = [ids_(1, n, seed=20 + n)[0].tolist() for n in (9, 2, 6)]
    pipe = LogitsPipeline(temperature=0.0)
    pool = BlockPool.for_model(model, num_blocks=32, block_size=4) if paged else None
    batched = [c.ids for c in generate_batch(model, prompts, 10, pipe, pad_id=0, pool=pool)]
    alone = [generate_batch(model, [p], 10, pipe)[0].ids for p in prompts]
    assert batched == alone and all(len(x) == 10 for x in batched)


def test_padded_decode_through_the_rolling_cache_equals_uncached():
    model = ours_from(hf_tiny(seed=12))
    prompts = [ids_(1, n, seed=30 + n)[0].tolist() for n in (12, 5)]
    ids, mask = _padded(prompts)
    extra = ids_(2, 6, seed=13)
    full_ids = torch.cat([ids, extra], 1)
    full_mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.bool)], 1)
    with torch.no_grad():
        full, _ = model(full_ids, attention_mask=full_mask)
        cache = model.new_cache(2, full_ids.shape[1])
        parts = [model(ids, cache=cache, attention_mask=mask)[0]]
        parts += [model(extra[:, t:t + 1], cache=cache)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(parts, 1)[full_mask], full[full_mask], atol=1e-5, rtol=1e-5)


def test_rolling_cache_refuses_rows_with_holes():
    model = ours_from(hf_tiny(seed=14))
    ids = ids_(1, 12)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 6] = False  # padding between real tokens: only a full cache can place the window then
    with torch.no_grad():
        cache = model.new_cache(1, 20)
        model(ids, cache=cache, attention_mask=mask)
        with pytest.raises(DodaiError, match="rolling"):
            model(ids[:, :1], cache=cache)
        full = KVCache(7, 1, 2, 20, 16)
        model(ids, cache=full, attention_mask=mask)
        model(ids[:, :1], cache=full)  # a full cache serves it


def test_fast_decode_equals_reference_path():
    model = ours_from(hf_tiny(seed=15))
    ref = copy.deepcopy(model).set_eager(True)
    ids = ids_(2, 21, seed=16)
    chunks = [(0, 9)] + [(t, t + 1) for t in range(9, 21)]
    with torch.inference_mode():
        fast = _decode(model, ids, model.new_cache(2, 21), chunks)
    slow = _decode(ref, ids, ref.new_cache(2, 21), chunks)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert model.layers[0].attn.__dict__.get("_qkv") is not None  # the fused path ran
    assert ref.layers[0].attn.__dict__.get("_qkv") is None


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4"])
def test_weight_formats_fast_path_equals_reference(fmt):
    """Gemma through dodai.quant: the fused quantized matmuls equal the separate ones (the quality of each format
    is measured on the real model, tests/test_gemma3_formats.py; random tiny weights say nothing about it)."""
    from dodai.quant.int8 import quantize_model

    model = ours_from(hf_tiny(seed=17))
    ids = ids_(1, 15, seed=18)
    q = quantize_model(copy.deepcopy(model), fmt)
    with torch.no_grad():
        a = model(ids)[0]
        b = q(ids)[0].float()
        eager = copy.deepcopy(q).set_eager(True)(ids)[0].float()
    assert torch.isfinite(b).all() and (a - b).abs().max() > 0  # the format really changed the weights
    assert (b - eager).abs().max() < 0.03 * b.abs().max(), fmt
    if fmt == "int8":
        assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_save_and_load_folder(tmp_path):
    from dodai.models import load_decoder_dir

    model = ours_from(hf_tiny(seed=19))
    model.save(tmp_path / "g")
    again = load_decoder_dir(tmp_path / "g", "gemma3")
    ids = ids_(1, 9)
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], model(ids)[0])
    assert again.config == model.config


@pytest.mark.parametrize("bad", [dict(layer_types=("local",) * 3), dict(layer_types=("local",) * 7, sliding_window=0),
                                 dict(act="relu"), dict(attn_scale=-1.0), dict(final_softcap=float("nan")),
                                 dict(layer_types=("sliding",) * 7)])
def test_bad_config_is_dodai_error(bad):
    base = dict(vocab_size=10, n_layer=7, n_embd=32, n_head=2, n_kv_head=1, head_dim=16, ffn_hidden=8)
    base.update(bad)
    with pytest.raises(DodaiError):
        Gemma3Config(**base)


@pytest.mark.parametrize("eager", [False, True])
def test_padding_inside_a_row_counts_real_tokens_in_the_window(eager):
    """A row with padding *between* real tokens (a runtime's ragged view) sees, at every real position, what
    the row without the padding sees: local windows count positions (real tokens), not cache columns; with no
    cache and with a full cache filled chunk by chunk."""
    model = ours_from(hf_tiny(seed=21)).set_eager(eager)
    c = model.config
    seq = ids_(1, 16, seed=22)
    holes = [4, 9, 10]  # padding columns inserted before these real tokens
    cols, mask = [], []
    for i, t in enumerate(seq[0].tolist()):
        if i in holes:
            cols.append(0)
            mask.append(False)
        cols.append(t)
        mask.append(True)
    ids_h, mask = torch.tensor([cols]), torch.tensor([mask])
    with torch.no_grad():
        plain, _ = model(seq)
        holed, _ = model(ids_h, attention_mask=mask)
        cache = KVCache(c.n_layer, 1, c.n_kv_head, ids_h.shape[1], c.head_dim)
        parts = [model(ids_h[:, a:b], cache=cache, attention_mask=mask[:, :b])[0]
                 for a, b in [(0, 7), (7, 8), (8, 14), (14, ids_h.shape[1])]]
    torch.testing.assert_close(holed[mask], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(parts, 1)[mask], plain[0], atol=1e-5, rtol=1e-5)
