"""R1.3 Calculus & optimization: backprop from scratch checked against finite differences and torch.autograd,
and SGD / momentum / Adam / AdamW trajectories on the Rosenbrock valley, step for step equal to torch.optim.

Rosenbrock (1960): f(x, y) = (1 - x)² + 100 (y - x²)², minimum 0 at (1, 1) at the end of a long, curved,
narrow valley — the classic picture of why momentum and per-coordinate step sizes help.
Finite differences: central, (f(θ + h e_i) - f(θ - h e_i)) / 2h with h = 1e-6, error O(h²) + O(ε/h).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from dodai.basics import autograd as ag
from dodai.basics import optim
from dodai.basics.autograd import Tensor
from dodai.report import Report
from dodai.viz import pyplot

START = (-1.5, 2.0)
OPTIMIZERS = {
    "SGD": ("SGD", dict(lr=1e-3)),
    "SGD+momentum": ("SGD", dict(lr=1e-3, momentum=0.9)),
    "Adam": ("Adam", dict(lr=0.05)),
    "AdamW": ("AdamW", dict(lr=0.05, weight_decay=0.01)),
}


@contextlib.contextmanager
def one_torch_thread():
    """torch on tiny tensors: one thread avoids pool hand-offs that cost ~10 ms per op on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def rosenbrock(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def trajectory(name: str, steps: int) -> np.ndarray:
    """(steps+1, 2) positions of dodai's optimizer on Rosenbrock."""
    cls, kw = OPTIMIZERS[name]
    p = Tensor(np.array(START), requires_grad=True)
    opt = getattr(optim, cls)([p], **kw)
    path = [p.data.copy()]
    for _ in range(steps):
        opt.zero_grad()
        rosenbrock(p).backward()
        opt.step()
        path.append(p.data.copy())
    return np.array(path)


def torch_trajectory(name: str, steps: int) -> np.ndarray:
    """torch.optim's path on Rosenbrock, the reference for dodai's optimizers. Not a model's training loop
    (two coordinates, no data, no batches): the experiment *is* the optimizer's update rule, so it calls
    ``step`` by hand rather than through :func:`dodai.train.fit.fit`."""
    import torch

    cls, kw = OPTIMIZERS[name]
    p = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, cls)([p], **kw)
    path = [p.detach().numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        ((1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2).backward()
        opt.step()
        path.append(p.detach().numpy().copy())
    return np.array(path)


def _mlp_loss(params, x, y, act):
    W1, b1, W2, b2 = params
    h = getattr(x @ W1 + b1, act)()
    return ag.cross_entropy(h @ W2 + b2, y) + ag.mse_loss((h @ W2).softmax(1), np.eye(W2.shape[1])[y])


def gradient_checks(seed: int = 0) -> list[dict]:
    """A 2-layer network's loss with each activation: autograd vs central differences vs torch.autograd."""
    import torch

    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((6, 4)))
    y = rng.integers(0, 3, size=6)
    arrays = [rng.standard_normal((4, 5)), rng.standard_normal(5), rng.standard_normal((5, 3)), rng.standard_normal(3)]
    rows = []
    for act in ("relu", "tanh", "sigmoid", "gelu", "silu"):
        ps = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        _mlp_loss(ps, x, y, act).backward()
        ours = np.concatenate([p.grad.ravel() for p in ps])
        flat = np.concatenate([a.ravel() for a in arrays])
        h = 1e-6

        def f(v, act=act):
            parts, i = [], 0
            for a in arrays:
                parts.append(Tensor(v[i:i + a.size].reshape(a.shape)))
                i += a.size
            return _mlp_loss(parts, x, y, act).item()

        num = np.empty_like(flat)
        for i in range(flat.size):
            e = np.zeros_like(flat)
            e[i] = h
            num[i] = (f(flat + e) - f(flat - e)) / (2 * h)
        tp = [torch.tensor(a, requires_grad=True) for a in arrays]
        xt = torch.from_numpy(x.data)
        ht = getattr(torch.nn.functional, act)(xt @ tp[0] + tp[1]) if act in ("relu", "gelu", "silu") else \
            getattr(torch, act)(xt @ tp[0] + tp[1])
        z = ht @ tp[2] + tp[3]
        lt = torch.nn.functional.cross_entropy(z, torch.from_numpy(y)) + torch.nn.functional.mse_loss(
            (ht @ tp[2]).softmax(1), torch.from_numpy(np.eye(3)[y]))
        lt.backward()
        ref = torch.cat([t.grad.ravel() for t in tp]).numpy()
        scale = np.maximum(np.abs(ref), 1e-3)
        rows.append({"activation": act, "params": flat.size,
                     "max rel err vs finite diff": float(np.max(np.abs(ours - num) / scale)),
                     "max rel err vs torch.autograd": float(np.max(np.abs(ours - ref) / scale))})
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    rep = Report(out_dir, "R1.3 Calculus & optimization: autograd and optimizers from scratch")
    rep.text(__doc__.split("\n\n")[0])

    rep.heading("Gradients: dodai's autograd vs finite differences vs torch.autograd")
    with one_torch_thread():
        checks = gradient_checks()
    rep.table(checks)
    rep.results["grad_max_rel_err_fd"] = max(r["max rel err vs finite diff"] for r in checks)
    rep.results["grad_max_rel_err_torch"] = max(r["max rel err vs torch.autograd"] for r in checks)

    steps = 400 if quick else 3000
    rep.heading(f"Optimizers on Rosenbrock from {START}, {steps} steps")
    paths, rows = {}, []
    for name in OPTIMIZERS:
        path = trajectory(name, steps)
        with one_torch_thread():
            ref = torch_trajectory(name, steps)
        paths[name] = path
        final = path[-1]
        rows.append({"optimizer": name, "hyper-parameters": str(OPTIMIZERS[name][1]),
                     "final x": float(final[0]), "final y": float(final[1]),
                     "distance to (1,1)": float(np.linalg.norm(final - 1.0)),
                     "final f": float((1 - final[0]) ** 2 + 100 * (final[1] - final[0] ** 2) ** 2),
                     "max abs diff vs torch.optim": float(np.max(np.abs(path - ref)))})
    rep.table(rows)
    rep.results["optimizers"] = rows
    rep.results["trajectory_max_dev_vs_torch"] = max(r["max abs diff vs torch.optim"] for r in rows)

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
    f = (1 - gx) ** 2 + 100 * (gy - gx**2) ** 2
    ax.contour(gx, gy, np.log10(f + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], "-", lw=1.2, label=name)
    ax.plot(*START, "ko", label="start")
    ax.plot(1, 1, "r*", ms=12, label="minimum (1, 1)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"Rosenbrock: {steps} steps of each optimizer (dodai, NumPy)")
    ax.legend(fontsize=8)
    for name, path in paths.items():
        fx = (1 - path[:, 0]) ** 2 + 100 * (path[:, 1] - path[:, 0] ** 2) ** 2
        ax2.plot(np.arange(len(fx)), np.maximum(fx, 1e-30), label=name)
    ax2.set_xscale("symlog", linthresh=10)
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("f(x, y)")
    ax2.set_title("loss along each trajectory")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "rosenbrock.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "rosenbrock.png", "optimizer trajectories on the Rosenbrock function")
    rep.text("Every trajectory is recomputed with torch.optim from the same start; the last column is the "
             "largest coordinate difference over all steps.")
    rep.write()
    return rep.results
