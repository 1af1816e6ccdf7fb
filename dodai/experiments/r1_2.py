"""R1.2 Linear algebra: dodai's own Jacobi eigensolver and SVD (dodai.basics.linalg) used for real.

1. Accuracy against numpy.linalg (LAPACK) on random, ill-conditioned (Hilbert) and rank-deficient matrices.
2. PCA of *learned* embeddings: a small byte-level GPT is trained on dodai's built-in python-docs corpus and
   its token-embedding table is projected on its two principal components (dodai's PCA).
3. Low-rank compression: every weight matrix inside the Transformer blocks is replaced by its best rank-r
   approximation U_r Σ_r V_rᵀ (Eckart & Young 1936) from dodai's SVD; held-out perplexity vs rank shows how much
   of each matrix the model actually uses (cf. LoRA's low-rank hypothesis, Hu et al. 2021). Rank 0 (every block
   matrix zeroed, so only embeddings → final norm → head remain) is the floor: each rank's "share of the blocks'
   gain" is (loss₀ − loss_r) / (loss₀ − loss_full), a relative measure that does not depend on how far a given
   machine's float kernels let the short training get.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np

from dodai.basics import linalg as L
from dodai.basics.mlp import blas_threads
from dodai.experiments.r1_3 import one_torch_thread
from dodai.report import Report
from dodai.viz import pyplot

RESIDUAL = "relative residual ‖AV - VΛ‖/‖A‖ or ‖UΣVᵀ - A‖/‖A‖"


def accuracy_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((64, 64))
    hilbert = 1.0 / (np.arange(10)[:, None] + np.arange(10)[None, :] + 1)
    rankdef = rng.standard_normal((80, 5)) @ rng.standard_normal((5, 40))
    rows = []
    for name, S in [("random symmetric 64×64", B + B.T), ("Hilbert 10×10 (cond 1.6e13)", hilbert)]:
        w, V = L.eigh(S)
        rows.append({"matrix": name, "method": "eigh (Jacobi)",
                     "max abs diff of λ or σ vs numpy": float(np.abs(w - np.linalg.eigvalsh(S)).max()),
                     RESIDUAL: float(np.linalg.norm(S @ V - V * w) / np.linalg.norm(S)),
                     "‖VᵀV - I‖": float(np.linalg.norm(V.T @ V - np.eye(len(w))))})
    for name, A in [("random 120×48", rng.standard_normal((120, 48))), ("Hilbert 10×10", hilbert),
                    ("rank-5 80×40", rankdef)]:
        U, S, Vt = L.svd(A)
        rows.append({"matrix": name, "method": "svd (one-sided Jacobi)",
                     "max abs diff of λ or σ vs numpy": float(np.abs(S - np.linalg.svd(A, compute_uv=False)).max()),
                     RESIDUAL: float(np.linalg.norm((U * S) @ Vt - A) / np.linalg.norm(A)),
                     "‖VᵀV - I‖": float(np.linalg.norm(Vt @ Vt.T - np.eye(len(S))))})
    return rows


def train_byte_gpt(text: str, steps: int, n_embd: int, seed: int = 0):
    """A small byte-level GPT (vocab 256) trained with AdamW (cosine decay to 10 %, no clipping) on the first
    90 % of ``text``, on :func:`dodai.train.fit.fit`."""
    import torch

    from dodai.models.gpt import GPT, GPTConfig
    from dodai.train.fit import FitConfig, fit
    from dodai.train.trainer import lm_loss

    torch.manual_seed(seed)
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=n_embd)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(seed)
    T = cfg.block_size

    def batches(i: int):
        ix = torch.randint(0, len(train) - T - 1, (32,), generator=g)
        x = torch.stack([train[i:i + T] for i in ix.tolist()])  # (B, T)
        y = torch.stack([train[i + 1:i + T + 1] for i in ix.tolist()])
        return x, y

    fcfg = FitConfig(steps=steps, optimizer="adamw", lr=3e-3, weight_decay=0.01, decay_matrices_only=False)
    fit(model, batches, lm_loss, fcfg,
        lr_fn=lambda step: 3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))))
    return model, train, val


def val_loss(model, val, n_windows: int = 64) -> float:
    import torch

    T = model.config.block_size
    n = min(n_windows, (len(val) - 1) // T)
    x = val[:n * T].view(n, T)
    y = val[1:n * T + 1].view(n, T)
    with torch.no_grad():
        return float(model(x, y)[1])


def compressible(model) -> list[str]:
    """Names of the 2-D weight matrices inside the Transformer blocks (embeddings stay full)."""
    return [n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.ndim == 2]


def run(out_dir: Path, quick: bool = False) -> dict:
    import torch

    from dodai.data.corpora import load_corpus

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R1.2 Linear algebra: Jacobi eigensolver, SVD, PCA and low-rank compression")
    rep.text(__doc__.split("\n\n", 1)[1].strip())
    with blas_threads(1), (one_torch_thread() if quick else contextlib.nullcontext()):
        rep.heading("1. Accuracy vs numpy.linalg")
        acc = accuracy_rows()
        rep.table(acc)
        rep.results["accuracy"] = acc

        text = load_corpus("python-docs")[: 100_000 if quick else 1_000_000]
        steps, n_embd = (400, 64) if quick else (800, 128)  # quick: past the unigram plateau (~250 steps)
        model, train, val = train_byte_gpt(text, steps, n_embd)
        base = val_loss(model, val)
        rep.results["gpt"] = {"steps": steps, "n_embd": n_embd, "n_layer": 2, "val_loss": base,
                              "val_ppl": math.exp(base), "train_bytes": len(train), "val_bytes": len(val)}

        # 2. PCA of the learned byte embeddings (the 48 most frequent bytes of the training text)
        counts = torch.bincount(train, minlength=256).numpy()
        top = np.argsort(-counts)[:48]
        E = model.transformer.wte.weight.detach().double().numpy()[top]
        pca = L.PCA.fit(E, 2)
        Z = pca.transform(E)
        ref_var = np.linalg.svd(E - E.mean(0), compute_uv=False)[:2] ** 2 / (len(E) - 1)
        rep.results["pca"] = {"explained_variance_ratio": pca.explained_variance_ratio.tolist(),
                              "max abs diff of variance vs numpy":
                                  float(np.abs(pca.explained_variance - ref_var).max())}

        # 3. low-rank compression of every weight matrix in the blocks
        names = compressible(model)
        params = dict(model.named_parameters())
        svds = {n: L.svd(params[n].detach().double().numpy()) for n in names}
        full_rank = min(min(params[n].shape) for n in names)
        ranks = sorted({r for r in (0, 1, 2, 4, 8, 16, 32, 64, 128) if r <= full_rank} | {full_rank})
        rows = []
        total = sum(params[n].numel() for n in names)
        for r in ranks:
            m2 = copy.deepcopy(model)
            p2 = dict(m2.named_parameters())
            kept = 0
            with torch.no_grad():
                for n in names:
                    U, S, Vt = svds[n]
                    k = min(r, len(S))
                    p2[n].copy_(torch.from_numpy((U[:, :k] * S[:k]) @ Vt[:k]).to(p2[n].dtype))
                    kept += k * (U.shape[0] + Vt.shape[1])  # factors A (m, k) and B (k, n)
            loss = val_loss(m2, val)
            rows.append({"rank": r, "val loss": loss, "val perplexity": math.exp(loss),
                         "block weights kept as factors": kept / total})
    rows.append({"rank": "full (original)", "val loss": base, "val perplexity": math.exp(base),
                 "block weights kept as factors": 1.0})
    floor = rows[0]["val loss"]  # rank 0: the blocks contribute nothing
    for row in rows:
        row["share of the blocks' gain"] = (floor - row["val loss"]) / (floor - base) if floor != base else float("nan")
    rep.heading(f"GPT: 2 layers, n_embd {n_embd}, {steps} steps on {len(train):,} bytes; held-out perplexity vs rank")
    rep.table(rows)
    rep.results["compression"] = rows

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    cat = ["lower" if chr(b).islower() else "upper" if chr(b).isupper() else "digit" if chr(b).isdigit()
           else "space/punct" for b in top]
    for i, c in enumerate(("lower", "upper", "digit", "space/punct")):
        idx = [j for j, k in enumerate(cat) if k == c]
        a1.scatter(Z[idx, 0], Z[idx, 1], color=f"C{i}", label=c, s=14)
    for j, b in enumerate(top):
        a1.annotate("␣" if b == 32 else repr(chr(b))[1:-1], Z[j], fontsize=8)
    ev = pca.explained_variance_ratio
    a1.set_xlabel(f"PC1 ({100 * ev[0]:.1f} % of variance)")
    a1.set_ylabel(f"PC2 ({100 * ev[1]:.1f} % of variance)")
    a1.set_title("learned byte embeddings (48 most frequent), dodai PCA")
    a1.legend(fontsize=8)
    r_num = [r["rank"] for r in rows[1:-1]]
    a2.plot(r_num, [r["val perplexity"] for r in rows[1:-1]], "o-", label="rank-r weights (dodai SVD)")
    a2.axhline(math.exp(base), color="k", ls="--", label="original model")
    a2.axhline(math.exp(floor), color="C3", ls=":", label="rank 0 (blocks zeroed)")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("rank r of every block weight matrix")
    a2.set_ylabel("held-out perplexity (bytes)")
    a2.set_title("low-rank compression of a trained GPT")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "linalg.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "linalg.png", "PCA of learned embeddings; perplexity vs rank")
    rep.write()
    return rep.results
