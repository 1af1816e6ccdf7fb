"""R4.4 Feed-forward networks: GPT-2's GELU MLP vs SwiGLU at a matched parameter count.

GELU MLP (Hendrycks & Gimpel 2016; GPT-2): W2 GELU(W1 x), hidden 4C, two matrices: 8C^2 parameters.
SwiGLU (Shazeer 2020): W_down (SiLU(W_gate x) * W_up x), three matrices; hidden 8C/3 keeps 8C^2.
Both FFNs go into the same GPT (no biases, so the counts match), trained on the same data order for the
same number of steps; the report compares parameters and validation loss (python-docs, char level).
Shazeer reports SwiGLU ahead at equal parameters and compute; at this tiny scale and budget the gap is small
and noisy, so the quick mode asserts only that both learn and that the parameter counts match.
"""

from __future__ import annotations

import math
from pathlib import Path

from dodai.experiments.r4_1 import char_data, one_thread, plot_curves, train_lm
from dodai.models.gpt import GPTConfig
from dodai.report import Report


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    rep = Report(out_dir, "R4.4 FFN: GELU MLP vs SwiGLU")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train, val = char_data(150_000 if quick else 1_000_000)
    steps = 50 if quick else 1500
    rows, curves = [], {}
    for act in ("gelu", "swiglu"):
        cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=48,
                        bias=False, activation=act, pos_encoding="rope")
        model, st = train_lm(cfg, train, val, steps=steps, bsz=12 if quick else 32)
        ffn_params = sum(p.numel() for p in model.transformer.h[0].mlp.parameters())
        rows.append({"ffn": act, "ffn_params_per_layer": ffn_params, "params": st["params"],
                     "val_loss": st["val_loss"], "ms_per_step": st["ms_per_step"]})
        curves[act] = st["curve"]
    rep.table(rows)
    png = plot_curves(curves, out_dir, "GELU MLP vs SwiGLU, matched parameters")
    rep.image(png, "validation loss during training")
    rep.results.update({"rows": rows, "curves": curves, "uniform_loss": math.log(tok.vocab_size), "quick": quick})
    rep.write()
    return rep.results
