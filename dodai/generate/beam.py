"""Beam search for any dodai sequence model (R5.4): seq2seq decoders and causal LMs (GPT / Llama).

Notation: B batch, W beam width (``num_beams``), N = B*W flattened beam rows, V vocabulary.

The search is generic over a **step function**::

    step(state, tokens) -> (logprobs (N, V), new_state)

``tokens`` (N,) are the tokens chosen at the previous step (``None`` on the first call, when the model
reads its prompt / BOS). ``state`` is whatever the model needs (a decoder state, a token history, a
KV cache) with the N beam rows on dim 0; after each step the search calls ``reorder(state, index)``
to keep the rows of the surviving beams (the default handles tensors, tuples/lists/dicts of them
and :class:`dodai.nn.kv_cache.KVCache`). Adapters: :func:`lm_step` (causal-LM protocol, with or
without a KV cache) and the seq2seq model's ``beam_step`` (dodai.models.seq2seq).

Semantics follow Hugging Face ``generate(num_beams=W)`` so the two can be compared token for token:

* each step keeps the top 2W continuations of all W beams by summed log-probability; the best W that
  did not just emit EOS keep running; a candidate that emitted EOS (or reached ``max_new_tokens``)
  joins the finished set only if it ranks among the top W of that step;
* a finished hypothesis scores ``sum_logprobs / len ** length_penalty`` where ``len`` counts the
  generated tokens including EOS (the prompt is not counted);
* ``early_stopping=True`` stops as soon as W hypotheses are finished; ``False`` stops when the best
  running beam, normalised by the current length, cannot beat the worst finished one (HF's
  heuristic); ``"never"`` uses the exact bound for positive length penalties (the length the best
  running beam could still reach).

Beam search is **not** monotone in the width: a wider beam can prune the greedy path and return a
lower-probability sequence than greedy (tests/test_beam.py has a hand-made example). What is
guaranteed, and tested: width 1 with ``early_stopping=True`` is exactly greedy; a beam as wide as
the whole search tree finds the most probable sequence.

References: Lowerre 1976 (the Harpy system); Graves 2012, Sutskever et al. 2014 (beam search for
neural sequence models); Wu et al. 2016 (length normalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dodai.errors import DodaiError

NEG = -1.0e9  # "impossible" score, as in HF (finite, so arithmetic on it stays finite)


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, including the final EOS if the hypothesis ended with one
    score: float  # sum_logprobs / len(tokens) ** length_penalty
    logprob: float  # sum of the token log-probabilities


def reorder_state(state, index: torch.Tensor):
    """Select beam rows ``index`` (N,) on dim 0 of every tensor in ``state`` (recursively)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, tuple):
        return tuple(reorder_state(s, index) for s in state)
    if isinstance(state, list):
        return [reorder_state(s, index) for s in state]
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    if hasattr(state, "k") and hasattr(state, "v") and hasattr(state, "pos"):  # a KVCache: reorder in place
        state.k = [k.index_select(0, index) for k in state.k]
        state.v = [v.index_select(0, index) for v in state.v]
        return state
    if isinstance(state, (int, float, str)):
        return state
    raise DodaiError(f"beam search cannot reorder a state of type {type(state).__name__}; pass reorder=")


def greedy_search(step: Callable, state, batch_size: int, eos_id: int | None, max_new_tokens: int) -> list[Hypothesis]:
    """Argmax decoding with the same step interface (the oracle beam width 1 must reproduce)."""
    tokens = None
    out = [[] for _ in range(batch_size)]
    lp = [0.0] * batch_size
    done = [False] * batch_size
    for _ in range(max_new_tokens):
        logprobs, state = step(state, tokens)
        tokens = logprobs.argmax(-1)
        for b in range(batch_size):
            if not done[b]:
                t = int(tokens[b])
                out[b].append(t)
                lp[b] += float(logprobs[b, t])
                done[b] = eos_id is not None and t == eos_id
        if all(done):
            break
    return [Hypothesis(o, s / max(len(o), 1), s) for o, s in zip(out, lp)]


@torch.no_grad()
def beam_search(step: Callable, state, batch_size: int, num_beams: int, max_new_tokens: int,
                eos_id: int | None = None, length_penalty: float = 1.0, early_stopping: bool | str = False,
                num_return_sequences: int = 1, reorder: Callable = reorder_state) -> list[list[Hypothesis]]:
    """Batched beam search; returns, per batch item, ``num_return_sequences`` hypotheses, best first.

    ``state`` must already hold B*W rows (row b*W + w is beam w of item b), e.g. the encoder memory
    repeated W times with ``repeat_interleave``.
    """
    B, W = batch_size, num_beams
    if W < 1 or max_new_tokens < 1:
        raise DodaiError("num_beams and max_new_tokens must be >= 1")
    if not 1 <= num_return_sequences <= W:
        raise DodaiError(f"num_return_sequences must be in 1..num_beams ({W}), got {num_return_sequences}")
    if early_stopping not in (True, False, "never"):
        raise DodaiError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    running_seq = torch.zeros(B, W, max_new_tokens, dtype=torch.long)
    running_lp = torch.full((B, W), NEG)
    running_lp[:, 0] = 0.0  # all W rows start identical: only the first may expand at step 1
    fin_seq = torch.zeros(B, W, max_new_tokens, dtype=torch.long)
    fin_score = torch.full((B, W), NEG)
    fin_lp = torch.full((B, W), NEG)
    fin_len = torch.zeros(B, W, dtype=torch.long)
    fin_done = torch.zeros(B, W, dtype=torch.bool)  # slot holds a real finished hypothesis
    improvable = torch.ones(B, dtype=torch.bool)  # HF: is_early_stop_heuristic_unsatisfied
    batch_off = (torch.arange(B) * W)[:, None]  # (B, 1)
    tokens = None

    for cur in range(max_new_tokens):  # cur = tokens generated so far
        logprobs, state = step(state, tokens)  # (N, V)
        V = logprobs.shape[-1]
        K = min(2 * W, W * V)
        total = (logprobs.float().view(B, W, V) + running_lp[:, :, None]).view(B, W * V)
        top_lp, top_idx = total.topk(K, dim=1)  # (B, K), sorted best first
        src_beam, tok = top_idx // V, top_idx % V  # (B, K)
        cand_seq = running_seq.gather(1, src_beam[:, :, None].expand(B, K, max_new_tokens)).clone()
        cand_seq[:, :, cur] = tok
        gen_len = cur + 1
        hits = torch.ones_like(tok, dtype=torch.bool) if gen_len == max_new_tokens else (
            tok == eos_id if eos_id is not None else torch.zeros_like(tok, dtype=torch.bool))

        # running beams for the next step: best W candidates that did not stop
        run_score = top_lp + hits.float() * NEG
        keep = run_score.topk(W, dim=1).indices  # (B, W)
        running_seq = cand_seq.gather(1, keep[:, :, None].expand(B, W, max_new_tokens))
        running_lp = run_score.gather(1, keep)
        beam_rows = (src_beam.gather(1, keep) + batch_off).view(-1)  # (N,) rows to keep in the state
        tokens = tok.gather(1, keep).view(-1)

        # finished hypotheses: stopped candidates among the top W of this step, if they may still improve
        in_top_w = torch.arange(K)[None, :] < W
        # (top_lp > NEG/2: never finish a candidate grown from one of the W-1 placeholder rows of step 1)
        new_fin = hits & in_top_w & improvable[:, None] & (top_lp > NEG / 2)
        if early_stopping is True:
            new_fin &= ~fin_done.all(dim=1, keepdim=True)
        cand_score = top_lp / (gen_len ** length_penalty)
        cand_score = torch.where(new_fin, cand_score, torch.full_like(cand_score, NEG))
        m_score = torch.cat([fin_score, cand_score], 1)
        best = m_score.topk(W, dim=1).indices  # (B, W)
        m_seq = torch.cat([fin_seq, cand_seq], 1)
        fin_seq = m_seq.gather(1, best[:, :, None].expand(B, W, max_new_tokens))
        fin_score = m_score.gather(1, best)
        fin_lp = torch.cat([fin_lp, top_lp], 1).gather(1, best)
        fin_len = torch.cat([fin_len, torch.full_like(tok, gen_len)], 1).gather(1, best)
        fin_done = torch.cat([fin_done, new_fin], 1).gather(1, best)

        # stop?  (HF's _check_early_stop_heuristic and _beam_search_has_unfinished_sequences)
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_new_tokens
        else:
            best_len = gen_len
        best_possible = running_lp[:, 0] / (best_len ** length_penalty)
        worst_fin = torch.where(fin_done.all(dim=1), fin_score.min(dim=1).values, torch.full((B,), NEG))
        improvable &= best_possible > worst_fin
        if not improvable.any() or (early_stopping is True and fin_done.all()) or gen_len == max_new_tokens:
            break
        state = reorder(state, beam_rows)

    out = []
    for b in range(B):
        hyps = []
        for w in range(W):
            if fin_done[b, w]:
                n = int(fin_len[b, w])
                hyps.append(Hypothesis(fin_seq[b, w, :n].tolist(), float(fin_score[b, w]), float(fin_lp[b, w])))
        hyps.sort(key=lambda h: h.score, reverse=True)
        out.append(hyps[:num_return_sequences])
    return out


# ----------------------------------------------------------------------------- causal-LM adapter

def lm_step(model, prompt_ids: list[int] | torch.Tensor, num_beams: int, use_cache: bool = True):
    """(step, state) for a causal-LM-protocol model (``model(idx, cache=...) -> (logits, loss)``).

    With ``use_cache`` and a model that has ``new_cache``, the prompt is prefilled once into a KV cache
    of N = W rows and each step feeds one token per beam; the cache rows are reordered with the beams.
    Otherwise the whole history is recomputed every step (the slow, obviously-correct oracle).
    One prompt, W beams (batch 1); for several prompts of equal length stack them and repeat_interleave.
    """
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.numel() == 0:
        raise DodaiError("beam search needs a non-empty prompt")
    ids = ids.repeat_interleave(num_beams, dim=0)  # (N, T)
    block = getattr(getattr(model, "config", None), "block_size", None)

    if use_cache and hasattr(model, "new_cache"):
        def step(state, tokens):
            cache, hist = state
            if tokens is None:
                logits, _ = model(hist, cache=cache)
            else:
                if cache.pos >= cache.max_len:
                    raise DodaiError("context window exhausted during beam search")
                logits, _ = model(tokens[:, None], cache=cache)
            return torch.log_softmax(logits[:, -1].float(), dim=-1), (cache, hist)

        max_len = block if block is not None else ids.shape[1] + 1024
        return step, (model.new_cache(ids.shape[0], max_len), ids)

    def step(hist, tokens):
        if tokens is not None:
            hist = torch.cat([hist, tokens[:, None]], dim=1)
        ctx = hist if block is None else hist[:, -block:]
        logits, _ = model(ctx)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), hist

    return step, ids


def lm_beam_search(model, prompt_ids, num_beams: int = 4, max_new_tokens: int = 32, eos_id: int | None = None,
                   length_penalty: float = 1.0, early_stopping: bool | str = False, num_return_sequences: int = 1,
                   use_cache: bool = True) -> list[Hypothesis]:
    """Beam search continuation of one prompt with a causal LM; n-best hypotheses, best first."""
    was_training = model.training
    model.eval()
    try:
        step, state = lm_step(model, prompt_ids, num_beams, use_cache)
        return beam_search(step, state, 1, num_beams, max_new_tokens, eos_id, length_penalty, early_stopping,
                           num_return_sequences)[0]
    finally:
        model.train(was_training)
