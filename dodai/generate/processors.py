"""Logits processors beyond temperature / top-k / top-p (R5.4), with Hugging Face semantics.

Every processor is a pure function ``(input_ids (B, T), logits (B, V)) -> logits (B, V)``; ``input_ids``
is the whole sequence so far (prompt + generated), as in HF ``generate``. Removed tokens get -inf.

- :func:`min_p_filter` (Nguyen et al. 2024, "min-p sampling"): keep tokens whose probability is at
  least ``min_p`` times the top token's probability (HF ``MinPLogitsWarper``; at least one token kept).
- :func:`repetition_penalty` (CTRL, Keskar et al. 2019): every token already in ``input_ids`` has its
  logit divided by the penalty if positive, multiplied if negative (HF ``RepetitionPenaltyLogitsProcessor``).
- :func:`presence_frequency_penalty` (OpenAI API semantics): ``logit - frequency * count - presence *
  [count > 0]``, where ``count`` is how often the token was *generated* so far (the prompt does not count).
- :func:`no_repeat_ngram` (HF ``NoRepeatNGramLogitsProcessor``): ban any token that would complete an
  n-gram already present in the sequence.
- :func:`logit_bias`: add a fixed bias per token id (OpenAI's ``logit_bias``; -100 effectively bans).

:class:`LogitsPipeline` applies them in HF ``generate``'s order: logit bias, repetition penalty,
presence/frequency penalty (not in HF; placed with the other penalties), no-repeat n-gram, then the
warpers temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dodai.errors import DodaiError

NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T (T > 0). T = 0 means greedy and is handled by the caller (argmax)."""
    if temperature <= 0:
        raise DodaiError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (..., V) with everything below the k-th largest logit set to -inf. **Ties at the boundary are
    all kept** (so more than k tokens may survive), exactly as HF's TopKLogitsWarper does."""
    if k <= 0:
        raise DodaiError(f"top-k must be a positive integer, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest value
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020): logits (..., V) outside the smallest set of most likely tokens
    whose mass reaches p set to -inf; at least one token always kept. As HF's TopPLogitsWarper: sort
    ascending, drop tokens whose cumulative mass is <= 1 - p; among tied logits the sort is stable, so the
    tokens with the lower ids count as "less likely" and are dropped first."""
    if not 0.0 < p <= 1.0:
        raise DodaiError(f"top-p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False, stable=True)  # ascending
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # mass of this token and all less likely ones
    remove_sorted = cum <= (1.0 - p)
    remove_sorted[..., -1:] = False  # the most likely token always stays
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, NEG_INF)


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


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """logits (B, V): tokens with prob < min_p * max prob set to -inf (the top token always stays)."""
    if not 0.0 <= min_p <= 1.0:
        raise DodaiError(f"min-p must be in [0, 1], got {min_p}")
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    remove = probs < threshold
    # keep the single most likely token even if rounding put it under the threshold (HF: min_tokens_to_keep=1)
    top = logits.argmax(dim=-1, keepdim=True)
    remove = remove.scatter(-1, top, False)
    return logits.masked_fill(remove, NEG_INF)


def repetition_penalty(input_ids: torch.Tensor, logits: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty on every token id that occurs in ``input_ids`` (B, T); logits (B, V)."""
    if penalty <= 0:
        raise DodaiError(f"repetition penalty must be > 0, got {penalty}")
    seen = logits.gather(1, input_ids)  # (B, T) the logits of the tokens already in the sequence
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)  # duplicates write the same value, so order does not matter


def presence_frequency_penalty(generated_ids: torch.Tensor, logits: torch.Tensor, presence: float = 0.0,
                               frequency: float = 0.0) -> torch.Tensor:
    """OpenAI penalties from the counts of the *generated* tokens ``generated_ids`` (B, T_gen)."""
    if generated_ids.shape[1] == 0 or (presence == 0 and frequency == 0):
        return logits
    counts = torch.zeros_like(logits).scatter_add_(1, generated_ids, torch.ones_like(generated_ids, dtype=logits.dtype))
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def banned_ngram_tokens(ids: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in ``ids`` (the last n-1 tokens are the prefix)."""
    if len(ids) + 1 < n:
        return []
    prefix = tuple(ids[len(ids) - n + 1:])
    banned = []
    for i in range(len(ids) - n + 1):
        if tuple(ids[i:i + n - 1]) == prefix:
            banned.append(ids[i + n - 1])
    return banned


def no_repeat_ngram(input_ids: torch.Tensor, logits: torch.Tensor, n: int) -> torch.Tensor:
    """Ban tokens that would repeat an n-gram of ``input_ids`` (B, T); logits (B, V)."""
    if n <= 0:
        raise DodaiError(f"no-repeat n-gram size must be a positive integer, got {n}")
    out = logits.clone()
    for b, row in enumerate(input_ids.tolist()):
        banned = banned_ngram_tokens(row, n)
        if banned:
            out[b, banned] = NEG_INF
    return out


def logit_bias(logits: torch.Tensor, bias: dict[int, float]) -> torch.Tensor:
    """Add ``bias[token]`` to that token's logit in every row."""
    if not bias:
        return logits
    V = logits.shape[-1]
    ids = list(bias)
    if any(not 0 <= i < V for i in ids):
        raise DodaiError(f"logit bias token id out of range [0, {V})")
    out = logits.clone()
    out[:, ids] += torch.tensor([bias[i] for i in ids], dtype=logits.dtype, device=logits.device)
    return out


@dataclass
class LogitsPipeline:
    """Every decoding knob in one place; ``__call__`` applies them in HF's order.

    ``temperature == 0`` means greedy: the penalties still apply (as in HF) but the warpers do not.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)

    def __post_init__(self):
        # NaN compares false with everything, so it would slip through every range check below: refuse
        # non-finite values first (inf temperature or penalties would turn every logit into NaN as well)
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise DodaiError(f"{name.replace('_', ' ')} must be a finite number, got {v!r}")
        for name in ("top_k", "no_repeat_ngram_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise DodaiError(f"{name.replace('_', ' ')} must be an integer, got {v!r}")
        for tok, b in (self.logit_bias or {}).items():
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                raise DodaiError(f"logit bias for token {tok} must be a finite number, got {b!r}")
        if self.temperature < 0:
            raise DodaiError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise DodaiError(f"top-k must be a positive integer, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise DodaiError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise DodaiError(f"min-p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise DodaiError(f"repetition penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size <= 0:
            raise DodaiError(f"no-repeat n-gram size must be a positive integer, got {self.no_repeat_ngram_size}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def reads_ids(self) -> bool:
        """True when a processor looks at the token history (then each row is processed with its own ids)."""
        return bool((self.repetition_penalty is not None and self.repetition_penalty != 1.0)
                    or self.presence_penalty or self.frequency_penalty or self.no_repeat_ngram_size)

    @property
    def is_plain_greedy(self) -> bool:
        """Greedy with nothing that changes the logits: the choice is the raw argmax."""
        return self.greedy and not self.reads_ids and not self.logit_bias

    def process(self, input_ids: torch.Tensor, logits: torch.Tensor, n_prompt: int | None = None) -> torch.Tensor:
        """The penalties (no warpers): input_ids (B, T), logits (B, V) -> (B, V) float32.

        ``n_prompt`` says where generation started (for presence/frequency, which count generated tokens only).
        """
        logits = logits.float()
        if self.logit_bias:
            logits = logit_bias(logits, self.logit_bias)
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            logits = repetition_penalty(input_ids, logits, self.repetition_penalty)
        if self.presence_penalty or self.frequency_penalty:
            gen = input_ids[:, (n_prompt or 0):]
            logits = presence_frequency_penalty(gen, logits, self.presence_penalty, self.frequency_penalty)
        if self.no_repeat_ngram_size:
            logits = no_repeat_ngram(input_ids, logits, self.no_repeat_ngram_size)
        return logits

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """The warpers: temperature, top-k, top-p, min-p (logits (B, V))."""
        if self.greedy:
            return logits
        if self.temperature != 1.0:
            logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        if self.min_p is not None:
            logits = min_p_filter(logits, self.min_p)
        return logits

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor, n_prompt: int | None = None) -> torch.Tensor:
        return self.warp(self.process(input_ids, logits, n_prompt))
