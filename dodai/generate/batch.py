"""Batched generation: many prompts of different lengths decoded together (R5.4), with a KV cache (R5.5).

The prompts are **left padded** into one (B, T_max) batch with an attention mask (see
:mod:`dodai.nn.padding`), prefilled in one forward, then decoded one token per row per step by the one decode
loop (:class:`dodai.generate.engine.Engine` with a :class:`~dodai.generate.engine.DenseBackend`), so a step
costs one batched forward instead of B. Every knob works per row, and each row's output is the one it would
get alone:

- **Penalties** (repetition, presence/frequency, no-repeat n-gram) see the row's own unpadded tokens;
  knobs that only look at the logits (logit bias, temperature, top-k, top-p, min-p) run batched.
- **Seeds are per row**: row r draws from its own ``torch.Generator`` (seed ``seeds[r]``, or
  ``seed + r`` from one int), one draw per step, exactly as :func:`dodai.generate.engine.complete`
  does for one prompt with that seed, so batched == one by one for sampling too.
- **Per-row finishing**: a row ends on a stop token / EOS (kept in ``ids``, not in ``text``), a stop
  string (text cut before it) or ``max_new_tokens``. Finished rows leave the batch: their cache rows are
  dropped (a contiguous cache keeps the live rows, a paged cache frees the rows' blocks), so they stop
  costing compute, and the loop ends when no row is live.

``batch_size`` splits many prompts into batches of at most that many rows; prompts are grouped by length
(less padding) and the results come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from dodai.errors import DodaiError
from dodai.generate.engine import Completion, DenseBackend, _requests, check_prompt, row_seeds, run_requests
from dodai.generate.processors import LogitsPipeline


def generate_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   pipeline: LogitsPipeline | None = None, seed: int | Sequence[int | None] | None = None,
                   eos_id: int | None = None, stop_tokens: Sequence[int] = (), stop_strings: Sequence[str] = (),
                   tokenizer=None, logprobs: int | None = None, batch_size: int | None = None,
                   pad_id: int = 0, pool=None) -> list[Completion]:
    """One :class:`~dodai.generate.engine.Completion` per prompt (same order), decoded in batches.

    ``seed``: one int (row r uses ``seed + r``), one seed per prompt, or None (torch's global RNG).
    ``pool``: a :class:`dodai.nn.paged_cache.BlockPool` to hold the KV cache in fixed-size blocks
    instead of one contiguous (B, H_kv, T_max, D) buffer per layer.
    """
    pipe = pipeline or LogitsPipeline()
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise DodaiError("no prompts given")
    for p in prompts:
        check_prompt(model, p, max_new_tokens)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise DodaiError(f"batch size must be >= 1, got {batch_size!r}")
    if not 0 <= pad_id < model.config.vocab_size:
        raise DodaiError(f"pad id {pad_id} is not in the vocabulary [0, {model.config.vocab_size})")
    stops = set(stop_tokens) | ({eos_id} if eos_id is not None else set())
    reqs = _requests(prompts, max_new_tokens, pipe, row_seeds(seed, len(prompts)), stops, list(stop_strings),
                     tokenizer, logprobs)
    outs: list[Completion | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]))  # similar lengths share a batch
    bs = batch_size or len(prompts)
    for i in range(0, len(order), bs):
        rows = order[i:i + bs]
        done = run_requests(model, [reqs[r] for r in rows], DenseBackend(model, pad_id=pad_id, pool=pool))
        for r, c in zip(rows, done):
            outs[r] = c
    return outs
