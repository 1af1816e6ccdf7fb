"""Jacobi eigensolver, one-sided Jacobi SVD, PCA and low-rank approximation vs numpy.linalg / scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.basics import linalg as L
from dodai.basics.mlp import blas_threads
from dodai.errors import DodaiError


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with blas_threads(1):
        yield


def _sym(rng, n):
    B = rng.standard_normal((n, n))
    return B + B.T


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 24), st.integers(0, 2**31 - 1))
def test_eigh_matches_numpy_on_random_symmetric(n, seed):
    A = _sym(np.random.default_rng(seed), n)
    w, V = L.eigh(A)
    scale = np.linalg.norm(A)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A), rtol=0, atol=1e-13 * max(scale, 1))
    np.testing.assert_allclose(V.T @ V, np.eye(n), rtol=0, atol=1e-13)
    np.testing.assert_allclose(A @ V, V * w, rtol=0, atol=1e-12 * max(scale, 1))  # A v = λ v, column by column
    assert np.all(np.diff(w) >= 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_svd_matches_numpy_on_random_shapes(m, n, seed):
    A = np.random.default_rng(seed).standard_normal((m, n))
    U, S, Vt = L.svd(A)
    k = min(m, n)
    assert U.shape == (m, k) and S.shape == (k,) and Vt.shape == (k, n)
    np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False), rtol=0, atol=1e-13 * max(S[0], 1))
    np.testing.assert_allclose((U * S) @ Vt, A, rtol=0, atol=1e-13 * max(S[0], 1))
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-13)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), atol=1e-13)
    assert np.all(np.diff(S) <= 0)


def test_fast_round_robin_equals_textbook_cyclic_loop():
    A = _sym(np.random.default_rng(3), 9)
    w_fast, V_fast = L.eigh(A)
    w_ref, V_ref = L.eigh_reference(A)
    np.testing.assert_allclose(w_fast, w_ref, atol=1e-13)
    # distinct eigenvalues: eigenvectors agree up to sign
    np.testing.assert_allclose(np.abs(V_fast.T @ V_ref), np.eye(9), atol=1e-10)


def test_ill_conditioned_hilbert_matrix():
    n = 12
    H = 1.0 / (np.arange(n)[:, None] + np.arange(n)[None, :] + 1)  # cond ≈ 1.7e16
    w, V = L.eigh(H)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(H), rtol=0, atol=1e-14)
    np.testing.assert_allclose(H @ V, V * w, atol=1e-14)
    S = L.svd(H)[1]
    np.testing.assert_allclose(S, np.linalg.svd(H, compute_uv=False), rtol=0, atol=1e-14)


def test_svd_keeps_small_singular_values_that_the_gram_matrix_loses():
    rng = np.random.default_rng(0)
    Q1, _ = np.linalg.qr(rng.standard_normal((30, 8)))
    Q2, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    sigma = np.logspace(0, -12, 8)
    A = (Q1 * sigma) @ Q2.T
    S = L.svd(A)[1]
    ref = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(S, ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(S[:5], sigma[:5], rtol=1e-6)  # well above rounding of A itself
    # the eigenvalues of AᵀA have absolute error ~ε·σ_max² ≈ 1e-16: σ = 1e-12 -> σ² = 1e-24 is pure noise there
    gram = np.sqrt(np.abs(np.linalg.eigvalsh(A.T @ A)))[::-1]
    assert abs(gram[-1] - ref[-1]) > 1e3 * abs(S[-1] - ref[-1])


def test_rank_deficient_and_zero_matrices():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((7, 2)) @ rng.standard_normal((2, 5))  # rank 2
    U, S, Vt = L.svd(A)
    assert S[2:].max() < 1e-13 * S[0]
    np.testing.assert_allclose(U.T @ U, np.eye(5), atol=1e-12)  # completed to an orthonormal basis
    np.testing.assert_allclose((U * S) @ Vt, A, atol=1e-13)
    U, S, Vt = L.svd(np.zeros((3, 2)))
    np.testing.assert_array_equal(S, [0.0, 0.0])
    np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-14)
    w, V = L.eigh(np.diag([3.0, -1.0, 2.0]))
    np.testing.assert_array_equal(w, [-1.0, 2.0, 3.0])


def test_low_rank_is_eckart_young_optimal():
    W = np.random.default_rng(2).standard_normal((20, 12))
    S = np.linalg.svd(W, compute_uv=False)
    for r in (1, 4, 12):
        A, B = L.low_rank(W, r)
        assert A.shape == (20, r) and B.shape == (r, 12)
        assert np.linalg.norm(W - A @ B) == pytest.approx(np.sqrt(np.sum(S[r:] ** 2)), abs=1e-12)
    with pytest.raises(DodaiError):
        L.low_rank(W, 13)


def test_pca_matches_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 6)) @ rng.standard_normal((6, 6)) + 3.0
    ours = L.PCA.fit(X, 3)
    ref = decomposition.PCA(n_components=3, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(ours.components @ ref.components_.T), np.eye(3), atol=1e-10)
    Z = ours.transform(X)
    np.testing.assert_allclose(np.abs(Z), np.abs(ref.transform(X)), atol=1e-9)
    full = L.PCA.fit(X, 6)
    np.testing.assert_allclose(full.inverse_transform(full.transform(X)), X, atol=1e-10)


def test_hostile_inputs_raise():
    with pytest.raises(DodaiError):
        L.eigh(np.array([[1.0, 2.0], [0.0, 1.0]]))  # not symmetric
    with pytest.raises(DodaiError):
        L.eigh(np.ones((2, 3)))
    with pytest.raises(DodaiError):
        L.svd(np.array([[np.nan, 1.0]]))
    with pytest.raises(DodaiError):
        L.svd(np.zeros((0, 3)))
    with pytest.raises(DodaiError):
        L.PCA.fit(np.ones((1, 3)), 1)
