"""Real SmolLM2-135M-Instruct: dodai's engine vs HF ``generate`` and HF logits processors (same fp32 weights).

Both load the same GGUF; each model is loaded once per module. Greedy here runs with penalties on,
so the penalties' parity is checked over a whole generation, not only on one step.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.models

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
hfp = pytest.importorskip("transformers.generation.logits_process")

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    from dodai.models import load_model

    return load_model(str(smollm2_gguf))


@pytest.fixture(scope="module")
def theirs(smollm2_gguf):
    pytest.importorskip("accelerate")
    m = transformers.LlamaForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                      dtype=torch.float32)
    return m.eval()


def _hf_generate(hf, ids, eos, **kw):
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), eos_token_id=eos, pad_token_id=eos, **kw)
    return out[0, len(ids):].tolist()


def test_greedy_with_penalties_identical_to_hf(ours, theirs):
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline

    model, tok = ours
    ids = tok.encode(CHAT.format("List three colours, then repeat the list."))
    pipe = LogitsPipeline(temperature=0.0, repetition_penalty=1.3, no_repeat_ngram_size=3)
    got = complete(model, ids, 40, pipe, eos_id=tok.eos_id)[0].ids
    ref = _hf_generate(theirs, ids, tok.eos_id, max_new_tokens=40, do_sample=False, repetition_penalty=1.3,
                       no_repeat_ngram_size=3)
    assert len(got) >= 20
    assert got == ref, (tok.decode(got), tok.decode(ref))


@pytest.mark.parametrize("knobs", [
    dict(temperature=0.7), dict(top_k=40), dict(top_p=0.9), dict(min_p=0.1), dict(repetition_penalty=1.2),
    dict(temperature=0.8, top_k=50, top_p=0.95, min_p=0.05, repetition_penalty=1.1)])
def test_processed_real_logits_equal_hf_processors(ours, knobs):
    from dodai.generate.processors import LogitsPipeline

    model, tok = ours
    ids = tok.encode(CHAT.format("Tell me about the moon, the moon, the moon."))
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x)[0][:, -1, :].float()  # (1, V) the model's real next-token logits
    hf = []
    if "repetition_penalty" in knobs:
        hf.append(hfp.RepetitionPenaltyLogitsProcessor(knobs["repetition_penalty"]))
    if "temperature" in knobs:
        hf.append(hfp.TemperatureLogitsWarper(knobs["temperature"]))
    if "top_k" in knobs:
        hf.append(hfp.TopKLogitsWarper(knobs["top_k"]))
    if "top_p" in knobs:
        hf.append(hfp.TopPLogitsWarper(knobs["top_p"]))
    if "min_p" in knobs:
        hf.append(hfp.MinPLogitsWarper(knobs["min_p"]))
    ref = hfp.LogitsProcessorList(hf)(x, logits.clone())
    got = LogitsPipeline(**knobs)(x, logits)
    if {"top_k", "top_p", "min_p"} & set(knobs):
        assert torch.isfinite(got).sum() < got.shape[-1]  # the filter really removed tokens
    torch.testing.assert_close(got, ref)


def test_n_samples_batched_equals_one_by_one(ours):
    """n rows decoded together in one batch give the same greedy tokens and log-probs as one row alone."""
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline

    model, tok = ours
    ids = tok.encode(CHAT.format("Name a fruit."))
    one = complete(model, ids, 12, LogitsPipeline(temperature=0.0), logprobs=1)[0]
    many = complete(model, ids, 12, LogitsPipeline(temperature=0.0), num_samples=3, logprobs=1)
    for c in many:
        assert c.ids == one.ids
        for a, b in zip(c.logprobs, one.logprobs):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_beam_search_identical_to_hf(ours, theirs):
    from dodai.generate.beam import lm_beam_search

    model, tok = ours
    ids = tok.encode(CHAT.format("What is the capital of France?"))
    best = lm_beam_search(model, ids, num_beams=4, max_new_tokens=24, eos_id=tok.eos_id, length_penalty=1.0,
                          early_stopping=False)[0]
    ref = _hf_generate(theirs, ids, tok.eos_id, max_new_tokens=24, do_sample=False, num_beams=4, length_penalty=1.0)
    assert len(best.tokens) >= 4
    assert best.tokens == ref, (tok.decode(best.tokens), tok.decode(ref))
