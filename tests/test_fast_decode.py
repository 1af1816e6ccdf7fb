"""The fused int4 decoding step (dodai.models.fast_decode) against the PyTorch layers it replaces."""

from __future__ import annotations

import copy

import pytest
import torch
from _native_marks import NATIVE, needs_known_layout  # noqa: E402

from dodai.errors import DodaiError
from dodai.generate.sampling import generate
from dodai.models import fast_decode
from dodai.models.llama import Llama, LlamaConfig
from dodai.quant.int8 import quantize_model

# the fused step reads the packed weights directly
pytestmark = [*NATIVE, needs_known_layout]


def small_int4_llama(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=96, block_size=128, n_layer=3, n_embd=128, n_head=4, n_kv_head=2, ffn_hidden=256)
    cfg.update(kw)
    m = Llama(LlamaConfig(**cfg))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.1)
        for blk in m.layers:  # norms away from 1, so that a misplaced norm weight shows
            blk.attn_norm.weight.uniform_(0.5, 1.5)
            blk.ffn_norm.weight.uniform_(0.5, 1.5)
    return fast_decode.set_activations(quantize_model(m, "int4"), "fp32")  # exact activations: vs the reference


def _steps(model, prompt, n, batch=1):
    """Prefill then n greedy single-token steps through the model's forward; logits of every step."""
    out = []
    with torch.inference_mode():
        cache = model.new_cache(batch, len(prompt) + n + 1)
        logits, _ = model(torch.tensor([prompt] * batch), cache=cache, last_only=True)
        for _ in range(n):
            tok = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            out.append(logits[:, -1])
            logits, _ = model(tok, cache=cache, last_only=True)
    return torch.stack(out), cache


def _used(model) -> bool:
    plan = model.__dict__.get("_fast_decode_plan")
    return plan is not None and bool(plan.bn)


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_step_equals_reference(batch):
    fast = small_int4_llama(1)
    ref = copy.deepcopy(fast).set_eager(True)  # separate projections, explicit softmax: the oracle
    prompt = [3, 14, 15, 92, 65, 35, 89, 79]
    a, ca = _steps(fast, prompt, 12, batch)
    assert _used(fast) and not _used(ref)
    b, cb = _steps(ref, prompt, 12, batch)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    for k1, k2 in zip(ca.k + ca.v, cb.k + cb.v):  # the cache it wrote is the reference's
        torch.testing.assert_close(k1[:, :, :ca.pos], k2[:, :, :cb.pos], rtol=1e-4, atol=1e-5)


def test_greedy_tokens_identical_through_the_engine():
    fast = small_int4_llama(2)
    ref = copy.deepcopy(fast).set_eager(True)
    prompt = [5, 6, 7, 8, 9]
    got = list(generate(fast, prompt, 24, temperature=0.0))
    assert _used(fast)
    assert got == list(generate(ref, prompt, 24, temperature=0.0))


def test_models_the_step_does_not_implement_take_the_pytorch_path():
    gelu = small_int4_llama(3, act="gelu_tanh")
    _steps(gelu, [1, 2, 3], 2)
    assert not _used(gelu)
    torch.manual_seed(0)
    fp32 = Llama(LlamaConfig(vocab_size=96, block_size=64, n_layer=2, n_embd=128, n_head=4, n_kv_head=2,
                             ffn_hidden=256)).eval()
    _steps(fp32, [1, 2, 3], 2)
    assert not _used(fp32)


def test_swapped_weights_rebuild_the_plan():
    m = small_int4_llama(4)
    prompt = [9, 8, 7]
    _steps(m, prompt, 2)
    first = m.__dict__["_fast_decode_plan"]
    donor = small_int4_llama(5)
    m.layers[1].ffn.w_down = copy.deepcopy(donor.layers[1].ffn.w_down)  # a new buffer: a new plan
    a, _ = _steps(m, prompt, 3)
    assert m.__dict__["_fast_decode_plan"] is not first and _used(m)
    b, _ = _steps(copy.deepcopy(m).set_eager(True), prompt, 3)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_smollm2_int4_fused_equals_pytorch_path(smollm2_gguf, monkeypatch):
    """Real weights: greedy tokens of the fused step equal the per-layer PyTorch path's, logits close."""
    from tests._smollm2_once import smollm2

    model, tok = smollm2(str(smollm2_gguf))
    m4 = fast_decode.set_activations(quantize_model(copy.deepcopy(model), "int4"), "fp32")
    prompt = tok.encode("The three primary colours are")
    a, _ = _steps(m4, prompt, 24)
    assert _used(m4)
    monkeypatch.setattr(fast_decode, "fused_step", lambda *args, **kw: None)
    b, _ = _steps(m4, prompt, 24)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_paged_rows_at_different_positions_take_the_fused_step(monkeypatch, mode):
    """The server's paged cache: rows of different lengths (each at its own position, with padding columns in the
    slot table) decode in one fused call; every step's logits equal the eager reference's, per row, and every
    request's greedy tokens equal what it gets alone."""
    from dodai.generate.engine import Request, run_requests
    from dodai.generate.paged import PagedBackend
    from dodai.generate.processors import LogitsPipeline

    fast = fast_decode.set_activations(small_int4_llama(6), mode)
    ref = copy.deepcopy(fast).set_eager(True)
    calls = []
    real = fast_decode.fused_step

    def spy(model, x, cache, *a, **kw):
        out = real(model, x, cache, *a, **kw)
        calls.append((type(cache).__name__, x.shape[0], out is not None))
        return out

    monkeypatch.setattr(fast_decode, "fused_step", spy)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 96, (n,), generator=g).tolist() for n in (3, 21, 9, 40, 1, 17)]
    greedy = LogitsPipeline(temperature=0.0)

    def run(model, ps):
        reqs = [Request(p, 10, greedy, logprobs=3) for p in ps]
        return run_requests(model, reqs, PagedBackend(model, block_size=8, max_batch=8))

    together = run(fast, prompts)
    assert ("_StepView", len(prompts), True) in calls  # ragged rows went through the native step
    oracle = run(ref, prompts) if mode == "fp32" else together  # int8 activations: no fp32 oracle to equal
    for a, b in zip(together, oracle):
        assert a.ids == b.ids
        for la, lb in zip(a.logprobs, b.logprobs):  # the chosen tokens' log-probabilities agree closely
            assert abs(la.logprob - lb.logprob) < 1e-3
    for p, a in zip(prompts, together):
        assert run(fast, [p])[0].ids == a.ids


@pytest.mark.parametrize("rows", [2, 3, 8, 16])
def test_batched_dense_rows_equal_reference(rows):
    """Several rows at one position (batched generate): the multi-row int4 kernel inside the fused step."""
    fast = small_int4_llama(7)
    ref = copy.deepcopy(fast).set_eager(True)
    prompt = [4, 40, 44, 4, 70]
    a, _ = _steps(fast, prompt, 6, rows)
    assert _used(fast)
    b, _ = _steps(ref, prompt, 6, rows)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_int8_activations_stay_close_and_rows_never_mix():
    """W4A8 (the default): logits close to the fp32-activation step's on the same tokens, and a row's floats do not
    depend on the rows beside it."""
    m = small_int4_llama(8)
    prompt, fed = [7, 17, 27, 37, 47], [3, 93, 12, 60, 5, 41]

    def forced():  # teacher-forced: both modes see the same tokens
        with torch.inference_mode():
            cache = m.new_cache(1, 16)
            m(torch.tensor([prompt]), cache=cache)
            return torch.stack([m(torch.tensor([[t]]), cache=cache, last_only=True)[0][0, -1] for t in fed])

    exact = forced()
    fast_decode.set_activations(m, "int8")
    assert fast_decode.activations(m) == "int8"
    a8 = forced()
    assert _used(m)
    rel = float((a8 - exact).norm() / exact.norm())
    assert 0 < rel < 5e-2  # not the fp32 arithmetic, but close to it (this random model amplifies errors)
    one, _ = _steps(m, prompt, 5, batch=1)
    four, _ = _steps(m, prompt, 5, batch=4)
    for r in range(4):
        assert torch.equal(four[:, r], one[:, 0])
    with pytest.raises(DodaiError):
        fast_decode.set_activations(m, "int4")


def test_default_is_int8_activations():
    torch.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=96, block_size=32, n_layer=1, n_embd=64, n_head=2, n_kv_head=1, ffn_hidden=128))
    assert fast_decode.activations(quantize_model(m, "int4")) == "int8"


def test_smollm2_int8_activations_keep_the_likelihood(smollm2_gguf):
    """Real weights, teacher-forced through the fused step: the mean log-likelihood of a text with 8-bit activations
    within 1 % of the fp32-activation step's, and the top token the same at most positions."""
    from tests._smollm2_once import smollm2

    model, tok = smollm2(str(smollm2_gguf))
    m4 = quantize_model(copy.deepcopy(model), "int4")
    ids = tok.encode("The river runs past the old mill, under the stone bridge and on towards the sea, where the "
                     "fishing boats wait for the evening tide. Children play on the bank while their parents talk.")
    res = {}
    for mode in ("fp32", "int8"):
        fast_decode.set_activations(m4, mode)
        with torch.inference_mode():
            cache = m4.new_cache(1, len(ids) + 1)
            m4(torch.tensor([ids[:1]]), cache=cache)
            rows = []
            for t in ids[1:]:
                logits, _ = m4(torch.tensor([[t]]), cache=cache, last_only=True)
                rows.append(logits[0, -1])
        assert _used(m4)
        res[mode] = torch.stack(rows[:-1])  # logits predicting ids[2:]
    target = torch.tensor(ids[2:])
    nll = {k: float(torch.nn.functional.cross_entropy(v, target)) for k, v in res.items()}
    assert abs(nll["int8"] - nll["fp32"]) / nll["fp32"] < 1e-2
    agree = (res["int8"].argmax(-1) == res["fp32"].argmax(-1)).float().mean()
    assert agree >= 0.9
