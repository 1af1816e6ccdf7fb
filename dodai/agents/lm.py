"""The language-model side of an agent: what the loop asks of a model, a real one and a scripted one.

An agent policy needs four things from its model: render a chat (the model's own template), count the
tokens of a prompt, continue a prompt freely until a stop string / end token / token budget / deadline, and
continue a prompt under a regular-expression constraint (:mod:`dodai.generate.constrained`).
:class:`ModelLM` does this for any dodai causal LM + tokenizer (greedy by default, so episodes are
reproducible); :class:`ScriptedLM` returns outputs a test scripted in advance, so the loop's logic (limits,
parsing, hostile outputs) is tested deterministically without a model.

Conventions: a :class:`Generation`'s ``text`` is cut *before* the first stop string (the stop string is not
part of it), ``finish`` is ``"stop"`` (a stop string), ``"eos"`` (an end-of-turn token), ``"length"``
(``max_new_tokens``) or ``"deadline"`` (the wall clock ran out mid-generation); ``new_tokens`` counts every
token generated, including the one that completed a stop string.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from dodai.errors import DodaiError


@dataclass
class Generation:
    text: str
    new_tokens: int
    finish: str  # "stop" | "eos" | "length" | "deadline"


def _first_stop(text: str, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


class ModelLM:
    """A dodai causal LM and its tokenizer behind the agent protocol.

    ``temperature=0`` is greedy. End-of-turn tokens are the tokenizer's EOS plus ChatML's ``<|im_end|>`` /
    ``<|endoftext|>`` when the vocabulary has them. Constraints (one compiled token automaton per pattern) are
    cached, so the allowed-token masks computed in one episode are reused by the next.
    """

    def __init__(self, model, tokenizer, temperature: float = 0.0, seed: int | None = None,
                 reuse_prefix: bool = True):
        from dodai.chat_template import ChatTemplate
        from dodai.commands.chat import CHATML, STOP_TOKENS

        self.model, self.tok = model, tokenizer
        self.temperature, self.seed = float(temperature), seed
        specials = dict(getattr(tokenizer, "special_tokens", {}) or {})
        by_id = {i: s for s, i in specials.items()}
        names = {"bos_token": by_id.get(getattr(tokenizer, "bos_id", None), ""),
                 "eos_token": by_id.get(getattr(tokenizer, "eos_id", None), "")}
        self.template = ChatTemplate(getattr(tokenizer, "chat_template", None) or CHATML, names)
        self.end_ids = {specials[s] for s in STOP_TOKENS if s in specials}
        if getattr(tokenizer, "eos_id", None) is not None:
            self.end_ids.add(tokenizer.eos_id)
        self._constraints: dict[str, object] = {}
        self.reuse_prefix = reuse_prefix
        self._cache, self._held = None, []  # the KV cache of the last call and the token ids it holds
        import inspect

        takes = inspect.signature(model.forward).parameters
        self._last_only = {"last_only": True} if "last_only" in takes else {}

    def render(self, messages: list[dict]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def count(self, prompt: str) -> int:
        return len(self.tok.encode(prompt))

    def _run(self, prompt: str, max_new_tokens: int, stops: Sequence[str], pipeline,
             deadline: float | None) -> Generation:
        ids = self.tok.encode(prompt)
        out: list[int] = []
        finish = "length"
        steps = self._steps_cached(ids, max_new_tokens, pipeline) if self.reuse_prefix else \
            self._steps_plain(ids, max_new_tokens, pipeline)
        for tok in steps:
            if tok in self.end_ids:
                finish = "eos"
                break
            out.append(tok)
            if stops and _first_stop(self.tok.decode(out), stops) >= 0:
                finish = "stop"
                break
            if deadline is not None and time.monotonic() > deadline:
                finish = "deadline"
                break
        n = len(out) + (finish == "eos")
        text = self.tok.decode(out)
        cut = _first_stop(text, stops) if stops else -1
        return Generation(text[:cut] if cut >= 0 else text, n, finish)

    def _steps_plain(self, ids: list[int], max_new_tokens: int, pipeline) -> Iterator[int]:
        """The reference: dodai's engine, a fresh KV cache per call (the whole prompt is prefilled)."""
        from dodai.generate.engine import stream_steps

        for st in stream_steps(self.model, ids, max_new_tokens, pipeline, seed=self.seed,
                               stop_tokens=sorted(self.end_ids)):
            yield st.tokens[0]

    def _steps_cached(self, ids: list[int], max_new_tokens: int, pipeline) -> Iterator[int]:
        """Like :meth:`_steps_plain`, but the KV cache of the previous call is kept and its longest common
        token prefix with ``ids`` is reused: an agent's prompts grow by appending (the scratchpad, the
        observation, the next message), and episodes share the system prompt and the demonstrations, so only
        the new tail is prefilled. Greedy outputs equal the reference's (tested)."""
        import torch

        from dodai.generate.engine import _pick
        from dodai.generate.sampling import _check, _device, _generator

        ids = _check(self.model, ids, max_new_tokens, pipeline.temperature, pipeline.top_k, pipeline.top_p)
        need = len(ids) + max_new_tokens
        cache, held = self._cache, self._held
        if cache is None or cache.max_len < need:
            cap = min(max(need, 2 * (cache.max_len if cache is not None else 1024)), self.model.config.block_size)
            cache, held = self.model.new_cache(1, cap), []
            if cache is None:  # a model without a KV cache: nothing to reuse
                yield from self._steps_plain(ids, max_new_tokens, pipeline)
                return
        common = 0
        for a, b in zip(held, ids[:-1]):  # keep at least one prompt token to feed: its logits start decoding
            if a != b:
                break
            common += 1
        cache.reset()
        cache.pos = common
        self._cache, self._held = cache, ids[:common]  # what the cache holds if we stop early
        device = _device(self.model)
        gen = _generator(self.seed, device)
        seq = list(ids)
        x = ids[common:]
        was_training = self.model.training
        self.model.eval()
        try:
            for _ in range(max_new_tokens):
                with torch.inference_mode():
                    logits, _ = self.model(torch.tensor([x], device=device), cache=cache, **self._last_only)
                    self._held = seq[:cache.pos]
                    raw = logits[:, -1, :].float()  # (1, V)
                    nxt = int(_pick(pipeline(torch.tensor([seq], device=device), raw, len(ids)),
                                    pipeline.greedy, gen)[0])
                yield nxt
                seq.append(nxt)
                x = [nxt]
        finally:
            self.model.train(was_training)

    def generate(self, prompt: str, max_new_tokens: int, stop: Sequence[str] = (),
                 deadline: float | None = None) -> Generation:
        """Continue ``prompt`` until a stop string, an end-of-turn token, ``max_new_tokens`` or ``deadline``."""
        from dodai.generate.processors import LogitsPipeline

        return self._run(prompt, max_new_tokens, list(stop), LogitsPipeline(temperature=self.temperature),
                         deadline)

    def generate_regex(self, prompt: str, pattern: str, max_new_tokens: int,
                       deadline: float | None = None) -> Generation:
        """Continue ``prompt`` with text that matches ``pattern`` (complete iff ``finish == "eos"``)."""
        from dodai.generate.constrained import ConstrainedPipeline, TokenConstraint

        c = self._constraints.get(pattern)
        if c is None:
            vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
            c = self._constraints[pattern] = TokenConstraint(pattern, self.tok, vocab)
        if getattr(self.tok, "eos_id", None) is None:
            raise DodaiError("constrained decoding needs a tokenizer with an EOS token")
        pipe = ConstrainedPipeline(temperature=self.temperature, constraint=c)
        return self._run(prompt, max_new_tokens, (), pipe, deadline)


Script = str | Callable[[str], str]


class ScriptedLM:
    """A fake model whose replies are scripted: each ``generate`` / ``generate_regex`` call takes the next item
    (a string, or a function of the prompt returning one). Tokens are characters: ``max_new_tokens`` cuts the
    reply to that many characters and ``new_tokens`` is its length. With ``honor_stops=False`` the stop strings
    are ignored, like a hostile or broken server, so the parsers' own defences get tested. Running out of
    script is a DodaiError (the loop reports it as stop reason ``error``).
    """

    def __init__(self, script: Sequence[Script], honor_stops: bool = True):
        from dodai.chat_template import ChatTemplate
        from dodai.commands.chat import CHATML

        self.script = list(script)
        self.honor_stops = honor_stops
        self.prompts: list[str] = []  # every prompt it was given, for tests to inspect
        self.template = ChatTemplate(CHATML)

    def render(self, messages: list[dict]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def count(self, prompt: str) -> int:
        return len(prompt)

    def _next(self, prompt: str, max_new_tokens: int, stops: Sequence[str]) -> Generation:
        if not self.script:
            raise DodaiError("the scripted model ran out of replies")
        item = self.script.pop(0)
        self.prompts.append(prompt)
        text = item(prompt) if callable(item) else item
        finish = "eos"
        if self.honor_stops and stops:
            cut = _first_stop(text, stops)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        if len(text) > max_new_tokens:
            text, finish = text[:max_new_tokens], "length"
        return Generation(text, len(text), finish)

    def generate(self, prompt: str, max_new_tokens: int, stop: Sequence[str] = (),
                 deadline: float | None = None) -> Generation:
        return self._next(prompt, max_new_tokens, stop)

    def generate_regex(self, prompt: str, pattern: str, max_new_tokens: int,
                       deadline: float | None = None) -> Generation:
        return self._next(prompt, max_new_tokens, ())
