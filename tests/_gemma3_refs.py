"""The real Gemma 3 270M for the tests: dodai's model once per test process, and HF transformers' references
(its tokenizer and Gemma3ForCausalLM, both built by HF from the same GGUF) cached on disk after the first build.

Building HF's objects from the GGUF takes minutes on the shared CPU (HF parses the 262,144-token vocabulary
in Python and dequantizes with numpy); HF's own ``save_pretrained`` output loads in seconds. The cache is
keyed by the transformers version and the GGUF's sha256, and lives under the dodai cache
(``test-refs/``); delete it to rebuild. What is cached is HF's model and tokenizer, never any output.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@lru_cache(maxsize=1)
def dodai_gemma3(path: str):
    from dodai.models import load_model

    return load_model(path)


def _ref_dir(kind: str) -> Path:
    import transformers

    from dodai.paths import cache_dir

    return cache_dir() / "test-refs" / f"gemma3-270m-{kind}-tf{transformers.__version__}-{SHA[:12]}"


def _build(kind: str, make, load):  # HF objects that save_pretrained can write (the tokenizer)
    d = _ref_dir(kind)
    if (d / ".complete").is_file():
        return load(d)
    obj = make()
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.save_pretrained(tmp)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return obj


@lru_cache(maxsize=1)
def hf_tokenizer(path: str):
    import transformers

    p = Path(path)
    return _build("tokenizer", lambda: transformers.AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name),
                  transformers.AutoTokenizer.from_pretrained)


def _save_hf_model(m, d: Path) -> None:
    """HF refuses ``save_pretrained`` on a GGUF-loaded model (its gguf quantizer is not serializable): keep the
    dequantized fp32 weights (safetensors, shared tensors once) and the config."""
    from safetensors.torch import save_model

    d.mkdir(parents=True)
    m.config.to_json_file(d / "config.json")
    save_model(m, str(d / "model.safetensors"))


def _load_hf_model(d: Path):
    import torch
    import transformers
    from safetensors.torch import load_model

    config = transformers.Gemma3TextConfig.from_json_file(d / "config.json")
    config.quantization_config = None
    with torch.device("meta"):
        m = transformers.Gemma3ForCausalLM(config)
    m = m.to_empty(device="cpu")
    missing, unexpected = load_model(m, str(d / "model.safetensors"), strict=False)
    tied = {"model.embed_tokens.weight", "lm_head.weight"}
    if unexpected or not set(missing) < tied:  # the tied pair is stored once; nothing else may be absent
        raise RuntimeError(f"cached HF Gemma 3 in {d} is incomplete: missing {missing}, unexpected {unexpected}")
    if "model.embed_tokens.weight" in set(missing):
        m.model.embed_tokens.weight = m.lm_head.weight
    else:
        m.lm_head.weight = m.model.embed_tokens.weight
    # non-persistent buffers (RoPE inverse frequencies, the embedding scale) are not in the file: recompute them
    m.model.rotary_emb.__init__(config)
    m.model.embed_tokens.embed_scale = torch.tensor(config.hidden_size ** 0.5)
    return m.float()


@lru_cache(maxsize=1)
def hf_model(path: str):
    import torch
    import transformers

    p = Path(path)
    d = _ref_dir("model")
    if (d / ".complete").is_file():
        return _load_hf_model(d).eval()
    m = transformers.Gemma3ForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32).eval()
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_hf_model(m, tmp)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return m
