"""The OpenAI HTTP API as dodai serves it: request checking and response bodies, no HTTP and no model.

Every request body is untrusted JSON. :func:`parse_chat`, :func:`parse_completion` and :func:`parse_embeddings`
check each field's type and range the way the OpenAI API documents it (https://platform.openai.com/docs/api-reference)
and raise :class:`ApiError` — an HTTP status plus OpenAI's error object ``{"error": {"message", "type", "param",
"code"}}`` — for anything else. Fields dodai does not implement are refused by name, never silently ignored,
except the purely informational ones (``user``, ``metadata``, ``store``, ``service_tier``).

Conventions: ``temperature`` in [0, 2] (0 is greedy), ``top_p`` in (0, 1], penalties in [-2, 2], ``logit_bias``
values in [-100, 100], at most 4 stop strings, ``n`` at most 8, ``top_logprobs`` at most 20; ``max_tokens`` and
``max_completion_tokens`` are the same limit (the latter wins), capped by the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ROLES = ("system", "developer", "user", "assistant", "tool")
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "modalities")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# ---- field checks ----------------------------------------------------------------------------------------

def _number(body: dict, key: str, lo: float, hi: float, default, lo_open: bool = False):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad(f"'{key}' must be a finite number, got {v!r:.40}", key)
    if v < lo or v > hi or (lo_open and v == lo):
        raise bad(f"'{key}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}", key)
    return float(v)


def _int(body: dict, key: str, lo: int, hi: int | None, default):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(f"'{key}' must be an integer, got {v!r:.40}", key)
    if v < lo or (hi is not None and v > hi):
        raise bad(f"'{key}' must be between {lo} and {hi}, got {v}" if hi is not None
                  else f"'{key}' must be >= {lo}, got {v}", key)
    return v


def _bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{key}' must be a boolean, got {v!r:.40}", key)
    return v


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or len(v) > 4 or any(not isinstance(s, str) or not s for s in v):
        raise bad("'stop' must be a non-empty string or a list of at most 4 non-empty strings", "stop")
    if any(len(s) > 256 for s in v):
        raise bad("each stop string must be at most 256 characters", "stop")
    return list(v)


def _logit_bias(body: dict, vocab_size: int) -> dict[int, float]:
    v = body.get("logit_bias")
    if v is None:
        return {}
    if not isinstance(v, dict) or len(v) > 300:
        raise bad("'logit_bias' must be an object of at most 300 token ids", "logit_bias")
    out = {}
    for k, b in v.items():
        try:
            tid = int(k)
        except (TypeError, ValueError):
            raise bad(f"logit_bias key {k!r:.20} is not a token id", "logit_bias") from None
        if not 0 <= tid < vocab_size:
            raise bad(f"logit_bias token id {tid} is out of range [0, {vocab_size})", "logit_bias")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or not -100 <= b <= 100:
            raise bad(f"logit_bias values must be numbers in [-100, 100], got {b!r:.20}", "logit_bias")
        out[tid] = float(b)
    return out


def _model(body: dict, served: list[str]) -> str:
    m = body.get("model")
    if not isinstance(m, str) or not m:
        raise bad("'model' is required (see GET /v1/models)", "model")
    if m not in served:
        raise ApiError(404, f"The model '{m[:80]}' does not exist (served: {', '.join(served)})",
                       param="model", code="model_not_found")
    return m


def _reject_unknown(body: dict, known: set[str]) -> None:
    for k in body:
        if k not in known and k not in IGNORED:
            raise bad(f"'{k[:40]}' is not supported by this server", k[:40], "unsupported_parameter")


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    n: int = 1


def _sampling(body: dict, vocab_size: int, max_tokens_cap: int) -> Sampling:
    s = Sampling()
    s.temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    s.top_p = _number(body, "top_p", 0.0, 1.0, 1.0, lo_open=True)
    s.presence_penalty = _number(body, "presence_penalty", -2.0, 2.0, 0.0)
    s.frequency_penalty = _number(body, "frequency_penalty", -2.0, 2.0, 0.0)
    s.logit_bias = _logit_bias(body, vocab_size)
    s.seed = _int(body, "seed", -(2 ** 63), 2 ** 63 - 1, None)
    s.stop = _stop(body)
    mt = _int(body, "max_tokens", 1, None, None)
    mct = _int(body, "max_completion_tokens", 1, None, None)
    s.max_tokens = mct if mct is not None else mt
    if s.max_tokens is not None and s.max_tokens > max_tokens_cap:
        raise bad(f"max_tokens is too large: {s.max_tokens} (this server allows at most {max_tokens_cap})",
                  "max_tokens")
    s.n = _int(body, "n", 1, 8, 1)
    return s


# ---- chat completions ------------------------------------------------------------------------------------

def _content(v, where: str) -> str:
    """Message content: a string, or a list of text parts (``{"type": "text", "text": ...}``)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        out = []
        for part in v:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}: only text content parts are supported", "messages")
            out.append(part["text"])
        return "".join(out)
    raise bad(f"{where}: content must be a string or a list of text parts", "messages")


def _tool_calls_text(calls, where: str) -> str:
    import json

    if not isinstance(calls, list):
        raise bad(f"{where}: tool_calls must be a list", "messages")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
            raise bad(f"{where}: each tool call needs function.name and function.arguments (strings)", "messages")
        try:
            args = json.loads(fn["arguments"])
        except (ValueError, RecursionError):
            raise bad(f"{where}: tool call arguments are not valid JSON", "messages") from None
        body = json.dumps({"name": fn["name"], "arguments": args}, separators=(",", ":"), ensure_ascii=False)
        out.append(f"<tool_call>{body}</tool_call>")
    return "".join(out)


def parse_messages(v) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise bad("'messages' must be a non-empty list", "messages")
    if len(v) > 1024:
        raise bad("too many messages (at most 1024)", "messages")
    out = []
    for i, m in enumerate(v):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object", "messages")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"{where}: unknown role {role!r:.30} (one of {', '.join(ROLES)})", "messages")
        content = m.get("content")
        text = "" if content is None else _content(content, where)
        if role == "assistant" and m.get("tool_calls"):
            text += _tool_calls_text(m["tool_calls"], where)
        elif content is None:
            raise bad(f"{where}: content is required", "messages")
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict

    def spec(self) -> dict:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def parse_tools(body: dict) -> tuple[dict[str, Tool], str | None]:
    """({name: tool}, choice): choice is None (tools off), "auto", "required" or a tool name."""
    raw = body.get("tools")
    choice = body.get("tool_choice")
    if raw is None:
        if choice not in (None, "none"):
            raise bad("'tool_choice' needs 'tools'", "tool_choice")
        return {}, None
    if not isinstance(raw, list) or not raw or len(raw) > 64:
        raise bad("'tools' must be a non-empty list of at most 64 tools", "tools")
    tools: dict[str, Tool] = {}
    for t in raw:
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad('each tool must be {"type": "function", "function": {"name": ..., "parameters": ...}}', "tools")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise bad(f"tool {fn['name'][:40]!r}: parameters must be a JSON schema object", "tools")
        desc = fn.get("description", "")
        tools[fn["name"]] = Tool(fn["name"], desc if isinstance(desc, str) else "", params)
    if choice is None or choice == "auto":
        return tools, "auto"
    if choice == "none":
        return tools, None
    if choice == "required":
        return tools, "required"
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name in tools:
            return tools, name
    raise bad("'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
              "{\"name\": <one of the tools>}}", "tool_choice")


@dataclass
class ChatJob:
    model: str
    messages: list[dict]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    json_pattern: str | None = None  # response_format: the regex the reply must match
    tools: dict[str, Tool] = field(default_factory=dict)
    tool_choice: str | None = None


def parse_chat(body, served: list[str], vocab_size: int, max_tokens_cap: int) -> ChatJob:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    _reject_unknown(body, {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
                           "seed", "stream", "stream_options", "logprobs", "top_logprobs", "response_format",
                           "tools", "tool_choice", "presence_penalty", "frequency_penalty", "logit_bias", "n"})
    job = ChatJob(_model(body, served), parse_messages(body.get("messages")),
                  _sampling(body, vocab_size, max_tokens_cap))
    job.stream = _bool(body, "stream", False)
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict) or not job.stream:
            raise bad("'stream_options' must be an object and needs stream=true", "stream_options")
        job.include_usage = _bool(so, "include_usage", False)
    job.logprobs = _bool(body, "logprobs", False)
    job.top_logprobs = _int(body, "top_logprobs", 0, 20, 0)
    if body.get("top_logprobs") is not None and not job.logprobs:
        raise bad("'top_logprobs' needs logprobs=true", "top_logprobs")
    rf = body.get("response_format")
    if rf is not None:
        from dodai.errors import DodaiError
        from dodai.generate.constrained import json_object_regex, json_schema_regex

        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "json_object":
            job.json_pattern = json_object_regex()
        elif kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
                raise bad("response_format json_schema needs json_schema.schema (an object)", "response_format")
            try:
                job.json_pattern = json_schema_regex(js["schema"])
            except DodaiError as e:
                raise bad(f"response_format: {e}", "response_format") from None
        elif kind != "text":
            raise bad("response_format.type must be 'text', 'json_object' or 'json_schema'", "response_format")
    job.tools, job.tool_choice = parse_tools(body)
    if job.tool_choice is not None and job.json_pattern is not None:
        raise bad("tools and a JSON response_format cannot be combined", "response_format")
    return job


# ---- completions (legacy) --------------------------------------------------------------------------------

@dataclass
class CompletionJob:
    model: str
    prompts: list  # each a str or a list of token ids
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None
    echo: bool = False


def parse_completion(body, served: list[str], vocab_size: int, max_tokens_cap: int) -> CompletionJob:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    _reject_unknown(body, {"model", "prompt", "temperature", "top_p", "max_tokens", "stop", "seed", "stream",
                           "stream_options", "logprobs", "echo", "presence_penalty", "frequency_penalty",
                           "logit_bias", "n", "best_of"})
    model = _model(body, served)
    p = body.get("prompt")
    if isinstance(p, str):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        prompts = list(p)
    elif isinstance(p, list) and p and all(isinstance(x, list) and x and all(
            isinstance(t, int) and not isinstance(t, bool) for t in x) for x in p):
        prompts = [list(x) for x in p]
    else:
        raise bad("'prompt' must be a string, a list of strings, a list of token ids or a list of such lists",
                  "prompt")
    if len(prompts) > 32:
        raise bad("at most 32 prompts per request", "prompt")
    for x in prompts:
        if isinstance(x, list) and any(not 0 <= t < vocab_size for t in x):
            raise bad(f"prompt token id out of range [0, {vocab_size})", "prompt")
    if body.get("best_of") not in (None, 1):
        raise bad("'best_of' other than 1 is not supported", "best_of", "unsupported_parameter")
    s = _sampling(body, vocab_size, max_tokens_cap)
    if body.get("max_tokens") is None:
        s.max_tokens = min(16, max_tokens_cap)  # the OpenAI default for completions
    job = CompletionJob(model, prompts, s)
    job.stream = _bool(body, "stream", False)
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict) or not job.stream:
            raise bad("'stream_options' must be an object and needs stream=true", "stream_options")
        job.include_usage = _bool(so, "include_usage", False)
    job.logprobs = _int(body, "logprobs", 0, 5, None)
    job.echo = _bool(body, "echo", False)
    if len(prompts) * s.n > 64:
        raise bad("prompts × n must be at most 64", "n")
    return job


# ---- embeddings ------------------------------------------------------------------------------------------

def parse_embeddings(body, served: list[str]) -> tuple[str, list[str], str]:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    _reject_unknown(body, {"model", "input", "encoding_format", "dimensions"})
    model = _model(body, served)
    x = body.get("input")
    if isinstance(x, str):
        texts = [x]
    elif isinstance(x, list) and x and all(isinstance(t, str) for t in x):
        texts = list(x)
    else:
        raise bad("'input' must be a string or a non-empty list of strings (token arrays are not supported)", "input")
    if len(texts) > 512:
        raise bad("at most 512 inputs per request", "input")
    if any(not t for t in texts):
        raise bad("'input' must not contain empty strings", "input")
    if any(len(t) > 100_000 for t in texts):
        raise bad("each input must be at most 100,000 characters", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if body.get("dimensions") is not None:
        raise bad("'dimensions' is not supported (the model's size is fixed)", "dimensions", "unsupported_parameter")
    return model, texts, fmt
