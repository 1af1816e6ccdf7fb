"""Every training loop that moved onto ``dodai.train.fit`` computes what it computed before the move.

The expected numbers in ``tests/data/fit_baseline.json`` are a **regression baseline**: they were recorded by
running ``tests/fit_scenarios.py`` on the code before the conversion (the commit is in the file's ``meta``),
so a difference means the conversion (or a later change to a loop) changed what the loop computes: the
schedule, the optimizer, the batch order, the loss. They are not a reference for correctness.

On the machine that recorded them the converted loops reproduce them bit for bit; the comparison allows a
relative 1e-5 because another CPU (another SIMD width) may sum in another order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import fit_scenarios
import pytest

BASELINE = json.loads((Path(__file__).parent / "data" / "fit_baseline.json").read_text())["values"]


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_losses_equal_the_pre_fit_baseline(name, tmp_path):
    got = fit_scenarios.run_all(tmp_path, names={name})[name]
    want = BASELINE[name]
    assert set(got) == set(want)
    for key, values in want.items():
        assert len(got[key]) == len(values), key
        for g, w in zip(got[key], values):
            if math.isnan(w):
                assert math.isnan(g), (key, g)
            else:
                assert g == pytest.approx(w, rel=1e-5, abs=1e-7), (key, got[key], values)
