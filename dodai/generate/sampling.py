"""Decoding one token at a time (R5.4) with a KV cache (R5.5).

Logits processors are pure functions on logits (..., V), applied in HF ``generate``'s order:
temperature, then top-k, then top-p; removed tokens get -inf.

- ``apply_temperature``: logits / T (T > 0). T = 0 means greedy and is handled by :func:`sample_next`.
- ``top_k_filter``: keep the tokens whose logit is >= the k-th largest logit. **Ties at the boundary are
  all kept** (so more than k tokens may survive), exactly as HF's TopKLogitsWarper does.
- ``top_p_filter`` (nucleus sampling, Holtzman et al. 2020): keep the smallest set of most likely
  tokens whose probability mass reaches p, always at least one (HF's TopPLogitsWarper: sort ascending,
  drop tokens whose cumulative mass is <= 1 - p). Among tied logits the sort is stable, so the tokens
  with the lower ids count as "less likely" and are dropped first.

:func:`generate` prefills the prompt through the model with a KV cache, then feeds one token per step;
:func:`generate_uncached` recomputes the whole sequence every step (the slow reference). Both stream token
ids, stop after ``max_new_tokens`` or after yielding ``eos_id`` (the EOS id itself is yielded, as HF's
``generate`` keeps it in the sequence), and are seeded by a private ``torch.Generator``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence

import torch

from dodai.errors import DodaiError


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise DodaiError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (..., V) with everything below the k-th largest logit set to -inf (ties kept)."""
    if k <= 0:
        raise DodaiError(f"top-k must be a positive integer, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest value
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """logits (..., V) outside the nucleus of mass p set to -inf; at least one token always kept."""
    if not 0.0 < p <= 1.0:
        raise DodaiError(f"top-p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False, stable=True)  # ascending
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # mass of this token and all less likely ones
    remove_sorted = cum <= (1.0 - p)
    remove_sorted[..., -1:] = False  # the most likely token always stays
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from logits (B, V) -> ids (B,). temperature 0 = greedy argmax."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check(model, prompt_ids, max_new_tokens, temperature, top_k, top_p) -> list[int]:
    ids = prompt_ids.tolist() if isinstance(prompt_ids, torch.Tensor) else list(prompt_ids)
    if not ids:
        raise DodaiError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise DodaiError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise DodaiError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise DodaiError(f"top-k must be a positive integer, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise DodaiError(f"top-p must be in (0, 1], got {top_p}")
    block = model.config.block_size
    if len(ids) + max_new_tokens > block:
        raise DodaiError(f"prompt ({len(ids)} tokens) + max new tokens ({max_new_tokens}) = "
                         f"{len(ids) + max_new_tokens} exceeds the model's context window ({block} tokens)")
    vocab = model.config.vocab_size
    if any(not 0 <= i < vocab for i in ids):
        raise DodaiError(f"prompt token id out of range [0, {vocab})")
    return ids


def _generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _device(model):
    return next(model.parameters()).device


def generate(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos_id: int | None = None) -> Iterator[int]:
    """Stream up to ``max_new_tokens`` new token ids after ``prompt_ids`` (one sequence), with a KV cache.

    Arguments are checked now (a DodaiError before any token), the tokens come lazily.
    """
    ids = _check(model, prompt_ids, max_new_tokens, temperature, top_k, top_p)
    device = _device(model)
    gen = _generator(seed, device)

    def stream() -> Iterator[int]:
        if max_new_tokens == 0:
            return
        was_training = model.training
        model.eval()
        try:
            cache = model.new_cache(1, len(ids) + max_new_tokens)
            x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T_prompt): prefill
            # only the last position's logits are sampled from: skip the V×C head on the rest of the prompt
            kw = {"last_only": True} if "last_only" in inspect.signature(model.forward).parameters else {}
            for step in range(max_new_tokens):
                with torch.inference_mode():
                    logits, _ = model(x, cache=cache, **kw)
                    nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, gen)  # (1,)
                tok = int(nxt.item())
                yield tok
                if tok == eos_id or step == max_new_tokens - 1:
                    return
                x = nxt.view(1, 1)  # (1, 1): only the new token goes through the model
        finally:
            model.train(was_training)

    return stream()


def generate_uncached(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                      temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      seed: int | None = None, eos_id: int | None = None) -> Iterator[int]:
    """The reference: same contract as :func:`generate`, but re-runs the full sequence every step."""
    ids = _check(model, prompt_ids, max_new_tokens, temperature, top_k, top_p)
    device = _device(model)
    gen = _generator(seed, device)

    def stream() -> Iterator[int]:
        was_training = model.training
        model.eval()
        try:
            seq = list(ids)
            for _ in range(max_new_tokens):
                with torch.inference_mode():
                    logits, _ = model(torch.tensor([seq], dtype=torch.long, device=device))
                    tok = int(sample_next(logits[:, -1, :], temperature, top_k, top_p, gen).item())
                yield tok
                if tok == eos_id:
                    return
                seq.append(tok)
        finally:
            model.train(was_training)

    return stream()
