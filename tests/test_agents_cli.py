"""`dodai agent`: answer on stdout, readable trace on stderr with --verbose, JSONL trace file, one-line errors.
The model is replaced by a scripted one (the command's `_make_lm` seam); the real tools are used."""

from __future__ import annotations

import pytest

import dodai.commands.agent as agent_cmd
from dodai.agents.lm import ScriptedLM
from dodai.agents.loop import load_traces
from dodai.cli import main


def _script(monkeypatch, script):
    lm = ScriptedLM(script)
    monkeypatch.setattr(agent_cmd, "_make_lm", lambda args: lm)
    return lm


def test_react_answer_verbose_and_trace(tmp_path, monkeypatch, capsys):
    _script(monkeypatch, [' I need the calculator.\nAction: calculator\nAction Input: {"expression": "4821 * 347"}',
                          " I now know the final answer.\nFinal Answer: 1672887"])
    trace = tmp_path / "t.jsonl"
    rc = main(["agent", "What is 4821 * 347?", "--tools", "calculator", "--trace", str(trace), "--verbose"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == "1672887\n"
    assert "observation: 1672887" in err and "=== stop: final" in err
    (res,) = load_traces(trace)
    assert res.answer == "1672887" and res.steps[0].observation == "1672887" and res.mode == "react"


def test_fncall_mode_and_no_answer(tmp_path, monkeypatch, capsys):
    _script(monkeypatch, ["<tool_call>", '{"name":"calculator","arguments":{"expression":"1+1"}}'])
    rc = main(["agent", "What is 1+1?", "--tools", "calculator", "--mode", "fncall", "--max-steps", "1"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and "stop reason: max_steps" in err


@pytest.mark.parametrize("argv", [["--tools", "calculator,teleport"], ["--max-steps", "0"],
                                  ["--temperature", "-1"], ["--tools", ","]])
def test_bad_flags_are_one_line_errors(monkeypatch, capsys, argv):
    _script(monkeypatch, [])
    rc = main(["agent", "q?", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dodai: error:") and err.count("\n") == 1


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["react", "fncall"])
def test_issue_example_with_the_real_model(tmp_path, smollm2_gguf, capsys, mode):
    """The README's kind of example, as a new user runs it (issue 21): SmolLM2-135M-Instruct, greedy, the
    calculator only. The answer must be the exact value, 4821 * 377 + 15 = 1817532, and it must come from a
    calculator call in the trace (not from the model's own arithmetic)."""
    trace = tmp_path / "t.jsonl"
    rc = main(["agent", "What is 4821 * 377 + 15?", "--tools", "calculator", "--mode", mode, "--trace", str(trace),
               "--max-seconds", "1200"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == f"{4821 * 377 + 15}\n", err
    (res,) = load_traces(trace)
    calls = [s for s in res.steps if s.kind == "call"]
    assert res.stop_reason == "final" and calls and calls[0].action == "calculator"
    assert str(4821 * 377 + 15) in [s.observation for s in calls]
