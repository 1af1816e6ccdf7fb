"""The server's scheduler thread: one :class:`dodai.generate.engine.Engine` on a paged backend, fed from HTTP.

vLLM keeps the API server (HTTP only), the scheduler (who runs this step) and the model runner (how a step runs)
apart; here the engine and :class:`dodai.generate.paged.PagedBackend` are the latter two, and this module is
the bridge: asyncio handlers :meth:`Scheduler.submit` requests from the event loop, one worker thread owns the
engine (PyTorch releases the GIL inside its kernels, so the event loop keeps serving while a step runs), admits
new requests between steps, and hands every new token back to the waiting handler through
``loop.call_soon_threadsafe``. A handler whose client went away calls :meth:`Ticket.cancel`; the engine drops
the sequence at its next step and its KV blocks return to the pool.

Limits: at most ``max_queue`` requests wait for admission (:meth:`submit` raises :class:`QueueFull` beyond, the
HTTP layer turns it into 429 with ``Retry-After``); admission itself is bounded by ``max_batch`` rows and the
pool's blocks.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field

from dodai.errors import DodaiError
from dodai.generate.engine import Engine, Request


class QueueFull(DodaiError):
    """Too many requests are waiting; retry later."""


@dataclass
class Metrics:
    requests_total: int = 0
    requests_rejected: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prefix_cached_tokens_total: int = 0
    steps_total: int = 0
    busy_seconds_total: float = 0.0
    recent: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens) of recent steps

    def tokens_per_second(self, window: float = 10.0) -> float:
        now = time.monotonic()
        pts = [(t, n) for t, n in self.recent if now - t <= window]
        if not pts:
            return 0.0
        span = max(now - pts[0][0], 1e-3)
        return sum(n for _, n in pts) / span


class Ticket:
    """One submitted request as the HTTP handler sees it: an asyncio queue of events and the request."""

    def __init__(self, req: Request, loop: asyncio.AbstractEventLoop):
        self.req = req
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        self.req.cancel()

    def _post(self, event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Scheduler:
    """Owns the engine and its worker thread. ``("token", text, ids, logprobs)`` events for each step that
    produced something, then ``("done", finish_reason)``, or ``("error", message)``."""

    def __init__(self, engine: Engine, max_queue: int = 64):
        self.engine = engine
        self.max_queue = max_queue
        self.metrics = Metrics()
        self._inbox: queue.Queue[Ticket] = queue.Queue()
        self._tickets: dict[int, Ticket] = {}  # id(request) -> ticket, for every request in the engine
        self._inbox_n = 0  # tickets in the inbox (the engine's own waiting list is the rest of the queue)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dodai-scheduler", daemon=True)
        self._thread.start()

    # ---- called from the event loop --------------------------------------------------------------
    def submit(self, req: Request) -> Ticket:
        with self._lock:
            depth = self.queue_depth
            if depth >= self.max_queue:
                self.metrics.requests_rejected += 1
                raise QueueFull(f"the server is busy: {depth} requests are waiting (limit {self.max_queue})")
            self._inbox_n += 1
            self.metrics.requests_total += 1
        t = Ticket(req, asyncio.get_running_loop())
        self._inbox.put(t)
        return t

    @property
    def queue_depth(self) -> int:
        """Requests submitted and not yet admitted (read from any thread: a racy but harmless length)."""
        return self._inbox_n + len(self.engine.waiting)

    @property
    def running(self) -> int:
        return len(self.engine.running) + len(getattr(self.engine.backend, "prefilling", []))

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._inbox.put(None)  # wake the worker
        self._thread.join(timeout)

    # ---- the worker thread ---------------------------------------------------------------------------
    def _intake(self, block: bool) -> None:
        while True:
            try:
                t = self._inbox.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                return
            block = False
            if t is None:
                continue
            self._tickets[id(t.req)] = t
            try:
                self.engine.add(t.req)
            except DodaiError as e:
                t._post(("error", str(e)))
                self._finish(id(t.req), t, failed=True)
            finally:
                with self._lock:
                    self._inbox_n -= 1
            if t.req.done and id(t.req) in self._tickets:  # nothing to generate (max_tokens 0)
                self._finish(id(t.req), t)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._intake(block=self.engine.idle)
            if self.engine.idle:
                continue
            t0 = time.perf_counter()
            try:
                touched = self.engine.step()
            except Exception as e:  # a failed step ends the requests in it, never the server
                msg = str(e) if isinstance(e, DodaiError) else f"internal error ({type(e).__name__})"
                for key, t in list(self._tickets.items()):
                    if t.req.done:
                        t._post(("error", msg))
                        self._finish(key, t, failed=True)
                continue
            dt = time.perf_counter() - t0
            m = self.metrics
            m.steps_total += 1
            m.busy_seconds_total += dt
            n_tokens = 0
            for r in touched:
                t = self._tickets.get(id(r))
                if t is None:
                    continue
                n_tokens += 1
                t._post(("token", r.take_text() if r._stopper is not None else "", r.ids[-1],
                         r.logprobs[-1] if r.logprobs else None))
            m.generation_tokens_total += n_tokens
            m.recent.append((time.monotonic(), n_tokens))
            if len(m.recent) > 4096:
                del m.recent[:2048]
            for key, t in list(self._tickets.items()):  # finished (including cancelled while waiting/prefilling)
                if t.req.done:
                    self._finish(key, t)

    def _finish(self, key: int, t: Ticket, failed: bool = False) -> None:
        del self._tickets[key]
        r = t.req
        m = self.metrics
        m.prompt_tokens_total += len(r.prompt)
        m.prefix_cached_tokens_total += r.prompt_cached
        if r.finish_reason == "cancelled":
            m.requests_cancelled += 1
        if failed:
            m.requests_failed += 1
            return
        t._post(("done", r.finish_reason))
