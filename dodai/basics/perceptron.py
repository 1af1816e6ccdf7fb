"""Rosenblatt's perceptron (R2.1): the learning rule, its convergence bound, and why XOR defeats it.

Rosenblatt (1958): predict ŷ = sign(w·x + b); on a mistake (y (w·x + b) ≤ 0, labels y ∈ {-1, +1})
update w ← w + y x, b ← b + y. Folding the bias into the weights (x̃ = [x, 1]) keeps one formula.

Novikoff (1962): if some unit vector u separates the data with margin γ = min_i y_i u·x̃_i > 0 and every
‖x̃_i‖ ≤ R, the rule makes at most (R/γ)² mistakes in total, however many passes it takes — so it
converges. XOR has no separating line (Minsky & Papert 1969): any linear rule gets at most 3 of the 4
points right, so the perceptron never converges there; a hidden layer (see :mod:`dodai.basics.mlp`) fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dodai.errors import DodaiError


def _labels_pm1(y) -> np.ndarray:
    y = np.asarray(y)
    vals = set(np.unique(y).tolist())
    if vals <= {-1, 1}:
        return y.astype(np.float64)
    if vals <= {0, 1}:
        return np.where(y == 1, 1.0, -1.0)
    raise DodaiError(f"perceptron labels must be in {{-1, +1}} or {{0, 1}}, got {sorted(vals)[:5]}")


@dataclass
class FitResult:
    updates: int  # total mistakes (= weight updates) over all epochs
    epochs: int  # passes over the data
    converged: bool  # a full pass without a mistake
    accuracy: list[float] = field(default_factory=list)  # training accuracy after each epoch


class Perceptron:
    """A single linear threshold unit trained with Rosenblatt's mistake-driven rule."""

    def __init__(self, n_features: int, fit_intercept: bool = True):
        self.fit_intercept = fit_intercept
        self.w = np.zeros(n_features + int(fit_intercept))

    def _aug(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] + int(self.fit_intercept) != self.w.shape[0]:
            raise DodaiError(f"perceptron expects X of shape (N, {self.w.shape[0] - int(self.fit_intercept)})")
        return np.hstack([X, np.ones((len(X), 1))]) if self.fit_intercept else X

    def decision_function(self, X) -> np.ndarray:
        return self._aug(X) @ self.w

    def predict(self, X) -> np.ndarray:
        """+1 / -1 (a score of exactly 0 counts as -1, and as a mistake during training)."""
        return np.where(self.decision_function(X) > 0, 1, -1)

    def fit(self, X, y, max_epochs: int = 1000, shuffle_seed: int | None = None) -> FitResult:
        Xa = self._aug(X)
        y = _labels_pm1(y)
        if len(y) != len(Xa):
            raise DodaiError(f"X has {len(Xa)} rows but y has {len(y)} labels")
        rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        res = FitResult(updates=0, epochs=0, converged=False)
        for _ in range(max_epochs):
            order = rng.permutation(len(y)) if rng is not None else range(len(y))
            mistakes = 0
            for i in order:
                if y[i] * (Xa[i] @ self.w) <= 0:  # wrong side of (or on) the hyperplane
                    self.w += y[i] * Xa[i]  # Rosenblatt's update: rotate w toward y x
                    mistakes += 1
            res.updates += mistakes
            res.epochs += 1
            res.accuracy.append(float(np.mean(np.where(Xa @ self.w > 0, 1, -1) == y)))
            if mistakes == 0:
                res.converged = True
                break
        return res


def margin_and_radius(X, y, u, fit_intercept: bool = True) -> tuple[float, float]:
    """γ = min_i y_i u·x̃_i / ‖u‖ and R = max_i ‖x̃_i‖ for the augmented points x̃ = [x, 1]."""
    X = np.asarray(X, dtype=np.float64)
    Xa = np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X
    u = np.asarray(u, dtype=np.float64)
    gamma = float(np.min(_labels_pm1(y) * (Xa @ u)) / np.linalg.norm(u))
    return gamma, float(np.max(np.linalg.norm(Xa, axis=1)))


def mistake_bound(X, y, u, fit_intercept: bool = True) -> float:
    """Novikoff's bound (R/γ)² on the perceptron's total number of updates, for the separator ``u``."""
    gamma, R = margin_and_radius(X, y, u, fit_intercept)
    if gamma <= 0:
        raise DodaiError("u does not separate the data (margin ≤ 0); the bound does not apply")
    return (R / gamma) ** 2


def make_separable(n: int, dim: int = 2, margin: float = 0.1, seed: int = 0):
    """Points in [-1, 1]^dim labelled by a random hyperplane, keeping only those ≥ ``margin`` away from it.

    Returns ``(X, y, u)`` with ``u`` the unit separator over the augmented space [x, 1].
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    u = np.append(w / np.linalg.norm(w), rng.uniform(-0.3, 0.3))  # offset ≤ 0.3: the plane crosses the cloud
    u /= np.linalg.norm(u)
    X = np.empty((0, dim))
    while len(X) < n:
        cand = rng.uniform(-1, 1, size=(4 * n, dim))
        s = np.hstack([cand, np.ones((len(cand), 1))]) @ u
        X = np.vstack([X, cand[np.abs(s) >= margin]])
    X = X[:n]
    y = np.where(np.hstack([X, np.ones((n, 1))]) @ u > 0, 1, -1)
    return X, y, u


def xor_data() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points with labels 0/1."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return X, np.array([0, 1, 1, 0])
