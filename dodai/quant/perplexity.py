"""Perplexity on held-out text: the quality measure behind the weight formats dodai offers.

For token ids x_0 .. x_{N-1}, a causal LM gives p(x_t | x_<t) for t = 1 .. N-1 and::

    NLL = -(1 / (N - 1)) · Σ_t log p(x_t | x_<t)        (nats per token)
    PPL = exp(NLL)

Texts longer than the model's window are scored in consecutive, non-overlapping windows of
``window`` tokens (each window's first token is context only), so every token is predicted once.

Held-out text: the validation split of dodai's built-in ``python-docs`` corpus (documents hashed into
train/val by :func:`dodai.data.prepare.split_documents`, seed 0, 10 %), which no dodai training run
sees. SmolLM2 itself may well have read Python's docstrings during its pre-training; that does not
matter here, since the measure compares *formats of the same model* on the same text.
"""

from __future__ import annotations

import copy
import math

import torch

from dodai.errors import DodaiError


def heldout_text(n_chars: int = 20_000) -> str:
    """The first ``n_chars`` characters of the python-docs validation split."""
    from dodai.data.corpora import corpus_documents
    from dodai.data.prepare import split_documents

    _, val, _ = split_documents(corpus_documents("python-docs"), val_fraction=0.1, seed=0)
    return val[:n_chars]


def heldout_ids(tokenizer, n_tokens: int) -> list[int]:
    """The first ``n_tokens`` token ids of the held-out text under ``tokenizer``, after BOS when the tokenizer
    says raw text should start with one (``add_bos``: Gemma, whose predictions without it are not its own)."""
    if n_tokens < 2:
        raise DodaiError(f"perplexity needs at least 2 tokens, got {n_tokens}")
    bos = getattr(tokenizer, "bos_id", None)
    if getattr(tokenizer, "add_bos", False) and bos is not None:
        return [bos] + _heldout_text_ids(tokenizer, n_tokens - 1)
    return _heldout_text_ids(tokenizer, n_tokens)


def _heldout_text_ids(tokenizer, n_tokens: int) -> list[int]:
    n_chars = 8 * n_tokens
    while True:  # encode a prefix; grow it until it holds enough tokens
        text = heldout_text(n_chars)
        ids = tokenizer.encode(text)
        if len(ids) > n_tokens or len(text) < n_chars:
            break
        n_chars *= 2
    if len(ids) < n_tokens:
        raise DodaiError(f"the held-out text has only {len(ids)} tokens, {n_tokens} requested")
    return ids[:n_tokens]


@torch.no_grad()
def perplexity(model, ids, window: int | None = None) -> dict:
    """{"ppl", "nll", "tokens"} of ``model`` on token ids (a list or a 1-D tensor), scored in windows of
    ``window`` tokens (default: the model's block size)."""
    x = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = x.numel()
    if n < 2:
        raise DodaiError(f"perplexity needs at least 2 tokens, got {n}")
    window = window or model.config.block_size
    if window < 2:
        raise DodaiError(f"perplexity window must be >= 2 tokens, got {window}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for s in range(0, n - 1, window - 1):  # window k covers tokens s .. s + window - 1
            chunk = x[s:s + window].to(device)[None]  # (1, t)
            if chunk.shape[1] < 2:
                break
            logits, _ = model(chunk)  # (1, t, V)
            lp = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (t-1, V) in fp32 whatever the model dtype
            total -= lp.gather(1, chunk[0, 1:, None]).sum().item()
            count += chunk.shape[1] - 1
    finally:
        model.train(was_training)
    nll = total / count
    return {"ppl": math.exp(nll), "nll": nll, "tokens": count}


def format_perplexities(model, ids, formats, window: int | None = None) -> dict[str, dict]:
    """Perplexity of ``model`` converted to each weight format (a deep copy per format; ``model``
    itself, expected in fp32, is left as it is). Each entry: ppl, nll, tokens, weight_bytes and the
    relative change against "fp32" when that format is in the list."""
    from dodai.quant.int8 import quantize_model, weight_bytes

    out = {}
    for fmt in formats:
        m = quantize_model(copy.deepcopy(model), fmt)
        r = perplexity(m, ids, window)
        r["weight_bytes"] = weight_bytes(m)
        out[fmt] = r
        del m
    if "fp32" in out:
        base = out["fp32"]["ppl"]
        for r in out.values():
            r["vs_fp32"] = r["ppl"] / base - 1.0
    return out
