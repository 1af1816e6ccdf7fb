"""The read-only SQL tool: every red-team attack refused or bounded, the database file never changes."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tools.base import ToolError
from dodai.tools.redteam import SQL, SQL_OK, Harness
from dodai.tools.sql import DEMO_MODULES, check_query, demo_database, open_readonly, run_query, sql_tool


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("sql-redteam"), n_docs=50)


@pytest.mark.parametrize("case", SQL + SQL_OK, ids=lambda c: f"{c.expect}-{c.name}")
def test_redteam_case(harness, case):
    before = _sha(harness.db)
    out = harness.run(case)
    assert out.passed, out.why
    assert _sha(harness.db) == before
    assert not list(harness.outside.iterdir())


def test_demo_database_contents(harness):
    with sqlite3.connect(harness.db) as conn:
        mods = dict(conn.execute("SELECT name, n_functions FROM modules").fetchall())
        assert set(mods) == set(DEMO_MODULES)
        # facts from the stdlib itself
        kind = conn.execute("SELECT kind FROM functions WHERE module='json' AND name='dumps'").fetchone()
        assert kind == ("function",)
        assert conn.execute("SELECT kind FROM functions WHERE module='fractions' AND name='Fraction'").fetchone() \
            == ("class",)
        n_json = conn.execute("SELECT count(*) FROM functions WHERE module='json' AND kind='function'").fetchone()[0]
        assert n_json == mods["json"] >= 4


def test_demo_database_is_deterministic(tmp_path):
    a, b = demo_database(tmp_path / "a.db"), demo_database(tmp_path / "b.db")
    dump = [list(sqlite3.connect(p).iterdump()) for p in (a, b)]
    assert dump[0] == dump[1] and len(dump[0]) > 100
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_row_cap_and_table_format(harness):
    tool = sql_tool(harness.db, max_rows=5)
    out = tool.call({"query": "SELECT name, n_functions FROM modules ORDER BY name"})
    lines = out.splitlines()
    assert lines[0] == "name | n_functions" and len(lines) == 1 + 5 + 1
    assert lines[-1] == "(5 rows; more rows exist, only the first 5 are shown)"
    assert tool.call({"query": "SELECT NULL AS a, x'00ff' AS b, 1.5 AS c, 'p|q' AS d"}).splitlines()[1] == \
        "NULL | <blob 2 bytes> | 1.5 | p\\|q"


def test_step_bound_stops_runaway_queries_fast(harness):
    conn = open_readonly(harness.db)
    try:
        with pytest.raises(ToolError, match="query stopped"):
            run_query(conn, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c",
                      max_steps=100_000)
        # the same connection still answers afterwards
        assert run_query(conn, "SELECT 2").splitlines()[1] == "2"
    finally:
        conn.close()


def test_each_layer_alone_refuses_writes(harness):
    """mode=ro, query_only and the authorizer each refuse a write, even with the lexical check bypassed."""
    uri = harness.db.resolve().as_uri()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True)  # layer 1 only
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM modules")
    conn.close()
    conn = sqlite3.connect(harness.db)  # layer 2 only (a writable connection)
    conn.execute("PRAGMA query_only=1")
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM modules")
    conn.close()
    conn = open_readonly(harness.db)  # all layers: the authorizer answers first
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute("WITH x AS (SELECT 1) DELETE FROM modules")
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute("PRAGMA query_only=0")
    conn.close()


@pytest.mark.parametrize("q", ["SELECT 1", " (SELECT 1)", "-- c\nSELECT 1", "/* c */ WITH x AS (SELECT 1) "
                               "SELECT * FROM x", "VALUES (1)", "select 1;"])
def test_check_query_accepts_reads(q):
    assert check_query(q)


@pytest.mark.parametrize("q", ["", "   ", "DELETE FROM t", "/* SELECT */ DROP TABLE t", "EXPLAIN SELECT 1",
                               "-- SELECT\nDELETE FROM t", "ANALYZE", "REINDEX", "SELECT\x001"])
def test_check_query_refuses(q):
    with pytest.raises(ToolError):
        check_query(q)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120) | st.sampled_from(["SELECT ", "WITH ", "DELETE ", "; ", "ATTACH ", "PRAGMA "])
       .flatmap(lambda p: st.text(max_size=80).map(lambda s: p + s)))
def test_property_random_queries_never_modify(harness, q):
    before = _sha(harness.db)
    try:
        harness.tools["sql"].call({"query": q})
    except ToolError as e:
        assert "\n" not in str(e)
    assert _sha(harness.db) == before


def test_missing_or_bad_database(tmp_path):
    with pytest.raises(DodaiError, match="not a readable SQLite database"):
        sql_tool(tmp_path / "nope.db")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DodaiError, match="not a readable SQLite database"):
        sql_tool(bad)
    assert not (tmp_path / "nope.db").exists()  # mode=ro never creates the file


def test_description_shows_schema(harness):
    d = harness.tools["sql"].description
    assert "modules(" in d and "functions(" in d and "n_params INTEGER" in d
