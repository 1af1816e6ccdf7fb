"""Small file helpers: atomic writes (temp file, fsync, rename) and checked reads of user files.

Reading a user's file is bounded: the path must name a *regular* file (a FIFO, ``/dev/zero``, a terminal or
a socket is refused with a one-line error instead of blocking or reading forever), it is opened with
``O_NONBLOCK`` so that even a path swapped for a FIFO after the check cannot block the open, and at most
``st_size`` bytes as seen when it was opened are read (a file that keeps growing, or a ``/proc`` file that
reports size 0, cannot make the read run on), up to :data:`MAX_USER_FILE_BYTES`.
"""

from __future__ import annotations

import json
import os
import stat
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


MAX_USER_FILE_BYTES = 1 << 30  # most bytes of user files read into memory at once (1 GiB; several files: in all)

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_user_file(path: str | os.PathLike, max_bytes: int = MAX_USER_FILE_BYTES) -> tuple[int, int]:
    """Open a user's file for reading: ``(file descriptor, size in bytes)``, or a one-line DodaiError when it
    is missing, a folder, not a regular file (FIFO, device, socket) or larger than ``max_bytes``. The caller
    closes the descriptor and reads at most the size returned."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DodaiError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise DodaiError(f"{p}: is a folder, expected a file") from None
    except OSError as e:
        raise DodaiError(f"{p}: cannot open it ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DodaiError(f"{p}: is a folder, expected a file")
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            raise DodaiError(f"{p}: is {kind}, not a regular file; save the data to a file first")
        if st.st_size > max_bytes:
            raise DodaiError(f"{p}: {st.st_size:,} bytes is more than dodai reads into memory here "
                             f"({max_bytes:,} bytes); use a smaller part of it")
        os.set_blocking(fd, True)
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_user_bytes(path: str | os.PathLike, max_bytes: int = MAX_USER_FILE_BYTES) -> bytearray:
    """The bytes of a user's regular file (see :func:`open_user_file`): at most the size it had when opened."""
    fd, size = open_user_file(path, max_bytes)
    try:
        buf = bytearray(size)
        view, n = memoryview(buf), 0
        while n < size:
            got = os.readv(fd, [view[n:]])
            if not got:  # the file shrank while we read: keep what was there
                break
            n += got
        view.release()
        if n < size:
            del buf[n:]
        return buf
    except OSError as e:
        raise DodaiError(f"{path}: cannot read it ({e.strerror or e})") from None
    except MemoryError:
        raise DodaiError(f"{path}: not enough memory to read {size:,} bytes") from None
    finally:
        os.close(fd)


MAX_FOLDER_DEPTH = 64  # folders nested below an input folder
MAX_FOLDER_ENTRIES = 1_000_000  # directory entries looked at below an input folder


def user_files_in(folder: str | os.PathLike, suffixes: tuple[str, ...]) -> list[Path]:
    """The files below ``folder`` (recursively) whose suffix, lower-cased, is one of ``suffixes``, in no
    particular order. Walked without recursion and without following symlinked folders; symlinked files are
    followed, and anything that is not a regular file is skipped. A tree deeper than :data:`MAX_FOLDER_DEPTH`
    or with more than :data:`MAX_FOLDER_ENTRIES` entries is a one-line DodaiError."""
    root = Path(folder)
    out: list[Path] = []
    seen = 0
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    seen += 1
                    if seen > MAX_FOLDER_ENTRIES:
                        raise DodaiError(f"{root}: more than {MAX_FOLDER_ENTRIES:,} entries below this folder")
                    if e.is_dir(follow_symlinks=False):
                        if depth + 1 > MAX_FOLDER_DEPTH:
                            raise DodaiError(f"{root}: folders nested more than {MAX_FOLDER_DEPTH} deep")
                        stack.append((Path(e.path), depth + 1))
                    elif Path(e.name).suffix.lower() in suffixes and e.is_file():
                        out.append(Path(e.path))
        except OSError as err:
            raise DodaiError(f"{d}: cannot list this folder ({err.strerror or err})") from None
    return out


def read_user_texts(paths, max_total_bytes: int = MAX_USER_FILE_BYTES, skip_empty: bool = False) -> list[str]:
    """:func:`read_user_text` of each path; every path is checked (regular file, size) before any is read, and
    the sizes together may not exceed ``max_total_bytes``; empty files are skipped when ``skip_empty``."""
    paths = list(paths)
    sizes, total = [], 0
    for path in paths:
        fd, size = open_user_file(path, max_total_bytes)
        os.close(fd)
        sizes.append(size)
        total += size
        if total > max_total_bytes:
            raise DodaiError(f"{path}: the input files together hold more than {max_total_bytes:,} bytes; "
                             "use fewer or smaller files")
    out = []
    for path, size in zip(paths, sizes):
        try:
            out.append(read_user_text(path, size))  # a file that grew since it was measured is refused
        except DodaiError as e:
            if not (skip_empty and str(e).endswith("file is empty")):
                raise
    return out


def parse_json_line(line: str, where: str):
    """``json.loads(line)``, or a one-line DodaiError naming ``where`` (also for JSON nested too deeply)."""
    try:
        return json.loads(line)
    except RecursionError:
        raise DodaiError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError
        raise DodaiError(f"{where}: not valid JSON ({getattr(e, 'msg', e)})") from None


MAX_JSON_FILE_BYTES = 64 << 20  # a config, manifest or index metadata file (64 MiB)


def read_user_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_FILE_BYTES, what: str = "JSON file"):
    """Parse a JSON file from a folder the user handed us (a model's config.json, an index's meta.json, ...).

    Only a regular file is opened (never a FIFO or a device behind a symlink), at most ``max_bytes`` are read, and
    every way the file can be wrong — missing, not UTF-8, not JSON, nested deeper than the parser's recursion
    limit — is one DodaiError line naming the file and ``what`` was expected there.
    """
    p = Path(path)
    if not p.exists():
        raise DodaiError(f"{p}: no such file (expected a {what})")
    data = read_user_bytes(p, max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DodaiError(f"{p}: not valid UTF-8 (byte {e.start}); expected a {what}") from None
    except RecursionError:
        raise DodaiError(f"{p}: JSON nested too deeply; not a {what}") from None
    except ValueError as e:  # json.JSONDecodeError
        raise DodaiError(f"{p}: not valid JSON ({getattr(e, 'msg', e)}); expected a {what}") from None


def read_user_text(path: str | os.PathLike, max_bytes: int = MAX_USER_FILE_BYTES) -> str:
    """Read a user's UTF-8 text file, with a one-line DodaiError for every way it can be wrong."""
    p = Path(path)
    data = read_user_bytes(p, max_bytes)
    if not data or data.isspace():  # (no .strip(): it would copy the whole file)
        raise DodaiError(f"{p}: file is empty")
    if b"\x00" in data[:65536]:
        raise DodaiError(f"{p}: looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DodaiError(f"{p}: not valid UTF-8 (byte {e.start}); convert it to UTF-8 first") from None
    except MemoryError:
        raise DodaiError(f"{p}: not enough memory to decode {len(data):,} bytes") from None
