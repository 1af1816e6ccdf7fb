"""T5 (R6.3): relative position buckets, parity with HF T5ForConditionalGeneration, cached decoding."""

from __future__ import annotations

import pytest
import torch

from dodai.nn.relative_bias import RelativePositionBias, relative_position_bucket, relative_position_bucket_reference


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
