"""R7.2 quick experiment on the real SmolLM2-135M-Instruct: constrained decoding guarantees valid JSON,
which the unconstrained zero-shot prompt does not give; few-shot demonstrations raise the valid-JSON rate."""

from __future__ import annotations

import json

from dodai.experiments.r7_2 import SCHEMA, run
from dodai.finetune.tasks import parse_reply
from dodai.generate.constrained import validate_json


def test_r7_2_quick(tmp_path, smollm2_gguf):
    res = run(tmp_path, quick=True)
    c = res["conditions"]
    for cond in ("zero-shot + constrained", "3-shot + constrained"):
        assert c[cond]["valid_json"] == 1.0
        for row in c[cond]["rows"]:  # the guarantee, checked by an independent oracle
            assert validate_json(json.loads(row["reply"]), SCHEMA)
    assert c["zero-shot"]["valid_json"] < 1.0
    assert c["3-shot"]["valid_json"] > c["zero-shot"]["valid_json"]
    for v in c.values():  # the reported rates are the rows' rates
        assert v["valid_json"] == sum(parse_reply(r["reply"]) is not None for r in v["rows"]) / len(v["rows"])
    assert (tmp_path / "report.md").exists() and (tmp_path / "results.json").exists()
    assert (tmp_path / "r7_2.png").stat().st_size > 0
