"""R4.3 / R6.4 Positional encodings and length extrapolation (after Press et al. 2021, "Train Short, Test Long").

One GPT, five position schemes swapped by ``GPTConfig.pos_encoding``: none (NoPE, the causal mask alone),
learned (GPT-2), sinusoidal (Vaswani et al. 2017), RoPE (Su et al. 2021) and ALiBi (Press et al. 2021).
Every model gets the same data (python-docs, characters), the same seed, steps, size and training
context L. Each is then evaluated on held-out text cut into non-overlapping windows of L, 2L, 4L and 8L
characters; the loss is averaged over **every** position of every window (so longer windows also contain
their short-context positions; a degradation therefore shows up diluted, never exaggerated), and every
length sees the same characters. Perplexity = exp(mean loss in nats per character).

Evaluating beyond L: sinusoidal, RoPE, ALiBi and NoPE have no parameter that depends on the context
length, so the trained weights are loaded into the same architecture built with block_size = 8L (the
fixed tables are recomputed for the longer range). A learned position table has no rows past L, so learned
is evaluated at 1x only and reported as n/a beyond (we do not clamp or extend it).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from dodai.experiments.r4_1 import char_data, one_thread, train_lm
from dodai.models.gpt import GPT, GPTConfig
from dodai.report import Report
from dodai.viz import pyplot

PES = ("none", "learned", "sinusoidal", "rope", "alibi")
FACTORS = (1, 2, 4, 8)


@torch.no_grad()
def window_ppl(model: GPT, ids: torch.Tensor, length: int, bsz: int = 16) -> float:
    """exp(mean loss) over non-overlapping windows of ``length`` tokens (+1 target) cut from ``ids``."""
    model.eval()
    n = (len(ids) - 1) // length
    x = ids[: n * length].view(n, length)
    y = ids[1: n * length + 1].view(n, length)
    total = 0.0
    for i in range(0, n, bsz):
        _, loss = model(x[i:i + bsz], y[i:i + bsz])
        total += loss.item() * len(x[i:i + bsz])
    return math.exp(total / n)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    rep = Report(out_dir, "R4.3 / R6.4 Positional encodings: train short, test long")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train, val = char_data(150_000 if quick else 1_000_000)
    L = 32 if quick else 64
    steps = 150 if quick else 1500
    n_eval = 8 * L * (24 if quick else 64)  # the same characters for every eval length
    ev = val[: n_eval + 1]
    rows, ppl = [], {}
    for pe in PES:
        cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=L, n_layer=2 if quick else 4, n_head=4,
                        n_embd=64 if quick else 128, pos_encoding=pe)
        model, st = train_lm(cfg, train, val, steps=steps, bsz=16 if quick else 32, evals=1, seed=seed)
        long = model
        if pe != "learned":
            long = GPT(replace(cfg, block_size=8 * L))
            long.load_state_dict(model.state_dict())
        ppl[pe] = {}
        row = {"pos_encoding": pe}
        for f in FACTORS:
            if pe == "learned" and f > 1:
                row[f"ppl@{f}L"] = "n/a"
                continue
            ppl[pe][f] = window_ppl(long, ev, f * L)
            row[f"ppl@{f}L"] = round(ppl[pe][f], 3)
        row["ratio 4L/L"] = round(ppl[pe][4] / ppl[pe][1], 3) if 4 in ppl[pe] else "n/a"
        row["ratio 8L/L"] = round(ppl[pe][8] / ppl[pe][1], 3) if 8 in ppl[pe] else "n/a"
        rows.append(row)
    rep.heading(f"Validation perplexity (trained at L = {L} characters, {steps} steps)")
    rep.table(rows)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for pe, d in ppl.items():
        xs = sorted(d)
        ax.plot([f * L for f in xs], [d[f] for f in xs], marker="o", label=pe)
    ax.axvline(L, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation context length (characters)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"Length extrapolation, trained at L = {L}")
    ax.legend()
    fig.tight_layout()
    png = out_dir / "extrapolation.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "perplexity vs evaluation length; dotted line = training length")
    ratios = {pe: ppl[pe][4] / ppl[pe][1] for pe in ppl if 4 in ppl[pe]}
    best = min(ratios, key=ratios.get)
    rep.text(f"Smallest degradation ppl(4L)/ppl(L): **{best}** ({ratios[best]:.3f}). Press et al. report that "
             "ALiBi extrapolates while sinusoidal (and, less so, rotary) positions degrade past L.")
    rep.results.update({"L": L, "steps": steps, "ppl": {pe: {str(f): v for f, v in d.items()} for pe, d in ppl.items()},
                        "ratio_4x": ratios, "best_4x": best, "rows": rows, "quick": quick,
                        "uniform_ppl": tok.vocab_size, "seed": seed})
    rep.write()
    return rep.results
