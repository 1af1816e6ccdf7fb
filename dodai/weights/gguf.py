"""GGUF, read (and written) by dodai's own code, strictly: a hostile file gives a DodaiError, never a crash.

Format (ggml's docs/gguf.md, versions 2 and 3; everything little-endian):

    magic    4 bytes  b"GGUF"
    version  uint32   2 or 3 (1 used uint32 counts and is rejected)
    n_tensors, n_kv   uint64 each
    n_kv × (key: string, value_type: uint32, value)
    n_tensors × (name: string, n_dims: uint32, dims: n_dims × uint64, ggml_type: uint32, offset: uint64)
    padding to a multiple of ``general.alignment`` (uint32, default 32): here the data section starts
    tensor data; each tensor's offset is relative to the data section and a multiple of the alignment

    string = uint64 byte length + UTF-8 bytes (no NUL)
    value types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32, 6 float32, 7 bool (1 byte, 0/1),
                 8 string, 9 array (uint32 item type + uint64 count + items; arrays of strings and of
                 arrays allowed), 10 uint64, 11 int64, 12 float64

GGUF dims are innermost-first (ggml's ne[0] is the row length), so the torch shape is ``dims`` reversed:
a Linear weight stored as dims (in, out) loads as torch (out, in), like nn.Linear.weight. Quantized
blocks run along ne[0], which must be a multiple of the block size (see dodai/weights/quants.py).

Hardening: every count and length is checked against the bytes left in the file *before* anything
is read or allocated (a string length of 2^60 fails at once), nesting of arrays is capped, n_dims ≤ 4
(GGML_MAX_DIMS), dims ≥ 1, names unique, types known, alignment a power of two, tensor ranges aligned,
inside the file and non-overlapping. Parsing work and memory are O(file size) (metadata arrays become
Python lists, at most ~10 bytes of Python objects per byte of file), and absolutely bounded too, since a
model file may be gigabytes: at most :data:`MAX_TENSORS` tensors and :data:`MAX_KV` metadata keys, a
metadata string of at most :data:`MAX_STRING_BYTES`, an array of at most :data:`MAX_ARRAY_ITEMS` items and
:data:`MAX_METADATA_ITEMS` array items in all (each becomes a Python object; real vocabularies have a few
hundred thousand). These are file-format bounds; what the values mean (head counts, block counts against
the tensor table) is checked by the model loaders.

What the real SmolLM2-135M-Instruct.Q4_1.gguf holds (``registry.resolve("smollm2-135m-instruct")``)
-----------------------------------------------------------------------------------------------
GGUF v3, alignment 32, data at byte 1,785,664; 33 metadata keys, 272 tensors:
  token_embd.weight          Q8_0  torch (49152, 576)   (no output.weight: the LM head is tied to it)
  output_norm.weight         F32   (576,)
  blk.{0..29}.attn_norm.weight / ffn_norm.weight             F32   (576,)
  blk.{i}.attn_q.weight (576, 576), attn_k.weight (192, 576), attn_v.weight (192, 576),
  attn_output.weight (576, 576), ffn_gate.weight (1536, 576), ffn_up.weight (1536, 576),
  ffn_down.weight (576, 1536)                                Q4_1  (torch shapes, out × in)
  Q and K rows are permuted by llama.cpp's converter (per head, the interleaved RoPE pairing; see the
  ``permute`` in docs/gguf.md): undo it, or use interleaved (GPT-J style) RoPE on them.
Model keys: general.architecture "llama", llama.block_count 30, llama.context_length 8192,
  llama.embedding_length 576, llama.feed_forward_length 1536, llama.attention.head_count 9,
  llama.attention.head_count_kv 3, llama.rope.freq_base 100000.0, llama.rope.dimension_count 64,
  llama.attention.layer_norm_rms_epsilon 1e-5 (float32), llama.vocab_size 49152, general.file_type 3.
Tokenizer keys: tokenizer.ggml.model "gpt2" (byte-level BPE), tokenizer.ggml.pre "smollm",
  tokenizer.ggml.tokens (49152 strings), tokenizer.ggml.token_type (int32; 3 = control, 1 = normal),
  tokenizer.ggml.merges (strings "a b"), tokenizer.ggml.bos_token_id 1, eos_token_id 2,
  unknown_token_id 0, padding_token_id 2, add_bos_token False, add_space_prefix False,
  tokenizer.chat_template (ChatML: <|im_start|>role\\n…<|im_end|>\\n, default system prompt).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dodai.errors import DodaiError
from dodai.weights.quants import GGML_TYPE_IDS, GGML_TYPES, dequantize

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
MAX_TENSOR_NAME = 63       # GGML_MAX_NAME is 64 including the terminating NUL
MAX_KEY_BYTES = 65535      # the spec bounds keys to 2^16 - 1 bytes
MAX_ARRAY_DEPTH = 4        # arrays of arrays nest at most this deep
MAX_TENSORS = 131_072      # tensors in one file (a 405B-parameter Llama has about 1,100)
MAX_KV = 65_536            # metadata keys (real files have a few dozen)
MAX_STRING_BYTES = 64 << 20  # one metadata string (chat templates are kilobytes; an embedded tokenizer.json MBs)
MAX_ARRAY_ITEMS = 4 << 20  # items of one metadata array (a 262,144-token vocabulary is 1/16 of it)
MAX_METADATA_ITEMS = 16 << 20  # array items over all the metadata

# value type id -> (name, struct format or None for string/array)
VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"),
    4: ("uint32", "<I"), 5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<B"),
    8: ("string", None), 9: ("array", None), 10: ("uint64", "<Q"), 11: ("int64", "<q"),
    12: ("float64", "<d"),
}
VALUE_TYPE_IDS = {name: tid for tid, (name, _) in VALUE_TYPES.items()}
_NP_FORMATS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 10: "<u8",
               11: "<i8", 12: "<f8"}
_STRING_MIN, _ARRAY_MIN = 8, 12   # fewest bytes a string / an array can take (length, type + count)


def _min_size(vtype: int) -> int:
    fmt = VALUE_TYPES[vtype][1]
    return struct.calcsize(fmt) if fmt else (_STRING_MIN if vtype == 8 else _ARRAY_MIN)


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor's entry in the header. ``offset`` is absolute (from the start of the file)."""

    name: str
    dims: tuple[int, ...]    # GGUF order, innermost first (ggml ne[0], ne[1], …)
    shape: tuple[int, ...]   # torch order: reversed dims
    ggml_type: int
    type_name: str
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; every error names the field being read."""

    def __init__(self, buf, size: int, label: str):
        self.buf, self.size, self.pos, self.label = buf, size, 0, label
        self.items = 0  # array items read so far (MAX_METADATA_ITEMS)

    def fail(self, msg: str):
        raise DodaiError(f"{self.label}: {msg}")

    def need(self, n: int, field: str) -> None:
        left = self.size - self.pos
        if n > left:
            self.fail(f"{field} needs {n} bytes but only {left} are left (truncated or corrupt file)")

    def unpack(self, fmt: str, field: str):
        n = struct.calcsize(fmt)
        self.need(n, field)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, field: str, max_len: int | None = None) -> str:
        n = self.unpack("<Q", f"{field} length")
        if max_len is not None and n > max_len:
            self.fail(f"{field} length {n} exceeds the limit of {max_len} bytes")
        self.need(n, f"{field} (string of {n} bytes)")
        if n > MAX_STRING_BYTES:
            self.fail(f"{field} length {n:,} exceeds the limit of {MAX_STRING_BYTES:,} bytes for one string")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{field} is not valid UTF-8")

    def value(self, vtype: int, field: str, depth: int = 0):
        if vtype not in VALUE_TYPES:
            self.fail(f"{field} has unknown value type {vtype} (known: 0..12)")
        if vtype == 8:
            return self.string(field)
        if vtype == 9:
            return self.array(field, depth + 1)
        v = self.unpack(VALUE_TYPES[vtype][1], field)
        if vtype == 7:
            if v not in (0, 1):
                self.fail(f"{field} is a bool with byte value {v} (must be 0 or 1)")
            return bool(v)
        return v

    def array(self, field: str, depth: int) -> list:
        if depth > MAX_ARRAY_DEPTH:
            self.fail(f"{field}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        itype = self.unpack("<I", f"{field} array item type")
        if itype not in VALUE_TYPES:
            self.fail(f"{field} array has unknown item type {itype} (known: 0..12)")
        count = self.unpack("<Q", f"{field} array count")
        # Check against the bytes left before building anything: count × smallest item must fit.
        self.need(count * _min_size(itype), f"{field} array of {count} {VALUE_TYPES[itype][0]} items")
        if count > MAX_ARRAY_ITEMS:
            self.fail(f"{field} array of {count:,} items exceeds the limit of {MAX_ARRAY_ITEMS:,}")
        self.items += count
        if self.items > MAX_METADATA_ITEMS:
            self.fail(f"{field}: metadata arrays hold more than {MAX_METADATA_ITEMS:,} items in all")
        if itype in _NP_FORMATS:
            arr = np.frombuffer(self.buf, dtype=_NP_FORMATS[itype], count=count, offset=self.pos)
            self.pos += arr.nbytes
            return arr.tolist()
        if itype == 7:
            raw = self.buf[self.pos:self.pos + count]
            self.pos += count
            if any(b > 1 for b in raw):
                self.fail(f"{field} bool array holds a byte other than 0 or 1")
            return [b == 1 for b in raw]
        return [self.value(itype, f"{field}[{i}]", depth) for i in range(count)]


class GGUFFile:
    """A parsed, validated, memory-mapped GGUF file.

    >>> with GGUFFile(path) as g:
    ...     g.metadata["llama.block_count"], g.tensors["token_embd.weight"].shape
    ...     w = g.load("blk.0.attn_q.weight")          # dequantized float32, torch shape
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        label = f"{self.path}"
        self._mm: mmap.mmap | None = None
        if not self.path.exists():
            raise DodaiError(f"{label}: no such GGUF file")
        if not self.path.is_file():
            raise DodaiError(f"{label}: not a regular file, so not a GGUF file")
        try:
            self.size = self.path.stat().st_size
            if self.size < 24:
                raise DodaiError(f"{label}: GGUF header truncated ({self.size} bytes, need at least 24)")
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise DodaiError(f"{label}: cannot read the GGUF file ({e.strerror or e})") from None
        try:
            self._parse(_Cursor(self._mm, self.size, f"{label}: GGUF"))
        except BaseException:
            self.close()
            raise

    # -- parsing ----------------------------------------------------------------------------------
    def _parse(self, c: _Cursor) -> None:
        magic = bytes(c.buf[0:4])
        if magic != GGUF_MAGIC:
            c.fail(f"bad magic {magic!r} (expected b'GGUF'): not a GGUF file")
        c.pos = 4
        version = c.unpack("<I", "version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            hint = (" (this looks like a big-endian file; only little-endian GGUF is supported)"
                    if swapped in SUPPORTED_VERSIONS else
                    " (version 1 is the pre-release format; re-convert the model)" if version == 1 else "")
            c.fail(f"unsupported version {version}; dodai reads versions 2 and 3{hint}")
        self.version = version
        n_tensors = c.unpack("<Q", "tensor count")
        n_kv = c.unpack("<Q", "metadata count")
        left = self.size - c.pos
        if n_kv * (_STRING_MIN + 4 + 1) > left:
            c.fail(f"metadata count {n_kv} is impossible for the {left} bytes left in the file")
        if n_tensors * (_STRING_MIN + 4 + 4 + 8) > left:
            c.fail(f"tensor count {n_tensors} is impossible for the {left} bytes left in the file")
        if n_kv > MAX_KV:
            c.fail(f"metadata count {n_kv:,} exceeds the limit of {MAX_KV:,}")
        if n_tensors > MAX_TENSORS:
            c.fail(f"tensor count {n_tensors:,} exceeds the limit of {MAX_TENSORS:,}")

        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, str] = {}   # key -> "uint32", "string", "array[string]", …
        for i in range(n_kv):
            key = c.string(f"metadata key #{i}", MAX_KEY_BYTES)
            if key in self.metadata:
                c.fail(f"duplicate metadata key {key!r}")
            field = f"metadata {key!r}"
            vtype = c.unpack("<I", f"{field} value type")
            start = c.pos
            self.metadata[key] = c.value(vtype, field)
            self.metadata_types[key] = self._type_string(vtype, c.buf, start)

        self.alignment = self._alignment(c)
        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            name = c.string(f"tensor #{i} name", MAX_TENSOR_NAME)
            if name in names:
                c.fail(f"duplicate tensor name {name!r}")
            names.add(name)
            field = f"tensor {name!r}"
            n_dims = c.unpack("<I", f"{field} n_dims")
            if n_dims > GGML_MAX_DIMS:
                c.fail(f"{field}: n_dims {n_dims} exceeds GGML_MAX_DIMS ({GGML_MAX_DIMS})")
            dims = tuple(c.unpack("<Q", f"{field} dim {j}") for j in range(n_dims))
            ggml_type = c.unpack("<I", f"{field} type")
            offset = c.unpack("<Q", f"{field} offset")
            infos.append((name, dims, ggml_type, offset))

        self.data_offset = -(-c.pos // self.alignment) * self.alignment
        if n_tensors and self.data_offset > self.size:
            c.fail(f"data section would start at byte {self.data_offset}, past the end of the file "
                   f"({self.size} bytes)")
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, dims, ggml_type, offset in infos:
            self.tensors[name] = self._tensor_info(c, name, dims, ggml_type, offset)
        # Ranges must not overlap (a tensor aliasing another's bytes is a corrupt or crafted file).
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values())
        for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
            if start_b < end_a:
                c.fail(f"tensor {b!r}: data overlaps tensor {a!r}")

    @staticmethod
    def _type_string(vtype: int, buf, start: int) -> str:
        """"uint32", "string", "array[string]", "array[array[int32]]" (nested: typed by the first item)."""
        if vtype != 9:
            return VALUE_TYPES[vtype][0]
        itype, count = struct.unpack_from("<IQ", buf, start)   # already validated by the value read
        if itype == 9 and count:
            return f"array[{GGUFFile._type_string(9, buf, start + 12)}]"
        return f"array[{VALUE_TYPES[itype][0]}]"

    def _alignment(self, c: _Cursor) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        a = self.metadata["general.alignment"]
        if self.metadata_types["general.alignment"] not in ("uint8", "uint16", "uint32", "uint64",
                                                             "int8", "int16", "int32", "int64"):
            c.fail(f"general.alignment must be an integer, got {self.metadata_types['general.alignment']}")
        if a <= 0 or a & (a - 1):
            c.fail(f"general.alignment {a} is not a power of two")
        return a

    def _tensor_info(self, c: _Cursor, name, dims, ggml_type, offset) -> GGUFTensorInfo:
        field = f"tensor {name!r}"
        t = GGML_TYPES.get(ggml_type)
        if t is None:
            c.fail(f"{field}: unknown ggml type {ggml_type}")
        for j, d in enumerate(dims):
            if d < 1 or d >= 2 ** 63:
                c.fail(f"{field}: dim {j} is {d} (must be between 1 and 2^63-1)")
        n = 1
        for d in dims:
            n *= d
        if n >= 2 ** 63:
            c.fail(f"{field}: dims {list(dims)} hold more than 2^63 elements")
        row = dims[0] if dims else 1
        if row % t.block_elems:
            c.fail(f"{field}: dim 0 ({row}) is not a multiple of the {t.name} block size {t.block_elems}")
        nbytes = n // t.block_elems * t.block_bytes
        if offset % self.alignment:
            c.fail(f"{field}: offset {offset} is not a multiple of the alignment {self.alignment}")
        start = self.data_offset + offset
        if start + nbytes > self.size:
            c.fail(f"{field}: offset {offset} + {nbytes} bytes runs past the end of the file "
                   f"(data section {self.data_offset}..{self.size})")
        return GGUFTensorInfo(name, tuple(dims), tuple(reversed(dims)), ggml_type, t.name, start, nbytes)

    # -- access -----------------------------------------------------------------------------------
    def _info(self, name: str) -> GGUFTensorInfo:
        if self._mm is None:
            raise DodaiError(f"{self.path}: GGUF file is closed")
        try:
            return self.tensors[name]
        except KeyError:
            raise DodaiError(f"{self.path}: no tensor {name!r} in this GGUF file") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view on the mapped file (valid while the file is open)."""
        t = self._info(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def load(self, name: str, dtype=None):
        """Dequantize a tensor into a new torch tensor of torch shape (``dtype`` default float32).

        Float and quantized types become float32 first (exact for F16/BF16, bit-identical to ggml for
        the block formats) and are then cast; F64 and integer tensors keep full precision until the cast.
        """
        import torch

        t = self._info(name)
        values = dequantize(self.raw(name), t.type_name).reshape(t.shape)
        out = torch.from_numpy(values)
        return out.to(torch.float32 if dtype is None else dtype)

    def close(self) -> None:
        """Unmap the file. Views from :meth:`raw` that are still alive keep the mapping until freed."""
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a raw() view is still exported: the map goes when it is collected
                pass

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, version={getattr(self, 'version', '?')}, "
                f"{len(getattr(self, 'metadata', {}))} keys, {len(getattr(self, 'tensors', {}))} tensors)")


# ------------------------------------------------------------------------------------------------
# A small writer: enough for tests and for exporting dodai models (float tensors or raw blocks).
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RawTensor:
    """Already-encoded tensor bytes (e.g. quantized blocks) with their ggml type and *torch* shape."""

    data: bytes
    type_name: str
    shape: tuple[int, ...]


def quantized(tensor, type_name: str) -> RawTensor:
    """A float tensor (torch or numpy; last dim a multiple of 32) quantized to Q8_0, Q4_0 or Q4_1 for
    :func:`write_gguf`, with ggml's own rounding (see :func:`dodai.weights.quants.quantize`)."""
    from dodai.weights.quants import quantize

    arr = tensor if isinstance(tensor, np.ndarray) else tensor.detach().cpu().float().numpy()
    return RawTensor(quantize(arr, type_name).tobytes(), type_name, tuple(arr.shape))


def _infer_type(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "uint32" if 0 <= v < 2 ** 32 else "int64"
    if isinstance(v, float):
        return "float32"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return f"array[{_infer_type(v[0]) if len(v) else 'uint8'}]"  # nested: typed by the first item
    raise DodaiError(f"GGUF writer: cannot store a metadata value of type {type(v).__name__}")


def _encode_value(type_str: str, v, key: str) -> bytes:
    if type_str.startswith("array[") and type_str.endswith("]"):
        inner = type_str[6:-1]
        if not isinstance(v, (list, tuple)):
            raise DodaiError(f"GGUF writer: metadata {key!r} is declared {type_str} but is not a list")
        item_type = inner.split("[", 1)[0]
        head = struct.pack("<IQ", VALUE_TYPE_IDS[item_type], len(v))
        if inner in _NP_FORMATS_BY_NAME:
            return head + np.asarray(v, dtype=_NP_FORMATS_BY_NAME[inner]).tobytes()
        # strings, bools, or nested arrays (each item is itself an array value: type + count + items)
        return head + b"".join(_encode_value(inner, x, key) for x in v)
    if type_str not in VALUE_TYPE_IDS:
        raise DodaiError(f"GGUF writer: metadata {key!r} has unknown type {type_str!r}")
    if type_str == "string":
        b = str(v).encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if type_str == "bool":
        return struct.pack("<B", 1 if v else 0)
    try:
        return struct.pack(VALUE_TYPES[VALUE_TYPE_IDS[type_str]][1], v)
    except struct.error as e:
        raise DodaiError(f"GGUF writer: metadata {key!r} value {v!r} does not fit {type_str}: {e}") from None


_NP_FORMATS_BY_NAME = {VALUE_TYPES[k][0]: f for k, f in _NP_FORMATS.items()}


def _encode_typed(type_str: str, v, key: str) -> bytes:
    """value type id + value (the form used in a key/value pair and for array-of-array items)."""
    base = "array" if type_str.startswith("array[") else type_str
    return struct.pack("<I", VALUE_TYPE_IDS[base]) + _encode_value(type_str, v, key)


def _tensor_bytes(name: str, t) -> tuple[bytes, int, tuple[int, ...]]:
    """(bytes, ggml type id, torch shape) for a torch/numpy tensor or a RawTensor."""
    if isinstance(t, RawTensor):
        return bytes(t.data), GGML_TYPE_IDS[t.type_name], tuple(int(s) for s in t.shape)
    if not isinstance(t, np.ndarray):  # torch tensor
        import torch

        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().tobytes(), GGML_TYPE_IDS["BF16"], tuple(t.shape)
        t = t.numpy()
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
             np.dtype(np.int8): "I8", np.dtype(np.int16): "I16", np.dtype(np.int32): "I32",
             np.dtype(np.int64): "I64"}
    if t.dtype not in names:
        raise DodaiError(f"GGUF writer: tensor {name!r} has unsupported dtype {t.dtype}")
    return np.ascontiguousarray(t).astype(t.dtype.newbyteorder("<")).tobytes(), GGML_TYPE_IDS[names[t.dtype]], \
        tuple(t.shape)


def encode_gguf(metadata: dict[str, Any], tensors: dict[str, Any], types: dict[str, str] | None = None,
                alignment: int = DEFAULT_ALIGNMENT, version: int = 3) -> bytes:
    """The bytes of a GGUF file. ``types`` maps keys to value types ("uint32", "array[string]", …);
    missing ones are inferred (int -> uint32/int64, float -> float32). Tensors: name -> torch/numpy
    tensor (F32/F16/BF16/F64/I*) or :class:`RawTensor`; written in the given order, each aligned."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise DodaiError(f"GGUF writer: alignment {alignment} is not a power of two")
    types = dict(types or {})
    meta = dict(metadata)
    if alignment != DEFAULT_ALIGNMENT:
        meta["general.alignment"] = alignment
        types.setdefault("general.alignment", "uint32")
    out = [GGUF_MAGIC, struct.pack("<IQQ", version, len(tensors), len(meta))]
    for key, v in meta.items():
        kb = key.encode("utf-8")
        out.append(struct.pack("<Q", len(kb)) + kb + _encode_typed(types.get(key) or _infer_type(v), v, key))
    blobs, offset = [], 0
    for name, t in tensors.items():
        data, gtype, shape = _tensor_bytes(name, t)
        nb = name.encode("utf-8")
        dims = tuple(reversed(shape))
        # Refuse to write what the reader (and llama.cpp) would refuse to read.
        gt = GGML_TYPES[gtype]
        n = math.prod(dims)
        if len(nb) > MAX_TENSOR_NAME or len(dims) > GGML_MAX_DIMS or min(dims, default=1) < 1 or \
                (dims[0] if dims else 1) % gt.block_elems or len(data) != n // gt.block_elems * gt.block_bytes:
            raise DodaiError(f"GGUF writer: tensor {name!r} (shape {shape}, {gt.name}, {len(data)} bytes) "
                             f"cannot be stored: names ≤ {MAX_TENSOR_NAME} bytes, ≤ {GGML_MAX_DIMS} dims ≥ 1, "
                             f"rows a multiple of {gt.block_elems}, {n // gt.block_elems * gt.block_bytes} bytes")
        out.append(struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(dims))
                   + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", gtype, offset))
        pad = -len(data) % alignment
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"".join(out)
    head += b"\0" * (-len(head) % alignment)
    return head + b"".join(blobs)


def write_gguf(path: str | os.PathLike, metadata: dict[str, Any], tensors: dict[str, Any],
               types: dict[str, str] | None = None, alignment: int = DEFAULT_ALIGNMENT) -> None:
    """Write a GGUF v3 file atomically (see :func:`encode_gguf`)."""
    from dodai.io import atomic_write_bytes

    atomic_write_bytes(path, encode_gguf(metadata, tensors, types, alignment))
