"""R2.3 Losses: cross-entropy vs mean squared error for classification.

Why cross-entropy: with a sigmoid (or softmax) output p = σ(z), the cross-entropy gradient is
dL/dz = p - y — large when the model is confidently wrong. MSE on the probability gives
dL/dz = 2(p - y)·p(1 - p): the saturating factor p(1 - p) → 0 kills the gradient exactly when the model is
most wrong (Golik, Doetsch & Ney 2013; Bishop 2006 §5.2). Below: both gradients from dodai's autograd (checked
against torch), then the same MLP on digits trained with softmax + CE and with softmax + MSE to one-hot targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dodai.basics import autograd as ag
from dodai.basics.autograd import Tensor, no_grad
from dodai.basics.mlp import MLP, digits_split, standardize
from dodai.basics.optim import SGD
from dodai.experiments.r1_3 import one_torch_thread
from dodai.report import Report
from dodai.viz import pyplot


def logit_gradients(z: np.ndarray, y: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """dL/dz per example for binary CE (on logits) and for MSE on σ(z), target y."""
    t = Tensor(z.copy(), requires_grad=True)
    ag.binary_cross_entropy_with_logits(t, np.full_like(z, y), reduction="sum").backward()
    g_ce = t.grad
    t = Tensor(z.copy(), requires_grad=True)
    ag.mse_loss(t.sigmoid(), np.full_like(z, y), reduction="sum").backward()
    return g_ce, t.grad


def train_curve(loss_name: str, split: dict, epochs: int, lr: float, seed: int = 0, hidden: int = 64) -> list[dict]:
    """Plain SGD (no adaptive step sizes that would hide the gradient scale), same init for both losses.

    dodai's NumPy autograd (:mod:`dodai.basics`), not torch: :func:`dodai.train.fit.fit` is a torch loop, and
    R2 is about the maths written out in NumPy, so this loop stays here."""
    m = MLP([64, hidden, 10], seed=seed)
    opt = SGD(m.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    Xtr, ytr = split["X_train"], split["y_train"]
    eye = np.eye(10, dtype=np.float32)
    rows = []
    for ep in range(1, epochs + 1):
        perm = rng.permutation(len(ytr))
        for i in range(0, len(ytr), 32):
            idx = perm[i:i + 32]
            z = m(Xtr[idx], training=True)
            if loss_name == "cross-entropy":
                loss = ag.cross_entropy(z, ytr[idx])
            else:  # squared error between the softmax probabilities and the one-hot target, summed over classes
                loss = ag.mse_loss(z.softmax(1), eye[ytr[idx]], reduction="sum") * (1.0 / len(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with no_grad():
            acc_tr = float(np.mean(np.argmax(m(Xtr).data, 1) == ytr))
            acc_va = float(np.mean(np.argmax(m(split["X_val"]).data, 1) == split["y_val"]))
        rows.append({"epoch": ep, "train_acc": acc_tr, "val_acc": acc_va})
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    import torch

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R2.3 Losses: cross-entropy vs MSE for classification")
    rep.text(__doc__.strip())

    z = np.linspace(-10, 10, 401)
    g_ce, g_mse = logit_gradients(z)
    with one_torch_thread():
        zt = torch.tensor(z, requires_grad=True)
        torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.ones_like(zt), reduction="sum").backward()
        ref_ce = zt.grad.numpy().copy()
        zt = torch.tensor(z, requires_grad=True)
        torch.nn.functional.mse_loss(torch.sigmoid(zt), torch.ones_like(zt), reduction="sum").backward()
        ref_mse = zt.grad.numpy()
    rep.results["grad_max_dev_vs_torch"] = float(max(np.abs(g_ce - ref_ce).max(), np.abs(g_mse - ref_mse).max()))
    probe = [-10.0, -5.0, -2.0, 0.0, 2.0, 5.0]
    rows = []
    for zv in probe:
        gc, gm = logit_gradients(np.array([zv]))
        rows.append({"logit z (target y = 1)": zv, "p = σ(z)": float(1 / (1 + np.exp(-zv))),
                     "abs dCE/dz": float(abs(gc[0])), "abs dMSE/dz": float(abs(gm[0]))})
    rep.heading("Gradient w.r.t. the logit (binary, target 1)")
    rep.table(rows)
    rep.results["grad_table"] = rows
    rep.results["ce_grad_at_minus10"] = rows[0]["abs dCE/dz"]
    rep.results["mse_grad_at_minus10"] = rows[0]["abs dMSE/dz"]

    split = standardize(digits_split(seed=0))
    epochs = 6 if quick else 30
    curves = {name: train_curve(name, split, epochs, lr=0.05) for name in ("cross-entropy", "MSE")}
    rep.heading(f"Digits MLP 64-64-10, plain SGD lr 0.05, batch 32, {epochs} epochs")
    table = []
    for name, c in curves.items():
        table.append({"loss": name, "val acc after epoch 1": c[0]["val_acc"],
                      f"val acc after epoch {epochs}": c[-1]["val_acc"],
                      "mean val acc over epochs": float(np.mean([r["val_acc"] for r in c]))})
    rep.table(table)
    rep.results["training"] = table
    rep.results["curves"] = curves

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.3))
    a1.plot(z, np.abs(g_ce), label="cross-entropy: |σ(z) - 1|")
    a1.plot(z, np.abs(g_mse), label="MSE on σ(z): |2(σ-1)σ(1-σ)|")
    a1.set_xlabel("logit z (target 1; z < 0 is a wrong prediction)")
    a1.set_ylabel("|dL/dz|")
    a1.set_title("gradient at the logit")
    a1.legend(fontsize=8)
    for name, c in curves.items():
        a2.plot([r["epoch"] for r in c], [r["val_acc"] for r in c], "o-", label=f"{name} (val)")
        a2.plot([r["epoch"] for r in c], [r["train_acc"] for r in c], ":", label=f"{name} (train)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_title("digits: same MLP and optimizer, two losses")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "losses.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "losses.png", "logit gradients and training curves, CE vs MSE")
    rep.write()
    return rep.results
