"""The NumPy-engine MLP on scikit-learn's digits: ≥ 97 % test accuracy, regularizers behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from dodai.basics import mlp as M
from dodai.errors import DodaiError


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with M.blas_threads(1):
        yield


@pytest.fixture(scope="module")
def split():
    return M.standardize(M.digits_split(seed=0))


def test_digits_loader_matches_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = M.load_digits()
    ref = datasets.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    np.testing.assert_allclose(X, ref.data / 16.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, ref.target)


def test_split_is_disjoint_and_fixed():
    a, b = M.digits_split(0), M.digits_split(0)
    np.testing.assert_array_equal(a["y_test"], b["y_test"])
    sizes = [len(a[k]) for k in ("y_train", "y_val", "y_test")]
    assert sum(sizes) == 1797 and sizes[1:] == [300, 360]
    rows = {r.tobytes() for r in a["X_train"]}
    # duplicates exist in digits, so compare counts rather than demand zero overlap
    assert sum(r.tobytes() in rows for r in a["X_test"]) < 5


def test_mlp_reaches_97_percent_on_digits_test_set(split):
    m = M.MLP([64, 128, 10], seed=0)
    hist = M.train(m, split["X_train"], split["y_train"], split["X_val"], split["y_val"],
                   M.TrainConfig(epochs=25, batch_size=32, lr=1e-3, seed=0))
    _, acc = M.evaluate(m, split["X_test"], split["y_test"])
    assert acc >= 0.97
    assert hist.epochs[-1]["train_loss"] < hist.epochs[0]["train_loss"]


def test_early_stopping_restores_best_validation_parameters(split):
    m = M.MLP([64, 256, 10], seed=1)
    hist = M.train(m, split["X_train"][:200], split["y_train"][:200], split["X_val"], split["y_val"],
                   M.TrainConfig(epochs=40, lr=1e-2, early_stopping=3, seed=1))
    best = min(hist.series("val_loss"))
    assert hist.epochs[hist.best_epoch - 1]["val_loss"] == best
    assert hist.stopped_epoch == hist.best_epoch + 3  # patience 3: three epochs without improvement
    assert M.evaluate(m, split["X_val"], split["y_val"])[0] == pytest.approx(best)
    assert hist.stopped_epoch < 40  # it did stop early


def test_l2_and_weight_decay_shrink_weights(split):
    def wnorm(cfg):
        m = M.MLP([64, 32, 10], seed=2)
        M.train(m, split["X_train"][:300], split["y_train"][:300], cfg=cfg)
        return sum(float((W.data**2).sum()) for W in m.weights())

    base = wnorm(M.TrainConfig(epochs=8, seed=2))
    assert wnorm(M.TrainConfig(epochs=8, seed=2, l2=0.1)) < 0.8 * base
    assert wnorm(M.TrainConfig(epochs=8, seed=2, lr=1e-3, weight_decay=5.0)) < 0.9 * base


def test_dropout_only_in_training():
    m = M.MLP([4, 16, 3], dropout=0.5, seed=0)
    x = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_array_equal(m(x).data, m(x).data)
    assert not np.array_equal(m(x, training=True).data, m(x, training=True).data)


def test_digits_come_from_dodais_cache_not_an_installed_sklearn(monkeypatch, tmp_path):
    """An empty cache and a failing download give one DodaiError, even with scikit-learn installed."""
    import subprocess

    from dodai.data import digit_scenes

    monkeypatch.setenv("DODAI_CACHE", str(tmp_path))

    def no_network(*a, **k):
        raise subprocess.CalledProcessError(1, a[0])

    monkeypatch.setattr(digit_scenes.subprocess, "run", no_network)
    with pytest.raises(DodaiError, match="could not download"):
        M.load_digits()
    with pytest.raises(DodaiError, match="not in dodai's cache"):
        digit_scenes.digits_path(download=False)


def test_bad_configs_raise():
    with pytest.raises(DodaiError):
        M.MLP([64])
    with pytest.raises(DodaiError):
        M.MLP([4, 3], activation="swish")
    m = M.MLP([4, 3])
    with pytest.raises(DodaiError):
        M.train(m, np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(DodaiError):
        M.train(m, np.zeros((2, 4)), np.zeros(2, dtype=int), cfg=M.TrainConfig(early_stopping=2))
