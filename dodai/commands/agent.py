"""dodai agent: answer a question with a tool-using agent (ReAct or function calling) and print the answer."""

from __future__ import annotations

HELP = "answer a question with a tool-using agent (ReAct or function calling) and save its trace"


def add_arguments(p) -> None:
    p.add_argument("question", help="the question to answer")
    p.add_argument("--tools", default="calculator,python,sql,search",
                   help="comma-separated tools from calculator,python,sql,search (default: all four)")
    p.add_argument("--mode", choices=["react", "fncall"], default="react",
                   help="react: Thought/Action/Observation text; fncall: <tool_call> JSON under constrained decoding")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="a registry model name, a .gguf file or a model folder (default smollm2-135m-instruct)")
    p.add_argument("--tool-choice", choices=["required", "auto"], default="required",
                   help="required (default): the first step must call a tool; auto: the model may answer at once")
    p.add_argument("--max-steps", type=int, default=6, help="most model steps in the episode (default 6)")
    p.add_argument("--max-step-tokens", type=int, default=128, help="most new tokens per step (default 128)")
    p.add_argument("--max-tokens", type=int, default=1024, help="most new tokens in the whole episode (default 1024)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock limit of the episode (default 300)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy (default 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--db", default=None, help="SQLite database for the sql tool (default: the built-in demo)")
    p.add_argument("--trace", default=None, help="write the episode as JSONL to this file")
    p.add_argument("--verbose", action="store_true", help="print a readable trace to stderr")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="let the python tool run without the OS sandbox (bubblewrap) when it is missing: UNSAFE")


def _make_lm(args):
    """The model behind the agent (a seam the tests replace with a scripted model)."""
    from dodai.agents.lm import ModelLM
    from dodai.models import load_model

    model, tok = load_model(args.model)
    model.eval()
    return ModelLM(model, tok, temperature=args.temperature, seed=args.seed)


def run(args) -> int:
    import sys

    from dodai.agents import make_policy
    from dodai.agents.loop import Limits, format_trace, run_agent, save_traces
    from dodai.errors import DodaiError
    from dodai.tools import default_tools

    if args.temperature < 0:
        raise DodaiError(f"--temperature must be >= 0, got {args.temperature}")
    limits = Limits(args.max_steps, args.max_step_tokens, args.max_tokens, args.max_seconds)
    tools = default_tools(args.tools, db_path=args.db)
    if not tools:
        raise DodaiError("--tools names no tool")
    if "python" in tools:  # refuse up front, in one line, rather than in every python call of the episode
        from dodai.tools.osbox import SandboxUnavailable, find_sandbox
        from dodai.tools.python_sandbox import python_tool

        if args.unsafe_no_sandbox:
            tools["python"] = python_tool(unsafe_no_sandbox=True)
        else:
            try:
                find_sandbox()
            except SandboxUnavailable as e:
                raise DodaiError(str(e)) from None
    policy = make_policy(args.mode, tools, force_call=args.tool_choice == "required")
    lm = _make_lm(args)
    res = run_agent(policy, lm, tools, args.question, limits)
    if args.verbose:
        print(format_trace(res), file=sys.stderr)
    else:
        print(f"[{res.stop_reason}: {res.n_steps} steps, {res.new_tokens} new tokens, {res.seconds:.1f} s]",
              file=sys.stderr)
    if args.trace:
        save_traces(res, args.trace)
        print(f"trace written to {args.trace}", file=sys.stderr)
    if res.answer is None:
        print(f"no answer (stop reason: {res.stop_reason}{': ' + res.error if res.error else ''})", file=sys.stderr)
        return 1
    print(res.answer)
    return 0
