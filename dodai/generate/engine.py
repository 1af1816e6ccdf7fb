"""The generation engine (R5.4): every decoding knob, stop strings / stop tokens, n samples, log-probs.

:func:`stream_steps` is the core loop: prefill the prompt once into a KV cache (R5.5) with ``n`` rows
(the n samples share the prompt, so no padding is needed), then feed one token per row per step. Each
step applies a :class:`~dodai.generate.processors.LogitsPipeline` (penalties, then warpers, in Hugging
Face ``generate``'s order) and picks argmax (temperature 0) or samples from a private seeded
``torch.Generator``. :func:`complete` collects the steps into :class:`Completion` objects and applies
**stop strings** on the decoded text: the first occurrence of any stop string ends that sample, and the
text is cut just before it (the stop string is not part of the output; the ids keep the token that
completed it, as HF ``stop_strings`` does).

Log-probs are those of the *model's* distribution (log-softmax of the raw logits, before any penalty or
warper), for the chosen token and the ``logprobs`` most likely alternatives, as the OpenAI API reports them.
Finish reasons: ``"eos"`` (an EOS / stop token was produced; it is kept in ``ids`` but not in ``text``),
``"stop"`` (a stop string), ``"length"`` (``max_new_tokens`` reached).

Several prompts of different lengths at once (left padding, per-row seeds and finishing):
:func:`dodai.generate.batch.generate_batch`, which returns the same :class:`Completion` objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dodai.errors import DodaiError
from dodai.generate.processors import LogitsPipeline
from dodai.generate.sampling import _check, _device, _generator


@dataclass
class TokenLogprob:
    token: int
    logprob: float  # log p(token | context) under the model
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely alternatives, best first


@dataclass
class Completion:
    ids: list[int]
    text: str | None = None
    finish_reason: str = "length"
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Step:
    """One decoding step: the token chosen for each of the n rows (rows already finished get None)."""

    tokens: list[int | None]
    logprobs: list[TokenLogprob | None] | None = None


def _pick(scores: torch.Tensor, greedy: bool, gen: torch.Generator | None) -> torch.Tensor:
    if greedy:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=gen).squeeze(-1)


def stream_steps(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                 pipeline: LogitsPipeline | None = None, seed: int | None = None, num_samples: int = 1,
                 stop_tokens: Sequence[int] = (), logprobs: int | None = None,
                 use_cache: bool = True) -> Iterator[Step]:
    """Yield one :class:`Step` per generated position; a row stops after it yields a stop token.

    Arguments are checked now (a DodaiError before any work, including prompt + max_new_tokens >
    the model's context window); the steps come lazily. ``use_cache=False`` re-runs the whole sequence
    every step (the slow reference the cache must equal).
    """
    pipe = pipeline or LogitsPipeline()
    ids = _check(model, prompt_ids, max_new_tokens, pipe.temperature, pipe.top_k, pipe.top_p)
    if num_samples < 1:
        raise DodaiError(f"the number of samples must be >= 1, got {num_samples}")
    if logprobs is not None and logprobs < 0:
        raise DodaiError(f"logprobs must be >= 0, got {logprobs}")
    stops = set(stop_tokens)
    device = _device(model)
    gen = _generator(seed, device)
    n, n_prompt = num_samples, len(ids)

    def run() -> Iterator[Step]:
        if max_new_tokens == 0:
            return
        was_training = model.training
        model.eval()
        try:
            seq = torch.tensor([ids] * n, dtype=torch.long, device=device)  # (n, T) all tokens so far
            cache = model.new_cache(n, n_prompt + max_new_tokens) if use_cache else None
            x = seq
            done = [False] * n
            for step in range(max_new_tokens):
                with torch.inference_mode():
                    logits, _ = model(x if use_cache else seq, cache=cache)
                    raw = logits[:, -1, :].float()  # (n, V)
                    nxt = _pick(pipe(seq, raw, n_prompt), pipe.greedy, gen)  # (n,)
                    lp = None
                    if logprobs is not None:
                        logp = raw.log_softmax(dim=-1)
                        chosen = logp.gather(1, nxt[:, None])[:, 0].tolist()
                        top = logp.topk(logprobs, dim=-1) if logprobs else None
                        lp = []
                        for r in range(n):
                            alts = list(zip(top.indices[r].tolist(), top.values[r].tolist())) if top else []
                            lp.append(TokenLogprob(int(nxt[r]), chosen[r], alts))
                toks = nxt.tolist()
                yield Step([None if done[r] else toks[r] for r in range(n)],
                           None if lp is None else [None if done[r] else lp[r] for r in range(n)])
                done = [d or t in stops for d, t in zip(done, toks)]
                if all(done) or step == max_new_tokens - 1:
                    return
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                x = nxt[:, None]  # (n, 1): only the new tokens go through the model
        finally:
            model.train(was_training)

    return run()


def _find_stop(text: str, stop_strings: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else -1


def fill_texts(outs: list[Completion], tokenizer, stop_strings: Sequence[str]) -> None:
    """Set each completion's text: its ids decoded without a final EOS, cut before the first stop string."""
    for c in outs:
        body = c.ids[:-1] if c.finish_reason == "eos" else c.ids
        text = tokenizer.decode(body)
        cut = _find_stop(text, stop_strings) if stop_strings else -1
        c.text = text[:cut] if cut >= 0 else text


def complete(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
             pipeline: LogitsPipeline | None = None, seed: int | None = None, num_samples: int = 1,
             eos_id: int | None = None, stop_tokens: Sequence[int] = (), stop_strings: Sequence[str] = (),
             tokenizer=None, logprobs: int | None = None, use_cache: bool = True) -> list[Completion]:
    """Generate ``num_samples`` completions of one prompt; text fields need ``tokenizer``."""
    stop_strings = [s for s in stop_strings]
    if any(not s for s in stop_strings):
        raise DodaiError("a stop string must not be empty")
    if stop_strings and tokenizer is None:
        raise DodaiError("stop strings need a tokenizer to decode the text")
    stops = set(stop_tokens) | ({eos_id} if eos_id is not None else set())
    outs = [Completion([], logprobs=[] if logprobs is not None else None) for _ in range(num_samples)]
    live = [True] * num_samples
    for st in stream_steps(model, prompt_ids, max_new_tokens, pipeline, seed, num_samples, sorted(stops),
                           logprobs, use_cache):
        for r, tok in enumerate(st.tokens):
            if tok is None or not live[r]:
                continue
            c = outs[r]
            c.ids.append(tok)
            if st.logprobs is not None:
                c.logprobs.append(st.logprobs[r])
            if tok in stops:
                c.finish_reason, live[r] = "eos", False
            elif stop_strings:
                # only the tail can hold a new match: decode the whole text (robust to multi-byte tokens)
                text = tokenizer.decode(c.ids)
                if _find_stop(text, stop_strings) >= 0:
                    c.finish_reason, live[r] = "stop", False
        if not any(live):
            break
    if tokenizer is not None:
        fill_texts(outs, tokenizer, stop_strings)
    return outs


class StopStringFilter:
    """Streaming text with stop strings: holds back any tail that could still begin a stop string.

    ``push(piece) -> (text to emit now, stopped)``; once stopped, the stop string and anything after it
    are never emitted. ``flush()`` returns the held-back tail at the end of a stream that did not stop.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stops = [s for s in stop_strings if s]
        self.buf = ""
        self.stopped = False

    def push(self, piece: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.buf += piece
        cut = _find_stop(self.buf, self.stops)
        if cut >= 0:
            out, self.buf, self.stopped = self.buf[:cut], "", True
            return out, True
        hold = 0  # the longest suffix of buf that is a proper prefix of some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buf[:len(self.buf) - hold]
        self.buf = self.buf[len(self.buf) - hold:]
        return out, False

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out
