"""Task heads on top of the BERT encoder (:mod:`dodai.models.bert`): masked-LM and sequence classification.

Notation: B batch, T tokens, C hidden size, V vocabulary size, K classes, N selected (masked) positions.

**Masked LM** (Devlin et al. 2019, §3.1 "Task #1"), the head of HF ``BertForMaskedLM``:

    h      = LayerNorm(act(W_t · x + b_t))          # the "transform", x = last hidden states (B, T, C)
    logits = h · E_wordᵀ + b_v                      # decoder tied to the word embeddings (Press & Wolf
                                                    #  2017), plus an output-only bias b_v (V,)

:meth:`BertForMaskedLM.forward` computes logits at every position (the reference, what HF returns);
:meth:`BertForMaskedLM.mlm_loss` gathers the N selected positions first and runs the transform and the
(V × C) decoder only there — with 15 % of the tokens selected that skips ~85 % of the largest matmul.
Both give the same loss (tested). There is no pooler and no next-sentence head (RoBERTa, Liu et al.
2019, showed NSP is not needed).

**Sequence classification**, like HF ``BertForSequenceClassification``:

    pooled = tanh(W_p · x[:, 0])        pooling="cls"  (BERT's pooler on [CLS]; HF's choice, parity-tested)
    pooled = mean of x over real tokens pooling="mean" (Sentence-BERT's pooling, Reimers & Gurevych 2019)
    logits = W_c · dropout(pooled) + b_c                                               # (B, K)

dodai's experiments use ``pooling="mean"``: a model pre-trained with MLM only never trained its pooler
or its [CLS] vector (BERT trained them with NSP), and all-MiniLM-L6-v2 was tuned for mean pooling.
Deviation from HF: dodai's encoder has no dropout inside the layers; the only dropout is the one before
the classifier (``classifier_dropout``). In eval mode the two are identical.

Weights use HF names: ``bert.*`` for the encoder, ``cls.predictions.*`` for the MLM head
(``cls.predictions.decoder.weight`` is the tied word embedding, ``decoder.bias`` = ``bias``), and
``classifier.*`` for the classifier. Fine-tuning helpers (:func:`finetune_classifier`, :func:`predict`)
and the metrics (:func:`accuracy`, :func:`macro_f1`) are at the end of this file.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dodai.errors import DodaiError
from dodai.models.bert import _ACTIVATIONS, BertConfig, BertModel, _read_json, hf_names, mean_pool

IGNORE_INDEX = -100  # label of positions that do not count in a loss (PyTorch's / HF's convention)


def _init_linear_ln(m: nn.Module) -> None:
    # BERT's initialisation: N(0, 0.02) weights, zero biases; LayerNorm keeps (1, 0).
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


class BertForMaskedLM(nn.Module):
    """BERT encoder + MLM head. ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)``
    → (logits (B, T, V), loss or None); labels (B, T) hold token ids at the selected positions and
    ``IGNORE_INDEX`` elsewhere (see :func:`dodai.train.mlm.mask_tokens`)."""

    def __init__(self, config: BertConfig, init_weights: bool = True):
        super().__init__()
        self.config = replace(config, add_pooler=False)  # an MLM needs no pooler (HF drops it too)
        C = config.hidden_size
        self.bert = BertModel(self.config, init_weights=init_weights)
        self.transform = nn.Linear(C, C)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.transform_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))  # b_v; the weight is bert.tok_emb
        if init_weights:
            self.transform.apply(_init_linear_ln)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C) hidden states → (…, V) logits."""
        h = self.transform_norm(self.act(self.transform(x)))
        return F.linear(h, self.bert.tok_emb.weight, self.decoder_bias)  # tied decoder

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        x, _ = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)  # (B, T, C)
        logits = self._head(x)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = _ce_or_zero(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), logits)
        return logits, loss

    def mlm_loss(self, input_ids, labels, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The MLM loss of :meth:`forward`, computing the head only at the selected positions (fast path)."""
        x, _ = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)  # (B, T, C)
        sel = labels != IGNORE_INDEX  # (B, T)
        logits = self._head(x[sel])  # (N, V)
        return _ce_or_zero(logits, labels[sel], x)

    # -- HF names and files ------------------------------------------------------------------------

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        out = {"bert." + k: v for k, v in self.bert.hf_state_dict().items()}
        out.update({
            "cls.predictions.transform.dense.weight": self.transform.weight.detach(),
            "cls.predictions.transform.dense.bias": self.transform.bias.detach(),
            "cls.predictions.transform.LayerNorm.weight": self.transform_norm.weight.detach(),
            "cls.predictions.transform.LayerNorm.bias": self.transform_norm.bias.detach(),
            "cls.predictions.bias": self.decoder_bias.detach(),
        })
        return out

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Load HF ``BertForMaskedLM`` names. The tied copies (``cls.predictions.decoder.weight`` /
        ``decoder.bias``) may be present; they must then equal the word embeddings / ``cls.predictions.bias``."""
        sd = dict(sd)
        dec_w, dec_b = sd.pop("cls.predictions.decoder.weight", None), sd.pop("cls.predictions.decoder.bias", None)
        emb, bias = sd.get("bert.embeddings.word_embeddings.weight"), sd.get("cls.predictions.bias")
        if dec_w is not None and emb is not None and not torch.equal(dec_w, emb):
            raise DodaiError("MLM checkpoint: the decoder weight is not tied to the word embeddings")
        if dec_b is not None and bias is not None and not torch.equal(dec_b, bias):
            raise DodaiError("MLM checkpoint: cls.predictions.decoder.bias differs from cls.predictions.bias")
        head = {k: sd.pop(k) for k in list(sd) if k.startswith("cls.")}
        want = {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                "cls.predictions.bias"}
        if set(head) != want:
            raise DodaiError(f"MLM checkpoint: head tensors {sorted(set(head) ^ want)[:3]} missing or unexpected")
        if any(not k.startswith("bert.") for k in sd):
            raise DodaiError(f"MLM checkpoint: unexpected tensor {next(k for k in sd if not k.startswith('bert.'))!r}")
        self.bert.load_hf_state_dict({k[5:]: v for k, v in sd.items()})
        with torch.no_grad():
            C, V = self.config.hidden_size, self.config.vocab_size
            for name, p, shape in (("transform.dense.weight", self.transform.weight, (C, C)),
                                   ("transform.dense.bias", self.transform.bias, (C,)),
                                   ("transform.LayerNorm.weight", self.transform_norm.weight, (C,)),
                                   ("transform.LayerNorm.bias", self.transform_norm.bias, (C,)),
                                   ("bias", self.decoder_bias, (V,))):
                t = head["cls.predictions." + name]
                if tuple(t.shape) != shape:
                    raise DodaiError(f"MLM checkpoint: cls.predictions.{name} has shape {tuple(t.shape)}, "
                                     f"expected {shape}")
                p.copy_(t)

    def save(self, folder: str | os.PathLike) -> None:
        """``model.safetensors`` (HF BertForMaskedLM names, tied decoder not duplicated) + ``config.json``."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.hf_state_dict().items()}, d / "model.safetensors",
                  metadata={"format": "pt"})
        atomic_write_json(d / "config.json", {**self.config.to_hf(), "architectures": ["BertForMaskedLM"]})

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> BertForMaskedLM:
        from dodai.weights.safetensors import load_file, read_header

        d = Path(folder)
        config = BertConfig.from_hf(_read_json(d / "config.json"), add_pooler=False)
        header, _, _ = read_header(d / "model.safetensors")
        C, V = config.hidden_size, config.vocab_size
        expected = {"bert." + k: v for k, v in hf_names(config).items()}
        expected.update({"cls.predictions.transform.dense.weight": (C, C), "cls.predictions.transform.dense.bias": (C,),
                         "cls.predictions.transform.LayerNorm.weight": (C,),
                         "cls.predictions.transform.LayerNorm.bias": (C,), "cls.predictions.bias": (V,)})
        for k, shape in (("cls.predictions.decoder.weight", (V, C)), ("cls.predictions.decoder.bias", (V,)),
                         ("bert.embeddings.position_ids", None)):
            if k in header:
                expected[k] = shape if shape is not None else tuple(header[k]["shape"])
        sd = load_file(d / "model.safetensors", expected=expected)
        sd.pop("bert.embeddings.position_ids", None)
        model = cls(config, init_weights=False)
        model.load_hf_state_dict(sd)
        return model.eval()


def _ce_or_zero(logits: torch.Tensor, labels: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored labels; 0 (still attached to the graph) when there is none,
    instead of PyTorch's NaN for an empty mean."""
    if not bool((labels != IGNORE_INDEX).any()):
        return anchor.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


class BertForSequenceClassification(nn.Module):
    """BERT encoder + pooling + dropout + linear classifier over ``num_labels`` classes.
    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)`` → (logits (B, K), loss)."""

    def __init__(self, config: BertConfig, num_labels: int, pooling: str = "cls", classifier_dropout: float = 0.1,
                 encoder: BertModel | None = None, init_weights: bool = True):
        super().__init__()
        if type(num_labels) is not int or num_labels < 2:
            raise DodaiError(f"a classifier needs at least 2 labels, got {num_labels!r}")
        if pooling not in ("cls", "mean"):
            raise DodaiError(f"unsupported pooling {pooling!r} (dodai supports cls and mean)")
        if not 0.0 <= classifier_dropout < 1.0:
            raise DodaiError(f"classifier dropout must be in [0, 1), got {classifier_dropout}")
        if pooling == "cls" and not config.add_pooler:
            raise DodaiError("pooling='cls' uses BERT's pooler; build the encoder with add_pooler=True")
        if pooling == "mean":
            config = replace(config, add_pooler=False)  # mean pooling never uses BERT's pooler
        self.config, self.num_labels, self.pooling = config, num_labels, pooling
        self.bert = encoder if encoder is not None else BertModel(config, init_weights=init_weights)
        if pooling == "mean" and self.bert.pooler is not None:
            self.bert.pooler = None  # drop it so it takes no optimizer state and is not saved
            self.bert.config = config
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        if init_weights:
            self.classifier.apply(_init_linear_ln)

    @classmethod
    def from_encoder(cls, encoder: BertModel, num_labels: int, pooling: str = "mean",
                     classifier_dropout: float = 0.1) -> BertForSequenceClassification:
        """A classifier around an existing (pre-trained) encoder; only the classifier is freshly initialised."""
        m = cls(encoder.config, num_labels, pooling=pooling, classifier_dropout=classifier_dropout,
                encoder=encoder, init_weights=False)
        m.classifier.apply(_init_linear_ln)
        return m

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        x, pooled = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)  # (B, T, C)
        if self.pooling == "mean":
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pooled = mean_pool(x, mask)  # (B, C)
        logits = self.classifier(self.dropout(pooled))  # (B, K)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return logits, loss

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        out = {"bert." + k: v for k, v in self.bert.hf_state_dict().items()}
        out["classifier.weight"] = self.classifier.weight.detach()
        out["classifier.bias"] = self.classifier.bias.detach()
        return out

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Load HF ``BertForSequenceClassification`` names (``bert.*`` + ``classifier.*``)."""
        sd = dict(sd)
        sd.pop("bert.embeddings.position_ids", None)
        w, b = sd.pop("classifier.weight", None), sd.pop("classifier.bias", None)
        if w is None or b is None:
            raise DodaiError("classifier checkpoint: classifier.weight / classifier.bias missing")
        if tuple(w.shape) != (self.num_labels, self.config.hidden_size) or tuple(b.shape) != (self.num_labels,):
            raise DodaiError(f"classifier checkpoint: classifier has shape {tuple(w.shape)}, expected "
                             f"{(self.num_labels, self.config.hidden_size)}")
        if self.pooling == "mean":  # the pooler is not part of a mean-pooling model
            sd = {k: v for k, v in sd.items() if not k.startswith("bert.pooler.")}
        stray = [k for k in sd if not k.startswith("bert.")]
        if stray:
            raise DodaiError(f"classifier checkpoint: unexpected tensor {stray[0]!r}")
        self.bert.load_hf_state_dict({k[5:]: v for k, v in sd.items()})
        with torch.no_grad():
            self.classifier.weight.copy_(w)
            self.classifier.bias.copy_(b)


# -- fine-tuning and metrics ---------------------------------------------------------------------------


def _batches(rows: list[list[int]], pad_id: int, idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad the rows ``idx`` → (ids (B, T), attention mask (B, T))."""
    width = max(len(rows[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        ids[r, :len(rows[i])] = torch.tensor(rows[i])
        mask[r, :len(rows[i])] = 1
    return ids.to(device), mask.to(device)


def finetune_classifier(model: BertForSequenceClassification, rows: list[list[int]], labels: list[int], *,
                        pad_id: int, epochs: int = 3, batch_size: int = 32, lr: float = 1e-3,
                        warmup_frac: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                        max_steps: int | None = None, progress: bool = False, grad_accum: int = 1,
                        dtype: str = "float32", compile: bool = False, out_dir=None, resume: bool = False,
                        checkpoint_every: int = 0, log=None) -> dict:
    """Full fine-tuning (every weight trains) with AdamW, linear warmup then linear decay to 0 (BERT's
    recipe, Devlin et al. 2019 §A.3) and gradient-norm clipping at 1, on :func:`dodai.train.fit.fit`.
    ``rows`` are token-id lists (already truncated), ``labels`` class indices. Batches are length-bucketed
    (shuffled chunks of similar length) so little compute goes to padding. Returns {"steps", "seconds",
    "curve": [(step, loss)]}. ``out_dir``: checkpoints every ``checkpoint_every`` steps and at the end
    (``resume`` continues from them); ``log(row)`` after every step."""
    from dodai.train.fit import FitConfig, default_param_groups, fit

    if len(rows) != len(labels) or not rows:
        raise DodaiError(f"fine-tuning needs as many labels as rows, got {len(rows)} rows, {len(labels)} labels")
    if bad := [y for y in labels if not 0 <= y < model.num_labels]:
        raise DodaiError(f"label {bad[0]} outside 0..{model.num_labels - 1}")
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warm = max(1, int(warmup_frac * total))
    y_all = torch.tensor(labels)

    def batches():
        rng = random.Random(seed)
        while True:
            order = list(range(len(rows)))
            rng.shuffle(order)
            # length bucketing: sort shuffled chunks of 50 batches by length, then shuffle the batches
            chunk = batch_size * 50
            order = [i for s in range(0, len(order), chunk)
                     for i in sorted(order[s:s + chunk], key=lambda i: len(rows[i]))]
            epoch = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
            rng.shuffle(epoch)
            for idx in epoch:
                ids, mask = _batches(rows, pad_id, idx, device)
                yield ids, mask, y_all[idx].to(device)

    def lr_fn(step: int) -> float:
        return lr * min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))

    def loss_fn(m, b):
        ids, mask, y = b
        return m(ids, attention_mask=mask, labels=y)[1]

    cfg = FitConfig(steps=total, optimizer="adamw", lr=lr, weight_decay=weight_decay, grad_clip=1.0,
                    grad_accum=grad_accum, dtype=dtype, compile=compile, device=str(device), seed=seed,
                    eval_every=checkpoint_every or None, quiet=not progress, desc="fine-tune",
                    metrics_file="events.jsonl")
    res = fit(model, batches(), loss_fn, cfg, lr_fn=lr_fn, param_groups=default_param_groups(model, weight_decay),
              out_dir=out_dir, resume=resume, on_step=log)
    model.eval()
    return {"steps": res.steps, "seconds": res.elapsed_s, "curve": [(r["step"] - 1, r["loss"]) for r in res.history]}


@torch.no_grad()
def predict(model: BertForSequenceClassification, rows: list[list[int]], pad_id: int,
            batch_size: int = 64) -> list[int]:
    """Arg-max class of each row (eval mode, length-sorted batches, caller's order)."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, mask = _batches(rows, pad_id, idx, device)
        logits, _ = model(ids, attention_mask=mask)
        for i, p in zip(idx, logits.argmax(-1).tolist()):
            out[i] = p
    return out


def accuracy(y_true: list[int], y_pred: list[int]) -> float:
    if len(y_true) != len(y_pred) or not y_true:
        raise DodaiError("accuracy needs two non-empty lists of equal length")
    return sum(a == b for a, b in zip(y_true, y_pred)) / len(y_true)


def macro_f1(y_true: list[int], y_pred: list[int], labels: list[int] | None = None) -> float:
    """Unweighted mean over classes of F1 = 2·P·R / (P + R) (P = TP/(TP+FP), R = TP/(TP+FN)); a class
    with TP = 0 scores 0. ``labels`` defaults to every class seen in either list (sklearn's rule)."""
    if len(y_true) != len(y_pred) or not y_true:
        raise DodaiError("macro-F1 needs two non-empty lists of equal length")
    classes = sorted(set(y_true) | set(y_pred)) if labels is None else list(labels)
    f1s = []
    for c in classes:
        tp = sum(1 for a, b in zip(y_true, y_pred) if a == c and b == c)
        fp = sum(1 for a, b in zip(y_true, y_pred) if a != c and b == c)
        fn = sum(1 for a, b in zip(y_true, y_pred) if a == c and b != c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))  # = 2PR/(P+R)
    return sum(f1s) / len(f1s)
