"""dodai.info vs scipy.stats / torch: entropy, cross-entropy, KL, perplexity, bits per byte."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai import info
from dodai.errors import DodaiError

stats = pytest.importorskip("scipy.stats")


def _dist(rng, shape, zeros=0.0):
    p = rng.random(shape) ** 3
    if zeros:
        p[rng.random(shape) < zeros] = 0.0
        p[..., 0] += 1e-3  # keep every row a distribution
    return p / p.sum(axis=-1, keepdims=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.integers(2, 30), st.sampled_from([0.0, 0.3]))
def test_entropy_kl_match_scipy_and_ce_decomposes(seed, n, k, zeros):
    rng = np.random.default_rng(seed)
    p = _dist(rng, (n, k), zeros)
    q = _dist(rng, (n, k))  # q > 0 everywhere: everything finite
    np.testing.assert_allclose(info.entropy(p), stats.entropy(p, axis=-1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(info.kl_divergence(p, q), stats.entropy(p, q, axis=-1), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(info.entropy(p, base=2), stats.entropy(p, base=2, axis=-1), rtol=1e-12, atol=1e-14)
    # the identity of R1.4: H(p, q) = H(p) + KL(p‖q), and Gibbs: KL ≥ 0
    np.testing.assert_allclose(info.cross_entropy(p, q), info.entropy(p) + info.kl_divergence(p, q), rtol=1e-12)
    assert np.all(info.kl_divergence(p, q) >= -1e-15)


@pytest.mark.parametrize("seed", range(3))
def test_torch_inputs_match_torch_reference(seed):
    g = torch.Generator().manual_seed(seed)
    zp, zq = torch.randn(5, 11, generator=g, dtype=torch.float64), torch.randn(5, 11, generator=g, dtype=torch.float64)
    p, q = zp.softmax(-1), zq.softmax(-1)
    h = info.entropy(p)
    assert isinstance(h, torch.Tensor)
    torch.testing.assert_close(h, torch.distributions.Categorical(probs=p).entropy(), rtol=1e-12, atol=1e-14)
    ref_kl = torch.nn.functional.kl_div(q.log(), p, reduction="none").sum(-1)
    torch.testing.assert_close(info.kl_divergence(p, q), ref_kl, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(info.kl_from_logits(zp, zq), ref_kl, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(info.entropy_from_logits(zp), h, rtol=1e-12, atol=1e-14)
    # the mean cross-entropy to a one-hot p is torch's F.cross_entropy
    y = torch.randint(0, 11, (5,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 11).double()
    torch.testing.assert_close(info.cross_entropy(onehot, q).mean(),
                               torch.nn.functional.cross_entropy(zq, y), rtol=1e-12, atol=1e-14)
    # numpy in, numpy out, same numbers
    np.testing.assert_allclose(info.kl_from_logits(zp.numpy(), zq.numpy()), ref_kl.numpy(), rtol=1e-10)


def test_zeros_follow_the_conventions():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    assert info.entropy(p) == pytest.approx(math.log(2))
    assert info.kl_divergence(p, q) == pytest.approx(math.log(2))  # 0·log(0/0.5) contributes nothing
    assert info.entropy(np.array([1.0, 0.0])) == 0.0
    assert info.kl_divergence(q, p) == math.inf  # q puts mass where p has none
    assert info.cross_entropy(q, p) == math.inf
    t = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert float(info.entropy(t)) == pytest.approx(math.log(2))
    assert float(info.kl_divergence(torch.tensor(q), t)) == math.inf


def test_logit_forms_are_stable_at_extremes():
    z = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 1e4]])
    h = info.entropy_from_logits(z)
    assert np.all(np.isfinite(h))
    np.testing.assert_allclose(h, [0.0, math.log(2)], atol=1e-12)
    assert np.all(np.isfinite(info.kl_from_logits(z, z[::-1].copy())))


def test_perplexity_and_bits_per_byte_by_hand():
    assert info.perplexity(math.log(50)) == pytest.approx(50)  # uniform over 50 tokens
    assert info.perplexity(1e6) == math.inf
    # ln 2 nats per token, one token per byte: exactly one bit per byte
    assert info.bits_per_byte(math.log(2), 1000, 1000) == pytest.approx(1.0)
    # 4 bytes per token at 2.0 nats/token: 2 / (4 ln 2) bits per byte
    assert info.bits_per_byte(2.0, 250, 1000) == pytest.approx(2.0 / (4 * math.log(2)))
    assert info.nats_to_bits(info.bits_to_nats(3.0)) == pytest.approx(3.0)


def test_bad_inputs_raise():
    with pytest.raises(DodaiError):
        info.entropy(np.array([0.5, -0.1, 0.6]))
    with pytest.raises(DodaiError):
        info.kl_divergence(np.ones(3) / 3, np.ones(4) / 4)
    with pytest.raises(DodaiError):
        info.entropy(np.ones(2) / 2, base=1)
    with pytest.raises(DodaiError):
        info.bits_per_byte(1.0, 10, 0)
