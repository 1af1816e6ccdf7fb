"""The agent loop shared by ReAct (:mod:`dodai.agents.react`) and function calling (:mod:`dodai.agents.fncall`).

A *policy* turns the conversation so far into one model step and parses it into a :class:`Decision`: a final
answer, a tool call (name + JSON arguments) or an invalid output. The loop executes calls, feeds the
observation back through the policy, and stops for exactly one of these reasons:

* ``final`` — the model gave a final answer;
* ``max_steps`` — ``Limits.max_steps`` model steps without a final answer;
* ``repeat`` — the model asked for a call identical (same tool, same canonical JSON arguments) to one it
  already made: its observation would be the same, so the episode is stuck;
* ``budget`` — the total of new tokens (``max_total_tokens``) or the wall clock (``max_seconds``) ran out;
* ``error`` — the model could not run (e.g. the prompt outgrew the context window); ``AgentResult.error``
  says why.

Tool failures are not loop errors: a :class:`~dodai.tools.base.ToolError`, an unknown tool name or arguments
that do not parse become the observation, so the model can correct itself (as in ReAct, Yao et al. 2022,
"ReAct: Synergizing Reasoning and Acting in Language Models", and the function-calling APIs).

**Answer from the observation.** A small model that has called the right tool often ends by restating the
question ("Final Answer: 4821 * 377 + 15") or copying the tool's table ("n_functions: 8 (1 row)") instead of
reading the result. When a final answer only restates the question (:func:`restates`: every word or number of
it is in the question, or it is empty) or copies the last observation's table (:func:`copies`: nothing new, and
some of the table's framing besides its value) and the last observation is a single value
(:func:`observation_value`: one line, or a one-row one-column table), that value is the answer;
``AgentResult.answer_source`` says ``"observation"`` then (``"model"`` otherwise).

Every step is a :class:`StepRecord` (prompt length, raw output, parsed action and arguments, observation,
tokens, seconds); :func:`save_traces` / :func:`load_traces` write and read them as JSONL (one ``episode``
line followed by its ``step`` lines), atomically.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from dodai.errors import DodaiError

STOP_REASONS = ("final", "max_steps", "repeat", "budget", "error")
MAX_OBSERVATION_CHARS = 2000  # what the model is shown of one observation (tools truncate their own output too)


@dataclass
class Limits:
    max_steps: int = 6  # model steps (generations that end in a call, an answer or an invalid output)
    max_step_tokens: int = 128  # new tokens of one step
    max_total_tokens: int = 1024  # new tokens of the whole episode
    max_seconds: float = 120.0  # wall clock of the whole episode (checked during generation and between steps)

    def __post_init__(self):
        if self.max_steps < 1 or self.max_step_tokens < 1 or self.max_total_tokens < 1 or not self.max_seconds > 0:
            raise DodaiError("agent limits must be positive (steps, tokens per step, total tokens, seconds)")


@dataclass
class Decision:
    """A policy's reading of one model output."""

    kind: str  # "final" | "call" | "invalid"
    output: str  # the raw text the model generated in this step (all phases)
    new_tokens: int
    prompt_tokens: int
    thought: str = ""
    action: str | None = None
    arguments: dict | None = None
    answer: str | None = None
    error: str | None = None  # why an output is invalid (shown to the model)
    finish: str = ""  # the generation's finish reason ("deadline" ends the episode with `budget`)


@dataclass
class StepRecord:
    step: int
    kind: str  # "final" | "call" | "invalid" | "repeat"
    prompt_tokens: int
    output: str
    thought: str
    action: str | None
    arguments: dict | None
    observation: str | None
    new_tokens: int
    seconds: float  # model time + tool time of this step


@dataclass
class AgentResult:
    question: str
    mode: str
    answer: str | None
    stop_reason: str
    steps: list[StepRecord] = field(default_factory=list)
    new_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    answer_source: str = "model"  # "observation": the model restated the question, the tool's value is used

    @property
    def n_steps(self) -> int:
        return len(self.steps)


class Policy(Protocol):
    mode: str

    def start(self, question: str) -> Any: ...

    def act(self, lm, state, max_new_tokens: int, deadline: float) -> Decision: ...

    def observe(self, state, decision: Decision, observation: str) -> None: ...


def canonical_call(name: str, arguments: dict | None) -> str:
    """The identity of a call for repeat detection: name + arguments as sorted compact JSON."""
    return name + " " + json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _clip(text: str, n: int = MAX_OBSERVATION_CHARS) -> str:
    return text if len(text) <= n else text[:n] + f"… [truncated, {len(text)} chars]"


_WORDS = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?")
_FILLER = frozenset("the answer result is equals final so it value".split())


def restates(answer: str | None, question: str) -> bool:
    """True when ``answer`` says nothing the question did not: all its words and numbers (ignoring case and a
    few filler words such as "the answer is") occur in ``question``, or it has none."""
    words = [w.lower() for w in _WORDS.findall(answer or "")]
    q = {w.lower() for w in _WORDS.findall(question)}
    return all(w in q or w in _FILLER for w in words)


def copies(answer: str | None, question: str, observation: str | None, value: str) -> bool:
    """True when ``answer`` only repeats the question and the observation, *and* carries some of the
    observation's framing (a column name, "(1 row)") besides its value: the model copied the tool's table."""
    if not restates(answer, question + "\n" + (observation or "")):
        return False
    keep = {w.lower() for w in _WORDS.findall(question + " " + value)} | _FILLER
    return any(w.lower() not in keep for w in _WORDS.findall(answer or ""))


def observation_value(observation: str | None) -> str | None:
    """The single value an observation holds: its one line, or the cell of a one-row, one-column table (as the
    sql tool prints it: header, value, "(1 row)"); None for anything else (errors included)."""
    if not observation or observation.startswith("Error"):
        return None
    lines = [ln.strip() for ln in observation.strip().splitlines() if ln.strip()]
    if lines and re.fullmatch(r"\(\d+ rows?\)", lines[-1]):
        lines = lines[:-1]
        if len(lines) == 2 and "|" not in lines[0]:
            return lines[1]
        return None
    return lines[0] if len(lines) == 1 else None


def execute(tools: dict, name: str, arguments: dict | None) -> str:
    """Run one call and return the observation text; never raises (errors are observations)."""
    from dodai.tools.base import ToolError

    tool = tools.get(name)
    if tool is None:
        return _clip(f"Error: unknown tool {name!r}. Available tools: {', '.join(sorted(tools)) or 'none'}.", 400)
    try:
        return _clip(str(tool.call(arguments if arguments is not None else {})))
    except ToolError as e:
        return _clip(f"Error: {e}", 600)
    except Exception as e:  # a tool bug must not end the episode or escape as a traceback
        return _clip(f"Error: tool {name!r} failed unexpectedly ({type(e).__name__}: {e})", 600)


def run_agent(policy: Policy, lm, tools: dict, question: str, limits: Limits | None = None) -> AgentResult:
    """Run one episode of ``policy`` with ``lm`` on ``question``; ``tools`` maps names to Tool objects."""
    lim = limits or Limits()
    if not isinstance(question, str) or not question.strip():
        raise DodaiError("the question must be a non-empty string")
    t0 = time.monotonic()
    deadline = t0 + lim.max_seconds
    res = AgentResult(question, policy.mode, None, "max_steps")
    state = policy.start(question)
    seen: set[str] = set()
    last_obs: str | None = None  # the latest tool observation (not a format error)
    for i in range(lim.max_steps):
        left = lim.max_total_tokens - res.new_tokens
        if left <= 0 or time.monotonic() >= deadline:
            res.stop_reason = "budget"
            break
        ts = time.monotonic()
        try:
            d = policy.act(lm, state, min(lim.max_step_tokens, left), deadline)
        except DodaiError as e:
            res.stop_reason, res.error = "error", str(e)
            break
        res.new_tokens += d.new_tokens
        rec = StepRecord(i + 1, d.kind, d.prompt_tokens, d.output, d.thought, d.action, d.arguments, None,
                         d.new_tokens, 0.0)
        res.steps.append(rec)
        if d.kind == "final":
            rec.seconds = time.monotonic() - ts
            res.answer, res.stop_reason = d.answer, "final"
            value = observation_value(last_obs)
            if value is not None and (restates(d.answer, question) or copies(d.answer, question, last_obs, value)):
                res.answer, res.answer_source = value, "observation"
            break
        if d.finish == "deadline":  # a half-written step is not executed
            rec.seconds = time.monotonic() - ts
            res.stop_reason = "budget"
            break
        if d.kind == "call":
            key = canonical_call(d.action or "", d.arguments)
            if key in seen:
                rec.kind, rec.seconds = "repeat", time.monotonic() - ts
                res.stop_reason = "repeat"
                break
            seen.add(key)
            obs = last_obs = execute(tools, d.action or "", d.arguments)
        else:
            obs = _clip(f"Error: {d.error or 'the reply did not follow the format'}", 600)
        rec.observation = obs
        policy.observe(state, d, obs)
        rec.seconds = time.monotonic() - ts
    res.seconds = time.monotonic() - t0
    return res


# ---- traces ----------------------------------------------------------------------------------------

_EPISODE_KEYS = ("question", "mode", "answer", "stop_reason", "new_tokens", "seconds", "error", "answer_source")


def trace_lines(res: AgentResult) -> list[str]:
    head = {"type": "episode", **{k: getattr(res, k) for k in _EPISODE_KEYS}, "n_steps": res.n_steps}
    lines = [json.dumps(head, ensure_ascii=False)]
    lines += [json.dumps({"type": "step", **asdict(s)}, ensure_ascii=False) for s in res.steps]
    return lines


def save_traces(results: list[AgentResult] | AgentResult, path: str | Path) -> Path:
    """Write episodes as JSONL (an ``episode`` line, then one ``step`` line per step), atomically."""
    from dodai.io import atomic_write_text

    if isinstance(results, AgentResult):
        results = [results]
    lines = [ln for r in results for ln in trace_lines(r)]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


_STEP_FIELDS = [f.name for f in fields(StepRecord)]


def load_traces(path: str | Path) -> list[AgentResult]:
    """Read a file written by :func:`save_traces`; a malformed file is a one-line DodaiError."""
    from dodai.io import read_user_text

    out: list[AgentResult] = []
    want = 0
    for n, line in enumerate(read_user_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise DodaiError(f"{path}:{n}: not JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
        if not isinstance(obj, dict) or obj.get("type") not in ("episode", "step"):
            raise DodaiError(f"{path}:{n}: each line must be an object with type 'episode' or 'step'")
        try:
            if obj["type"] == "episode":
                if want:
                    raise DodaiError(f"{path}:{n}: the previous episode is missing {want} step(s)")
                out.append(AgentResult(**{k: obj[k] for k in _EPISODE_KEYS if k in obj}))
                want = int(obj["n_steps"])
                if out[-1].stop_reason not in STOP_REASONS:
                    raise DodaiError(f"{path}:{n}: unknown stop reason {out[-1].stop_reason!r}")
            else:
                if not out or not want:
                    raise DodaiError(f"{path}:{n}: a step line outside an episode")
                out[-1].steps.append(StepRecord(**{k: obj[k] for k in _STEP_FIELDS}))
                want -= 1
        except (KeyError, TypeError, ValueError) as e:
            raise DodaiError(f"{path}:{n}: malformed {obj.get('type')} line ({type(e).__name__}: {e})") from None
    if want:
        raise DodaiError(f"{path}: the last episode is missing {want} step(s)")
    return out


def format_trace(res: AgentResult, width: int = 400) -> str:
    """A readable transcript of one episode (for --verbose and reports)."""
    def short(s) -> str:
        s = str(s)
        return s if len(s) <= width else s[:width] + "…"

    lines = [f"question: {res.question}", f"mode: {res.mode}"]
    for s in res.steps:
        lines.append(f"--- step {s.step} [{s.kind}] prompt {s.prompt_tokens} tok, +{s.new_tokens} tok, "
                     f"{s.seconds:.2f} s")
        lines.append("output: " + short(s.output.strip()).replace("\n", "\n        "))
        if s.action is not None:
            lines.append(f"action: {s.action} {json.dumps(s.arguments, ensure_ascii=False, default=str)[:width]}")
        if s.observation is not None:
            lines.append("observation: " + short(s.observation).replace("\n", "\n             "))
    lines.append(f"=== stop: {res.stop_reason}" + (f" ({res.error})" if res.error else "")
                 + f"; answer: {res.answer!r}; {res.n_steps} steps, {res.new_tokens} new tokens, {res.seconds:.2f} s")
    return "\n".join(lines)
