"""`dodai tool list` / `dodai tool run`: results on stdout, one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from dodai.cli import main
from dodai.tools.sql import demo_database


def test_list(capsys):
    assert main(["tool", "list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["calculator", "python", "sql", "search"]
    assert main(["tool", "list", "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert [s["function"]["name"] for s in specs] == names
    assert specs[0]["function"]["parameters"]["required"] == ["expression"]


def test_run_calculator_and_sql(capsys, tmp_path):
    assert main(["tool", "run", "calculator", "--args", '{"expression": "2**100 / 3"}']) == 0
    assert capsys.readouterr().out.startswith("1267650600228229401496703205376/3 ≈ ")
    db = demo_database(tmp_path / "d.db")
    query = '{"query": "SELECT count(*) AS n FROM modules"}'
    assert main(["tool", "run", "sql", "--db", str(db), "--args", query]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "n"


def test_run_python(capsys):
    assert main(["tool", "run", "python", "--timeout", "3", "--args", '{"code": "print(6 * 7)"}']) == 0
    assert capsys.readouterr().out.strip() == "42"


@pytest.mark.parametrize("argv,msg", [
    (["tool", "run", "calculator", "--args", '{"expression": "9**9**9"}'], "digits"),
    (["tool", "run", "calculator", "--args", "{not json"], "not valid JSON"),
    (["tool", "run", "calculator", "--args", "[1, 2]"], "JSON object"),
    (["tool", "run", "nope", "--args", "{}"], "unknown tool"),
    (["tool", "run", "calculator", "--args", '{"expr": "1"}'], "missing required"),
    (["tool", "run", "sql", "--db", "/nonexistent/x.db", "--args", '{"query": "SELECT 1"}'], "SQLite"),
])
def test_errors_are_one_line_exit_2(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dodai: error: ") and msg in err and err.count("\n") == 1


def test_default_tools_registry(tmp_path):
    from dodai.errors import DodaiError
    from dodai.rag.chunk import chunk_documents
    from dodai.rag.index import RagIndex
    from dodai.tools import TOOL_NAMES, default_tools

    db = demo_database(tmp_path / "d.db")
    index = RagIndex(chunk_documents(["alpha beta", "gamma delta"], 100, 0), None, ["a", "g"])
    tools = default_tools(TOOL_NAMES, db_path=db, index=index, timeout_s=2.0, memory_mb=128)
    assert list(tools) == list(TOOL_NAMES) and all(t.name == n for n, t in tools.items())
    assert tools["python"].meta["timeout_s"] == 2.0 and tools["sql"].meta["db_path"] == str(db)
    assert tools["search"].call({"query": "gamma"}).startswith("[1] g (doc 1")
    assert list(default_tools("sql, calculator", db_path=db)) == ["sql", "calculator"]
    with pytest.raises(DodaiError, match="unknown tool"):
        default_tools(["calculator", "shell"])
