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

from collections.abc import Callable, Sequence
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

    ``temperature=0`` is greedy. End-of-turn tokens are :func:`dodai.generate.session.stop_ids_for` (the EOS
    plus ChatML's ``<|im_end|>`` and the like). Constraints (one compiled token automaton per pattern) are
    cached, so the allowed-token masks computed in one episode are reused by the next. With ``reuse_prefix``
    the KV cache of the previous call is kept (a session backend of the one decode loop): an agent's prompts
    grow by appending (the scratchpad, the observation, the next message), and episodes share the system
    prompt and the demonstrations, so only the new tail is prefilled. Greedy outputs equal a fresh cache's
    (tested).
    """

    constrains = True  # offers generate_regex under a real token automaton (ReAct steps use it by default)

    def __init__(self, model, tokenizer, temperature: float = 0.0, seed: int | None = None,
                 reuse_prefix: bool = True):
        from dodai.generate.session import chat_template_for, stop_ids_for

        self.model, self.tok = model, tokenizer
        self.temperature, self.seed = float(temperature), seed
        self.template = chat_template_for(tokenizer)
        self.end_ids = stop_ids_for(tokenizer)
        self._constraints: dict[str, object] = {}
        self.reuse_prefix = reuse_prefix
        self._session = None  # the session backend (KV cache + the ids it holds) when reusing prefixes

    def render(self, messages: list[dict]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def count(self, prompt: str) -> int:
        return len(self.tok.encode(prompt))

    def _run(self, prompt: str, max_new_tokens: int, stops: Sequence[str], pipeline,
             deadline: float | None) -> Generation:
        from dodai.generate.engine import DenseBackend, Request, run_requests

        if self.reuse_prefix and self._session is None:
            self._session = DenseBackend(self.model, keep=True)
        backend = self._session if self.reuse_prefix else DenseBackend(self.model)
        req = Request(self.tok.encode(prompt), max_new_tokens, pipeline, seed=self.seed, stop_ids=self.end_ids,
                      stop_strings=list(stops), tokenizer=self.tok, deadline=deadline)
        out = run_requests(self.model, [req], backend)[0]
        return Generation(out.text, len(out.ids), out.finish_reason)

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

    def __init__(self, script: Sequence[Script], honor_stops: bool = True, constrains: bool = False):
        from dodai.chat_template import ChatTemplate
        from dodai.generate.session import CHATML

        self.script = list(script)
        self.honor_stops = honor_stops
        self.constrains = constrains  # True: ReAct policies split each step into a thought and a regex call
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
