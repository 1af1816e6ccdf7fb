"""T5 span corruption (R6.3): invariants of the noise mask, the inputs/targets layout and batching."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.train.span_corruption import (
    apply_noise_mask,
    input_length_for,
    random_spans_noise_mask,
    reconstruct,
    span_corrupt,
    span_corruption_batch,
)

SENT = list(range(1000, 1100))  # sentinel ids, outside the token range used below
EOS = 1


def _spans(mask):
    """[(start, end)] of the runs of True."""
    out, start = [], None
    for i, m in enumerate(mask + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(2, 999), min_size=2, max_size=300), st.integers(0, 2**32 - 1),
       st.sampled_from([0.15, 0.3, 0.5]), st.sampled_from([1.0, 3.0, 5.0]))
def test_round_trip_and_sentinel_order(ids, seed, density, mean_span):
    rng = random.Random(seed)
    inputs, targets = span_corrupt(ids, SENT, rng, density, mean_span, eos_id=EOS)
    assert inputs[-1] == EOS and targets[-1] == EOS
    assert reconstruct(inputs, targets, SENT, eos_id=EOS) == ids
    s_in = [t for t in inputs if t in SENT]
    s_tg = [t for t in targets if t in SENT]
    assert s_in == SENT[:len(s_in)]  # sentinels appear in order, each once
    assert s_tg[:len(s_in)] == s_in and len(s_tg) in (len(s_in), len(s_in) + 1)
    assert targets[0] == SENT[0]
    # every hidden token is in the targets, every kept one in the inputs
    assert len(inputs) - len(s_in) - 1 + len(targets) - len(s_tg) - 1 == len(ids)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 2000), st.integers(0, 2**32 - 1))
def test_mask_density_and_spans(length, seed):
    mask = random_spans_noise_mask(length, random.Random(seed), 0.15, 3.0)
    assert len(mask) == length
    n_noise = sum(mask)
    assert n_noise == min(max(round(length * 0.15), 1), length - 1)  # T5's count: density 15 % up to rounding
    assert not mask[0]  # starts with kept tokens
    spans = _spans(mask)
    assert len(spans) == max(1, min(round(n_noise / 3.0), n_noise, length - n_noise))
    assert all(b < c for (_, b), (c, _) in zip(spans, spans[1:]))  # spans never touch (kept run between)


def test_noise_density_and_mean_span_over_many_samples():
    rng = random.Random(0)
    lens, noise, total = [], 0, 0
    for _ in range(300):
        mask = random_spans_noise_mask(512, rng)
        noise += sum(mask)
        total += len(mask)
        lens += [b - a for a, b in _spans(mask)]
    assert abs(noise / total - 0.15) < 0.005
    assert abs(sum(lens) / len(lens) - 3.0) < 0.1
    assert min(lens) >= 1 and max(lens) > 6  # span lengths vary (a random composition, not fixed 3s)


def test_hand_worked_example():
    words = "The quick brown fox jumps over the lazy dog".split()
    ids = list(range(10, 19))
    mask = [False, False, True, True, False, False, True, True, False]
    inputs, targets = apply_noise_mask(ids, mask, SENT)
    show = {**{10 + i: w for i, w in enumerate(words)}, **{s: f"<X{k}>" for k, s in enumerate(SENT)}}
    assert " ".join(show[t] for t in inputs) == "The quick <X0> jumps over <X1> dog"
    assert " ".join(show[t] for t in targets) == "<X0> brown fox <X1> the lazy <X2>"
    ends_noisy = apply_noise_mask(ids, mask[:-1] + [True], SENT)[1]
    assert ends_noisy[-1] == 18 and ends_noisy.count(SENT[2]) == 0  # no closing sentinel after a final span


def test_input_length_and_batch():
    L = input_length_for(64)
    rng = random.Random(1)
    lens = [len(span_corrupt(list(range(2, 2 + L)), SENT, rng, eos_id=EOS)[0]) for _ in range(20)]
    assert max(lens) <= 64 and min(lens) >= 60
    x, am, y = span_corruption_batch(list(range(2, 900)), 4, L, SENT, EOS, 0, rng)
    assert x.shape[0] == y.shape[0] == 4 and x.shape == am.shape
    assert ((x == 0) == (am == 0)).all()  # pads exactly where the mask is 0
    for row in y.tolist():
        real = [t for t in row if t != -100]
        assert real[-1] == EOS and real.count(EOS) == 1 and real[0] == SENT[0]
        assert row[len(real):] == [-100] * (len(row) - len(real))  # padding only after the target


def test_hostile():
    with pytest.raises(DodaiError):
        random_spans_noise_mask(1, random.Random(0))
    with pytest.raises(DodaiError):
        random_spans_noise_mask(10, random.Random(0), noise_density=1.5)
    with pytest.raises(DodaiError):
        span_corrupt(list(range(1000)), SENT[:2], random.Random(0))  # too few sentinels
    with pytest.raises(DodaiError):
        reconstruct([5, SENT[3]], [SENT[0], 7], SENT)
    with pytest.raises(DodaiError):
        span_corruption_batch([1, 2, 3], 2, 10, SENT, EOS, 0, random.Random(0))
    assert torch.is_tensor(span_corruption_batch(list(range(50)), 1, 10, SENT, EOS, 0, random.Random(0))[0])
