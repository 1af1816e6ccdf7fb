"""R3.2 LSTM / GRU: gated cells solve the delayed-recall task where the plain RNN fails, and their
gradient ‖∂L/∂h_t‖ does not vanish with the distance from the loss.

Why: the LSTM's cell state is updated additively, c_t = f_t * c_{t-1} + i_t * g_t, so ∂c_t/∂c_{t-1} = f_t; with
the forget gate near 1 the error flows back unchanged (the "constant error carousel", Hochreiter &
Schmidhuber 1997). The GRU's h_t = z_t * h_{t-1} + (1 - z_t) * n_t has the same shortcut through z_t.

Same task, hidden size (32), optimiser and step budget for the three cells (see :mod:`dodai.experiments.r3_1`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dodai.data.transduction import delayed_recall_batch
from dodai.experiments.r3_1 import (
    CHANCE,
    N_NOISE,
    N_SYMBOLS,
    RecallNet,
    grad_ratio,
    one_thread,
    plot_accuracy,
    plot_grads,
    train_recall,
)
from dodai.report import Report


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(out_dir, quick)


def _run(out_dir: Path, quick: bool) -> dict:
    delays = [50] if quick else [5, 10, 20, 50, 100, 200]
    iters = 300 if quick else 800
    rep = Report(out_dir, "R3.2 LSTM / GRU solve the long-delay task")
    rep.text("Delayed recall (a symbol, `delay` noise tokens, a cue; 4 symbols, chance 25 %). RNN, LSTM and GRU "
             f"with hidden size 32, Adam lr 1e-2, batch 64, clip 1.0, up to {iters} steps each (early stop at "
             "99 % held-out accuracy). The LSTM starts with forget-gate bias 3 and the GRU with update-gate "
             "bias 3 (a remembering start); the RNN keeps PyTorch's default init.")
    runs = [train_recall(kind, d, iters) for kind in ("rnn", "lstm", "gru") for d in delays]
    rep.table([{"cell": r["kind"].upper(), "delay": r["delay"], "accuracy": r["accuracy"], "steps": r["iters"],
                "seconds": r["seconds"]} for r in runs])
    plot_accuracy(runs, rep.out / "accuracy_vs_delay.png", "Delayed recall: accuracy vs delay")
    rep.image(rep.out / "accuracy_vs_delay.png", "accuracy vs delay")
    gd = 50
    at = [r for r in runs if r["delay"] == gd]
    rep.heading(f"Gradient norm vs distance (delay {gd})")
    rows = [{"cell": r["kind"].upper(), "ratio_init": grad_ratio(r["grad_init"], gd),
             "ratio_trained": grad_ratio(r["grad_trained"], gd)} for r in at]
    # the same LSTM without the remembering start: forget gate sigmoid(0) = 0.5 at init
    torch.manual_seed(0)
    plain = RecallNet("lstm", gate_bias=0.0)
    x, y = delayed_recall_batch(128, gd, N_SYMBOLS, N_NOISE, torch.Generator().manual_seed(10_000))
    plain_init = grad_ratio(plain.hidden_grad_norms(x, y), gd)
    rows.append({"cell": "LSTM, forget bias 0 (not trained)", "ratio_init": plain_init, "ratio_trained": ""})
    rep.text(f"Ratio ‖∂L/∂h_(T-{gd})‖ / ‖∂L/∂h_T‖; exponentially small means the gradient vanished. The claim "
             "is about the start of training, where the long-range signal has to be learned from: there the "
             "RNN's gradient across 50 steps is smaller by many orders of magnitude than the gated cells'. "
             "After training the ratio mixes in what the model learned (a trained LSTM closes its gates on "
             "noise steps, so h at a noise step barely matters; the memory then lives in c), so it is "
             "reported but not the claim. The last row shows why the forget-gate bias matters: with "
             "f = sigmoid(0) = 0.5 at init the LSTM's carousel leaks too.")
    rep.table(rows)
    plot_grads(at, rep.out / "grad_norm_vs_distance.png", f"‖∂L/∂h_t‖ vs distance, delay {gd}")
    rep.image(rep.out / "grad_norm_vs_distance.png", "gradient norm vs distance")
    rep.results.update({
        "accuracy": {f"{r['kind']}@{r['delay']}": r["accuracy"] for r in runs},
        "chance": CHANCE,
        "grad_ratio_trained": {r["kind"]: grad_ratio(r["grad_trained"], gd) for r in at},
        "grad_ratio_init": {r["kind"]: grad_ratio(r["grad_init"], gd) for r in at},
        "grad_ratio_init_lstm_forget_bias_0": plain_init,
    })
    rep.write()
    return rep.results
