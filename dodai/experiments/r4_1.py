"""R4.1 Self-attention, Q/K/V: the explicit reference equals the fused SDPA path; what a trained head looks at.

1. Agreement and speed: ``attention_reference`` (softmax(QK^T/sqrt(D) + M) V, written out) against
   ``torch.nn.functional.scaled_dot_product_attention`` on random causal inputs, max |difference| in fp32 and
   fp64, and the time of each at a few sequence lengths.
2. Attention maps: a small character-level GPT is trained briefly on the built-in ``python-docs`` corpus,
   then run with the reference implementation, which keeps each layer's attention weights; one PNG shows
   every head of every layer on a sentence. Rows sum to 1 and the upper triangle is zero (causality).

This module also holds the small training helpers (character data, a fixed-budget training loop, validation
loss) that R4.2 and R4.4 reuse, so those comparisons run on identical data and budgets.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from dodai.models.gpt import GPT, GPTConfig
from dodai.nn.attention import attention_reference, attention_sdpa
from dodai.report import Report
from dodai.train.fit import FitConfig, fit
from dodai.train.trainer import lm_loss
from dodai.viz import pyplot


# ------------------------------------------------------------------------------ shared training helpers
@contextlib.contextmanager
def one_thread():
    """These models are tiny: a second intra-op thread only adds synchronisation, and on a busy shared
    machine it spins. Restores the previous setting."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def char_data(n_chars: int):
    """(tokenizer, train ids, val ids): the first n_chars of python-docs, char-level, 90/10 split."""
    from dodai.data.corpora import load_corpus
    from dodai.tokenizers.char import CharTokenizer

    text = load_corpus("python-docs")[:n_chars]
    tok = CharTokenizer.train(text)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    cut = int(0.9 * len(ids))
    return tok, ids[:cut], ids[cut:]


def batch(data: torch.Tensor, block: int, bsz: int, gen: torch.Generator):
    ix = torch.randint(len(data) - block - 1, (bsz,), generator=gen)
    win = data[ix[:, None] + torch.arange(block + 1)]  # (B, T+1)
    return win[:, :-1], win[:, 1:]


@torch.no_grad()
def val_loss(model: GPT, val: torch.Tensor, block: int, n_batches: int = 8, bsz: int = 16) -> float:
    gen = torch.Generator().manual_seed(1234)  # the same validation windows for every model
    was = model.training
    model.eval()
    losses = [model(*batch(val, block, bsz, gen))[1].item() for _ in range(n_batches)]
    model.train(was)
    return sum(losses) / len(losses)


def train_lm(cfg: GPTConfig, train: torch.Tensor, val: torch.Tensor, steps: int, bsz: int = 16,
             lr: float = 3e-3, seed: int = 0, evals: int = 5) -> tuple[GPT, dict]:
    """AdamW with linear warm-up then cosine decay (floor 5 %), on :func:`dodai.train.fit.fit`; the same
    data order for every model (same seed). ``ms_per_step`` counts the optimizer steps only (not the
    validation passes)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(seed)
    fcfg = FitConfig(steps=steps, optimizer="adamw", lr=lr, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
                     eval_every=max(1, steps // evals), eval_at_start=True)
    res = fit(model, lambda i: batch(train, cfg.block_size, bsz, gen), lm_loss, fcfg,
              lr_fn=lambda s: lr * warmup_cosine(s + 1, steps, max(1, steps // 10), floor=0.05),
              evaluate=lambda m: {"val_loss": val_loss(m, val, cfg.block_size)})
    curve = [(r["step"], r["val_loss"]) for r in res.evals]
    return model, {"val_loss": curve[-1][1], "curve": curve, "ms_per_step": res.train_time_s / steps * 1000,
                   "params": model.num_params(non_embedding=False)}


def warmup_cosine(step: int, steps: int, warm: int, floor: float = 0.0) -> float:
    """The learning-rate factor of the R4 experiments at the 1-based ``step``: ``step / warm`` up to ``warm``,
    then half a cosine from 1 to 0 at ``steps``, never below ``floor``."""
    f = step / warm if step <= warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))
    return max(f, floor)


# ------------------------------------------------------------------------------ the experiment
def _agreement(lengths, repeats: int) -> list[dict]:
    rows = []
    for t in lengths:
        g = torch.Generator().manual_seed(t)
        q, k, v = (torch.randn(4, 4, t, 32, generator=g) for _ in range(3))  # (B, H, T, D)
        diff32 = (attention_reference(q, k, v, causal=True) - attention_sdpa(q, k, v, causal=True)).abs().max()
        q64, k64, v64 = q.double(), k.double(), v.double()
        diff64 = (attention_reference(q64, k64, v64, causal=True)
                  - attention_sdpa(q64, k64, v64, causal=True)).abs().max()
        times = {}
        for name, fn in (("reference", attention_reference), ("sdpa", attention_sdpa)):
            fn(q, k, v, causal=True)  # warm-up
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(q, k, v, causal=True)
                ts.append(time.perf_counter() - t0)
            times[name] = sorted(ts)[len(ts) // 2] * 1000
        rows.append({"T": t, "max_diff_fp32": diff32.item(), "max_diff_fp64": diff64.item(),
                     "reference_ms": times["reference"], "sdpa_ms": times["sdpa"],
                     "speedup": times["reference"] / max(times["sdpa"], 1e-9)})
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    rep = Report(out_dir, "R4.1 Self-attention: reference vs SDPA, attention maps")
    rep.text(__doc__.split("\n\n", 1)[1].split("This module")[0])

    rows = _agreement([32, 128] if quick else [64, 256, 512, 1024], 3 if quick else 10)
    rep.heading("Reference vs fused SDPA (B=4, H=4, D=32, causal)")
    rep.table(rows)

    tok, train, val = char_data(150_000 if quick else 1_000_000)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model, stats = train_lm(cfg, train, val, steps=50 if quick else 1500, bsz=12 if quick else 32)
    rep.heading("A small char GPT on python-docs")
    rep.text(f"{stats['params']:,} parameters, {len(stats['curve']) - 1} evaluations; "
             f"val loss {stats['curve'][0][1]:.3f} -> {stats['val_loss']:.3f} nats/char "
             f"(uniform: ln V = {math.log(tok.vocab_size):.3f}).")

    sentence = "Return the number of items in the list."
    ids = torch.tensor([tok.encode(sentence)])
    model.eval()
    for blk in model.transformer.h:
        blk.attn.attn_impl, blk.attn.keep_weights = "reference", True
    with torch.no_grad():
        logits_ref, _ = model(ids)
    maps = [blk.attn.last_weights[0] for blk in model.transformer.h]  # L x (H, T, T)
    for blk in model.transformer.h:
        blk.attn.attn_impl, blk.attn.keep_weights = "sdpa", False
    with torch.no_grad():
        logits_fast, _ = model(ids)
    stack = torch.stack(maps)  # (L, H, T, T)
    row_sum_err = (stack.sum(-1) - 1).abs().max().item()
    upper = torch.triu(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool), diagonal=1)
    future_mass = stack[..., upper].abs().max().item()
    # how much each head attends to the previous character (a common learned pattern)
    prev = torch.diagonal(stack, offset=-1, dim1=-2, dim2=-1).mean(-1)  # (L, H)

    plt = pyplot()
    n_l, n_h = stack.shape[:2]
    fig, axes = plt.subplots(n_l, n_h, figsize=(3 * n_h, 3 * n_l), squeeze=False)
    chars = list(sentence)
    for i in range(n_l):
        for j in range(n_h):
            ax = axes[i][j]
            ax.imshow(stack[i, j].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {i} head {j}", fontsize=8)
            if quick:  # character tick labels cost most of the drawing time
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.set_xticks(range(len(chars)))
                ax.set_xticklabels(chars, fontsize=4)
                ax.set_yticks(range(len(chars)))
                ax.set_yticklabels(chars, fontsize=4)
    fig.suptitle(f"attention weights on {sentence!r} (row = query, column = key)", fontsize=9)
    png = out_dir / "attention_maps.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "attention maps of every head")
    rep.table([{"layer": i, "head": j, "mean weight on previous char": prev[i, j].item()}
               for i in range(n_l) for j in range(n_h)])

    rep.results.update({
        "agreement": rows,
        "max_diff_fp32": max(r["max_diff_fp32"] for r in rows),
        "max_diff_fp64": max(r["max_diff_fp64"] for r in rows),
        "val_loss_start": stats["curve"][0][1], "val_loss_end": stats["val_loss"],
        "uniform_loss": math.log(tok.vocab_size),
        "attn_row_sum_max_err": row_sum_err, "attn_future_weight_max": future_mass,
        "model_logits_ref_vs_sdpa_max_diff": (logits_ref - logits_fast).abs().max().item(),
        "prev_char_attention": prev.tolist(), "quick": quick,
    })
    rep.write()
    return rep.results


def plot_curves(curves: dict, out_dir: Path, title: str, ylabel: str = "validation loss (nats/char)") -> Path:
    """One line per variant of (step, loss) pairs -> out_dir/loss_curves.png (shared by R4.2 and R4.4)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot([s for s, _ in c], [v for _, v in c], marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    png = Path(out_dir) / "loss_curves.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
