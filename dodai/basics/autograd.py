"""A reverse-mode automatic differentiation engine on NumPy arrays: backprop from scratch (R1.3, R2.2, R2.3).

A :class:`Tensor` wraps an ``np.ndarray`` (``.data``) and, when it takes part in a differentiable
computation, remembers its parents and a *backward function*: given dL/d(out) it returns dL/d(parent)
for every parent (the vector-Jacobian product, "VJP"). ``loss.backward()`` visits the graph in reverse
topological order and applies the chain rule, accumulating into ``.grad`` — the same design as
micrograd (Karpathy) and torch.autograd, but on whole arrays instead of scalars.

Conventions
- ``g`` always means the upstream gradient dL/d(out), an array shaped like ``out``.
- Broadcasting: an op that broadcasts its inputs must *un-broadcast* the gradient, i.e. sum it over
  the axes that broadcasting created or stretched (:func:`unbroadcast`), so ``x.grad.shape == x.shape``.
- dtype follows the data: float64 by default (what the gradient tests use), float32 when the caller
  builds float32 parameters (faster training). Python scalars adopt the other operand's dtype.
- Leaves (tensors created by the user with ``requires_grad=True``) *accumulate* ``.grad`` across
  ``backward`` calls like torch; call ``zero_grad`` / set ``.grad = None`` between steps.
- Inside ``with no_grad():`` no graph is recorded (evaluation, optimizer updates).

Every backward function carries its derivative as a comment: that is the point of this module.
Numerically stable forms: softmax / log-softmax subtract the row max (log-sum-exp trick), sigmoid
uses ``exp(-|x|)``, cross-entropy is fused with log-softmax so ±1000 logits give finite values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np

from dodai.errors import DodaiError

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad():
    """Inside this block operations record no graph (like ``torch.no_grad``)."""
    global _GRAD_ENABLED
    prev, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = prev


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape``: the adjoint of NumPy broadcasting.

    Broadcasting prepends axes and stretches size-1 axes; each copy of an input element received its
    own gradient, so the input's gradient is the sum over the copies.
    """
    while g.ndim > len(shape):  # axes that broadcasting prepended
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):  # size-1 axes that broadcasting stretched
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def _as_array(x, dtype=None) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


class Tensor:
    """An n-dimensional array that records the operations applied to it so it can backpropagate.

    >>> x = Tensor(np.ones((2, 3)), requires_grad=True)
    >>> y = (x * 2).sum()
    >>> y.backward(); x.grad        # all twos
    """

    __array_priority__ = 100  # make ``ndarray * Tensor`` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data: np.ndarray = _as_array(data, dtype)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable[[np.ndarray], Sequence[np.ndarray | None]] | None = None
        self._op = ""

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _make(data: np.ndarray, parents: tuple[Tensor, ...], backward, op: str) -> Tensor:
        """A result tensor; keeps the graph only if some parent needs a gradient."""
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        out.requires_grad = _GRAD_ENABLED and any(p.requires_grad for p in parents)
        out._parents = parents if out.requires_grad else ()
        out._backward = backward if out.requires_grad else None
        out._op = op
        return out

    def _lift(self, other) -> Tensor:
        return other if isinstance(other, Tensor) else Tensor(np.asarray(other, dtype=self.data.dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return float(self.data)

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def __repr__(self) -> str:
        op = f", op={self._op}" if self._op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{op}, requires_grad={self.requires_grad})"

    def backward(self, grad=None) -> None:
        """Reverse-mode sweep: dL/d(node) for every node that needs it, accumulated into leaves' ``.grad``.

        ``grad`` is dL/d(self); it defaults to 1 for a scalar.
        """
        if not self.requires_grad:
            raise DodaiError("backward() on a tensor that does not require grad (no parameter needs a gradient)")
        if grad is None:
            if self.data.size != 1:
                raise DodaiError(f"backward() needs a gradient for a non-scalar tensor of shape {self.shape}")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.data.dtype)
        if grad.shape != self.shape:
            raise DodaiError(f"gradient shape {grad.shape} does not match tensor shape {self.shape}")

        # Topological order, iteratively (deep graphs such as RNNs would overflow Python's recursion).
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if id(p) not in seen:
                    stack.append((p, False))

        # Intermediate gradients start fresh every sweep; leaves accumulate (torch semantics).
        for node in order:
            if node._parents:
                node.grad = None
        self.grad = grad if self.grad is None or self._parents else self.grad + grad
        for node in reversed(order):
            if node._backward is None or node.grad is None:
                continue
            for p, gp in zip(node._parents, node._backward(node.grad)):
                if gp is None or not p.requires_grad:
                    continue
                if p.grad is None:
                    # a leaf keeps its own copy: backward functions may hand the same array to two parents
                    p.grad = gp if p._parents else np.array(gp, dtype=p.data.dtype)
                else:
                    p.grad = p.grad + gp

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ elementwise arithmetic
    def __add__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self, other

        def backward(g):
            # d(a+b)/da = 1, d(a+b)/db = 1 (then undo broadcasting)
            return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

        return Tensor._make(a.data + b.data, (a, b), backward, "add")

    __radd__ = __add__

    def __neg__(self) -> Tensor:
        # d(-a)/da = -1
        return Tensor._make(-self.data, (self,), lambda g: (-g,), "neg")

    def __sub__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self, other

        def backward(g):
            # d(a-b)/da = 1, d(a-b)/db = -1
            return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)

        return Tensor._make(a.data - b.data, (a, b), backward, "sub")

    def __rsub__(self, other) -> Tensor:
        return self._lift(other) - self

    def __mul__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self, other

        def backward(g):
            # d(ab)/da = b, d(ab)/db = a
            return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)

        return Tensor._make(a.data * b.data, (a, b), backward, "mul")

    __rmul__ = __mul__

    def __truediv__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self, other

        def backward(g):
            # d(a/b)/da = 1/b, d(a/b)/db = -a/b²
            return unbroadcast(g / b.data, a.shape), unbroadcast(-g * a.data / (b.data * b.data), b.shape)

        return Tensor._make(a.data / b.data, (a, b), backward, "div")

    def __rtruediv__(self, other) -> Tensor:
        return self._lift(other) / self

    def __pow__(self, k) -> Tensor:
        if isinstance(k, Tensor):
            raise DodaiError("Tensor ** Tensor is not supported; use exp(b * log(a))")
        k = float(k)
        a = self

        def backward(g):
            # d(a^k)/da = k a^(k-1)
            return (g * k * a.data ** (k - 1),)

        return Tensor._make(a.data**k, (a,), backward, "pow")

    # ------------------------------------------------------------------ linear algebra
    def __matmul__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self, other
        if a.ndim == 0 or b.ndim == 0:
            raise DodaiError("matmul needs at least 1-D operands")
        # 1-D operands: promote to matrices exactly like np.matmul, multiply, then drop the added axis.
        if a.ndim == 1:
            return (a.reshape(1, -1) @ b).reshape(*_matmul_shape(a.shape, b.shape))
        if b.ndim == 1:
            return (a @ b.reshape(-1, 1)).reshape(*_matmul_shape(a.shape, b.shape))

        def backward(g):
            # C = A B  =>  dL/dA = G Bᵀ, dL/dB = Aᵀ G  (batch axes broadcast, so un-broadcast them)
            ga = g @ np.swapaxes(b.data, -1, -2)
            gb = np.swapaxes(a.data, -1, -2) @ g
            return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)

        return Tensor._make(a.data @ b.data, (a, b), backward, "matmul")

    def __rmatmul__(self, other) -> Tensor:
        return self._lift(other) @ self

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        a = self

        def backward(g):
            # d(Σx)/dx_i = 1: copy the gradient back to every summed element
            if not keepdims and axis is not None:
                g = np.expand_dims(g, _norm_axes(axis, a.ndim))
            return (np.broadcast_to(g, a.shape).copy(),)

        return Tensor._make(np.sum(a.data, axis=axis, keepdims=keepdims), (a,), backward, "sum")

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        n = self.data.size if axis is None else math.prod(self.shape[i] for i in _norm_axes(axis, self.ndim))
        # mean = sum / n, so the gradient is 1/n per element
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / n)

    def max(self, axis=None, keepdims: bool = False) -> Tensor:
        a = self
        out = np.max(a.data, axis=axis, keepdims=True)

        def backward(g):
            # d(max x)/dx_i = 1 where x_i is the max (shared equally among ties, like torch.amax), else 0
            if not keepdims and axis is not None:
                g = np.expand_dims(g, _norm_axes(axis, a.ndim))
            elif not keepdims:
                g = np.reshape(g, (1,) * a.ndim)
            mask = (a.data == out).astype(a.data.dtype)
            mask /= mask.sum(axis=axis, keepdims=True)
            return (mask * g,)

        data = out if keepdims else (np.max(a.data, axis=axis))
        return Tensor._make(np.asarray(data), (a,), backward, "max")

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        a = self
        # reshaping moves no values: the gradient is reshaped back
        return Tensor._make(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),), "reshape")

    def transpose(self, *axes) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
        inv = tuple(np.argsort(axes))
        # a permutation of axes: the gradient goes through the inverse permutation
        return Tensor._make(self.data.transpose(axes), (self,), lambda g: (g.transpose(inv),), "transpose")

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def __getitem__(self, idx) -> Tensor:
        a = self
        if isinstance(idx, Tensor):
            idx = idx.data.astype(np.intp)

        def backward(g):
            # indexing picks elements; each picked element's gradient flows back to where it came from.
            # np.add.at accumulates repeated integer indices (x[[0, 0]] gets the gradient twice).
            ga = np.zeros_like(a.data)
            np.add.at(ga, idx, g)
            return (ga,)

        return Tensor._make(np.asarray(a.data[idx]), (a,), backward, "getitem")

    # ------------------------------------------------------------------ elementwise functions
    def exp(self) -> Tensor:
        y = np.exp(self.data)
        # d(eˣ)/dx = eˣ
        return Tensor._make(y, (self,), lambda g: (g * y,), "exp")

    def log(self) -> Tensor:
        a = self
        # d(ln x)/dx = 1/x
        return Tensor._make(np.log(a.data), (a,), lambda g: (g / a.data,), "log")

    def sqrt(self) -> Tensor:
        return self**0.5

    def relu(self) -> Tensor:
        a = self
        # d relu(x)/dx = 1 if x > 0 else 0 (0 at x = 0, the torch convention)
        return Tensor._make(np.maximum(a.data, 0), (a,), lambda g: (g * (a.data > 0),), "relu")

    def tanh(self) -> Tensor:
        y = np.tanh(self.data)
        # d tanh(x)/dx = 1 - tanh²(x)
        return Tensor._make(y, (self,), lambda g: (g * (1 - y * y),), "tanh")

    def sigmoid(self) -> Tensor:
        y = _sigmoid(self.data)
        # dσ/dx = σ(1-σ)
        return Tensor._make(y, (self,), lambda g: (g * y * (1 - y),), "sigmoid")

    def log_sigmoid(self) -> Tensor:
        x = self.data
        # log σ(x) = min(x, 0) - log(1 + e^{-|x|}): never log(0), never exp(+big)
        y = np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))
        # d log σ(x)/dx = 1 - σ(x) = σ(-x)
        return Tensor._make(y, (self,), lambda g: (g * _sigmoid(-x),), "log_sigmoid")

    def silu(self) -> Tensor:
        x = self.data
        s = _sigmoid(x)
        # silu(x) = x σ(x);  d/dx = σ + x σ(1-σ)   (Hendrycks & Gimpel 2016; Ramachandran et al. 2017)
        return Tensor._make(x * s, (self,), lambda g: (g * (s + x * s * (1 - s)),), "silu")

    def gelu(self, approximate: str = "none") -> Tensor:
        """GELU(x) = x Φ(x) (Hendrycks & Gimpel 2016). ``approximate="tanh"`` is GPT-2's form
        0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))); ``"none"`` is exact with erf, as torch's default."""
        x = self.data
        if approximate == "tanh":
            c = math.sqrt(2.0 / math.pi)
            u = c * (x + 0.044715 * x**3)
            t = np.tanh(u)
            y = 0.5 * x * (1 + t)

            def backward(g):
                # d/dx = ½(1+t) + ½x(1-t²)·c(1 + 3·0.044715 x²)
                return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)),)
        elif approximate == "none":
            cdf = 0.5 * (1 + _erf(x / math.sqrt(2.0)))
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            y = x * cdf

            def backward(g):
                # d(xΦ(x))/dx = Φ(x) + x φ(x)
                return (g * (cdf + x * pdf),)
        else:
            raise DodaiError(f"gelu approximate must be 'none' or 'tanh', not {approximate!r}")
        return Tensor._make(y.astype(x.dtype, copy=False), (self,), backward, "gelu")

    def softmax(self, axis: int = -1) -> Tensor:
        y = _softmax(self.data, axis)

        def backward(g):
            # y = softmax(x): dL/dx = y ⊙ (g - Σ_j g_j y_j)   (Jacobian diag(y) - y yᵀ, applied to g)
            return (y * (g - np.sum(g * y, axis=axis, keepdims=True)),)

        return Tensor._make(y, (self,), backward, "softmax")

    def log_softmax(self, axis: int = -1) -> Tensor:
        y = _log_softmax(self.data, axis)

        def backward(g):
            # y = x - logsumexp(x): dL/dx = g - softmax(x) Σ_j g_j
            return (g - np.exp(y) * np.sum(g, axis=axis, keepdims=True),)

        return Tensor._make(y, (self,), backward, "log_softmax")

    def logsumexp(self, axis: int = -1, keepdims: bool = False) -> Tensor:
        x = self.data
        m = np.max(x, axis=axis, keepdims=True)
        lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))

        def backward(g):
            # d logsumexp(x)/dx = softmax(x)
            if not keepdims:
                g = np.expand_dims(g, axis)
            return (g * np.exp(x - lse),)

        return Tensor._make(lse if keepdims else np.squeeze(lse, axis), (self,), backward, "logsumexp")


# ---------------------------------------------------------------------- helpers on raw arrays


def _norm_axes(axis, ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _matmul_shape(sa, sb) -> tuple[int, ...]:
    return np.empty(sa, dtype=np.int8).__matmul__(np.empty(sb, dtype=np.int8)).shape


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) without overflow: exp(-|x|) never exceeds 1."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


_erf_vec = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    # NumPy has no erf; math.erf elementwise is exact to double precision (slow, fine for teaching sizes).
    return np.asarray(_erf_vec(x), dtype=np.float64)


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x - logsumexp(x): subtracting the max keeps exp() ≤ 1, so ±1000 logits stay finite."""
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


# ---------------------------------------------------------------------- functional API


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def exp(x: Tensor) -> Tensor:
    return x.exp()


def log(x: Tensor) -> Tensor:
    return x.log()


def relu(x: Tensor) -> Tensor:
    return x.relu()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def silu(x: Tensor) -> Tensor:
    return x.silu()


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    return x.gelu(approximate)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return x.softmax(axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return x.log_softmax(axis)


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    ts = tuple(tensors)
    if not ts:
        raise DodaiError("concatenate needs at least one tensor")
    sizes = [t.shape[axis] for t in ts]
    cuts = np.cumsum(sizes)[:-1]

    def backward(g):
        # concatenation is a block copy: each input gets its block of the gradient
        return tuple(np.split(g, cuts, axis=axis))

    return Tensor._make(np.concatenate([t.data for t in ts], axis=axis), ts, backward, "concatenate")


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    ts = tuple(tensors)
    if not ts:
        raise DodaiError("stack needs at least one tensor")
    ax = axis % (ts[0].ndim + 1)

    def backward(g):
        # each input gets its slice of the gradient along the new axis
        return tuple(np.take(g, i, axis=ax) for i in range(len(ts)))

    return Tensor._make(np.stack([t.data for t in ts], axis=ax), ts, backward, "stack")


def cross_entropy(logits: Tensor, targets, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy -log softmax(z)[y], fused and stable (logits (N, C), integer targets (N,)).

    Fused because the gradient is then simply softmax(z) - onehot(y): finite for any logits.
    """
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.ndim != 2 or t.shape != (logits.shape[0],):
        raise DodaiError(f"cross_entropy wants logits (N, C) and targets (N,), got {logits.shape} and {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise DodaiError("cross_entropy targets must be integer class indices")
    n, c = logits.shape
    if n and (t.min() < 0 or t.max() >= c):
        raise DodaiError(f"cross_entropy target out of range [0, {c})")
    logp = _log_softmax(logits.data, axis=1)
    rows = np.arange(n)
    losses = -logp[rows, t]
    if reduction == "mean":
        out, scale = losses.mean(), 1.0 / n
    elif reduction == "sum":
        out, scale = losses.sum(), 1.0
    elif reduction == "none":
        out, scale = losses, None
    else:
        raise DodaiError(f"reduction must be mean, sum or none, not {reduction!r}")

    def backward(g):
        # L = -z_y + logsumexp(z)  =>  dL/dz = softmax(z) - onehot(y)
        d = np.exp(logp)
        d[rows, t] -= 1
        return (d * (g * scale if scale is not None else g[:, None]),)

    return Tensor._make(np.asarray(out, dtype=logits.dtype), (logits,), backward, "cross_entropy")


def mse_loss(pred: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error mean((pred - target)²); d/dpred = 2 (pred - target) / n."""
    diff = pred - target
    sq = diff * diff
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise DodaiError(f"reduction must be mean, sum or none, not {reduction!r}")


def binary_cross_entropy_with_logits(logits: Tensor, targets, reduction: str = "mean") -> Tensor:
    """-(y log σ(z) + (1 - y) log σ(-z)) with targets y in [0, 1], via the stable log σ."""
    y = targets if isinstance(targets, Tensor) else Tensor(np.asarray(targets, dtype=logits.dtype))
    if y.shape != logits.shape:
        raise DodaiError(f"targets shape {y.shape} does not match logits shape {logits.shape}")
    losses = -(y * logits.log_sigmoid() + (1 - y) * (-logits).log_sigmoid())
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise DodaiError(f"reduction must be mean, sum or none, not {reduction!r}")


def dropout(x: Tensor, p: float, training: bool = True, rng: np.random.Generator | None = None) -> Tensor:
    """Inverted dropout (Srivastava et al. 2014): zero each unit with probability p, scale the rest by
    1/(1-p) so the expected activation is unchanged and evaluation needs no rescaling."""
    if not 0.0 <= p < 1.0:
        raise DodaiError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    rng = rng or np.random.default_rng()
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1.0 - p)
    # y = x ⊙ m  =>  dL/dx = g ⊙ m
    return x * mask
