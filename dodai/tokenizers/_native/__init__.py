"""dodai's optional compiled inner loops: C sources built on first use with the system C compiler.

No Python headers and no build step at install: ``unigram.c`` is compiled into the user cache folder
(``dodai.paths.cache_dir() / "native"``) the first time it is needed and loaded with ``ctypes``. The
library's file name carries a hash of the source, the compiler and the platform, so an edited source
or another interpreter gets its own build. Two processes building at once each compile into their own
temporary file and ``os.replace`` it into place (atomic), so a reader never sees a half-written library.

When there is no compiler (or ``DODAI_NATIVE=0``), ``unigram()`` returns None after a one-line notice
on stderr and callers use their plain Python path (which is the reference the C code is tested against).
``$CC`` picks the compiler; otherwise ``cc``, ``gcc`` or ``clang`` from PATH.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_SRC = Path(__file__).with_name("unigram.c")
_lock = threading.Lock()
_loaded: dict[str, object] = {}


def _notice(msg: str) -> None:
    print(f"dodai: {msg}; Unigram encoding uses the slower pure-Python path", file=sys.stderr)


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _lib_suffix() -> str:
    return {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")


def build(src: Path, out_dir: Path, cc: str) -> Path:
    """Compile src into out_dir (unless already there) and return the library path; raises OSError or
    subprocess.CalledProcessError when compiling fails."""
    code = src.read_bytes()
    tag = hashlib.sha256(code + f"|{cc}|{platform.machine()}|{sys.platform}".encode()).hexdigest()[:16]
    lib = out_dir / f"{src.stem}-{tag}{_lib_suffix()}"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{src.stem}-", suffix=_lib_suffix(), dir=out_dir)
    os.close(fd)
    try:
        subprocess.run([cc, "-O2", "-std=c99", "-shared", "-fPIC", "-o", tmp, str(src)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        os.replace(tmp, lib)  # atomic: concurrent builders each replace with a complete file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def unigram() -> ctypes.CDLL | None:
    """The compiled Unigram encoder (``unigram.c``) with its ctypes signatures, or None (see module doc)."""
    with _lock:
        if "unigram" in _loaded:
            return _loaded["unigram"]  # type: ignore[return-value]
        lib = None
        if os.environ.get("DODAI_NATIVE", "1") == "0":
            pass  # switched off on purpose: no notice
        else:
            cc = _compiler()
            if cc is None:
                _notice("no C compiler found (set CC)")
            else:
                from dodai.paths import cache_dir

                try:
                    lib = _bind(ctypes.CDLL(str(build(_SRC, cache_dir() / "native", cc))))
                except subprocess.CalledProcessError as e:
                    err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
                    _notice(f"compiling {_SRC.name} with {cc} failed ({err[-1] if err else e.returncode})")
                except (OSError, subprocess.SubprocessError) as e:
                    _notice(f"could not build or load {_SRC.name} ({e})")
        _loaded["unigram"] = lib
        return lib


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, u32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_uint32, ctypes.c_double
    lib.dodai_trie_new.argtypes = [p, p, p, p, i64]
    lib.dodai_trie_new.restype = p
    lib.dodai_trie_free.argtypes = [p]
    lib.dodai_trie_free.restype = None
    lib.dodai_unigram_encode.argtypes = [p, ctypes.c_char_p, i64, u32, f64, p, i32, p]
    lib.dodai_unigram_encode.restype = i64
    return lib
