"""Decoding one token at a time (R5.4) with a KV cache (R5.5): the simplest entry point to the runtime.

The logits processors live in :mod:`dodai.generate.processors` (re-exported here, where they were first
written): ``apply_temperature``, ``top_k_filter`` (ties at the boundary all kept, as HF), ``top_p_filter``
(nucleus sampling, Holtzman et al. 2020) and ``sample_next``.

:func:`generate` streams the token ids of one continuation from :class:`dodai.generate.engine.Engine` (the one
decode loop: prefill the prompt into a KV cache, then one token per step). :func:`generate_uncached` is the
same contract on the slow reference path that recomputes the whole sequence every step. Both stop after
``max_new_tokens`` or after yielding ``eos_id`` (the EOS id itself is yielded, as HF's ``generate`` keeps it
in the sequence), and are seeded by a private ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from dodai.generate.engine import _check, _device, _generator  # noqa: F401 (re-exported for callers)
from dodai.generate.processors import (  # noqa: F401 (re-exported)
    LogitsPipeline,
    apply_temperature,
    sample_next,
    top_k_filter,
    top_p_filter,
)


def _stream(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, eos_id,
            use_cache: bool) -> Iterator[int]:
    from dodai.generate.engine import stream_steps

    pipe = LogitsPipeline(temperature=temperature, top_k=top_k, top_p=top_p)
    steps = stream_steps(model, prompt_ids, max_new_tokens, pipe, seed=seed,
                         stop_tokens=[eos_id] if eos_id is not None else [], use_cache=use_cache)
    return (st.tokens[0] for st in steps)


def generate(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos_id: int | None = None) -> Iterator[int]:
    """Stream up to ``max_new_tokens`` new token ids after ``prompt_ids`` (one sequence), with a KV cache.

    Arguments are checked now (a DodaiError before any token), the tokens come lazily.
    """
    return _stream(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, eos_id, True)


def generate_uncached(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                      temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      seed: int | None = None, eos_id: int | None = None) -> Iterator[int]:
    """The reference: same contract as :func:`generate`, but re-runs the full sequence every step."""
    return _stream(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, eos_id, False)
