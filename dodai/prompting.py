"""Prompt engineering (R7.2): templates with named fields, few-shot assembly, chain-of-thought.

* :class:`PromptTemplate` — ``"Convert {text} to JSON."`` with named fields; a missing or unknown field
  is a :class:`DodaiError` (a silent empty slot is the classic prompt bug). ``{{`` / ``}}`` are literal braces.
* :func:`select_shots` — k demonstrations chosen deterministically from a pool (a seeded shuffle, so
  the same seed gives the same shots; the query itself is never one of them).
* :func:`few_shot_messages` / :func:`few_shot_text` — the shots as alternating user/assistant chat turns
  (rendered later by the model's chat template) or as one plain-text prompt ("Input: … Output: …").
  Few-shot prompting as in Brown et al. 2020, "Language Models are Few-Shot Learners".
* :func:`cot_instruction` / :func:`extract_answer` — chain-of-thought prompting (Wei et al. 2022;
  zero-shot "Let's think step by step", Kojima et al. 2022): the model reasons first and writes the
  answer after a marker line; the answer is the text after the *last* marker.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from dodai.errors import DodaiError

COT_MARKER = "Answer:"


class PromptTemplate:
    """A text template with ``{name}`` fields (Python format syntax without conversions or specs)."""

    def __init__(self, source: str):
        if not isinstance(source, str):
            raise DodaiError(f"a prompt template must be text, got {type(source).__name__}")
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as e:
            raise DodaiError(f"prompt template is malformed: {e}") from None
        for _, name, spec, conv in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise DodaiError(f"prompt template field {{{name}}} is not a plain name "
                                 "(use {{ and }} for literal braces)")
            if spec or conv:
                raise DodaiError(f"prompt template field {{{name}}} may not have a format spec or conversion")
            if name not in fields:
                fields.append(name)
        self.source = source
        self.fields: tuple[str, ...] = tuple(fields)

    def render(self, **values) -> str:
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise DodaiError(f"prompt template is missing field(s): {', '.join(missing)}")
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise DodaiError(f"prompt template has no field(s): {', '.join(unknown)} "
                             f"(fields: {', '.join(self.fields) or 'none'})")
        return self.source.format(**{k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class Shot:
    """One demonstration: an input and its ideal output."""

    input: str
    output: str


def select_shots(pool: Sequence[Shot], k: int, seed: int = 0, exclude: str | None = None) -> list[Shot]:
    """``k`` distinct shots from ``pool``, chosen by a seeded shuffle (deterministic; pool order matters).
    A shot whose input equals ``exclude`` (the query) is never chosen."""
    if k < 0:
        raise DodaiError(f"number of shots must be >= 0, got {k}")
    cands = [s for s in pool if s.input != exclude]
    if k > len(cands):
        raise DodaiError(f"asked for {k} shots but the pool has only {len(cands)} usable examples")
    idx = list(range(len(cands)))
    random.Random(seed).shuffle(idx)
    return [cands[i] for i in sorted(idx[:k])]


def few_shot_messages(query: str, shots: Sequence[Shot], system: str | None = None) -> list[dict]:
    """Chat turns: [system], then user/assistant per shot, then the query as the last user turn."""
    msgs = [{"role": "system", "content": system}] if system else []
    for s in shots:
        msgs += [{"role": "user", "content": s.input}, {"role": "assistant", "content": s.output}]
    msgs.append({"role": "user", "content": query})
    return msgs


def few_shot_text(query: str, shots: Sequence[Shot], instruction: str = "",
                  template: PromptTemplate | None = None) -> str:
    """One plain-text prompt: the instruction, each shot through ``template`` (fields ``input`` and
    ``output``), then the query with an empty output slot for the model to fill."""
    t = template or PromptTemplate("Input: {input}\nOutput: {output}")
    if set(t.fields) != {"input", "output"} or not t.source.rstrip().endswith("{output}"):
        raise DodaiError("a few-shot template needs fields {input} and {output}, with {output} last")
    parts = [instruction.strip()] if instruction.strip() else []
    parts += [t.render(input=s.input, output=s.output) for s in shots]
    parts.append(t.render(input=query, output="").rstrip(" "))
    return "\n\n".join(parts)


def cot_instruction(task: str, marker: str = COT_MARKER) -> str:
    """The task plus a chain-of-thought instruction: reason step by step, then the answer after ``marker``."""
    if not marker.strip():
        raise DodaiError("the answer marker must not be empty")
    return f"{task.strip()}\nThink step by step. Then write the final answer on its own line starting with " \
           f"'{marker}'."


def extract_answer(reply: str, marker: str = COT_MARKER) -> str | None:
    """The text after the last ``marker`` (to the end of that line, stripped); None if there is no marker."""
    if not marker:
        raise DodaiError("the answer marker must not be empty")
    i = reply.rfind(marker)
    if i < 0:
        return None
    return reply[i + len(marker):].split("\n", 1)[0].strip()
