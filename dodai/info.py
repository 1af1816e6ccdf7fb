"""Information theory for language models (R1.4): entropy, cross-entropy, KL, perplexity, bits per byte.

One module that trainers, evaluators, sampling diagnostics, distillation and the RLHF KL penalty share.
Every function accepts NumPy arrays *or* torch tensors and answers in the same kind (torch is imported
only when a tensor is passed). Distributions lie along ``axis`` (default: the last); other axes are batch.

Definitions (Shannon 1948; Kullback & Leibler 1951), natural log unless ``base`` is given:

    H(p)      = -Σ_x p(x) log p(x)
    H(p, q)   = -Σ_x p(x) log q(x)                        (cross-entropy)
    KL(p‖q)   =  Σ_x p(x) log(p(x)/q(x)) = H(p, q) - H(p) ≥ 0   (Gibbs' inequality)
    perplexity = exp(mean cross-entropy in nats per token)
    bits/byte  = (mean nats per token) · n_tokens / (n_bytes · ln 2)

Conventions: 0·log 0 = 0 and 0·log(0/q) = 0 (terms with p(x) = 0 contribute nothing); p(x) > 0 where
q(x) = 0 gives +inf cross-entropy and KL, as it should. Inputs are *not* renormalised (unlike
``scipy.stats.entropy``): pass probability vectors, or use the ``*_from_logits`` forms, which work in
log-space (log-softmax) and are stable for any logits.
"""

from __future__ import annotations

import math

import numpy as np

from dodai.errors import DodaiError

LN2 = math.log(2.0)


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _scale(base: float | None) -> float:
    if base is None:
        return 1.0
    if base <= 0 or base == 1:
        raise DodaiError(f"log base must be positive and not 1, got {base}")
    return 1.0 / math.log(base)


def _xlogy(x, y):
    """x·log y with 0·log y = 0 (also for y = 0)."""
    if _is_torch(x):
        import torch

        return torch.xlogy(x, y)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _check(p, q=None):
    if q is not None and tuple(p.shape) != tuple(q.shape):
        raise DodaiError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    for a in (p,) if q is None else (p, q):
        if (a < 0).any():
            raise DodaiError("probabilities must be ≥ 0")


def _sum(x, axis):
    return x.sum(dim=axis) if _is_torch(x) else np.sum(x, axis=axis)


def entropy(p, axis: int = -1, base: float | None = None):
    """H(p) = -Σ p log p along ``axis``."""
    p = p if _is_torch(p) else np.asarray(p, dtype=np.float64)
    _check(p)
    return -_sum(_xlogy(p, p), axis) * _scale(base)


def cross_entropy(p, q, axis: int = -1, base: float | None = None):
    """H(p, q) = -Σ p log q along ``axis`` (the expected code length of p's samples under q's code)."""
    p, q = (p, q) if _is_torch(p) else (np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    _check(p, q)
    return -_sum(_xlogy(p, q), axis) * _scale(base)


def kl_divergence(p, q, axis: int = -1, base: float | None = None):
    """KL(p‖q) = Σ p log(p/q) along ``axis``; computed as Σ p log p - Σ p log q so zeros in p are exact."""
    p, q = (p, q) if _is_torch(p) else (np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    _check(p, q)
    return _sum(_xlogy(p, p) - _xlogy(p, q), axis) * _scale(base)


def _log_softmax(z, axis):
    if _is_torch(z):
        return z.log_softmax(dim=axis)
    z = np.asarray(z, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)  # log-sum-exp trick: exp() never overflows
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def entropy_from_logits(logits, axis: int = -1, base: float | None = None):
    """H(softmax(z)) = -Σ softmax(z) log_softmax(z), stable for any logits."""
    logp = _log_softmax(logits, axis)
    p = logp.exp() if _is_torch(logp) else np.exp(logp)
    return -_sum(p * logp, axis) * _scale(base)


def kl_from_logits(logits_p, logits_q, axis: int = -1, base: float | None = None):
    """KL(softmax(z_p) ‖ softmax(z_q)) in log-space (distillation, the RLHF KL penalty)."""
    logp, logq = _log_softmax(logits_p, axis), _log_softmax(logits_q, axis)
    p = logp.exp() if _is_torch(logp) else np.exp(logp)
    return _sum(p * (logp - logq), axis) * _scale(base)


def nats_to_bits(x):
    return x / LN2


def bits_to_nats(x):
    return x * LN2


def perplexity(mean_nats: float) -> float:
    """exp(mean cross-entropy per token, in nats): the effective number of equally likely next tokens."""
    return float(math.exp(mean_nats)) if mean_nats < 709 else float("inf")


def bits_per_byte(mean_loss_nats: float, n_tokens: int, n_bytes: int) -> float:
    """Tokenizer-independent compression rate: total nats over the text, in bits, divided by its UTF-8 bytes.

    ``mean_loss_nats`` is the mean cross-entropy per token over ``n_tokens`` tokens that encode ``n_bytes``
    bytes. A model with a bigger vocabulary has fewer, harder tokens; bits/byte makes them comparable.
    """
    if n_bytes <= 0:
        raise DodaiError(f"bits_per_byte needs n_bytes > 0, got {n_bytes}")
    if n_tokens < 0:
        raise DodaiError(f"bits_per_byte needs n_tokens ≥ 0, got {n_tokens}")
    return float(mean_loss_nats) * n_tokens / (n_bytes * LN2)
