"""R1.1 Probability & statistics: count-based n-gram LMs against a small neural GPT.

Data: the built-in ``python-docs`` corpus, character-level (the same prefix, tokenizer and 90/10 split the
R4.x experiments use, so numbers are comparable). Models, all fitted on the training part only:

- unigram with add-k smoothing (k = 1, Laplace);
- bigram and trigram with interpolated Kneser-Ney (discount 0.75; Kneser & Ney 1995, Chen & Goodman 1998);
- a small GPT (2 layers, 64 wide, context 64) trained briefly with AdamW.

Every model is scored on **the same held-out tokens**: all validation characters after the first (the
GPT cannot predict a first token without context). The n-grams condition on the true preceding
characters; the GPT reads the validation text in consecutive windows of 64 targets, each conditioned on
the window's own earlier characters. Perplexity = exp(mean negative log-likelihood in nats per char).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from dodai.basics.ngram import NGramLM
from dodai.experiments.r4_1 import char_data, one_thread, train_lm
from dodai.models.gpt import GPTConfig
from dodai.report import Report
from dodai.viz import pyplot

SAMPLE_LEN = 64  # the GPT's context window bounds its sample; the n-grams use the same length


@torch.no_grad()
def gpt_nll(model, ids: torch.Tensor, block: int) -> float:
    """Mean NLL (nats) of ids[1:] under the GPT, in consecutive windows of ``block`` targets."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, block):
        win = ids[start:start + block + 1]
        x, y = win[:-1][None], win[1:][None]
        logits, _ = model(x)
        lp = torch.log_softmax(logits.float(), dim=-1)[0].gather(-1, y[0][:, None])
        total -= lp.sum().item()
        count += y.numel()
    return total / count


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    rep = Report(out_dir, "R1.1 n-gram language models vs a small GPT")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train, val = char_data(150_000 if quick else 1_000_000)
    if quick:
        val = val[:6000]  # scoring in pure Python is the slow part of quick mode
    tr, va = train.tolist(), val.tolist()
    rows, samples = [], {}
    specs = [("unigram (add-1)", NGramLM(1, "add_k", k=1.0)), ("bigram (KN)", NGramLM(2, "kn")),
             ("trigram (KN)", NGramLM(3, "kn")), ("trigram (MLE)", NGramLM(3, "mle"))]
    for name, lm in specs:
        t0 = time.perf_counter()
        lm.vocab_size = tok.vocab_size
        lm.fit(tr)
        ppl = lm.perplexity(va[1:], context=va[:1])
        rows.append({"model": name, "val_perplexity": ppl,
                     "nats_per_char": math.log(ppl) if math.isfinite(ppl) else math.inf,
                     "seconds": time.perf_counter() - t0})
        samples[name] = tok.decode(lm.sample(SAMPLE_LEN, seed=0))

    steps = 100 if quick else 1500
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)
    t0 = time.perf_counter()
    model, st = train_lm(cfg, train, val, steps=steps, bsz=16 if quick else 32)
    nll = gpt_nll(model, val, cfg.block_size)
    rows.append({"model": f"GPT ({st['params']:,} params, {steps} steps)", "val_perplexity": math.exp(nll),
                 "nats_per_char": nll, "seconds": time.perf_counter() - t0})
    from dodai.generate.sampling import generate

    prompt = tok.encode("\n")
    samples["GPT"] = tok.decode(prompt + list(generate(model, prompt, SAMPLE_LEN - 1, temperature=1.0, seed=0)))

    rep.heading(f"Held-out perplexity ({len(va) - 1:,} characters, vocabulary {tok.vocab_size})")
    rep.table([{**r, "val_perplexity": f"{r['val_perplexity']:.3f}", "nats_per_char": f"{r['nats_per_char']:.3f}",
                "seconds": f"{r['seconds']:.1f}"} for r in rows])
    rep.text("MLE gives probability 0 to any character sequence it never saw, so one unseen event makes the "
             "perplexity infinite; smoothing (add-k, Kneser-Ney) is what makes count models usable.")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    finite = [r for r in rows if math.isfinite(r["val_perplexity"])]
    ax.bar(range(len(finite)), [r["val_perplexity"] for r in finite], color="tab:blue")
    ax.set_xticks(range(len(finite)), [r["model"].split(" (")[0] for r in finite])
    ax.set_ylabel("held-out perplexity (per character)")
    ax.set_title("python-docs, character level" + (" (quick)" if quick else ""))
    for i, r in enumerate(finite):
        ax.text(i, r["val_perplexity"], f"{r['val_perplexity']:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    png = out_dir / "perplexity.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "held-out perplexity, lower is better (MLE trigram omitted when infinite)")

    rep.heading("Samples (seed 0, temperature 1)")
    for name, s in samples.items():
        rep.text(f"**{name}**")
        rep.code(s)
    by = {r["model"].split(" (")[0] if not r["model"].endswith("(MLE)") else "trigram-mle": r for r in rows}
    rep.results.update({"rows": rows, "samples": samples, "quick": quick,
                        "ppl": {k: v["val_perplexity"] for k, v in by.items()}, "vocab_size": tok.vocab_size})
    rep.write()
    return rep.results
