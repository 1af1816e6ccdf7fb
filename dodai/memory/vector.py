"""Persistent long-term memory: items embedded with dodai's MiniLM port, searched by cosine, kept on disk.

Each item is a piece of text with its role, time, id and free metadata. Its embedding comes from
:class:`dodai.models.bert.SentenceEncoder` (all-MiniLM-L6-v2: WordPiece → BERT → mean pooling → L2
normalisation, the same encoder as ``dodai embed`` and dodai.rag.dense), so cosine similarity is a dot
product and a search is one matrix–vector product over all items (exact; MemoryBank, Zhong et al. 2023,
arXiv:2305.10250, and MemGPT, Packer et al. 2023, arXiv:2310.08560, keep long-term memory the same way).

On disk (a folder)::

    memory.json                        manifest: format, version, generation g, count, dim, encoder,
                                       the two file names below and the SHA-256 of the items file
    items-<g>.jsonl                    one JSON object per item: id, text, role, time, metadata
    embeddings-<g>.safetensors         one float32 tensor "embeddings" (count, dim), row i = item i

Crash safety. A change writes a *new generation*: the items file and the embeddings file under new names
(each written atomically: temp file, fsync, rename), and only then the manifest (atomically too), which
is the commit point; the old generation's files are deleted after it. A crash at any moment leaves the
manifest pointing at a complete generation — the old one or the new one — so no memory that was stored
before the failed write is ever lost. The object in memory changes only after the commit succeeded.
One writer at a time (no locking across processes).

Loading checks everything (format, version, hash, JSON lines, ids unique, tensor shape/dtype/finite,
count) and reports a corrupted or foreign file as a one-line :class:`DodaiError`.

Deduplication: an item whose cosine with an existing item is at least ``dedup_threshold`` (default 0.95
— "My name is Aiko." vs "my name is aiko!" score ≈ 0.96 with MiniLM, different facts ≪ 0.9) is not
stored again; :meth:`VectorMemory.dedup` removes such near-duplicates from an existing memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time as _time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.io import atomic_write_bytes, read_user_json

FORMAT = "dodai-vector-memory"
VERSION = 1
MANIFEST = "memory.json"
DEFAULT_ENCODER = "all-minilm-l6-v2"
MAX_TEXT_CHARS = 100_000  # one memory is a fact or a message, not a book


@dataclass
class MemoryItem:
    id: str
    text: str
    role: str = "user"
    time: float = 0.0  # seconds since the epoch
    metadata: dict = field(default_factory=dict)


@dataclass
class Hit:
    item: MemoryItem
    score: float  # cosine similarity with the query, in [-1, 1]


class VectorMemory:
    """A folder of memories. ``VectorMemory(folder)`` opens it, creating it when absent (``create``).

    ``encoder`` is anything with ``encode(list[str]) -> (N, C) tensor`` (default: the MiniLM port,
    loaded on first use from ``encoder_spec``). Items are kept in insertion order.
    """

    def __init__(self, folder: str | os.PathLike, encoder=None, encoder_spec: str = DEFAULT_ENCODER,
                 dedup_threshold: float = 0.95, create: bool = True):
        if not 0 < dedup_threshold <= 1.0 + 1e-9:
            raise DodaiError(f"dedup threshold must be in (0, 1], got {dedup_threshold}")
        self.folder = Path(folder)
        self.encoder = encoder
        self.encoder_spec = encoder_spec
        self.dedup_threshold = float(dedup_threshold)
        self.items: list[MemoryItem] = []
        self.embeddings = torch.zeros(0, 0)  # (N, C) unit rows
        self.generation = 0
        if (self.folder / MANIFEST).exists():
            self._load()
        elif not create:
            raise DodaiError(f"{self.folder}: no memory here (no {MANIFEST})")
        elif self.folder.exists() and not self.folder.is_dir():
            raise DodaiError(f"{self.folder}: exists and is not a folder")

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.items)

    def get(self, item_id: str) -> MemoryItem | None:
        return next((it for it in self.items if it.id == item_id), None)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if self.encoder is None:
            from dodai.models.bert import load_sentence_encoder

            self.encoder = load_sentence_encoder(self.encoder_spec)
        v = self.encoder.encode(list(texts))
        if v.ndim != 2 or v.shape[0] != len(texts):
            raise DodaiError(f"the encoder returned shape {tuple(v.shape)} for {len(texts)} texts")
        if len(self.items) and v.shape[1] != self.embeddings.shape[1]:
            raise DodaiError(f"the encoder gives {v.shape[1]}-d vectors but this memory holds "
                             f"{self.embeddings.shape[1]}-d ones (encoder {self.encoder_spec!r})")
        return F.normalize(v.float(), dim=-1)  # unit rows: cosine = dot product

    def search(self, query: str, k: int = 5, min_score: float = 0.0) -> list[Hit]:
        """The ``k`` items most similar to ``query`` with cosine ≥ ``min_score``, best first (ties: older first)."""
        if k < 1:
            raise DodaiError(f"k must be positive, got {k}")
        if not isinstance(query, str) or not query.strip():
            raise DodaiError("the query is empty")
        if not self.items:
            return []
        q = self._encode([query])[0]  # (C,)
        scores = (self.embeddings @ q).tolist()  # (N,)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [Hit(self.items[i], scores[i]) for i in order[:k] if scores[i] >= min_score]

    # ------------------------------------------------------------------ writing
    def add(self, text: str, role: str = "user", metadata: dict | None = None, time: float | None = None,
            dedup: bool = True) -> tuple[MemoryItem, bool]:
        """Store one item; returns (the item, whether it is new). A near-duplicate of an existing item
        (cosine ≥ ``dedup_threshold``) is not stored: the existing item is returned with False."""
        items, new = self.add_many([text], role=role, metadata=metadata, time=time, dedup=dedup)
        return items[0], new[0]

    def add_many(self, texts: list[str], role: str = "user", metadata: dict | None = None,
                 time: float | None = None, dedup: bool = True) -> tuple[list[MemoryItem], list[bool]]:
        """Store several items with one embedding batch and one write."""
        texts = [_check_text(t) for t in texts]
        if not isinstance(role, str) or not role:
            raise DodaiError("role must be a non-empty string")
        meta = dict(metadata or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError):
            raise DodaiError("metadata must be JSON-serialisable") from None
        if not texts:
            return [], []
        vecs = self._encode(texts)
        now = _time.time() if time is None else float(time)
        items, embs = list(self.items), self.embeddings if len(self.items) else vecs[:0]
        out: list[MemoryItem] = []
        new: list[bool] = []
        for t, v in zip(texts, vecs):
            if dedup and len(items):
                sims = embs @ v
                j = int(sims.argmax())
                if float(sims[j]) >= self.dedup_threshold:
                    out.append(items[j])
                    new.append(False)
                    continue
            it = MemoryItem(uuid.uuid4().hex[:16], t, role, now, dict(meta))
            items.append(it)
            embs = torch.cat([embs, v[None]], 0)
            out.append(it)
            new.append(True)
        if any(new):
            self._commit(items, embs)
        return out, new

    def delete(self, item_id: str) -> bool:
        """Remove the item with this id (or unique id prefix of ≥ 6 characters); False when there is none."""
        idx = self._find(item_id)
        if idx is None:
            return False
        keep = [i for i in range(len(self.items)) if i != idx]
        self._commit([self.items[i] for i in keep], self.embeddings[keep])
        return True

    def _find(self, item_id: str) -> int | None:
        exact = [i for i, it in enumerate(self.items) if it.id == item_id]
        if exact:
            return exact[0]
        if len(item_id) >= 6:
            pref = [i for i, it in enumerate(self.items) if it.id.startswith(item_id)]
            if len(pref) > 1:
                raise DodaiError(f"id prefix {item_id!r} matches {len(pref)} memories; give more characters")
            if pref:
                return pref[0]
        return None

    def dedup(self, threshold: float | None = None) -> int:
        """Remove items that are near-duplicates (cosine ≥ threshold) of an older item; returns how many."""
        thr = self.dedup_threshold if threshold is None else float(threshold)
        keep: list[int] = []
        for i in range(len(self.items)):
            if keep and float((self.embeddings[keep] @ self.embeddings[i]).max()) >= thr:
                continue
            keep.append(i)
        removed = len(self.items) - len(keep)
        if removed:
            self._commit([self.items[i] for i in keep], self.embeddings[keep])
        return removed

    def clear(self) -> None:
        """Forget everything (the folder stays, empty)."""
        self._commit([], self.embeddings[:0])

    def _commit(self, items: list[MemoryItem], embs: torch.Tensor) -> None:
        """Write a new generation, then the manifest (the commit point), then drop the old files."""
        from dodai.weights.safetensors import save_file

        g = self.generation + 1
        items_name, emb_name = f"items-{g:08d}.jsonl", f"embeddings-{g:08d}.safetensors"
        blob = "".join(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in items).encode("utf-8")
        dim = int(embs.shape[1]) if embs.ndim == 2 else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / items_name, blob)
        save_file({"embeddings": embs.float().contiguous()}, self.folder / emb_name,
                  metadata={"format": FORMAT, "encoder": self.encoder_spec})
        manifest = {"format": FORMAT, "version": VERSION, "generation": g, "count": len(items), "dim": dim,
                    "encoder": self.encoder_spec, "items": items_name, "embeddings": emb_name,
                    "items_sha256": hashlib.sha256(blob).hexdigest()}
        atomic_write_bytes(self.folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        # committed: now the in-memory state may change, and the old generation can go
        self.items, self.embeddings, self.generation = list(items), embs, g
        self._sweep()

    def _sweep(self) -> None:
        """Delete files of other generations and temp files left by an interrupted write."""
        current = {f"items-{self.generation:08d}.jsonl", f"embeddings-{self.generation:08d}.safetensors"}
        for p in self.folder.iterdir():
            n = p.name
            stale = ((n.startswith("items-") and n.endswith(".jsonl"))
                     or (n.startswith("embeddings-") and n.endswith(".safetensors"))
                     or (n.startswith(".") and n.endswith(".tmp")))
            if stale and n not in current and p.is_file():
                try:
                    p.unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        where = self.folder
        mpath = where / MANIFEST
        try:
            man = read_user_json(mpath, max_bytes=1_000_000, what="dodai memory manifest")
        except (OSError, ValueError, UnicodeDecodeError, DodaiError):
            raise DodaiError(f"{mpath}: not a dodai memory manifest (unreadable or not JSON)") from None
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise DodaiError(f"{mpath}: not a dodai memory manifest (format is not {FORMAT!r})")
        if man.get("version") != VERSION:
            raise DodaiError(f"{mpath}: memory format version {man.get('version')!r}; this dodai reads {VERSION}")
        g, count, dim = man.get("generation"), man.get("count"), man.get("dim")
        names = man.get("items"), man.get("embeddings")
        if not (_is_count(g) and _is_count(count) and _is_count(dim)):
            raise DodaiError(f"{mpath}: generation, count and dim must be non-negative integers")
        if names != (f"items-{g:08d}.jsonl", f"embeddings-{g:08d}.safetensors"):
            raise DodaiError(f"{mpath}: file names do not match generation {g}")
        enc = man.get("encoder")
        if not isinstance(enc, str):
            raise DodaiError(f"{mpath}: encoder must be a string")
        if enc != self.encoder_spec and self.encoder is None:
            self.encoder_spec = enc  # search with the encoder the memory was built with
        elif enc != self.encoder_spec:
            raise DodaiError(f"{where}: built with encoder {enc!r}, opened with {self.encoder_spec!r}")
        ipath, epath = where / names[0], where / names[1]
        try:
            blob = ipath.read_bytes()
        except OSError:
            raise DodaiError(f"{ipath}: missing or unreadable (the memory folder is incomplete)") from None
        if hashlib.sha256(blob).hexdigest() != man.get("items_sha256"):
            raise DodaiError(f"{ipath}: contents do not match the manifest's checksum (corrupted)")
        items = _parse_items(blob, ipath)
        if len(items) != count:
            raise DodaiError(f"{ipath}: {len(items)} items, the manifest says {count}")
        if count:
            from dodai.weights.safetensors import load_file

            tensors = load_file(epath)
            if set(tensors) != {"embeddings"}:
                raise DodaiError(f"{epath}: expected one tensor 'embeddings', found {sorted(tensors)}")
            emb = tensors["embeddings"]
            if emb.dtype != torch.float32 or tuple(emb.shape) != (count, dim) or not torch.isfinite(emb).all():
                raise DodaiError(f"{epath}: expected finite float32 embeddings of shape ({count}, {dim}), "
                                 f"got {str(emb.dtype).replace('torch.', '')} {tuple(emb.shape)}")
            if dim == 0 or not torch.allclose(emb.norm(dim=-1), torch.ones(count), atol=1e-3):
                raise DodaiError(f"{epath}: embeddings are not unit vectors (corrupted)")
        else:
            if not epath.is_file():
                raise DodaiError(f"{epath}: missing (the memory folder is incomplete)")
            emb = torch.zeros(0, dim)
        self.items, self.embeddings, self.generation = items, emb, g


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_text(t) -> str:
    if not isinstance(t, str) or not t.strip():
        raise DodaiError("a memory must be non-empty text")
    if len(t) > MAX_TEXT_CHARS:
        raise DodaiError(f"a memory is limited to {MAX_TEXT_CHARS} characters, got {len(t)}")
    return t


def _parse_items(blob: bytes, path: Path) -> list[MemoryItem]:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DodaiError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    items: list[MemoryItem] = []
    seen: set[str] = set()
    lines = text.split("\n")  # not splitlines(): JSON keeps U+2028 and friends unescaped inside strings
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
        except ValueError:
            raise DodaiError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(d, dict) or set(d) != {"id", "text", "role", "time", "metadata"}:
            raise DodaiError(f"{path}:{n}: expected the keys id, text, role, time, metadata")
        ok = (isinstance(d["id"], str) and d["id"] and isinstance(d["text"], str) and isinstance(d["role"], str)
              and isinstance(d["time"], (int, float)) and not isinstance(d["time"], bool)
              and math.isfinite(d["time"]) and isinstance(d["metadata"], dict))
        if not ok:
            raise DodaiError(f"{path}:{n}: a field has the wrong type")
        if d["id"] in seen:
            raise DodaiError(f"{path}:{n}: duplicate id {d['id']!r}")
        seen.add(d["id"])
        items.append(MemoryItem(d["id"], d["text"], d["role"], float(d["time"]), d["metadata"]))
    return items
