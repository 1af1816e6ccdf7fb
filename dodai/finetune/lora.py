"""LoRA: low-rank adapters on frozen linear layers (Hu et al., 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A frozen ``W`` (out × in) gets a trainable update ``ΔW = (α / r) · B A`` with A (r × in), B (out × r)::

    y = W x + (α / r) · B (A · dropout(x))

A starts random (Kaiming-uniform, as the paper's reference code and HF PEFT do) and B at zero, so the
adapted model equals the base model at step 0. Only A and B train: the number of trainable parameters
per wrapped layer is r · (in + out). ``merge`` folds ΔW into W (no extra cost at inference),
``unmerge`` subtracts it again. Adapters are saved as safetensors (dodai's own writer) with the LoRA
hyper-parameters in the header metadata; keys are ``<module path>.lora_A`` / ``.lora_B``.

Injection *replaces* the chosen ``nn.Linear`` modules in place (the model's own code is untouched):
a module is wrapped when the last part of its dotted name is in ``targets`` (for dodai's Llama:
``wq wk wv wo w_gate w_up w_down``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from dodai.errors import DodaiError

DEFAULT_TARGETS = ("wq", "wk", "wv", "wo")


class LoRALinear(nn.Module):
    """``base(x) + scaling · B(A(dropout(x)))``; ``base`` is frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise DodaiError(f"LoRA rank must be a positive integer, got {rank!r}")
        if not 0.0 <= dropout < 1.0:
            raise DodaiError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        w = base.weight
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def inject_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends in one of ``targets`` with :class:`LoRALinear`; freeze
    every other parameter. Returns the wrapped module paths (a DodaiError if none matched)."""
    targets = tuple(targets)
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and n.split(".")[-1] in targets]
    if not names:
        have = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise DodaiError(f"no linear layer matches the LoRA targets {list(targets)} (linear layers: {have})")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every LoRALinear by its base linear (merged first when ``merge``): a plain model again."""
    for name, m in lora_modules(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.base)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied tensors count once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach().contiguous()
        out[f"{name}.lora_B"] = m.lora_B.detach().contiguous()
    return out


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters to a safetensors file; rank/alpha/targets go into the header metadata."""
    from dodai.weights.safetensors import save_file

    mods = lora_modules(model)
    if not mods:
        raise DodaiError("the model has no LoRA adapters to save")
    first = next(iter(mods.values()))
    targets = sorted({n.split(".")[-1] for n in mods})
    meta = {"format": "dodai-lora", "rank": str(first.rank), "alpha": str(first.alpha),
            "targets": ",".join(targets)}
    path = Path(path)
    save_file(adapter_state_dict(model), path, metadata=meta)
    return path


def load_adapters(model: nn.Module, path: str | Path, dropout: float = 0.0) -> list[str]:
    """Inject adapters into ``model`` as described by the file's metadata, then load their weights
    (strict: every key must match a wrapped module, shapes must agree)."""
    from dodai.weights.safetensors import load_file

    sd = load_file(path)  # validates the whole file first
    meta = _read_metadata(path)
    if meta.get("format") != "dodai-lora":
        raise DodaiError(f"{path}: not a dodai LoRA adapter file (metadata format={meta.get('format')!r})")
    try:
        rank, alpha, targets = int(meta["rank"]), float(meta["alpha"]), tuple(meta["targets"].split(","))
    except (KeyError, ValueError):
        raise DodaiError(f"{path}: LoRA metadata lacks a valid rank/alpha/targets") from None
    names = inject_lora(model, rank, alpha, dropout, targets)
    want = adapter_state_dict(model)
    if set(sd) != set(want):
        extra = sorted(set(sd) ^ set(want))
        raise DodaiError(f"{path}: adapter keys do not match the model (e.g. {extra[0]})")
    mods = lora_modules(model)
    with torch.no_grad():
        for key, t in sd.items():
            mod_name, _, which = key.rpartition(".")
            p = getattr(mods[mod_name], which)
            if tuple(t.shape) != tuple(p.shape):
                raise DodaiError(f"{path}: {key} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
    return names


def _read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors header (called after load_file validated the file)."""
    import json
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n).decode("utf-8")).get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}
