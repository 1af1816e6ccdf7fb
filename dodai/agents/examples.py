"""Worked examples (few-shot demonstrations) of tool use, written once and rendered by each protocol.

A small model follows a protocol far better after seeing it done (Brown et al. 2020, few-shot prompting;
Yao et al. 2022 prompt ReAct with hand-written trajectories). An :class:`Example` holds the question, the
calls (thought, tool, arguments) and the final answer; the observations are **computed by calling the real
tool** when the prompt is built, so a demonstration never shows an output format the tool does not produce.
An example whose tools are not all available is left out.

**Which examples** (:func:`select`): a small model copies its demonstrations — the last one most (recency) — so
a fixed set that ends with a search demonstration makes it search for an arithmetic question. Each question
therefore gets the ``n`` demonstrations most similar to it (the in-context example selection of Liu et al. 2022,
"What Makes Good In-Context Examples for GPT-3?", with word overlap instead of an encoder: the Jaccard index
of the two questions' word sets, numbers and operators each mapped to one symbol), the most similar placed
last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Example:
    question: str
    calls: list[tuple[str, str, dict]]  # (thought, tool name, arguments)
    answer: str | None  # None: the value of the last observation (:func:`dodai.agents.loop.observation_value`)
    final_thought: str = "I now know the final answer."
    observations: list[str] = field(default_factory=list)  # filled by `resolve`


def _sql(question: str, thought: str, query: str) -> Example:
    # the answer is the tool's value (the demo database depends on the Python version)
    return Example(question, [(thought, "sql", {"query": query})], None)


# SQL demonstrations over the demo database (:func:`dodai.tools.sql.demo_database`), one per query shape a
# question about a table needs: a lookup by a text column, a count with a condition (COUNT), the row with the
# largest or smallest value (ORDER BY … LIMIT 1), a total and an average (SUM, AVG).
SQL_EXAMPLES = [
    _sql("How many classes does the module 'fractions' define in the database?",
         "'The module fractions' is the row WHERE name = 'fractions' of the modules table; I select n_classes.",
         "SELECT n_classes FROM modules WHERE name = 'fractions'"),
    _sql("How many functions does the module 'bisect' have in the database?",
         "'The module bisect' is the row WHERE name = 'bisect' of the modules table; I select n_functions.",
         "SELECT n_functions FROM modules WHERE name = 'bisect'"),
    _sql("How many modules in the database have at least 10 classes?",
         "'How many modules' is COUNT(*) and 'at least 10 classes' is WHERE n_classes >= 10.",
         "SELECT COUNT(*) FROM modules WHERE n_classes >= 10"),
    _sql("How many modules in the database have exactly 2 classes?",
         "'How many modules' is COUNT(*) and 'exactly 2 classes' is WHERE n_classes = 2.",
         "SELECT COUNT(*) FROM modules WHERE n_classes = 2"),
    _sql("Which module in the database has the shortest documentation?",
         "'Which module' is name; 'the shortest' or 'the fewest' is the smallest value first: "
         "ORDER BY doc_chars ASC LIMIT 1.",
         "SELECT name FROM modules ORDER BY doc_chars ASC LIMIT 1"),
    _sql("Which module in the database has the longest documentation?",
         "'Which module' is name; 'the longest' or 'the most' is the largest value first: "
         "ORDER BY doc_chars DESC LIMIT 1.",
         "SELECT name FROM modules ORDER BY doc_chars DESC LIMIT 1"),
    _sql("What is the total length of the documentation of all modules in the database?",
         "'The total length of the documentation' is SUM(doc_chars) over the modules table.",
         "SELECT SUM(doc_chars) FROM modules"),
    _sql("What is the average number of functions per module in the database?",
         "'The average number of functions' is AVG(n_functions) over the modules table.",
         "SELECT AVG(n_functions) FROM modules"),
    _sql("What is the summary of the module 'csv' in the database?",
         "'The module csv' is the row WHERE name = 'csv' of the modules table; I select summary.",
         "SELECT summary FROM modules WHERE name = 'csv'"),
]

DEFAULT_EXAMPLES = [
    Example("What is 48 * 365 + 12?",
            [("I need to compute an arithmetic expression exactly.", "calculator", {"expression": "48 * 365 + 12"})],
            "17532"),
    Example("What is the sum of the squares of the whole numbers from 1 to 20?",
            [("A short Python program can add these up.", "python",
              {"code": "print(sum(i * i for i in range(1, 21)))"})],
            "2870"),
    *SQL_EXAMPLES,
]


_TOKEN = re.compile(r"\d[\d,.]*|[a-z]+|[-+*/^%]", re.IGNORECASE)


def _features(text: str) -> set[str]:
    out = set()
    for t in _TOKEN.findall(text.lower()):
        out.add("<num>" if t[0].isdigit() else "<op>" if t in "-+*/^%" else t)
    return out


def similarity(a: str, b: str) -> float:
    """Jaccard index of the two texts' word sets (numbers → ``<num>``, operators → ``<op>``)."""
    fa, fb = _features(a), _features(b)
    return len(fa & fb) / len(fa | fb) if fa | fb else 0.0


def select(examples: list[Example], question: str, n: int | None) -> list[Example]:
    """The ``n`` examples most similar to ``question`` (all when ``n`` is None), least similar first; ties keep
    the given order."""
    if n is None or n >= len(examples):
        ranked = list(examples)
    else:
        order = sorted(range(len(examples)), key=lambda i: (-similarity(examples[i].question, question), i))
        ranked = [examples[i] for i in sorted(order[:n])]
    return sorted(ranked, key=lambda ex: similarity(ex.question, question))


def resolve(examples: list[Example], tools: dict) -> list[Example]:
    """The examples whose tools all exist, with their observations filled in by running the calls."""
    from dodai.agents.loop import execute, observation_value

    out = []
    for ex in examples:
        if not all(name in tools for _, name, _ in ex.calls):
            continue
        obs = [execute(tools, name, args) for _, name, args in ex.calls]
        answer = ex.answer if ex.answer is not None else observation_value(obs[-1] if obs else None)
        if answer is None:
            continue  # the tool gave no single value here (another database): leave the example out
        out.append(Example(ex.question, ex.calls, answer, ex.final_thought, obs))
    return out
