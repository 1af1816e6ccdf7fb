"""`dodai data list | show NAME | pull NAME | prepare PATH --out DIR`: corpora and train/val preparation."""

from __future__ import annotations

HELP = "list built-in corpora, show or pull one, or prepare user text (.txt/.md/folder/.jsonl) into train/val"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["list", "show", "pull", "prepare"],
                   help="list, show NAME, pull NAME (austen, ja-manpages, enwiki-sample), or prepare PATH")
    p.add_argument("target", nargs="?", help="corpus name (show) or a file/folder/.jsonl/corpus name (prepare)")
    p.add_argument("--out", help="output folder for prepare (train.txt, val.txt, meta.json)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share held out for validation (default: 0.1)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl lines (default: text)")
    p.add_argument("--seed", type=int, default=0, help="seed of the by-document hash split (default: 0)")
    p.add_argument("--chars", type=int, default=600, help="characters to print with show (default: 600)")


def run(args) -> int:
    import json
    import sys

    from dodai.data import corpora
    from dodai.data.prepare import prepare
    from dodai.errors import DodaiError

    if args.action == "list":
        for c in corpora.list_corpora():
            p = c.path()
            missing = "not built yet" if c.local else "not pulled"
            state = f"cached {p.stat().st_size / 1e6:.2f} MB" if p.is_file() else missing
            print(f"{c.name:<16} {state:<18} {c.description}")
        print(f"\ncache: {corpora.cache_dir() / 'corpora'}")
        return 0
    if not args.target:
        raise DodaiError(f"`dodai data {args.action}` needs a {'PATH' if args.action == 'prepare' else 'corpus name'}")
    if args.action == "pull":
        from dodai.data.pull import pull

        path = pull(args.target)
        print(f"{path}\t{path.stat().st_size:,} bytes")
        return 0
    if args.action == "show":
        path = corpora.corpus_path(args.target)
        with open(path, encoding="utf-8") as f:
            snippet = f.read(max(args.chars, 0))
        print(snippet)
        print(f"\n[{path}: {path.stat().st_size:,} bytes]", file=sys.stderr)
        return 0
    if not args.out:
        raise DodaiError("`dodai data prepare` needs --out DIR")
    meta = prepare(args.target, args.out, args.val_fraction, args.text_field, args.seed)
    print(json.dumps(meta, indent=2))
    return 0
