"""R3.4 RNN vs LSTM vs GRU vs Transformer (GPT) character language models at equal budget.

Same corpus (dodai's built-in python-docs corpus, characters), same parameter count (each model's width is
chosen so its parameters match a target), same optimiser and the same wall-clock training budget per model.
Reports validation loss (nats/char), parameters and training throughput (tokens/s), and plots validation
loss against training time.

What the literature reports at larger budgets (Karpathy 2015, "The unreasonable effectiveness of RNNs";
Vaswani et al. 2017): the gated cells beat the plain RNN, and the Transformer, which processes all positions
of a window in parallel, reaches the lowest loss. At this experiment's default budget (45 s of CPU, a few
hundred steps) every model is still early in training; on 2026-11-27 the plain RNN was ahead (val loss 1.58
vs 1.66-1.69 for GRU, LSTM, GPT). The ranking is reported, not asserted; it needs a longer run to settle.
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
from dodai.tokenizers.char import CharTokenizer
from dodai.viz import pyplot


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def build(kind: str, V: int, target: int, block: int):
    """A model of ``kind`` whose width is the largest whose parameter count stays <= target."""
    def make(w):
        if kind == "gpt":
            w = max(8, (w // 8) * 8)  # divisible by the 2 heads' needs and tidy
            return GPT(GPTConfig(vocab_size=V, block_size=block, n_layer=2, n_head=2, n_embd=w, dropout=0.0))
        return RecurrentLM(RecurrentLMConfig(V, kind, n_embd=min(w, 64), hidden=w, block_size=block))
    lo, hi = 8, 2048
    while lo < hi:  # binary search on the width
        mid = (lo + hi + 1) // 2
        if _count(make(mid)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


@torch.no_grad()
def val_loss(model, val, block, batches: int = 8, batch: int = 16) -> float:
    model.eval()
    g = make_generator(1234)
    tot = 0.0
    for _ in range(batches):
        x, y = get_batch(val, block, batch, g)
        tot += model(x, y)[1].item()
    model.train()
    return tot / batches


def train_for(model, train, val, block, batch, seconds: float, lr: float, evals: int = 8) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = make_generator(0)
    curve = [(0.0, val_loss(model, val, block))]
    spent, steps, tokens = 0.0, 0, 0
    next_eval = seconds / evals
    while spent < seconds:
        t0 = time.process_time()  # CPU time of this process: steadier than wall time on a shared machine
        x, y = get_batch(train, block, batch, g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        spent += time.process_time() - t0
        steps += 1
        tokens += x.numel()
        if spent >= next_eval or spent >= seconds:
            curve.append((spent, val_loss(model, val, block)))
            next_eval += seconds / evals
    return {"curve": curve, "steps": steps, "tokens_per_s": tokens / spent, "val_loss": curve[-1][1]}


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(out_dir, quick)


def _run(out_dir: Path, quick: bool) -> dict:
    from dodai.data.corpora import load_corpus

    text = load_corpus()
    text = text[:300_000] if quick else text[:2_000_000]
    tok = CharTokenizer.train(text)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    V = tok.vocab_size
    target = 40_000 if quick else 400_000
    seconds = 1.5 if quick else 45.0
    block, batch = (32, 16) if quick else (64, 32)
    lr = 3e-3

    rep = Report(out_dir, "R3.4 RNN vs LSTM vs GRU vs Transformer character LMs at equal budget")
    rep.text(f"Corpus: dodai's built-in python-docs text, first {len(text):,} characters, vocabulary {V} chars; "
             f"90/10 train/val split by position. Each model gets ~{target:,} parameters and {seconds:g} s of "
             f"process CPU time (1 thread), AdamW lr {lr:g}, batch {batch} x {block} chars, clip 1.0. "
             "Validation loss in nats per character.")
    rows, curves = [], {}
    for kind in ("rnn", "lstm", "gru", "gpt"):
        torch.manual_seed(0)
        model = build(kind, V, target, block)
        r = train_for(model, train, val, block, batch, seconds, lr)
        curves[kind] = r["curve"]
        rows.append({"model": kind.upper(), "params": _count(model), "steps": r["steps"],
                     "tokens/s": round(r["tokens_per_s"]), "val loss": r["val_loss"],
                     "val loss at start": r["curve"][0][1]})
    rep.table(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, c in curves.items():
        ax.plot([t for t, _ in c], [v for _, v in c], "o-", ms=3, label=kind.upper())
    ax.set_xlabel("training CPU time (s)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("Character LMs at equal parameters and time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(rep.out / "loss_vs_time.png", dpi=110)
    plt.close(fig)
    rep.image(rep.out / "loss_vs_time.png", "validation loss vs training time")
    rep.results.update({"rows": rows, "vocab": V, "seconds_per_model": seconds, "target_params": target})
    rep.write()
    return rep.results
