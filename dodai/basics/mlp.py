"""A multi-layer perceptron on the NumPy autograd engine, trained with mini-batches (R2.1, R2.4).

Shapes: B batch, D_in input features, H hidden width, C classes. ``MLP([D_in, H, ..., C])`` is
Linear → activation → (dropout) → ... → Linear, producing logits (B, C).

Data: the *digits* scans (1,797 8×8 handwritten digits, UCI; Alpaydin & Kaynak 1998) in the CSV that
scikit-learn's wheel carries. dodai fetches it itself (:func:`dodai.data.digit_scenes.digits_path`: the wheel is
pip-downloaded once, never installed, and only its 50 kB data file kept in dodai's cache); scikit-learn is never
imported nor its installed files read.

Regularization (for the overfitting study): L2 penalty ½λ‖W‖² added to the loss (weights only, not biases),
decoupled weight decay through AdamW, inverted dropout (Srivastava et al. 2014), and early stopping
(keep the parameters of the best validation epoch; Prechelt 1998).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from dodai.basics import autograd as ag
from dodai.basics.autograd import Tensor, no_grad
from dodai.basics.optim import Adam, AdamW, Optimizer
from dodai.errors import DodaiError


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Limit NumPy's BLAS thread pool inside the block (via threadpoolctl when installed, else a no-op).

    Why: these matrices are tiny (batch 32 × 256); on a shared, busy machine OpenBLAS worker threads spin
    and wait for cores, which made one epoch ~25× slower than a single thread in our measurements.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n, user_api="blas"):
        yield


class Linear:
    """y = x W + b with W (D_in, D_out). He initialisation N(0, 2/D_in) suits ReLU (He et al. 2015)."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, dtype=np.float32, gain: float = 2.0):
        self.W = Tensor((rng.standard_normal((n_in, n_out)) * np.sqrt(gain / n_in)).astype(dtype), requires_grad=True)
        self.b = Tensor(np.zeros(n_out, dtype=dtype), requires_grad=True)

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.W + self.b  # (B, D_in) @ (D_in, D_out) + (D_out,) -> (B, D_out)


ACTIVATIONS = {"relu": ag.relu, "tanh": ag.tanh, "gelu": ag.gelu, "sigmoid": ag.sigmoid, "silu": ag.silu}


class MLP:
    def __init__(self, sizes: list[int], activation: str = "relu", dropout: float = 0.0, seed: int = 0,
                 dtype=np.float32):
        if len(sizes) < 2 or min(sizes) < 1:
            raise DodaiError(f"MLP sizes must be at least [in, out] with positive widths, got {sizes}")
        if activation not in ACTIVATIONS:
            raise DodaiError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if not 0 <= dropout < 1:
            raise DodaiError(f"dropout must be in [0, 1), got {dropout}")
        self.rng = np.random.default_rng(seed)
        gain = 2.0 if activation in ("relu", "gelu", "silu") else 1.0
        self.layers = [Linear(a, b, self.rng, dtype, gain) for a, b in zip(sizes[:-1], sizes[1:])]
        self.act = ACTIVATIONS[activation]
        self.dropout = dropout
        self.dtype = dtype

    def __call__(self, x, training: bool = False) -> Tensor:
        h = x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=self.dtype))
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
                if self.dropout:
                    h = ag.dropout(h, self.dropout, training=training, rng=self.rng)
        return h  # logits (B, C)

    def parameters(self) -> list[Tensor]:
        return [p for layer in self.layers for p in (layer.W, layer.b)]

    def weights(self) -> list[Tensor]:
        return [layer.W for layer in self.layers]

    def state(self) -> list[np.ndarray]:
        return [p.data.copy() for p in self.parameters()]

    def load_state(self, state: list[np.ndarray]) -> None:
        for p, s in zip(self.parameters(), state):
            p.data[...] = s


# ---------------------------------------------------------------------- data


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits: X (1797, 64) float in [0, 1] (pixel/16), y (1797,) int in 0..9."""
    from dodai.data.digit_scenes import load_digits as load_scans

    images, labels = load_scans()
    return images.reshape(len(images), -1), labels.astype(np.int64)


def digits_split(seed: int = 0, n_val: int = 300, n_test: int = 360) -> dict[str, np.ndarray]:
    """A fixed, seeded split of digits into train / val / test (test is never used for any choice)."""
    X, y = load_digits()
    perm = np.random.default_rng(seed).permutation(len(y))
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return {"X_train": X[tr], "y_train": y[tr], "X_val": X[va], "y_val": y[va], "X_test": X[te], "y_test": y[te]}


def standardize(split: dict[str, np.ndarray], eps: float = 0.1) -> dict[str, np.ndarray]:
    """Per-pixel (x - μ) / (σ + eps) with μ, σ from the *training* images only (no peeking at val/test).

    ``eps`` keeps always-blank border pixels (σ = 0) from blowing up.
    """
    mu = split["X_train"].mean(axis=0)
    sd = split["X_train"].std(axis=0) + eps
    out = dict(split)
    for k in ("X_train", "X_val", "X_test"):
        if k in split:
            out[k] = ((split[k] - mu) / sd).astype(np.float32)
    return out


# ---------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    l2: float = 0.0  # ½λ‖W‖² added to the loss (coupled; weights only)
    early_stopping: int = 0  # patience in epochs; 0 = off. Restores the lowest-val-loss parameters.
    seed: int = 0  # mini-batch order


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)  # per epoch: train_loss, train_acc, val_loss, val_acc
    best_epoch: int = 0  # epoch of the lowest validation loss
    stopped_epoch: int = 0

    def series(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs]


def evaluate(model: MLP, X, y, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) with dropout off and no graph."""
    if len(y) == 0:
        raise DodaiError("evaluate needs at least one example")
    tot, correct = 0.0, 0
    with no_grad():
        for i in range(0, len(y), batch_size):
            z = model(X[i:i + batch_size])
            tot += float(ag.cross_entropy(z, y[i:i + batch_size], reduction="sum").data)
            correct += int(np.sum(np.argmax(z.data, axis=1) == y[i:i + batch_size]))
    return tot / len(y), correct / len(y)


def train(model: MLP, X_train, y_train, X_val=None, y_val=None, cfg: TrainConfig | None = None,
          optimizer: Optimizer | None = None) -> History:
    """Mini-batch training with cross-entropy; logs train/val loss and accuracy after every epoch."""
    cfg = cfg or TrainConfig()
    if len(X_train) != len(y_train) or len(y_train) == 0:
        raise DodaiError(f"train needs matching, non-empty X and y (got {len(X_train)} and {len(y_train)})")
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise DodaiError("batch_size and epochs must be ≥ 1")
    if cfg.early_stopping and X_val is None:
        raise DodaiError("early stopping needs a validation set")
    X_train = np.asarray(X_train, dtype=model.dtype)
    if optimizer is None:
        optimizer = (AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay
                     else Adam(model.parameters(), lr=cfg.lr))
    rng = np.random.default_rng(cfg.seed)
    hist = History()
    best_val, best_state, bad = float("inf"), None, 0
    n = len(y_train)
    for epoch in range(1, cfg.epochs + 1):
        perm = rng.permutation(n)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = ag.cross_entropy(model(X_train[idx], training=True), y_train[idx])
            if cfg.l2:
                loss = loss + 0.5 * cfg.l2 * sum((W * W).sum() for W in model.weights())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        row = {"epoch": epoch}
        row["train_loss"], row["train_acc"] = evaluate(model, X_train, y_train)
        if X_val is not None:
            row["val_loss"], row["val_acc"] = evaluate(model, np.asarray(X_val, dtype=model.dtype), y_val)
        hist.epochs.append(row)
        hist.stopped_epoch = epoch
        # "best" = lowest validation loss (accuracy on a few hundred images moves in coarse, noisy steps)
        if X_val is not None and row["val_loss"] < best_val:
            best_val, hist.best_epoch, bad = row["val_loss"], epoch, 0
            if cfg.early_stopping:
                best_state = model.state()
        elif cfg.early_stopping:
            bad += 1
            if bad >= cfg.early_stopping:
                break
    if cfg.early_stopping and best_state is not None:
        model.load_state(best_state)  # early stopping = the model of the best validation epoch
    return hist
