"""R4.5 Pre-LN vs Post-LN, LayerNorm vs RMSNorm: training stability (after Xiong et al. 2020).

Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") show that in the original
Post-LN Transformer (Vaswani et al. 2017: x = LN(x + f(x))) the gradients of the last layers are large
at initialisation, so a high learning rate without warm-up diverges or stalls, while Pre-LN
(x = x + f(LN(x)), GPT-2) trains without warm-up. Here: one deep, narrow GPT, Adam at a high constant
learning rate with or without a linear warm-up, no gradient clipping (clipping would hide the effect),
the same data order and seed for every run; both block orders, with LayerNorm (Ba et al. 2016) and
RMSNorm (Zhang & Sennrich 2019). Post-LN has no final norm (the last block ends in one).
The table reports the final training loss (mean of the last 10 % of steps, nats per character) and the
validation loss; a run whose loss became NaN/inf is marked diverged.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dodai.experiments.r4_1 import batch, char_data, one_thread, val_loss
from dodai.models.gpt import GPT, GPTConfig
from dodai.report import Report
from dodai.train.fit import FitConfig, fit
from dodai.train.trainer import lm_loss
from dodai.viz import pyplot


def train_run(cfg: GPTConfig, train: torch.Tensor, val: torch.Tensor, steps: int, lr: float, warmup: int,
              bsz: int, seed: int = 0) -> dict:
    """Adam, constant lr after an optional linear warm-up of ``warmup`` steps, no clipping, on
    :func:`dodai.train.fit.fit` with ``on_nan="stop"`` (divergence is a result here, not an error); returns
    the loss curve (NaN where the run diverged)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(seed)
    fcfg = FitConfig(steps=steps, optimizer="adam", lr=lr, betas=(0.9, 0.98), decay_matrices_only=False,
                     on_nan="stop")
    res = fit(model, lambda i: batch(train, cfg.block_size, bsz, gen), lm_loss, fcfg,
              lr_fn=lambda s: lr * (min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0))
    losses = [r["loss"] if math.isfinite(r["loss"]) else float("nan") for r in res.history]
    diverged = not math.isfinite(losses[-1])
    tail = losses[-max(1, steps // 10):]
    final = float("inf") if diverged else sum(tail) / len(tail)
    vl = float("inf") if diverged else val_loss(model, val, cfg.block_size)
    if not math.isfinite(vl):
        diverged, final = True, float("inf")
    return {"losses": losses, "final_train_loss": final, "val_loss": vl, "diverged": diverged}


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    rep = Report(out_dir, "R4.5 Pre-LN vs Post-LN with LayerNorm and RMSNorm")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train, val = char_data(150_000 if quick else 1_000_000)
    steps = 150 if quick else 1000
    lr = 1e-3
    warm = steps // 3
    norms = ("layernorm",) if quick else ("layernorm", "rmsnorm")  # quick mode: the test's budget
    n_layer = 6 if quick else 8
    rows, curves = [], {}
    for norm in norms:
        for order in ("pre", "post"):
            for w in (0, warm):
                cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32 if quick else 64, n_layer=n_layer,
                                n_head=4, n_embd=64 if quick else 128, pos_encoding="rope", norm=norm,
                                block_order=order)
                r = train_run(cfg, train, val, steps, lr, w, bsz=16 if quick else 32, seed=seed)
                name = f"{order}-LN {norm}, {'warm-up ' + str(w) if w else 'no warm-up'}"
                curves[name] = r["losses"]
                rows.append({"block_order": order, "norm": norm, "warmup_steps": w,
                             "final_train_loss": round(r["final_train_loss"], 4),
                             "val_loss": round(r["val_loss"], 4), "diverged": r["diverged"]})
    rep.heading(f"{n_layer} layers, Adam lr {lr}, {steps} steps, warm-up {warm} steps or none")
    rep.table(rows)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(norms), figsize=(5.5 * len(norms), 4), sharey=True, squeeze=False)
    axes = axes[0]
    k = max(1, steps // 50)  # moving average over k steps to make the curves readable
    for ax, norm in zip(axes, norms):
        for name, c in curves.items():
            if norm not in name:
                continue
            sm = [sum(c[max(0, i - k + 1): i + 1]) / len(c[max(0, i - k + 1): i + 1]) for i in range(len(c))]
            ax.plot(range(1, len(sm) + 1), sm, label=name.replace(f" {norm}", ""),
                    ls="-" if "pre" in name else "--")
        ax.set_title(norm)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss (nats/char)")
    fig.tight_layout()
    png = out_dir / "loss_curves.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "training loss; solid = Pre-LN, dashed = Post-LN")

    def get(order, norm, w):
        return next(r for r in rows if r["block_order"] == order and r["norm"] == norm
                    and r["warmup_steps"] == w)["final_train_loss"]

    gaps = {norm: {"no_warmup": get("post", norm, 0) - get("pre", norm, 0),
                   "warmup": get("post", norm, warm) - get("pre", norm, warm)} for norm in norms}
    rep.text("Post-LN minus Pre-LN final training loss: " + "; ".join(
        f"{n}: {g['no_warmup']:.3f} without warm-up, {g['warmup']:.3f} with" for n, g in gaps.items()))
    rep.results.update({"rows": rows, "gaps": gaps, "uniform_loss": math.log(tok.vocab_size),
                        "lr": lr, "steps": steps, "warmup": warm, "curves": curves, "quick": quick, "seed": seed})
    rep.write()
    return rep.results
