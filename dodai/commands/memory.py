"""``dodai memory add|search|list|forget --dir DIR``: manage a persistent long-term vector memory.

The folder is the one ``dodai chat --memory DIR`` reads and writes (format: dodai/memory/vector.py).
``add`` embeds each text with the MiniLM port (near-duplicates are not stored twice), ``search`` prints
the best matches with their cosine, ``list`` prints every memory, ``forget`` deletes by id (or a unique
id prefix of at least 6 characters).
"""

from __future__ import annotations

HELP = "long-term vector memory: add / search / list / forget items in a memory folder"


def add_arguments(p) -> None:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", required=True, help="the memory folder (created by add when absent)")
    common.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = sub.add_parser("add", parents=[common], help="embed and store texts (near-duplicates are skipped)")
    a.add_argument("texts", nargs="+", metavar="TEXT", help="texts to remember")
    a.add_argument("--role", default="user", help="role recorded with each item (default user)")
    a.add_argument("--no-dedup", action="store_true", help="store near-duplicates too")
    s = sub.add_parser("search", parents=[common], help="the memories closest to a query (cosine)")
    s.add_argument("texts", nargs="+", metavar="QUERY", help="the query (words are joined with spaces)")
    s.add_argument("--k", type=int, default=5, help="how many results (default 5)")
    s.add_argument("--min-score", type=float, default=0.0, help="lowest cosine shown (default 0)")
    sub.add_parser("list", parents=[common], help="every memory, oldest first")
    f = sub.add_parser("forget", parents=[common], help="delete memories by id (or unique id prefix)")
    f.add_argument("texts", nargs="+", metavar="ID", help="ids from `dodai memory list`")


def run(args) -> int:
    import json
    import sys
    from dataclasses import asdict
    from datetime import datetime, timezone

    from dodai.errors import DodaiError
    from dodai.memory.vector import VectorMemory

    mem = VectorMemory(args.dir, create=args.action == "add")
    out = sys.stdout

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")

    if args.action == "add":
        if not args.texts:
            raise DodaiError("add: give the texts to remember")
        items, new = mem.add_many(args.texts, role=args.role, metadata={"source": "cli"}, dedup=not args.no_dedup)
        for it, is_new in zip(items, new):
            if args.json:
                out.write(json.dumps({**asdict(it), "new": is_new}, ensure_ascii=False) + "\n")
            else:
                out.write(f"{it.id}  {'added' if is_new else 'duplicate of existing'}  {it.text}\n")
    elif args.action == "search":
        if not args.texts:
            raise DodaiError("search: give the query")
        if args.k < 1:
            raise DodaiError(f"--k must be positive, got {args.k}")
        for h in mem.search(" ".join(args.texts), k=args.k, min_score=args.min_score):
            if args.json:
                out.write(json.dumps({**asdict(h.item), "score": round(h.score, 6)}, ensure_ascii=False) + "\n")
            else:
                out.write(f"{h.score:.4f}  {h.item.id}  {h.item.text}\n")
    elif args.action == "list":
        for it in mem.items:
            if args.json:
                out.write(json.dumps(asdict(it), ensure_ascii=False) + "\n")
            else:
                out.write(f"{it.id}  {when(it.time)}  {it.role:<9}  {it.text}\n")
        print(f"dodai: {len(mem)} memories in {args.dir}", file=sys.stderr)
    else:  # forget
        if not args.texts:
            raise DodaiError("forget: give the ids to delete (see `dodai memory list`)")
        missing = [i for i in args.texts if not mem.delete(i)]
        if missing:
            raise DodaiError(f"no memory with id {', '.join(missing)}")
        print(f"dodai: forgot {len(args.texts)} memor{'y' if len(args.texts) == 1 else 'ies'}", file=sys.stderr)
    return 0
