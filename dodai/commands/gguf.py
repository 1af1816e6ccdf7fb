"""`dodai gguf inspect FILE`: a GGUF file's header, metadata summary and tensor table (dodai's own reader)."""

from __future__ import annotations

HELP = "inspect a GGUF file: header, metadata summary and tensor table (FILE or a registry model name)"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["inspect"], help="inspect: print what the file holds")
    p.add_argument("file", help="path of a .gguf file, or a registry name such as smollm2-135m-instruct")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--max-tensors", type=int, default=None,
                   help="list at most this many tensors (default: all); the per-type summary covers all")


def _short(value, width: int = 60) -> str:
    """A one-line preview of a metadata value: long strings and arrays are cut, with their size."""
    if isinstance(value, list):
        head = ", ".join(_short(v, 16) for v in value[:4])
        more = f", … ({len(value)} items)" if len(value) > 4 else ""
        return f"[{head}{more}]"
    text = repr(value)
    if len(text) > width:
        n = f" ({len(value)} chars)" if isinstance(value, str) else ""
        text = text[: width - 1] + "…" + n
    return text


def _as_stored(value, type_name: str):
    """float32 values print as their shortest float32 repr (1e-05, not 9.999999747378752e-06)."""
    if type_name == "float32":
        import numpy as np

        return float(str(np.float32(value)))
    return value


def model_summary(g) -> dict:
    """Whether dodai runs this file: its architecture and the validated configuration, or the reason it does not."""
    import importlib

    from dodai.errors import DodaiError
    from dodai.models import GGUF_ARCHITECTURES

    arch = g.metadata.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        known = ", ".join(sorted(GGUF_ARCHITECTURES))
        return {"architecture": arch, "runs": False,
                "reason": f"architecture {arch!r} is not supported (dodai runs {known})"}
    module = importlib.import_module(GGUF_ARCHITECTURES[arch][0])
    cls = {"llama": "LlamaConfig", "gemma3": "Gemma3Config"}[arch]
    try:
        cfg = getattr(module, cls).from_gguf_metadata(g.metadata)
    except DodaiError as e:
        return {"architecture": arch, "runs": False, "reason": str(e)}
    return {"architecture": arch, "runs": True, "config": cfg.to_dict()}


def summary(g, max_tensors: int | None = None) -> dict:
    """Everything `inspect` shows, as a JSON-ready dict (arrays previewed, not dumped)."""
    by_type: dict[str, dict] = {}
    for t in g.tensors.values():
        s = by_type.setdefault(t.type_name, {"tensors": 0, "elements": 0, "bytes": 0})
        s["tensors"] += 1
        s["elements"] += t.n_elements
        s["bytes"] += t.nbytes
    tensors = list(g.tensors.values())[:max_tensors]
    return {
        "file": str(g.path), "size": g.size, "version": g.version, "alignment": g.alignment,
        "data_offset": g.data_offset, "n_metadata": len(g.metadata), "n_tensors": len(g.tensors),
        "metadata": {k: {"type": g.metadata_types[k], "value": _short(_as_stored(v, g.metadata_types[k]))}
                     for k, v in g.metadata.items()},
        "types": by_type,
        "model": model_summary(g),
        "tensors": [{"name": t.name, "type": t.type_name, "shape": list(t.shape), "nbytes": t.nbytes,
                     "offset": t.offset} for t in tensors],
    }


def run(args) -> int:
    import json

    from dodai.errors import DodaiError
    from dodai.weights.gguf import GGUFFile
    from dodai.weights.registry import resolve

    if args.max_tensors is not None and args.max_tensors < 0:
        raise DodaiError("--max-tensors must be 0 or more")
    path = resolve(args.file, pull_if_missing=False)
    if path.is_dir():
        raise DodaiError(f"{path} is a folder, not a GGUF file")
    with GGUFFile(path) as g:
        info = summary(g, args.max_tensors)
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return 0
    print(f"{info['file']}: GGUF v{info['version']}, {info['size']:,} bytes, alignment {info['alignment']}, "
          f"data at byte {info['data_offset']:,}, {info['n_metadata']} metadata keys, {info['n_tensors']} tensors")
    print("\nmetadata")
    kw = max((len(k) for k in info["metadata"]), default=0)
    for k, m in info["metadata"].items():
        print(f"  {k:<{kw}}  {m['type']:<14} {m['value']}")
    m = info["model"]
    if m["runs"]:
        c = m["config"]
        types = c["layer_types"] or (["local" if c["sliding_window"] else "global"] * c["n_layer"])
        print(f"\nmodel: {m['architecture']}, runs in dodai: {c['n_layer']} layers ({types.count('local')} local), "
              f"width {c['n_embd']}, {c['n_head']}/{c['n_kv_head']} heads of {c['head_dim']}, vocab {c['vocab_size']}, "
              f"context {c['block_size']}")
    else:
        print(f"\nmodel: {m['architecture']}, does not run in dodai: {m['reason']}")
    print("\ntensor types")
    for name, s in sorted(info["types"].items()):
        print(f"  {name:<8} {s['tensors']:>5} tensors {s['elements']:>14,} values {s['bytes']:>14,} bytes")
    print("\ntensors (torch shape)")
    nw = max((len(t["name"]) for t in info["tensors"]), default=0)
    for t in info["tensors"]:
        shape = "×".join(map(str, t["shape"])) or "scalar"
        print(f"  {t['name']:<{nw}}  {t['type']:<7} {shape:<14} {t['nbytes']:>12,} bytes  @ {t['offset']:,}")
    if len(info["tensors"]) < info["n_tensors"]:
        print(f"  … {info['n_tensors'] - len(info['tensors'])} more (see --max-tensors)")
    return 0
