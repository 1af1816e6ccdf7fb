"""Assemble and run the server: model → paged backend → engine → scheduler → Starlette app → uvicorn.

:func:`make_served` builds everything but the socket; :func:`serve_forever` runs uvicorn in the foreground
(``dodai serve``); :class:`BackgroundServer` runs it in a thread on a free loopback port (tests, benchmarks).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from dodai.errors import DodaiError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the model beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise DodaiError(f"refusing to listen on {host} without --api-key: anyone who can reach this machine could "
                         f"use the model (bind 127.0.0.1, or set --api-key KEY / DODAI_API_KEY)")


def make_served(model, tokenizer, model_id: str, *, max_batch: int = 16, num_blocks: int | None = None,
                block_size: int = 16, prefill_chunk: int = 256, context: int | None = None,
                api_key: str | None = None, max_tokens_cap: int = 1024, max_queue: int = 64,
                max_body_bytes: int = 1 << 20, embed_model: str | None = None, cors_origins=()):
    from dodai.generate.engine import Engine
    from dodai.generate.paged import PagedBackend
    from dodai.serve.app import ServeConfig, Served
    from dodai.serve.scheduler import Scheduler

    for name, v in (("--max-batch", max_batch), ("--max-tokens", max_tokens_cap), ("--max-queue", max_queue)):
        if v < 1:
            raise DodaiError(f"{name} must be positive, got {v}")
    if context is not None and context < 16:
        raise DodaiError(f"--context must be at least 16 tokens, got {context}")
    model.eval()
    backend = PagedBackend(model, num_blocks=num_blocks, block_size=block_size, max_batch=max_batch,
                           prefill_chunk=prefill_chunk, context=context)
    scheduler = Scheduler(Engine(model, backend), max_queue=max_queue)
    loader = None
    if embed_model is not None:
        def loader():
            from dodai.models.bert import load_sentence_encoder

            return load_sentence_encoder(embed_model)
    cfg = ServeConfig(model_id, api_key=api_key, max_tokens_cap=max_tokens_cap, max_body_bytes=max_body_bytes,
                      cors_origins=list(cors_origins), embed_id=embed_model)
    return Served(model, tokenizer, scheduler, cfg, loader)


def _config(app, host: str, port: int):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          timeout_graceful_shutdown=5)


def serve_forever(served, host: str, port: int) -> None:
    import uvicorn

    from dodai.serve.app import build_app

    server = uvicorn.Server(_config(build_app(served), host, port))
    try:
        server.run()
    finally:
        served.scheduler.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """The app on 127.0.0.1:<free port> in a daemon thread; ``with BackgroundServer(served) as srv: srv.url``."""

    def __init__(self, served, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        from dodai.serve.app import build_app

        self.served, self.host, self.port = served, host, port or free_port(host)
        self.server = uvicorn.Server(_config(build_app(served), self.host, self.port))
        self.thread = threading.Thread(target=self.server.run, name="dodai-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout:
                raise DodaiError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.served.scheduler.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
