"""Speculative decoding (issue 4, item 4): a cheap draft model proposes, the target model verifies.

Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding" (ICML 2023);
Chen et al., "Accelerating Large Language Model Decoding with Speculative Sampling" (2023).

Notation: V vocab, γ (``gamma``) draft tokens per round, p the target's next-token distribution,
q the draft's; d_1 .. d_γ the draft tokens of a round.

One round, with both models holding a KV cache of everything before the last committed token x:

1. the draft decodes γ tokens one by one: d_i ~ q_i (argmax when greedy);
2. the target runs **one** forward over the γ + 1 tokens [x, d_1 .. d_γ] and so gets p_1 .. p_{γ+1}
   (p_i predicts the token after d_{i-1}); at batch 1 on a CPU a forward is bound by reading the
   weights, so γ + 1 positions cost far less than γ + 1 single-token forwards;
3. acceptance, left to right:

   - greedy: accept d_i while d_i == argmax p_i; at the first mismatch emit argmax p_i instead;
     the output is then token for token the target's own greedy output;
   - sampling: accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); on the first rejection emit a
     token drawn from norm(max(0, p_i - q_i)) and stop. This makes every emitted token distributed
     exactly as p (Leviathan et al., Theorem 1; tests/test_speculative.py checks it statistically);

   if all γ are accepted, one more token comes free from p_{γ+1};
4. both caches are **rolled back** to the committed tokens: a cache's ``pos`` is set back, and the
   rejected entries are simply overwritten by the next writes (KVCache writes at ``pos``).

Each round emits between 1 and γ + 1 tokens for γ draft forwards and one target forward. The draft
shares the tokenizer; :func:`truncated_draft` builds one from the target itself: its first k blocks
with the target's final norm and head ("early exit"; no new weights, no extra memory).

Sampling settings (temperature, top-k, top-p) are applied to both p and q before the rule, so the
output follows the target's *processed* distribution, the one plain sampling would draw from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from dodai.errors import DodaiError
from dodai.generate.sampling import _check, apply_temperature, top_k_filter, top_p_filter


@dataclass
class SpeculativeStats:
    """Counters of one :func:`speculative_generate` call (filled in while it streams)."""

    rounds: int = 0  # target verification forwards
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens the target accepted
    emitted: int = 0  # tokens yielded

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        return self.emitted / self.rounds if self.rounds else 0.0


def truncated_draft(model: nn.Module, n_layers: int) -> nn.Module:
    """A draft that shares (does not copy) the target Llama's embedding, first ``n_layers`` blocks,
    final norm and output head. Its forward is the target's with the remaining blocks skipped."""
    from dodai.models.llama import Llama

    if not isinstance(model, Llama):
        raise DodaiError(f"truncated_draft needs a Llama-family model, got {type(model).__name__}")
    if not isinstance(n_layers, int) or not 1 <= n_layers <= model.config.n_layer:
        raise DodaiError(f"draft layers must be in 1..{model.config.n_layer}, got {n_layers!r}")
    cfg = dataclasses.replace(model.config, n_layer=n_layers)
    with torch.device("meta"):  # built empty, then every submodule is replaced by the target's own
        draft = type(model)(cfg)
    draft.tok_embeddings = model.tok_embeddings
    draft.layers = nn.ModuleList(list(model.layers)[:n_layers])
    draft.norm = model.norm
    draft.output = model.output
    if any(t.is_meta for t in list(draft.parameters()) + list(draft.buffers())):
        raise DodaiError(f"{type(model).__name__} has parts truncated_draft does not know how to share")
    return draft.eval()


def _probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Processed next-token distribution(s), logits (..., V) -> probabilities (..., V) in fp32."""
    x = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    return torch.softmax(x, dim=-1)


def _rollback(cache, pos: int) -> None:
    """Forget every cached position >= pos (their slots are overwritten by the next writes)."""
    cache.pos = pos
    mask = getattr(cache, "key_mask", None)
    if mask is not None:
        cache.key_mask = mask[:, :pos]


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: Sequence[int],
                  generator: torch.Generator | None = None) -> tuple[int, int]:
    """The stochastic acceptance rule for one round.

    p (γ + 1, V): target distributions at the γ + 1 verified positions; q (γ, V): the draft
    distributions the drafts were sampled from; returns (number of drafts accepted n, the token
    emitted after them). Drafts d_1 .. d_n are kept; the extra token is a resample from
    norm(max(0, p_{n+1} - q_{n+1})) after a rejection, or a draw from p_{γ+1} when all were accepted.
    """
    gamma = len(drafts)
    for i, d in enumerate(drafts):
        u = torch.rand((), generator=generator).item()
        if u * q[i, d].item() < p[i, d].item():  # u < p/q without dividing (q(d) > 0: d was drawn from q)
            continue
        residual = (p[i] - q[i]).clamp_min(0.0)
        if not residual.sum() > 0:  # p == q up to rounding: cannot happen in exact arithmetic
            residual = p[i]
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator).item())
    return gamma, int(torch.multinomial(p[gamma], 1, generator=generator).item())


def speculative_generate(target, draft, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                         gamma: int = 4, temperature: float = 0.0, top_k: int | None = None,
                         top_p: float | None = None, seed: int | None = None, eos_id: int | None = None,
                         stats: SpeculativeStats | None = None, target_cache=None,
                         draft_cache=None) -> Iterator[int]:
    """Stream up to ``max_new_tokens`` token ids after ``prompt_ids``, drafted by ``draft`` and verified
    by ``target`` (both dodai causal LMs over the same vocabulary, batch 1).

    temperature 0 (the default) is greedy: the output equals ``generate(target, ..., temperature=0)``.
    ``stats`` (optional) is filled with acceptance counters. ``target_cache`` / ``draft_cache``: fresh
    caches to use instead of ``model.new_cache`` (e.g. a :class:`dodai.nn.quant_cache.QuantKVCache`),
    with room for len(prompt) + max_new_tokens positions. Arguments are checked now (DodaiError), the
    tokens come lazily.
    """
    # prompt, knobs, the target's window and token ids: the same checks as plain generation
    ids = _check(target, prompt_ids, max_new_tokens, temperature, top_k, top_p)
    if not isinstance(gamma, int) or gamma < 1:
        raise DodaiError(f"gamma (draft tokens per round) must be a positive integer, got {gamma!r}")
    vocab = target.config.vocab_size
    if draft.config.vocab_size != vocab:
        raise DodaiError(f"draft vocabulary ({draft.config.vocab_size}) differs from the target's ({vocab}): "
                         f"the draft must share the tokenizer")
    need = len(ids) + max_new_tokens
    if need > draft.config.block_size:
        raise DodaiError(f"prompt ({len(ids)} tokens) + max new tokens ({max_new_tokens}) = {need} exceeds "
                         f"the draft model's context window ({draft.config.block_size} tokens)")
    for c, name in ((target_cache, "target"), (draft_cache, "draft")):
        if c is not None and (c.pos != 0 or c.max_len < need):
            raise DodaiError(f"the {name} cache must be empty with room for {need} positions")
    stats = stats if stats is not None else SpeculativeStats()
    device = next(target.parameters()).device
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
    greedy = temperature == 0

    @torch.inference_mode()
    def forward(model, cache, toks: list[int]) -> torch.Tensor:
        """logits (t, V) of the t new tokens, appended to the cache."""
        logits, _ = model(torch.tensor([toks], dtype=torch.long, device=device), cache=cache)
        return logits[0]

    def rounds() -> Iterator[int]:
        tcache = target_cache if target_cache is not None else target.new_cache(1, need)
        dcache = draft_cache if draft_cache is not None else draft.new_cache(1, need)
        seq = list(ids)
        emitted = 0
        # invariant between rounds: the target cache holds seq[:-1]; the draft cache a prefix of it
        if len(seq) > 1:
            forward(target, tcache, seq[:-1])
            forward(draft, dcache, seq[:-1])
        while True:
            g = min(gamma, max_new_tokens - emitted - 1)  # a round emits at most g + 1 tokens
            drafts, qs = [], []
            feed = seq[dcache.pos:]  # the committed tokens the draft has not seen yet (1 or 2)
            for _ in range(g):
                logits = forward(draft, dcache, feed)[-1]  # (V,)
                if greedy:
                    d = int(logits.argmax())
                else:
                    q = _probs(logits, temperature, top_k, top_p)
                    d = int(torch.multinomial(q, 1, generator=gen).item())
                    qs.append(q)
                drafts.append(d)
                feed = [d]
            logits = forward(target, tcache, [seq[-1]] + drafts)  # (g + 1, V): p_1 .. p_{g+1}
            if greedy:
                best = logits.argmax(dim=-1).tolist()
                n = 0
                while n < g and drafts[n] == best[n]:
                    n += 1
                extra = best[n]
            else:
                p = _probs(logits, temperature, top_k, top_p)
                n, extra = accept_drafts(p, torch.stack(qs) if qs else p[:0], drafts, gen)
            stats.rounds += 1
            stats.drafted += g
            stats.accepted += n
            new = drafts[:n] + [extra]
            seq.extend(new)
            _rollback(tcache, len(seq) - 1)  # keeps seq[:-1]: the last token is fed next round
            _rollback(dcache, min(dcache.pos, len(seq) - 1))
            for tok in new:
                emitted += 1
                stats.emitted += 1
                yield tok
                if tok == eos_id or emitted == max_new_tokens:
                    return

    def stream() -> Iterator[int]:
        if max_new_tokens == 0:
            return
        modes = target.training, draft.training
        target.eval()
        draft.eval()
        try:
            yield from rounds()
        finally:
            target.train(modes[0])
            draft.train(modes[1])

    return stream()
