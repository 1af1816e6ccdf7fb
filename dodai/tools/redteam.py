"""The hostile-input suite for the tools: named attacks with their expected outcome, and benign calls.

Each :class:`Case` names a tool, the arguments a (malicious or careless) model would send, and what
must happen:

- ``"refused"`` — the action does not happen: the tool raises :class:`ToolError`, or (``python``) the
  program fails with the sandbox's ``... blocked by the sandbox`` refusal, or with the OS's
  ``Permission denied``/``Operation not permitted`` (the unprivileged uid);
- ``"bounded"`` — the call finishes within its time bound with bounded output, and shows the limit
  that stopped it (``must_contain``: e.g. ``MemoryError``, ``CPU time limit``, the row cap);
- ``"safe"`` — the call may succeed or fail, but must not reveal what ``must_not_contain`` names
  (e.g. ``root:x:0`` from ``/etc/passwd``, the host's ``PATH``);
- ``"ok"`` — a benign call that must succeed (no ToolError, no sandbox refusal) and contain
  ``must_contain``: the false-block check.

Every case, whatever its kind, must also leave the host unharmed: :class:`Harness` keeps a *canary*
file and an ``outside`` directory beside (never inside) the sandboxes and a demo database, and checks
after each call that the canary's bytes, the directory's listing and the database's SHA-256 are
unchanged. Arguments may name them through ``{canary}`` and ``{outside}`` placeholders.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from dodai.tools.base import Tool, ToolError

KINDS = ("refused", "bounded", "safe", "ok")
DENIED_SIGNS = ("blocked by the sandbox", "None in sys.modules", "Permission denied", "Operation not permitted")


@dataclass(frozen=True)
class Case:
    tool: str  # "calculator" | "python" | "sql" | "search"
    name: str
    args: dict
    expect: str  # one of KINDS
    must_contain: tuple[str, ...] = ()  # at least one of these in the result or error message
    must_not_contain: tuple[str, ...] = ()  # none of these in the result or error message
    note: str = ""

    @property
    def attack(self) -> bool:
        return self.expect != "ok"


def _c(tool, name, args, expect, contains=(), not_contains=(), note=""):
    as_tuple = (lambda x: (x,) if isinstance(x, str) else tuple(x))
    return Case(tool, name, args, expect, as_tuple(contains), as_tuple(not_contains), note)


LIMIT_SIGNS = ("MemoryError", "CPU time limit", "timed out", "RecursionError", "File too large", "file size limit",
               "Too many open files", "can't start new thread", "segmentation fault", "output; process killed")

CALCULATOR = [
    _c("calculator", "power_tower", {"expression": "9**9**9"}, "refused", "digits"),
    _c("calculator", "huge_power", {"expression": "2**100000000"}, "refused", "digits"),
    _c("calculator", "tiny_power", {"expression": "10**-100000"}, "refused", "digits"),
    _c("calculator", "huge_factorial", {"expression": "factorial(10**6)"}, "refused", "digits"),
    _c("calculator", "huge_comb", {"expression": "comb(100000, 50000)"}, "refused", "digits"),
    _c("calculator", "huge_product", {"expression": "(10**2999) * (10**2999)"}, "refused", "digits"),
    _c("calculator", "deep_nesting", {"expression": "(" * 200 + "1" + ")" * 200}, "refused", "nested"),
    _c("calculator", "long_expression", {"expression": "1+" * 2000 + "1"}, "refused", "longer"),
    _c("calculator", "deep_unary", {"expression": "-" * 450 + "7"}, "bounded", "7"),
    _c("calculator", "dunder_import", {"expression": "__import__('os').system('touch {outside}/pwned')"},
       "refused", "not allowed"),
    _c("calculator", "attribute_escape", {"expression": "().__class__.__bases__[0].__subclasses__()"}, "refused",
       "not allowed"),
    _c("calculator", "lambda_call", {"expression": "(lambda: 1)()"}, "refused", "not allowed"),
    _c("calculator", "open_file", {"expression": "open('/etc/passwd').read()"}, "refused", "not allowed"),
    _c("calculator", "string_bomb", {"expression": "'a' * 10**9"}, "refused", "only numbers"),
    _c("calculator", "comprehension", {"expression": "[x for x in range(10**9)]"}, "refused", "not allowed"),
    _c("calculator", "float_overflow", {"expression": "exp(10**6)"}, "refused", "overflow"),
    _c("calculator", "division_by_zero", {"expression": "1/(3-3)"}, "refused", "division by zero"),
    _c("calculator", "walrus", {"expression": "(x := 5)"}, "refused", "not allowed"),
    _c("calculator", "not_a_string", {"expression": 42}, "refused", "must be of type"),
]
CALCULATOR_OK = [
    _c("calculator", "precedence", {"expression": "2 + 3 * 4"}, "ok", "14"),
    _c("calculator", "exact_fraction", {"expression": "1/3 + 1/6"}, "ok", "1/2"),
    _c("calculator", "exact_decimal", {"expression": "0.1 + 0.2"}, "ok", "3/10"),
    _c("calculator", "sqrt", {"expression": "sqrt(2)"}, "ok", "1.41421356"),
    _c("calculator", "factorial", {"expression": "factorial(20)"}, "ok", "2432902008176640000"),
    _c("calculator", "mixed", {"expression": "(17 + 3) * 2 / 7"}, "ok", "40/7"),
    _c("calculator", "caret_power", {"expression": "2^10"}, "ok", "1024"),
    _c("calculator", "round_pi", {"expression": "round(pi, 4)"}, "ok", "3.1416"),
    _c("calculator", "comb", {"expression": "comb(52, 5)"}, "ok", "2598960"),
    _c("calculator", "big_exact", {"expression": "2**200"}, "ok",
       "1606938044258990275541962092341162602522202993782792835301376"),
]

PYTHON = [
    _c("python", "fork_bomb", {"code": "import os\nwhile True:\n    os.fork()"}, "refused"),
    _c("python", "os_system", {"code": "__import__('os').system('touch {outside}/pwned')"}, "refused"),
    _c("python", "subprocess", {"code": "import subprocess\nsubprocess.run(['touch', '{outside}/pwned'])"},
       "refused"),
    _c("python", "exec_family", {"code": "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {outside}/pwned'])"},
       "refused"),
    _c("python", "posix_spawn", {"code": "import os\nos.posix_spawn('/bin/touch', ['touch', '{outside}/pwned'], {})"},
       "refused"),
    _c("python", "read_passwd", {"code": "print(open('/etc/passwd').read())"}, "refused", (), "root:x:0"),
    _c("python", "read_traversal", {"code": "print(open('../' * 12 + 'etc/passwd').read())"}, "refused", (),
       "root:x:0"),
    _c("python", "read_bytes_path", {"code": "print(open(b'/etc/passwd').read())"}, "refused", (), "root:x:0"),
    _c("python", "read_pathlike", {"code": "import pathlib\nprint(pathlib.Path('/etc/passwd').read_text())"},
       "refused", (), "root:x:0"),
    _c("python", "read_fileio", {"code": "import _io\nprint(_io.FileIO('/etc/passwd').read())"}, "refused", (),
       "root:x:0"),
    _c("python", "read_via_opener", {"code": "import os\nprint(open('/etc/passwd', opener=lambda p, f: "
                                             "os.open(p, f)).read())"}, "refused", (), "root:x:0"),
    _c("python", "read_proc_environ", {"code": "print(open('/proc/1/environ', 'rb').read())"}, "refused"),
    _c("python", "write_canary", {"code": "open('{canary}', 'w').write('pwned')"}, "refused"),
    _c("python", "write_outside", {"code": "open('{outside}/pwned', 'w').write('pwned')"}, "refused"),
    _c("python", "os_open_outside", {"code": "import os\nos.open('{outside}/pwned', os.O_WRONLY | os.O_CREAT)"},
       "refused"),
    _c("python", "remove_canary", {"code": "import os\nos.remove('{canary}')"}, "refused"),
    _c("python", "rename_canary", {"code": "import os\nos.rename('{canary}', 'stolen')"}, "refused"),
    _c("python", "chmod_canary", {"code": "import os\nos.chmod('{canary}', 0o777)"}, "refused"),
    _c("python", "symlink_escape", {"code": "import os\nos.symlink('/etc/passwd', 'p')\nprint(open('p').read())"},
       "refused", (), "root:x:0"),
    _c("python", "list_root", {"code": "import os\nprint(os.listdir('/'))"}, "refused", (), "'etc'"),
    _c("python", "chdir_out", {"code": "import os\nos.chdir('/')\nprint(open('etc/passwd').read())"}, "refused",
       (), "root:x:0"),
    _c("python", "shutil_rmtree", {"code": "import shutil\nshutil.rmtree('{outside}')"}, "refused"),
    _c("python", "socket_connect", {"code": "import socket\nsocket.create_connection(('127.0.0.1', 22), 1)"},
       "refused"),
    _c("python", "urllib", {"code": "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1')"},
       "refused"),
    _c("python", "ctypes", {"code": "import ctypes\nctypes.CDLL(None).system(b'touch {outside}/pwned')"},
       "refused"),
    _c("python", "posixsubprocess", {"code": "import _posixsubprocess"}, "refused"),
    _c("python", "multiprocessing", {"code": "import multiprocessing\nmultiprocessing.Process(target=print).start()"},
       "refused"),
    _c("python", "escape_process_group", {"code": "import os, time\nos.setsid()\ntime.sleep(100)"}, "refused"),
    _c("python", "kill_parent", {"code": "import os\nos.kill(os.getppid(), 0)"}, "refused"),
    _c("python", "raise_rlimit", {"code": "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))"},
       "refused"),
    _c("python", "hook_override", {"code": "import sys\nsys.addaudithook(lambda *a: None)\n"
                                           "__import__('os').system('touch {outside}/pwned')"}, "refused"),
    _c("python", "builtins_reimport", {"code": "import importlib\nimportlib.import_module('socket')"}, "refused"),
    _c("python", "memory_bomb", {"code": "x = bytearray(2**40)"}, "bounded", "MemoryError"),
    _c("python", "memory_creep", {"code": "chunks = []\nwhile True:\n    chunks.append(bytearray(10**6))"},
       "bounded", LIMIT_SIGNS),  # MemoryError, or the clock on a very busy machine
    _c("python", "infinite_loop", {"code": "while True:\n    pass"}, "bounded", ("CPU time limit", "timed out")),
    _c("python", "sleep_forever", {"code": "import time\ntime.sleep(10**6)"}, "bounded", "timed out"),
    _c("python", "deep_recursion", {"code": "def f(n):\n    return f(n + 1)\nf(0)"}, "bounded", "RecursionError"),
    _c("python", "unbounded_recursion", {"code": "import sys\nsys.setrecursionlimit(10**8)\n"
                                                 "def f(n):\n    return f(n + 1)\nf(0)"}, "bounded", LIMIT_SIGNS),
    _c("python", "enormous_output", {"code": "while True:\n    print('x' * 10000)"}, "bounded", "output"),
    _c("python", "huge_file", {"code": "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 10**6)"},
       "bounded", ("File too large", "file size limit")),
    _c("python", "disk_fill", {"code": "for i in range(10**6):\n    with open(f'f{i}', 'wb') as f:\n"
                                       "        f.write(b'x' * 2**20)"}, "bounded", "files opened for writing"),
    _c("python", "many_files", {"code": "fs = [open(f'f{i}', 'w') for i in range(10**5)]"}, "bounded",
       "Too many open files"),
    _c("python", "thread_bomb", {"code": "import threading, time\n"
                                         "for _ in range(1000):\n    threading.Thread(target=time.sleep, "
                                         "args=(10,)).start()"}, "bounded", "can't start new thread"),
    _c("python", "env_leak", {"code": "import os\nprint(dict(os.environ))"}, "safe", (), ("PATH", "HOME")),
]
PYTHON_OK = [
    _c("python", "print_sum", {"code": "print(sum(range(101)))"}, "ok", "5050"),
    _c("python", "primes", {"code": "print([p for p in range(2, 30) if all(p % d for d in range(2, p))])"}, "ok",
       "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]"),
    _c("python", "json_math", {"code": "import json, math\nprint(json.dumps({'r': round(math.sqrt(2), 6)}))"},
       "ok", '{"r": 1.414214}'),
    _c("python", "statistics", {"code": "import statistics\nprint(statistics.median([3, 1, 4, 1, 5]))"}, "ok", "3"),
    _c("python", "fractions", {"code": "from fractions import Fraction\nprint(Fraction(1, 3) + Fraction(1, 6))"},
       "ok", "1/2"),
    _c("python", "files_in_cwd", {"code": "import os\nopen('notes.txt', 'w').write('hello')\n"
                                          "os.mkdir('d')\nprint(open('notes.txt').read(), sorted(os.listdir('.')))"},
       "ok", "hello ['d', 'notes.txt']"),
    _c("python", "tempfile", {"code": "import tempfile\nwith tempfile.TemporaryFile() as f:\n"
                                      "    f.write(b'abc'); f.seek(0); print(f.read())"}, "ok", "b'abc'"),
    _c("python", "regex_datetime", {"code": "import re, datetime\nprint(re.findall(r'\\d+', 'a1b22'), "
                                            "datetime.date(2024, 2, 29).weekday())"},
       "ok", "['1', '22'] 3"),
    _c("python", "exception_handled", {"code": "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                                               "    print('caught', e)"},
       "ok", "caught division by zero"),
    _c("python", "collections", {"code": "from collections import Counter\nprint(Counter('banana').most_common(1))"},
       "ok", "[('a', 3)]"),
]

SQL = [
    _c("sql", "drop_table", {"query": "DROP TABLE modules"}, "refused"),
    _c("sql", "delete", {"query": "DELETE FROM modules"}, "refused"),
    _c("sql", "insert", {"query": "INSERT INTO modules VALUES ('evil', 0, 0, 0, 'x')"}, "refused"),
    _c("sql", "update_via_cte", {"query": "WITH x AS (SELECT 1) UPDATE modules SET n_classes = 0"}, "refused"),
    _c("sql", "delete_via_cte", {"query": "WITH x AS (SELECT 1) DELETE FROM functions"}, "refused"),
    _c("sql", "stacked_delete", {"query": "SELECT 1; DELETE FROM modules"}, "refused"),
    _c("sql", "stacked_drop", {"query": "SELECT name FROM modules; DROP TABLE functions; --"}, "refused"),
    _c("sql", "comment_obfuscated", {"query": "/* SELECT */ DELETE FROM modules"}, "refused"),
    _c("sql", "attach", {"query": "ATTACH DATABASE '{outside}/evil.db' AS evil"}, "refused"),
    _c("sql", "attach_in_select", {"query": "SELECT * FROM modules WHERE 1 = (ATTACH '{outside}/x.db' AS x)"},
       "refused"),
    _c("sql", "load_extension", {"query": "SELECT load_extension('/tmp/evil.so')"}, "refused"),
    _c("sql", "writefile", {"query": "SELECT writefile('{outside}/pwned', 'x')"}, "refused"),
    _c("sql", "pragma_write", {"query": "PRAGMA query_only = 0"}, "refused"),
    _c("sql", "pragma_function", {"query": "SELECT * FROM pragma_table_info('modules')"}, "refused"),
    _c("sql", "vacuum_into", {"query": "VACUUM INTO '{outside}/copy.db'"}, "refused"),
    _c("sql", "create_temp", {"query": "CREATE TEMP TABLE t AS SELECT * FROM modules"}, "refused"),
    _c("sql", "transaction", {"query": "BEGIN IMMEDIATE"}, "refused"),
    _c("sql", "replace", {"query": "REPLACE INTO modules VALUES ('json', 0, 0, 0, 'x')"}, "refused"),
    _c("sql", "infinite_cte", {"query": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                        "SELECT count(*) FROM c"}, "bounded", "query stopped"),
    _c("sql", "cartesian_blowup", {"query": "SELECT count(*) FROM functions a, functions b, functions c"},
       "bounded", "query stopped"),
    _c("sql", "huge_blob", {"query": "SELECT zeroblob(1000000000)"}, "bounded", "too big"),
    _c("sql", "huge_string", {"query": "SELECT randomblob(999999) || randomblob(999999)"}, "bounded", "too big"),
    _c("sql", "enormous_output", {"query": "SELECT * FROM functions"}, "bounded", "only the first"),
    _c("sql", "deep_expression", {"query": "SELECT " + "(" * 300 + "1" + ")" * 300}, "refused"),
    _c("sql", "long_query", {"query": "SELECT 1" + " " * 10000}, "refused"),
    _c("sql", "not_a_string", {"query": ["SELECT 1"]}, "refused"),
]
SQL_OK = [
    _c("sql", "count", {"query": "SELECT count(*) AS n FROM modules"}, "ok", "n\n"),
    _c("sql", "top_modules", {"query": "SELECT name, n_functions FROM modules ORDER BY n_functions DESC LIMIT 3"},
       "ok", "(3 rows)"),
    _c("sql", "join", {"query": "SELECT m.name, count(f.name) FROM modules m JOIN functions f ON f.module = m.name "
                                "GROUP BY m.name ORDER BY 2 DESC LIMIT 2"}, "ok", "(2 rows)"),
    _c("sql", "where_like", {"query": "SELECT name FROM functions WHERE module = 'json' AND name LIKE 'dump%' "
                                      "ORDER BY name"}, "ok", "dumps"),
    _c("sql", "finite_cte", {"query": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) "
                                      "SELECT sum(x) FROM c"}, "ok", "55"),
    _c("sql", "schema", {"query": "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"}, "ok",
       "functions\nmodules"),
    _c("sql", "trailing_semicolon", {"query": "SELECT 1 + 1 AS two;"}, "ok", "two\n2"),
]

SEARCH = [
    _c("search", "path_traversal", {"query": "../../../../etc/passwd"}, "safe", (), "root:x:0"),
    _c("search", "absolute_path", {"query": "/etc/shadow", "k": 2}, "safe", (), "root:"),
    _c("search", "file_uri", {"query": "file:///etc/passwd"}, "safe", (), "root:x:0"),
    _c("search", "sql_injection", {"query": "'; DROP TABLE chunks; --"}, "safe"),
    _c("search", "regex_bomb", {"query": "(a+)+$" * 20}, "safe"),
    _c("search", "huge_k", {"query": "json", "k": 10**9}, "refused"),
    _c("search", "negative_k", {"query": "json", "k": -1}, "refused"),
    _c("search", "k_as_string", {"query": "json", "k": "3; rm -rf /"}, "refused"),
    _c("search", "long_query", {"query": "word " * 10000}, "refused"),
    _c("search", "empty_query", {"query": "   "}, "refused"),
    _c("search", "unknown_argument", {"query": "json", "path": "/etc/passwd"}, "refused"),
    _c("search", "missing_query", {"k": 3}, "refused"),
    _c("search", "nul_bytes", {"query": "json\x00../../etc/passwd"}, "safe", (), "root:x:0"),
]
SEARCH_OK = [
    _c("search", "json", {"query": "decode a JSON document", "k": 3}, "ok", "[1]"),
    _c("search", "regex", {"query": "regular expression pattern match", "k": 2}, "ok", "[2]"),
    _c("search", "default_k", {"query": "random number generator"}, "ok", "[1]"),
]

ATTACKS = CALCULATOR + PYTHON + SQL + SEARCH
BENIGN = CALCULATOR_OK + PYTHON_OK + SQL_OK + SEARCH_OK
ALL_CASES = ATTACKS + BENIGN


@dataclass
class Outcome:
    case: Case
    passed: bool
    why: str  # what failed ("" when passed)
    result: str | None  # the tool's return value, or None when it raised
    error: str | None  # the ToolError message, or None
    seconds: float


def _fill(value, subs: dict):
    if isinstance(value, str):  # plain replacement: code and queries are full of other braces
        for k, v in subs.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Harness:
    """Tools plus host-side witnesses in ``work_dir``: ``canary.txt``, ``outside/`` and a demo database.

    ``index`` defaults to a BM25 index over the first ``n_docs`` python-docs documents.
    """

    work_dir: Path
    python_timeout_s: float = 1.0
    memory_mb: int = 128
    index: object = None
    n_docs: int = 400
    tools: dict = field(default_factory=dict)

    def __post_init__(self):
        from dodai.tools.calculator import calculator_tool
        from dodai.tools.python_sandbox import python_tool
        from dodai.tools.search import search_tool
        from dodai.tools.sql import demo_database, sql_tool

        self.work_dir = Path(self.work_dir).resolve()
        self.outside = self.work_dir / "outside"
        self.outside.mkdir(parents=True, exist_ok=True)
        self.canary = self.work_dir / "canary.txt"
        self.canary.write_text("the canary is alive\n", encoding="utf-8")
        self.db = demo_database(self.work_dir / "demo.db")
        if self.index is None:
            from dodai.tools import demo_index

            self.index = demo_index(n_docs=self.n_docs)
        self.tools = {"calculator": calculator_tool(),
                      "python": python_tool(self.python_timeout_s, self.memory_mb),
                      "sql": sql_tool(self.db), "search": search_tool(self.index)}
        self.baseline = self.host_state()

    def reset(self) -> None:
        """Restore the witnesses (canary, empty ``outside/``) and take a new baseline: for ablations."""
        import shutil

        shutil.rmtree(self.outside, ignore_errors=True)
        self.outside.mkdir(parents=True, exist_ok=True)
        self.canary.unlink(missing_ok=True)
        self.canary.write_text("the canary is alive\n", encoding="utf-8")
        self.baseline = self.host_state()

    def host_state(self) -> dict:
        return {"canary": _sha256(self.canary) if self.canary.is_file() else None,
                "outside": sorted(os.listdir(self.outside)) if self.outside.is_dir() else None,
                "db": _sha256(self.db) if self.db.is_file() else None,
                "canary_mode": self.canary.stat().st_mode if self.canary.exists() else None}

    def time_bound(self, case: Case) -> float:
        return self.python_timeout_s + 5.0 if case.tool == "python" else 5.0

    def run(self, case: Case, harm_only: bool = False) -> Outcome:
        """Call the tool and judge the outcome. ``harm_only``: judge only the host witnesses, the time and
        output bounds and ``must_not_contain`` (did harm happen?), not whether a refusal was shown."""
        tool: Tool = self.tools[case.tool]
        args = _fill(case.args, {"canary": str(self.canary), "outside": str(self.outside)})
        t0 = time.perf_counter()
        result = error = None
        try:
            result = tool.call(args)
        except ToolError as e:
            error = str(e)
        dt = time.perf_counter() - t0
        why = self._judge(case, tool, result, error, dt, harm_only)
        return Outcome(case, not why, why, result, error, dt)

    def _judge(self, case: Case, tool: Tool, result, error, dt, harm_only: bool = False) -> str:
        text = error if error is not None else result
        state = self.host_state()
        if state != self.baseline:
            changed = [k for k in state if state[k] != self.baseline[k]]
            return f"host changed: {', '.join(changed)}"
        if error is not None and "\n" in error:
            return "a ToolError message must be one line"
        if dt > self.time_bound(case):
            return f"took {dt:.1f} s (bound {self.time_bound(case):g} s)"
        if len(text) > tool.max_output_chars + 100:
            return f"output of {len(text)} characters"
        for bad in case.must_not_contain:
            if bad in text:
                return f"output reveals {bad!r}"
        if harm_only:
            return ""
        if case.must_contain and not any(s in text for s in case.must_contain):
            return f"expected one of {list(case.must_contain)} in {text[-200:]!r}"
        denied = error is not None or (case.tool == "python" and any(s in text for s in DENIED_SIGNS))
        if case.expect == "refused" and not denied:
            return f"not refused: {text[-200:]!r}"
        if case.expect == "ok" and denied:
            return f"falsely blocked: {text[-200:]!r}"
        if case.expect == "ok" and case.tool == "python" and "[exit status" in text:
            return f"benign program failed: {text[-200:]!r}"
        return ""

    def run_all(self, cases=None) -> list[Outcome]:
        return [self.run(c) for c in (ALL_CASES if cases is None else cases)]


def summarize(outcomes: list[Outcome]) -> list[dict]:
    """Per tool: attacks blocked / total, benign calls blocked / total, median latency per call (ms)."""
    import statistics

    rows = []
    for tool in ("calculator", "python", "sql", "search"):
        mine = [o for o in outcomes if o.case.tool == tool]
        if not mine:
            continue
        att = [o for o in mine if o.case.attack]
        ben = [o for o in mine if not o.case.attack]
        rows.append({"tool": tool, "attacks": len(att), "blocked": sum(o.passed for o in att),
                     "blocked_rate": sum(o.passed for o in att) / max(len(att), 1),
                     "benign": len(ben), "false_blocks": sum(not o.passed for o in ben),
                     "false_block_rate": sum(not o.passed for o in ben) / max(len(ben), 1),
                     "median_ms_benign": 1000 * statistics.median([o.seconds for o in ben]) if ben else float("nan"),
                     "median_ms_all": 1000 * statistics.median([o.seconds for o in mine])})
    return rows


# ---- escapes from the Python tool's process: what the OS sandbox must stop -------------------------------
# Each program prints ``ESCAPED: ...`` when it gets past the boundary (reads a host secret, writes or
# creates something on the host, reaches the network, starts a process, signals a host process, holds
# memory beyond its limits). They run with the audit hook installed, as in production, and switch it off
# themselves where they need to (``UNHOOK``: the hook's closure is found through the garbage collector
# and its code replaced). ``old_design``: the attack succeeds against the audit-hook design run by root
# without its uid drop, i.e. ``unsafe_no_sandbox=True, drop_privileges=False`` as root (the uid drop
# held some of them, some by accident of file permissions; most also succeed for a non-root user) — the
# tests check that too, so each case is a real attack and not one that fails for an unrelated reason.
# Placeholders: {token} (names what an attack creates), {host_pid} (the host process), {port} (a TCP
# listener on 127.0.0.1), {abstract} (an abstract Unix socket), {canary} (a file in the host's /tmp),
# {hostname}, {limit_mb} (memory_mb + disk_mb).

UNHOOK = '''
import gc, sys
def _mk(hook, marker):
    def guarded(event, args):
        return (hook, marker) and None
    return guarded
for _o in gc.get_objects():
    if type(_o).__name__ == "function" and _o.__name__ == "guarded" and _o.__code__.co_filename == "<string>":
        _o.__code__ = _mk(None, None).__code__
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "_Refuse"]
for _k in [k for k, v in list(sys.modules.items()) if v is None]:
    del sys.modules[_k]
'''

ALIAS = '''
def load_alias(name):
    import glob, importlib.machinery, importlib.util, os, sys
    for d in sys.path:
        for p in glob.glob(os.path.join(d, name + ".*so")):
            full = "alias." + name  # the init symbol comes from the last component: PyInit_<name>
            loader = importlib.machinery.ExtensionFileLoader(full, p)
            m = importlib.util.module_from_spec(importlib.util.spec_from_file_location(full, p, loader=loader))
            loader.exec_module(m)
            return m
    raise ImportError(name)
'''


@dataclass(frozen=True)
class Escape:
    name: str
    code: str
    old_design: bool  # the attack gets through the audit-hook design (demonstrated by the tests)
    note: str = ""


SANDBOX_ESCAPES = [
    Escape("unhook_then_read_and_write", UNHOOK + '''
import os
got = []
try:
    if "root:" in open("/etc/passwd").read():
        got.append("read /etc/passwd")
except OSError as e:
    print("passwd:", type(e).__name__)
try:
    if "etc" in os.listdir("/"):
        got.append("listed the host's /")
except OSError as e:
    print("listdir:", type(e).__name__)
try:
    with open("/tmp/dodai-attack-{token}", "w") as f:
        f.write("x")
    got.append("created /tmp/dodai-attack-{token}")
except OSError as e:
    print("create:", type(e).__name__)
try:
    with open("{canary}", "a") as f:
        f.write("pwned")
    got.append("appended to the canary")
except OSError as e:
    print("canary:", type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', True, "the audit hook switched off from inside through gc, then host files read and written"),
    Escape("alias_extension_spawn", ALIAS + '''
import os
pp = load_alias("_posixsubprocess")
r, w = os.pipe()
try:
    pid = pp.fork_exec([b"/bin/sh", b"-c", b"echo ESCAPED: a shell ran"], [b"/bin/sh"], True, (w,), None, None,
                       -1, -1, -1, w, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)
    os.close(w)
    print(os.read(r, 200).decode() or "ESCAPED: a process was created")
    os.waitpid(pid, 0)
except OSError as e:
    print("fork_exec:", type(e).__name__, e)
''', True, "_posixsubprocess loaded under another module name: fork_exec raises no audit event"),
    Escape("unhook_alias_socket", UNHOOK + ALIAS + '''
got = []
sk = load_alias("_socket")
try:
    s = sk.socket(sk.AF_INET, sk.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", {port}))
    got.append("connected to 127.0.0.1:{port}")
except OSError as e:
    print("tcp:", type(e).__name__, e)
try:
    u = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    u.settimeout(2)
    u.connect("\\0{abstract}")
    got.append("connected to the host's abstract socket")
except OSError as e:
    print("unix:", type(e).__name__, e)
print("ESCAPED:" if got else "held:", got)
''', True, "hook off + _socket loaded under another name: TCP and abstract Unix sockets of the host"),
    Escape("dir_fd_relative_paths", '''
import os
os.makedirs("a/b/c/d/e/f/g/h")
top = os.open(".", os.O_RDONLY)
os.chdir("a/b/c/d/e/f/g/h")  # the hook resolves relative paths against the cwd, the kernel against dir_fd
up = "../" * 8
got = []
try:
    fd = os.open(up + "etc/passwd", os.O_RDONLY, dir_fd=top)
    if b"root:" in os.read(fd, 65536):
        got.append("read /etc/passwd")
except OSError as e:
    print("read:", type(e).__name__)
try:
    fd = os.open(up + "tmp/dodai-attack-{token}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=top)
    os.write(fd, b"x")
    got.append("created /tmp/dodai-attack-{token}")
except OSError as e:
    print("create:", type(e).__name__)
try:
    fd = os.open(up + "tmp", os.O_RDONLY, dir_fd=top)
    if os.listdir(fd):
        got.append("listed the host's /tmp")
except OSError as e:
    print("list:", type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', True, "relative paths with dir_fd= are checked against the cwd, not against the directory opened"),
    Escape("symlinks_for_host_cleanup", UNHOOK + '''
import os
for target, name in (("/tmp", "ln_tmp"), ("{canary}", "ln_canary"), ("/", "ln_root"), ("/tmp", "ln_loop")):
    os.symlink(target, name)
os.mkdir("locked")
os.symlink("/tmp", "locked/ln_tmp")
os.symlink("{canary}", "locked/ln_canary")
os.mkdir("locked/inner")
os.chmod("locked/inner", 0)
os.chmod("locked", 0)
os.mkdir("readonly")
os.symlink("/tmp", "readonly/ln_tmp")
os.chmod("readonly", 0o500)
os.mkfifo("fifo")
os.chmod(".", 0o500)
print("planted")
''', False, "symlinks to /tmp and the canary inside unreadable/unwritable dirs: bait for a host-side cleanup"),
    Escape("deep_directory_tree", '''
import os
fd = os.open(".", os.O_RDONLY)
for i in range(1500):
    os.mkdir("d", dir_fd=fd)
    nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = nfd
print("depth 1500")
''', False, "a tree deeper than the host's recursion limit, to crash a recursive cleanup"),
    Escape("memfd_and_shm_beyond_limits", ALIAS + '''
import os
MB = 2**20
held = 0
fds = []
try:
    for i in range(60):
        fd = os.memfd_create("m%d" % i)
        for _ in range(8):
            os.write(fd, b"x" * MB)
        fds.append(fd)
        held += 8 * MB
except OSError as e:
    print("memfd:", type(e).__name__, e)
try:
    shm = load_alias("_posixshmem")
    fd = shm.shm_open("/dodai-attack-{token}", os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(8):
        os.write(fd, b"x" * MB)
    held += 8 * MB
    print("ESCAPED: a /dev/shm segment that outlives the run")
except OSError as e:
    print("shm_open:", type(e).__name__, e)
written = 0
try:
    for i in range(60):
        with open("fill%d" % i, "wb") as f:
            for _ in range(8):
                f.write(b"x" * MB)
                written += MB
except OSError as e:
    print("fill:", type(e).__name__)
print("held MB", held // MB, "written MB", written // MB)
if held + written > {limit_mb} * MB:
    print("ESCAPED: holds", (held + written) // MB, "MB outside the address-space limit")
''', True, "memfd files and /dev/shm segments hold memory the address-space limit does not count"),
    Escape("nss_user_database", '''
import os, pwd, grp
users, groups = pwd.getpwall(), grp.getgrall()
print(len(users), "users", len(groups), "groups")
got = [u.pw_name for u in users] + [g.gr_name for g in groups]
if os.uname().nodename == "{hostname}":
    got.append("the host name")
print("ESCAPED:" if got else "held:", got[:5])
''', True, "the user and group databases (and the host name) read through NSS: no open event"),
    Escape("proc_and_signals", UNHOOK + '''
import os, signal
got = []
if os.path.exists("/proc/{host_pid}"):
    got.append("sees the host process in /proc")
try:
    os.kill({host_pid}, 0)
    got.append("may signal the host process")
except ProcessLookupError:
    pass
except PermissionError:
    got.append("sees the host process")
try:
    with open("/proc/self/mountinfo") as f:
        got.append("reads /proc (%d mounts)" % len(f.readlines()))
except OSError as e:
    print("proc:", type(e).__name__)
if os.getppid() != {host_pid}:
    try:
        os.kill(os.getppid(), signal.SIGKILL)  # inside the pid namespace: bwrap's reaper, which ignores it
    except OSError as e:
        print("kill parent:", type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', True, "host processes seen and signalled; the parent killed"),
    Escape("processes_and_threads", UNHOOK + '''
import os, threading, time
got = []
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    got.append("fork")
except OSError as e:
    print("fork:", type(e).__name__)
try:
    t = threading.Thread(target=time.sleep, args=(0,))
    t.start()
    t.join()
    got.append("thread")
except RuntimeError as e:
    print("thread:", e)
try:
    pid = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(pid, 0)
    got.append("posix_spawn")
except OSError as e:
    print("spawn:", type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', True, "fork, threads and posix_spawn with the hook off"),
    Escape("host_inodes_through_devices_and_fds", UNHOOK + '''
import os, stat
got = []
for p in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full", "/dev/tty", "/dev/shm", "/tmp"):
    try:
        st = os.stat(p)
        os.chmod(p, st.st_mode & 0o7777)  # the same mode: a no-op, but only an owner may do it
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        got.append("chmod/utime " + p)
    except OSError as e:
        print(p, type(e).__name__)
for fd in range(256):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    print("fd", fd, stat.filemode(st.st_mode))
    if stat.S_ISCHR(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        try:
            os.fchmod(fd, st.st_mode & 0o7777)
            got.append("fchmod fd %d (a host %s)" % (fd, stat.filemode(st.st_mode)))
        except OSError as e:
            print("fd", fd, type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', True, "host inodes the child owns as mapped root: device nodes by path, host files behind inherited fds"),
    Escape("write_outside_the_work_dir", UNHOOK + '''
import os, sys
got = []
stdlib = os.path.dirname(os.__file__)
for d in ("/", "/dev", stdlib, os.path.dirname(sys.executable)):
    p = os.path.join(d, "dodai-attack-{token}")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(p)
        got.append("created a file in " + d)
    except OSError as e:
        print(d, type(e).__name__)
try:
    fd = os.open(os.__file__, os.O_WRONLY)  # no O_TRUNC: opening is the test, nothing is written
    os.close(fd)
    got.append("opened the stdlib for writing")
except OSError as e:
    print("stdlib:", type(e).__name__)
try:
    os.chmod(os.__file__, os.stat(os.__file__).st_mode & 0o7777)  # the same mode: a no-op if it works
    got.append("chmod on the stdlib")
except OSError as e:
    print("chmod:", type(e).__name__)
print("ESCAPED:" if got else "held:", got)
''', False, "files created or opened for writing outside the work dir (the interpreter's own files)"),
]
