"""T5 (R6.3): relative position buckets, parity with HF T5ForConditionalGeneration, cached decoding."""

from __future__ import annotations

import pytest
import torch

from dodai.nn.relative_bias import RelativePositionBias, relative_position_bucket, relative_position_bucket_reference


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second OpenMP thread only adds contention on a busy 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (4, 4)])
def test_bucket_vectorised_equals_reference(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-300, 301)
    got = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    want = [relative_position_bucket_reference(int(r), bidirectional, num_buckets, max_distance) for r in rel]
    assert got.tolist() == want
    assert int(got.min()) >= 0 and int(got.max()) < num_buckets


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bucket_equals_hf(bidirectional):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-500, 501)[:, None] - torch.zeros(1, 3, dtype=torch.long)
    want = t5.T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert torch.equal(relative_position_bucket(rel, bidirectional, 32, 128), want)


def test_bucket_properties():
    rel = torch.arange(-1000, 1001)
    causal = relative_position_bucket(rel, False, 32, 128)
    assert (causal[rel >= 0] == 0).all()  # future keys (masked anyway) collapse onto distance 0
    d = -rel[rel <= 0].flip(0)  # distances 0, 1, 2, ...
    b = causal[rel <= 0].flip(0)
    assert (b[1:] >= b[:-1]).all()  # monotone in distance
    assert b[:16].tolist() == list(range(16))  # the first half of the buckets is exact
    assert (b[d >= 128] == 31).all()  # everything beyond max_distance shares the last bucket
    bi = relative_position_bucket(rel, True, 32, 128)
    assert set(bi[rel > 0].tolist()).isdisjoint(bi[rel <= 0].tolist())  # left and right never share


def test_relative_bias_offset_rows_equal_full_rows():
    torch.manual_seed(0)
    rb = RelativePositionBias(n_heads=3, num_buckets=16, max_distance=40, bidirectional=False)
    full = rb(50, 50)  # (1, H, 50, 50)
    assert full.shape == (1, 3, 50, 50)
    assert torch.equal(rb(4, 50, offset=46), full[:, :, 46:])
    assert torch.equal(rb(1, 23, offset=22), full[:, :, 22:23, :23])


# ---------------------------------------------------------------------------- the model

from dodai.errors import DodaiError  # noqa: E402
from dodai.models.t5 import T5, T5Config, _dodai_keys, dodai_to_hf, hf_to_dodai  # noqa: E402


def _cfg(ffn="relu", tie=True, n_dec=3, **kw):
    base = dict(vocab_size=50, d_model=16, d_kv=6, d_ff=24, n_layer=2, n_decoder_layer=n_dec, n_head=3,
                num_buckets=8, max_distance=20, dropout=0.0, ffn=ffn, tie_word_embeddings=tie)
    base.update(kw)
    return T5Config(**base)


def _pair(cfg, dtype=torch.float32, seed=0):
    """A dodai T5 and an HF T5ForConditionalGeneration holding the same random weights."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    m = T5(cfg).to(dtype).eval()
    hm = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf())).to(dtype).eval()
    if not cfg.tie_word_embeddings:
        # transformers 5 always ties lm_head to the shared embedding for T5 (only the C^-0.5 rescale follows
        # tie_word_embeddings); v1.1 checkpoints have their own head, so untie it before loading.
        hm.lm_head.weight = torch.nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model, dtype=dtype))
    hm.load_state_dict(dodai_to_hf(m.state_dict(), cfg), strict=True)
    return m, hm


def _batch(seed=1, b=3, s=9, t=6, v=50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, v, (b, s), generator=g)
    am = torch.ones(b, s, dtype=torch.long)
    am[1, 6:] = 0  # a padded row
    am[2, 3:] = 0
    y = torch.randint(2, v, (b, t), generator=g)
    y[2, 4:] = -100  # ignored label positions
    return x, am, y


def test_config_from_hf_round_trip():
    transformers = pytest.importorskip("transformers")
    for cfg in (_cfg(), _cfg("gated-gelu", tie=False, n_dec=1)):
        assert T5Config.from_hf(transformers.T5Config(**cfg.to_hf()).to_dict()) == cfg
    # a raw v1.1 config.json (as on the Hub) says tie_word_embeddings: false
    raw = {"vocab_size": 10, "d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2,
           "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    assert T5Config.from_hf(raw).tie_word_embeddings is False


def test_param_names_match_the_mapping():
    for cfg in (_cfg(), _cfg("gated-gelu", tie=False)):
        assert sorted(_dodai_keys(cfg)) == sorted(T5(cfg).state_dict())


@pytest.mark.parametrize("ffn,tie", [("relu", True), ("gated-gelu", False)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_logits_and_loss_equal_hf(ffn, tie, dtype, tol):
    m, hm = _pair(_cfg(ffn, tie), dtype)
    x, am, y = _batch()
    logits, loss = m(x, labels=y, attention_mask=am)
    out = hm(input_ids=x, attention_mask=am, labels=y)
    torch.testing.assert_close(logits, out.logits, atol=tol, rtol=tol)
    torch.testing.assert_close(loss, out.loss.to(loss.dtype), atol=tol, rtol=tol)
    # HF -> dodai names round trip too
    hf_sd = hm.state_dict()
    m2 = T5(_cfg(ffn, tie)).to(dtype).eval()
    m2.load_hf_state_dict(hf_sd)
    torch.testing.assert_close(m2(x, labels=y, attention_mask=am)[0], logits, atol=0, rtol=0)


@pytest.mark.parametrize("ffn,tie", [("relu", True), ("gated-gelu", False)])
def test_greedy_generate_equals_hf(ffn, tie):
    # HF's generate cache is sized by num_layers, so equal encoder/decoder depth here
    cfg = _cfg(ffn, tie, n_dec=2)
    m, hm = _pair(cfg, torch.float64, seed=3)
    x, am, _ = _batch(seed=4)
    ours = m.generate_greedy(x, 10, attention_mask=am)
    theirs = hm.generate(input_ids=x, attention_mask=am, max_new_tokens=10, do_sample=False)
    assert ours.tolist() == theirs.tolist()
    # an EOS that some rows emit early: finished rows are padded exactly as HF pads them
    eos = int(ours[0, 2])
    cfg_eos = _cfg(ffn, tie, n_dec=2, eos_id=eos)
    m.config = cfg_eos
    hm.generation_config.eos_token_id = eos
    ours = m.generate_greedy(x, 10, attention_mask=am)
    theirs = hm.generate(input_ids=x, attention_mask=am, max_new_tokens=10, do_sample=False, eos_token_id=eos)
    assert (ours == eos).any()
    assert ours.tolist() == theirs.tolist()


def test_cached_decoding_equals_uncached():
    torch.manual_seed(5)
    cfg = _cfg("gated-gelu", tie=False, n_dec=3, max_distance=6, num_buckets=6)  # decoding passes max_distance
    m = T5(cfg).double().eval()
    x, am, _ = _batch(seed=6)
    a = m.generate_greedy(x, 16, attention_mask=am, use_cache=True)
    b = m.generate_greedy(x, 16, attention_mask=am, use_cache=False)
    assert a.tolist() == b.tolist()
    # and the logits step by step
    memory = m.encode(x, am)
    cache, cross = m.start_decoding(memory, a.shape[1])
    full = m.decode(a, memory, am)  # (B, T, V), no cache
    steps = [m.decode(a[:, i:i + 1], memory, am, cache=cache, cross_kv=cross) for i in range(a.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=1e-12)


def test_padding_does_not_change_real_rows():
    torch.manual_seed(7)
    m = T5(_cfg()).double().eval()
    x, am, y = _batch(seed=8)
    lg, _ = m(x, labels=y, attention_mask=am)
    alone, _ = m(x[1:2, :6], labels=y[1:2])  # row 1 without its padding
    torch.testing.assert_close(lg[1:2], alone, atol=1e-12, rtol=1e-12)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(9)
    m = T5(_cfg("gated-gelu", tie=False)).eval()
    m.save(tmp_path / "t5")
    m2 = T5.load(tmp_path / "t5").eval()
    x, am, y = _batch()
    torch.testing.assert_close(m2(x, labels=y, attention_mask=am)[0], m(x, labels=y, attention_mask=am)[0],
                               atol=0, rtol=0)


def test_hostile_configs_and_inputs(tmp_path):
    with pytest.raises(DodaiError):
        T5Config(ffn="swiglu")
    with pytest.raises(DodaiError):
        T5Config(d_model=0)
    with pytest.raises(DodaiError):
        T5Config.from_dict({"d_model": 8, "bogus": 1})
    m = T5(_cfg())
    with pytest.raises(DodaiError):
        m(torch.zeros(5, dtype=torch.long), labels=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(DodaiError):
        m(torch.zeros(1, 5, dtype=torch.long))  # neither labels nor decoder inputs
    with pytest.raises(DodaiError):
        hf_to_dodai({"encoder.block.0.layer.9.nonsense.weight": torch.zeros(1)}, m.config)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(DodaiError):
        T5.load(tmp_path / "bad")
    m.save(tmp_path / "ok")
    raw = (tmp_path / "ok" / "model.safetensors").read_bytes()
    (tmp_path / "ok" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DodaiError):
        T5.load(tmp_path / "ok")


def test_shift_right_and_init_scale():
    m = T5(_cfg())
    y = torch.tensor([[5, 6, 7, -100]])
    assert m.shift_right(y).tolist() == [[0, 5, 6, 7]]
    # no 1/sqrt(D) in attention: W_q carries it, so at init q.k has about the spread of a scaled dot product
    big = T5(T5Config(d_model=256, d_kv=64, d_ff=64, n_layer=1, n_head=4, vocab_size=10))
    assert abs(big.encoder.layers[0].attn.q.weight.std().item() - (256 * 64) ** -0.5) < 0.1 * (256 * 64) ** -0.5
