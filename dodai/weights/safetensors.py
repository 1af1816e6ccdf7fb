"""safetensors, read and written by dodai's own code (format: 8-byte little-endian header length N,
N bytes of JSON header, then the raw little-endian tensor bytes).

The header maps each name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the end of the header) plus an optional ``"__metadata__"`` of string→string. Reading is strict:
every field is checked against the file before any tensor is built, so a corrupt or hostile file
gives a :class:`DodaiError` naming the problem and never allocates more than the file holds.

Before the header is parsed its size (:data:`_MAX_HEADER`, the reference implementation's limit) and the
number of JSON values it can hold (commas and colons, :data:`MAX_HEADER_ITEMS`, which bounds the Python
objects ``json.loads`` builds) are checked on the raw bytes; nesting deeper than the parser's recursion
limit (200,000 ``[``) is a DodaiError, not a RecursionError traceback (a valid header nests 3 deep, and
anything but the documented structure is refused after parsing).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import atomic_write_bytes

# safetensors dtype string -> (torch dtype name, bytes per element)
_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's own limit
MAX_HEADER_ITEMS = 1_000_000  # commas + colons in the header (a tensor entry has about 10)


def _check_header_size(p, raw: bytes) -> None:
    """The number of JSON values ``raw`` can hold, counted on the bytes before parsing."""
    if raw.count(b",") + raw.count(b":") > MAX_HEADER_ITEMS:
        raise DodaiError(f"{p}: safetensors header holds more than {MAX_HEADER_ITEMS:,} JSON values")


def _torch_dtype_to_st(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    for k, (tname, _) in _DTYPES.items():
        if tname == name:
            return k
    raise DodaiError(f"safetensors: cannot store dtype {name}")


def save_file(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> torch.Tensor) atomically to ``path``."""
    import torch

    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _torch_dtype_to_st(t.dtype), "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # align the data section to 8 bytes
    atomic_write_bytes(path, struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs))


def read_header(path: str | os.PathLike) -> tuple[dict, int, int]:
    """Parse and validate the header. Returns (header without __metadata__, data start, file size)."""
    p = Path(path)
    if not p.is_file():
        raise DodaiError(f"{p}: no such safetensors file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise DodaiError(f"{p}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", first)
        if n > _MAX_HEADER or 8 + n > size:
            raise DodaiError(f"{p}: safetensors header length {n} exceeds the file ({size} bytes)")
        raw = f.read(n)
    _check_header_size(p, raw)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DodaiError(f"{p}: safetensors header is not valid JSON") from None
    except RecursionError:
        raise DodaiError(f"{p}: safetensors header is nested too deeply (a valid header nests 3 deep)") from None
    if not isinstance(header, dict):
        raise DodaiError(f"{p}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    start = 8 + n
    data_len = size - start
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise DodaiError(f"{p}: tensor {name!r}: header entry lacks dtype/shape/data_offsets")
        if info["dtype"] not in _DTYPES:
            raise DodaiError(f"{p}: tensor {name!r}: unknown dtype {info['dtype']!r}")
        shape, offs = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 2**40 for d in shape)):
            raise DodaiError(f"{p}: tensor {name!r}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise DodaiError(f"{p}: tensor {name!r}: data_offsets {offs!r} outside the data ({data_len} bytes)")
        nbytes = math.prod(shape) * _DTYPES[info["dtype"]][1]
        if nbytes != offs[1] - offs[0]:
            raise DodaiError(f"{p}: tensor {name!r}: shape {shape} needs {nbytes} bytes, "
                             f"offsets give {offs[1] - offs[0]}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (_b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise DodaiError(f"{p}: tensors {n0!r} and {n1!r} overlap")
    return header, start, size


def load_file(path: str | os.PathLike, expected: dict[str, tuple] | None = None) -> dict:
    """Read every tensor of a safetensors file (name -> torch.Tensor, on CPU).

    ``expected`` (name -> shape), when given, must match the file exactly: a missing, extra or
    mis-shaped tensor is a DodaiError naming it (see :func:`check_state_dict`).
    """
    import torch

    header, start, _ = read_header(path)
    if expected is not None:
        check_shapes(path, {k: v["shape"] for k, v in header.items()}, expected)
    with open(path, "rb") as f:
        f.seek(start)
        data = bytearray(f.read())
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dtype = getattr(torch, _DTYPES[info["dtype"]][0])
        if e == b:
            out[name] = torch.empty(info["shape"], dtype=dtype)
            continue
        t = torch.frombuffer(data, dtype=torch.uint8, count=e - b, offset=b)
        out[name] = t.view(dtype).reshape(info["shape"]).clone()
    return out


def check_shapes(source, got: dict[str, list], expected: dict[str, tuple]) -> None:
    """Names and shapes of ``got`` must equal ``expected``; otherwise a DodaiError naming the first problem."""
    missing = sorted(set(expected) - set(got))
    if missing:
        raise DodaiError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    extra = sorted(set(got) - set(expected))
    if extra:
        raise DodaiError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all)")
    for k, shape in expected.items():
        if tuple(got[k]) != tuple(shape):
            raise DodaiError(f"{source}: tensor {k!r} has shape {tuple(got[k])}, the config implies {tuple(shape)}")
