"""R3.1 The RNN and the long-term dependency problem: a plain (Elman) RNN fails delayed recall at long
delays, and its gradient ‖∂L/∂h_t‖ vanishes exponentially with the distance from the loss.

Why (Bengio, Simard & Frasconi 1994; Hochreiter 1991; Pascanu et al. 2013): backprop through time multiplies
the Jacobians ∂h_{t+1}/∂h_t = diag(1 - h_{t+1}^2) W_hh; with ‖W_hh‖ < 1 (any stable tanh RNN) the product
over k steps shrinks like ρ^k, so the signal from a symbol k steps back reaches the weights scaled by ρ^k.

This module also holds the shared machinery for R3.2 (LSTM/GRU on the same task): the classifier, the
training loop and the gradient-norm measurement.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch import nn

from dodai.data.transduction import delayed_recall_batch, delayed_recall_vocab
from dodai.models.rnn import make_recurrent
from dodai.report import Report
from dodai.viz import pyplot

N_SYMBOLS, N_NOISE = 4, 4
CHANCE = 1.0 / N_SYMBOLS


@contextlib.contextmanager
def one_thread():
    """Run with one intra-op thread: these models are tiny (hidden 32), so extra threads only add sync
    overhead, and on a shared machine they spin. Restores the previous setting."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class RecallNet(nn.Module):
    """Embedding -> one recurrent layer -> linear read-out at the last (CUE) step."""

    def __init__(self, kind: str, hidden: int = 32, emb: int = 16, gate_bias: float = 3.0):
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(delayed_recall_vocab(N_SYMBOLS, N_NOISE), emb)
        self.rnn = make_recurrent(kind, emb, hidden, batch_first=True)
        # A remembering start for the gated cells: forget gate open (LSTM; Gers et al. 2000, Jozefowicz et al.
        # 2015) or update gate ~ 1 (GRU). The plain RNN has no gate, so it keeps PyTorch's default init.
        if kind == "lstm":
            self.rnn.set_forget_bias(gate_bias)
        elif kind == "gru":
            self.rnn.set_update_bias(gate_bias)
        self.head = nn.Linear(hidden, N_SYMBOLS)

    def forward(self, x):  # x (B, T) -> logits (B, S)
        out, _ = self.rnn(self.emb(x))  # (B, T, H)
        return self.head(out[:, -1])

    def hidden_grad_norms(self, x, y) -> list[float]:
        """‖∂L/∂h_t‖ (batch mean of per-example norms) for t = 0..T-1, stepping the reference cell so
        every h_t is a leaf of the graph we can ask about."""
        e = self.emb(x)  # (B, T, E)
        B, T, _ = e.shape
        z = e.new_zeros(B, self.rnn.hidden_size)
        state = (z, z) if self.kind == "lstm" else z
        hs = []
        for t in range(T):
            state = self.rnn.step(0, e[:, t], state)
            h = state[0] if self.kind == "lstm" else state
            h.retain_grad()
            hs.append(h)
        loss = nn.functional.cross_entropy(self.head(hs[-1]), y, reduction="sum")
        loss.backward()
        return [h.grad.norm(dim=1).mean().item() for h in hs]


def train_recall(kind: str, delay: int, iters: int, seed: int = 0, hidden: int = 32, batch: int = 64,
                 lr: float = 1e-2, eval_every: int = 50, stop_at: float = 0.99) -> dict:
    """Train a RecallNet on one delay (Adam, clipping at 1, on :func:`dodai.train.fit.fit`); early-stops once
    held-out accuracy >= stop_at."""
    from dodai.train.fit import FitConfig, fit

    torch.manual_seed(seed)
    model = RecallNet(kind, hidden)
    g = torch.Generator().manual_seed(seed + 1)
    xt, yt = delayed_recall_batch(512, delay, N_SYMBOLS, N_NOISE, torch.Generator().manual_seed(10_000 + seed))
    grad_init = model.hidden_grad_norms(xt[:128], yt[:128])
    model.zero_grad()
    t0 = time.time()

    def held_out(m) -> dict:
        acc = (m(xt).argmax(-1) == yt).float().mean().item()
        return {"accuracy": acc, "stop": acc >= stop_at}

    cfg = FitConfig(steps=iters, optimizer="adam", lr=lr, decay_matrices_only=False, grad_clip=1.0,
                    eval_every=eval_every, eval_at_start=False)
    res = fit(model, lambda i: delayed_recall_batch(batch, delay, N_SYMBOLS, N_NOISE, g),
              lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), cfg, evaluate=held_out)
    grad_trained = model.hidden_grad_norms(xt[:128], yt[:128])
    return {"kind": kind, "delay": delay, "accuracy": res.evals[-1]["accuracy"] if res.evals else 0.0,
            "iters": res.steps, "seconds": round(time.time() - t0, 2), "grad_init": grad_init,
            "grad_trained": grad_trained}


def grad_ratio(norms: list[float], distance: int) -> float:
    """‖∂L/∂h_{T-1-distance}‖ / ‖∂L/∂h_{T-1}‖."""
    return norms[-1 - distance] / max(norms[-1], 1e-30)


def plot_accuracy(runs: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in dict.fromkeys(r["kind"] for r in runs):
        rs = sorted((r for r in runs if r["kind"] == kind), key=lambda r: r["delay"])
        ax.plot([r["delay"] for r in rs], [r["accuracy"] for r in rs], "o-", label=kind.upper())
    ax.axhline(CHANCE, color="gray", ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("delay (steps between the symbol and the recall cue)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grads(runs: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        n = r["grad_trained"]
        dist = list(range(len(n)))
        ax.semilogy(dist, [max(v, 1e-30) for v in reversed(n)], label=f"{r['kind'].upper()} trained")
        ni = r["grad_init"]
        ax.semilogy(dist, [max(v, 1e-30) for v in reversed(ni)], ls=":", label=f"{r['kind'].upper()} at init")
    ax.set_xlabel("distance k from the loss (steps back)")
    ax.set_ylabel("‖∂L/∂h_{T-k}‖")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(out_dir, quick)


def _run(out_dir: Path, quick: bool) -> dict:
    delays = [5, 50] if quick else [5, 10, 20, 50, 100, 200]
    iters = 300 if quick else 800
    rep = Report(out_dir, "R3.1 The RNN and the long-term dependency problem")
    rep.text("Delayed recall: the input is a symbol (one of 4), then `delay` random noise tokens, then a cue; "
             "the RNN must output the symbol at the cue. Chance is 25 %. Elman RNN (tanh, hidden 32, "
             f"PyTorch's default init), Adam lr 1e-2, batch 64, gradient clipping 1.0, up to {iters} steps "
             "per delay (early stop at 99 % held-out accuracy).")
    runs = [train_recall("rnn", d, iters) for d in delays]
    rep.table([{"delay": r["delay"], "accuracy": r["accuracy"], "steps": r["iters"], "seconds": r["seconds"]}
               for r in runs])
    plot_accuracy(runs, rep.out / "accuracy_vs_delay.png", "Elman RNN: delayed recall")
    rep.image(rep.out / "accuracy_vs_delay.png", "accuracy vs delay")
    long = max(runs, key=lambda r: r["delay"])
    dist = min(50, long["delay"])
    rep.heading("Vanishing gradient")
    rep.text(f"‖∂L/∂h_t‖ as a function of the distance from the loss, at delay {long['delay']}. "
             f"Ratio across {dist} steps: at init {grad_ratio(long['grad_init'], dist):.3e}, "
             f"after training {grad_ratio(long['grad_trained'], dist):.3e}.")
    plot_grads([long], rep.out / "grad_norm_vs_distance.png", f"Elman RNN, delay {long['delay']}")
    rep.image(rep.out / "grad_norm_vs_distance.png", "gradient norm vs distance")
    rep.results.update({
        "accuracy": {str(r["delay"]): r["accuracy"] for r in runs},
        "chance": CHANCE,
        "grad_ratio_distance": dist,
        "grad_ratio_init": grad_ratio(long["grad_init"], dist),
        "grad_ratio_trained": grad_ratio(long["grad_trained"], dist),
    })
    rep.write()
    return rep.results
