"""R5.1 A small scaling-law sweep: GPTs of several sizes pre-trained on the same token budget.

After Kaplan et al. 2020 ("Scaling Laws for Neural Language Models") and Hoffmann et al. 2022
("Training Compute-Optimal Large Language Models"): the validation loss of a well-tuned LM falls as a power
law in the number of parameters N, down to an irreducible floor,

    L(N) = a * N^(-alpha) + c,

where N counts the **non-embedding** parameters (Kaplan's convention: the blocks and the final norm, not
the token and position tables) and the training compute is C ~ 6 N D FLOPs for D training tokens.

Every model here sees the same D tokens (same batches in the same order, same seed), with the same
AdamW schedule (linear warm-up, cosine decay) and RoPE positions; only the depth and width change. The data are dodai's
built-in python-docs corpus as characters (90/10 split by position); the loss is measured on held-out
windows (nats per character). The fit: for each floor c on a grid below the smallest loss, least squares
of log(L - c) = log a - alpha log N; the c with the smallest squared error in L wins.

At this scale (thousands to a few hundred thousand parameters, a fixed and small D) the larger models are
not trained to convergence, so the fitted alpha describes *this* budget, not Kaplan's alpha_N ~ 0.076
(which is for converged models on web text with BPE tokens); the point is the method and the shape.

Measured (2026-11-28, ``dodai roadmap run R5.1``: 6 sizes from 3.3k to 448k non-embedding parameters,
D = 614,400 characters each, ~1.7 min of CPU on one thread of a busy 2-core machine): validation loss
2.654, 2.285, 2.046, 1.927, 1.870, 1.786 nats/char, falling with every size; fit
L(N) = 10.4 N^-0.270 + 1.48. For the pre-training itself (``dodai pretrain`` / ``dodai speedrun``,
checkpoint and resume) against nanoGPT on the same data and budget, see benchmarks/results/nanogpt.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dodai.experiments.r4_1 import batch, char_data, one_thread
from dodai.experiments.r4_1 import val_loss as _val_loss
from dodai.models.gpt import GPT, GPTConfig
from dodai.report import Report
from dodai.train.fit import FitConfig, fit
from dodai.train.trainer import lm_loss
from dodai.viz import pyplot


def non_embedding_params(model: GPT) -> int:
    """Kaplan et al.'s N: every parameter except the token (and learned position) embeddings."""
    skip = {id(model.transformer.wte.weight)}
    if "wpe" in model.transformer:
        skip.add(id(model.transformer.wpe.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def fit_power_law(n: list[float], loss: list[float], grid: int = 400) -> dict:
    """Fit L = a * N^-alpha + c (c >= 0): grid over c, log-linear least squares for (a, alpha) at each c."""
    x = torch.tensor([math.log(v) for v in n], dtype=torch.float64)
    y_l = torch.tensor(loss, dtype=torch.float64)
    best = None
    for i in range(grid):
        c = min(loss) * i / grid  # c in [0, min L): L - c stays positive
        y = torch.log(y_l - c)
        xm, ym = x.mean(), y.mean()
        slope = ((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum()
        log_a = ym - slope * xm
        pred = torch.exp(log_a + slope * x) + c
        err = ((pred - y_l) ** 2).sum().item()
        if best is None or err < best["sse"]:
            best = {"a": math.exp(log_a.item()), "alpha": -slope.item(), "c": c, "sse": err}
    return best


def train(cfg: GPTConfig, data: torch.Tensor, steps: int, bsz: int, lr: float, seed: int = 0) -> GPT:
    """AdamW (weight decay 0.1 on matrices), warm-up 10 % then cosine to 10 %, on :func:`dodai.train.fit.fit`;
    the same batches for all."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(seed)
    warm = max(1, steps // 10)

    def lr_fn(s: int) -> float:
        step = s + 1
        return lr * (step / warm if step <= warm else
                     0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / (steps - warm))))

    fcfg = FitConfig(steps=steps, optimizer="adamw", lr=lr, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)
    fit(model, lambda i: batch(data, cfg.block_size, bsz, gen), lm_loss, fcfg, lr_fn=lr_fn)
    return model


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    tok, train_ids, val = char_data(200_000 if quick else 1_000_000)
    if quick:
        sizes, block, bsz, steps = [(1, 16), (1, 32), (2, 48), (2, 64)], 32, 16, 250
    else:
        sizes, block, bsz, steps = [(1, 16), (1, 32), (2, 48), (2, 64), (3, 80), (4, 96)], 64, 16, 600
    lr = 3e-3
    tokens = steps * bsz * block
    rep = Report(out_dir, "R5.1 Scaling-law sweep: GPT sizes at one token budget")
    rep.text(__doc__.split("\n\n", 1)[1])
    rows = []
    for n_layer, n_embd in sizes:
        cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=n_layer, n_head=4, n_embd=n_embd,
                        pos_encoding="rope")
        model = train(cfg, train_ids, steps, bsz, lr)
        n = non_embedding_params(model)
        loss = _val_loss(model, val, block, n_batches=16, bsz=16)
        rows.append({"n_layer": n_layer, "n_embd": n_embd, "N (non-embedding)": n,
                     "params (all)": model.num_params(non_embedding=False), "tokens D": tokens,
                     "compute 6ND (FLOPs)": f"{6 * n * tokens:.3g}", "val loss": round(loss, 4)})
    ns = [r["N (non-embedding)"] for r in rows]
    losses = [r["val loss"] for r in rows]
    fit = fit_power_law(ns, losses)
    rep.heading(f"{len(rows)} sizes, D = {tokens:,} characters each ({steps} steps x {bsz} x {block})")
    rep.table(rows)
    rep.text(f"Fit: L(N) = {fit['a']:.3g} * N^-{fit['alpha']:.3f} + {fit['c']:.3f} "
             f"(sum of squared errors {fit['sse']:.2e}).")

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ns, losses, "o", label="measured")
    grid = [min(ns) * (max(ns) / min(ns)) ** (i / 50) for i in range(51)]
    a1.plot(grid, [fit["a"] * g ** -fit["alpha"] + fit["c"] for g in grid], "-",
            label=f"{fit['a']:.3g} N^-{fit['alpha']:.3f} + {fit['c']:.2f}")
    a1.set_xscale("log")
    a1.set_xlabel("non-embedding parameters N")
    a1.set_ylabel("validation loss (nats/char)")
    a1.legend()
    a2.plot([6 * n * tokens for n in ns], losses, "o-")
    a2.set_xscale("log")
    a2.set_xlabel("training compute C = 6 N D (FLOPs)")
    a2.set_ylabel("validation loss (nats/char)")
    fig.suptitle(f"GPT scaling at a fixed budget of {tokens:,} characters")
    fig.tight_layout()
    png = out_dir / "scaling.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "validation loss vs parameters (with the fitted power law) and vs training compute")
    rep.results.update({"rows": rows, "N": ns, "loss": losses, "fit": fit, "tokens": tokens, "quick": quick})
    rep.write()
    return rep.results
