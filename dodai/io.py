"""Small file helpers: atomic writes (temp file, fsync, rename) and checked reads of user text."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dodai.errors import DodaiError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # fsync the directory so the rename itself is durable.
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_user_text(path: str | os.PathLike) -> str:
    """Read a user's UTF-8 text file, with a one-line DodaiError for every way it can be wrong."""
    p = Path(path)
    if not p.exists():
        raise DodaiError(f"{p}: no such file")
    if p.is_dir():
        raise DodaiError(f"{p}: is a folder, expected a text file")
    data = p.read_bytes()
    if not data.strip():
        raise DodaiError(f"{p}: file is empty")
    if b"\x00" in data[:65536]:
        raise DodaiError(f"{p}: looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DodaiError(f"{p}: not valid UTF-8 (byte {e.start}); convert it to UTF-8 first") from None
