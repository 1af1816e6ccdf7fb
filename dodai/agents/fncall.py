"""Function calling: tool specs in the system prompt, calls as ``<tool_call>{json}</tool_call>``, the JSON
produced under **constrained decoding** so it always parses and names an existing tool.

SmolLM2-135M-Instruct's chat template has no tool support (it renders ``role`` and ``content`` only), so this
module uses the convention of the Hermes / Qwen function-calling templates, written into the system prompt:
the tool specs (:meth:`dodai.tools.base.Tool.spec`, the OpenAI / HF "function" schema) one per line inside
``<tools></tools>``, a call as ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``, and the result fed
back as a message with role ``tool``. A reply without a tool call is the final answer.

One step is two generations:

1. free generation of the assistant turn with the stop string ``<tool_call>``; ending at an end-of-turn token
   instead means the reply is the final answer;
2. if the model opened a call, the prompt is extended with ``<tool_call>`` and the call is generated under
   the regex of :func:`call_regex` (:mod:`dodai.generate.constrained`, after Willard & Louf 2023): an
   alternation over the tools of ``{"name":"<tool>","arguments":<the tool's arguments object>}``, so the JSON
   is complete, parses, names an existing tool and has each required argument with its schema type. The
   loop closes it with ``</tool_call>``.

Conventions: the constrained arguments object holds the *required* arguments, in the schema's order (optional
arguments keep their defaults); a string argument without ``maxLength`` is capped at ``max_string_chars``
(the language is then finite, and a step budget of at least the longest match always completes). A property
schema without a type is treated as a string. ``force_call=True`` makes the first step a call (OpenAI's
``tool_choice="required"``): with ``think`` (the default) phase 1 is then one free line — a thought, as the
demonstrations show one before each call — after which the call is opened whatever the model would have
written; without ``think`` phase 1 is skipped. With an sql tool registered, the system prompt adds
:data:`dodai.agents.sql_grammar.HINTS` and the ``query`` argument is generated under
:func:`dodai.agents.sql_grammar.query_regex` (``sql_grammar=False``: a plain string).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dodai.agents.examples import DEFAULT_EXAMPLES, Example, resolve, select
from dodai.agents.loop import Decision
from dodai.errors import DodaiError

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def _arg_schema(schema: dict, max_string_chars: int) -> dict:
    """A copy of a property schema fit for :func:`json_schema_regex` (string caps, untyped → string)."""
    if not isinstance(schema, dict):
        return {"type": "string", "maxLength": max_string_chars}
    s = {k: v for k, v in schema.items() if k != "description"}
    if "type" not in s and "enum" not in s and "const" not in s:
        s["type"] = "string"
    if s.get("type") == "string" and "maxLength" not in s:
        s["maxLength"] = max_string_chars
    if s.get("type") == "array":
        s["items"] = _arg_schema(s.get("items", {"type": "string"}), max_string_chars)
    if s.get("type") == "object":
        s["properties"] = {k: _arg_schema(v, max_string_chars) for k, v in s.get("properties", {}).items()}
    return s


def call_schema(tool, max_string_chars: int = 160) -> dict:
    """The JSON schema of one call to ``tool``: name fixed, required arguments in the schema's order."""
    params = tool.parameters or {}
    props = params.get("properties", {}) or {}
    req = set(params.get("required", []) or [])
    args = {k: _arg_schema(v, max_string_chars) for k, v in props.items() if k in req}
    return {"type": "object", "properties": {"name": {"const": tool.name},
                                             "arguments": {"type": "object", "properties": args}}}


def arguments_regex(tool, max_string_chars: int = 160, sql_grammar: bool = True) -> str:
    """A regex for the compact JSON arguments object of a call to ``tool`` (its required arguments); with
    ``sql_grammar``, the ``query`` of an sql tool is held to :func:`dodai.agents.sql_grammar.query_regex` over
    its database's tables and columns."""
    from dodai.agents.sql_grammar import query_regex, read_schema, sql_tool_db
    from dodai.generate.constrained import json_schema_regex

    args = call_schema(tool, max_string_chars)["properties"]["arguments"]
    db = sql_tool_db(tool) if sql_grammar else None
    if db is not None and list(args["properties"]) == ["query"]:
        return r'\{"query":"' + query_regex(read_schema(db)) + r'"\}'
    return json_schema_regex(args)


def call_regex(tools: dict, max_string_chars: int = 160, sql_grammar: bool = True) -> str:
    """A regex matching exactly the compact JSON of a call to one of ``tools``."""
    from dodai.generate.constrained import _esc

    if not tools:
        raise DodaiError("function calling needs at least one tool")
    return "(?:" + "|".join(r"\{" + _esc('"name":' + json.dumps(t.name, ensure_ascii=False) + ',"arguments":')
                            + arguments_regex(t, max_string_chars, sql_grammar) + r"\}"
                            for t in tools.values()) + ")"


def parse_call(text: str) -> tuple[str | None, dict | None, str | None]:
    """(name, arguments, error) from the JSON of a call; strict: one object with a string name and an object."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None, None, "the tool call is not valid JSON"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None, None, 'the tool call must be {"name": <tool>, "arguments": {...}}'
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        return obj["name"], None, "the tool call's arguments must be a JSON object"
    return obj["name"], args, None


def _with_sql_hints(instructions: str, tools: dict) -> str:
    """``instructions`` plus :data:`dodai.agents.sql_grammar.HINTS` when an sql tool is registered."""
    from dodai.agents.sql_grammar import HINTS, sql_tool_db

    if any(sql_tool_db(t) is not None for t in tools.values()):
        return (instructions.strip() + "\n" + HINTS).strip()
    return instructions


def _compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class FnCallState:
    question: str
    messages: list[dict] = field(default_factory=list)
    calls: int = 0


class FnCallPolicy:
    mode = "fncall"

    def __init__(self, tools: dict, examples: list[Example] | None = None, instructions: str = "",
                 max_string_chars: int = 160, force_call: bool = False, n_examples: int | None = 3,
                 sql_grammar: bool = True, think: bool = True, max_thought_tokens: int = 40):
        self.tools = tools
        self.think, self.max_thought_tokens = think, max_thought_tokens
        self.examples = resolve(DEFAULT_EXAMPLES if examples is None else examples, tools)
        self.instructions = _with_sql_hints(instructions, tools)
        self.regex = call_regex(tools, max_string_chars, sql_grammar)
        self.force_call = force_call
        self.n_examples = n_examples  # demonstrations per question, the most similar ones (None: all)

    def system_prompt(self) -> str:
        specs = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in self.tools.values())
        return ("You are a helpful assistant that can call functions. The functions are inside <tools></tools>:\n"
                f"<tools>\n{specs}\n</tools>\n"
                + (self.instructions.strip() + "\n" if self.instructions.strip() else "")
                + f'To call a function, reply with {OPEN}{{"name":<function name>,"arguments":<JSON object>}}'
                f"{CLOSE}. The result comes back in a message from the tool. "
                "When you know the answer, reply with the answer only.")

    def messages(self, question: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt()}]
        for ex in select(self.examples, question, self.n_examples):
            msgs.append({"role": "user", "content": ex.question})
            for (thought, name, args), obs in zip(ex.calls, ex.observations):
                lead = thought.strip() + "\n" if self.think and thought.strip() else ""
                msgs.append({"role": "assistant", "content": lead + OPEN + _compact({"name": name, "arguments": args})
                             + CLOSE})
                msgs.append({"role": "tool", "content": obs})
            msgs.append({"role": "assistant", "content": ex.answer})
        return msgs + [{"role": "user", "content": question}]

    def start(self, question: str) -> FnCallState:
        return FnCallState(question, self.messages(question))

    def act(self, lm, state: FnCallState, max_new_tokens: int, deadline: float) -> Decision:
        prompt = lm.render(state.messages)
        n_prompt = lm.count(prompt)
        if self.force_call and state.calls == 0 and self.think:  # a thought line, then the call regardless
            g = lm.generate(prompt, min(self.max_thought_tokens, max_new_tokens), stop=[OPEN, "\n"],
                            deadline=deadline)
            if g.finish == "deadline":
                return Decision("invalid", g.text, g.new_tokens, n_prompt, thought=g.text.strip(),
                                error="the step was cut off by the deadline", finish="deadline")
            text, used = (g.text.strip() + "\n" if g.text.strip() else ""), g.new_tokens
        elif self.force_call and state.calls == 0:
            text, used = "", 0
        else:
            g = lm.generate(prompt, max_new_tokens, stop=[OPEN], deadline=deadline)
            if g.finish != "stop":  # no call opened: this reply is the final answer
                answer = g.text.strip()
                if g.finish in ("length", "deadline") or not answer:
                    why = "the reply is empty" if not answer else "the reply was cut off by the token budget"
                    return Decision("invalid", g.text, g.new_tokens, n_prompt, answer=None, error=why,
                                    finish=g.finish)
                return Decision("final", g.text, g.new_tokens, n_prompt, answer=answer, finish=g.finish)
            text, used = g.text, g.new_tokens
        left = max_new_tokens - used
        if left <= 0:
            return Decision("invalid", text + OPEN, used, n_prompt, thought=text.strip(),
                            error="the tool call was cut off by the token budget", finish="length")
        g2 = lm.generate_regex(prompt + text + OPEN, self.regex, left, deadline=deadline)
        output = text + OPEN + g2.text + CLOSE
        if g2.finish != "eos":
            return Decision("invalid", output, used + g2.new_tokens, n_prompt, thought=text.strip(),
                            error="the tool call was cut off before it was complete", finish=g2.finish)
        name, args, err = parse_call(g2.text)
        kind = "invalid" if err else "call"
        return Decision(kind, output, used + g2.new_tokens, n_prompt, thought=text.strip(), action=name,
                        arguments=args, error=err, finish=g2.finish)

    def observe(self, state: FnCallState, decision: Decision, observation: str) -> None:
        state.messages.append({"role": "assistant", "content": decision.output})
        if decision.kind == "call":
            state.calls += 1
            state.messages.append({"role": "tool", "content": observation})
        else:
            state.messages.append({"role": "user", "content": observation})
