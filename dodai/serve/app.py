"""``dodai serve``'s ASGI application: the OpenAI routes, the web chat, health and metrics (Starlette).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``, ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /`` (the web chat, one static page). The HTTP layer
only checks and translates (:mod:`dodai.serve.protocol`); generation goes through the scheduler thread
(:mod:`dodai.serve.scheduler`) onto the one decode loop, so concurrent requests share decode steps.

Errors are OpenAI's error object with the right status and never a stack trace: 400 for a bad request
(including a prompt longer than the context: code ``context_length_exceeded``), 401 for a missing or wrong
key, 404 for an unknown model or route, 405, 413 for a body over the limit, 429 with ``Retry-After`` when the
queue is full, 500 for anything unexpected (logged on the server, never shown).

Security defaults (the caller enforces the bind rules, see :mod:`dodai.commands.serve`): a Bearer key, when set,
is compared in constant time (``hmac.compare_digest``) on every ``/v1`` route and ``/metrics``; no CORS headers
unless origins are given; control strings inside message content stay text (R8.2's ``safe_chat_ids``), so a
user cannot forge a system turn.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dodai.errors import DodaiError
from dodai.generate.session import text_prompt_ids
from dodai.serve.protocol import ApiError, ChatJob, bad, parse_chat, parse_completion, parse_embeddings

log = logging.getLogger("dodai.serve")
STATIC = Path(__file__).parent / "static"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class ServeConfig:
    model_id: str
    api_key: str | None = None
    max_tokens_cap: int = 1024
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)
    embed_id: str | None = None  # the embedding model's name (loaded on first use)


class Served:
    """What the routes need: the model's tokenizer and template, the scheduler, the embedder, counters."""

    def __init__(self, model, tokenizer, scheduler, config: ServeConfig, embedder_loader=None):
        from dodai.generate.session import chat_template_for, stop_ids_for

        self.model, self.tok, self.scheduler, self.cfg = model, tokenizer, scheduler, config
        self.template = chat_template_for(tokenizer)
        self.stop_ids = stop_ids_for(tokenizer)
        self.context = scheduler.engine.backend.context
        self.vocab = model.config.vocab_size
        self._embedder_loader, self._embedder = embedder_loader, None
        self._embed_lock = asyncio.Lock()
        self.http_counts: dict[tuple[str, int], int] = {}
        self.created = int(time.time())

    async def embedder(self):
        async with self._embed_lock:
            if self._embedder is None:
                self._embedder = await asyncio.to_thread(self._embedder_loader)
        return self._embedder


# ---- plumbing ---------------------------------------------------------------------------------------------

def _error_response(e: ApiError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _authorize(request, served: Served) -> None:
    key = served.cfg.api_key
    if key is None:
        return
    got = request.headers.get("authorization", "")
    scheme, _, token = got.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
    if not ok:
        raise ApiError(401, "Incorrect or missing API key (send 'Authorization: Bearer <key>')",
                       "authentication_error", code="invalid_api_key")


async def _read_json(request, served: Served):
    limit = served.cfg.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise bad("the request body is empty (send a JSON object)")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("the request body is not valid JSON") from None


def _route(handler, auth: bool = True):
    """Wrap a handler: auth, ApiError → OpenAI error JSON, anything else → a logged 500."""

    async def endpoint(request):
        served: Served = request.app.state.served
        try:
            if auth:
                _authorize(request, served)
            response = await handler(request, served)
        except ApiError as e:
            response = _error_response(e)
        except DodaiError as e:
            response = _error_response(bad(str(e)))
        except Exception:
            log.exception("internal error on %s", request.url.path)
            response = _error_response(ApiError(500, "internal server error", "server_error"))
        key = (request.url.path, response.status_code)
        served.http_counts[key] = served.http_counts.get(key, 0) + 1
        return response

    return endpoint


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


# ---- generation ---------------------------------------------------------------------------------------------

@dataclass
class Choice:
    text: str = ""
    ids: list = field(default_factory=list)
    finish: str | None = None
    logprobs: list = field(default_factory=list)  # TokenLogprob per generated token
    prompt_cached: int = 0
    tool_calls: list | None = None


def _pipeline(job_sampling, pattern: str | None, served: Served, greedy_override: bool = False):
    from dodai.generate.constrained import ConstrainedPipeline
    from dodai.generate.processors import LogitsPipeline

    s = job_sampling
    kw = dict(temperature=0.0 if greedy_override else s.temperature, top_p=s.top_p if s.top_p < 1 else None,
              presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty, logit_bias=s.logit_bias)
    if pattern is None:
        return LogitsPipeline(**kw)
    constraint = _constraint(served, pattern)
    return ConstrainedPipeline(constraint=constraint, **kw)


def _constraint(served: Served, pattern: str):
    """Compiled token automata are cached per pattern (the same schema is usually asked for again)."""
    from dodai.generate.constrained import TokenConstraint

    cache = served.__dict__.setdefault("_constraints", {})
    c = cache.get(pattern)
    if c is None:
        if len(cache) > 32:
            cache.clear()
        c = cache[pattern] = TokenConstraint(pattern, served.tok, served.vocab)
    return c


async def _run(served: Served, ids: list[int], max_new: int, pipe, seed, stop: list[str], n_logprobs,
               on_text=None, stop_ids=None) -> Choice:
    """One generation through the scheduler; ``on_text(piece)`` (async) gets the streamed text."""
    from dodai.generate.engine import Request
    from dodai.serve.scheduler import QueueFull

    req = Request(ids, max_new, pipe, seed=seed, stop_ids=served.stop_ids if stop_ids is None else stop_ids,
                  stop_strings=stop, logprobs=n_logprobs, tokenizer=served.tok, stream_text=True)
    try:
        ticket = served.scheduler.submit(req)
    except QueueFull as e:
        raise ApiError(429, str(e), "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"}) \
            from None
    try:
        while True:
            ev = await ticket.events.get()
            if ev[0] == "token":
                if ev[1] and on_text is not None:
                    await on_text(ev[1])
            elif ev[0] == "error":
                raise ApiError(500 if ev[1].startswith("internal") else 400, ev[1],
                               "server_error" if ev[1].startswith("internal") else "invalid_request_error")
            else:
                break
    finally:
        if not req.done:
            ticket.cancel()  # the client went away (a cancelled task) or something failed: free the sequence
    c = req.completion()
    return Choice(c.text or "", c.ids, c.finish_reason, c.logprobs or [], req.prompt_cached)


def _finish_reason(f: str | None) -> str:
    return {"eos": "stop", "stop": "stop", "length": "length"}.get(f or "", "stop")


def _tool_system(tools) -> str:
    specs = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools.values())
    return ("You can call functions. The functions are inside <tools></tools>:\n"
            f"<tools>\n{specs}\n</tools>\n"
            f'To call a function, reply with {TOOL_OPEN}{{"name":<function name>,"arguments":<JSON object>}}'
            f"{TOOL_CLOSE}. The result comes back in a message from the tool. "
            "When you know the answer, reply with the answer only.")


def _with_tools(messages: list[dict], tools) -> list[dict]:
    sys_text = _tool_system(tools)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + sys_text}] + messages[1:]
    return [{"role": "system", "content": sys_text}] + messages


def _render(served: Served, messages: list[dict]) -> list[int]:
    from dodai.generate.session import render_chat_ids

    return render_chat_ids(served.template, served.tok, messages)


def _check_room(served: Served, n_prompt: int, max_tokens: int | None) -> int:
    room = served.context - n_prompt
    if room < 1 or (max_tokens is not None and max_tokens > room):
        want = max_tokens or 1
        raise bad(f"This model's maximum context length is {served.context} tokens. However, you requested "
                  f"{n_prompt + want} tokens ({n_prompt} in the messages, {want} in the completion). Please reduce "
                  f"the length of the messages or completion.", "messages", "context_length_exceeded")
    return min(max_tokens or served.cfg.max_tokens_cap, room)


async def _chat_choice(served: Served, job: ChatJob, ids: list[int], max_new: int, seed, on_text) -> Choice:
    """One choice of a chat completion: plain, JSON-constrained, or with tools (two phases)."""
    from dodai.agents.fncall import call_regex, parse_call
    from dodai.safety.guards import encode_plain

    s = job.sampling
    n_lp = job.top_logprobs if job.logprobs else None
    if job.tool_choice is None:
        return await _run(served, ids, max_new, _pipeline(s, job.json_pattern, served), seed, s.stop, n_lp, on_text)
    content, choice = "", None
    prefix = ids
    if job.tool_choice == "auto":  # phase 1: free text that may open a call
        choice = await _run(served, ids, max_new, _pipeline(s, None, served), seed, s.stop + [TOOL_OPEN], n_lp,
                            on_text)
        full = served.tok.decode(choice.ids)
        if choice.finish != "stop" or TOOL_OPEN not in full:
            return choice
        content = choice.text
        prefix = ids + encode_plain(served.tok, content + TOOL_OPEN)
    else:
        prefix = ids + encode_plain(served.tok, TOOL_OPEN)
    tools = job.tools if job.tool_choice in ("auto", "required") else {job.tool_choice: job.tools[job.tool_choice]}
    budget = served.context - len(prefix)
    if budget < 8:
        raise bad("no room left in the context for a tool call", "messages", "context_length_exceeded")
    call = await _run(served, prefix, min(budget, max(max_new, 256)), _pipeline(s, call_regex(tools), served), seed,
                      [], n_lp, None, stop_ids={served.tok.eos_id} if served.tok.eos_id is not None else set())
    name, args, err = parse_call(call.text)
    out = Choice(content, (choice.ids if choice else []) + call.ids, "tool_calls" if err is None else call.finish,
                 (choice.logprobs if choice else []) + call.logprobs, (choice or call).prompt_cached)
    if err is None:
        out.tool_calls = [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                           "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}]
    else:
        out.text = content + TOOL_OPEN + call.text  # an incomplete call (the token budget ran out) stays text
    return out


def _token_entry(served: Served, tid: int, lp: float) -> dict:
    text = served.tok.decode([tid])
    return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}


def _chat_logprobs(served: Served, lps) -> dict:
    return {"content": [dict(_token_entry(served, x.token, x.logprob),
                             top_logprobs=[_token_entry(served, t, v) for t, v in x.top]) for x in lps]}


def _usage(n_prompt: int, choices: list[Choice]) -> dict:
    done = sum(len(c.ids) for c in choices)
    return {"prompt_tokens": n_prompt, "completion_tokens": done, "total_tokens": n_prompt + done,
            "prompt_tokens_details": {"cached_tokens": max((c.prompt_cached for c in choices), default=0)}}


async def _watch(request, tasks: list[asyncio.Task]) -> None:
    """Cancel ``tasks`` when the client disconnects (a non-streaming request still frees its sequences)."""
    while not all(t.done() for t in tasks):
        if await request.is_disconnected():
            for t in tasks:
                t.cancel()
            return
        await asyncio.sleep(0.2)


async def _gather_or_cancel(request, coros) -> list:
    tasks = [asyncio.ensure_future(c) for c in coros]
    watcher = asyncio.ensure_future(_watch(request, tasks))
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    finally:
        watcher.cancel()


# ---- routes ----------------------------------------------------------------------------------------------------

async def chat_completions(request, served: Served):
    from starlette.responses import JSONResponse, StreamingResponse

    body = await _read_json(request, served)
    job = parse_chat(body, [served.cfg.model_id], served.vocab, served.cfg.max_tokens_cap)
    messages = _with_tools(job.messages, job.tools) if job.tool_choice is not None else job.messages
    ids = await asyncio.to_thread(_render, served, messages)
    max_new = _check_room(served, len(ids), job.sampling.max_tokens)
    rid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
    seeds = [None if job.sampling.seed is None else job.sampling.seed + i for i in range(job.sampling.n)]
    head = {"id": rid, "created": created, "model": job.model, "system_fingerprint": "dodai"}
    if not job.stream:
        choices = await _gather_or_cancel(request, [_chat_choice(served, job, ids, max_new, sd, None) for sd in seeds])
        out = []
        for i, c in enumerate(choices):
            msg = {"role": "assistant", "content": c.text if c.tool_calls is None or c.text else None}
            if c.tool_calls is not None:
                msg["tool_calls"] = c.tool_calls
            out.append({"index": i, "message": msg,
                        "logprobs": _chat_logprobs(served, c.logprobs) if job.logprobs else None,
                        "finish_reason": "tool_calls" if c.tool_calls else _finish_reason(c.finish)})
        return JSONResponse({**head, "object": "chat.completion", "choices": out, "usage": _usage(len(ids), choices)})

    async def events():
        q: asyncio.Queue = asyncio.Queue()

        def chunk(i, delta, finish=None, logprobs=None):
            return {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

        async def one(i, seed):
            async def on_text(piece):
                await q.put(chunk(i, {"content": piece}))

            await q.put(chunk(i, {"role": "assistant", "content": ""}))
            c = await _chat_choice(served, job, ids, max_new, seed, on_text)
            if job.logprobs and c.logprobs:  # one chunk with the whole choice's log-probs
                await q.put(chunk(i, {}, None, _chat_logprobs(served, c.logprobs)))
            if c.tool_calls:
                await q.put(chunk(i, {"tool_calls": [dict(tc, index=k) for k, tc in enumerate(c.tool_calls)]}))
            await q.put(chunk(i, {}, "tool_calls" if c.tool_calls else _finish_reason(c.finish)))
            return c

        tasks = [asyncio.ensure_future(one(i, sd)) for i, sd in enumerate(seeds)]
        done_all = asyncio.ensure_future(asyncio.gather(*tasks))
        try:
            while True:
                getter = asyncio.ensure_future(q.get())
                finished, _ = await asyncio.wait({getter, done_all}, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    yield _sse(getter.result())
                    continue
                getter.cancel()
                while not q.empty():
                    yield _sse(q.get_nowait())
                try:
                    choices = done_all.result()
                except ApiError as e:
                    yield _sse(e.body())
                    break
                if job.include_usage:
                    yield _sse({**head, "object": "chat.completion.chunk", "choices": [],
                                "usage": _usage(len(ids), choices)})
                break
            yield b"data: [DONE]\n\n"
        finally:  # also when the client disconnects (the response task is cancelled)
            for t in tasks:
                t.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def completions(request, served: Served):
    from starlette.responses import JSONResponse, StreamingResponse

    body = await _read_json(request, served)
    job = parse_completion(body, [served.cfg.model_id], served.vocab, served.cfg.max_tokens_cap)
    prompts = [p if isinstance(p, list) else text_prompt_ids(served.tok, p) for p in job.prompts]
    if any(not p for p in prompts):
        raise bad("a prompt encodes to no tokens", "prompt")
    s = job.sampling
    budgets = [_check_room(served, len(p), s.max_tokens) for p in prompts]
    rid, created = "cmpl-" + uuid.uuid4().hex, int(time.time())
    head = {"id": rid, "created": created, "model": job.model, "system_fingerprint": "dodai"}
    rows = [(pi, k) for pi in range(len(prompts)) for k in range(s.n)]
    seed = lambda k: None if s.seed is None else s.seed + k  # noqa: E731

    def logprobs_obj(c: Choice, offset: int) -> dict:
        toks, lps, tops, offs, pos = [], [], [], [], offset
        for x in c.logprobs:
            t = served.tok.decode([x.token])
            toks.append(t)
            lps.append(x.logprob)
            tops.append({served.tok.decode([a]): v for a, v in x.top})
            offs.append(pos)
            pos += len(t)
        return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}

    def prompt_text(pi: int) -> str:
        p = job.prompts[pi]
        return p if isinstance(p, str) else served.tok.decode(p)

    if not job.stream:
        choices = await _gather_or_cancel(request, [
            _run(served, prompts[pi], budgets[pi], _pipeline(s, None, served), seed(k), s.stop, job.logprobs)
            for pi, k in rows])
        out = []
        for i, ((pi, _), c) in enumerate(zip(rows, choices)):
            pre = prompt_text(pi) if job.echo else ""
            out.append({"index": i, "text": pre + c.text, "finish_reason": _finish_reason(c.finish),
                        "logprobs": logprobs_obj(c, len(pre)) if job.logprobs is not None else None})
        n_prompt = sum(len(prompts[pi]) for pi, _ in rows)
        return JSONResponse({**head, "object": "text_completion", "choices": out,
                             "usage": _usage(n_prompt, choices)})

    async def events():
        q: asyncio.Queue = asyncio.Queue()

        def chunk(i, text, finish=None):
            return {**head, "object": "text_completion",
                    "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}]}

        async def one(i, pi, k):
            async def on_text(piece):
                await q.put(chunk(i, piece))

            if job.echo:
                await q.put(chunk(i, prompt_text(pi)))
            c = await _run(served, prompts[pi], budgets[pi], _pipeline(s, None, served), seed(k), s.stop,
                           job.logprobs, on_text)
            await q.put(chunk(i, "", _finish_reason(c.finish)))
            return c

        tasks = [asyncio.ensure_future(one(i, pi, k)) for i, (pi, k) in enumerate(rows)]
        done_all = asyncio.ensure_future(asyncio.gather(*tasks))
        try:
            while True:
                getter = asyncio.ensure_future(q.get())
                finished, _ = await asyncio.wait({getter, done_all}, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    yield _sse(getter.result())
                    continue
                getter.cancel()
                while not q.empty():
                    yield _sse(q.get_nowait())
                try:
                    choices = done_all.result()
                except ApiError as e:
                    yield _sse(e.body())
                    break
                if job.include_usage:
                    n_prompt = sum(len(prompts[pi]) for pi, _ in rows)
                    yield _sse({**head, "object": "text_completion", "choices": [],
                                "usage": _usage(n_prompt, choices)})
                break
            yield b"data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def embeddings(request, served: Served):
    from starlette.responses import JSONResponse

    body = await _read_json(request, served)
    if served.cfg.embed_id is None:
        raise ApiError(404, "this server has no embedding model (start it with --embedding-model NAME)",
                       param="model", code="model_not_found")
    model, texts, fmt = parse_embeddings(body, [served.cfg.embed_id])
    enc = await served.embedder()
    vecs = await asyncio.to_thread(enc.encode, texts)
    n_tokens = sum(len(enc.tokenizer.encode(t, max_length=enc.max_seq_length)) for t in texts)
    data = []
    for i, v in enumerate(vecs.tolist()):
        emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if fmt == "base64" else v
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return JSONResponse({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


async def models(request, served: Served):
    from starlette.responses import JSONResponse

    ids = [served.cfg.model_id] + ([served.cfg.embed_id] if served.cfg.embed_id else [])
    return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": served.created,
                                                     "owned_by": "dodai"} for m in ids]})


async def health(request, served: Served):
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok", "model": served.cfg.model_id})


async def metrics(request, served: Served):
    from starlette.responses import PlainTextResponse

    sch, m = served.scheduler, served.scheduler.metrics
    be = sch.engine.backend
    rows = [
        ("dodai_requests_total", "counter", "Generation requests accepted by the scheduler", m.requests_total),
        ("dodai_requests_rejected_total", "counter", "Requests refused with 429 (queue full)", m.requests_rejected),
        ("dodai_requests_cancelled_total", "counter", "Requests whose client went away", m.requests_cancelled),
        ("dodai_requests_failed_total", "counter", "Requests that ended in an error", m.requests_failed),
        ("dodai_queue_depth", "gauge", "Requests waiting for admission", sch.queue_depth),
        ("dodai_running_sequences", "gauge", "Sequences prefilling or decoding", sch.running),
        ("dodai_prompt_tokens_total", "counter", "Prompt tokens of finished requests", m.prompt_tokens_total),
        ("dodai_prefix_cached_tokens_total", "counter", "Prompt tokens served from shared KV blocks",
         m.prefix_cached_tokens_total),
        ("dodai_generation_tokens_total", "counter", "Tokens generated", m.generation_tokens_total),
        ("dodai_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s", m.tokens_per_second()),
        ("dodai_engine_steps_total", "counter", "Decode steps run", m.steps_total),
        ("dodai_kv_blocks_total", "gauge", "KV cache blocks in the pool", be.blocks_total),
        ("dodai_kv_blocks_free", "gauge", "KV cache blocks no sequence holds", be.blocks_free),
        ("dodai_kv_blocks_cached", "gauge", "Free KV blocks that still hold a reusable prefix", be.pool.num_cached),
    ]
    lines = []
    for name, kind, help_, value in rows:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {float(value):g}"]
    lines += ["# HELP dodai_http_responses_total HTTP responses by path and status",
              "# TYPE dodai_http_responses_total counter"]
    for (path, status), n in sorted(served.http_counts.items()):
        p = path if path in KNOWN_PATHS else "other"
        lines.append(f'dodai_http_responses_total{{path="{p}",status="{status}"}} {n}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def index(request, served: Served):
    from starlette.responses import HTMLResponse

    html = (STATIC / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html.replace("__MODEL_ID__", json.dumps(served.cfg.model_id)),
                        headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                           "style-src 'unsafe-inline'; connect-src 'self'"})


KNOWN_PATHS = {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


def build_app(served: Served):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    routes = [
        Route("/", _route(index, auth=False), methods=["GET"]),
        Route("/health", _route(health, auth=False), methods=["GET"]),
        Route("/metrics", _route(metrics), methods=["GET"]),
        Route("/v1/models", _route(models), methods=["GET"]),
        Route("/v1/chat/completions", _route(chat_completions), methods=["POST"]),
        Route("/v1/completions", _route(completions), methods=["POST"]),
        Route("/v1/embeddings", _route(embeddings), methods=["POST"]),
    ]
    middleware = []
    if served.cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=served.cfg.cors_origins,
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 500)
        msg = {404: f"no route {request.url.path[:100]}", 405: f"method {request.method} not allowed here"}.get(
            status, "request failed")
        return _error_response(ApiError(status, msg, "invalid_request_error" if status < 500 else "server_error"))

    async def server_error(request, exc):
        log.exception("internal error", exc_info=exc)
        return _error_response(ApiError(500, "internal server error", "server_error"))

    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={404: not_found, 405: not_found, 500: server_error, Exception: server_error})
    app.state.served = served
    return app
