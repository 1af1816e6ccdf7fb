"""The one decode loop (R5.4, R5.5): prefill, step, logits processors, stopping — for every caller.

Notation: B live rows in a step, T prompt tokens, V vocabulary.

Everything in dodai that continues a prompt token by token — ``dodai generate`` (one prompt, n samples or a
batch), ``dodai chat`` and chat with memory, agents, RAG answers, the red-team runner, the policy rollouts of
RLHF and the server's continuous batching (:mod:`dodai.serve`) — runs :meth:`Engine.step`. Strategies that
search differently stay apart behind the same model protocol (:mod:`dodai.models.protocol`): beam search
(:mod:`dodai.generate.beam`), speculative decoding (:mod:`dodai.generate.speculative`) and encoder–decoder
decoding (T5, seq2seq).

One **step** (vLLM's scheduler / model-runner split, in one process):

1. *admit and prefill*: the backend moves waiting requests into its KV cache. :class:`DenseBackend` prefills
   a static batch in one left-padded forward (:mod:`dodai.nn.padding`) and later reuses the longest common
   prefix of the ids it holds (a chat session, an agent: only the new tail of each prompt is computed);
   :class:`dodai.generate.paged.PagedBackend` admits requests at any step, prefills them in chunks and
   shares identical prompt prefixes between requests (continuous batching).
2. *choose*: every row with fresh logits gets its next token: the row's :class:`LogitsPipeline` (penalties,
   constraints, then warpers, in HF ``generate``'s order) and argmax (temperature 0) or one draw from the
   row's own seeded ``torch.Generator`` — so a row's output does not depend on which other rows share its
   batch.
3. *stop*: a row ends on a stop token / EOS (kept in ``ids``, not in ``text``), a stop string (the text is
   cut just before it; the ids keep the token that completed it, as HF ``stop_strings`` does),
   ``max_new_tokens``, a deadline or a cancellation; finished rows leave the cache at once.
4. *decode*: one forward over the new token of every live row (B, 1) gives the next logits.

Log-probs are those of the *model's* distribution (log-softmax of the raw logits, before any penalty or
warper), for the chosen token and the ``logprobs`` most likely alternatives, as the OpenAI API reports them.
Finish reasons: ``"eos"``, ``"stop"``, ``"length"``, ``"deadline"``, ``"cancelled"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dodai.errors import DodaiError
from dodai.generate.processors import LogitsPipeline


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
    """One decoding step of :func:`stream_steps`: the token of each of the n rows (finished rows get None)."""

    tokens: list[int | None]
    logprobs: list[TokenLogprob | None] | None = None


# ---- checks shared by every entry point -------------------------------------------------------------

def check_prompt(model, prompt_ids, max_new_tokens: int, pipeline: LogitsPipeline | None = None) -> list[int]:
    """The prompt as a list of ids, after the checks every caller needs (a DodaiError before any work)."""
    ids = prompt_ids.tolist() if isinstance(prompt_ids, torch.Tensor) else list(prompt_ids)
    if not ids:
        raise DodaiError("the prompt is empty: give at least one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise DodaiError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    block = model.config.block_size
    if len(ids) + max_new_tokens > block:
        raise DodaiError(f"prompt ({len(ids)} tokens) + max new tokens ({max_new_tokens}) = "
                         f"{len(ids) + max_new_tokens} exceeds the model's context window ({block} tokens)")
    vocab = model.config.vocab_size
    if any(not isinstance(i, int) or not 0 <= i < vocab for i in ids):
        raise DodaiError(f"prompt token id out of range [0, {vocab})")
    return ids


def _check(model, prompt_ids, max_new_tokens, temperature, top_k, top_p) -> list[int]:
    """Prompt checks plus the three classic knobs (validated by building a pipeline)."""
    LogitsPipeline(temperature=temperature, top_k=top_k, top_p=top_p)
    return check_prompt(model, prompt_ids, max_new_tokens)


def _generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _device(model):
    return next(model.parameters()).device


def _find_stop(text: str, stop_strings: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else -1


def _pick(scores: torch.Tensor, greedy: bool, gen: torch.Generator | None) -> torch.Tensor:
    if greedy:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=gen).squeeze(-1)


# ---- one request ------------------------------------------------------------------------------------

class Request:
    """One sequence to generate, and what it has produced so far.

    ``stream_text=True`` keeps a UTF-8-safe incremental decode (:class:`dodai.generate.stream.StreamDecoder`)
    behind a :class:`StopStringFilter`, so ``take_text()`` hands out only final text, never a partial
    character or the beginning of a stop string.
    """

    def __init__(self, prompt: Sequence[int], max_new_tokens: int, pipeline: LogitsPipeline | None = None,
                 seed: int | None = None, stop_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
                 logprobs: int | None = None, tokenizer=None, stream_text: bool = False,
                 deadline: float | None = None, tag=None):
        self.prompt = list(prompt)
        self.max_new_tokens = max_new_tokens
        self.pipe = pipeline or LogitsPipeline()
        self.seed = seed
        self.stop_ids = set(stop_ids)
        self.stop_strings = [s for s in stop_strings]
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise DodaiError("a stop string must be non-empty text")
        if self.stop_strings and tokenizer is None:
            raise DodaiError("stop strings need a tokenizer to decode the text")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise DodaiError(f"logprobs must be an integer >= 0, got {logprobs!r}")
        if stream_text and tokenizer is None:
            raise DodaiError("streaming text needs a tokenizer")
        self.n_logprobs = logprobs
        self.tok = tokenizer
        self.deadline = deadline
        self.tag = tag  # the caller's label (row index, HTTP request id, …)
        self.gen: torch.Generator | None = None
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if logprobs is not None else None
        self.finish_reason: str | None = None
        self.cancelled = False
        self.prompt_cached = 0  # prompt tokens taken from a cache instead of computed (prefix reuse)
        self.t_admitted: float | None = None
        self.t_first_token: float | None = None
        self._dec = self._stopper = None
        self._text_out: list[str] = []
        if stream_text:
            from dodai.generate.stream import StreamDecoder

            self._dec, self._stopper = StreamDecoder(tokenizer), StopStringFilter(self.stop_strings)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Ask the engine to end this request at its next step (thread-safe: a flag)."""
        self.cancelled = True

    def _accept(self, tok: int, lp: TokenLogprob | None) -> None:
        """Record a chosen token and decide whether the request is finished."""
        if self.t_first_token is None:
            self.t_first_token = time.perf_counter()
        self.ids.append(tok)
        if self.logprobs is not None:
            self.logprobs.append(lp)
        if tok in self.stop_ids:
            self.finish_reason = "eos"
        elif self._stopper is not None:
            piece, stopped = self._stopper.push(self._dec.push(tok))
            if piece:
                self._text_out.append(piece)
            if stopped:
                self.finish_reason = "stop"
        elif self.stop_strings and _find_stop(self.tok.decode(self.ids), self.stop_strings) >= 0:
            self.finish_reason = "stop"
        if self.finish_reason is None and len(self.ids) >= self.max_new_tokens:
            self.finish_reason = "length"
        if self.finish_reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.finish_reason = "deadline"
        if self.finish_reason is not None and self._stopper is not None and not self._stopper.stopped:
            rest = self._stopper.push(self._dec.flush())[0] + self._stopper.flush()
            if rest:
                self._text_out.append(rest)

    def take_text(self) -> str:
        """The streamed text produced since the last call (``stream_text=True``)."""
        out = "".join(self._text_out)
        self._text_out.clear()
        return out

    def completion(self) -> Completion:
        c = Completion(list(self.ids), finish_reason=self.finish_reason or "length", logprobs=self.logprobs)
        if self.tok is not None:
            body = c.ids[:-1] if c.finish_reason == "eos" else c.ids
            text = self.tok.decode(body)
            cut = _find_stop(text, self.stop_strings) if self.stop_strings else -1
            c.text = text[:cut] if cut >= 0 else text
        return c


# ---- backends: where the keys and values live ------------------------------------------------------

class DenseBackend:
    """A static batch in one contiguous cache (``model.new_cache``): the requests given at the first step
    are prefilled together as one left-padded batch, then rows only leave (their cache rows are dropped).

    ``keep=True`` makes it a *session*: the cache and the ids it holds outlive a batch of one request, and
    the next request reuses the longest common prefix with them (never the whole prompt: its last token
    must go through the model to give the next-token logits). ``capacity`` fixes the cache length (a chat
    window); otherwise it grows (doubling) to what a request needs. ``use_cache=False`` is the slow
    reference: every step recomputes each row's whole sequence.
    """

    joins_mid_batch = False

    def __init__(self, model, use_cache: bool = True, keep: bool = False, capacity: int | None = None,
                 pad_id: int = 0, pool=None):
        self.model, self.use_cache, self.keep = model, use_cache, keep
        self.capacity, self.pad_id, self.pool = capacity, pad_id, pool
        self.cache = None
        self.held: list[int] = []  # ids whose keys/values the cache holds (single-row sessions)
        self.rows: list[list[int]] = []  # uncached: each live row's whole sequence

    def _new_cache(self, batch: int, need: int):
        if self.pool is not None:
            from dodai.nn.paged_cache import PagedKVCache

            return PagedKVCache(self.pool, batch)
        return self.model.new_cache(batch, need)

    def prefill(self, reqs: list[Request]) -> torch.Tensor:
        """Prefill the batch; returns the last-position logits (B, V) in the order of ``reqs``."""
        from dodai.nn.padding import left_pad

        model = self.model
        device = _device(model)
        need = max(len(r.prompt) + r.max_new_tokens for r in reqs)
        if self.capacity is not None and need > self.capacity:
            raise DodaiError(f"prompt + max new tokens ({need}) exceed the session's context of {self.capacity}")
        if not self.use_cache:
            self.rows = [list(r.prompt) for r in reqs]
            return self._full_forward()
        if self.keep and len(reqs) == 1:
            ids = reqs[0].prompt
            c = self.cache
            if c is None or c.max_len < need:
                cap = self.capacity or min(max(need, 2 * (c.max_len if c is not None else 256)),
                                           model.config.block_size)
                self.cache, self.held = self.model.new_cache(1, cap), []
            common = 0
            for a, b in zip(self.held, ids[:-1]):
                if a != b:
                    break
                common += 1
            self.cache.reset()
            self.cache.pos = common
            self.held = list(ids[:common])
            reqs[0].prompt_cached = common
            x = torch.tensor([ids[common:]], dtype=torch.long, device=device)
            logits, _ = model(x, cache=self.cache, last_only=True)
            self.held = list(ids)
            return logits[:, -1, :]
        self.release()
        self.held = []
        prompts = [r.prompt for r in reqs]
        self.cache = self._new_cache(len(reqs), max(len(p) for p in prompts) + max(r.max_new_tokens for r in reqs))
        if len({len(p) for p in prompts}) == 1:
            logits, _ = model(torch.tensor(prompts, dtype=torch.long, device=device), cache=self.cache,
                              last_only=True)
        else:
            ids, mask = left_pad(prompts, self.pad_id, device)  # (B, T_max) each
            logits, _ = model(ids, cache=self.cache, attention_mask=mask, last_only=True)
        return logits[:, -1, :]

    def decode(self, toks: torch.Tensor, reqs: list[Request] | None = None) -> torch.Tensor:
        """Feed one new token per live row (B,); returns the next logits (B, V)."""
        if not self.use_cache:
            for row, t in zip(self.rows, toks.tolist()):
                row.append(t)
            return self._full_forward()
        logits, _ = self.model(toks[:, None], cache=self.cache, last_only=True)
        if self.keep:
            self.held.append(int(toks[0]))
        return logits[:, -1, :]

    def _full_forward(self) -> torch.Tensor:
        from dodai.nn.padding import left_pad

        device = _device(self.model)
        if len({len(r) for r in self.rows}) == 1:
            logits, _ = self.model(torch.tensor(self.rows, dtype=torch.long, device=device), last_only=True)
        else:
            ids, mask = left_pad(self.rows, self.pad_id, device)
            logits, _ = self.model(ids, attention_mask=mask, last_only=True)
        return logits[:, -1, :]

    def drop(self, keep: list[int]) -> None:
        """Keep only the live rows ``keep`` (indices into the current batch, in order)."""
        if not self.use_cache:
            self.rows = [self.rows[i] for i in keep]
            return
        c = self.cache
        if hasattr(c, "keep_rows"):  # the paged cache frees the dropped rows' blocks
            c.keep_rows(keep)
            return
        ix = torch.tensor(keep, dtype=torch.long, device=c.k[0].device)
        c.k = [k.index_select(0, ix) for k in c.k]
        c.v = [v.index_select(0, ix) for v in c.v]
        if c.key_mask is not None:
            c.key_mask = c.key_mask.index_select(0, ix)
        c.batch = len(keep)

    def release(self) -> None:
        """The batch is over (a session keeps its cache for the next request)."""
        if self.keep:
            return
        if self.cache is not None and hasattr(self.cache, "release"):
            self.cache.release()  # a paged cache gives its blocks back to the pool
        self.cache = None


class Engine:
    """Runs requests on one model with one backend; :meth:`step` is the loop body, :meth:`run` the loop.

    The engine is not thread-safe: one thread calls ``add`` / ``step`` (the server's scheduler thread);
    other threads may only call :meth:`Request.cancel`.
    """

    def __init__(self, model, backend=None):
        self.model = model
        self.backend = backend if backend is not None else DenseBackend(model)
        self.waiting: list[Request] = []
        self.running: list[Request] = []  # in the backend's row order
        self._logits: torch.Tensor | None = None  # (len(running), V): fresh logits of every running row
        self._started = False
        self.device = _device(model)

    # ---- intake ---------------------------------------------------------------------------------
    def add(self, req: Request) -> Request:
        check_prompt(self.model, req.prompt, req.max_new_tokens)
        if self._started and not self.backend.joins_mid_batch:
            raise DodaiError("this engine runs a static batch: add every request before the first step")
        if req.seed is not None:
            req.gen = _generator(req.seed, self.device)
        if req.max_new_tokens == 0:
            req.finish_reason = "length"
            return req
        self.waiting.append(req)
        return req

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running and not getattr(self.backend, "busy", False)

    # ---- the loop -------------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """One iteration; returns the requests that got a token (or finished) in it."""
        model = self.model
        was_training = model.training
        if was_training:  # (eval()/train() walk every module: only when the mode must change, not every step)
            model.eval()
        try:
            with torch.inference_mode():
                return self._step()
        except BaseException:
            self.abort()
            raise
        finally:
            if was_training:
                model.train(True)

    def abort(self) -> None:
        """End every request now (finish reason ``"error"``) and give the backend's memory back."""
        for r in self.waiting + self.running:
            if r.finish_reason is None:
                r.finish_reason = "error"
        if self.backend.joins_mid_batch:
            self.backend.free(self.running)
            self.backend.abort()
        else:
            self.backend.release()
        self.waiting, self.running, self._logits = [], [], None

    def _step(self) -> list[Request]:
        touched: list[Request] = []
        self._cancel()
        if not self.running and not self.waiting and not getattr(self.backend, "busy", False):
            self.backend.release()
            return touched
        if self.backend.joins_mid_batch:
            taken = self.backend.take(self.waiting, len(self.running))
            if taken:
                ids = {id(r) for r in taken}
                self.waiting = [r for r in self.waiting if id(r) not in ids]
            newly, logits = self.backend.prefill_step()
        elif self.waiting and not self._started:
            newly, logits = self.waiting, self.backend.prefill(self.waiting)
            self.waiting = []
        else:
            newly, logits = [], None
        self._started = True
        now = time.perf_counter()
        for r in newly:
            r.t_admitted = now
        if newly:
            self.running += newly
            self._logits = logits if self._logits is None else torch.cat([self._logits, logits])
        if not self.running:
            return touched
        toks = self._choose(self.running, self._logits)
        finished = []
        for i, (r, t) in enumerate(zip(self.running, toks)):
            r._accept(t[0], t[1])
            touched.append(r)
            if r.done:
                finished.append(i)
        if finished:
            self._retire(finished)
        live = [r for r in self.running]
        if live:
            last = torch.tensor([r.ids[-1] for r in live], dtype=torch.long, device=self.device)
            self._logits = self.backend.decode(last, live)
        else:
            self._logits = None
        if not self.running and not self.waiting:
            self.backend.release()
        return touched

    def _cancel(self) -> None:
        dead = [i for i, r in enumerate(self.running) if r.cancelled]
        for r in self.waiting + (self.backend.drop_cancelled() if self.backend.joins_mid_batch else []):
            if r.cancelled:
                r.finish_reason = "cancelled"
        self.waiting = [r for r in self.waiting if not r.cancelled]
        if dead:
            for i in dead:
                self.running[i].finish_reason = "cancelled"
            self._retire(dead)
            if not self.running:
                self._logits = None

    def _retire(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i in range(len(self.running)) if i not in gone]
        if self.backend.joins_mid_batch:
            self.backend.free([self.running[i] for i in rows])
        elif keep:
            self.backend.drop(keep)
        self.running = [self.running[i] for i in keep]
        if self._logits is not None:
            self._logits = self._logits[keep] if keep else None

    def _choose(self, reqs: list[Request], logits: torch.Tensor) -> list[tuple[int, TokenLogprob | None]]:
        """The next token (and its log-prob) of every row: the rows' own pipelines and generators."""
        raw = logits.float()  # (B, V)
        out: list[tuple[int, TokenLogprob | None] | None] = [None] * len(reqs)
        if all(r.pipe.is_plain_greedy for r in reqs):
            toks = raw.argmax(dim=-1).tolist()
        else:
            toks = [0] * len(reqs)
            groups: dict[int, list[int]] = {}  # rows sharing a pipeline that reads no ids run batched
            for i, r in enumerate(reqs):
                if r.pipe.reads_ids:
                    seq = torch.tensor([r.prompt + r.ids], dtype=torch.long, device=raw.device)
                    scores = r.pipe(seq, raw[i:i + 1], len(r.prompt))
                    toks[i] = int(_pick(scores, r.pipe.greedy, r.gen)[0])
                else:
                    groups.setdefault(id(r.pipe), []).append(i)
            for rows in groups.values():
                pipe = reqs[rows[0]].pipe
                scores = pipe(raw.new_zeros((len(rows), 0), dtype=torch.long), raw[rows])
                if pipe.greedy:
                    for j, t in zip(rows, scores.argmax(dim=-1).tolist()):
                        toks[j] = t
                else:  # one draw per row from the row's own generator
                    for k, j in enumerate(rows):
                        toks[j] = int(_pick(scores[k:k + 1], False, reqs[j].gen)[0])
        logp = raw.log_softmax(dim=-1) if any(r.n_logprobs is not None for r in reqs) else None
        for i, r in enumerate(reqs):
            lp = None
            if r.n_logprobs is not None:
                top = logp[i].topk(r.n_logprobs) if r.n_logprobs else None
                alts = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
                lp = TokenLogprob(toks[i], float(logp[i, toks[i]]), alts)
            out[i] = (toks[i], lp)
        return out

    def run(self) -> Iterator[list[Request]]:
        """Step until every request has finished; yields each step's touched requests."""
        while not self.idle:
            yield self.step()


# ---- the classic entry points, all on the engine ----------------------------------------------------

def _requests(prompts: list[list[int]], max_new_tokens: int, pipe: LogitsPipeline, seeds, stops,
              stop_strings, tokenizer, logprobs) -> list[Request]:
    return [Request(p, max_new_tokens, pipe, seed=s, stop_ids=stops, stop_strings=stop_strings,
                    logprobs=logprobs, tokenizer=tokenizer, tag=r)
            for r, (p, s) in enumerate(zip(prompts, seeds))]


def row_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    """Per-row seeds: one int gives row r the seed ``seed + r``; a list gives one per row; None leaves all
    rows on torch's global generator."""
    if seed is None or isinstance(seed, int):
        return [None if seed is None else seed + r for r in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise DodaiError(f"{len(seeds)} seeds for {n} prompts: give one seed per prompt (or one int)")
    return seeds


def stream_steps(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                 pipeline: LogitsPipeline | None = None, seed: int | None = None, num_samples: int = 1,
                 stop_tokens: Sequence[int] = (), logprobs: int | None = None,
                 use_cache: bool = True) -> Iterator[Step]:
    """Yield one :class:`Step` per generated position for ``num_samples`` rows of one prompt (row r seeded
    with ``seed + r``); a row stops after it yields a stop token.

    Arguments are checked now (a DodaiError before any work); the steps come lazily. ``use_cache=False``
    re-runs the whole sequence every step (the slow reference the cache must equal).
    """
    pipe = pipeline or LogitsPipeline()
    ids = check_prompt(model, prompt_ids, max_new_tokens)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise DodaiError(f"the number of samples must be >= 1, got {num_samples!r}")
    engine = Engine(model, DenseBackend(model, use_cache=use_cache))
    for r in _requests([ids] * num_samples, max_new_tokens, pipe, row_seeds(seed, num_samples), stop_tokens, (),
                       None, logprobs):
        engine.add(r)

    def run() -> Iterator[Step]:
        for touched in engine.run():
            got = {r.tag: r for r in touched}
            yield Step([got[r].ids[-1] if r in got else None for r in range(num_samples)],
                       None if logprobs is None else
                       [got[r].logprobs[-1] if r in got else None for r in range(num_samples)])

    return run()


def fill_texts(outs: list[Completion], tokenizer, stop_strings: Sequence[str]) -> None:
    """Set each completion's text: its ids decoded without a final EOS, cut before the first stop string."""
    for c in outs:
        body = c.ids[:-1] if c.finish_reason == "eos" else c.ids
        text = tokenizer.decode(body)
        cut = _find_stop(text, stop_strings) if stop_strings else -1
        c.text = text[:cut] if cut >= 0 else text


def run_requests(model, reqs: list[Request], backend=None, on_step=None) -> list[Completion]:
    """Run ``reqs`` to the end on a fresh engine; completions in the order given. ``on_step()`` is called
    after every step (to stream text with :meth:`Request.take_text`)."""
    engine = Engine(model, backend)
    for r in reqs:
        engine.add(r)
    for _ in engine.run():
        if on_step is not None:
            on_step()
    return [r.completion() for r in reqs]


def complete(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
             pipeline: LogitsPipeline | None = None, seed: int | None = None, num_samples: int = 1,
             eos_id: int | None = None, stop_tokens: Sequence[int] = (), stop_strings: Sequence[str] = (),
             tokenizer=None, logprobs: int | None = None, use_cache: bool = True) -> list[Completion]:
    """Generate ``num_samples`` completions of one prompt (row r seeded with ``seed + r``); text fields need
    ``tokenizer``."""
    pipe = pipeline or LogitsPipeline()
    ids = check_prompt(model, prompt_ids, max_new_tokens)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise DodaiError(f"the number of samples must be >= 1, got {num_samples!r}")
    stops = set(stop_tokens) | ({eos_id} if eos_id is not None else set())
    reqs = _requests([ids] * num_samples, max_new_tokens, pipe, row_seeds(seed, num_samples), stops,
                     list(stop_strings), tokenizer, logprobs)
    return run_requests(model, reqs, DenseBackend(model, use_cache=use_cache))


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
