"""Models: one per file (rnn, seq2seq, gpt, llama, bert, t5).

:func:`load_model` turns a ``--model`` argument into a causal LM and its tokenizer:

- a folder with ``config.json``: ``model_type`` "gpt" -> :class:`dodai.models.gpt.GPT`;
  "gpt2" (an HF GPT-2 folder) -> imported via :mod:`dodai.weights.hf_gpt2`;
  "llama" (dodai or HF names) -> :func:`dodai.models.llama.load_llama_dir`;
  the tokenizer is the folder's ``tokenizer.json``;
- a ``.gguf`` file or a registry name of kind "llama-gguf" -> :func:`dodai.models.llama.load_llama_gguf`.

Heavy imports happen inside the function so that importing ``dodai.models`` stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from dodai.errors import DodaiError


def load_model(spec, dtype=None):
    """(model in eval mode, tokenizer) for a run folder, a GGUF path or a registry model name."""
    import torch

    from dodai.weights import registry

    dtype = dtype or torch.float32
    s = str(spec)
    if s in registry.MODELS:
        entry = registry.MODELS[s]
        if entry.kind != "llama-gguf":
            raise DodaiError(f"registry model {s!r} is a {entry.kind} model, not a causal language model")
        from dodai.models.llama import load_llama_gguf

        model, tok = load_llama_gguf(registry.resolve(s), dtype=dtype)
        return model.eval(), tok
    p = Path(s).expanduser()
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise DodaiError(f"{p}: not a GGUF file (give a model folder, a .gguf file or a registry name)")
        from dodai.models.llama import load_llama_gguf

        model, tok = load_llama_gguf(p, dtype=dtype)
        return model.eval(), tok
    if not p.is_dir():
        raise DodaiError(f"model {s!r} is neither an existing path nor a registry model "
                         f"({', '.join(registry.MODELS)})")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise DodaiError(f"{p}: no config.json (not a model folder)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DodaiError(f"{cfg_path}: not valid JSON") from None
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind == "gpt":
        from dodai.models.gpt import GPT

        model = GPT.load(p, dtype=dtype)
    elif kind == "gpt2":
        from dodai.weights.hf_gpt2 import load_hf_gpt2

        model = load_hf_gpt2(p, dtype=dtype)
    elif kind == "llama":
        from dodai.models.llama import load_llama_dir

        model = load_llama_dir(p, dtype=dtype)
    else:
        raise DodaiError(f"{cfg_path}: model_type {kind!r} is not a causal LM dodai can load (gpt, gpt2, llama)")
    from dodai.tokenizers import load_tokenizer

    return model.eval(), load_tokenizer(p)
