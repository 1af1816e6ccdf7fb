"""R1.4 Information theory on real next-token distributions: cross-entropy = entropy + KL.

A byte-level bigram language model q(next | previous byte) is counted on the first 90 % of dodai's built-in
``python-docs`` corpus (add-α smoothed, α = 0.1, so q > 0 everywhere). On the held-out last 10 %, for every
context byte c, p(· | c) is the *empirical* next-byte distribution. Then, per context and exactly,

    H(p_c, q_c) = H(p_c) + KL(p_c ‖ q_c)

and the model's held-out loss (mean -log q over held-out tokens) is the context-weighted average of
H(p_c, q_c): a part no model of this form can remove on this text (the conditional entropy) plus the
model's own excess (the KL). A unigram model (no context) is shown for contrast. One token is one byte,
so bits per byte is the loss in bits (Shannon 1948; Cover & Thomas 2006, ch. 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dodai import info
from dodai.report import Report
from dodai.viz import pyplot

ALPHA = 0.1


def bigram_counts(data: np.ndarray) -> np.ndarray:
    """(256, 256) counts of (previous byte, next byte)."""
    counts = np.zeros((256, 256), dtype=np.float64)
    np.add.at(counts, (data[:-1], data[1:]), 1)
    return counts


def analyse(text: str) -> dict:
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    cut = int(0.9 * len(data))
    train, held = data[:cut], data[cut:]
    q_bi = bigram_counts(train) + ALPHA
    q_bi /= q_bi.sum(axis=1, keepdims=True)  # q(next | prev), rows sum to 1
    q_uni = np.bincount(train, minlength=256) + ALPHA
    q_uni = np.broadcast_to(q_uni / q_uni.sum(), (256, 256))  # the same row for every context

    held_counts = bigram_counts(held)
    ctx_n = held_counts.sum(axis=1)
    used = ctx_n > 0
    p = np.zeros_like(held_counts)
    p[used] = held_counts[used] / ctx_n[used, None]  # empirical p(next | c) on held-out text
    w = ctx_n / ctx_n.sum()  # how often each context occurs

    out = {"n_train_bytes": int(len(train)), "n_heldout_bytes": int(len(held)), "p": p, "w": w}
    for name, q in (("bigram", q_bi), ("unigram", q_uni)):
        H = info.entropy(p[used])
        CE = info.cross_entropy(p[used], q[used])
        KL = info.kl_divergence(p[used], q[used])
        nll = -np.log(q[held[:-1], held[1:]])  # the model's loss, token by token
        out[name] = {"H": H, "CE": CE, "KL": KL, "q": q,
                     "identity_max_err": float(np.max(np.abs(CE - (H + KL)))),
                     "heldout_nll": float(nll.mean()),
                     "weighted_CE": float(np.sum(w[used] * CE)),
                     "cond_entropy": float(np.sum(w[used] * H)),
                     "mean_KL": float(np.sum(w[used] * KL))}
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    import torch

    from dodai.data.corpora import load_corpus

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R1.4 Information theory: cross-entropy = entropy + KL on next-byte distributions")
    rep.text(__doc__.split("\n\n", 1)[1].strip())
    text = load_corpus("python-docs")
    if quick:
        text = text[:300_000]
    a = analyse(text)
    rep.results["n_train_bytes"] = a["n_train_bytes"]
    rep.results["n_heldout_bytes"] = a["n_heldout_bytes"]

    rows = []
    for name in ("bigram", "unigram"):
        m = a[name]
        # cross-check the held-out loss with torch's own cross-entropy on log q
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)[a["n_train_bytes"]:]
        logq = torch.from_numpy(np.log(np.ascontiguousarray(m["q"])))[torch.from_numpy(data[:-1])]
        torch_nll = float(torch.nn.functional.cross_entropy(logq, torch.from_numpy(data[1:])))
        n = a["n_heldout_bytes"] - 1
        rows.append({"model": name, "held-out loss (nats/byte)": m["heldout_nll"], "torch F.cross_entropy": torch_nll,
                     "Σ w_c H(p_c, q_c)": m["weighted_CE"], "conditional entropy Σ w_c H(p_c)": m["cond_entropy"],
                     "mean KL Σ w_c KL(p_c‖q_c)": m["mean_KL"],
                     "bits per byte": info.bits_per_byte(m["heldout_nll"], n, n),
                     "perplexity": info.perplexity(m["heldout_nll"]),
                     "max abs(CE - (H + KL)) over contexts": m["identity_max_err"]})
        rep.results[name] = {k: v for k, v in rows[-1].items() if k != "model"}
    rep.heading("Held-out loss decomposed")
    rep.table(rows)

    # the 15 most frequent contexts, per-context decomposition
    order = np.argsort(-a["w"])[:15]
    used_idx = np.flatnonzero(a["w"] > 0)
    pos = {c: i for i, c in enumerate(used_idx)}
    per_ctx = []
    for c in order:
        i = pos[c]
        per_ctx.append({"context": repr(chr(c)), "share": float(a["w"][c]), "H(p_c)": float(a["bigram"]["H"][i]),
                        "KL bigram": float(a["bigram"]["KL"][i]), "CE bigram": float(a["bigram"]["CE"][i]),
                        "KL unigram": float(a["unigram"]["KL"][i]), "CE unigram": float(a["unigram"]["CE"][i])})
    rep.heading("Most frequent contexts (nats)")
    rep.table(per_ctx)
    rep.results["contexts"] = per_ctx

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = np.arange(len(per_ctx))
    H = [r["H(p_c)"] for r in per_ctx]
    ax.bar(x - 0.2, H, 0.4, color="C0", label="H(p_c): entropy of the held-out next byte")
    ax.bar(x - 0.2, [r["KL bigram"] for r in per_ctx], 0.4, bottom=H, color="C1", label="+ KL(p_c ‖ bigram)")
    ax.bar(x + 0.2, H, 0.4, color="C0", alpha=0.5)
    ax.bar(x + 0.2, [r["KL unigram"] for r in per_ctx], 0.4, bottom=H, color="C3", label="+ KL(p_c ‖ unigram)")
    ax.plot(x - 0.2, [r["CE bigram"] for r in per_ctx], "k_", ms=18, mew=2, label="H(p_c, q_c) computed directly")
    ax.plot(x + 0.2, [r["CE unigram"] for r in per_ctx], "k_", ms=18, mew=2)
    ax.set_xticks(x, [r["context"] for r in per_ctx])
    ax.set_xlabel("previous byte (context), most frequent first")
    ax.set_ylabel("nats")
    ax.set_title("cross-entropy = entropy + KL, per context (left bar: bigram model, right bar: unigram)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "ce_decomposition.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "ce_decomposition.png", "per-context decomposition")
    err = max(a["bigram"]["identity_max_err"], a["unigram"]["identity_max_err"])
    rep.text(f"Identity error, max over contexts: {err:.2e} nats. ln 2 = {math.log(2):.4f} nats per bit.")
    rep.write()
    return rep.results
