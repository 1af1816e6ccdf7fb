"""One fp32 SmolLM2 per test process for the weight-format, KV-cache and speculative tests (loading the
GGUF is the slow part of each). Tests must not modify it: they quantize deep copies."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def smollm2(path: str):
    from dodai.models import load_model

    return load_model(path)
