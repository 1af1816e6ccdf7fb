"""R3.4 RNN vs LSTM vs GRU vs Transformer (GPT) character language models at equal budget.

Same corpus (dodai's built-in python-docs corpus, characters, 90/10 split by position), same parameter
count (each model's width is the largest whose parameter count stays within the target), same optimiser
(AdamW, constant learning rate after a short linear warm-up, clip 1.0), same batches (one seed, so every
model sees the same windows in the same order). Each model trains until it has done **both** a fixed
number of steps S and a fixed training time T (process CPU time of the one thread, steadier than wall time
on a shared machine), so one run gives two comparisons:

- **equal steps**: validation loss after S steps (the same tokens seen by every model);
- **equal time**: validation loss after T seconds of training (the faster model has seen more tokens).

Validation loss (nats per character) is measured on the same 16 validation windows for every model, at
evenly spaced points in time; the table reports parameters, throughput (tokens/s of training) and both
losses, and the plot shows validation loss against training time and against steps.

The history this retells (Elman 1990; Hochreiter & Schmidhuber 1997; Cho et al. 2014; Vaswani et al. 2017;
Karpathy 2015, "The unreasonable effectiveness of RNNs"): gates let LSTM and GRU use longer context than
a plain RNN, and the Transformer, which processes every position of a window in parallel instead of one
step after another, gets far more training done in the same time. Caveat of this implementation: dodai's
recurrences are written from scratch with one small matrix product per time step in Python (no fused
cuDNN/oneDNN kernel), which is exactly the sequential bottleneck the comparison is about, but it
exaggerates it compared with a fused ``torch.nn.LSTM`` (see benchmarks/results for that ratio).

Measured (2026-11-28, ``dodai roadmap run R3.4``: ~200k parameters each (GPT 170k: the next width step is
over the target), S = 800 steps, T = 200 s of CPU per model, batch 16 x 64, one thread on a busy 2-core
machine, ~14 min of CPU in all):

    model  tokens/s  val loss @ 800 steps  val loss @ 200 s (steps)
    RNN     31,011        1.564               1.398 (6,057)
    LSTM    33,177        1.669               1.313 (6,481)
    GRU     22,225        1.462               1.301 (4,341)
    GPT     43,480        1.825               1.302 (8,493)

The plain RNN learns fastest at first (ahead of the LSTM after 150-800 steps, which is what the quick-mode
test asserts at toy scale); with more training the gated cells overtake it (at 75 s already: GRU 1.392,
LSTM 1.440, RNN 1.462). The GPT has the highest throughput (1.3-2x the recurrent models' tokens/s) and the
steepest curve: behind everyone at 75 s (1.466), it passes the RNN and the LSTM and ties the GRU at 200 s
(1.302 vs 1.301). A clear Transformer lead, as at larger scale in the literature, is not shown at this
budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dodai.data.batching import get_batch, make_generator
from dodai.experiments.r3_1 import one_thread
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.rnn import RecurrentLM, RecurrentLMConfig
from dodai.report import Report
from dodai.viz import pyplot

KINDS = ("rnn", "lstm", "gru", "gpt")


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def build(kind: str, V: int, target: int, block: int, gpt_layers: int = 2):
    """A model of ``kind`` whose width is the largest whose parameter count stays <= target."""
    def make(w):
        if kind == "gpt":
            w = max(8, (w // 8) * 8)  # tidy width, divisible by the heads
            return GPT(GPTConfig(vocab_size=V, block_size=block, n_layer=gpt_layers, n_head=4, n_embd=w,
                                 dropout=0.0))
        return RecurrentLM(RecurrentLMConfig(V, kind, n_embd=min(w, 64), hidden=w, block_size=block))
    lo, hi = 8, 2048
    while lo < hi:  # binary search on the width; parameter count grows with it
        mid = (lo + hi + 1) // 2
        with torch.device("meta"):  # shapes only: no memory, no init
            n = _count(make(mid))
        if n <= target:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


@torch.no_grad()
def val_loss(model, val, block, batches: int = 4, batch: int = 16) -> float:
    """Mean loss on batches x batch windows of the validation split, the same windows for every model."""
    model.eval()
    g = make_generator(1234)
    tot = sum(model(*get_batch(val, block, batch, g))[1].item() for _ in range(batches))
    model.train()
    return tot / batches


def train_budget(model, train, val, block, batch, steps: int, seconds: float, lr: float, evals: int = 10,
                 warmup: int = 50) -> dict:
    """Train until both ``steps`` steps and ``seconds`` CPU seconds are done; val loss at both marks.

    Its own loop, not :func:`dodai.train.fit.fit`, on purpose: the comparison needs a clock that counts only
    this process's CPU time spent *in training steps* (evaluations and other jobs on a shared machine
    excluded), evaluations at marks of that clock *and* at a fixed step count, and a run that continues
    until both marks are passed. fit's budget is wall-clock time including evaluations (a run's budget),
    which would make the models' equal-compute comparison depend on the machine's load."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    g = make_generator(0)  # the same windows, in the same order, for every model
    curve = [(0.0, 0, val_loss(model, val, block))]  # (CPU seconds, steps, val loss)
    spent, step, at_steps, at_time = 0.0, 0, None, None
    next_eval = seconds / evals
    while at_steps is None or at_time is None:
        t0 = time.process_time()  # this process's CPU time: the other jobs on a shared machine don't count
        for grp in opt.param_groups:
            grp["lr"] = lr * min(1.0, (step + 1) / warmup)
        x, y = get_batch(train, block, batch, g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        spent += time.process_time() - t0
        step += 1
        if step == steps:
            at_steps = val_loss(model, val, block)
            curve.append((spent, step, at_steps))
        if spent >= next_eval:
            v = at_steps if step == steps else val_loss(model, val, block)
            if step != steps:
                curve.append((spent, step, v))
            next_eval += seconds / evals
            if spent >= seconds and at_time is None:
                at_time = v
                time_steps = step
    return {"curve": curve, "steps_done": step, "steps_in_time": time_steps, "tokens_per_s": step * x.numel() / spent,
            "val_at_steps": at_steps, "val_at_time": at_time, "seconds": spent}


def plot(curves: dict, seconds: float, steps: int, target: int, png: Path) -> None:
    """Validation loss vs CPU time (left) and vs steps (right); the y axis starts below the best loss and
    stops at 2.6 nats so the part where the models differ is visible (the start, ~4.6, is in the table)."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for kind, c in curves.items():
        a1.plot([t for t, _, _ in c], [v for _, _, v in c], "o-", ms=3, label=kind.upper())
        a2.plot([s for _, s, _ in c], [v for _, _, v in c], "o-", ms=3, label=kind.upper())
    low = min(v for c in curves.values() for _, _, v in c)
    a1.set_ylim(low - 0.05, max(2.6, low + 0.5))
    a1.axvline(seconds, color="grey", ls=":", lw=1)
    a2.axvline(steps, color="grey", ls=":", lw=1)
    a1.set_xlabel("training CPU time (s)")
    a2.set_xlabel("training steps")
    a1.set_ylabel("validation loss (nats/char)")
    a1.legend()
    a1.set_title(f"equal time (dotted: T = {seconds:g} s)")
    a2.set_title(f"equal steps (dotted: S = {steps})")
    fig.suptitle(f"Character LMs with ~{target:,} parameters each")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False, seconds: float | None = None) -> dict:
    """``seconds``: CPU seconds per model (default 3 quick, 200 full)."""
    with one_thread():
        return _run(Path(out_dir), quick, seconds)


def _run(out_dir: Path, quick: bool, seconds: float | None) -> dict:
    from dodai.experiments.r4_1 import char_data

    tok, train, val = char_data(400_000 if quick else 2_000_000)
    V = tok.vocab_size
    target = 50_000 if quick else 200_000
    seconds = seconds or (3.0 if quick else 200.0)
    steps = 150 if quick else 800
    block, batch = (32, 16) if quick else (64, 16)
    lr = 3e-3

    rep = Report(out_dir, "R3.4 RNN vs LSTM vs GRU vs Transformer character LMs at equal budget")
    rep.text(__doc__.split("\n\n", 1)[1].split("\n\nThe history")[0])
    rep.text(f"This run: first {len(train) + len(val):,} characters, vocabulary {V}; ~{target:,} parameters per "
             f"model; S = {steps} steps, T = {seconds:g} s of CPU per model (1 thread); AdamW lr {lr:g}, "
             f"batch {batch} x {block} characters.")
    rows, res = [], {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build(kind, V, target, block)
        r = res[kind] = train_budget(model, train, val, block, batch, steps, seconds, lr)
        rows.append({"model": kind.upper(), "params": _count(model), "tokens/s": round(r["tokens_per_s"]),
                     f"val loss @ {steps} steps": round(r["val_at_steps"], 4),
                     f"val loss @ {seconds:g} s": round(r["val_at_time"], 4),
                     f"steps in {seconds:g} s": r["steps_in_time"], "val loss at start": round(r["curve"][0][2], 4)})
    rep.heading("Equal parameters; equal steps and equal time")
    rep.table(rows)
    by_steps = sorted(KINDS, key=lambda k: res[k]["val_at_steps"])
    by_time = sorted(KINDS, key=lambda k: res[k]["val_at_time"])
    rep.text(f"Ranking at equal steps (best first): {' < '.join(k.upper() for k in by_steps)}. "
             f"At equal time: {' < '.join(k.upper() for k in by_time)}.")

    plot({k: res[k]["curve"] for k in KINDS}, seconds, steps, target, rep.out / "loss_vs_time.png")
    rep.image(rep.out / "loss_vs_time.png", "validation loss vs training time (left) and vs steps (right)")
    rep.results.update({"rows": rows, "vocab": V, "seconds_per_model": seconds, "steps": steps, "target_params": target,
                        "val_at_steps": {k: res[k]["val_at_steps"] for k in KINDS},
                        "val_at_time": {k: res[k]["val_at_time"] for k in KINDS},
                        "start": {k: res[k]["curve"][0][2] for k in KINDS},
                        "tokens_per_s": {k: res[k]["tokens_per_s"] for k in KINDS},
                        "params": {k: r["params"] for k, r in zip(KINDS, rows)},
                        "curves": {k: res[k]["curve"] for k in KINDS}, "quick": quick})
    rep.write()
    return rep.results
