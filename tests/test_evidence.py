"""Evidence behind every claim: an item marked working has committed evidence on which all its claims hold; every
claim can fail; every evidence folder names its command, date, machine and load; the README's status table is
the one derived from the evidence, and every other figure in the README (a percentage, a ratio, a decimal, a
rate, a duration) sits on a line that links a committed evidence or benchmark file containing that number."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from dodai import roadmap
from dodai.claims import CLAIMS, DEMONSTRATION, FINDING
from dodai.experiments import EXPERIMENTS

REPO = Path(__file__).resolve().parent.parent
IDS = [it.id for it in roadmap.ITEMS]


@pytest.fixture(scope="module")
def evals():
    return {i: roadmap.evaluate(i) for i in IDS}


def test_every_item_and_speedrun_has_claims_and_each_claim_is_labelled():
    for i in IDS:
        ev_id = roadmap.EVIDENCE_OF.get(i, i)
        assert CLAIMS.get(ev_id), f"{i}: no claims in dodai/claims.py"
    assert set(CLAIMS) <= set(IDS) | {"speedrun"}
    for cs in CLAIMS.values():
        for c in cs:
            assert c.kind in (FINDING, DEMONSTRATION) and c.en and c.ja


def test_every_claim_can_fail():
    """On results missing the keys a claim reads, it does not hold (it is never vacuously true)."""
    for cs in CLAIMS.values():
        for c in cs:
            r = c.evaluate({})
            assert r["holds"] is False and "error" in r, c.en


def test_working_means_registered_evidence_claims_and_tests(evals):
    n_working = 0
    for i, e in evals.items():
        if e["status"] != roadmap.WORKING:
            assert e["reasons"], f"{i} is {e['status']} without a reason"
            continue
        n_working += 1
        assert i in EXPERIMENTS
        ev = e["evidence"]
        assert ev and (REPO / ev["results"]).is_file(), i
        assert e["claims"] and all(c["holds"] for c in e["claims"]), i
        assert e["tests"] and all((REPO / t).is_file() for t in e["tests"]), i
    assert n_working >= 30


def test_a_failing_claim_makes_the_item_fail(tmp_path, monkeypatch):
    """Status is computed: point the evidence folder at a copy whose numbers contradict the claim."""
    src = json.loads((REPO / "evidence" / "R2.4" / "results.json").read_text())
    src["test_acc_min"] = 0.5
    (tmp_path / "R2.4").mkdir()
    (tmp_path / "R2.4" / "results.json").write_text(json.dumps(src))
    monkeypatch.setenv("DODAI_EVIDENCE", str(tmp_path))
    e = roadmap.evaluate("R2.4")
    assert e["status"] == roadmap.FAILING
    assert roadmap.evaluate("R2.1")["status"] == roadmap.UNVERIFIED  # no evidence there at all


def test_every_evidence_folder_names_command_date_machine_and_load():
    folders = [p for p in (REPO / "evidence").iterdir() if p.is_dir()]
    assert len(folders) >= 30
    for f in folders:
        res = json.loads((f / "results.json").read_text())
        meta = roadmap.evidence_meta(res)
        for key in ("command", "date", "cpu_model", "load_average_start"):
            assert meta.get(key), f"{f.name}: no {key} in its provenance"
        assert meta.get("mode") in ("quick", "full"), f.name
        assert (f / "report.md").is_file(), f.name
        if "meta" in res:  # written by dodai.report: the report carries the same provenance
            assert "## Provenance" in (f / "report.md").read_text(encoding="utf-8"), f.name


def test_readme_status_table_is_the_derived_one():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    a, b = text.index(roadmap.README_BEGIN), text.index(roadmap.README_END)
    block = text[a + len(roadmap.README_BEGIN):b].strip()
    assert block == roadmap.status_table_markdown().strip(), "run: python scripts/evidence.py --readme"


# --------------------------------------------------------------------------------- README figures
_FIG = re.compile(r"(?<![\w.\-/])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?(%|×|x\b|tok/s|MB/s|words/s|ms\b|s\b|min\b)"
                  r"|(?<![\w.\-/])(\d+\.\d+)(?![\w.])")
_BOUND = re.compile(r"(≤|≥|<|>|within|at least|at most|under|over|below|above|tolerance|~)\s*$")
_LINK = re.compile(r"\]\(([^)\s#]+)")


def _figures(line: str) -> list[tuple[str, str]]:
    """(number, unit) of each measured figure on a line; test bounds (≤ 1e-5, within 1 %) are not figures."""
    plain = re.sub(r"`[^`]*`", "", line)
    plain = re.sub(r"\]\([^)]*\)", "]", plain)
    out = []
    for m in _FIG.finditer(plain):
        num, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), "")
        if _BOUND.search(plain[:m.start()]):
            continue
        out.append((num, unit))
    return out


def _numbers_in(path: Path) -> tuple[str, list[float]]:
    text = path.read_text(encoding="utf-8")
    vals: list[float] = []
    if path.suffix == ".json":
        def walk(o):
            if isinstance(o, bool):
                return
            if isinstance(o, (int, float)):
                vals.append(float(o))
            elif isinstance(o, dict):
                for v in o.values():
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(json.loads(text))
    vals += [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text)
             if re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d+)?|-?\d+(\.\d+)?(e-?\d+)?", x)]
    return text, vals


def _backed(num: str, unit: str, texts: list[str], vals: list[float]) -> bool:
    if any(num in t for t in texts):
        return True
    x = float(num.replace(",", ""))
    d = len(num.split(".")[1]) if "." in num else 0
    for v in vals:
        if not math.isfinite(v):
            continue
        for scale in ((1.0, 100.0) if unit == "%" else (1.0,)):
            if round(v * scale, d) == x:
                return True
    return False


def readme_figure_problems(text: str) -> list[str]:
    problems = []
    lines = text.splitlines()
    skip = False
    fence = False
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if roadmap.README_BEGIN in line:
            skip = True
        if roadmap.README_END in line:
            skip = False
            continue
        if fence or skip:
            continue
        figs = _figures(line)
        if not figs:
            continue
        files = [REPO / t for t in _LINK.findall(line)
                 if t.startswith(("evidence/", "benchmarks/results/", "results/")) or "/evidence/" in t]
        files = [f if f.exists() else REPO / "benchmarks" / f.relative_to(REPO) for f in files]
        files = [f for f in files if f.is_file()]
        if not files:
            problems.append(f"README line {n}: figures {[a + b for a, b in figs]} with no evidence link: {line[:90]}")
            continue
        texts, vals = [], []
        for f in files:
            t, v = _numbers_in(f)
            texts.append(t)
            vals += v
        for num, unit in figs:
            if not _backed(num, unit, texts, vals):
                where = [str(f.relative_to(REPO)) for f in files]
                problems.append(f"README line {n}: {num}{unit} not found in {where}")
    return problems


def test_readme_figures_are_backed_by_committed_files():
    problems = readme_figure_problems((REPO / "README.md").read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_benchmarks_readme_figures_are_backed_by_their_results_files():
    problems = readme_figure_problems((REPO / "benchmarks" / "README.md").read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_figure_check_catches_an_unbacked_figure(tmp_path):
    ev = "evidence/R2.4/results.json"
    acc = json.loads((REPO / ev).read_text())["test_acc_min"]
    good = f"| MLP on digits | test accuracy {100 * acc:.1f} % | [evidence]({ev}) |"
    assert readme_figure_problems(good) == []
    assert readme_figure_problems("| MLP on digits | test accuracy 99.9 % | [evidence](" + ev + ") |")
    assert readme_figure_problems("the speedrun reached perplexity 80.6 on held-out text")
    assert readme_figure_problems("tolerances are not figures: within 1 % and ≤ 1e-5") == []


def test_roadmap_json_lists_evidence_and_claims_with_measured_values(capsys):
    from dodai.cli import main

    assert main(["roadmap", "--json"]) == 0
    items = {it["id"]: it for it in json.loads(capsys.readouterr().out)}
    assert len(items) == 40
    for it in items.values():
        assert it["status"] in (roadmap.WORKING, roadmap.FAILING, roadmap.UNVERIFIED, roadmap.PLANNED)
        if it["status"] == roadmap.WORKING:
            assert it["evidence"]["results"].startswith("evidence/") and it["evidence"]["mode"] in ("quick", "full")
            assert all(c["holds"] and c["kind"] in (FINDING, DEMONSTRATION) and "measured" in c for c in it["claims"])
    assert items["R6.4"]["evidence"] == {**items["R4.3"]["evidence"]}  # the shared experiment's evidence
