"""A grammar for the ``sql`` tool's query argument: a read-only subset of SQL over the database's own tables and
columns, used to constrain the agent's call (:mod:`dodai.generate.constrained`, after Willard & Louf 2023).

A small model asked for SQL invents tables and columns ("FROM classes", "func_name") and mixes shapes; under
this grammar every query it can write names real columns of the table it reads. The subset, one table per query
(no joins), keywords in upper case, single spaces:

    SELECT <what> FROM <table> [WHERE <cond> [AND|OR <cond>]] [ORDER BY <col> ASC|DESC] [LIMIT <n>]

``<what>`` is ``*``, ``COUNT(*)``, ``COUNT|SUM|AVG|MAX|MIN(<col>)`` or one to three columns; ``<cond>`` is
``<col> <op> <value>`` with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` or ``LIKE``, the value a quoted text
(single quotes, no quote or backslash inside) or a number. The grammar is built from the schema alone (the
columns of every table, read with ``SELECT * … LIMIT 0``), never from a question. The regex describes the text
*inside* the JSON string of the call, so it never produces a double quote or a backslash.
"""

from __future__ import annotations

import re

from dodai.errors import DodaiError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
OPS = ("=", "!=", "<", "<=", ">", ">=", "LIKE")
AGGREGATES = ("COUNT", "SUM", "AVG", "MAX", "MIN")


# Shown to the model with an sql tool (both protocols): the words of a question that each piece of a query means.
HINTS = ("SQL: 'how many rows' is COUNT(*); 'more than' is >, 'fewer than' or 'less than' is <, 'at least' is >=, "
         "'at most' is <=; 'the most' or 'the largest' is ORDER BY <column> DESC LIMIT 1, 'the fewest' or 'the "
         "smallest' is ORDER BY <column> ASC LIMIT 1; 'the total' is SUM(<column>), 'the average' is AVG(<column>).")


def read_schema(db_path) -> dict[str, list[str]]:
    """{table: [column, ...]} of a SQLite file, read through the sql tool's read-only connection."""
    import sqlite3

    from dodai.tools.base import ToolError
    from dodai.tools.sql import open_readonly

    try:
        conn = open_readonly(db_path)
    except ToolError as e:
        raise DodaiError(str(e)) from None
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {}
        for name in names:
            try:
                cur = conn.execute('SELECT * FROM "{}" LIMIT 0'.format(name.replace('"', '""')))
            except sqlite3.Error:
                continue
            out[name] = [d[0] for d in cur.description or []]
        return out
    except sqlite3.Error as e:
        raise DodaiError(f"{db_path}: cannot read the schema ({str(e).splitlines()[0]})") from None
    finally:
        conn.close()


def _alt(items) -> str:
    from dodai.generate.constrained import _esc

    return "(?:" + "|".join(_esc(i) for i in items) + ")"


def query_regex(schema: dict[str, list[str]], max_literal: int = 40) -> str:
    """The regex of the subset above over ``schema`` ({table: [column, ...]}); tables or columns whose names are
    not plain identifiers are left out."""
    alts = []
    for table, columns in schema.items():
        cols = [c for c in columns if _IDENT.match(c)]
        if not _IDENT.match(table) or not cols:
            continue
        col = _alt(cols)
        what = (r"(?:\*|COUNT\(\*\)|" + _alt(AGGREGATES) + r"\(" + col + r"\)|" + col + "(?:, " + col + "){0,2})")
        value = f"(?:'[^'\"\\\\\\x00-\\x1f]{{0,{max_literal}}}'|-?[0-9]{{1,9}}(?:\\.[0-9]{{1,4}})?)"
        cond = col + " " + _alt(OPS) + " " + value
        alts.append(f"SELECT {what} FROM {table}(?: WHERE {cond}(?: (?:AND|OR) {cond})?)?"
                    f"(?: ORDER BY {col} (?:ASC|DESC))?(?: LIMIT [1-9][0-9]{{0,2}})?")
    if not alts:
        raise DodaiError("the database has no table the SQL grammar can describe")
    return "(?:" + "|".join(alts) + ")"


def sql_tool_db(tool) -> str | None:
    """The database path of a :func:`dodai.tools.sql.sql_tool` (its ``meta``) with a required ``query``
    argument; None for any other tool."""
    meta = getattr(tool, "meta", None) or {}
    params = getattr(tool, "parameters", None) or {}
    if "db_path" in meta and "query" in (params.get("required") or []):
        return meta["db_path"]
    return None
