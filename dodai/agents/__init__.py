"""Agents (roadmap R7.3): a model that acts through tools, in a loop with limits and a trace.

* :mod:`dodai.agents.loop` — the shared loop (step / token / wall-clock limits, repeated-call detection,
  stop reasons), step records and JSONL traces;
* :mod:`dodai.agents.react` — ReAct's Thought / Action / Action Input / Observation text protocol;
* :mod:`dodai.agents.fncall` — function calling with the call JSON under constrained decoding;
* :mod:`dodai.agents.lm` — the model side: a real dodai LM, or a scripted fake for tests;
* :mod:`dodai.agents.examples` — few-shot demonstrations rendered by either protocol.
"""

from __future__ import annotations


def make_policy(mode: str, tools: dict, examples=None, instructions: str = "", **kw):
    """``"react"`` → :class:`~dodai.agents.react.ReActPolicy`;
    ``"fncall"`` → :class:`~dodai.agents.fncall.FnCallPolicy`.
    """
    from dodai.errors import DodaiError

    if mode == "react":
        from dodai.agents.react import ReActPolicy

        return ReActPolicy(tools, examples, instructions, **kw)
    if mode == "fncall":
        from dodai.agents.fncall import FnCallPolicy

        return FnCallPolicy(tools, examples, instructions, **kw)
    raise DodaiError(f"unknown agent mode {mode!r} (react or fncall)")
