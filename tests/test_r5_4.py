"""R5.4 playground, quick mode: entropy rises with temperature; filters give the right support sizes."""

import json


def test_playground_quick(tmp_path):
    from dodai.experiments.r5_4 import run

    res = run(tmp_path, quick=True)
    rows = {r["setting"]: r for r in res["settings"]}
    assert rows["T=0.5"]["entropy_bits"] < rows["T=1"]["entropy_bits"] < rows["T=1.5"]["entropy_bits"]
    assert rows["top-k 5"]["support"] == 5  # random float logits: no ties at the boundary
    assert rows["top-p 0.5"]["support"] <= rows["top-p 0.9"]["support"] < rows["T=1"]["support"]
    assert rows["min-p 0.1"]["support"] < rows["T=1"]["support"]
    assert rows["top-k 5"]["entropy_bits"] < rows["T=1"]["entropy_bits"]
    assert (tmp_path / "distributions.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["settings"]
    assert "sampling playground" in (tmp_path / "report.md").read_text()
