"""Checkpoints that survive being killed at any instant.

Layout of ``<run>/ckpt/``:

- ``model.safetensors`` — the weights under the module's own parameter names (dodai's own safetensors
  writer, never pickle);
- ``config.json`` — the model config; ``tokenizer.json`` when a tokenizer is given;
- ``trainer_state.pt`` — optimizer state, step, best val loss, elapsed time and the RNG states
  (torch, numpy, python ``random`` and the batch generator = the data position), stored as plain
  tensors/lists/numbers so ``torch.load(weights_only=True)`` reads it;
- ``COMPLETE`` — written last; a folder without it is never trusted.

Each file is written atomically (temp file, fsync, rename) into ``ckpt.tmp/``; then ``ckpt/`` is
renamed to ``ckpt.old/``, ``ckpt.tmp/`` to ``ckpt/``, and ``ckpt.old/`` removed. Whenever the
process dies, one of ``ckpt/`` or ``ckpt.old/`` holds a complete checkpoint, and
:func:`find_checkpoint` picks it.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch

from dodai.errors import DodaiError
from dodai.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from dodai.weights.safetensors import load_file, save_file

MARKER = "COMPLETE"


def model_config_dict(model) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if is_dataclass(cfg):
        return asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    return {}


def rng_state() -> dict:
    """RNG states of torch (CPU, and CUDA when present), numpy and python, as weights_only-safe values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(run_dir: str | Path, model, trainer_state: dict, tokenizer=None) -> Path:
    """Write ``run_dir/ckpt`` as described in the module docstring; returns its path."""
    run = Path(run_dir)
    tmp, final, old = run / "ckpt.tmp", run / "ckpt", run / "ckpt.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_state_dict(model, tmp)
    if tokenizer is not None:
        save_tokenizer(tokenizer, tmp / "tokenizer.json")
    buf = io.BytesIO()
    torch.save(trainer_state, buf)
    atomic_write_bytes(tmp / "trainer_state.pt", buf.getvalue())
    atomic_write_text(tmp / MARKER, json.dumps({"step": trainer_state.get("step")}) + "\n")
    # Swap: at every instant ckpt/ or ckpt.old/ is complete.
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def save_state_dict(model, folder: Path) -> None:
    """model.safetensors with the module's own parameter names (what ``load_state_dict`` takes back, whatever
    names the model's ``save`` exports to) + config.json. A tensor shared by several names (tied weights) is
    written once, under its first name."""
    seen, state = set(), {}
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape)) if v.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        state[k] = v.detach().cpu().contiguous()
    save_file(state, Path(folder) / "model.safetensors")
    atomic_write_json(Path(folder) / "config.json", model_config_dict(model))


def save_model_folder(model, folder: Path) -> None:
    """model.safetensors + config.json: the model's own ``save`` when it has one (a loadable model folder)."""
    if hasattr(model, "save"):
        model.save(folder)
        return
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, Path(folder) / "model.safetensors")
    atomic_write_json(Path(folder) / "config.json", model_config_dict(model))


def save_tokenizer(tokenizer, path: Path) -> None:
    """Save via the tokenizer's own ``save`` into a temp folder, then rename (its writer may not be atomic)."""
    path = Path(path)
    tmp_dir = path.parent / f".{path.name}.tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    written = Path(tokenizer.save(tmp_dir / path.name) or tmp_dir / path.name)
    if written.is_dir():
        written = written / "tokenizer.json"
    with open(written, "rb") as f:
        os.fsync(f.fileno())
    os.replace(written, path)
    shutil.rmtree(tmp_dir, ignore_errors=True)


def find_checkpoint(run_dir: str | Path) -> Path | None:
    run = Path(run_dir)
    for name in ("ckpt", "ckpt.old"):
        d = run / name
        if (d / MARKER).is_file():
            return d
    return None


def read_checkpoint(run_dir: str | Path, weights: bool = True) -> tuple[dict, dict]:
    """(weights, trainer state) of the run's last complete checkpoint, without a model to load them into
    (FSDP loads the full weights into its shards itself); ``weights=False`` reads the state only."""
    d = find_checkpoint(run_dir)
    if d is None:
        raise DodaiError(f"{run_dir}: no complete checkpoint to resume from (expected ckpt/{MARKER})")
    try:
        state = torch.load(d / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated file
        raise DodaiError(f"{d}/trainer_state.pt: unreadable ({type(e).__name__})") from None
    return (load_file(d / "model.safetensors") if weights else {}), state


def load_checkpoint(run_dir: str | Path, model, optimizer=None, map_location="cpu") -> dict:
    """Load weights (and optimizer state) from the run's last complete checkpoint; returns trainer state."""
    d = find_checkpoint(run_dir)
    if d is None:
        raise DodaiError(f"{run_dir}: no complete checkpoint to resume from (expected ckpt/{MARKER})")
    weights = load_file(d / "model.safetensors")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatch: the run was started with other model flags
        first = str(e).strip().splitlines()[-1].strip()
        raise DodaiError(f"{d}: checkpoint does not fit the model ({first})") from None
    # A tied weight (lm_head.weight is wte.weight) is saved once; it is not missing if its storage was loaded.
    sd = model.state_dict(keep_vars=True)
    loaded_ptrs = {sd[k].data_ptr() for k in weights if k in sd}
    missing = [k for k in missing if sd[k].data_ptr() not in loaded_ptrs]
    if missing or unexpected:
        raise DodaiError(
            f"{d}: checkpoint does not fit the model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    try:
        state = torch.load(d / "trainer_state.pt", map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt/truncated file
        raise DodaiError(f"{d}/trainer_state.pt: unreadable ({type(e).__name__})") from None
    if optimizer is not None:
        load_optimizer_state(optimizer, state, d)
    return state


def load_optimizer_state(optimizer, state: dict, where) -> None:
    """``optimizer.load_state_dict`` with a one-line error when the trainable parameters changed."""
    if "optimizer" not in state:
        return
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:  # other trainable parameters than when it was written
        first = (str(e).strip().splitlines() or [""])[0]
        raise DodaiError(f"{where}: the optimizer state does not fit the trainable parameters ({first})") from None
