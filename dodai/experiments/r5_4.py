"""R5.4 / R9.3 the sampling playground: one prompt, its next-token distribution under each decoding knob.

For each setting (temperatures 0.5 / 1 / 1.5, top-k 5 / 50, top-p 0.5 / 0.9, min-p 0.1) the experiment
shows the processed next-token distribution (bar chart of the most likely tokens), its entropy
(:func:`dodai.info.entropy`, in bits) and support size, plus a seeded sample continuation. Full mode uses
SmolLM2-135M-Instruct; quick mode a tiny random GPT with a character tokenizer (what the tests run).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dodai.generate.engine import complete
from dodai.generate.processors import LogitsPipeline
from dodai.info import entropy
from dodai.report import Report
from dodai.viz import pyplot

SETTINGS = {
    "T=0.5": dict(temperature=0.5), "T=1": dict(temperature=1.0), "T=1.5": dict(temperature=1.5),
    "top-k 5": dict(top_k=5), "top-k 50": dict(top_k=50), "top-p 0.5": dict(top_p=0.5),
    "top-p 0.9": dict(top_p=0.9), "min-p 0.1": dict(min_p=0.1),
}


def _model(quick: bool):
    if quick:
        from dodai.models.gpt import GPT, GPTConfig
        from dodai.tokenizers.char import CharTokenizer

        tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\n0123456789-:;()")
        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16,
                          tie_weights=False))
        with torch.no_grad():
            m.lm_head.weight.mul_(15)  # logits with a spread, so the knobs have something to cut
        return m.eval(), tok, "Once upon a time"
    from dodai.models import load_model

    m, tok = load_model("smollm2-135m-instruct")
    return m, tok, "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\nThe sea"


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    model, tok, prompt = _model(quick)
    ids = tok.encode(prompt)
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x)[0][:, -1, :].float()  # (1, V)
    rep = Report(out_dir, "R5.4 The sampling playground")
    rep.text(f"Prompt: `{prompt!r}`. Next-token distribution after each processor (entropy in bits).")
    rows, dists = [], {}
    for name, knobs in SETTINGS.items():
        pipe = LogitsPipeline(**knobs)
        p = pipe(x, logits).softmax(-1)[0]
        dists[name] = p
        sample = complete(model, ids, 12 if quick else 30, pipe, seed=0, tokenizer=tok,
                          eos_id=getattr(tok, "eos_id", None))[0].text
        rows.append({"setting": name, "entropy_bits": round(float(entropy(p, base=2)), 4) + 0.0,
                     "support": int((p > 0).sum()), "top_token": repr(tok.decode([int(p.argmax())])),
                     "top_prob": round(float(p.max()), 4), "sample": repr(sample)})
    rep.table(rows)
    plt = pyplot()
    top = dists["T=1"].topk(10).indices
    fig, axes = plt.subplots(2, 4, figsize=(16, 6), sharey=True)
    for ax, (name, p) in zip(axes.flat, dists.items()):
        ax.bar(range(10), p[top].numpy())
        ax.set_xticks(range(10), [repr(tok.decode([int(t)]))[1:-1][:6] for t in top], rotation=60, fontsize=7)
        ax.set_title(f"{name}: H={float(entropy(p, base=2)):.2f} bits")
    fig.tight_layout()
    fig.savefig(out_dir / "distributions.png", dpi=90)
    plt.close(fig)
    rep.image("distributions.png", "probability of the 10 most likely tokens (at T=1) under each setting")
    rep.results["settings"] = rows
    rep.write()
    return rep.results
