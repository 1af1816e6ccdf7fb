"""SGD / momentum / Nesterov / Adam / AdamW from scratch vs torch.optim: 100-step trajectories within 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dodai.basics import autograd as ag
from dodai.basics import optim
from dodai.basics.autograd import Tensor
from dodai.errors import DodaiError


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny tensors: thread hand-offs dominate, and on a busy 2-core box they cost ~10 ms per op
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.03, betas=(0.85, 0.95), weight_decay=0.3)),
]


def _problem(seed=0):
    """A small 2-layer tanh network with cross-entropy on random data: non-convex, with real curvature."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 5))
    y = rng.integers(0, 3, size=32)
    w = [rng.standard_normal((5, 8)) * 0.5, np.zeros(8), rng.standard_normal((8, 3)) * 0.5, np.zeros(3)]
    return x, y, w


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_trajectory_matches_torch_optim_over_100_steps(name, kw):
    x, y, w0 = _problem()
    ours = [Tensor(a.copy(), requires_grad=True) for a in w0]
    theirs = [torch.tensor(a, requires_grad=True) for a in w0]
    opt = getattr(optim, name)(ours, **kw)
    opt_t = getattr(torch.optim, name)(theirs, **kw)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    worst = 0.0
    for _ in range(100):
        opt.zero_grad()
        loss = ag.cross_entropy((Tensor(x) @ ours[0] + ours[1]).tanh() @ ours[2] + ours[3], y)
        loss.backward()
        opt.step()
        opt_t.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(torch.tanh(xt @ theirs[0] + theirs[1]) @ theirs[2] + theirs[3], yt)
        loss_t.backward()
        opt_t.step()
        for a, b in zip(ours, theirs):
            worst = max(worst, float(np.max(np.abs(a.data - b.detach().numpy()))))
    assert worst < 1e-6
    # and the parameters actually moved (a no-op optimizer would pass the comparison too)
    assert max(float(np.max(np.abs(a.data - b))) for a, b in zip(ours, w0)) > 0.05


def test_adamw_decay_is_decoupled_from_gradient_scale():
    # zero gradients: plain Adam leaves θ alone, AdamW still shrinks it by (1 - lr·λ) every step
    p1 = Tensor(np.ones(3), requires_grad=True)
    p2 = Tensor(np.ones(3), requires_grad=True)
    a = optim.AdamW([p1], lr=0.1, weight_decay=0.5)
    b = optim.Adam([p2], lr=0.1, weight_decay=0.0)
    for _ in range(5):
        p1.grad = np.zeros(3)
        p2.grad = np.zeros(3)
        a.step()
        b.step()
    np.testing.assert_allclose(p1.data, (1 - 0.1 * 0.5) ** 5)
    np.testing.assert_array_equal(p2.data, np.ones(3))


def test_params_without_grad_are_skipped_and_bad_args_raise():
    p = Tensor(np.ones(2), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(p.data, [1.0, 1.0])
    with pytest.raises(DodaiError):
        optim.SGD([], lr=0.1)
    with pytest.raises(DodaiError):
        optim.SGD([p], lr=-1)
    with pytest.raises(DodaiError):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(DodaiError):
        optim.Adam([p], betas=(1.0, 0.9))
