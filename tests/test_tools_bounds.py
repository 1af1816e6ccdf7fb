"""The calculator and SQL tools within bounds: hostile inputs end fast in one-line ToolErrors, with bounded
memory, measured in a child process and its SQL query processes (ru_maxrss, read by a small launcher: a
process started straight from pytest would report pytest's own peak, which Linux carries across exec)."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from dodai.tools.base import ToolError
from dodai.tools.calculator import MAX_DIGITS, evaluate

CALC_HOSTILE = [
    "1e-99999999", "0.5e-99999999", "7.25E-123456789", "1e99999999999999999999", "1_0e-9_999_999",
    "10**10**10", "9**9**9**9", "2**(2**64)", "(1/3)**10**9", "(10**2999+1)**2",
    "factorial(10**100)", "factorial(1e300)", "factorial(100000)", "comb(100000, 50000)", "perm(100000, 100000)",
    "round(1/3, 10**9)", "exp(10**10)", "sqrt(10**10**10)", "1e-3001 + 1", "gcd(10**10**10, 7)",
    "lcm(" + ", ".join(f"10**2999-{k}" for k in range(8)) + ")",
]
SQL_HOSTILE = [
    "SELECT length(printf('%.*c', 2000000000, 'x'))",  # one C call looping 2e9 times
    "SELECT printf('%.*c', 2000000000, 'x') || 'y'",
    "SELECT length(zeroblob(2000000000))",
    "SELECT length(randomblob(999999) || randomblob(999999))",
    "SELECT length(hex(randomblob(900000)))",
    "SELECT length(replace(hex(zeroblob(400000)), '0', '0000000000'))",
    "SELECT length(printf('%2000000000d', 1)) IS NULL OR length(printf('%2000000000d', 1)) <= 1000000",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "WITH RECURSIVE c(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM c) SELECT max(length(s)) FROM c",
    "SELECT count(*) FROM functions a, functions b, functions c",
]

_CHILD = r"""
import json, resource, sys, time
from dodai.tools.base import ToolError
from dodai.tools.calculator import calculator_tool
from dodai.tools.sql import sql_tool
calc, sql = calculator_tool(), sql_tool(sys.argv[1], timeout_s=1.0)
cases = json.load(sys.stdin)
out = []
for tool, text in cases:
    t0 = time.monotonic()
    try:
        r = (calc.call({"expression": text}) if tool == "calc" else sql.call({"query": text}))
        kind, msg = "answer", r
    except ToolError as e:
        kind, msg = "ToolError", str(e)
    except BaseException as e:
        kind, msg = "other", repr(e)
    out.append({"tool": tool, "text": text[:80], "seconds": time.monotonic() - t0, "kind": kind, "message": msg})
print(json.dumps({"cases": out}))
"""
_LAUNCHER = ("import resource, subprocess, sys\n"
             "rc = subprocess.call(sys.argv[2:])\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
             "sys.exit(rc)\n")


def _limit_memory():  # a regression must fail the test, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from dodai.tools.sql import demo_database

    return demo_database(tmp_path_factory.mktemp("tools-bounds") / "demo.db")


def test_hostile_tool_inputs_end_fast_with_bounded_memory(demo_db, tmp_path):
    before = demo_db.read_bytes()
    cases = [("calc", e) for e in CALC_HOSTILE] + [("sql", q) for q in SQL_HOSTILE]
    rss_file = tmp_path / "rss.txt"
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss_file), sys.executable, "-c", _CHILD, str(demo_db)],
                          input=json.dumps(cases), capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    bad = []
    for c in report["cases"]:
        limit = 1.5 if c["tool"] == "calc" else 5.0  # sql: 1 s timeout + 0.5 s grace + the child's start-up
        refused = c["kind"] == "ToolError" and "\n" not in c["message"]
        # one SQL case asks whether a 2e9-wide printf stayed within the length limit: "1" is an answer too
        if not (refused or (c["kind"] == "answer" and c["text"].startswith("SELECT length(printf('%2"))):
            bad.append((c["text"], c["kind"], c["message"][:200]))
        elif c["seconds"] > limit:
            bad.append((c["text"], f"{c['seconds']:.2f} s"))
    assert not bad, bad
    rss_mb = int(rss_file.read_text()) // 1024  # the largest of the child and its query processes
    assert rss_mb <= 150, rss_mb  # the child ~30 MB (python + the tools), a query process ~18 MB (capped at 512 MB)
    assert demo_db.read_bytes() == before


# ---- calculator --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1e-99999999", "0.5E-99999999", "1e99999999999999999999", "7e3001"])
def test_literal_exponents_are_refused_before_building_the_number(text):
    t0 = time.perf_counter()
    with pytest.raises(ToolError, match="literal"):
        evaluate(text)
    assert time.perf_counter() - t0 < 0.1


def test_decimal_literals_stay_exact_up_to_the_bound():
    assert evaluate("0e99999999") == 0  # zero times any power of ten, without computing the power
    assert evaluate("1e2999") == 10 ** 2999  # beyond float range, exact
    assert evaluate("2.5e-3") == Fraction(1, 400)
    assert evaluate("1_000.5e-1_0") == Fraction(10005, 10 ** 11)
    assert evaluate("1e-3000") == Fraction(1, 10 ** 3000)
    with pytest.raises(ToolError):
        evaluate("1e-3001 * 1")  # the value itself is over the bound
    assert evaluate("0.1 + 0.2") == Fraction(3, 10)


def test_the_wall_clock_is_checked_at_every_step(monkeypatch):
    """A demonstration of the mechanism (each single operation is bounded by size, so no real expression
    reaches the limit): with no time allowed, evaluation stops at the first node."""
    import dodai.tools.calculator as calc

    monkeypatch.setattr(calc, "MAX_SECONDS", -1.0)
    with pytest.raises(ToolError, match="took longer"):
        evaluate("1 + 1")


def test_node_count_is_bounded_before_evaluating(monkeypatch):
    import dodai.tools.calculator as calc

    monkeypatch.setattr(calc, "MAX_NODES", 5)
    assert evaluate("1 + 2") == 3  # 3 nodes
    with pytest.raises(ToolError, match="more than 5"):
        evaluate("1 + 2 + 3 + 4")


def test_results_inside_the_bounds_are_exact():
    assert evaluate("10**2999 // 7 * 7 + 10**2999 % 7") == 10 ** 2999
    assert evaluate("factorial(1000) / factorial(998)") == 999000
    assert math.isclose(evaluate("log10(1e2999)"), 2999.0)
    assert len(str(evaluate("(10**2999 + 1) / 3").denominator)) == 1 and MAX_DIGITS == 3000


# ---- SQL ---------------------------------------------------------------------------------------------------

def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                out.add(int(d.name))
    return out


def test_one_sql_function_call_cannot_outrun_the_wall_clock(demo_db):
    from dodai.tools.sql import GRACE_S, sql_tool

    before = _children()
    tool = sql_tool(demo_db, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(ToolError, match="query stopped: more than 0.5 s"):
        tool.call({"query": "SELECT printf('%.*c', 2000000000, 'x')"})
    assert time.monotonic() - t0 < 0.5 + GRACE_S + 3.0  # plus the child's start-up on a loaded machine
    assert _children() == before  # the query process was killed and reaped
    assert tool.call({"query": "SELECT 1 + 1"}).splitlines()[1] == "2"  # the next call gets a fresh one


def test_value_size_is_capped_by_sqlite_itself(demo_db):
    from dodai.tools.sql import MAX_VALUE_BYTES, open_readonly, run_query

    conn = open_readonly(demo_db)
    try:
        assert conn.getlimit(__import__("sqlite3").SQLITE_LIMIT_LENGTH) == MAX_VALUE_BYTES
        for q in ["SELECT zeroblob(2000000000)", "SELECT hex(randomblob(600000))",
                  "SELECT replace(hex(zeroblob(400000)), '0', '00000')"]:
            with pytest.raises(ToolError, match="too big"):
                run_query(conn, q)
        assert run_query(conn, f"SELECT length(zeroblob({MAX_VALUE_BYTES}))").splitlines()[1] == str(MAX_VALUE_BYTES)
    finally:
        conn.close()
