"""`dodai roadmap`: the index of roadmap items; `dodai roadmap run ID` runs an item's experiment."""

from __future__ import annotations

import json
import sys

HELP = ("list the roadmap items (R1.1 ... R9.3) with their status (derived from committed evidence and claims) "
        "and demo command; `run ID` runs one; `book --out DIR` writes the bilingual book; `page` the three-step "
        "page with live demos")


def add_arguments(p) -> None:
    p.add_argument("action", nargs="?", choices=["list", "run", "book", "page"], default="list",
                   help="list (default); run an item's experiment; book: write the static bilingual book from the "
                        "committed evidence (--out, default runs/book); page: the three-step page with live demos "
                        "(--out, default runs/page)")
    p.add_argument("id", nargs="?", help="roadmap item ID for `run`, e.g. R5.4")
    p.add_argument("--json", action="store_true",
                   help="print the index as a JSON list: status, its reasons, evidence paths, claims with measured "
                        "values, tests")
    p.add_argument("--out", default=None, help="run folder for `run` (default runs/<ID>)")
    p.add_argument("--quick", action="store_true", help="small, fast version of the experiment")


def run(args) -> int:
    from dodai import roadmap
    from dodai.errors import DodaiError

    if args.action == "book":
        from dodai.book import build_book

        index = build_book(args.out or "runs/book")
        print(f"book: {index}", file=sys.stderr)
        return 0
    if args.action == "page":
        from dodai.site import build_page

        index = build_page(args.out or "runs/page", quick=args.quick)
        print(f"page: {index}", file=sys.stderr)
        return 0
    if args.action == "run":
        if not args.id:
            raise DodaiError("`dodai roadmap run` needs an item ID, e.g. `dodai roadmap run R5.4`")
        return _run_experiment(args.id, args.out, args.quick)
    items = roadmap.as_dicts()
    if args.json:
        json.dump(items, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    n_ok = sum(it["status"] == roadmap.WORKING for it in items)
    n_full = sum(it["status"] == roadmap.WORKING and (it["evidence"] or {}).get("mode") == "full" for it in items)
    print(f"dodai roadmap: {n_ok}/{len(items)} items working ({n_full} on full-run evidence); working = experiment "
          "registered + claims hold on the committed evidence + tests exist\n")
    marks = {roadmap.WORKING: "✔", roadmap.FAILING: "✘", roadmap.UNVERIFIED: "?", roadmap.PLANNED: "·"}
    for it in items:
        ev = it["evidence"]
        where = f"{ev['path']} ({ev.get('mode') or '?'} run)" if ev else "no evidence"
        n_hold = sum(c["holds"] for c in it["claims"])
        print(f"{marks.get(it['status'], '?')} {it['id']:<5} {it['ja']}  —  {it['en']}")
        print(f"        {it['status']:<10} {it['command']}  |  {where}, claims {n_hold}/{len(it['claims'])}"
              + (f"  ({'; '.join(it['reasons'])})" if it["reasons"] else ""))
    return 0


def _run_experiment(item_id: str, out: str | None, quick: bool) -> int:
    import importlib
    from pathlib import Path

    from dodai import roadmap
    from dodai.errors import DodaiError
    from dodai.experiments import EXPERIMENTS

    it = roadmap.get(item_id)
    target = EXPERIMENTS.get(it.id)
    if target is None:
        raise DodaiError(f"{it.id} has no experiment yet (status: {it.status}); see `dodai roadmap`")
    mod_name, fn_name = target.split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    out_dir = Path(out or f"runs/{it.id}")
    import time

    from dodai import report

    report.CONTEXT.update(item=it.id, mode="quick" if quick else "full",
                          command=f"dodai roadmap run {it.id}" + (" --quick" if quick else ""),
                          t0=time.time(), cpu0=report._cpu_seconds(), load0=report._loadavg())
    fn(out_dir, quick=quick)
    print(f"report: {out_dir / 'report.md'}", file=sys.stderr)
    return 0
