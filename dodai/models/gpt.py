"""GPT: a decoder-only Transformer language model (R4.1, R4.2, R4.4, R4.5, R6.2).

Notation: B batch, T sequence length (new tokens), C = n_embd, H = n_head, D = C / H, V = vocab_size,
L = n_layer.

Architecture (GPT-2, Radford et al. 2019; the code layout follows nanoGPT's model.py so the parameter
names map one-to-one onto HF ``GPT2LMHeadModel``):

    x = wte[idx] (+ wpe[pos] | + sinusoidal[pos])          (B, T, C), then dropout
    repeat L times (pre-LN residual blocks, Xiong et al. 2020):
        x = x + attn(ln_1(x))                               causal multi-head self-attention
        x = x + mlp(ln_2(x))                                GELU MLP, hidden 4C
    logits = lm_head(ln_f(x))                               (B, T, V); lm_head.weight tied to wte

Positions are "learned" (GPT-2), "sinusoidal" (Vaswani et al. 2017), "rope" (Su et al. 2021, half-split
convention, applied to q and k inside attention), "alibi" (Press et al. 2021, a per-head linear bias on the
attention scores, no embedding) or "none" (NoPE: the causal mask alone carries order).

Norms and block order (R4.5): ``norm`` is "layernorm" (Ba et al. 2016) or "rmsnorm" (Zhang & Sennrich
2019); ``block_order`` "pre" is the block above, "post" is the original Transformer's (Vaswani et al.
2017): x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)), and then no final ln_f (the last block already ends
in a norm). Xiong et al. (2020) show Post-LN needs a learning-rate warm-up; Pre-LN does not.

Initialisation (GPT-2 paper, section 2.3): weights N(0, 0.02), biases 0, and the residual projections
(attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 L)) because each block adds two residual contributions.

Causal-LM protocol: ``model(idx, targets=None, cache=None) -> (logits, loss)``; with a cache, ``idx``
holds only the new tokens (positions cache.pos .. cache.pos+T-1) and the model advances the cache.
Left-padded batches: ``attention_mask`` / ``position_ids`` as in HF (see :mod:`dodai.nn.padding`).
Loss: mean cross-entropy over all positions whose target is not -100.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.nn.attention import ATTN_IMPLS, CausalSelfAttention
from dodai.nn.ffn import MLP, SwiGLU
from dodai.nn.kv_cache import KVCache
from dodai.nn.norm import LayerNorm, RMSNorm
from dodai.nn.padding import padding_bias, resolve_padding
from dodai.nn.position import alibi_bias, alibi_slopes, rope_cos_sin, sinusoidal_table
from dodai.nn.relative_bias import RelativePositionBias

POS_ENCODINGS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")
NORMS = ("layernorm", "rmsnorm")
BLOCK_ORDERS = ("pre", "post")
GPT_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "swiglu")


@dataclass
class GPTConfig:
    vocab_size: int = 65  # V, tokens in the tokenizer's vocabulary
    block_size: int = 64  # maximum context length in tokens
    n_layer: int = 4  # L, Transformer blocks
    n_head: int = 4  # H, query heads per attention layer
    n_embd: int = 128  # C, model width (C = H * D)
    n_kv_head: int | None = None  # key/value heads (GQA/MQA); None = n_head (plain multi-head)
    dropout: float = 0.0  # dropout on embeddings, attention weights, residual branches
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True)
    pos_encoding: str = "learned"  # "learned" | "sinusoidal" | "rope" | "alibi" | "t5" | "none"
    rel_buckets: int = 32  # T5 relative-bias buckets (only used when pos_encoding == "t5")
    rel_max_distance: int = 128  # T5: distances >= this share the last bucket (only for "t5")
    activation: str = "gelu"  # FFN: "gelu" (exact erf) | "gelu_tanh" (GPT-2's) | "relu" | "swiglu" (Llama's)
    tie_weights: bool = True  # lm_head.weight is wte.weight (Press & Wolf 2017)
    layer_norm_eps: float = 1e-5  # epsilon inside every LayerNorm
    rope_theta: float = 10000.0  # RoPE base (only used when pos_encoding == "rope")
    attn_impl: str = "sdpa"  # "sdpa" (fused, fast) | "reference" (explicit softmax, keeps attention maps)
    mlp_hidden: int | None = None  # FFN width F; None = 4C (GELU/ReLU) or ~8C/3 (SwiGLU, same parameters)
    norm: str = "layernorm"  # "layernorm" | "rmsnorm" (eps = layer_norm_eps for both)
    block_order: str = "pre"  # "pre" (GPT-2, x + f(ln(x))) | "post" (original Transformer, ln(x + f(x)))

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DodaiError(f"GPTConfig.{name} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise DodaiError(f"GPTConfig: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        kv = self.n_kv_head or self.n_head
        if not isinstance(kv, int) or kv <= 0 or self.n_head % kv:
            raise DodaiError(f"GPTConfig: n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise DodaiError(f"GPTConfig.pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.activation not in GPT_ACTIVATIONS:
            raise DodaiError(f"GPTConfig.activation must be one of {GPT_ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise DodaiError(f"GPTConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.block_order not in BLOCK_ORDERS:
            raise DodaiError(f"GPTConfig.block_order must be one of {BLOCK_ORDERS}, got {self.block_order!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise DodaiError(f"GPTConfig.attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise DodaiError("GPTConfig: RoPE needs an even head dim (n_embd / n_head)")
        if not 0.0 <= self.dropout < 1.0:
            raise DodaiError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        if not isinstance(d, dict):
            raise DodaiError("GPT config must be a JSON object")
        d = {k: v for k, v in d.items() if k != "model_type"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DodaiError(f"GPT config: unknown key {unknown[0]!r}")
        try:
            return cls(**d)
        except TypeError as e:  # e.g. a wrong type that __post_init__'s comparisons trip over
            raise DodaiError(f"GPT config: {e}") from None


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
    return LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)


class Block(nn.Module):
    """One Transformer block. Pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    Post-LN: ln_1(x + attn(x)), then ln_2(x + mlp(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.post = cfg.block_order == "post"
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, cfg.n_kv_head, bias=cfg.bias,
                                        dropout=cfg.dropout, attn_impl=cfg.attn_impl)
        self.ln_2 = make_norm(cfg)
        if cfg.activation == "swiglu":
            self.mlp = SwiGLU(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias, dropout=cfg.dropout)
        else:
            self.mlp = MLP(cfg.n_embd, cfg.mlp_hidden, bias=cfg.bias, activation=cfg.activation,
                           dropout=cfg.dropout)

    def forward(self, x, rope=None, cache=None, layer=0, bias=None):
        if self.post:
            x = self.ln_1(x + self.attn(x, rope=rope, cache=cache, layer=layer, bias=bias))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), rope=rope, cache=cache, layer=layer, bias=bias)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=make_norm(cfg) if cfg.block_order == "pre" else nn.Identity(),
        ))
        if cfg.pos_encoding == "learned":
            self.transformer["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        elif cfg.pos_encoding == "sinusoidal":
            # A fixed table, not saved (persistent=False): it is a function of the config.
            self.register_buffer("pos_table", sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False)
        elif cfg.pos_encoding == "rope":
            cos, sin = rope_cos_sin(cfg.block_size, cfg.head_dim, cfg.rope_theta)  # (block_size, D) each
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        elif cfg.pos_encoding == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.n_head), persistent=False)
        elif cfg.pos_encoding == "t5":  # T5 (Raffel et al. 2020): learned causal bucketed bias, shared by all layers
            self.rel_bias = RelativePositionBias(cfg.n_head, cfg.rel_buckets, cfg.rel_max_distance, bidirectional=False)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        std_resid = 0.02 / math.sqrt(2 * cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "down_proj.weight")):  # the residual projections
                nn.init.normal_(p, mean=0.0, std=std_resid)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None):
        """idx: (B, T) token ids -> logits (B, T, V), loss (scalar or None) (dodai.models.protocol).

        ``last_only`` (without targets): logits of the last position only, (B, 1, V).

        Left-padded batches (see :mod:`dodai.nn.padding`): ``attention_mask`` (B, T) or (B, past + T),
        True/1 for real tokens; padded keys are masked out of attention and positions restart at 0 on
        each row's first real token (or come from ``position_ids`` (B, T)). A cache keeps the mask, so
        later steps need none.
        """
        b, t = idx.shape
        pos0 = cache.pos if cache is not None else 0
        if pos0 + t > self.config.block_size:
            raise DodaiError(f"sequence of {pos0 + t} tokens exceeds the context window "
                             f"(block_size {self.config.block_size})")
        key_mask, pos = resolve_padding(cache, attention_mask, position_ids, b, t, idx.device)
        if position_ids is not None and pos.numel() and not 0 <= int(pos.min()) <= int(pos.max()) < t + pos0:
            raise DodaiError(f"position ids must lie in [0, {pos0 + t}), got {int(pos.min())}..{int(pos.max())}")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        pe = self.config.pos_encoding
        if pe == "learned":
            if pos is None:
                pos = torch.arange(pos0, pos0 + t, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (T, C) broadcasts over B, or per-row (B, T, C)
        elif pe == "sinusoidal":
            x = x + (self.pos_table[pos0:pos0 + t] if pos is None else self.pos_table[pos]).to(x.dtype)
        elif pe == "rope":
            if pos is None:
                rope = (self.rope_cos[pos0:pos0 + t].to(x.dtype), self.rope_sin[pos0:pos0 + t].to(x.dtype))
            else:  # per-row tables (B, 1, T, D), broadcast over heads
                rope = (self.rope_cos[pos][:, None].to(x.dtype), self.rope_sin[pos][:, None].to(x.dtype))
        bias = None
        if pe == "alibi":  # (H, T, S): the new queries' absolute positions against every key so far
            # relative distances: with left padding they are the same in slots as in positions
            bias = alibi_bias(self.alibi_slopes, t, pos0 + t, dtype=x.dtype, device=idx.device)
        elif pe == "t5":  # (H, T, S) learned bias per (head, distance bucket); relative, like ALiBi
            bias = self.rel_bias(t, pos0 + t, offset=pos0)[0].to(x.dtype)
        if key_mask is not None:  # padded keys: (B, 1, 1, S) additive, combined with the causal mask inside
            pad = padding_bias(key_mask, x.dtype)
            bias = pad if bias is None else bias + pad
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope=rope, cache=cache, layer=i, bias=bias)
        if cache is not None:
            cache.advance(t)
        x = self.transformer.ln_f(x)
        if last_only and targets is None:
            x = x[:, -1:, :]
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            # (B*T, V) vs (B*T,): mean over every position whose target is not -100.
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        p = self.lm_head.weight
        cfg = self.config
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head or cfg.n_head, max_len, cfg.head_dim,
                       dtype=dtype or p.dtype, device=p.device)

    # ----------------------------------------------------------------------------------- bookkeeping
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters counted once (tied weights once). ``non_embedding`` leaves out the learned
        position table (nanoGPT's convention; the token embedding stays in because it is the tied
        output layer), or the token embedding too when it is not tied."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def optimizer_param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices and embeddings (dim >= 2), not biases or norm gains."""
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() yields tied ones once
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def expected_shapes(self) -> dict[str, tuple]:
        """Names and shapes of the saved tensors (the tied lm_head.weight is saved once, as wte)."""
        sd = self.state_dict()
        if self.config.tie_weights:
            sd.pop("lm_head.weight")
        return {k: tuple(v.shape) for k, v in sd.items()}

    def save(self, out_dir: str | Path) -> None:
        """Write ``model.safetensors`` + ``config.json`` (``"model_type": "gpt"``) into out_dir."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict()
        tensors = {k: sd[k] for k in self.expected_shapes()}
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt", "model_type": "gpt"})
        atomic_write_json(out / "config.json", {"model_type": "gpt", **self.config.to_dict()})

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> GPT:
        """Load a folder written by :meth:`save`. Strict: every tensor must exist with the config's shape."""
        from dodai.weights.safetensors import load_file

        folder = Path(path)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise DodaiError(f"{folder}: no config.json (not a dodai model folder)")
        raw = read_user_json(cfg_path, what="model config")
        if not isinstance(raw, dict) or raw.get("model_type") != "gpt":
            raise DodaiError(f"{cfg_path}: model_type is not 'gpt'")
        config = GPTConfig.from_dict(raw)
        with torch.device("meta"):
            shapes = cls(config).expected_shapes()  # shapes only, no memory
        sd = load_file(folder / "model.safetensors", expected=shapes)
        model = cls(config)
        if config.tie_weights:
            sd["lm_head.weight"] = sd["transformer.wte.weight"]
        model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
        return model.to(device=device, dtype=dtype)
