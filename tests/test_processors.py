"""Logits processors vs Hugging Face's processor classes on random logits and random input ids."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.processors import (
    LogitsPipeline,
    banned_ngram_tokens,
    logit_bias,
    min_p_filter,
    no_repeat_ngram,
    presence_frequency_penalty,
    repetition_penalty,
)

hf = pytest.importorskip("transformers.generation.logits_process")


def _inputs(seed, B=3, T=12, V=50):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, V, generator=g) * 3
    ids = torch.randint(0, V, (B, T), generator=g)
    return ids, logits


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.3, 0.9])
def test_min_p_matches_hf(seed, min_p):
    ids, logits = _inputs(seed)
    ref = hf.MinPLogitsWarper(min_p=min_p)(ids, logits.clone())
    torch.testing.assert_close(min_p_filter(logits, min_p), ref)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_hf(seed, penalty):
    ids, logits = _inputs(seed)
    ref = hf.RepetitionPenaltyLogitsProcessor(penalty=penalty)(ids, logits.clone())
    torch.testing.assert_close(repetition_penalty(ids, logits, penalty), ref)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_matches_hf(seed, n):
    ids, logits = _inputs(seed, T=30, V=6)  # small vocabulary so n-grams repeat
    ref = hf.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
    torch.testing.assert_close(no_repeat_ngram(ids, logits, n), ref)


@pytest.mark.parametrize("seed", range(3))
def test_pipeline_matches_hf_processor_list(seed):
    ids, logits = _inputs(seed, V=80)
    pipe = LogitsPipeline(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.2,
                          no_repeat_ngram_size=3)
    ref = hf.LogitsProcessorList([
        hf.RepetitionPenaltyLogitsProcessor(1.2), hf.NoRepeatNGramLogitsProcessor(3),
        hf.TemperatureLogitsWarper(0.7), hf.TopKLogitsWarper(20), hf.TopPLogitsWarper(0.8),
        hf.MinPLogitsWarper(0.05)])(ids, logits.clone())
    torch.testing.assert_close(pipe(ids, logits), ref)


def test_presence_frequency_by_hand():
    logits = torch.zeros(1, 5)
    gen = torch.tensor([[1, 1, 3]])
    out = presence_frequency_penalty(gen, logits, presence=0.5, frequency=0.25)
    torch.testing.assert_close(out, torch.tensor([[0.0, -1.0, 0.0, -0.75, 0.0]]))


def test_pipeline_presence_counts_only_generated_tokens():
    logits = torch.zeros(1, 4)
    ids = torch.tensor([[0, 0, 2]])  # prompt [0, 0], generated [2]
    out = LogitsPipeline(presence_penalty=1.0).process(ids, logits, n_prompt=2)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, -1.0, 0.0]]))


def test_logit_bias_and_hostile():
    out = logit_bias(torch.zeros(2, 3), {2: -100.0, 0: 1.5})
    torch.testing.assert_close(out, torch.tensor([[1.5, 0.0, -100.0]] * 2))
    with pytest.raises(DodaiError):
        logit_bias(torch.zeros(1, 3), {3: 1.0})
    for bad in [dict(min_p=1.5), dict(repetition_penalty=0.0), dict(no_repeat_ngram_size=0),
                dict(temperature=-1), dict(top_k=0), dict(top_p=0.0)]:
        with pytest.raises(DodaiError):
            LogitsPipeline(**bad)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=20), st.integers(1, 4))
def test_banned_ngrams_never_repeat(ids, n):
    """Appending any non-banned token never creates an n-gram that already occurred."""
    banned = set(banned_ngram_tokens(ids, n))
    grams = {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}
    for t in range(4):
        new = tuple((ids + [t])[-n:]) if len(ids) + 1 >= n else None
        assert (new in grams) == (t in banned)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_min_p_support_property(seed, p):
    logits = torch.randn(1, 30, generator=torch.Generator().manual_seed(seed))
    kept = torch.isfinite(min_p_filter(logits, p))
    probs = logits.softmax(-1)
    assert kept[0, probs.argmax()]
    assert torch.equal(kept, probs >= p * probs.max())
