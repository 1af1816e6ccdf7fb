"""R9.3 demo, BERT vs GPT: fill-in-the-blank with an encoder, next-token prediction with a decoder.

The same sentences go to both kinds of model. The encoder — dodai's small BERT, MLM-pre-trained on
python-docs by :func:`dodai.experiments.r6_1.pretrain_small_bert` (all-MiniLM-L6-v2 has no MLM head) —
sees the whole sentence and predicts the word behind [MASK] from *both* sides. The decoder — SmolLM2-135M-
Instruct (dodai's Llama, real GGUF weights) — sees only the words before the blank and predicts what comes
next. The difference is the attention mask: bidirectional (every token attends to every real token) versus
causal (token i attends to tokens 0..i).

The masks plotted are *read from the two models*, not drawn: for every position j the token there is replaced
by another one and the experiment records which positions' outputs change (``dependency[i, j] = 1`` when
output i moves by more than 1e-6). A bidirectional encoder gives a matrix of ones; a causal decoder gives exactly
the lower triangle, whatever the attention code does internally (a wrong mask would show here).

Measured claim: changing a word to the *right* of the blank changes the encoder's prediction at the blank,
and never changes the decoder's logits at that position (max |Δ| is exactly 0 up to float round-off).
If SmolLM2 is not pulled, the decoder column is skipped and the causality check runs on a small random
GPT (dodai.models.gpt) instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dodai.report import Report

SENTENCES = [  # (with a blank, the same with a different word after the blank)
    ("Return a new [MASK] object.", "Return a new [MASK] instance."),
    ("Raise ValueError if the [MASK] is negative.", "Raise ValueError if the [MASK] is empty."),
    ("Close the [MASK] and release its resources.", "Close the [MASK] and flush its buffers."),
    ("Open the [MASK] for reading.", "Open the [MASK] for writing."),
]
# Quick mode only shows the mechanics: a few MLM steps (its fill-mask guesses are mostly frequent words).
QUICK_PRETRAIN = dict(vocab_size=512, vocab_docs=500, hidden=64, layers=2, heads=2, block=64, pt_steps=60,
                      pt_batch=32, pt_lr=2e-3, pt_seconds=None, max_len=64)
FULL_PRETRAIN = dict(vocab_size=4096, vocab_docs=None, hidden=128, layers=4, heads=4, block=64, pt_steps=2000,
                     pt_batch=64, pt_lr=1.5e-3, pt_seconds=300.0, max_len=64)


def run(out_dir: Path, quick: bool = False) -> dict:
    from dodai.experiments.r4_1 import one_thread

    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    from dodai.data.corpora import corpus_documents
    from dodai.experiments.r6_1 import pretrain_small_bert
    from dodai.train.mlm import fill_mask

    rep = Report(out_dir, "R9.3 BERT vs GPT: fill-mask vs next token")
    rep.text(__doc__.split("\n\n", 1)[1])
    s = QUICK_PRETRAIN if quick else FULL_PRETRAIN
    mlm, tok, pt, _, _ = pretrain_small_bert(corpus_documents("python-docs"), s)
    rep.text(f"Encoder: small BERT ({sum(p.numel() for p in mlm.parameters()):,} parameters), {pt['steps']} MLM "
             f"steps, held-out MLM loss {pt['val'][-1][1]:.3f} nats.")
    decoder, dtok, skipped = _decoder()
    rows, checks = [], []
    for sent, variant in SENTENCES:
        enc_top = fill_mask(mlm, tok, sent, top_k=3)[0]
        row = {"sentence": sent, "BERT fill-mask (top 3)": ", ".join(f"{t} {p:.2f}" for t, p in enc_top)}
        if dtok is not None:
            prefix = sent.split("[MASK]")[0].rstrip()
            row["GPT next token after the prefix (top 3)"] = ", ".join(
                f"{t!r} {p:.2f}" for t, p in _next_tokens(decoder, dtok, prefix, 3))
        rows.append(row)
        checks.append({"sentence": sent, "right-context edit": variant,
                       "BERT max |Δlogit| at blank": _encoder_delta(mlm, tok, sent, variant),
                       "GPT max |Δlogit| at blank": _decoder_delta(decoder, dtok, sent, variant)})
    rep.table(rows)
    if skipped:
        rep.text(f"Skipped: {skipped}")
    rep.heading("Does the right-hand context matter?")
    rep.table(checks)
    labels = [tok.id_to_token[i] for i in tok.encode(SENTENCES[0][0])]
    enc_dep = dependency_matrix(lambda ids: mlm(ids)[0], tok.encode(SENTENCES[0][0]), tok.vocab_size)
    dec_ids = _ids(dtok, SENTENCES[0][0].replace("[MASK]", "file"))
    dec_vocab = dtok.vocab_size if dtok is not None else 256
    dec_dep = dependency_matrix(lambda ids: decoder(ids)[0], dec_ids, dec_vocab)
    dec_labels = [dtok.decode([i]) for i in dec_ids] if dtok is not None else [chr(i) for i in dec_ids]
    T_enc, T_dec = enc_dep.shape[0], dec_dep.shape[0]
    mask_check = {
        "encoder_tokens": T_enc, "decoder_tokens": T_dec,
        "encoder_dependency_fraction": float(enc_dep.double().mean()),
        "decoder_dependency_fraction": float(dec_dep.double().mean()),
        "decoder_equals_lower_triangle": bool(torch.equal(dec_dep, torch.tril(torch.ones_like(dec_dep)))),
        "encoder_all_ones": bool(enc_dep.all()),
    }
    rep.heading("The masks, measured")
    rep.table([{"model": "BERT (encoder)", "tokens": T_enc,
                "share of (query, key) pairs that interact": mask_check["encoder_dependency_fraction"],
                "pattern": "all pairs" if mask_check["encoder_all_ones"] else "not all pairs"},
               {"model": "GPT (decoder)", "tokens": T_dec,
                "share of (query, key) pairs that interact": mask_check["decoder_dependency_fraction"],
                "pattern": "lower triangle" if mask_check["decoder_equals_lower_triangle"] else "not causal"}])
    png = _plot_masks((labels, enc_dep), (dec_labels, dec_dep), out_dir)
    rep.image(png, "measured dependency masks: bidirectional (BERT) vs causal (GPT)")
    rep.results.update({"quick": quick, "rows": rows, "checks": checks, "skipped": skipped, "masks": mask_check,
                        "decoder": "smollm2-135m-instruct" if dtok is not None else "random tiny GPT",
                        "mlm_val_loss": pt["val"][-1][1]})
    rep.write()
    return rep.results


def _decoder():
    """(SmolLM2, its tokenizer, None) or (a tiny random GPT, None, reason)."""
    from dodai.errors import DodaiError
    from dodai.models import load_model

    try:
        model, tok = load_model("smollm2-135m-instruct")
        return model, tok, None
    except DodaiError as e:
        from dodai.models.gpt import GPT, GPTConfig

        torch.manual_seed(0)
        return (GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval(), None,
                f"SmolLM2 not available ({e}); the causality check uses a random tiny GPT on bytes")


def _ids(dtok, text: str) -> list[int]:
    return dtok.encode(text) if dtok is not None else list(text.encode("utf-8"))


@torch.no_grad()
def _next_tokens(decoder, dtok, prefix: str, k: int) -> list[tuple[str, float]]:
    logits, _ = decoder(torch.tensor([_ids(dtok, prefix)]))
    p = torch.softmax(logits[0, -1].float(), -1)
    top = torch.topk(p, k)
    return [(dtok.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]


@torch.no_grad()
def _encoder_delta(mlm, tok, a: str, b: str) -> float:
    ia, ib = tok.encode(a), tok.encode(b)
    pos = ia.index(tok.vocab[tok.mask_token])
    la, _ = mlm(torch.tensor([ia]))
    lb, _ = mlm(torch.tensor([ib]))
    return float((la[0, pos] - lb[0, pos]).abs().max())


@torch.no_grad()
def _decoder_delta(decoder, dtok, a: str, b: str) -> float:
    """Max |Δ| of the decoder's logits at the last token before the blank when only later words change."""
    prefix = a.split("[MASK]")[0].rstrip()
    n = len(_ids(dtok, prefix))
    ta, tb = a.replace("[MASK]", "file"), b.replace("[MASK]", "file")
    ia, ib = _ids(dtok, ta), _ids(dtok, tb)
    if ia[:n] != ib[:n]:  # the tokenizer merged across the blank: compare only the shared prefix
        n = next(i for i, (x, y) in enumerate(zip(ia, ib)) if x != y)
    la, _ = decoder(torch.tensor([ia]))
    lb, _ = decoder(torch.tensor([ib]))
    return float((la[0, :n] - lb[0, :n]).abs().max())


@torch.no_grad()
def dependency_matrix(forward, ids: list[int], vocab_size: int, tol: float = 1e-6) -> torch.Tensor:
    """(T, T) bool: ``[i, j]`` is True when replacing token j changes the model's output at position i.

    ``forward`` maps ids (1, T) to outputs (1, T, ...). This reads the mask a model actually applies, from its
    outputs, instead of drawing the mask one expects."""
    x = torch.tensor([ids])
    base = forward(x).float()
    T = len(ids)
    dep = torch.zeros(T, T, dtype=torch.bool)
    for j in range(T):
        y = x.clone()
        y[0, j] = (int(y[0, j]) + 1 + j) % vocab_size  # a different token at position j only
        out = forward(y).float()
        dep[:, j] = (out - base).abs().flatten(2).amax(-1)[0] > tol
    return dep


def _plot_masks(enc, dec, out_dir: Path) -> Path:
    from dodai.viz import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    for a, (labels, m), title in ((ax[0], enc, "BERT: measured, bidirectional"), (ax[1], dec, "GPT: measured, causal")):
        T = len(labels)
        a.imshow(m.float().numpy(), cmap="Blues", vmin=0, vmax=1)
        a.set_xticks(range(T), labels, rotation=90, fontsize=7)
        a.set_yticks(range(T), labels, fontsize=7)
        a.set(title=title, xlabel="key position j (token replaced)", ylabel="query position i (output changed?)")
    fig.tight_layout()
    path = out_dir / "attention_masks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
