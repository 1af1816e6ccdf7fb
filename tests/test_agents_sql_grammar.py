"""The sql tool's query grammar for agents (a SELECT subset over the database's own tables and columns), the
answer read from an observation the model only copied, and the R7.3 dev task set's expected answers."""

from __future__ import annotations

import sqlite3

import pytest

from dodai.agents import make_policy
from dodai.agents.fncall import call_regex
from dodai.agents.lm import ScriptedLM
from dodai.agents.loop import Limits, run_agent
from dodai.agents.react import step_regex
from dodai.agents.sql_grammar import query_regex, read_schema
from dodai.errors import DodaiError
from dodai.generate.constrained import RegexDFA
from dodai.tools.calculator import calculator_tool
from dodai.tools.sql import demo_database, sql_tool


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return demo_database(tmp_path_factory.mktemp("db") / "demo.db")


@pytest.fixture(scope="module")
def tools(db):
    return {"calculator": calculator_tool(), "sql": sql_tool(db)}


def test_schema_and_query_grammar(db):
    schema = read_schema(db)
    assert schema["modules"][:3] == ["name", "n_functions", "n_classes"] and "kind" in schema["functions"]
    dfa = RegexDFA(query_regex(schema))
    for q in ["SELECT COUNT(*) FROM modules WHERE n_classes = 0", "SELECT name FROM modules ORDER BY n_functions "
              "DESC LIMIT 1", "SELECT SUM(n_classes) FROM modules", "SELECT n_functions FROM modules WHERE name = "
              "'heapq'", "SELECT name, kind FROM functions WHERE module = 'json' AND n_params > 2"]:
        assert dfa.fullmatch(q), q
    for q in ["SELECT n_classes FROM classes", "SELECT func_name FROM functions", "DELETE FROM modules",
              "SELECT kind FROM modules", 'SELECT name FROM modules WHERE name = "x"', "select name from modules",
              "SELECT name FROM modules WHERE name = 'a\\'b'"]:
        assert not dfa.fullmatch(q), q
    with pytest.raises(DodaiError):
        query_regex({"bad name": ["x"]})


def test_call_and_step_grammars_hold_the_query(tools):
    call = RegexDFA(call_regex(tools))
    assert call.fullmatch('{"name":"sql","arguments":{"query":"SELECT COUNT(*) FROM modules"}}')
    assert not call.fullmatch('{"name":"sql","arguments":{"query":"SELECT * FROM nowhere"}}')
    assert call.fullmatch('{"name":"calculator","arguments":{"expression":"2+3"}}')
    free = RegexDFA(call_regex(tools, sql_grammar=False))  # the plain string argument, when asked
    assert free.fullmatch('{"name":"sql","arguments":{"query":"SELECT * FROM nowhere"}}')
    step = RegexDFA(step_regex(tools))
    assert step.fullmatch('\nAction: sql\nAction Input: {"query":"SELECT AVG(n_functions) FROM modules"}')
    assert not step.fullmatch('\nAction: sql\nAction Input: {"query":"WITH x AS (SELECT 1) SELECT * FROM x"}')


def test_schema_of_a_missing_database_is_a_one_line_error(tmp_path):
    with pytest.raises(DodaiError, match="no database file"):
        read_schema(tmp_path / "nope.db")


def test_sql_description_shows_a_sample_row(tools, db):
    d = tools["sql"].description
    con = sqlite3.connect(db)
    first = con.execute("SELECT name FROM modules LIMIT 1").fetchone()[0]
    con.close()
    assert "modules(" in d and "a row: ('" + first + "'" in d


def test_answer_from_a_copied_table(tools):
    """fncall: the model copies the tool's table as its answer; the single value is read from it."""
    lm = ScriptedLM(["<tool_call>", '{"name":"sql","arguments":{"query":"SELECT n_functions FROM modules WHERE '
                                    "name = 'heapq'\"}}", "n_functions: 8\n(1 row)"])
    q = "How many functions does the module 'heapq' have in the database?"
    res = run_agent(make_policy("fncall", tools, examples=[]), lm, tools, q, Limits(max_steps=3))
    value = res.steps[0].observation.splitlines()[1]
    assert res.answer == value and res.answer_source == "observation"
    lm = ScriptedLM(["<tool_call>", '{"name":"sql","arguments":{"query":"SELECT n_functions FROM modules WHERE '
                                    "name = 'heapq'\"}}", "about 12"])
    res = run_agent(make_policy("fncall", tools, examples=[]), lm, tools, q, Limits(max_steps=3))
    assert res.answer == "about 12" and res.answer_source == "model"  # says something new: kept, even if wrong


def test_dev_tasks_expected_answers(db):
    from dodai.experiments.r7_3 import heldout_tasks, is_correct, make_tasks

    tasks = make_tasks(db, 2, 12, seed=3)
    assert len({t.question for t in tasks}) == len(tasks) and {t.kind for t in tasks} >= {"product", "sum", "sql"}
    held = {t.question for t in heldout_tasks(db)}
    assert not held & {t.question for t in tasks}  # the dev set never asks a held-out question
    con = sqlite3.connect(db)
    for t in tasks:
        if t.question.startswith("How many modules in the database have more than"):
            k = int(t.question.split("more than ")[1].split()[0])
            col = "n_functions" if "functions" in t.question else "n_classes"
            assert t.answer == con.execute(f"SELECT COUNT(*) FROM modules WHERE {col} > ?", (k,)).fetchone()[0]
        if t.question.startswith("What is the total number of classes"):
            assert t.answer == con.execute("SELECT SUM(n_classes) FROM modules").fetchone()[0]
    con.close()
    assert is_correct("It is math.", "math") and not is_correct("mathematics", "math")
    assert not is_correct("regular", "re") and is_correct("the module re", "re")


def test_sql_hints_only_with_an_sql_tool(tools):
    from dodai.agents.sql_grammar import HINTS

    for mode in ("react", "fncall"):
        assert HINTS in make_policy(mode, tools, examples=[]).system_prompt()
        assert HINTS not in make_policy(mode, {"calculator": tools["calculator"]}, examples=[]).system_prompt()
