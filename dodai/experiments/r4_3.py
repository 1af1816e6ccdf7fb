"""R4.3 / R6.4 Positional encodings and length extrapolation (after Press et al. 2021, "Train Short, Test Long").

One GPT, six position schemes swapped by ``GPTConfig.pos_encoding``: none (NoPE, the causal mask alone),
learned (GPT-2), sinusoidal (Vaswani et al. 2017), RoPE (Su et al. 2021), ALiBi (Press et al. 2021) and T5's
learned relative bias (Raffel et al. 2020, causal buckets). Every model gets the same data (python-docs,
characters), the same seed, steps, size and training context L; each is then evaluated on held-out text
at 1x, 2x, 4x and 8x L. Two measurements:

- **beyond L** (the plot): the loss on the *last L characters* of windows of f*L characters. The target
  characters are the same for every f (one window ends at each of K fixed offsets); only the context in
  front of them grows, and for f > 1 every one of them sits at a position the model never saw in training.
  This is where extrapolation succeeds or fails, undiluted.
- **all positions**: non-overlapping windows of f*L characters over the same stretch of text, loss
  averaged over every position (as a plain perplexity evaluation does); a window's first L positions are
  inside the training range, so a degradation shows up diluted (by a factor of f).

Perplexity = exp(mean loss in nats per character). Evaluating beyond L: sinusoidal, RoPE, ALiBi, T5 and
NoPE have no parameter whose shape depends on the context length, so the trained weights are loaded into
the same architecture built with block_size = 8L (fixed tables are recomputed for the longer range). A
learned position table has no rows past L: learned is evaluated at 1x only (n/a beyond; no clamping).

Choices, and why: the sinusoidal table is scaled to the token embeddings' size (RMS 0.02, like them at
initialisation). Vaswani et al. and Press et al. (fairseq) add the unit-amplitude table to embeddings
multiplied by sqrt(C), i.e. both of size ~1; dodai's GPT keeps GPT-2's N(0, 0.02) embeddings, next to
which an unscaled table drowns the tokens (the model then learns little more than character
frequencies, and, ignoring positions, trivially "extrapolates"). T5 bias: 16 buckets and max distance L/2,
so, as in T5 (32 buckets, 128, trained on 512 tokens), the last bucket ("far") is trained on many
distances and covers every distance past L.

Measured (2026-11-28, ``dodai roadmap run R4.3``: L = 64, 1,000 steps, 3 layers, C = 64, one thread on a
busy 2-core machine, ~3.5 min of CPU): perplexity on the characters beyond L, 1x -> 4x -> 8x: ALiBi
7.31 -> 7.25 -> 7.26 (flat), NoPE 11.9 -> 14.5 -> 15.0, T5 6.94 -> 9.84 -> 13.9, sinusoidal 10.7 -> 16.1 ->
16.3, RoPE 6.04 -> 39.4 -> 43.9. Press et al.'s direction reproduces: only ALiBi extrapolates, sinusoidal
and rotary degrade. Differences from their figure: here RoPE (the best model at 1x) degrades the most,
and T5's bias degrades clearly (it is closer to flat in the paper, at 512+ tokens and far longer training).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dodai.experiments.r4_1 import batch, char_data, one_thread, val_loss, warmup_cosine
from dodai.models.gpt import GPT, GPTConfig
from dodai.report import Report
from dodai.train.fit import FitConfig, fit
from dodai.train.trainer import lm_loss
from dodai.viz import pyplot

PES = ("none", "learned", "sinusoidal", "rope", "alibi", "t5")
FACTORS = (1, 2, 4, 8)
SINUSOIDAL_RMS = 0.02  # the token embeddings' init std (GPT-2); see the module docstring


def scale_sinusoidal(model: GPT) -> GPT:
    """Scale the fixed sinusoidal table (per-feature RMS 1/sqrt(2)) to RMS ``SINUSOIDAL_RMS``, in place."""
    if model.config.pos_encoding == "sinusoidal":
        model.pos_table.mul_(SINUSOIDAL_RMS * math.sqrt(2))
    return model


def train(cfg: GPTConfig, data: torch.Tensor, steps: int, bsz: int = 16, lr: float = 3e-3, seed: int = 0) -> GPT:
    """AdamW, linear warm-up then cosine decay (as R4.1's ``train_lm``) on :func:`dodai.train.fit.fit`, the same
    batches for every scheme."""
    torch.manual_seed(seed)
    model = scale_sinusoidal(GPT(cfg))
    gen = torch.Generator().manual_seed(seed)
    fcfg = FitConfig(steps=steps, optimizer="adamw", lr=lr, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)
    fit(model, lambda i: batch(data, cfg.block_size, bsz, gen), lm_loss, fcfg,
        lr_fn=lambda s: lr * warmup_cosine(s + 1, steps, max(1, steps // 10), floor=0.05))
    return model


@torch.no_grad()
def beyond_loss(model: GPT, ids: torch.Tensor, L: int, f: int, n_targets: int, bsz: int = 16) -> float:
    """Mean loss (nats) on the last L tokens of windows of f*L tokens; window k ends at 8L + k*L, so the
    targets are the same for every f. ``ids`` needs 8L + n_targets*L + 1 tokens."""
    model.eval()
    ends = 8 * L + L * torch.arange(n_targets)  # (K,) exclusive end of each window's inputs
    total = 0.0
    for i in range(0, n_targets, bsz):
        e = ends[i:i + bsz]
        win = ids[e[:, None] - f * L + torch.arange(f * L + 1)]  # (b, fL + 1): inputs and shifted targets
        logits, _ = model(win[:, :-1])  # (b, fL, V)
        loss = F.cross_entropy(logits[:, -L:].transpose(1, 2), win[:, -L:], reduction="sum")
        total += loss.item()
    return total / (n_targets * L)


@torch.no_grad()
def all_positions_loss(model: GPT, ids: torch.Tensor, length: int, bsz: int = 16) -> float:
    """Mean loss over every position of non-overlapping windows of ``length`` tokens (+1 target)."""
    model.eval()
    n = (len(ids) - 1) // length
    x = ids[: n * length].view(n, length)
    y = ids[1: n * length + 1].view(n, length)
    total = 0.0
    for i in range(0, n, bsz):
        _, loss = model(x[i:i + bsz], y[i:i + bsz])
        total += loss.item() * len(x[i:i + bsz])
    return total / n


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    rep = Report(out_dir, "R4.3 / R6.4 Positional encodings: train short, test long")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train_ids, val = char_data(200_000 if quick else 1_000_000)
    L = 32 if quick else 64
    steps = 150 if quick else 1000
    n_layer, n_embd = (2, 64) if quick else (3, 64)
    K = 24 if quick else 96  # target windows of L characters for "beyond L"
    ev = val[: 8 * L + K * L + 1]  # both measurements use this same stretch of held-out text
    beyond, allpos, rows = {}, {}, []
    for pe in PES:
        cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=L, n_layer=n_layer, n_head=4, n_embd=n_embd,
                        pos_encoding=pe, rel_buckets=16, rel_max_distance=L // 2)
        model = train(cfg, train_ids, steps, seed=seed)
        long = model
        if pe != "learned":
            long = scale_sinusoidal(GPT(replace(cfg, block_size=8 * L)))
            long.load_state_dict(model.state_dict())
        facs = (1,) if pe == "learned" else FACTORS
        beyond[pe] = {f: math.exp(beyond_loss(long, ev, L, f, K)) for f in facs}
        allpos[pe] = {f: math.exp(all_positions_loss(long, ev, f * L)) for f in facs}
        row = {"pos_encoding": pe, "params": model.num_params(non_embedding=False),
               "val loss": round(val_loss(model, val, L), 4)}
        for f in FACTORS:
            row[f"beyond L @{f}L"] = round(beyond[pe][f], 3) if f in facs else "n/a"
        for f in FACTORS:
            row[f"all @{f}L"] = round(allpos[pe][f], 3) if f in facs else "n/a"
        rows.append(row)
    rep.heading(f"Validation perplexity (trained at L = {L} characters, {steps} steps, {n_layer} layers, "
                f"C = {n_embd})")
    rep.text("`beyond L @fL`: perplexity on the last L characters of windows of f*L characters (the same "
             "characters for every f). `all @fL`: perplexity over every position of windows of f*L characters.")
    rep.table(rows)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, d, what in ((axes[0], beyond, "last L characters of each window (beyond L)"),
                        (axes[1], allpos, "all positions of each window (diluted)")):
        for pe in PES:
            xs = sorted(d[pe])
            ax.plot([f * L for f in xs], [d[pe][f] for f in xs], marker="o", label=pe)
        ax.axvline(L, color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("evaluation context length (characters)")
        ax.set_title(what, fontsize=10)
    axes[0].set_ylabel("validation perplexity")
    axes[0].legend()
    fig.suptitle(f"Length extrapolation, trained at L = {L}")
    fig.tight_layout()
    png = out_dir / "extrapolation.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "perplexity vs evaluation length; left: the loss beyond L (the main result); right: all "
                   "positions; dotted line = training length")
    ratio4 = {pe: beyond[pe][4] / beyond[pe][1] for pe in PES if 4 in beyond[pe]}
    ratio8 = {pe: beyond[pe][8] / beyond[pe][1] for pe in PES if 8 in beyond[pe]}
    order = sorted(ratio4, key=ratio4.get)
    rep.text("Degradation beyond L, ppl(4L)/ppl(L) on the same characters, least first: "
             + ", ".join(f"{pe} {ratio4[pe]:.3f}" for pe in order)
             + ". Press et al. 2021 (their figure 1): ALiBi (and, more slowly, T5's bias) keeps its perplexity "
             "flat past the training length, while sinusoidal and rotary positions degrade.")
    rep.results.update({
        "L": L, "steps": steps, "quick": quick, "seed": seed, "uniform_ppl": tok.vocab_size,
        "beyond": {pe: {str(f): v for f, v in d.items()} for pe, d in beyond.items()},
        "all_positions": {pe: {str(f): v for f, v in d.items()} for pe, d in allpos.items()},
        "ratio_4x": ratio4, "ratio_8x": ratio8, "least_degradation_4x": order[0], "rows": rows})
    rep.write()
    return rep.results
