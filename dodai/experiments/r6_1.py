"""R6.1 Encoder (BERT): masked-LM pre-training on python-docs, then fine-tuning a docstring → package classifier.

(a) **Pre-training.** dodai trains its own WordPiece vocabulary (:mod:`dodai.tokenizers.wordpiece_trainer`;
MiniLM's vocab.txt is *not* reused) on the python-docs corpus minus the held-out classification texts,
packs the corpus into ``[CLS] … [SEP]`` blocks and pre-trains a small post-LN BERT with the masked-LM
objective (15 % of the tokens; 80 % [MASK], 10 % random, 10 % kept: :mod:`dodai.train.mlm`).
(b) **Fine-tuning.** Three encoders get the same classifier head (mean pooling, dropout, linear:
:class:`~dodai.models.bert_heads.BertForSequenceClassification`) and the same recipe (AdamW, linear
warmup/decay, same epochs, batch and truncation) on the docstring → top-level package task
(:mod:`dodai.data.docstring_labels`: the 20 biggest stdlib packages, fixed content-hash held-out split):
the small BERT from random initialisation ("scratch"), the same BERT after dodai's MLM pre-training, and
the real all-MiniLM-L6-v2 weights with their own tokenizer. The held-out texts were never seen in
pre-training, so the comparison measures transfer, not memorisation. MiniLM (22 M parameters, 12×
the small BERT) is fine-tuned with a smaller learning rate (1e-4, the usual range for pre-trained BERTs;
Devlin et al. 2019 §A.3) — a larger one destroys its pre-trained features; everything else is equal.
Fine-tuning runs on two training-set sizes (200 texts, about 10 per class, and all of them) and, for the
small BERTs, two learning rates (training from scratch prefers the larger one), so the table shows the gain
of pre-training both at one fixed recipe and with each model at its best learning rate.

Quick mode (the test) pre-trains for 1,500 steps of 32 × 64 tokens and fine-tunes on 200 texts at lr 1e-3.
That much pre-training is needed: in our trials, a few hundred steps leave the MLM near the unigram
plateau (held-out loss ≈ 5.1–5.6 nats) and the "pre-trained" encoder is then no better than scratch.

Measured (full mode, 2026-11-28, shared 2-core AMD EPYC under heavy load, 21 min wall; quick mode 9 min):
with 200 labelled texts, pre-training adds +0.14 accuracy at lr 1e-3 and +0.17 at lr 3e-3 (0.53 vs 0.35;
macro-F1 0.40 vs 0.24); MiniLM reaches 0.58. With all 2,865 texts it still adds +0.10 at lr 1e-3, but with
each model at its best learning rate scratch catches up (0.81 vs 0.81): at this scale (0.24 M parameters,
6 M pre-training tokens, held-out MLM loss 5.05 nats) pre-training buys label efficiency and faster
fine-tuning, not a higher ceiling. The fill-mask guesses are still mostly frequent words.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import torch

from dodai.report import Report

FILL_MASK_SENTENCES = [
    "Return a new [MASK] object.",
    "Raise ValueError if the [MASK] is negative.",
    "If the file does not [MASK], an exception is raised.",
    "Close the [MASK] and release its resources.",
    "This method is [MASK] for backward compatibility.",
]

QUICK = dict(vocab_size=1024, vocab_docs=1000, hidden=64, layers=2, heads=2, block=64, pt_steps=1500,
             pt_batch=32, pt_lr=2e-3, pt_seconds=None, ft_sizes=(200,), ft_epochs=(10,), ft_lrs=(1e-3,),
             ft_batch=32, max_len=64, minilm=False, minilm_sizes=())
# Full mode is sized for a shared, busy 2-core machine: the quick model, longer pre-training, a larger vocabulary,
# all training texts; MiniLM (22 M parameters, ~10 s per step there) on the 200-text set only.
FULL = dict(vocab_size=2048, vocab_docs=None, hidden=64, layers=2, heads=2, block=64, pt_steps=3000,
            pt_batch=32, pt_lr=2e-3, pt_seconds=900.0, ft_sizes=(200, None), ft_epochs=(10, 3), ft_lrs=(1e-3, 3e-3),
            ft_batch=32, max_len=64, minilm=True, minilm_sizes=(200,))
MINILM_LR = 1e-4


def run(out_dir: Path, quick: bool = False, overrides: dict | None = None) -> dict:
    """``overrides`` replaces settings of QUICK / FULL (the tests use it for a seconds-long smoke run)."""
    from dodai.experiments.r4_1 import one_thread

    # One intra-op thread: faster for the small models, and on a shared busy machine two threads spin.
    with one_thread():
        return _run(Path(out_dir), quick, overrides or {})


def _run(out_dir: Path, quick: bool, overrides: dict) -> dict:
    from dodai.data.corpora import corpus_documents
    from dodai.data.docstring_labels import docstring_dataset
    from dodai.train.mlm import fill_mask

    s = {**(QUICK if quick else FULL), **overrides}
    rep = Report(out_dir, "R6.1 BERT: MLM pre-training and classifier fine-tuning")
    rep.text(__doc__.split("\n\n", 1)[1])
    ds = docstring_dataset(n_classes=20)
    held_out = set(ds.test.texts)
    docs = [d for d in corpus_documents("python-docs") if d not in held_out]

    # -- (a) tokenizer + MLM pre-training ---------------------------------------------------------
    mlm, tok, pt, scratch_init, info = pretrain_small_bert(docs, s, progress=not quick)
    tok_s, train_blocks = info["tokenizer_seconds"], info["train_blocks"]
    mlm.save(out_dir / "bert-mlm")
    tok.save(out_dir / "bert-mlm" / "tokenizer.json")
    n_params = sum(p.numel() for p in mlm.parameters())
    rep.heading("(a) MLM pre-training")
    rep.table([{"vocab": tok.vocab_size, "vocab_train_s": round(tok_s, 1), "blocks": train_blocks,
                "block_size": s["block"], "params": n_params, "steps": pt["steps"], "batch": s["pt_batch"],
                "tokens_seen": pt["steps"] * s["pt_batch"] * s["block"], "pretrain_s": round(pt["seconds"], 1),
                "val_mlm_loss_start": pt["val"][0][1] if pt["val"] else None,
                "val_mlm_loss_end": pt["val"][-1][1] if pt["val"] else None}])
    fills = []
    for sent in FILL_MASK_SENTENCES:
        top = fill_mask(mlm, tok, sent, top_k=5)[0]
        fills.append({"sentence": sent, "top5": ", ".join(f"{t} ({p:.2f})" for t, p in top)})
    rep.text("Fill-mask with the pre-trained model (top 5 and probabilities):")
    rep.table(fills)

    # -- (b) fine-tuning ---------------------------------------------------------------------------
    from dodai.models.bert_heads import accuracy, macro_f1

    shuffled = list(range(len(ds.train)))
    random.Random(0).shuffle(shuffled)  # a smaller training set is a subset of every larger one
    sizes = [len(shuffled) if n is None else min(n, len(shuffled)) for n in s["ft_sizes"]]
    rows, skipped = [], []
    majority = max(set(ds.test.labels), key=ds.test.labels.count)
    base = [majority] * len(ds.test)
    rows.append({"model": "majority class", "init": "-", "params": 0, "n_train": 0, "lr": None,
                 "accuracy": accuracy(ds.test.labels, base),
                 "macro_f1": macro_f1(ds.test.labels, base, labels=list(range(len(ds.label_names)))),
                 "train_s": 0.0})
    # (name, init, encoder, tokenizer, learning rates); every run fine-tunes a fresh copy of the encoder
    variants = [("small BERT, scratch", "random init", scratch_init, tok, s["ft_lrs"]),
                ("small BERT, dodai MLM", f"{pt['steps']} MLM steps", mlm.bert, tok, s["ft_lrs"])]
    if s["minilm"]:
        got = _minilm()
        if isinstance(got, str):
            skipped.append(got)
        else:
            variants.append(("all-MiniLM-L6-v2", "real weights", got[0], got[1], [MINILM_LR]))
    else:
        skipped.append("all-MiniLM-L6-v2: fine-tuning 22 M parameters does not fit the quick-mode budget "
                       "(full mode only)")
    curves = {}
    for n, epochs in zip(sizes, s["ft_epochs"]):
        idx = sorted(shuffled[:n])
        y = [ds.train.labels[i] for i in idx]
        for name, init, encoder, tk, lrs in variants:
            if name == "all-MiniLM-L6-v2" and n not in [len(shuffled) if m is None else m for m in s["minilm_sizes"]]:
                continue
            for lr in lrs:
                r = _finetune(copy.deepcopy(encoder), tk, ds, idx, y, s, lr, epochs)
                curves[f"{name}, n={n}, lr {lr:g}"] = r.pop("curve")
                rows.append({"model": name, "init": init, "n_train": n, "lr": lr, **r})
    rep.heading("(b) Fine-tuning: docstring → package")
    rep.text(f"{len(ds.label_names)} classes ({', '.join(ds.label_names)}); training sets of "
             f"{' and '.join(map(str, sizes))} texts (of {len(ds.train)}), {len(ds.test)} held-out texts; texts "
             f"truncated to {s['max_len']} tokens; {' and '.join(map(str, s['ft_epochs']))} epochs respectively, batch "
             f"{s['ft_batch']}. Accuracy and "
             "macro-F1 (unweighted mean of per-class F1) on the held-out split.")
    rep.table(rows, ["model", "init", "params", "n_train", "lr", "steps", "accuracy", "macro_f1", "train_s"])
    for reason in skipped:
        rep.text(f"Skipped: {reason}")
    png = _plot(pt, curves, rows, out_dir)
    rep.image(png, "MLM loss during pre-training; fine-tuning loss; held-out accuracy and macro-F1")
    main_lr, n0 = s["ft_lrs"][0], sizes[0]
    at = {(r["model"], r["n_train"], r["lr"]): r for r in rows}
    pre, scr = at[("small BERT, dodai MLM", n0, main_lr)], at[("small BERT, scratch", n0, main_lr)]
    gaps = []
    for n in sizes:
        best = {m: max((r for r in rows if r["model"] == m and r["n_train"] == n), key=lambda r: r["accuracy"])
                for m in ("small BERT, scratch", "small BERT, dodai MLM")}
        gaps.append({"n_train": n, **{f"pre - scratch, lr {lr:g}": at[("small BERT, dodai MLM", n, lr)]["accuracy"]
                                      - at[("small BERT, scratch", n, lr)]["accuracy"] for lr in s["ft_lrs"]},
                     "pre - scratch, each at its best lr": best["small BERT, dodai MLM"]["accuracy"]
                     - best["small BERT, scratch"]["accuracy"]})
    rep.text("Accuracy gained by pre-training (same architecture, tokenizer, recipe):")
    rep.table(gaps)
    rep.results.update({
        "quick": quick, "settings": s, "label_names": ds.label_names, "sizes": sizes,
        "n_test": len(ds.test), "rows": rows, "skipped": skipped, "fill_mask": fills, "gaps": gaps,
        "pretrain": {"steps": pt["steps"], "seconds": pt["seconds"], "val": pt["val"],
                     "curve": pt["curve"][:: max(1, len(pt["curve"]) // 200)], "vocab_size": tok.vocab_size,
                     "tokenizer_seconds": tok_s},
        "main_lr": main_lr,
        "pretrained_beats_scratch": pre["accuracy"] > scr["accuracy"] and pre["macro_f1"] > scr["macro_f1"],
    })
    rep.write()
    return rep.results



def pretrain_small_bert(docs: list[str], s: dict, progress: bool = False):
    """Train a WordPiece vocabulary on ``docs`` and MLM-pre-train a small BERT with settings ``s``
    (see QUICK / FULL). Returns (mlm model, tokenizer, pre-training log, the encoder's initial weights
    (a copy), info)."""
    from dodai.models.bert import BertConfig
    from dodai.models.bert_heads import BertForMaskedLM
    from dodai.tokenizers.wordpiece_trainer import train as train_wordpiece
    from dodai.train.mlm import pack_blocks, pretrain_mlm

    t0 = time.perf_counter()
    vocab_docs = docs if s["vocab_docs"] is None else docs[:s["vocab_docs"]]
    tok = train_wordpiece(vocab_docs, s["vocab_size"])
    tok_s = time.perf_counter() - t0
    ids = [tok.encode(d, add_special_tokens=False) for d in docs]
    blocks = pack_blocks(ids, s["block"], tok.cls_id, tok.sep_id)
    perm = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))
    n_val = max(64, len(blocks) // 50)
    val_blocks, train_blocks = blocks[perm[:n_val]], blocks[perm[n_val:]]
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                     num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                     max_position_embeddings=max(s["block"], s["max_len"]), add_pooler=False)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(cfg)
    scratch_init = copy.deepcopy(mlm.bert)  # "scratch" starts from the very weights pre-training started from
    mask_id, specials = tok.vocab[tok.mask_token], list(tok.special_tokens.values())
    pt = pretrain_mlm(mlm, train_blocks, mask_id=mask_id, special_ids=specials, steps=s["pt_steps"],
                      batch_size=s["pt_batch"], lr=s["pt_lr"], val_blocks=val_blocks,
                      eval_every=max(1, s["pt_steps"] // 10), max_seconds=s["pt_seconds"], progress=progress)
    return mlm, tok, pt, scratch_init, {"tokenizer_seconds": tok_s, "train_blocks": len(train_blocks)}

def _minilm():
    """(encoder, tokenizer) of all-MiniLM-L6-v2, or the reason it is unavailable."""
    from dodai.errors import DodaiError
    from dodai.models.bert import BertModel
    from dodai.tokenizers.wordpiece import WordPieceTokenizer
    from dodai.weights.registry import resolve

    try:
        d = Path(resolve("all-minilm-l6-v2"))
        return BertModel.from_folder(d), WordPieceTokenizer.load(d)
    except DodaiError as e:
        return f"all-MiniLM-L6-v2 not available ({e}); `dodai models pull all-minilm-l6-v2` fetches it"


def _finetune(encoder, tok, ds, train_idx, y_train, s, lr, epochs) -> dict:
    from dodai.models.bert_heads import (
        BertForSequenceClassification,
        accuracy,
        finetune_classifier,
        macro_f1,
        predict,
    )

    torch.manual_seed(1)  # the classifier head's initialisation: the same for every encoder of one width
    clf = BertForSequenceClassification.from_encoder(encoder, len(ds.label_names), pooling="mean")
    tr = [tok.encode(ds.train.texts[i], max_length=s["max_len"]) for i in train_idx]
    te = [tok.encode(t, max_length=s["max_len"]) for t in ds.test.texts]
    out = finetune_classifier(clf, tr, y_train, pad_id=tok.pad_id, epochs=epochs, batch_size=s["ft_batch"],
                              lr=lr, seed=0)
    pred = predict(clf, te, tok.pad_id)
    return {"params": sum(p.numel() for p in clf.parameters()), "accuracy": accuracy(ds.test.labels, pred),
            "macro_f1": macro_f1(ds.test.labels, pred, labels=list(range(len(ds.label_names)))),
            "train_s": round(out["seconds"], 1), "steps": out["steps"], "curve": out["curve"]}


def _plot(pt: dict, curves: dict, rows: list[dict], out_dir: Path) -> Path:
    from dodai.viz import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(18, 5))
    steps, losses = zip(*pt["curve"])
    k = max(1, len(losses) // 50)  # running mean over ~2 % of the run
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    ax[0].plot(steps, smooth, label="train (running mean)")
    if pt["val"]:
        ax[0].plot(*zip(*pt["val"]), "o-", label="held-out blocks")
    ax[0].set(xlabel="step", ylabel="MLM loss (nats)", title="MLM pre-training")
    ax[0].legend()
    for name, c in curves.items():
        st, lo = zip(*c)
        k = max(1, len(lo) // 20)
        ax[1].plot(st, [sum(lo[max(0, i - k + 1):i + 1]) / len(lo[max(0, i - k + 1):i + 1]) for i in range(len(lo))],
                   label=name)
    ax[1].set(xlabel="step", ylabel="cross-entropy", title="fine-tuning loss")
    ax[1].legend(fontsize=6)
    names = [r["model"] + (f", n={r['n_train']}, lr {r['lr']:g}" if r["lr"] else "") for r in rows]
    y = list(range(len(names)))[::-1]  # first row on top
    ax[2].barh([i + 0.2 for i in y], [r["accuracy"] for r in rows], 0.4, label="accuracy")
    ax[2].barh([i - 0.2 for i in y], [r["macro_f1"] for r in rows], 0.4, label="macro-F1")
    ax[2].set_yticks(y, names, fontsize=7)
    ax[2].set(xlim=(0, 1), title="held-out docstring → package")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "r6_1.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
