"""Import from and export to the Hugging Face GPT-2 format (R6.2).

HF ``GPT2LMHeadModel`` and dodai's :class:`~dodai.models.gpt.GPT` share parameter names (both follow
OpenAI's original checkpoint) with one difference: HF keeps OpenAI's ``Conv1D`` layers, whose weight is
stored **[in, out]**, the transpose of ``nn.Linear``'s [out, in]. The four Conv1D weights per block
(attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed on the way in and out.

Key map (i = block index; HF checkpoints may omit the ``transformer.`` prefix, e.g. OpenAI's ``gpt2``):

    transformer.wte.weight, transformer.wpe.weight                    same
    transformer.h.{i}.ln_1 / ln_2 .weight .bias                       same
    transformer.h.{i}.attn.c_attn.weight  [C, 3C]   <->  [3C, C]       transposed
    transformer.h.{i}.attn.c_proj.weight  [C, C]    <->  [C, C]        transposed
    transformer.h.{i}.mlp.c_fc.weight     [C, 4C]   <->  [4C, C]       transposed
    transformer.h.{i}.mlp.c_proj.weight   [4C, C]   <->  [C, 4C]       transposed
    transformer.ln_f.weight .bias, lm_head.weight (tied to wte)        same

config.json: ``model_type: gpt2``, n_embd, n_layer, n_head, n_positions (= block_size), vocab_size,
layer_norm_epsilon, ``activation_function`` ("gelu" = exact erf, "gelu_new"/"gelu_pytorch_tanh" = the
tanh approximation), dropout probabilities, tie_word_embeddings. GPT-2 always has biases, learned
positions and 4C-wide MLPs, so only such dodai models export.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.models.gpt import GPT, GPTConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "relu": "relu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def config_from_hf(hf: dict) -> GPTConfig:
    """dodai GPTConfig from an HF GPT-2 config.json dict."""
    if hf.get("model_type") != "gpt2":
        raise DodaiError(f"not a GPT-2 config (model_type {hf.get('model_type')!r})")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACT_FROM_HF:
        raise DodaiError(f"GPT-2 activation_function {act!r} is not supported")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise DodaiError(f"GPT-2 option {flag} is not supported")
    if hf.get("scale_attn_weights", True) is False:
        raise DodaiError("GPT-2 option scale_attn_weights=False is not supported")
    try:
        n_embd = int(hf["n_embd"])
        n_inner = hf.get("n_inner")
        return GPTConfig(
            vocab_size=int(hf["vocab_size"]), block_size=int(hf["n_positions"]), n_layer=int(hf["n_layer"]),
            n_head=int(hf["n_head"]), n_embd=n_embd, dropout=0.0, bias=True, pos_encoding="learned",
            activation=_ACT_FROM_HF[act], tie_weights=bool(hf.get("tie_word_embeddings", True)),
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            mlp_hidden=int(n_inner) if n_inner else None)
    except (KeyError, TypeError, ValueError) as e:
        raise DodaiError(f"GPT-2 config: missing or bad field {e}") from None


def config_to_hf(cfg: GPTConfig, eos_id: int | None = None) -> dict:
    if cfg.pos_encoding != "learned":
        raise DodaiError(f"only pos_encoding='learned' exports to GPT-2 (this model uses {cfg.pos_encoding!r})")
    if cfg.activation not in _ACT_TO_HF:
        raise DodaiError(f"GPT-2's MLP cannot express activation {cfg.activation!r}")
    if not cfg.bias:
        raise DodaiError("GPT-2 has biases everywhere: a bias=False model cannot be exported")
    if (cfg.n_kv_head or cfg.n_head) != cfg.n_head:
        raise DodaiError("GPT-2 has no grouped-query attention: n_kv_head must equal n_head to export")
    if cfg.attn_impl not in ("sdpa", "reference"):
        raise DodaiError(f"unknown attn_impl {cfg.attn_impl!r}")
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_inner": cfg.mlp_hidden, "activation_function": _ACT_TO_HF[cfg.activation],
        "layer_norm_epsilon": cfg.layer_norm_eps, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout, "tie_word_embeddings": cfg.tie_weights, "initializer_range": 0.02,
        "scale_attn_weights": True, "use_cache": True,
        # HF's GPT-2 defaults point at token 50256; a dodai vocabulary has its own EOS (or none)
        "bos_token_id": eos_id, "eos_token_id": eos_id,
    }


def state_dict_from_hf(hf_sd: dict, cfg: GPTConfig) -> dict:
    """HF GPT-2 tensors -> dodai GPT state dict (strict: names and shapes checked)."""
    sd = {}
    for k, v in hf_sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old HF versions saved the causal-mask buffers
        name = k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k
        if name.endswith(_CONV1D):
            v = v.t()  # Conv1D [in, out] -> Linear [out, in]
        sd[name] = v
    if "lm_head.weight" not in sd and cfg.tie_weights:
        sd["lm_head.weight"] = sd.get("transformer.wte.weight")
    with torch.device("meta"):
        ref = GPT(cfg).state_dict()
    from dodai.weights.safetensors import check_shapes

    check_shapes("GPT-2 weights", {k: tuple(v.shape) for k, v in sd.items() if v is not None},
                 {k: tuple(v.shape) for k, v in ref.items()})
    return sd


def from_hf_state_dict(hf_sd: dict, hf_config: dict, dtype: torch.dtype = torch.float32) -> GPT:
    cfg = config_from_hf(hf_config)
    sd = state_dict_from_hf(hf_sd, cfg)
    model = GPT(cfg).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
    return model


def load_hf_gpt2(folder: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """Load an HF GPT-2 folder (config.json + model.safetensors) into a dodai GPT."""
    from dodai.weights.safetensors import load_file

    folder = Path(folder)
    try:
        hf_config = read_user_json(folder / "config.json", what="model config")
    except FileNotFoundError:
        raise DodaiError(f"{folder}: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DodaiError(f"{folder}/config.json: not valid JSON") from None
    if not isinstance(hf_config, dict):
        raise DodaiError(f"{folder}/config.json: not a JSON object")
    return from_hf_state_dict(load_file(folder / "model.safetensors"), hf_config, dtype)


def to_hf_state_dict(model: GPT) -> dict:
    """dodai GPT -> HF GPT-2 tensor dict (contiguous, Conv1D weights transposed, tied head saved once)."""
    config_to_hf(model.config)  # raises for models GPT-2 cannot express
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and model.config.tie_weights:
            continue
        if k.endswith(_CONV1D):
            v = v.t()  # Linear [out, in] -> Conv1D [in, out]
        out[k] = v.detach().contiguous().clone()
    return out


def export_hf_gpt2(model: GPT, out_dir: str | Path, eos_id: int | None = None) -> None:
    """Write ``model.safetensors`` + ``config.json`` that ``GPT2LMHeadModel.from_pretrained`` loads.

    ``eos_id``: the tokenizer's end-of-text id, written as bos/eos_token_id (None when there is none)."""
    from dodai.io import atomic_write_json
    from dodai.weights.safetensors import save_file

    if eos_id is not None and not 0 <= eos_id < model.config.vocab_size:
        raise DodaiError(f"eos_id {eos_id} is outside the vocabulary (size {model.config.vocab_size})")
    hf_config = config_to_hf(model.config, eos_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state_dict(model), out / "model.safetensors", metadata={"format": "pt"})
    atomic_write_json(out / "config.json", hf_config)
