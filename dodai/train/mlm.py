"""Masked-language-model pre-training, BERT's objective (R6.1; Devlin et al. 2019, §3.1 and §A.1).

Notation: B batch, T tokens per sequence, V vocabulary size.

**Masking** (:func:`mask_tokens`). Every *eligible* token — not a special token ([CLS], [SEP], [PAD],
[MASK], [UNK] …) and not padding — is selected independently with probability ``mlm_probability``
(15 %). Of the selected tokens, 80 % become [MASK], 10 % a random token, 10 % stay unchanged, so the
model cannot learn that only [MASK] positions matter (the paper's §C.2 ablation). The loss is the
cross-entropy at the selected positions only: ``labels`` holds the original id there and -100
(``IGNORE_INDEX``) everywhere else.

Conventions chosen (and why):
- selection is a Bernoulli draw per token, as HF's ``DataCollatorForLanguageModeling`` (the original
  TF code picks exactly round(15 % · n) per sequence, capped at ``max_predictions_per_seq``); the
  expected rate is the same;
- a random replacement is drawn uniformly from the *non-special* ids (HF draws from the whole
  vocabulary, which can put a [CLS] or [PAD] in the middle of a text);
- masking is dynamic — redrawn every time a batch is used (RoBERTa, Liu et al. 2019), not fixed once
  per corpus copy as in BERT.

**Data** (:func:`pack_blocks`): the documents are tokenised without special tokens, joined into one
stream with a [SEP] after each document, cut into pieces of T-2 tokens, and each piece is framed as
``[CLS] piece [SEP]`` — RoBERTa's "FULL-SENTENCES" packing: no padding, no next-sentence prediction.

**Loop** (:func:`pretrain_mlm`, on :func:`dodai.train.fit.fit`): AdamW (β = 0.9, 0.98 as RoBERTa; decoupled
weight decay on matrices), linear warmup then cosine decay (:func:`dodai.train.schedule.lr_at`),
gradient-norm clipping at 1. The validation loss uses a fixed masking of the validation blocks (a seeded
generator), so successive evaluations are comparable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dodai.errors import DodaiError
from dodai.models.bert_heads import IGNORE_INDEX, BertForMaskedLM


def mask_tokens(input_ids: torch.Tensor, *, mask_id: int, special_ids: Iterable[int], vocab_size: int,
                attention_mask: torch.Tensor | None = None, mlm_probability: float = 0.15,
                mask_frac: float = 0.8, random_frac: float = 0.1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of ``input_ids`` (B, T) → (corrupted inputs (B, T), labels (B, T)).

    ``labels`` is the original id at the selected positions and ``IGNORE_INDEX`` elsewhere. Positions
    whose id is in ``special_ids`` or whose ``attention_mask`` is 0 are never selected. The input is not
    modified."""
    if input_ids.dim() != 2:
        raise DodaiError(f"mask_tokens expects (B, T) ids, got shape {tuple(input_ids.shape)}")
    if not 0.0 <= mlm_probability <= 1.0 or mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1:
        raise DodaiError("mask_tokens: probabilities must lie in [0, 1] and mask_frac + random_frac <= 1")
    specials = torch.tensor(sorted(set(int(i) for i in special_ids) | {int(mask_id)}), dtype=input_ids.dtype)
    eligible = ~torch.isin(input_ids, specials.to(input_ids.device))  # (B, T)
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    dev = input_ids.device

    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator).to(dev)

    selected = eligible & (uniform() < mlm_probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    # One more uniform draw per position splits the selected ones: [0, 0.8) → [MASK], [0.8, 0.9) → random,
    # [0.9, 1) → unchanged.
    u = uniform()
    to_mask = selected & (u < mask_frac)
    to_random = selected & (u >= mask_frac) & (u < mask_frac + random_frac)
    candidates = torch.ones(vocab_size, dtype=torch.bool)
    candidates[specials[specials < vocab_size]] = False
    pool = candidates.nonzero().squeeze(1)  # non-special ids
    if len(pool) == 0:
        raise DodaiError("mask_tokens: every id of the vocabulary is special")
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)].to(dev)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids.to(input_ids.dtype), out)
    return out, labels


def pack_blocks(docs_ids: Iterable[list[int]], block_size: int, cls_id: int, sep_id: int) -> torch.Tensor:
    """Token-id lists (no specials) → (N, block_size) blocks ``[CLS] piece [SEP]`` of a stream in which
    every document ends with [SEP]; the final partial piece is dropped."""
    if block_size < 3:
        raise DodaiError(f"block size must be at least 3 ([CLS] x [SEP]), got {block_size}")
    stream: list[int] = []
    for ids in docs_ids:
        stream.extend(ids)
        stream.append(sep_id)
    n = block_size - 2
    pieces = [stream[s:s + n] for s in range(0, len(stream) - n + 1, n)]
    if not pieces:
        raise DodaiError(f"not enough text for one block of {block_size} tokens ({len(stream)} tokens)")
    body = torch.tensor(pieces, dtype=torch.long)  # (N, T-2)
    N = body.shape[0]
    return torch.cat([torch.full((N, 1), cls_id), body, torch.full((N, 1), sep_id)], dim=1)  # (N, T)


@torch.no_grad()
def mlm_eval_loss(model: BertForMaskedLM, blocks: torch.Tensor, *, mask_id: int, special_ids: Iterable[int],
                  batch_size: int = 64, seed: int = 1234) -> float:
    """Mean MLM loss over ``blocks`` with one fixed (seeded) masking: comparable across evaluations."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    special_ids = list(special_ids)
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    for s in range(0, len(blocks), batch_size):
        x = blocks[s:s + batch_size]
        inp, labels = mask_tokens(x, mask_id=mask_id, special_ids=special_ids, vocab_size=model.config.vocab_size,
                                  generator=g)
        n = int((labels != IGNORE_INDEX).sum())
        if n:
            total += float(model.mlm_loss(inp.to(dev), labels.to(dev))) * n
            count += n
    return total / max(count, 1)


def pretrain_mlm(model: BertForMaskedLM, train_blocks: torch.Tensor, *, mask_id: int, special_ids: Iterable[int],
                 steps: int, batch_size: int = 32, lr: float = 1e-3, min_lr: float | None = None,
                 warmup: int | None = None, weight_decay: float = 0.01, seed: int = 0,
                 val_blocks: torch.Tensor | None = None, eval_every: int = 100, max_seconds: float | None = None,
                 progress: bool = False, grad_accum: int = 1, dtype: str = "float32", compile: bool = False,
                 out_dir=None, resume: bool = False, log=None) -> dict:
    """Train ``model`` with the MLM objective on random batches of ``train_blocks`` (N, T), with
    :func:`dodai.train.fit.fit` (``out_dir``: checkpoints every ``eval_every`` steps, ``resume`` from them;
    ``log(row)`` after every step).

    Returns {"curve": [(step, train loss)], "val": [(step, val loss)], "steps", "seconds"}.
    ``max_seconds`` stops early (after the current step) with a final evaluation."""
    from dodai.train.fit import FitConfig, fit

    if steps < 1 or batch_size < 1:
        raise DodaiError("pre-training needs steps >= 1 and batch size >= 1")
    special_ids = list(special_ids)
    warmup = max(1, steps // 20) if warmup is None else warmup
    min_lr = lr / 10 if min_lr is None else min_lr
    dev = next(model.parameters()).device
    vocab = model.config.vocab_size

    def batches():  # dynamic masking: a fresh corruption every time a block is drawn (RoBERTa)
        g = torch.Generator().manual_seed(seed)
        while True:
            x = train_blocks[torch.randint(len(train_blocks), (batch_size,), generator=g)]
            yield mask_tokens(x, mask_id=mask_id, special_ids=special_ids, vocab_size=vocab, generator=g)

    def evaluate(m) -> dict:
        return {"val_loss": mlm_eval_loss(m, val_blocks, mask_id=mask_id, special_ids=special_ids)}

    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    cfg = FitConfig(steps=steps, max_seconds=max_seconds, optimizer="adamw", lr=lr, betas=(0.9, 0.98),
                    schedule="cosine", warmup=warmup, min_lr=min_lr, decay_steps=steps, grad_clip=1.0,
                    grad_accum=grad_accum, dtype=dtype, compile=compile, device=str(dev), eval_every=eval_every,
                    eval_at_start=False, quiet=not progress, desc="MLM pre-train", metrics_file="events.jsonl")
    res = fit(model, batches(), lambda m, b: m.mlm_loss(*b), cfg, param_groups=groups, out_dir=out_dir,
              resume=resume, evaluate=evaluate if val_blocks is not None else None, on_step=log)
    model.eval()
    return {"curve": [(r["step"] - 1, r["loss"]) for r in res.history],
            "val": [(r["step"], r["val_loss"]) for r in res.evals if "val_loss" in r],
            "steps": res.steps, "seconds": res.elapsed_s}


@torch.no_grad()
def fill_mask(model: BertForMaskedLM, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in ``text``: the ``top_k`` most probable tokens with their probabilities."""
    ids = tokenizer.encode(text)
    mask_id = tokenizer.token_to_id(tokenizer.mask_token)
    where = [i for i, t in enumerate(ids) if t == mask_id]
    if not where:
        raise DodaiError(f"no {tokenizer.mask_token} in {text!r}")
    model.eval()
    dev = next(model.parameters()).device
    logits, _ = model(torch.tensor([ids], device=dev))  # (1, T, V)
    out = []
    for i in where:
        p = torch.softmax(logits[0, i].float(), dim=-1)
        top = torch.topk(p, top_k)
        out.append([(tokenizer.id_to_token[int(j)], float(v)) for v, j in zip(top.values, top.indices)])
    return out
