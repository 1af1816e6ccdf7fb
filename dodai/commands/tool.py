"""``dodai tool list`` / ``dodai tool run NAME --args JSON``: the R7.5 tools from the command line.

``dodai tool list`` prints each tool's name and description (``--json``: the function-calling specs a
chat template receives). ``dodai tool run calculator --args '{"expression": "2**100 / 3"}'`` calls one
tool and prints its result on stdout. Bad JSON, an unknown tool and any refusal (:class:`ToolError`)
are one-line errors with exit status 2. ``sql`` uses ``--db`` (default: the stdlib demo database,
built in the cache on first use); ``search`` uses ``--index`` (a ``dodai rag index`` folder; default:
a BM25 index over the python-docs corpus, built on the fly).
"""

from __future__ import annotations

HELP = "tool use (R7.5): `tool list` shows the tools, `tool run NAME --args JSON` calls one"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list the tools and their descriptions")
    ls.add_argument("--json", action="store_true", help="print the function-calling specs as JSON")
    run = sub.add_parser("run", help="call one tool with JSON arguments and print its result")
    run.add_argument("name", help="tool name: calculator, python, sql or search")
    run.add_argument("--args", required=True, help='the arguments as a JSON object, e.g. \'{"expression": "1/3"}\'')
    run.add_argument("--db", default=None, help="SQLite database for the sql tool (default: the stdlib demo DB)")
    run.add_argument("--index", default=None, help="`dodai rag index` folder for the search tool "
                                                   "(default: BM25 over python-docs)")
    run.add_argument("--timeout", type=float, default=5.0, help="python tool: wall/CPU seconds (default 5)")
    run.add_argument("--memory-mb", type=int, default=256, help="python tool: address-space limit (default 256)")
    run.add_argument("--unsafe-no-sandbox", action="store_true",
                     help="python tool: run without the OS sandbox (bubblewrap) when it is missing: UNSAFE")


def run(args) -> int:
    import json

    from dodai.errors import DodaiError
    from dodai.tools import TOOL_NAMES, default_tools

    if args.action == "list":
        from dodai.tools.calculator import calculator_tool
        from dodai.tools.python_sandbox import python_tool

        # sql/search descriptions depend on their data; show the generic ones without building anything
        specs = [calculator_tool().spec(), python_tool().spec(),
                 {"type": "function", "function": {"name": "sql", "description":
                  "Run one read-only SQLite SELECT query (schema shown once a database is chosen)."}},
                 {"type": "function", "function": {"name": "search", "description":
                  "Search a document collection; numbered passages with source ids."}}]
        if args.json:
            print(json.dumps(specs, ensure_ascii=False, indent=2))
        else:
            for s in specs:
                print(f"{s['function']['name']:<11} {s['function']['description']}")
        return 0

    if args.name not in TOOL_NAMES:
        raise DodaiError(f"unknown tool {args.name!r}; known: {', '.join(TOOL_NAMES)}")
    try:
        arguments = json.loads(args.args)
    except ValueError as e:
        raise DodaiError(f"--args is not valid JSON ({e})") from None
    if not isinstance(arguments, dict):
        raise DodaiError("--args must be a JSON object, e.g. '{\"expression\": \"1+1\"}'")
    index = None
    if args.name == "search" and args.index:
        from dodai.rag.index import RagIndex

        index = RagIndex.load(args.index)
    tool = default_tools([args.name], db_path=args.db, index=index, timeout_s=args.timeout,
                         memory_mb=args.memory_mb)[args.name]
    if args.name == "python" and args.unsafe_no_sandbox:
        from dodai.tools.python_sandbox import python_tool

        tool = python_tool(args.timeout, args.memory_mb, unsafe_no_sandbox=True)
    from dodai.tools.base import ToolError

    try:
        print(tool.call(arguments))
    except ToolError as e:
        raise DodaiError(str(e).splitlines()[0] if str(e) else "tool error") from None
    return 0
