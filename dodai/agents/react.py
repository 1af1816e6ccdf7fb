"""ReAct (Yao et al. 2022, "ReAct: Synergizing Reasoning and Acting in Language Models"): the model writes

    Thought: <reasoning>
    Action: <tool name>
    Action Input: <JSON object of arguments>

and generation **stops at "Observation:"**, so the model never writes its own observation; the loop runs the
tool and appends ``Observation: <result>`` and a new ``Thought:`` to the scratchpad (one growing assistant turn
of the model's chat template). ``Final Answer: <answer>`` ends the episode.

The parser is tolerant of how a small model formats things and strict about what it executes:

* tolerated: any case and extra spaces around the keys, markdown bold (``**Action:**``), back-ticks or quotes
  around the tool name, a code fence around the JSON, text after the JSON, and — for a tool with exactly one
  required string argument — a bare string instead of a JSON object (``Action Input: 2 + 3``);
* strict: everything from the first ``Observation`` on is discarded (a model or a hostile server that writes its
  own observation is ignored); the arguments must be a JSON object (checked by the tool's schema); a tool
  name is matched to an existing tool exactly, then ignoring case and surrounding punctuation — anything
  else is reported to the model as an unknown tool, never guessed; inputs over ``MAX_ARG_CHARS`` are refused;
* an ``Action`` and a ``Final Answer`` in one output: whichever comes first wins; the answer is the first
  non-empty line after ``Final Answer:``.

**Constrained steps** (``constrained=None``, the default, means "when the model offers constrained decoding":
:class:`dodai.agents.lm.ModelLM` does, a :class:`~dodai.agents.lm.ScriptedLM` only when asked): one step is two
generations. The thought is generated freely up to the end of its line; the rest of the step is generated under
the regex of :func:`step_regex` (:mod:`dodai.generate.constrained`, after Willard & Louf 2023) — either
``Action: <a registered tool>`` + ``Action Input: <that tool's arguments as compact JSON>`` (the same
per-tool argument schema as function calling, :func:`dodai.agents.fncall.call_schema`) or
``Final Answer: <one line>``. So a step always has the protocol's form, names an existing tool and carries
arguments of the right types; ``force_call=True`` leaves ``Final Answer`` out of the first step's grammar
(a tool must be used first, as OpenAI's ``tool_choice="required"``). The parser above still reads the result
(and everything a scripted or remote model writes without constraints).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dodai.agents.examples import DEFAULT_EXAMPLES, Example, resolve, select
from dodai.agents.fncall import _with_sql_hints
from dodai.agents.loop import Decision

MAX_ARG_CHARS = 8000
STOP = ["Observation:", "\nObservation"]

_KEY = r"^[ \t>*_#-]*{}[ \t*_]*:[ \t*_]*"  # a key at the start of a line, with markdown decoration around it
_OBS = re.compile(r"^[ \t>*_#-]*observation\b", re.I | re.M)
_FINAL = re.compile(_KEY.format(r"final[ \t]*answer"), re.I | re.M)
_ACTION = re.compile(_KEY.format(r"action(?![ \t]*input)"), re.I | re.M)
_INPUT = re.compile(_KEY.format(r"action[ \t]*input"), re.I | re.M)
_THOUGHT = re.compile(_KEY.format(r"thought"), re.I | re.M)
_ANY_KEY = re.compile(_KEY.format(r"(?:thought|action|action[ \t]*input|final[ \t]*answer)"), re.I | re.M)
_FENCE = re.compile(r"^```[a-zA-Z]*[ \t]*\n?(.*?)\n?```", re.S)


@dataclass
class Parsed:
    kind: str  # "final" | "call" | "invalid"
    thought: str = ""
    action: str | None = None
    arguments: dict | None = None
    answer: str | None = None
    error: str | None = None


def match_tool(name: str, tools: dict) -> str:
    """The tool ``name`` refers to: exact, else case-/punctuation-insensitive; else ``name`` unchanged."""
    if name in tools:
        return name
    norm = re.sub(r"[^a-z0-9_]", "", name.lower())
    hits = [t for t in tools if re.sub(r"[^a-z0-9_]", "", t.lower()) == norm]
    return hits[0] if len(hits) == 1 else name


def _single_string_param(tool) -> str | None:
    params = getattr(tool, "parameters", {}) or {}
    req = params.get("required", [])
    props = params.get("properties", {})
    if len(req) == 1 and props.get(req[0], {}).get("type") == "string":
        return req[0]
    return None


def parse_arguments(raw: str, tool) -> tuple[dict | None, str | None]:
    """(arguments, error): a JSON object from an Action Input, tolerating fences and trailing text."""
    text = raw.strip()
    if len(text) > MAX_ARG_CHARS:
        return None, f"the Action Input is too long ({len(text)} characters, at most {MAX_ARG_CHARS})"
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    if text.startswith("{"):
        try:
            value, _ = json.JSONDecoder().raw_decode(text)
        except (json.JSONDecodeError, RecursionError) as e:
            msg = getattr(e, "msg", "too deeply nested")
            return None, f"the Action Input is not valid JSON ({msg}); write a JSON object like {{\"key\": \"value\"}}"
        if not isinstance(value, dict):
            return None, "the Action Input must be a JSON object"
        return value, None
    key = _single_string_param(tool) if tool is not None else None
    if key is not None and text:
        first = text.split("\n")[0].strip()
        if len(first) >= 2 and first[0] == first[-1] and first[0] in "\"'`":
            first = first[1:-1]
        return {key: first}, None
    if not text:
        return None, "the Action Input is empty; write the arguments as a JSON object"
    return None, "the Action Input must be a JSON object, e.g. {\"key\": \"value\"}"


def _section(text: str, m: re.Match) -> str:
    """The text after key match ``m`` up to the next protocol key."""
    nxt = _ANY_KEY.search(text, m.end())
    return text[m.end(): nxt.start() if nxt else len(text)]


def parse_react(text: str, tools: dict) -> Parsed:
    """Read one ReAct step (the text after the scratchpad's ``Thought:``)."""
    obs = _OBS.search(text)
    if obs:  # the model tried to write its own observation: nothing from there on counts
        text = text[:obs.start()]
    # the scratchpad ends with "Thought:", so the text continues a thought unless it starts with a key itself
    body = text if _ANY_KEY.match(text.lstrip()) else "Thought: " + text
    t = _THOUGHT.search(body)
    thought = _section(body, t).strip() if t else ""
    fin, act = _FINAL.search(body), _ACTION.search(body)
    if fin and (act is None or fin.start() < act.start()):
        # the answer is its first non-empty line: small models keep writing (a new Thought, a copied
        # "(1 row)", another "Final Answer:") after it
        answer = next((ln.strip() for ln in body[fin.end():].splitlines() if ln.strip()), "")
        if not answer:
            return Parsed("invalid", thought, error="the Final Answer is empty")
        return Parsed("final", thought, answer=answer)
    if act is None:
        return Parsed("invalid", thought, error="no Action or Final Answer found; reply with 'Action:' and "
                                                "'Action Input:' lines, or 'Final Answer:'")
    name = _section(body, act).strip().split("\n")[0].strip().strip("`'\"*[]()").strip()
    if not name:
        return Parsed("invalid", thought, error="the Action line names no tool")
    name = match_tool(name, tools)
    inp = _INPUT.search(body, act.end())
    if inp is None:
        return Parsed("invalid", thought, name, error="no 'Action Input:' line after the Action")
    raw = body[inp.end():]
    nxt = _ANY_KEY.search(body, inp.end())  # tolerate a trailing Thought the model added, but not a new key
    if nxt and not body[inp.end():nxt.start()].strip().startswith("{"):
        raw = body[inp.end():nxt.start()]
    args, err = parse_arguments(raw, tools.get(name))
    if err:
        return Parsed("invalid", thought, name, error=err)
    return Parsed("call", thought, name, args)


def tool_lines(tools: dict) -> str:
    out = []
    for name, tool in tools.items():
        props = tool.parameters.get("properties", {})
        sig = ", ".join(f'"{k}": {v.get("type", "any")}' for k, v in props.items())
        out.append(f"{name}: {tool.description.strip()} Arguments: {{{sig}}}")
    return "\n".join(out)


def _transcript(ex: Example) -> str:
    parts = []
    for (thought, name, args), obs in zip(ex.calls, ex.observations):
        parts.append(f"Thought: {thought}\nAction: {name}\nAction Input: {_compact(args)}\n"
                     f"Observation: {obs}\n")
    parts.append(f"Thought: {ex.final_thought}\nFinal Answer: {ex.answer}")
    return "".join(parts)


def _compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


FINAL_CHARS = 200  # longest Final Answer line under the step grammar


def step_regex(tools: dict, allow_final: bool = True, max_string_chars: int = 160, sql_grammar: bool = True) -> str:
    """The rest of a ReAct step after its thought line: a call of one of ``tools`` or a final answer."""
    from dodai.agents.fncall import arguments_regex
    from dodai.generate.constrained import _esc

    alts = []
    for t in tools.values():
        alts.append(f"Action: {_esc(t.name)}\nAction Input: {arguments_regex(t, max_string_chars, sql_grammar)}")
    if allow_final:
        alts.append(f"Final Answer: [^\n]{{1,{FINAL_CHARS}}}")
    return "\n(?:" + "|".join(alts) + ")"


@dataclass
class ReActState:
    question: str
    prefix: str = ""  # the rendered chat up to the assistant turn (rendered by the first step)
    scratchpad: str = "Thought:"  # the growing assistant turn: Thought / Action / Observation ...
    calls: int = 0


class ReActPolicy:
    mode = "react"

    def __init__(self, tools: dict, examples: list[Example] | None = None, instructions: str = "",
                 constrained: bool | None = None, force_call: bool = False, max_thought_tokens: int = 40,
                 n_examples: int | None = 3, sql_grammar: bool = True):
        self.tools = tools
        self.examples = resolve(DEFAULT_EXAMPLES if examples is None else examples, tools)
        self.instructions = _with_sql_hints(instructions, tools)
        self.constrained, self.force_call = constrained, force_call
        self.n_examples = n_examples  # demonstrations per question, the most similar ones (None: all)
        self.max_thought_tokens = max_thought_tokens
        self._regex = ({a: step_regex(tools, a, sql_grammar=sql_grammar) for a in (True, False)} if tools
                       else {})

    def system_prompt(self) -> str:
        names = ", ".join(self.tools)
        return ("You answer questions by using tools. Tools:\n" + tool_lines(self.tools) + "\n\n"
                + (self.instructions.strip() + "\n\n" if self.instructions.strip() else "")
                + "Use exactly this format:\n"
                "Thought: what to do next\n"
                f"Action: one tool name from [{names}]\n"
                "Action Input: the arguments as a JSON object\n"
                "Observation: the tool's result (written for you, never by you)\n"
                "... (Thought, Action, Action Input and Observation may repeat)\n"
                "Thought: I now know the final answer\n"
                "Final Answer: the answer")

    def messages(self, question: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt()}]
        for ex in select(self.examples, question, self.n_examples):
            msgs += [{"role": "user", "content": ex.question}, {"role": "assistant", "content": _transcript(ex)}]
        return msgs + [{"role": "user", "content": question}]

    def start(self, question: str) -> ReActState:
        return ReActState(question)

    def act(self, lm, state: ReActState, max_new_tokens: int, deadline: float) -> Decision:
        if not state.prefix:
            state.prefix = lm.render(self.messages(state.question))
        prompt = state.prefix + state.scratchpad
        constrained = getattr(lm, "constrains", False) if self.constrained is None else self.constrained
        if constrained and self.tools:
            return self._act_constrained(lm, state, prompt, max_new_tokens, deadline)
        g = lm.generate(prompt, max_new_tokens, stop=STOP, deadline=deadline)
        p = parse_react(g.text, self.tools)
        return Decision(p.kind, g.text, g.new_tokens, lm.count(prompt), p.thought, p.action, p.arguments,
                        p.answer, p.error, g.finish)

    def _act_constrained(self, lm, state: ReActState, prompt: str, max_new_tokens: int, deadline: float
                         ) -> Decision:
        n_prompt = lm.count(prompt)
        g1 = lm.generate(prompt, min(self.max_thought_tokens, max_new_tokens), stop=["\n", "Observation"],
                         deadline=deadline)
        thought = g1.text.rstrip()
        if g1.finish == "deadline":
            return Decision("invalid", thought, g1.new_tokens, n_prompt, thought.strip(),
                            error="the step was cut off by the deadline", finish="deadline")
        if g1.finish == "eos":  # the turn ended after the thought: read it as it is (usually invalid)
            p = parse_react(thought, self.tools)
            return Decision(p.kind, thought, g1.new_tokens, n_prompt, p.thought, p.action, p.arguments,
                            p.answer, p.error, g1.finish)
        left = max_new_tokens - g1.new_tokens
        if left <= 0:
            return Decision("invalid", thought, g1.new_tokens, n_prompt, thought.strip(),
                            error="the step was cut off by the token budget", finish="length")
        allow_final = not (self.force_call and state.calls == 0)
        g2 = lm.generate_regex(prompt + thought, self._regex[allow_final], left, deadline=deadline)
        output = thought + g2.text
        used = g1.new_tokens + g2.new_tokens
        if g2.finish != "eos":
            return Decision("invalid", output, used, n_prompt, thought.strip(),
                            error="the step was cut off before it was complete", finish=g2.finish)
        p = parse_react(output, self.tools)
        return Decision(p.kind, output, used, n_prompt, p.thought, p.action, p.arguments, p.answer, p.error,
                        g2.finish)

    def observe(self, state: ReActState, decision: Decision, observation: str) -> None:
        if decision.kind == "call":
            state.calls += 1
        text = decision.output
        obs = _OBS.search(text)
        if obs:
            text = text[:obs.start()]
        state.scratchpad += text.rstrip() + "\n" + f"Observation: {observation}\nThought:"
