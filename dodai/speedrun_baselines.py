"""Baselines for `dodai speedrun`, all scored in bits per UTF-8 byte of the same validation text.

- **Compressors given the training text as context** (standard library ``lzma``, ``bz2``, ``gzip``): the
  cost of the validation text is what it adds to the compressed size once the training text is already
  there::

      bits/byte = 8 · (|C(context + val)| - |C(context)|) / bytes(val)

  ``context`` is the training text followed by the document separator, so the separator is not charged
  to the validation text. xz at ``-9e`` (LZMA2, 64 MiB dictionary) sees all of a corpus of a few MB; bzip2
  works in 900 kB blocks and gzip in a 32 kB window, so they see only the end of the context: that is what
  those tools are.
- **Count-based n-gram LMs** on the model's own BPE tokens (:class:`dodai.basics.ngram.NGramLM`, R1.1):
  a unigram with add-one (Laplace) smoothing, and interpolated Kneser-Ney of a few orders (Kneser & Ney
  1995; Chen & Goodman 1998). Every validation token is scored given the true tokens before it; the first
  token is scored as the start of a document. bits/byte = Σ -log2 p(token) / bytes(val).
- **Any causal LM** ``model(x) -> (logits, _)`` (:func:`lm_bits_per_byte`): every validation token scored
  exactly once, in windows of ``block`` tokens that advance by ``stride``; a window scores only its tokens
  not scored by the previous one, so each token (after the first window) has at least ``block - stride``
  tokens of context. The first token is predicted from a context token given by the caller (the document
  separator), so all bytes of the text are paid for, as with the compressors.

Bits per byte makes a 4096-token vocabulary, a 2048-token one and a byte-level compressor comparable
(Gao et al. 2020, "The Pile", use the same measure).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import time
from collections.abc import Callable, Sequence

from dodai.errors import DodaiError

LN2 = math.log(2)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def _bz2(data: bytes) -> bytes:
    return bz2.compress(data, compresslevel=9)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"xz -9e": _xz, "bzip2 -9": _bz2, "gzip -9": _gzip}


def compressor_bits_per_byte(context: bytes, text: bytes, compress: Callable[[bytes], bytes]) -> float:
    """8 · (|compress(context + text)| - |compress(context)|) / len(text)."""
    if not text:
        raise DodaiError("cannot score an empty validation text")
    return 8.0 * (len(compress(context + text)) - len(compress(context))) / len(text)


def compressor_baselines(train: str, val: str, sep: str = "\n\n") -> list[dict]:
    """One row per compressor of :data:`COMPRESSORS`: name, bits/byte, seconds."""
    ctx, text = (train + sep).encode("utf-8"), val.encode("utf-8")
    rows = []
    for name, fn in COMPRESSORS.items():
        t = time.perf_counter()
        bpb = compressor_bits_per_byte(ctx, text, fn)
        rows.append({"baseline": f"{name} (train as context)", "kind": "compressor", "bits_per_byte": bpb,
                     "seconds": time.perf_counter() - t})
    return rows


def ngram_logprobs(lm, val_ids: Sequence[int]) -> list[float]:
    """ln p(token | the true tokens before it) for every validation token under a fitted
    :class:`~dodai.basics.ngram.NGramLM`; the first token starts a document."""
    ids = [int(t) for t in val_ids]
    if not ids:
        raise DodaiError("cannot score an empty validation text")
    k = lm.n - 1
    out = []
    for i, w in enumerate(ids):
        p = lm.prob(ids[max(0, i - k):i] if k else [], w)
        out.append(math.log(p) if p > 0 else -math.inf)
    return out


def ngram_bits_per_byte(lm, val_ids: Sequence[int], n_bytes: int) -> float:
    """Σ over the validation tokens of -log2 p(token | the true tokens before it) under a fitted
    :class:`~dodai.basics.ngram.NGramLM`, divided by ``n_bytes``; the first token starts a document."""
    if n_bytes <= 0:
        raise DodaiError(f"bits per byte needs n_bytes > 0, got {n_bytes}")
    return -sum(ngram_logprobs(lm, val_ids)) / LN2 / n_bytes


def ngram_baselines(train_ids: Sequence[int], val_ids: Sequence[int], n_bytes: int, vocab_size: int,
                    orders: Sequence[int] = (3, 5)) -> list[dict]:
    """Unigram (add-one) and interpolated Kneser-Ney of each order in ``orders``, fitted on the training
    tokens (one stream) and scored on the validation tokens: name, bits/byte, seconds, and the per-token
    log-probabilities (``logprobs``, for :func:`mixture_bits_per_byte`)."""
    from dodai.basics.ngram import NGramLM

    if n_bytes <= 0:
        raise DodaiError(f"bits per byte needs n_bytes > 0, got {n_bytes}")
    train = [int(t) for t in train_ids]
    specs = [("unigram (add-one)", NGramLM(1, "add_k", k=1.0, vocab_size=vocab_size))]
    specs += [(f"{n}-gram Kneser-Ney", NGramLM(n, "kn", vocab_size=vocab_size)) for n in orders]
    rows = []
    for name, lm in specs:
        t = time.perf_counter()
        lm.fit(train)
        lps = ngram_logprobs(lm, val_ids)
        rows.append({"baseline": f"{name}, BPE tokens", "kind": "n-gram", "bits_per_byte": -sum(lps) / LN2 / n_bytes,
                     "seconds": time.perf_counter() - t, "logprobs": lps})
    return rows


def mixture_bits_per_byte(logp_a: Sequence[float], logp_b: Sequence[float], n_bytes: int,
                          weight: float = 0.5) -> float:
    """Bits per byte of the linear mixture ``weight · p_a + (1 - weight) · p_b`` of two models, from their
    per-token log-probabilities (nats) of the same tokens."""
    if len(logp_a) != len(logp_b) or not len(logp_a):
        raise DodaiError(f"a mixture needs the same non-empty tokens from both models, got {len(logp_a)} and "
                         f"{len(logp_b)}")
    if not 0 <= weight <= 1:
        raise DodaiError(f"mixture weight must be in [0, 1], got {weight}")
    total = 0.0
    for a, b in zip(logp_a, logp_b):
        p = weight * math.exp(a) + (1 - weight) * math.exp(b)
        if p <= 0:
            return math.inf
        total -= math.log2(p)
    return total / n_bytes


def lm_bits_per_byte(model, ids, n_bytes: int, block: int, stride: int | None = None, first_context: int = 0,
                     batch: int = 16, device: str = "cpu", logprobs: list | None = None) -> float:
    """Bits per byte of the token sequence ``ids`` (1-D, encoding ``n_bytes`` bytes) under a causal LM.

    The sequence is prefixed with ``first_context`` (a token id, not scored) so its first token is scored
    too. Windows of ``block`` tokens start every ``stride`` (default ``block // 2``) tokens; each window
    scores the targets the previous one did not, so every token is scored exactly once. ``logprobs``: a list
    that receives ln p of every token, in order."""
    import torch

    if n_bytes <= 0:
        raise DodaiError(f"bits per byte needs n_bytes > 0, got {n_bytes}")
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise DodaiError("cannot score an empty validation text")
    stride = stride or max(1, block // 2)
    if not 1 <= stride <= block:
        raise DodaiError(f"stride must be in [1, block={block}], got {stride}")
    seq = torch.cat([torch.tensor([first_context], dtype=torch.long), ids])  # targets are seq[1:]
    n_targets = ids.numel()
    # window w covers inputs seq[s : s + block] (targets seq[s + 1 : s + block + 1]) and scores the targets
    # with index >= scored_until (targets are indexed 0..n_targets-1, target j is seq[j + 1])
    windows = []
    scored_until, s = 0, 0
    while scored_until < n_targets:
        s = min(s, max(0, n_targets - block))
        end = min(s + block, n_targets)
        windows.append((s, end, scored_until))
        scored_until = end
        s += stride
    was_training = model.training
    model.eval()
    per_token = torch.full((n_targets,), math.nan, dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            group = windows[i:i + batch]
            width = max(e - s for s, e, _ in group)
            x = torch.zeros(len(group), width, dtype=torch.long)
            y = torch.full((len(group), width), -1, dtype=torch.long)
            for r, (s, e, first) in enumerate(group):
                x[r, :e - s] = seq[s:e]
                tgt = seq[s + 1:e + 1].clone()
                tgt[:max(0, first - s)] = -1  # already scored by an earlier window
                y[r, :e - s] = tgt
            logits = model(x.to(device))[0].float()
            lp = torch.log_softmax(logits, dim=-1).cpu()
            got = lp.gather(-1, y.clamp(min=0)[..., None])[..., 0].double()
            for r, (s, e, first) in enumerate(group):
                lo = max(first, s)
                per_token[lo:e] = got[r, lo - s:e - s]
    model.train(was_training)
    if torch.isnan(per_token).any():  # the windows cover each target once by construction; a guard
        raise DodaiError("internal error: a validation token was not scored")
    if logprobs is not None:
        logprobs.extend(per_token.tolist())
    return -per_token.sum().item() / LN2 / n_bytes
