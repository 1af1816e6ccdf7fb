"""Batched generation: many prompts of different lengths decoded together (R5.4), with a KV cache (R5.5).

The prompts are **left padded** into one (B, T_max) batch with an attention mask (see
:mod:`dodai.nn.padding`), prefilled in one forward, then decoded one token per row per step, so a step
costs one batched forward instead of B. Every knob of the single-prompt engine
(:mod:`dodai.generate.engine`) works per row, and each row's output is the one it would get alone:

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

import inspect
from collections.abc import Sequence

import torch

from dodai.errors import DodaiError
from dodai.generate.engine import Completion, TokenLogprob, _find_stop, _pick, fill_texts
from dodai.generate.processors import LogitsPipeline
from dodai.generate.sampling import _check, _device, _generator
from dodai.nn.kv_cache import KVCache
from dodai.nn.padding import left_pad


def _row_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    if seed is None or isinstance(seed, int):
        return [None if seed is None else seed + r for r in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise DodaiError(f"{len(seeds)} seeds for {n} prompts: give one seed per prompt (or one int)")
    return seeds


def _needs_ids(pipe: LogitsPipeline) -> bool:
    """True when a processor reads the token history (then it must see each row unpadded)."""
    return bool((pipe.repetition_penalty is not None and pipe.repetition_penalty != 1.0)
                or pipe.presence_penalty or pipe.frequency_penalty or pipe.no_repeat_ngram_size)


def keep_rows(cache, rows: list[int]) -> bool:
    """Shrink ``cache`` to the batch rows ``rows`` (in that order). Returns False when the cache type
    cannot drop rows (then the caller keeps feeding the finished rows and ignores them)."""
    if hasattr(cache, "keep_rows"):  # the paged cache frees the dropped rows' blocks
        cache.keep_rows(rows)
        return True
    if type(cache) is not KVCache:
        return False
    # the contiguous cache: one gather per layer, only on the steps where some row finishes
    ix = torch.tensor(rows, dtype=torch.long, device=cache.k[0].device)
    cache.k = [k.index_select(0, ix) for k in cache.k]
    cache.v = [v.index_select(0, ix) for v in cache.v]
    if cache.key_mask is not None:
        cache.key_mask = cache.key_mask.index_select(0, ix)
    cache.batch = len(rows)
    return True


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
        _check(model, p, max_new_tokens, pipe.temperature, pipe.top_k, pipe.top_p)
    if batch_size is not None and batch_size < 1:
        raise DodaiError(f"batch size must be >= 1, got {batch_size}")
    if logprobs is not None and logprobs < 0:
        raise DodaiError(f"logprobs must be >= 0, got {logprobs}")
    if any(not s for s in stop_strings):
        raise DodaiError("a stop string must not be empty")
    if stop_strings and tokenizer is None:
        raise DodaiError("stop strings need a tokenizer to decode the text")
    if not 0 <= pad_id < model.config.vocab_size:
        raise DodaiError(f"pad id {pad_id} is not in the vocabulary [0, {model.config.vocab_size})")
    seeds = _row_seeds(seed, len(prompts))
    stops = set(stop_tokens) | ({eos_id} if eos_id is not None else set())
    outs = [Completion([], logprobs=[] if logprobs is not None else None) for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]))  # similar lengths share a batch
    bs = batch_size or len(prompts)
    if max_new_tokens > 0:
        was_training = model.training
        model.eval()
        try:
            for i in range(0, len(order), bs):
                rows = order[i:i + bs]
                _decode(model, [prompts[r] for r in rows], [seeds[r] for r in rows], [outs[r] for r in rows],
                        max_new_tokens, pipe, stops, list(stop_strings), tokenizer, logprobs, pad_id, pool)
        finally:
            model.train(was_training)
    if tokenizer is not None:
        fill_texts(outs, tokenizer, stop_strings)
    return outs


def _decode(model, prompts, seeds, outs, max_new_tokens, pipe, stops, stop_strings, tokenizer, logprobs,
            pad_id, pool) -> None:
    """Decode one batch in place into ``outs`` (rows in the order of ``prompts``)."""
    device = _device(model)
    n = len(prompts)
    gens = [_generator(s, device) for s in seeds]
    ids, mask = left_pad(prompts, pad_id, device)  # (n, T_max) each
    max_len = ids.shape[1] + max_new_tokens
    if pool is not None:
        from dodai.nn.paged_cache import PagedKVCache

        cache = PagedKVCache(pool, n)
    else:
        cache = model.new_cache(n, max_len)
    seqs = [list(p) for p in prompts]  # each row's own tokens, unpadded (for the penalties)
    live = list(range(n))  # batch row i of the model's input is prompt live[i]
    done: set[int] = set()  # finished rows still in the batch (only for caches that cannot drop rows)
    per_row = _needs_ids(pipe)
    last_only = "last_only" in inspect.signature(model.forward).parameters
    kw = {"last_only": True} if last_only else {}
    try:
        with torch.inference_mode():
            logits, _ = model(ids, cache=cache, attention_mask=mask, **kw)  # prefill: (n, T|1, V)
            for step in range(max_new_tokens):
                raw = logits[:, -1, :].float()  # (b, V), b = len(live)
                if per_row:
                    scores = torch.cat([pipe(torch.tensor([seqs[r]], device=device), raw[i:i + 1],
                                             len(prompts[r])) for i, r in enumerate(live)])
                else:
                    scores = pipe(ids[:0], raw)  # no processor reads the ids
                if pipe.greedy:
                    nxt = scores.argmax(dim=-1)  # (b,)
                else:  # one draw per row from the row's own generator, as the one-prompt engine does
                    nxt = torch.cat([_pick(scores[i:i + 1], False, gens[r]) for i, r in enumerate(live)])
                logp = raw.log_softmax(dim=-1) if logprobs is not None else None
                toks = nxt.tolist()
                finished = []
                for i, r in enumerate(live):
                    if r in done:
                        continue
                    tok, c = toks[i], outs[r]
                    c.ids.append(tok)
                    seqs[r].append(tok)
                    if logp is not None:
                        top = logp[i].topk(logprobs) if logprobs else None
                        alts = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
                        c.logprobs.append(TokenLogprob(tok, float(logp[i, tok]), alts))
                    if tok in stops:
                        c.finish_reason = "eos"
                        finished.append(i)
                    elif stop_strings and _find_stop(tokenizer.decode(c.ids), stop_strings) >= 0:
                        c.finish_reason = "stop"
                        finished.append(i)
                if step == max_new_tokens - 1 or len(finished) + len(done) == len(live):
                    return
                if finished:
                    keep = [i for i in range(len(live)) if i not in finished]
                    if keep_rows(cache, keep):
                        nxt = nxt[keep]
                        live = [live[i] for i in keep]
                    else:  # cannot drop rows: keep feeding them, but record nothing more for them
                        done.update(live[i] for i in finished)
                logits, _ = model(nxt[:, None], cache=cache)  # (b, 1, V): one new token per live row
    finally:
        if hasattr(cache, "release"):
            cache.release()  # a paged cache gives its blocks back to the pool
