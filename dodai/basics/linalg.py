"""Linear algebra from scratch (R1.2): a symmetric eigensolver, the SVD, PCA and low-rank approximation.

Choice: **Jacobi methods**, because they are short, provably convergent and accurate.

- ``eigh``: the two-sided Jacobi eigenvalue algorithm (Jacobi 1846; Golub & Van Loan, *Matrix Computations*,
  §8.5). Each rotation J(p, q, θ) zeroes the off-diagonal pair a_pq = a_qp; the off-diagonal mass
  off(A)² = Σ_{i≠j} a_ij² drops by exactly 2 a_pq² per rotation, so sweeps converge (quadratically in the end).
  The angle uses the numerically stable choice of Rutishauser: τ = (a_qq - a_pp) / 2a_pq,
  t = tan θ = sign(τ) / (|τ| + √(1 + τ²)) (the smaller root, |θ| ≤ π/4), c = 1/√(1 + t²), s = t c.
- ``svd``: the *one-sided* Jacobi method (Hestenes 1958; Demmel & Veselić 1992): rotate pairs of columns of A
  until all columns are mutually orthogonal; then A V = U Σ with σ_j the column norms. We do **not** take
  the eigenvectors of AᵀA: forming AᵀA squares the condition number, so any σ below √ε·σ_max (≈ 1.5e-8·σ_max)
  is lost in rounding, while one-sided Jacobi works on A itself and keeps them (see the tests).
- Ordering: the *round-robin* (chess-tournament) ordering of Brent & Luk (1985). In each of the n-1 rounds
  of a sweep the n/2 pairs are disjoint, so their rotations commute and touch different rows/columns: we
  apply them all at once with NumPy fancy indexing, which is *exactly* the sequential result for that
  ordering. ``eigh_reference`` keeps the textbook one-pair-at-a-time cyclic loop as the oracle.

Convention (like ``numpy.linalg``): ``eigh`` returns eigenvalues ascending and eigenvectors as columns;
``svd`` returns U (m, k), S (k,) descending, Vt (k, n) with k = min(m, n). Signs of vectors are arbitrary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dodai.errors import DodaiError

EPS = np.finfo(np.float64).eps


def _check_matrix(A, square: bool = False, symmetric: bool = False) -> np.ndarray:
    A = np.array(A, dtype=np.float64)  # a copy: we rotate in place
    if A.ndim != 2 or A.size == 0:
        raise DodaiError(f"expected a non-empty 2-D matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise DodaiError("matrix contains NaN or Inf")
    if square and A.shape[0] != A.shape[1]:
        raise DodaiError(f"expected a square matrix, got shape {A.shape}")
    if symmetric and not np.allclose(A, A.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(A).max()))):
        raise DodaiError("eigh needs a symmetric matrix")
    return A


def _rotation(app, aqq, apq):
    """(c, s) of the Jacobi rotation that zeroes a_pq; vectorized over arrays of pairs."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tau = (aqq - app) / (2.0 * apq)
        big = np.abs(tau) > 1e150  # √(1 + τ²) would overflow; then t ≈ 1/(2τ)
        t = np.where(big, 0.5 / np.where(big, tau, 1.0),
                     np.sign(tau) / (np.abs(tau) + np.sqrt(1.0 + np.where(big, 0.0, tau) ** 2)))
    t = np.where(tau == 0, 1.0, t)  # a_pp = a_qq: rotate by 45°
    t = np.where(apq == 0, 0.0, t)  # already zero: identity
    c = 1.0 / np.sqrt(1.0 + t * t)
    return c, t * c


def _round_robin(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n-1 rounds (n rounded up to even) of disjoint pairs (p < q) covering every pair once."""
    m = n + (n % 2)
    players = list(range(m))
    rounds = []
    for _ in range(m - 1):
        pairs = [(players[i], players[m - 1 - i]) for i in range(m // 2)]
        pairs = [(min(a, b), max(a, b)) for a, b in pairs if a < n and b < n]  # drop the dummy player
        if pairs:
            p, q = np.array(pairs).T
            rounds.append((p, q))
        players = [players[0], players[-1], *players[1:-1]]  # keep 0 fixed, rotate the rest
    return rounds


def _off(A) -> float:
    """off(A) = √(Σ_{i≠j} a_ij²), summed directly: ‖A‖² - Σ a_ii² would cancel catastrophically near convergence."""
    off = A - np.diag(np.diag(A))
    return float(np.sqrt(np.sum(off * off)))


def eigh(A, tol: float = 1e-15, max_sweeps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric matrix: A = V diag(w) Vᵀ, w ascending, V orthogonal (columns)."""
    A = _check_matrix(A, square=True, symmetric=True)
    A = 0.5 * (A + A.T)
    n = A.shape[0]
    V = np.eye(n)
    scale = float(np.linalg.norm(A)) or 1.0
    rounds = _round_robin(n)
    for _ in range(max_sweeps):
        if _off(A) <= tol * scale:
            break
        rotated = False
        for p, q in rounds:
            # skip pairs already zero to working precision (relative to their diagonal; Demmel & Veselić 1992)
            apq = A[p, q]
            need = np.abs(apq) > np.maximum(EPS * np.sqrt(np.abs(A[p, p] * A[q, q])), 1e-300)
            if not need.any():
                continue
            rotated = True
            c, s = _rotation(A[p, p], A[q, q], np.where(need, apq, 0.0))
            # A <- Jᵀ A J for all disjoint pairs of this round at once: columns, then rows
            Ap, Aq = A[:, p], A[:, q]
            A[:, p], A[:, q] = c * Ap - s * Aq, s * Ap + c * Aq
            Ap, Aq = A[p, :], A[q, :]
            A[p, :], A[q, :] = c[:, None] * Ap - s[:, None] * Aq, s[:, None] * Ap + c[:, None] * Aq
            Vp, Vq = V[:, p], V[:, q]
            V[:, p], V[:, q] = c * Vp - s * Vq, s * Vp + c * Vq  # V <- V J accumulates the eigenvectors
        if not rotated:
            break
    else:
        raise DodaiError(f"Jacobi eigensolver did not converge in {max_sweeps} sweeps")
    w = np.diag(A).copy()
    order = np.argsort(w, kind="stable")
    return w[order], V[:, order]


def eigh_reference(A, tol: float = 1e-15, max_sweeps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The textbook cyclic-by-row Jacobi loop, one rotation at a time (slow; the oracle for :func:`eigh`)."""
    A = _check_matrix(A, square=True, symmetric=True)
    A = 0.5 * (A + A.T)
    n = A.shape[0]
    V = np.eye(n)
    scale = float(np.linalg.norm(A)) or 1.0
    for _ in range(max_sweeps):
        if _off(A) <= tol * scale:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if A[p, q] == 0.0:
                    continue
                c, s = (float(x) for x in _rotation(A[p, p], A[q, q], A[p, q]))
                J = np.eye(n)
                J[p, p], J[p, q], J[q, p], J[q, q] = c, s, -s, c
                A = J.T @ A @ J  # zeroes A[p, q] and A[q, p]
                V = V @ J
    else:
        raise DodaiError(f"Jacobi eigensolver did not converge in {max_sweeps} sweeps")
    w = np.diag(A).copy()
    order = np.argsort(w, kind="stable")
    return w[order], V[:, order]


def _complete_basis(U: np.ndarray, have: np.ndarray) -> np.ndarray:
    """Replace the columns of U not in ``have`` by unit vectors orthogonal to all the others (Gram-Schmidt)."""
    m = U.shape[0]
    for j in np.flatnonzero(~have):
        basis = U[:, have]
        best, best_norm = None, 0.0
        for i in range(m):  # the standard basis vector with the largest component outside span(basis)
            e = np.zeros(m)
            e[i] = 1.0
            r = e - basis @ (basis.T @ e)
            r = r - basis @ (basis.T @ r)  # twice is enough (Kahan/Parlett)
            nr = float(np.linalg.norm(r))
            if nr > best_norm:
                best, best_norm = r, nr
        U[:, j] = best / best_norm
        have = have.copy()
        have[j] = True
    return U


def svd(A, tol: float | None = None, max_sweeps: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD by one-sided Jacobi: A = U diag(S) Vt, S descending, U (m, k), Vt (k, n), k = min(m, n)."""
    A = _check_matrix(A)
    m, n = A.shape
    if m < n:  # work on the tall matrix Aᵀ = V Σ Uᵀ
        U, S, Vt = svd(A.T, tol, max_sweeps)
        return Vt.T, S, U.T
    tol = tol if tol is not None else n * EPS
    U = A  # (m, n): its columns get rotated until mutually orthogonal
    V = np.eye(n)
    rounds = _round_robin(n)
    for _ in range(max_sweeps):
        rotated = False
        for p, q in rounds:
            Up, Uq = U[:, p], U[:, q]
            alpha = np.sum(Up * Up, axis=0)  # ‖u_p‖²
            beta = np.sum(Uq * Uq, axis=0)  # ‖u_q‖²
            gamma = np.sum(Up * Uq, axis=0)  # u_p·u_q
            need = np.abs(gamma) > tol * np.sqrt(alpha * beta)
            if not need.any():
                continue
            rotated = True
            # the same 2x2 symmetric problem as eigh, on the Gram matrix [[α, γ], [γ, β]] of the pair
            c, s = _rotation(alpha, beta, np.where(need, gamma, 0.0))
            U[:, p], U[:, q] = c * Up - s * Uq, s * Up + c * Uq
            Vp, Vq = V[:, p], V[:, q]
            V[:, p], V[:, q] = c * Vp - s * Vq, s * Vp + c * Vq
        if not rotated:
            break
    else:
        raise DodaiError(f"one-sided Jacobi SVD did not converge in {max_sweeps} sweeps")
    S = np.linalg.norm(U, axis=0)  # σ_j = ‖A v_j‖
    order = np.argsort(-S, kind="stable")
    S, U, V = S[order], U[:, order], V[:, order]
    nonzero = S > S[0] * m * EPS if S[0] > 0 else np.zeros_like(S, dtype=bool)
    U = np.where(nonzero, U / np.where(nonzero, S, 1.0), 0.0)
    if not nonzero.all():
        U = _complete_basis(U, nonzero)  # (numerically) zero σ: any orthonormal completion is a valid U
    return U, S, V.T


def low_rank(W, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-r approximation W ≈ A B with A (m, r) = U_r Σ_r and B (r, n) = V_rᵀ (Eckart & Young 1936):
    the Frobenius error is √(Σ_{i>r} σ_i²), the smallest any rank-r matrix can achieve."""
    U, S, Vt = svd(W)
    if not 1 <= rank <= len(S):
        raise DodaiError(f"rank must be in [1, {len(S)}], got {rank}")
    return U[:, :rank] * S[:rank], Vt[:rank]


@dataclass
class PCA:
    """Principal component analysis (Pearson 1901; Hotelling 1933) via the SVD of the centred data.

    ``components`` (k, d) are the top-k right singular vectors of X - mean (unit directions of maximal
    variance); ``explained_variance`` = σ²/(n-1). Sign convention: each component's largest-magnitude
    entry is positive, so results are deterministic.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, X, k: int) -> PCA:
        X = _check_matrix(X)
        n, d = X.shape
        if n < 2 or not 1 <= k <= min(n, d):
            raise DodaiError(f"PCA needs ≥ 2 rows and 1 ≤ k ≤ min(n, d) = {min(n, d)}, got n={n}, k={k}")
        mean = X.mean(axis=0)
        _, S, Vt = svd(X - mean)
        flip = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
        Vt = Vt * flip[:, None]
        var = S**2 / (n - 1)
        total = var.sum()
        return cls(mean, Vt[:k], var[:k], var[:k] / total if total > 0 else np.zeros(k))

    def transform(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T  # (n, k)

    def inverse_transform(self, Z) -> np.ndarray:
        return np.asarray(Z) @ self.components + self.mean
