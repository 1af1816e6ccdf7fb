"""Issue 21's agent changes: the ReAct step grammar (only registered tools, typed arguments, Final Answer left
out when a call is required), a constrained step split into a free thought and a regex call, demonstrations
chosen per question, and the answer taken from the last observation when the model only restates the question."""

from __future__ import annotations

import pytest

from dodai.agents import make_policy
from dodai.agents.examples import Example, select, similarity
from dodai.agents.lm import ScriptedLM
from dodai.agents.loop import Limits, observation_value, restates, run_agent
from dodai.agents.react import step_regex
from dodai.generate.constrained import RegexDFA
from dodai.tools.calculator import calculator_tool
from dodai.tools.sql import demo_database, sql_tool


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    db = demo_database(tmp_path_factory.mktemp("db") / "demo.db")
    return {"calculator": calculator_tool(), "sql": sql_tool(db)}


def test_step_grammar(tools):
    dfa = RegexDFA(step_regex(tools))
    assert dfa.fullmatch('\nAction: calculator\nAction Input: {"expression":"4821 * 377 + 15"}')
    assert dfa.fullmatch('\nAction: sql\nAction Input: {"query":"SELECT COUNT(*) FROM modules"}')
    assert dfa.fullmatch("\nFinal Answer: 1817532")
    assert not dfa.fullmatch('\nAction: python\nAction Input: {"code":"print(1)"}')  # not registered
    assert not dfa.fullmatch('\nAction: calculator\nAction Input: {"query":"1+1"}')  # wrong argument
    assert not dfa.fullmatch('\nAction: calculator\nAction Input: 1+1')  # not JSON
    assert not dfa.fullmatch("\nAction: calculator")  # no Action Input
    assert not dfa.fullmatch("\nFinal Answer: ")  # empty answer
    required = RegexDFA(step_regex(tools, allow_final=False))
    assert not required.fullmatch("\nFinal Answer: 5")
    assert required.fullmatch('\nAction: calculator\nAction Input: {"expression":"2+3"}')


class SpyLM(ScriptedLM):
    def __init__(self, script):
        super().__init__(script, constrains=True)
        self.patterns = []

    def generate_regex(self, prompt, pattern, max_new_tokens, deadline=None):
        self.patterns.append(pattern)
        return super().generate_regex(prompt, pattern, max_new_tokens, deadline)


def test_constrained_react_step_and_answer_from_observation(tools):
    lm = SpyLM([" I should use the calculator.\n", '\nAction: calculator\nAction Input: {"expression":"2 + 3"}',
                " I now know the final answer.\n", "\nFinal Answer: 2 + 3"])
    policy = make_policy("react", tools, examples=[], force_call=True)
    res = run_agent(policy, lm, tools, "What is 2 + 3?", Limits(max_steps=3))
    assert [s.kind for s in res.steps] == ["call", "final"]
    assert res.steps[0].action == "calculator" and res.steps[0].observation == "5"
    assert "Final Answer" not in lm.patterns[0] and "Final Answer" in lm.patterns[1]  # a call was required first
    assert res.answer == "5" and res.answer_source == "observation"  # "2 + 3" only restated the question
    # the thought generation stops at the end of its line; the regex part follows it in the prompt
    assert lm.prompts[1].endswith("Thought: I should use the calculator.")


def test_answer_kept_when_the_model_says_something_new(tools):
    lm = ScriptedLM([' Use it.\nAction: calculator\nAction Input: {"expression": "2 + 3"}\n',
                     " Done.\nFinal Answer: The answer is 6"])
    res = run_agent(make_policy("react", tools, examples=[]), lm, tools, "What is 2 + 3?", Limits(max_steps=3))
    assert res.answer == "The answer is 6" and res.answer_source == "model"  # wrong, but the model's own


def test_restates_and_observation_value():
    q = "What is 4821 * 377 + 15?"
    assert restates("4821 * 377 + 15", q) and restates("The answer is 4821*377+15.", q) and restates("", q)
    assert not restates("1817532", q) and not restates("about 1.8 million", q)
    assert observation_value("1817532") == "1817532"
    assert observation_value("n_functions\n6\n(1 row)") == "6"
    assert observation_value("name | n\nos | 3\n(1 row)") is None  # two columns
    assert observation_value("name\nos\nre\n(2 rows)") is None
    assert observation_value("Error: division by zero") is None and observation_value(None) is None
    assert observation_value("[1] a\n[2] b") is None


def test_select_most_similar_last():
    pool = [Example("What is 48 * 365?", [], "1"), Example("How many classes does 'x' define in the database?", [],
                                                             "2"),
            Example("Search the documents: who was the leader?", [], "3")]
    got = select(pool, "What is 4821 * 377 + 15?", 2)
    assert len(got) == 2 and got[-1].question == "What is 48 * 365?"
    got = select(pool, "How many modules are in the database?", 1)
    assert [e.answer for e in got] == ["2"]
    assert similarity("What is 1 + 2?", "What is 30 * 4?") == 1.0  # numbers and operators are one symbol each
    assert select(pool, "anything", None)[0] in pool and len(select(pool, "anything", None)) == 3


def test_example_answer_from_the_tool(tools):
    from dodai.agents.examples import resolve

    ex = Example("How many classes does 'fractions' define?",
                 [("sql", "sql", {"query": "SELECT n_classes FROM modules WHERE name = 'fractions'"})], None)
    (got,) = resolve([ex], tools)
    assert got.answer == observation_value(got.observations[0]) and got.answer.isdigit()
