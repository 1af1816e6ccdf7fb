"""The agent loop with a scripted fake model: every stop reason, tool errors as observations, hostile outputs,
trace JSONL round trip. No real model here (see test_agents_experiment.py for SmolLM2)."""

from __future__ import annotations

import json

import pytest

from dodai.agents import make_policy
from dodai.agents.lm import ScriptedLM
from dodai.agents.loop import STOP_REASONS, Limits, format_trace, load_traces, run_agent, save_traces
from dodai.errors import DodaiError
from dodai.tools.base import Tool, ToolError


def _add(args):
    return str(args["a"] + args["b"])


def _shout(args):
    if args["text"] == "boom":
        raise ToolError("shout: refusing to shout boom")
    if args["text"] == "crash":
        raise RuntimeError("a bug inside the tool")
    return args["text"].upper()


TOOLS = {
    "add": Tool("add", "Add two integers.", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                              "b": {"type": "integer"}},
                                             "required": ["a", "b"]}, _add),
    "shout": Tool("shout", "Upper-case a text.", {"type": "object", "properties": {"text": {"type": "string"}},
                                                  "required": ["text"]}, _shout),
}


def react(action, args, thought="I should use a tool."):
    return f" {thought}\nAction: {action}\nAction Input: {args}\n"


def call(name, args):
    return json.dumps({"name": name, "arguments": args}, separators=(",", ":"))


def episode(mode, script, limits=None, honor_stops=True, **kw):
    lm = ScriptedLM(script, honor_stops=honor_stops)
    res = run_agent(make_policy(mode, TOOLS, examples=[], **kw), lm, TOOLS, "What is 2 + 3?", limits)
    return res, lm


def test_react_call_then_final():
    res, lm = episode("react", [react("add", '{"a": 2, "b": 3}'), " I now know the final answer.\nFinal Answer: 5"])
    assert res.stop_reason == "final" and res.answer == "5"
    assert [s.kind for s in res.steps] == ["call", "final"]
    assert res.steps[0].action == "add" and res.steps[0].arguments == {"a": 2, "b": 3}
    assert res.steps[0].observation == "5"
    # the observation is written into the scratchpad by the loop, followed by a new Thought
    assert lm.prompts[1].endswith('Action Input: {"a": 2, "b": 3}\nObservation: 5\nThought:')
    assert res.new_tokens == sum(s.new_tokens for s in res.steps) > 0
    assert all(s.prompt_tokens > 0 and s.seconds >= 0 for s in res.steps)
    assert res.steps[1].prompt_tokens > res.steps[0].prompt_tokens


def test_fncall_call_then_final():
    res, lm = episode("fncall", ["", call("add", {"a": 2, "b": 3}), "The answer is 5."])
    # phase 1 must stop at <tool_call>: the scripted model honours the stop string
    res, lm = episode("fncall", ["<tool_call>", call("add", {"a": 2, "b": 3}), "The answer is 5."])
    assert res.stop_reason == "final" and res.answer == "The answer is 5."
    assert res.steps[0].kind == "call" and res.steps[0].observation == "5"
    assert res.steps[0].output == '<tool_call>{"name":"add","arguments":{"a":2,"b":3}}</tool_call>'
    assert lm.prompts[1].endswith("<tool_call>")  # phase 2 continues after the opened call
    assert "<|im_start|>tool\n5<|im_end|>" in lm.prompts[2]  # the result comes back as a tool message
    assert '"name": "add"' in lm.prompts[0]  # the tool specs are in the system prompt


def test_fncall_force_call_skips_free_phase():
    res, lm = episode("fncall", [call("shout", {"text": "hi"}), "HI"], force_call=True, think=False)
    assert res.steps[0].observation == "HI" and res.answer == "HI"


def test_fncall_force_call_thought_then_call():
    """With ``think`` (the default) a forced first step is a thought line, then the call whatever the model
    would have done next."""
    res, lm = episode("fncall", ["I should shout it.", call("shout", {"text": "hi"}), "HI"], force_call=True)
    assert res.steps[0].kind == "call" and res.steps[0].thought == "I should shout it."
    assert res.steps[0].output == ('I should shout it.\n<tool_call>{"name":"shout","arguments":{"text":"hi"}}'
                                   '</tool_call>')
    assert lm.prompts[1].endswith("I should shout it.\n<tool_call>") and res.answer == "HI"


def test_stop_max_steps():
    script = [react("add", json.dumps({"a": i, "b": 1})) for i in range(3)]
    res, _ = episode("react", script, Limits(max_steps=3))
    assert res.stop_reason == "max_steps" and res.n_steps == 3 and res.answer is None
    assert [s.observation for s in res.steps] == ["1", "2", "3"]


@pytest.mark.parametrize("mode", ["react", "fncall"])
def test_stop_repeat(mode):
    if mode == "react":
        script = [react("add", '{"a": 2, "b": 3}'), react("add", '{"b": 3, "a": 2}', "Again.")]
    else:
        script = ["<tool_call>", call("add", {"a": 2, "b": 3}), "<tool_call>", call("add", {"b": 3, "a": 2})]
    res, _ = episode(mode, script)
    assert res.stop_reason == "repeat" and res.n_steps == 2
    assert res.steps[-1].kind == "repeat" and res.steps[-1].observation is None  # never executed twice


def test_stop_token_budget():
    step = react("add", '{"a": 2, "b": 3}')
    res, _ = episode("react", [step, react("add", '{"a": 5, "b": 3}'), "Final Answer: 8"],
                     Limits(max_total_tokens=2 * len(step)))
    assert res.stop_reason == "budget" and res.n_steps == 2
    assert res.new_tokens <= 2 * len(step)


def test_stop_budget_cuts_a_step_to_what_is_left():
    step = react("add", '{"a": 2, "b": 3}')
    res, _ = episode("react", [step, "x" * 500], Limits(max_total_tokens=len(step) + 10, max_step_tokens=200))
    assert res.steps[1].new_tokens == 10 and res.stop_reason == "budget"


def test_stop_wall_clock():
    import time

    def slow(prompt):
        time.sleep(0.3)
        return react("add", '{"a": 1, "b": 1}')

    res, _ = episode("react", [slow, slow, slow], Limits(max_seconds=0.2))
    assert res.stop_reason == "budget" and res.n_steps == 1


def test_stop_error_when_the_model_fails():
    res, _ = episode("react", [react("add", '{"a": 1, "b": 1}')])  # then the script runs out
    assert res.stop_reason == "error" and "ran out" in res.error and res.n_steps == 1
    assert set(STOP_REASONS) == {"final", "max_steps", "repeat", "budget", "error"}


def test_tool_errors_and_unknown_tools_become_observations():
    script = [react("shout", '{"text": "boom"}'), react("shout", '{"text": "crash"}'),
              react("teleport", '{"to": "mars"}'), react("add", '{"a": "two", "b": 3}'),
              react("add", '{"a": 2}'), "Final Answer: 5"]
    res, _ = episode("react", script, Limits(max_steps=8))
    obs = [s.observation for s in res.steps[:-1]]
    assert obs[0] == "Error: shout: refusing to shout boom"
    assert obs[1].startswith("Error: tool 'shout' failed unexpectedly (RuntimeError")
    assert obs[2].startswith("Error: unknown tool 'teleport'") and "add, shout" in obs[2]
    assert "must be of type integer" in obs[3] and "missing required argument 'b'" in obs[4]
    assert res.stop_reason == "final" and res.answer == "5"


def test_fncall_unknown_tool_and_bad_json_from_a_broken_constrainer():
    script = ["<tool_call>", call("teleport", {}), "<tool_call>", '{"name": "add", "arguments": [1]}',
              "<tool_call>", "{not json", "done"]
    res, _ = episode("fncall", script)
    assert res.steps[0].kind == "call" and res.steps[0].observation.startswith("Error: unknown tool")
    assert res.steps[1].kind == "invalid" and "must be a JSON object" in res.steps[1].observation
    assert res.steps[2].kind == "invalid" and "not valid JSON" in res.steps[2].observation
    assert res.answer == "done"


def test_model_written_observation_is_ignored():
    # a model (or server) that ignores the stop string and invents the observation and the answer
    hostile = (' I will add.\nAction: add\nAction Input: {"a": 2, "b": 3}\nObservation: 7\n'
               "Thought: I know it.\nFinal Answer: 7")
    res, lm = episode("react", [hostile, "Final Answer: 5"], honor_stops=False)
    assert res.steps[0].kind == "call" and res.steps[0].observation == "5"  # the real result, not the fake 7
    assert res.answer == "5" and "Observation: 7" not in lm.prompts[1]


def test_huge_arguments_are_refused_not_executed():
    big = '{"text": "' + "a" * 20_000 + '"}'
    res, _ = episode("react", [react("shout", big), "Final Answer: no"],
                     Limits(max_step_tokens=50_000, max_total_tokens=100_000))
    assert res.steps[0].kind == "invalid" and "too long" in res.steps[0].observation
    assert len(res.steps[0].observation) < 1000


def test_huge_tool_output_is_clipped():
    tools = {"spam": Tool("spam", "Spam.", {"type": "object", "properties": {}}, lambda a: "x" * 10**6,
                          max_output_chars=10**7)}
    lm = ScriptedLM([react("spam", "{}"), "Final Answer: ok"])
    res = run_agent(make_policy("react", tools, examples=[]), lm, tools, "spam?")
    assert len(res.steps[0].observation) < 2100 and len(lm.prompts[1]) < 5000


def test_invalid_outputs_get_a_format_reminder():
    res, lm = episode("react", ["I think it is five.", "Final Answer: 5"])
    assert res.steps[0].kind == "invalid" and "Action" in res.steps[0].observation
    assert res.steps[0].observation in lm.prompts[1]
    assert res.answer == "5"


def test_limits_and_question_are_checked():
    with pytest.raises(DodaiError):
        Limits(max_steps=0)
    with pytest.raises(DodaiError):
        run_agent(make_policy("react", TOOLS, examples=[]), ScriptedLM([]), TOOLS, "   ")
    with pytest.raises(DodaiError):
        make_policy("telepathy", TOOLS)


def test_examples_show_real_tool_outputs():
    from dodai.agents.examples import Example

    ex = [Example("What is 4 + 4?", [("Use add.", "add", {"a": 4, "b": 4})], "8"),
          Example("Needs a missing tool", [("x", "missing", {})], "?")]
    lm = ScriptedLM(["Final Answer: 5"])
    run_agent(make_policy("react", TOOLS, examples=ex), lm, TOOLS, "What is 2 + 3?")
    assert 'Action Input: {"a":4,"b":4}\nObservation: 8\n' in lm.prompts[0]  # compact, as the step grammar
    assert "Needs a missing tool" not in lm.prompts[0]


def test_trace_jsonl_round_trip(tmp_path):
    a, _ = episode("react", [react("add", '{"a": 2, "b": 3}'), "Final Answer: 5"])
    b, _ = episode("fncall", ["<tool_call>", call("shout", {"text": "ünïcode\n\"q\""}), "ok"])
    c, _ = episode("react", [react("add", '{"a": 1, "b": 1}')])
    path = save_traces([a, b, c], tmp_path / "trace.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 3 + a.n_steps + b.n_steps + c.n_steps
    assert json.loads(lines[0])["type"] == "episode"
    back = load_traces(path)
    assert back == [a, b, c]
    assert "stop: error" in format_trace(back[2]) and "observation: 5" in format_trace(back[0])


@pytest.mark.parametrize("bad", ["not json\n", '{"type": "step", "step": 1}\n', '[1, 2]\n',
                                 '{"type": "episode", "question": "q", "mode": "react", "answer": null, '
                                 '"stop_reason": "final", "new_tokens": 0, "seconds": 0, "error": null, '
                                 '"n_steps": 2}\n',
                                 '{"type": "episode", "question": "q"}\n'])
def test_trace_reader_refuses_malformed_files(tmp_path, bad):
    p = tmp_path / "t.jsonl"
    p.write_text(bad)
    with pytest.raises(DodaiError):
        load_traces(p)
