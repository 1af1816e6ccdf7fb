"""Weight formats: int8 per-channel quantization, Int8Linear fast == reference, quantize_model, perplexity,
and the 1 % perplexity bound for every offered format on SmolLM2 (the rule that decides what dodai offers)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.cli import main
from dodai.errors import DodaiError
from dodai.generate.sampling import generate, generate_uncached
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.llama import Llama, LlamaConfig
from dodai.quant import FORMATS, MAX_PPL_INCREASE, OFFERED_FORMATS
from dodai.quant.int8 import (
    Int8Linear,
    dequantize_per_channel,
    int8_linear_fast,
    int8_linear_reference,
    quantize_model,
    quantize_per_channel,
    weight_bytes,
)
from dodai.quant.perplexity import format_perplexities, heldout_ids, perplexity


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy 2-core machine stalls two-thread ops)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_llama(seed=0, vocab=48):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=vocab, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                          ffn_hidden=64))
    with torch.no_grad():  # larger weights than the 0.02 init, so logits differ between tokens
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m.eval()


# ---- per-channel quantization ---------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 40), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_quantize_per_channel_error_is_at_most_half_a_step(n, k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * scale
    q, s = quantize_per_channel(w)
    assert q.dtype == torch.int8 and q.shape == (n, k) and s.shape == (n,)
    assert int(q.min()) >= -127 and int(q.max()) <= 127  # symmetric grid, -128 unused
    # each row's largest |w| maps to ±127 exactly (absmax scaling uses the full range)
    assert torch.equal(q.abs().amax(dim=1).long(), torch.full((n,), 127))
    err = (dequantize_per_channel(q, s) - w).abs()
    assert (err <= s[:, None] / 2 * (1 + 1e-5) + 1e-12).all()


def test_quantize_zero_rows_and_bad_input():
    w = torch.zeros(3, 5)
    w[1] = torch.tensor([1.0, -2.0, 0.5, 0.0, 2.0])
    q, s = quantize_per_channel(w)
    assert torch.equal(q[0], torch.zeros(5, dtype=torch.int8)) and float(s[0]) == 1.0
    assert q[1].tolist() == [64, -127, 32, 0, 127]  # round(1 / (2/127)) = round(63.5) -> 64 (half to even)
    with pytest.raises(DodaiError):
        quantize_per_channel(torch.ones(4))
    with pytest.raises(DodaiError):
        quantize_per_channel(torch.tensor([[1.0, float("nan")]]))


# ---- Int8Linear ---------------------------------------------------------------------------------

def test_reference_path_is_plain_linear_with_dequantized_weight():
    torch.manual_seed(1)
    lin = torch.nn.Linear(40, 24, bias=True)
    q, s = quantize_per_channel(lin.weight)
    x = torch.randn(3, 5, 40)
    expect = F.linear(x, dequantize_per_channel(q, s), lin.bias)
    torch.testing.assert_close(int8_linear_reference(x, q, s, lin.bias), expect, rtol=0, atol=0)
    # and the int8 weight is a close approximation of the fp32 layer
    rel = (expect - lin(x)).norm() / lin(x).norm()
    assert rel < 0.02


@pytest.mark.skipif(not hasattr(torch, "_weight_int8pack_mm"), reason="this torch has no _weight_int8pack_mm")
@pytest.mark.parametrize("bias", [False, True])
def test_fast_path_equals_reference(bias):
    torch.manual_seed(2)
    lin = torch.nn.Linear(96, 64, bias=bias)
    m = Int8Linear.from_linear(lin)
    assert m.fast
    for shape in [(1, 96), (2, 7, 96), (33, 96)]:
        x = torch.randn(*shape)
        fast = m(x)
        ref = int8_linear_reference(x, m.qweight, m.scale, m.bias)
        assert fast.dtype == x.dtype and fast.shape == ref.shape
        # the fast kernel takes bf16 activations and scales: bf16 rounding (2^-8 relative) is the gap
        torch.testing.assert_close(fast, ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))
        direct = int8_linear_fast(x, m.qweight, m.scale_bf16, m.bias)
        assert torch.equal(direct, fast)


@pytest.mark.parametrize("k", [8, 24, 40])
def test_input_widths_the_kernel_cannot_take_use_the_reference(k):
    """_weight_int8pack_mm segfaults when K is not a multiple of 16: such layers must never reach it."""
    torch.manual_seed(k)
    lin = torch.nn.Linear(k, 27)
    mod = Int8Linear.from_linear(lin)
    assert not mod.fast
    x = torch.randn(4, k)
    torch.testing.assert_close(mod(x), int8_linear_reference(x, mod.qweight, mod.scale, mod.bias))


def test_int8linear_rejects_wrong_width():
    m = Int8Linear.from_linear(torch.nn.Linear(8, 4, bias=False))
    with pytest.raises(DodaiError):
        m(torch.randn(2, 9))


# ---- quantize_model ------------------------------------------------------------------------------

def test_quantize_model_formats_on_a_tiny_llama():
    base = tiny_llama()
    x = torch.randint(0, 48, (2, 12))
    with torch.no_grad():
        ref, _ = base(x)
        m8 = quantize_model(tiny_llama(), "int8")
        n_lin = sum(isinstance(mod, torch.nn.Linear) for mod in m8.modules())
        n_int8 = sum(isinstance(mod, Int8Linear) for mod in m8.modules())
        assert n_lin == 0 and n_int8 == 2 * 7 + 1  # 7 projections per block + the (tied) output head
        assert m8.tok_embeddings.weight.dtype == torch.float32
        out8, _ = m8(x)
        mb = quantize_model(tiny_llama(), "bf16")
        assert all(p.dtype == torch.bfloat16 for p in mb.parameters())
        outb, _ = mb(x)
    for out in (out8, outb.float()):
        rel = (out - ref).norm() / ref.norm()
        assert rel < 0.05, rel
        assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    assert weight_bytes(m8) < 0.6 * weight_bytes(base)  # the embedding stays fp32 at this tiny size
    with pytest.raises(DodaiError):
        quantize_model(m8, "fp32")  # no silent double rounding
    with pytest.raises(DodaiError):
        quantize_model(tiny_llama(), "int3")


def test_int8_model_cached_equals_uncached_generation():
    m = quantize_model(tiny_llama(3), "int8")
    prompt = [1, 7, 3, 9]
    assert list(generate(m, prompt, 12, temperature=0.0)) == list(generate_uncached(m, prompt, 12, temperature=0.0))


def test_quantize_model_on_gpt_with_biases():
    torch.manual_seed(4)
    g = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    x = torch.randint(0, 30, (1, 10))
    with torch.no_grad():
        ref, _ = g(x)
        out, _ = quantize_model(g, "int8")(x)
    assert any(isinstance(mod, Int8Linear) and mod.bias is not None for mod in g.modules())
    assert (out - ref).norm() / ref.norm() < 0.05


# ---- perplexity --------------------------------------------------------------------------------

def test_perplexity_equals_cross_entropy_and_windows_count_each_token_once():
    m = tiny_llama(5)
    ids = torch.randint(0, 48, (40,))
    with torch.no_grad():
        logits, _ = m(ids[None])
        ce = F.cross_entropy(logits[0, :-1], ids[1:]).item()
    r = perplexity(m, ids.tolist())
    assert r["tokens"] == 39
    assert math.isclose(r["nll"], ce, rel_tol=1e-5) and math.isclose(r["ppl"], math.exp(ce), rel_tol=1e-5)
    for w in (3, 16, 39, 40):
        rw = perplexity(m, ids, window=w)
        assert rw["tokens"] == 39
    # shorter windows mean less context: on this random model that changes the figure (not a no-op)
    assert perplexity(m, ids, window=3)["nll"] != pytest.approx(ce, rel=1e-6)
    with pytest.raises(DodaiError):
        perplexity(m, [3])


def test_format_perplexities_leaves_the_model_alone():
    m = tiny_llama(6)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = format_perplexities(m, list(range(30)), FORMATS)
    assert set(res) == set(FORMATS) and res["fp32"]["vs_fp32"] == 0.0
    assert res["int8"]["weight_bytes"] < res["fp32"]["weight_bytes"]
    assert res["bf16"]["weight_bytes"] == res["fp32"]["weight_bytes"] // 2
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(isinstance(mod, torch.nn.Linear) for mod in [m.output, m.layers[0].attn.wq])


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    from dodai.tokenizers.char import CharTokenizer

    d = tmp_path_factory.mktemp("ppl_run")
    text = "the quick brown fox jumps over the lazy dog. " * 4
    tok = CharTokenizer.train(text)
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).save(d)
    tok.save(d)
    (d / "text.txt").write_text(text, encoding="utf-8")
    return d


def test_ppl_command_json_and_errors(gpt_dir, capsys):
    rc = main(["ppl", "--model", str(gpt_dir), "--text", str(gpt_dir / "text.txt"), "--tokens", "100",
               "--window", "32", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["formats"]) == set(FORMATS)
    for fmt, r in out["formats"].items():
        assert r["tokens"] == 99 and r["ppl"] > 1 and r["offered"] == (fmt in OFFERED_FORMATS)
    assert main(["ppl", "--model", str(gpt_dir), "--formats", "fp32,int3"]) == 2
    assert "unknown format int3" in capsys.readouterr().err
    assert main(["ppl", "--model", str(gpt_dir), "--tokens", "1"]) == 2


# ---- the rule: a format is offered only within 1 % of fp32 perplexity on SmolLM2 ----------------

def test_offered_formats_within_one_percent_of_fp32(smollm2_gguf):
    from _smollm2_once import smollm2

    model, tok = smollm2(str(smollm2_gguf))
    ids = heldout_ids(tok, 512)
    assert len(ids) == 512
    res = format_perplexities(model, ids, ["fp32"] + [f for f in OFFERED_FORMATS if f != "fp32"])
    base = res["fp32"]["ppl"]
    assert 2 < base < 100  # a real model on real English prose, not noise (uniform would be 49152)
    for fmt in OFFERED_FORMATS:
        assert res[fmt]["ppl"] <= base * (1 + MAX_PPL_INCREASE), (fmt, res[fmt]["ppl"], base)
    assert res["int8"]["weight_bytes"] < 0.5 * res["fp32"]["weight_bytes"]


def test_chat_offers_only_the_offered_formats():
    from dodai.cli import build_parser

    parser = build_parser()
    for fmt in OFFERED_FORMATS:
        assert parser.parse_args(["chat", "--model", "m", "--format", fmt]).format == fmt
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "--model", "m", "--format", "int3"])


def test_generate_format_flag(gpt_dir, capsys):
    from dodai.cli import build_parser

    for fmt in OFFERED_FORMATS:
        rc = main(["generate", "--model", str(gpt_dir), "--prompt", "the quick", "--format", fmt,
                   "--temperature", "0", "--max-new-tokens", "6"])
        assert rc == 0
        assert len(capsys.readouterr().out.strip()) > 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--model", "m", "--prompt", "x", "--format", "int3"])
