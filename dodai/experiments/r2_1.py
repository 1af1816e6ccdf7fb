"""R2.1 Perceptron: Rosenblatt's rule converges on separable data within Novikoff's (R/γ)² mistake bound,
never fits XOR (no line separates it), and a 2-layer MLP on dodai's NumPy autograd fits XOR exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dodai.basics.mlp import MLP, TrainConfig, evaluate, train
from dodai.basics.perceptron import Perceptron, make_separable, margin_and_radius, mistake_bound, xor_data
from dodai.report import Report
from dodai.viz import pyplot


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    rep = Report(out_dir, "R2.1 Perceptron: Rosenblatt's rule, Novikoff's bound, XOR and the MLP")
    rep.text(__doc__.strip())

    rep.heading("Separable data: updates vs the mistake bound (R/γ)²")
    rows = []
    settings = [(2, 0.05), (2, 0.1), (5, 0.05), (10, 0.05), (2, 0.02)]
    seeds = range(2 if quick else 5)
    n = 200 if quick else 1000
    for dim, margin in settings:
        for seed in seeds:
            X, y, u = make_separable(n, dim, margin, seed)
            gamma, R = margin_and_radius(X, y, u)
            p = Perceptron(dim)
            res = p.fit(X, y, max_epochs=100_000, shuffle_seed=seed)
            rows.append({"dim": dim, "margin γ": gamma, "radius R": R, "seed": seed, "n": n,
                         "updates": res.updates, "bound (R/γ)²": mistake_bound(X, y, u), "epochs": res.epochs,
                         "converged": res.converged, "train acc": res.accuracy[-1]})
    rep.table(rows)
    rep.results["separable"] = rows
    rep.results["all_within_bound"] = all(r["updates"] <= r["bound (R/γ)²"] for r in rows)
    rep.results["all_converged"] = all(r["converged"] for r in rows)

    rep.heading("XOR")
    Xx, yx = xor_data()
    px = Perceptron(2)
    rx = px.fit(Xx, yx, max_epochs=1000)
    rep.results["xor_perceptron_converged"] = rx.converged
    rep.results["xor_perceptron_best_acc"] = max(rx.accuracy)
    mlp = MLP([2, 8, 2], activation="tanh", seed=0, dtype=np.float64)
    hist = train(mlp, Xx, yx, cfg=TrainConfig(epochs=300, batch_size=4, lr=0.05))
    loss, acc = evaluate(mlp, Xx, yx)
    rep.results["xor_mlp_acc"] = acc
    rep.results["xor_mlp_loss"] = loss
    rep.table([{"model": "perceptron", "epochs": rx.epochs, "best train acc": max(rx.accuracy),
                "converged": rx.converged},
               {"model": "MLP 2-8-2 tanh (dodai autograd, Adam)", "epochs": len(hist.epochs), "best train acc": acc,
                "converged": acc == 1.0}])

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    X, y, u = make_separable(200, 2, 0.1, 0)
    p = Perceptron(2)
    p.fit(X, y, max_epochs=10_000)
    ax = axes[0]
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=12)
    xs = np.linspace(-1, 1, 10)
    for w, style, lab in [(p.w, "k-", "perceptron"), (u, "g--", "generating plane (margin 0.1)")]:
        ax.plot(xs, -(w[0] * xs + w[2]) / w[1], style, label=lab)
    ax.set_ylim(-1.1, 1.1)
    ax.set_title("separable: the perceptron converges")
    ax.legend(fontsize=8)
    axes[1].plot(range(1, len(rx.accuracy) + 1), rx.accuracy, lw=0.8)
    axes[1].axhline(0.75, color="r", ls="--", label="3/4: best any line can do")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training accuracy")
    axes[1].set_title("XOR: the perceptron never converges")
    axes[1].legend(fontsize=8)
    gx, gy = np.meshgrid(np.linspace(-0.5, 1.5, 200), np.linspace(-0.5, 1.5, 200))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    zz = mlp(grid).softmax(1).data[:, 1].reshape(gx.shape)
    axes[2].contourf(gx, gy, zz, levels=20, cmap="coolwarm", alpha=0.7)
    axes[2].contour(gx, gy, zz, levels=[0.5], colors="k")
    axes[2].scatter(Xx[:, 0], Xx[:, 1], c=yx, cmap="coolwarm", edgecolors="k", s=80)
    axes[2].set_title("XOR: a 2-layer MLP's decision boundary")
    fig.tight_layout()
    fig.savefig(out_dir / "perceptron.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "perceptron.png", "perceptron on separable data, on XOR, and the MLP on XOR")
    rep.write()
    return rep.results
