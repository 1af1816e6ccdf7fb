"""Models: one per file (rnn, seq2seq, gpt, llama, mistral, gemma3, bert, t5); the Llama family (Llama,
Mistral, Gemma 3) shares one configurable decoder, :mod:`dodai.models.decoder`.

:func:`load_model` turns a ``--model`` argument into a causal LM and its tokenizer:

- a folder with ``config.json``: ``model_type`` "gpt" -> :class:`dodai.models.gpt.GPT`;
  "gpt2" (an HF GPT-2 folder) -> imported via :mod:`dodai.weights.hf_gpt2`;
  "llama" (dodai or HF names) -> :func:`dodai.models.llama.load_llama_dir`; "mistral" / "gemma3"
  (folders written by ``Decoder.save``) likewise; the tokenizer is the folder's ``tokenizer.json``;
- any ``.gguf`` file of a supported architecture, or a registry name of a GGUF model: the architecture is
  read from the file's ``general.architecture`` (:data:`GGUF_ARCHITECTURES`) and the tokenizer from its
  metadata (:func:`load_gguf`).

Heavy imports happen inside the function so that importing ``dodai.models`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import read_user_json

# general.architecture -> (module, loader of an open GGUFFile)
GGUF_ARCHITECTURES = {
    "llama": ("dodai.models.llama", "llama_from_gguf_file"),
    "gemma3": ("dodai.models.gemma3", "gemma3_from_gguf_file"),
}


def load_gguf(path, dtype=None):
    """(model in eval mode, tokenizer) from a GGUF file of any supported architecture (picked from its metadata)."""
    import importlib

    import torch

    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf
    from dodai.weights.gguf import GGUFFile

    with GGUFFile(path) as gf:
        arch = gf.metadata.get("general.architecture")
        if arch not in GGUF_ARCHITECTURES:
            raise DodaiError(f"{path}: GGUF architecture {arch!r} is not supported yet "
                             f"(dodai runs {', '.join(sorted(GGUF_ARCHITECTURES))})")
        module, fn = GGUF_ARCHITECTURES[arch]
        tok = tokenizer_from_gguf(path, gguf=gf)  # first: a bad vocabulary fails before the weights are read
        model = getattr(importlib.import_module(module), fn)(gf, dtype or torch.float32)
    return model.eval(), tok


def load_model(spec, dtype=None):
    """(model in eval mode, tokenizer) for a run folder, a GGUF path or a registry model name."""
    import torch

    from dodai.weights import registry

    dtype = dtype or torch.float32
    s = str(spec)
    if s in registry.MODELS:
        entry = registry.MODELS[s]
        if not entry.kind.endswith("-gguf"):
            raise DodaiError(f"registry model {s!r} is a {entry.kind} model, not a causal language model")
        return load_gguf(registry.resolve(s), dtype=dtype)
    p = Path(s).expanduser()
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise DodaiError(f"{p}: not a GGUF file (give a model folder, a .gguf file or a registry name)")
        return load_gguf(p, dtype=dtype)
    if not p.is_dir():
        raise DodaiError(f"model {s!r} is neither an existing path nor a registry model "
                         f"({', '.join(registry.MODELS)})")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise DodaiError(f"{p}: no config.json (not a model folder)")
    cfg = read_user_json(cfg_path, what="model config")
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
    elif kind in ("mistral", "gemma3"):
        model = load_decoder_dir(p, kind, dtype=dtype)
    else:
        raise DodaiError(f"{cfg_path}: model_type {kind!r} is not a causal LM dodai can load "
                         f"(gpt, gpt2, llama, mistral, gemma3)")
    from dodai.tokenizers import load_tokenizer

    return model.eval(), load_tokenizer(p)


def load_decoder_dir(folder, kind: str, dtype=None):
    """A Mistral or Gemma 3 folder written by ``Decoder.save`` (config.json with dodai's fields, dodai names)."""
    import torch

    from dodai.models.decoder import load_named
    from dodai.weights.safetensors import load_file

    if kind == "mistral":
        from dodai.models.mistral import Mistral as cls
        from dodai.models.mistral import MistralConfig as cfg_cls
    else:
        from dodai.models.gemma3 import Gemma3 as cls
        from dodai.models.gemma3 import Gemma3Config as cfg_cls
    p = Path(folder)
    cfg = read_user_json(p / "config.json", what="model config")
    model = cls(cfg_cls.from_dict(cfg))
    load_named(model, dict(load_file(p / "model.safetensors")), dtype or torch.float32, str(p))
    return model
