"""Rosenblatt's perceptron: Novikoff's mistake bound on separable data, failure on XOR, an MLP that fits XOR."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.basics.mlp import MLP, TrainConfig, evaluate, train
from dodai.basics.perceptron import Perceptron, make_separable, margin_and_radius, mistake_bound, xor_data
from dodai.errors import DodaiError


def test_hand_worked_two_points():
    # w = 0 scores 0 on x1 -> a mistake, w <- 0 + (+1)(1, 0) = (1, 0); x2 = (-1, 0) scores -1 (y = -1): right.
    # The second pass makes no mistake: 1 update, 2 epochs.
    p = Perceptron(2, fit_intercept=False)
    r = p.fit([[1.0, 0.0], [-1.0, 0.0]], [1, -1])
    assert (r.updates, r.epochs, r.converged) == (1, 2, True)
    np.testing.assert_array_equal(p.w, [1.0, 0.0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6), st.sampled_from([0.02, 0.05, 0.1, 0.2]), st.booleans())
def test_updates_never_exceed_novikoff_bound(seed, dim, margin, shuffle):
    X, y, u = make_separable(200, dim, margin, seed)
    gamma, R = margin_and_radius(X, y, u)
    assert gamma >= margin - 1e-12  # the generator kept its promise
    p = Perceptron(dim)
    r = p.fit(X, y, max_epochs=10_000, shuffle_seed=seed if shuffle else None)
    assert r.converged and r.accuracy[-1] == 1.0
    assert np.all(p.predict(X) == y)
    assert r.updates <= mistake_bound(X, y, u)


def test_xor_is_never_fitted_by_a_perceptron():
    X, y = xor_data()
    r = Perceptron(2).fit(X, y, max_epochs=1000)
    assert not r.converged and r.epochs == 1000
    assert max(r.accuracy) <= 0.75  # no line gets more than 3 of the 4 XOR points


def test_mlp_on_the_engine_fits_xor():
    X, y = xor_data()
    m = MLP([2, 8, 2], activation="tanh", seed=0, dtype=np.float64)
    train(m, X, y, cfg=TrainConfig(epochs=300, batch_size=4, lr=0.05))
    loss, acc = evaluate(m, X, y)
    assert acc == 1.0 and loss < 0.05


def test_bad_inputs_raise():
    with pytest.raises(DodaiError):
        Perceptron(2).fit([[0.0, 1.0]], [2])
    with pytest.raises(DodaiError):
        Perceptron(2).fit([[0.0, 1.0, 2.0]], [1])
    X, y, u = make_separable(20, 2, 0.1, 0)
    with pytest.raises(DodaiError):
        mistake_bound(X, y, -u)
