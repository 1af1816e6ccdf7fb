"""R2.2 Activations: ReLU, GELU (exact and tanh), SiLU, tanh, sigmoid and their derivatives from dodai's
autograd, checked against torch; softmax / log-softmax / cross-entropy / sigmoid on extreme inputs, where the
textbook formulas overflow and the stable forms (max-subtraction, log-sum-exp, exp(-|x|)) do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dodai.basics import autograd as ag
from dodai.basics.autograd import Tensor
from dodai.experiments.r1_3 import one_torch_thread
from dodai.report import Report
from dodai.viz import pyplot

ACTS = {
    "relu": (lambda t: t.relu(), "relu"),
    "gelu": (lambda t: t.gelu(), "gelu"),
    "gelu (tanh)": (lambda t: t.gelu("tanh"), "gelu_tanh"),
    "silu": (lambda t: t.silu(), "silu"),
    "tanh": (lambda t: t.tanh(), "tanh"),
    "sigmoid": (lambda t: t.sigmoid(), "sigmoid"),
}


def _torch_act(name, x):
    import torch
    import torch.nn.functional as F

    return {"relu": torch.relu, "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
            "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name](x)


def value_and_grad(f, x: np.ndarray):
    t = Tensor(x.copy(), requires_grad=True)
    y = f(t)
    y.backward(np.ones(y.shape))
    return y.data, t.grad


def _naive(name, z, y):
    """The textbook formulas, without the stability tricks."""
    with np.errstate(all="ignore"):
        if name == "softmax":
            return np.exp(z) / np.exp(z).sum(1, keepdims=True)
        if name == "log_softmax":
            return np.log(np.exp(z) / np.exp(z).sum(1, keepdims=True))
        if name == "cross_entropy":
            p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
            return np.array(-np.log(p[np.arange(len(y)), y]).mean())
        if name == "log(sigmoid)":
            return np.log(1 / (1 + np.exp(-z)))
    raise KeyError(name)


def stability_rows(scale: float) -> list[dict]:
    import torch

    rng = np.random.default_rng(0)
    z = rng.standard_normal((8, 10)) * scale
    z[0, :3] = [scale, -scale, scale]
    y = rng.integers(0, 10, size=8)
    zt = torch.from_numpy(z)
    cases = {
        "softmax": (lambda t: t.softmax(1), lambda t: torch.softmax(t, 1)),
        "log_softmax": (lambda t: t.log_softmax(1), lambda t: torch.log_softmax(t, 1)),
        "cross_entropy": (lambda t: ag.cross_entropy(t, y),
                          lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(y))),
        "log(sigmoid)": (lambda t: t.log_sigmoid(), lambda t: torch.nn.functional.logsigmoid(t)),
    }
    rows = []
    for name, (ours, ref) in cases.items():
        with np.errstate(all="ignore"):
            v, g = value_and_grad(ours, z)
        r = ref(zt).numpy()
        naive = _naive(name, z, y)
        finite = bool(np.all(np.isfinite(v)) and np.all(np.isfinite(g)))
        rows.append({"function": name, "logit scale": scale,
                     "naive: non-finite outputs": int(np.sum(~np.isfinite(naive))),
                     "dodai: all finite (value+grad)": finite,
                     "max abs diff vs torch": float(np.max(np.abs(v - r))) if finite else float("nan")})
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    import torch

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R2.2 Activations and numerically stable softmax")
    rep.text(__doc__.strip())
    x = np.linspace(-5, 5, 201 if quick else 1001)
    rows = []
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    with one_torch_thread():
        for label, (f, tname) in ACTS.items():
            v, g = value_and_grad(f, x)
            xt = torch.tensor(x, requires_grad=True)
            yt = _torch_act(tname, xt)
            yt.backward(torch.ones_like(yt))
            rows.append({"activation": label, "max abs diff f vs torch": float(np.max(np.abs(v - yt.detach().numpy()))),
                         "max abs diff f' vs torch": float(np.max(np.abs(g - xt.grad.numpy())))})
            a1.plot(x, v, label=label)
            a2.plot(x, g, label=label)
        rep.heading("Activations and derivatives vs torch (float64, x in [-5, 5])")
        rep.table(rows)
        rep.results["activations"] = rows
        stab = []
        for s in (10.0, 1000.0, 1e4) if not quick else (1000.0,):
            stab += stability_rows(s)
        stab += stability_rows(-1000.0)
    a1.set_title("activation f(x)")
    a2.set_title("derivative f'(x) from dodai's autograd")
    for a in (a1, a2):
        a.axhline(0, color="gray", lw=0.5)
        a.set_xlabel("x")
        a.legend(fontsize=8)
    a1.set_ylim(-1.5, 5)
    fig.tight_layout()
    fig.savefig(out_dir / "activations.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "activations.png", "activations and their derivatives")
    rep.heading("Extreme logits: textbook formula vs dodai's stable forms vs torch")
    rep.table(stab)
    rep.results["stability"] = stab
    rep.results["dodai_all_finite"] = all(r["dodai: all finite (value+grad)"] for r in stab)
    rep.results["naive_failures"] = sum(r["naive: non-finite outputs"] > 0 for r in stab)
    rep.results["max_dev_vs_torch"] = max(max(r["max abs diff f vs torch"], r["max abs diff f' vs torch"])
                                          for r in rows)
    rep.results["stable_max_dev_vs_torch"] = max(r["max abs diff vs torch"] for r in stab)
    rep.write()
    return rep.results
