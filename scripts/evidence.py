#!/usr/bin/env python
"""Regenerate the committed evidence of roadmap items: ``evidence/<ID>/`` (report.md, results.json, plots).

    .venv/bin/python scripts/evidence.py R2.1            # the full run of one item
    .venv/bin/python scripts/evidence.py R2.1 R4.2 --quick
    .venv/bin/python scripts/evidence.py --all --quick   # every registered item, quick mode
    .venv/bin/python scripts/evidence.py --all --order cheapest --timeout 1800 --commit

Each item runs as ``dodai roadmap run ID [--quick] --out <scratch>`` in a child process (one at a time; the
machine is shared), so its report's provenance block names that command, the date, the CPU, the threads and the
load average. Only when the run finishes does its report, results.json and PNG/SVG plots replace
``evidence/<ID>/``: a run that fails or passes ``--timeout`` leaves the evidence already there untouched. A full
run never gives way to a quick one unless ``--replace-full`` is given. Every attempt (ok, error, timeout) is
appended to ``evidence/attempts.jsonl`` with its wall time and load average, so the evidence folder also says
which full runs were tried and did not finish. ``--commit`` commits each item's folder as it lands (only that
folder and the attempts log). ``speedrun`` is accepted as an item too (``dodai speedrun --out <scratch>``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE = ROOT / "evidence"
SCRATCH = ROOT / "runs" / "evidence-scratch"
KEEP_SUFFIXES = {".md", ".json", ".png", ".svg"}
KEEP_MAX_BYTES = 2_000_000
# Items other engineers write evidence for themselves; --all leaves them out unless --include-owned.
OWNED_ELSEWHERE = {"R7.1", "R7.3", "R7.4", "R8.2"}


def _items() -> list[str]:
    """Registered items, each experiment once (R6.4 shares R4.3's experiment and so its evidence)."""
    sys.path.insert(0, str(ROOT))
    from dodai.experiments import EXPERIMENTS

    seen, out = set(), []
    for item, target in EXPERIMENTS.items():
        if target not in seen:
            seen.add(target)
            out.append(item)
    return out


def _mode_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "results.json").read_text())["meta"].get("mode")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cost_hint(item: str) -> float:
    """Wall seconds of the item's last committed run (a quick run counted x10), to order the cheapest first."""
    try:
        meta = json.loads((EVIDENCE / item / "results.json").read_text())["meta"]
        wall = meta.get("process_wall_s") or meta.get("wall_s") or 0
        return float(wall) * (1 if meta.get("mode") == "full" else 10)
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")


def _log(entry: dict) -> None:
    EVIDENCE.mkdir(exist_ok=True)
    with open(EVIDENCE / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _commit(paths: list[Path], message: str) -> None:
    rel = [str(p.relative_to(ROOT)) for p in paths if p.exists()]
    for _attempt in range(30):
        if (ROOT / ".git" / "index.lock").exists():
            time.sleep(2)
            continue
        add = subprocess.run(["git", "-C", str(ROOT), "add", "--", *rel], capture_output=True, text=True)
        if add.returncode == 0:
            c = subprocess.run(["git", "-C", str(ROOT), "commit", "-m", message, "--", *rel], capture_output=True,
                               text=True)
            if c.returncode == 0 or "nothing to commit" in c.stdout:
                return
            print(f"commit failed: {c.stderr.strip() or c.stdout.strip()}", file=sys.stderr)
        time.sleep(2)


def run_item(item: str, quick: bool, timeout: float, replace_full: bool, commit: bool) -> str:
    target = EVIDENCE / item
    if quick and _mode_of(target) == "full" and not replace_full:
        print(f"{item}: full-run evidence present; not replaced by a quick run", file=sys.stderr)
        return "kept-full"
    scratch = SCRATCH / item
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    py = sys.executable
    if item == "speedrun":
        cmd = [py, "-m", "dodai", "speedrun", "--out", str(scratch)] + (["--minutes", "1"] if quick else [])
    else:
        cmd = [py, "-m", "dodai", "roadmap", "run", item, "--out", str(scratch)] + (["--quick"] if quick else [])
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.time()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{item}: {' '.join(cmd[1:])} (load {load0})", file=sys.stderr, flush=True)
    with open(scratch.parent / f"{item}.log", "w") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            outcome = "ok" if rc == 0 else f"error rc={rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            outcome = f"timeout after {timeout:.0f} s"
    entry = {"item": item, "mode": "quick" if quick else "full", "started": started,
             "wall_s": round(time.time() - t0, 1), "load_average_start": load0,
             "load_average_end": [round(x, 2) for x in os.getloadavg()], "outcome": outcome}
    if outcome == "ok" and not (scratch / "results.json").is_file():
        entry["outcome"] = outcome = "error: no results.json"
    if outcome != "ok":
        tail = (scratch.parent / f"{item}.log").read_text(errors="replace").strip().splitlines()[-3:]
        entry["log_tail"] = tail
    _log(entry)
    print(f"{item}: {outcome} in {entry['wall_s']} s", file=sys.stderr, flush=True)
    if outcome == "ok":  # the child's whole wall time, measured here around the process
        res = json.loads((scratch / "results.json").read_text())
        res.setdefault("meta", {})["process_wall_s"] = entry["wall_s"]
        (scratch / "results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    if outcome == "ok" and item == "speedrun":  # dodai speedrun is not run through `dodai roadmap run`
        res = json.loads((scratch / "results.json").read_text())
        res.setdefault("meta", {}).update(item="speedrun", mode="quick" if quick else "full",
                                          command="dodai speedrun" + (" --minutes 1" if quick else ""))
        (scratch / "results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    if outcome == "ok":
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for f in sorted(scratch.iterdir()):
            if f.is_file() and f.suffix in KEEP_SUFFIXES and f.stat().st_size <= KEEP_MAX_BYTES:
                shutil.copy2(f, target / f.name)
    if commit:
        what = f"{entry['mode']} run" if outcome == "ok" else f"{entry['mode']} run attempt ({outcome})"
        _commit([target, EVIDENCE / "attempts.jsonl"],
                f"evidence/{item}: {what}, {entry['wall_s']:.0f} s wall at load {load0[0]}")
    return outcome


def backfill_process_wall() -> int:
    """Give committed evidence that lacks it ``meta.process_wall_s``: the wall time this script measured around
    the run that wrote it (the last ok attempt of that item and mode in attempts.jsonl)."""
    attempts = [json.loads(x) for x in (EVIDENCE / "attempts.jsonl").read_text().splitlines() if x.strip()]
    n = 0
    for folder in sorted(p for p in EVIDENCE.iterdir() if p.is_dir()):
        f = folder / "results.json"
        res = json.loads(f.read_text())
        meta = res.get("meta")
        if not isinstance(meta, dict) or "process_wall_s" in meta:
            continue
        ok = [a for a in attempts
              if a["item"] == folder.name and a["mode"] == meta.get("mode") and a["outcome"] == "ok"]
        if ok:
            meta["process_wall_s"] = ok[-1]["wall_s"]
            f.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
            n += 1
    print(f"process_wall_s added to {n} evidence file(s)", file=sys.stderr)
    return 0


def write_readme_table() -> int:
    from dodai import roadmap

    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    a, b = text.find(roadmap.README_BEGIN), text.find(roadmap.README_END)
    if a < 0 or b < a:
        sys.exit(f"README.md has no {roadmap.README_BEGIN!r} ... {roadmap.README_END!r} block")
    new = text[:a] + roadmap.README_BEGIN + "\n\n" + roadmap.status_table_markdown() + "\n" + text[b:]
    readme.write_text(new, encoding="utf-8")
    print("README.md: status table regenerated", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("items", nargs="*", help="roadmap IDs (R2.1 ...) or 'speedrun'")
    ap.add_argument("--all", action="store_true", help="every registered item (and speedrun)")
    ap.add_argument("--include-owned", action="store_true", help=f"with --all, also {sorted(OWNED_ELSEWHERE)}")
    ap.add_argument("--quick", action="store_true", help="the experiments' quick mode (labelled quick)")
    ap.add_argument("--order", choices=["given", "cheapest"], default="given",
                    help="cheapest: by the CPU time of the item's last committed run")
    ap.add_argument("--skip-full", action="store_true", help="skip items whose evidence is already a full run")
    ap.add_argument("--replace-full", action="store_true", help="let a quick run replace full-run evidence")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per item (default 3600)")
    ap.add_argument("--commit", action="store_true", help="git-commit each item's evidence folder as it lands")
    ap.add_argument("--backfill-wall", action="store_true",
                    help="add meta.process_wall_s from attempts.jsonl to committed evidence that lacks it, then exit")
    ap.add_argument("--readme", action="store_true",
                    help="rewrite README.md's generated status table from the committed evidence, then exit")
    args = ap.parse_args(argv)
    if args.readme:
        return write_readme_table()
    if args.backfill_wall:
        return backfill_process_wall()
    from dodai.experiments import EXPERIMENTS

    known = set(EXPERIMENTS) | {"speedrun"}
    items = [i.upper() if i != "speedrun" else i for i in args.items]
    if args.all:
        items += [i for i in _items() if args.include_owned or i not in OWNED_ELSEWHERE] + ["speedrun"]
    bad = [i for i in items if i not in known]
    if bad or not items:
        ap.error(f"unknown item(s) {bad}" if bad else "name items or pass --all")
    items = list(dict.fromkeys(items))
    if args.order == "cheapest":
        items.sort(key=_cost_hint)
    if args.skip_full:
        items = [i for i in items if _mode_of(EVIDENCE / i) != "full"]
    failed = 0
    for item in items:
        out = run_item(item, args.quick, args.timeout, args.replace_full, args.commit)
        failed += out not in ("ok", "kept-full")
    if (ROOT / "README.md").is_file():  # the README's status table follows the evidence (not committed here)
        write_readme_table()
        print("README.md's status table was regenerated; check the README's quoted figures and commit it "
              "(tests/test_evidence.py fails while they drift)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
