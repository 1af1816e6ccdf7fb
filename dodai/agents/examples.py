"""Worked examples (few-shot demonstrations) of tool use, written once and rendered by each protocol.

A small model follows a protocol far better after seeing it done (Brown et al. 2020, few-shot prompting;
Yao et al. 2022 prompt ReAct with hand-written trajectories). An :class:`Example` holds the question, the
calls (thought, tool, arguments) and the final answer; the observations are **computed by calling the real
tool** when the prompt is built, so a demonstration never shows an output format the tool does not produce.
An example whose tools are not all available is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    question: str
    calls: list[tuple[str, str, dict]]  # (thought, tool name, arguments)
    answer: str
    final_thought: str = "I now know the final answer."
    observations: list[str] = field(default_factory=list)  # filled by `resolve`


DEFAULT_EXAMPLES = [
    Example("What is 48 * 365 + 12?",
            [("I need to compute an arithmetic expression exactly.", "calculator", {"expression": "48 * 365 + 12"})],
            "17532"),
    Example("What is the sum of the squares of the whole numbers from 1 to 20?",
            [("A short Python program can add these up.", "python",
              {"code": "print(sum(i * i for i in range(1, 21)))"})],
            "2870"),
]


def resolve(examples: list[Example], tools: dict) -> list[Example]:
    """The examples whose tools all exist, with their observations filled in by running the calls."""
    from dodai.agents.loop import execute

    out = []
    for ex in examples:
        if not all(name in tools for _, name, _ in ex.calls):
            continue
        obs = [execute(tools, name, args) for _, name, args in ex.calls]
        out.append(Example(ex.question, ex.calls, ex.answer, ex.final_thought, obs))
    return out
