"""Roadmap experiments: ``dodai roadmap run ID`` runs the function registered here.

Each experiment is ``run(out_dir: Path, quick: bool = False) -> dict``: it does real work on real
data, writes ``report.md``, ``results.json`` and PNG plots into ``out_dir`` (use
:class:`dodai.report.Report`), and returns the results dict. ``quick=True`` is the small-scale
version the test suite runs to assert the experiment's scientific claim.
"""

# roadmap ID -> "module:function". Add one line per experiment, next to the code that implements it.
EXPERIMENTS: dict[str, str] = {}
EXPERIMENTS["R3.1"] = "dodai.experiments.r3_1:run"
EXPERIMENTS["R3.2"] = "dodai.experiments.r3_2:run"
EXPERIMENTS["R4.1"] = "dodai.experiments.r4_1:run"
EXPERIMENTS["R4.2"] = "dodai.experiments.r4_2:run"
EXPERIMENTS["R4.3"] = "dodai.experiments.r4_3:run"
EXPERIMENTS["R4.5"] = "dodai.experiments.r4_5:run"
EXPERIMENTS["R6.4"] = "dodai.experiments.r4_3:run"  # same experiment: ALiBi / RoPE extrapolation
EXPERIMENTS["R6.5"] = "dodai.experiments.r6_5:run"
EXPERIMENTS["R4.4"] = "dodai.experiments.r4_4:run"
EXPERIMENTS["R1.3"] = "dodai.experiments.r1_3:run"
EXPERIMENTS["R1.4"] = "dodai.experiments.r1_4:run"
EXPERIMENTS["R2.1"] = "dodai.experiments.r2_1:run"
EXPERIMENTS["R2.2"] = "dodai.experiments.r2_2:run"
EXPERIMENTS["R2.3"] = "dodai.experiments.r2_3:run"
EXPERIMENTS["R2.4"] = "dodai.experiments.r2_4:run"
EXPERIMENTS["R3.3"] = "dodai.experiments.r3_3:run"
EXPERIMENTS["R1.2"] = "dodai.experiments.r1_2:run"
EXPERIMENTS["R3.4"] = "dodai.experiments.r3_4:run"
EXPERIMENTS["R1.1"] = "dodai.experiments.r1_1:run"
EXPERIMENTS["R1.5"] = "dodai.experiments.r1_5:run"
EXPERIMENTS["R5.4"] = "dodai.experiments.r5_4:run"
EXPERIMENTS["R4.6"] = "dodai.experiments.r4_6:run"
EXPERIMENTS["R9.1"] = "dodai.experiments.r9_1:run"
EXPERIMENTS["R5.2"] = "dodai.experiments.r5_2:run"
EXPERIMENTS["R6.2"] = "dodai.experiments.r6_2:run"
EXPERIMENTS["R6.3"] = "dodai.experiments.r6_3:run"
EXPERIMENTS["R5.1"] = "dodai.experiments.r5_1:run"
EXPERIMENTS["R5.3"] = "dodai.experiments.r5_3:run"
EXPERIMENTS["R7.1"] = "dodai.experiments.r7_1:run"
EXPERIMENTS["R6.1"] = "dodai.experiments.r6_1:run"
EXPERIMENTS["R9.3"] = "dodai.experiments.r9_3:run"
EXPERIMENTS["R7.2"] = "dodai.experiments.r7_2:run"
EXPERIMENTS["R8.1"] = "dodai.experiments.r8_1:run"
EXPERIMENTS["R7.5"] = "dodai.experiments.r7_5:run"
EXPERIMENTS["R9.2"] = "dodai.experiments.r9_2:run"
EXPERIMENTS["R8.2"] = "dodai.experiments.r8_2:run"
EXPERIMENTS["R8.3"] = "dodai.experiments.r8_3:run"
EXPERIMENTS["R7.3"] = "dodai.experiments.r7_3:run"
EXPERIMENTS["R7.4"] = "dodai.experiments.r7_4:run"
EXPERIMENTS["R5.5"] = "dodai.experiments.r5_5:run"
