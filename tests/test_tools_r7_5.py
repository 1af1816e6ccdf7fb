"""Experiment R7.5 in quick mode: every red-team attack blocked, every benign call succeeds (the python
tool under its OS sandbox)."""

from __future__ import annotations

import json

import pytest

from dodai.experiments import EXPERIMENTS
from dodai.tools.osbox import SandboxUnavailable, find_sandbox


def test_r7_5_quick(tmp_path):
    try:
        find_sandbox()
    except SandboxUnavailable as e:  # without it the python tool refuses every call, benign ones too
        pytest.skip(str(e))
    assert EXPERIMENTS["R7.5"] == "dodai.experiments.r7_5:run"
    from dodai.experiments.r7_5 import run

    res = run(tmp_path, quick=True)  # asserts the claim itself
    assert res["attacks_blocked"] == res["attacks"] >= 90 and res["false_blocks"] == 0
    assert {r["tool"] for r in res["per_tool"]} == {"calculator", "python", "sql", "search"}
    assert all(r["blocked_rate"] == 1.0 and r["false_block_rate"] == 0.0 for r in res["per_tool"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attacks_blocked"] == res["attacks_blocked"]
    report = (tmp_path / "report.md").read_text()
    from dodai.tools.redteam import PYTHON

    n_py = sum(c.attack for c in PYTHON)
    assert f"| python | {n_py}/{n_py} |" in report and (tmp_path / "r7_5.png").stat().st_size > 1000
