"""R7.3 quick experiment: the scripted model drives both loops to each stop reason with the real tools, and
real SmolLM2-135M episodes (ReAct and function calling) run and record traces."""

from __future__ import annotations

from dodai.agents.loop import load_traces
from dodai.experiments.r7_3 import is_correct, last_number, run


def test_answer_scoring():
    assert last_number("The answer is 1,672,887.") == 1672887
    assert is_correct("4821 * 347 = 1672887", 1672887) and not is_correct("1672887 or 5", 1672887)
    assert not is_correct(None, 3) and not is_correct("no idea", 3)


def test_r7_3_quick(tmp_path, smollm2_gguf):
    res = run(tmp_path, quick=True)
    s = res["scripted"]
    for name in ("react_recover", "fncall_recover"):  # a tool error is an observation, then the model recovers
        assert s[name]["stop_reason"] == "final" and s[name]["correct"], s[name]
        assert s[name]["observations"][0].startswith("Error:") and s[name]["observations"][1] == "6404436"
    assert s["react_repeat"]["stop_reason"] == "repeat" and s["react_repeat"]["kinds"] == ["call", "repeat"]
    assert s["fncall_budget"]["stop_reason"] == "budget"
    assert s["react_max_steps"]["stop_reason"] == "max_steps" and len(s["react_max_steps"]["kinds"]) == 3

    traces = load_traces(tmp_path / "traces.jsonl")
    assert [t.mode for t in traces] == ["react", "fncall"]
    for t in traces:  # the real model ran and every step was recorded
        assert t.stop_reason in ("final", "max_steps", "repeat", "budget") and t.n_steps >= 1
        assert t.new_tokens == sum(st.new_tokens for st in t.steps) > 0
        assert all(st.prompt_tokens > 100 and st.output for st in t.steps)
    for st in traces[1].steps:  # constrained decoding: a function call always names an existing tool
        if st.kind == "call":
            assert st.action in ("calculator", "sql") and isinstance(st.arguments, dict)
            assert "<tool_call>{" in st.output and st.output.endswith("}</tool_call>")
    for summ in res["summary"].values():
        assert summ["n"] == 1 and sum(summ["stop_reasons"].values()) == 1
    assert (tmp_path / "report.md").exists() and (tmp_path / "r7_3.png").stat().st_size > 0
