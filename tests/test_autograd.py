"""The NumPy autograd engine vs torch.autograd (float64, rel 1e-8) and vs finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

from dodai.basics import autograd as ag
from dodai.basics.autograd import Tensor, no_grad
from dodai.errors import DodaiError


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny tensors: thread hand-offs dominate, and on a busy 2-core box they cost ~10 ms per op
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SETTINGS = settings(max_examples=20, deadline=None)
RTOL, ATOL = 1e-8, 1e-12


def _pair(arrays):
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    return ours, theirs


def check(f_ours, f_torch, arrays, seed=0):
    """Same inputs into both engines; same random upstream gradient; compare outputs and all gradients."""
    ours, theirs = _pair(arrays)
    y = f_ours(*ours)
    yt = f_torch(*theirs)
    torch.testing.assert_close(torch.from_numpy(np.asarray(y.data)), yt.detach(), rtol=RTOL, atol=ATOL)
    g = np.random.default_rng(seed).standard_normal(yt.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    for a, at in zip(ours, theirs):
        assert a.grad is not None and a.grad.shape == a.shape
        torch.testing.assert_close(torch.from_numpy(a.grad), at.grad, rtol=RTOL, atol=ATOL)


def rand(seed, *shapes, low=None):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(s) for s in shapes]
    if low is not None:  # keep away from zero (division, log)
        out = [np.sign(a) * (np.abs(a) + low) for a in out]
    return out


seeds = st.integers(0, 2**31 - 1)


@SETTINGS
@given(mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4), seeds,
       st.sampled_from(["add", "sub", "mul", "div"]))
def test_binary_ops_with_broadcasting(shapes, seed, op):
    a, b = rand(seed, *shapes.input_shapes, low=0.5)
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    check(f, f, [a, b], seed)


@SETTINGS
@given(array_shapes(min_dims=0, max_dims=3, max_side=4), seeds, st.sampled_from([2, 3, -1, 0.5, -1.5]))
def test_pow(shape, seed, k):
    (a,) = rand(seed, shape)
    a = np.abs(a) + 0.5
    check(lambda x: x**k, lambda x: x**k, [a], seed)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.sampled_from([(), (3,), (2, 1)]),
       st.sampled_from([(), (1,), (2, 3)]), st.sampled_from(["mm", "vec_left", "vec_right"]), seeds)
def test_matmul_batched_and_vectors(n, k, m, ba, bb, kind, seed):
    if kind == "vec_left":
        sa, sb = (k,), (*bb, k, m)
    elif kind == "vec_right":
        sa, sb = (*ba, n, k), (k,)
    else:
        if ba and bb and len(ba) == len(bb) and ba != bb and 1 not in ba and 1 not in bb:
            bb = ()
        sa, sb = (*ba, n, k), (*bb, k, m)
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        sb = (k, m) if kind != "vec_right" else sb
    a, b = rand(seed, sa, sb)
    check(lambda x, y: x @ y, lambda x, y: x @ y, [a, b], seed)


@SETTINGS
@given(array_shapes(min_dims=1, max_dims=4, max_side=4), seeds, st.booleans(), st.data())
def test_reductions(shape, seed, keepdims, data):
    (a,) = rand(seed, shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    dims = tuple(range(len(shape))) if axis is None else axis
    check(lambda x: x.sum(axis=axis, keepdims=keepdims), lambda x: x.sum(dim=dims, keepdim=keepdims), [a], seed)
    check(lambda x: x.mean(axis=axis, keepdims=keepdims), lambda x: x.mean(dim=dims, keepdim=keepdims), [a], seed)
    check(lambda x: x.max(axis=axis, keepdims=keepdims), lambda x: x.amax(dim=dims, keepdim=keepdims), [a], seed)


@SETTINGS
@given(array_shapes(min_dims=2, max_dims=4, max_side=4), seeds, st.randoms(use_true_random=False))
def test_reshape_transpose(shape, seed, r):
    (a,) = rand(seed, shape)
    perm = list(range(len(shape)))
    r.shuffle(perm)
    check(lambda x: x.transpose(perm).reshape(-1) * 1.0, lambda x: x.permute(perm).reshape(-1), [a], seed)
    check(lambda x: x.T, lambda x: x.permute(*reversed(range(len(shape)))), [a], seed)


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 5), seeds)
def test_indexing_basic_and_integer_arrays(n, m, seed):
    (a,) = rand(seed, (n, m))
    idx = np.random.default_rng(seed).integers(0, n, size=7)  # repeats must accumulate (np.add.at)
    check(lambda x: x[idx], lambda x: x[torch.from_numpy(idx)], [a], seed)
    check(lambda x: x[1:, ::2], lambda x: x[1:, ::2], [a], seed)
    cols = np.random.default_rng(seed + 1).integers(0, m, size=n)
    rows = np.arange(n)
    check(lambda x: x[rows, cols], lambda x: x[torch.from_numpy(rows), torch.from_numpy(cols)], [a], seed)


UNARY = {
    "exp": (lambda x: x.exp(), torch.exp),
    "log": (lambda x: x.log(), torch.log),
    "relu": (lambda x: x.relu(), torch.relu),
    "tanh": (lambda x: x.tanh(), torch.tanh),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid),
    "silu": (lambda x: x.silu(), torch.nn.functional.silu),
    "log_sigmoid": (lambda x: x.log_sigmoid(), torch.nn.functional.logsigmoid),
    "gelu": (lambda x: x.gelu(), torch.nn.functional.gelu),
    "gelu_tanh": (lambda x: x.gelu("tanh"), lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt),
    "neg": (lambda x: -x, lambda x: -x),
}


@SETTINGS
@given(array_shapes(min_dims=0, max_dims=3, max_side=5), seeds, st.sampled_from(sorted(UNARY)))
def test_unary(shape, seed, name):
    (a,) = rand(seed, shape, low=0.05)  # relu's kink at exactly 0 is a measure-zero convention
    a = a * 3
    if name in ("log", "sqrt"):
        a = np.abs(a)
    ours, theirs = UNARY[name]
    check(ours, theirs, [a], seed)


@SETTINGS
@given(array_shapes(min_dims=1, max_dims=3, max_side=5), seeds, st.data())
def test_softmax_family(shape, seed, data):
    (a,) = rand(seed, shape)
    a = a * 5
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(lambda x: x.softmax(axis), lambda x: torch.softmax(x, axis), [a], seed)
    check(lambda x: x.log_softmax(axis), lambda x: torch.log_softmax(x, axis), [a], seed)
    check(lambda x: x.logsumexp(axis), lambda x: torch.logsumexp(x, axis), [a], seed)


@SETTINGS
@given(st.integers(1, 6), st.integers(2, 6), seeds, st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_and_mse(n, c, seed, reduction):
    logits, pred, target = rand(seed, (n, c), (n, c), (n, c))
    y = np.random.default_rng(seed).integers(0, c, size=n)
    check(lambda z: ag.cross_entropy(z, y, reduction),
          lambda z: torch.nn.functional.cross_entropy(z, torch.from_numpy(y), reduction=reduction), [logits], seed)
    yb = np.random.default_rng(seed + 1).random((n, c))
    check(lambda z: ag.binary_cross_entropy_with_logits(z, yb, reduction),
          lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(yb), reduction=reduction),
          [logits], seed)
    check(lambda p, t: ag.mse_loss(p, t, reduction),
          lambda p, t: torch.nn.functional.mse_loss(p, t, reduction=reduction), [pred, target], seed)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), seeds, st.integers(0, 1))
def test_concatenate_and_stack(n, k, seed, axis):
    shapes = [(n + i, 3) if axis == 0 else (3, n + i) for i in range(k)]
    arrs = rand(seed, *shapes)
    check(lambda *xs: ag.concatenate(xs, axis), lambda *xs: torch.cat(xs, axis), arrs, seed)
    same = rand(seed, *[(n, 3)] * k)
    check(lambda *xs: ag.stack(xs, axis), lambda *xs: torch.stack(xs, axis), same, seed)


# ---------------------------------------------------------------- finite differences on composites


def _numgrad(f, arrays, h=1e-6):
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        it = np.nditer(a, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = a[i]
            a[i] = old + h
            fp = f(*arrays)
            a[i] = old - h
            fm = f(*arrays)
            a[i] = old
            g[i] = (fp - fm) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("seed", range(3))
def test_composite_mlp_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 4))
    y = rng.integers(0, 3, size=5)
    W1, b1 = rng.standard_normal((4, 6)), rng.standard_normal(6)
    W2, b2 = rng.standard_normal((6, 3)), rng.standard_normal(3)

    def loss(W1, b1, W2, b2, grad=False):
        ts = [Tensor(a, requires_grad=grad) for a in (W1, b1, W2, b2)]
        h = (Tensor(x) @ ts[0] + ts[1]).gelu("tanh")
        z = h.tanh() * h.sigmoid() @ ts[2] + ts[3]
        L = ag.cross_entropy(z, y) + 0.1 * (ts[0] ** 2).sum() + z.softmax(1).max(axis=1).mean() + z.logsumexp(1).mean()
        return L, ts

    L, ts = loss(W1, b1, W2, b2, grad=True)
    L.backward()
    num = _numgrad(lambda *a: loss(*a)[0].item(), [W1.copy(), b1.copy(), W2.copy(), b2.copy()])
    for t, g in zip(ts, num):
        np.testing.assert_allclose(t.grad, g, rtol=1e-6, atol=1e-8)


def test_composite_with_reuse_and_indexing_matches_finite_differences():
    rng = np.random.default_rng(7)
    E = rng.standard_normal((6, 3))
    idx = np.array([0, 2, 2, 5, 0])

    def f(E, grad=False):
        e = Tensor(E, requires_grad=grad)
        v = e[idx]  # (5, 3) with repeated rows
        s = (v @ v.T).exp().log_softmax(0)  # e used twice through v
        return (s * s).mean() + ag.stack([e[0], e[1]]).relu().sum() + ag.concatenate([v, e], 0).mean(), e

    L, e = f(E, grad=True)
    L.backward()
    (num,) = _numgrad(lambda a: f(a)[0].item(), [E.copy()])
    np.testing.assert_allclose(e.grad, num, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- stability at extreme logits (R2.2, R2.3)


@pytest.mark.parametrize("scale", [1000.0, -1000.0, 1e4])
def test_softmax_cross_entropy_sigmoid_stable_at_extremes(scale):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 5)) * scale
    z[0] = [scale, -scale, 0, scale, -scale]
    y = np.array([1, 0, 2, 4])
    for ours, theirs in [
        (lambda t: t.softmax(1), lambda t: torch.softmax(t, 1)),
        (lambda t: t.log_softmax(1), lambda t: torch.log_softmax(t, 1)),
        (lambda t: ag.cross_entropy(t, y), lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(y))),
        (lambda t: t.sigmoid(), torch.sigmoid),
        (lambda t: t.silu(), torch.nn.functional.silu),
        (lambda t: t.log_sigmoid(), torch.nn.functional.logsigmoid),
        (lambda t: ag.binary_cross_entropy_with_logits(t, (t.data > 0) * 0.8),
         lambda t: torch.nn.functional.binary_cross_entropy_with_logits(t, (t.detach() > 0).double() * 0.8)),
        (lambda t: t.tanh(), torch.tanh),
        (lambda t: t.gelu(), torch.nn.functional.gelu),
    ]:
        x = Tensor(z.copy(), requires_grad=True)
        out = ours(x)
        out.backward(np.ones(out.shape))
        assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(x.grad))
        xt = torch.tensor(z, requires_grad=True)
        ot = theirs(xt)
        ot.backward(torch.ones_like(ot))
        torch.testing.assert_close(torch.from_numpy(np.asarray(out.data)), ot.detach(), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(torch.from_numpy(x.grad), xt.grad, rtol=1e-8, atol=1e-10)


def test_naive_softmax_would_overflow():
    # the reason for the max-subtraction: the textbook formula gives NaN at 1000
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(np.array([1000.0, 0.0])) / np.exp(np.array([1000.0, 0.0])).sum()
    assert np.isnan(naive).any()
    assert np.all(np.isfinite(Tensor([1000.0, 0.0]).softmax().data))


# ---------------------------------------------------------------- semantics


def test_leaf_grads_accumulate_and_intermediates_reset():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * 3).sum()
    y.backward()
    y.backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_same_tensor_twice_gets_both_contributions():
    x = Tensor(np.array([3.0]), requires_grad=True)
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0])
    assert x.grad is not None


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = (x * 2).sum()
    assert not y.requires_grad and y._parents == ()
    assert ag.is_grad_enabled()
    with pytest.raises(DodaiError):
        y.backward()


def test_deep_chain_does_not_hit_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000], rtol=1e-10)


def test_float32_stays_float32():
    w = Tensor(np.ones((3, 2), dtype=np.float32), requires_grad=True)
    y = (Tensor(np.ones((4, 3), dtype=np.float32)) @ w * 2.0 + 1).relu().mean()
    y.backward()
    assert y.dtype == np.float32 and w.grad.dtype == np.float32


def test_dropout_scales_masks_and_is_identity_in_eval():
    rng = np.random.default_rng(0)
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    y = ag.dropout(x, 0.3, training=True, rng=rng)
    kept = y.data != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y.data[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)  # gradient is the mask itself (x = 1)
    assert ag.dropout(x, 0.3, training=False) is x
    with pytest.raises(DodaiError):
        ag.dropout(x, 1.0)


def test_hostile_inputs_raise_dodai_error():
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(DodaiError):
        ag.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(DodaiError):
        ag.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(DodaiError):
        ag.cross_entropy(z, np.array([0]))
    with pytest.raises(DodaiError):
        (z * 2).backward()  # non-scalar without a gradient
    with pytest.raises(DodaiError):
        z.sum().backward(np.ones(3))
    with pytest.raises(DodaiError):
        z.gelu("erf")
    with pytest.raises(DodaiError):
        Tensor(2.0) @ z


def test_ndarray_on_the_left_still_builds_the_graph():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    a = np.array([2.0, -1.0, 0.5])
    y = (a * x + (a - x) + np.ones((3, 3)) @ x).sum()
    assert isinstance(y, Tensor)
    y.backward()
    np.testing.assert_allclose(x.grad, a - 1 + 3)  # d/dx of Σ(J x) = column sums of J = 3
