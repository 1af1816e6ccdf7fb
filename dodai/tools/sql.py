"""A read-only ``sql`` tool over a SQLite database, and a small real demo database built offline.

Defence in depth, each layer enough on its own for writes (tests check the file's SHA-256 is unchanged
after every attack):

1. the file is opened through a URI ``file:/abs/path?mode=ro`` (``uri=True``): SQLite opens it
   ``O_RDONLY`` and will not create it or any journal;
2. ``PRAGMA query_only=1``: SQLite refuses every statement that would change the database;
3. an **authorizer** (``sqlite3_set_authorizer``) consulted while each statement is *compiled*: it
   allows only ``SQLITE_SELECT``, ``SQLITE_READ``, ``SQLITE_FUNCTION`` (minus :data:`DENIED_FUNCTIONS`,
   e.g. ``load_extension``) and ``SQLITE_RECURSIVE`` (recursive CTEs are legitimate reads; runaway ones
   are stopped by 5). Everything else — INSERT/UPDATE/DELETE, DDL, ATTACH/DETACH, every PRAGMA,
   transactions — is denied ("not authorized");
4. a lexical check: one statement, which starts with ``SELECT``, ``WITH`` or ``VALUES`` (so e.g.
   ``VACUUM INTO``, which no authorizer code covers, never reaches SQLite), and ``sqlite3`` itself
   refuses a second statement;
5. resource bounds: a **progress handler** aborts the query after :data:`MAX_STEPS` virtual-machine
   instructions or ``timeout_s`` seconds (an infinite recursive CTE is "interrupted" in well under a
   second); ``sqlite3_limit`` caps string/blob length (:data:`MAX_VALUE_BYTES`), SQL length, expression
   depth, compound selects and attached databases (0); at most ``max_rows`` rows come back, each cell cut
   to :data:`MAX_CELL` characters. Extension loading stays disabled.
6. a **separate process** per call (the tool's path; :func:`run_query` itself runs in-process): the
   progress handler only runs *between* virtual-machine instructions, and one SQL function call can run
   long inside SQLite's C code — ``printf('%.*c', 2000000000, 'x')`` loops two billion times although
   its result is refused by the length limit. So :func:`sql_tool` runs each query in a fresh
   ``python -I -S`` child (address space capped at :data:`WORKER_MEMORY_BYTES`, SQLite's heap at
   :data:`WORKER_HEAP_BYTES`) and kills it when the answer has not come ``timeout_s`` + :data:`GRACE_S`
   seconds after the child was ready: the wall clock holds whatever SQLite does.

Results are a compact text table: a header ``col | col``, one line per row, then ``(N rows)``.

:func:`demo_database` builds the demo DB from the running Python's standard library with
:mod:`inspect`: tables ``modules`` (one row per module of :data:`DEMO_MODULES`) and ``functions``
(public functions and classes), with docstring lengths and first lines — deterministic for one Python
version, no network.
"""

from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dodai.errors import DodaiError
from dodai.tools.base import Tool, ToolError

MAX_STEPS = 5_000_000  # SQLite VM instructions per query
PROGRESS_EVERY = 1000  # the progress handler runs every this many instructions
MAX_ROWS = 50
MAX_CELL = 120
MAX_QUERY_CHARS = 5000
MAX_VALUE_BYTES = 1_000_000  # longest string or blob any expression may build (SQLITE_LIMIT_LENGTH)
WORKER_MEMORY_BYTES = 512 << 20  # RLIMIT_AS of the child that runs a query
WORKER_HEAP_BYTES = 256 << 20  # SQLite's hard heap limit in that child
GRACE_S = 0.5  # the child is killed this long after its own timeout has passed without an answer
STARTUP_S = 30.0  # how long the child may take to start (a loaded machine)
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",
                              "sqlite_compileoption_get"})
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              sqlite3.SQLITE_RECURSIVE})
_LIMITS = {sqlite3.SQLITE_LIMIT_LENGTH: MAX_VALUE_BYTES, sqlite3.SQLITE_LIMIT_SQL_LENGTH: MAX_QUERY_CHARS,
           sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100, sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
           sqlite3.SQLITE_LIMIT_ATTACHED: 0, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 0,
           sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 16, sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 200}
# Comments and leading brackets before the first keyword.
_LEAD = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.S)


def _authorizer(action, arg1, arg2, db_name, trigger):
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_readonly(db_path: str | os.PathLike) -> sqlite3.Connection:
    """A connection that can only read ``db_path`` (layers 1–3 and the limits of the module docstring)."""
    p = Path(db_path).expanduser().resolve()
    if not p.is_file():
        raise ToolError(f"sql: no database file at {p}")
    conn = sqlite3.connect(p.as_uri() + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA temp_store=MEMORY")  # sorts of a bounded query stay in (bounded) memory, not temp files
    for lim, val in _LIMITS.items():
        conn.setlimit(lim, val)
    if hasattr(conn, "enable_load_extension"):  # absent when Python's sqlite3 was built without it
        conn.enable_load_extension(False)
    conn.set_authorizer(_authorizer)
    return conn


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return f"<blob {len(v)} bytes>"
    s = repr(v) if isinstance(v, float) else str(v)
    s = s.replace("\n", "\\n").replace("|", "\\|")
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 1] + "…"


def check_query(query: str) -> str:
    """Layer 4: the query stripped, or ToolError (empty, too long, not a SELECT/WITH/VALUES statement)."""
    if not isinstance(query, str) or not query.strip():
        raise ToolError("sql: empty query")
    if len(query) > MAX_QUERY_CHARS:
        raise ToolError(f"sql: query longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query:
        raise ToolError("sql: query contains a NUL character")
    q = query.strip().rstrip(";").strip()
    first = q[_LEAD.match(q).end():].split(None, 1)
    if not first or first[0].upper() not in ("SELECT", "WITH", "VALUES"):
        raise ToolError("sql: read-only: only one SELECT (or WITH … SELECT, VALUES) statement is allowed")
    return q


def run_query(conn: sqlite3.Connection, query: str, max_rows: int = MAX_ROWS, timeout_s: float = 2.0,
              max_steps: int = MAX_STEPS) -> str:
    q = check_query(query)
    calls, t_end = [0], time.monotonic() + timeout_s

    def progress():
        calls[0] += 1
        return 1 if calls[0] * PROGRESS_EVERY > max_steps or time.monotonic() > t_end else 0

    conn.set_progress_handler(progress, PROGRESS_EVERY)
    try:
        cur = conn.execute(q)
        rows = cur.fetchmany(max_rows + 1)
        cols = [d[0] for d in cur.description or []]
    except sqlite3.OperationalError as e:
        if "interrupted" in str(e):
            raise ToolError(f"sql: query stopped: more than {max_steps} steps or {timeout_s:g} s") from None
        raise ToolError(f"sql: {e}".splitlines()[0]) from None
    except (sqlite3.Error, sqlite3.Warning, OverflowError, MemoryError, ValueError) as e:
        raise ToolError(f"sql: {type(e).__name__}: {e}".splitlines()[0]) from None
    finally:
        conn.set_progress_handler(None, 0)
    more = len(rows) > max_rows
    rows = rows[:max_rows]
    lines = [" | ".join(cols)] if cols else []
    lines += [" | ".join(_cell(v) for v in r) for r in rows]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
                 + (f"; more rows exist, only the first {max_rows} are shown" if more else "") + ")")
    return "\n".join(lines)


def schema_text(conn: sqlite3.Connection, sample_rows: bool = True) -> str:
    """``table(col type, ...)`` lines: what the tool description shows the model; with ``sample_rows``, each
    followed by the table's first row (cells cut to 40 characters), so the model sees what the values look like."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    out = []
    for name, sql in rows:
        m = re.search(r"\((.*)\)", sql or "", re.S)
        cols = " ".join(m.group(1).split()) if m else ""
        line = f"{name}({cols})"
        if sample_rows:
            try:
                first = conn.execute('SELECT * FROM "{}" LIMIT 1'.format(name.replace('"', '""'))).fetchone()
            except sqlite3.Error:  # e.g. a virtual table whose module is not loaded: the schema line alone
                first = None
            if first is not None:
                cells = [c if not isinstance(c, str) or len(c) <= 40 else c[:39] + "…" for c in first]
                line += f", a row: ({', '.join(repr(c) if isinstance(c, str) else _cell(c) for c in cells)})"
        out.append(line)
    return "; ".join(out)


def sql_tool(db_path: str | os.PathLike, max_rows: int = MAX_ROWS, timeout_s: float = 2.0,
             max_steps: int = MAX_STEPS) -> Tool:
    """The ``sql`` tool over ``db_path``: ``{"query": "SELECT ..."}`` → a text table. Each call runs in a fresh
    child process with a fresh read-only connection (layer 6: no state carries from one call to the next,
    and the wall clock holds even inside one SQLite function call)."""
    try:
        with _closing(open_readonly(db_path)) as conn:
            schema = schema_text(conn)
    except (ToolError, sqlite3.Error) as e:
        raise DodaiError(f"{db_path}: not a readable SQLite database ({str(e).splitlines()[0]})") from None
    path = str(Path(db_path).expanduser().resolve())

    def fn(args: dict) -> str:
        check_query(args["query"])  # the lexical refusals need no process
        return run_isolated(path, args["query"], max_rows, timeout_s, max_steps)

    return Tool(
        name="sql",
        description=(f"Run one read-only SQLite SELECT query and get the rows back (at most {max_rows}). "
                     f"Tables: {schema}"),
        parameters={"type": "object",
                    "properties": {"query": {"type": "string", "description": "one SELECT statement"}},
                    "required": ["query"]},
        fn=fn, max_output_chars=6000, meta={"db_path": str(db_path)},
    )


# The child: caps its own memory, starts SQLite with a hard heap limit, says it is ready, answers one query.
_WORKER = """
import json, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_AS)
cap = {mem} if hard == resource.RLIM_INFINITY else min({mem}, hard)
resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
sys.path.insert(0, {root!r})
import sqlite3
sqlite3.connect(":memory:").execute("PRAGMA hard_heap_limit={heap}").close()
from dodai.tools.base import ToolError
from dodai.tools.sql import _closing, open_readonly, run_query
sys.stdout.write("ready\\n")
sys.stdout.flush()
req = json.loads(sys.stdin.readline())
try:
    with _closing(open_readonly(req["db"])) as conn:
        out = {{"ok": run_query(conn, req["query"], req["max_rows"], req["timeout_s"], req["max_steps"])}}
except ToolError as e:
    out = {{"error": str(e)}}
except BaseException as e:
    out = {{"error": ("sql: " + type(e).__name__ + ": " + str(e)).splitlines()[0]}}
sys.stdout.write(json.dumps(out) + "\\n")
sys.stdout.flush()
"""


def run_isolated(db_path: str, query: str, max_rows: int = MAX_ROWS, timeout_s: float = 2.0,
                 max_steps: int = MAX_STEPS) -> str:
    """:func:`run_query` in a child process that is killed ``timeout_s`` + :data:`GRACE_S` seconds after it
    is ready (layer 6 of the module docstring). Raises :class:`ToolError`."""
    root = str(Path(__file__).resolve().parents[2])
    code = _WORKER.format(mem=WORKER_MEMORY_BYTES, heap=WORKER_HEAP_BYTES, root=root)
    request = json.dumps({"db": db_path, "query": query, "max_rows": max_rows, "timeout_s": timeout_s,
                          "max_steps": max_steps}) + "\n"
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
    try:
        proc.stdin.write(request.encode("utf-8"))
        proc.stdin.close()
        lines = _Lines(proc.stdout.fileno())
        if lines.read(time.monotonic() + STARTUP_S) != b"ready":
            raise ToolError("sql: the query process did not start")
        answer = lines.read(time.monotonic() + timeout_s + GRACE_S)
        if answer is None:
            raise ToolError(f"sql: query stopped: more than {timeout_s:g} s")
        if not answer:
            raise ToolError("sql: the query process died (out of memory?)")
        out = json.loads(answer)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if "error" in out:
        raise ToolError(str(out["error"]))
    return str(out["ok"])


class _Lines:
    """Lines from a pipe, each read with a deadline (None when it passes; b"" at end of file)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def read(self, deadline: float) -> bytes | None:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


class _closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


# ---- the demo database --------------------------------------------------------------------------
DEMO_MODULES = ("base64", "bisect", "calendar", "colorsys", "copy", "csv", "dataclasses", "datetime", "difflib",
                "fnmatch", "fractions", "functools", "glob", "heapq", "html", "ipaddress", "json", "keyword",
                "operator", "pprint", "random", "shlex", "statistics", "string", "textwrap", "tokenize",
                "uuid", "zipfile", "gzip", "shutil", "tempfile", "contextlib", "enum", "numbers", "decimal",
                "collections", "itertools", "math", "re", "os.path")


def _first_line(doc: str | None) -> str | None:
    doc = (doc or "").strip()
    return doc.splitlines()[0].strip() if doc else None


def _demo_rows():
    import importlib
    import inspect

    modules, functions = [], []
    for name in sorted(DEMO_MODULES):
        mod = importlib.import_module(name)
        real = mod.__name__  # os.path is posixpath on POSIX
        n_fn = n_cls = 0
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) not in (real, name, "_" + real):
                continue
            if inspect.isclass(obj):
                kind = "class"
                n_cls += 1
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                kind = "function"
                n_fn += 1
            else:
                continue
            try:
                n_params = len(inspect.signature(obj).parameters)
            except (TypeError, ValueError):
                n_params = None
            doc = inspect.getdoc(obj) if kind == "function" else obj.__doc__
            functions.append((name, attr, kind, n_params, len(doc or ""), _first_line(doc)))
        doc = mod.__doc__
        modules.append((name, n_fn, n_cls, len(doc or ""), _first_line(doc)))
    return modules, functions


def demo_database(path: str | os.PathLike) -> Path:
    """Build (or rebuild) the demo SQLite database at ``path``; atomic (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    modules, functions = _demo_rows()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript("""
            CREATE TABLE modules (name TEXT PRIMARY KEY, n_functions INTEGER, n_classes INTEGER,
                                  doc_chars INTEGER, summary TEXT);
            CREATE TABLE functions (module TEXT REFERENCES modules(name), name TEXT, kind TEXT,
                                    n_params INTEGER, doc_chars INTEGER, summary TEXT,
                                    PRIMARY KEY (module, name));
        """)
        conn.executemany("INSERT INTO modules VALUES (?, ?, ?, ?, ?)", modules)
        conn.executemany("INSERT INTO functions VALUES (?, ?, ?, ?, ?, ?)", functions)
        conn.commit()
    finally:
        conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
