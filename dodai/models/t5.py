"""T5: the encoder-decoder Transformer of Raffel et al. 2020 (R6.3), "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer" (JMLR 21), and the v1.1 variant (gated-GELU FFN,
untied lm head; Shazeer 2020, "GLU Variants Improve Transformer").

Notation: B batch, S encoder (source) positions, T decoder (target) positions, C = d_model,
H heads, D = d_kv head dim (H * D need not equal C), F = d_ff, V vocab.

What makes T5 T5 (each checked against HF ``T5ForConditionalGeneration`` in tests/test_t5.py):

- **Relative position bias** instead of position embeddings (:mod:`dodai.nn.relative_bias`): one
  learned scalar per (head, bucket of key_pos - query_pos), computed in the *first* layer of each stack
  and shared by all layers of that stack; bidirectional buckets in the encoder, causal ones in the
  decoder's self-attention, none in cross-attention.
- **No 1/sqrt(D) in attention**: scores = Q K^T + bias. T5 folds the scale into the initialisation of
  W_q (std (C * D)^-0.5 instead of C^-0.5), so at init the scores have the same spread.
- **T5 LayerNorm = RMSNorm** (no mean subtraction, no bias, eps 1e-6), pre-norm residual blocks:
  x = x + Dropout(Sublayer(RMSNorm(x))), and a final RMSNorm per stack.
- **FFN**: v1.0 ReLU  y = W_o relu(W_i x);  v1.1 gated-GELU  y = W_o (gelu_tanh(W_i0 x) * W_i1 x).
  No biases anywhere.
- **Embeddings**: one table ``shared`` (V, C) used by encoder and decoder, N(0, 1) init. With a tied lm head
  the decoder output is scaled by C^-0.5 before the (shared) projection, which keeps the logits O(1);
  v1.1 unties the head and drops the rescale.
- **Decoder input** = labels shifted right with ``decoder_start_token_id = pad = 0``.

Decoding (:meth:`T5.generate_greedy`): the encoder runs once; each decoder layer's cross-attention K/V
are computed once from the encoder output (:meth:`T5.start_decoding`); the decoder self-attention keeps a
:class:`dodai.nn.kv_cache.KVCache`, and the relative bias rows are those of the new query positions
(``offset = cache.pos``). ``use_cache=False`` recomputes everything from scratch each step (the oracle).

Module names are dodai's own; :func:`hf_to_dodai` / :func:`dodai_to_hf` translate to and from the HF
state-dict names (``encoder.block.{i}.layer.0.SelfAttention.q.weight`` ...).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.nn.attention import attention_sdpa
from dodai.nn.kv_cache import KVCache
from dodai.nn.relative_bias import RelativePositionBias

FFN_KINDS = ("relu", "gated-gelu")


@dataclass
class T5Config:
    vocab_size: int = 32128  # V, shared by encoder input, decoder input and output
    d_model: int = 512  # C, residual stream width
    d_kv: int = 64  # D, per-head width of q/k/v (inner width H * D)
    d_ff: int = 2048  # F, FFN hidden width
    n_layer: int = 6  # encoder blocks
    n_decoder_layer: int | None = None  # decoder blocks (None: same as n_layer)
    n_head: int = 8  # H
    num_buckets: int = 32  # relative-position buckets per direction pair
    max_distance: int = 128  # distances >= this share the last bucket
    dropout: float = 0.1  # on embeddings, attention probs, FFN hidden, residual branches, final outputs
    eps: float = 1e-6  # RMSNorm epsilon
    ffn: str = "relu"  # "relu" (T5 v1.0) or "gated-gelu" (v1.1)
    tie_word_embeddings: bool = True  # lm head = shared embedding, with the C^-0.5 rescale (v1.0)
    pad_id: int = 0  # padding; also the decoder start token
    eos_id: int = 1  # end of sequence
    decoder_start_id: int = 0  # first decoder input (T5 uses pad)

    def __post_init__(self):
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.ffn not in FFN_KINDS:
            raise DodaiError(f"T5 ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        for f in ("vocab_size", "d_model", "d_kv", "d_ff", "n_layer", "n_decoder_layer", "n_head", "num_buckets",
                  "max_distance"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise DodaiError(f"T5 config {f} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise DodaiError(f"T5 dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> T5Config:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"model_type"})
        if unknown:
            raise DodaiError(f"unknown T5 config key {unknown[0]!r}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_hf(cls, hf: dict) -> T5Config:
        """From an HF T5 ``config.json`` dict (``model_type`` t5). transformers 5 writes
        ``tie_word_embeddings: true`` for every T5 and keeps the real choice in ``scale_decoder_outputs``."""
        tie = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
        pad = hf.get("pad_token_id", 0)
        start = hf.get("decoder_start_token_id")
        return cls(vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
                   n_layer=hf["num_layers"], n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"],
                   n_head=hf["num_heads"], num_buckets=hf.get("relative_attention_num_buckets", 32),
                   max_distance=hf.get("relative_attention_max_distance", 128),
                   dropout=hf.get("dropout_rate", 0.1), eps=hf.get("layer_norm_epsilon", 1e-6),
                   ffn=hf.get("feed_forward_proj", "relu"), tie_word_embeddings=bool(tie),
                   pad_id=pad, eos_id=hf.get("eos_token_id", 1), decoder_start_id=pad if start is None else start)

    def to_hf(self) -> dict:
        """Keyword arguments for ``transformers.T5Config``."""
        return dict(vocab_size=self.vocab_size, d_model=self.d_model, d_kv=self.d_kv, d_ff=self.d_ff,
                    num_layers=self.n_layer, num_decoder_layers=self.n_decoder_layer, num_heads=self.n_head,
                    relative_attention_num_buckets=self.num_buckets, relative_attention_max_distance=self.max_distance,
                    dropout_rate=self.dropout, layer_norm_epsilon=self.eps, feed_forward_proj=self.ffn,
                    tie_word_embeddings=self.tie_word_embeddings, pad_token_id=self.pad_id,
                    eos_token_id=self.eos_id, decoder_start_token_id=self.decoder_start_id)


class RMSNorm(nn.Module):
    """T5's LayerNorm: y = weight * x * rsqrt(mean(x^2) + eps), no centring, no bias.

    The mean square is accumulated in float32 (for half inputs) and multiplied back in x's own precision,
    as Mesh TF / HF T5 do; :class:`dodai.nn.norm.RMSNorm` instead normalises wholly in float32, which in a
    float64 model would cap the agreement with HF at float32 precision.
    """

    def __init__(self, n: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        ms = x.to(torch.float32).pow(2).mean(-1, keepdim=True)  # (..., 1)
        x = x * torch.rsqrt(ms + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class T5Attention(nn.Module):
    """Multi-head attention without biases and without the 1/sqrt(D) scale; self- or cross-attention."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.n_head, self.d_kv = cfg.n_head, cfg.d_kv
        inner = cfg.n_head * cfg.d_kv
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        b, t, _ = x.shape
        return proj(x).view(b, t, self.n_head, self.d_kv).transpose(1, 2)  # (B, t, H*D) -> (B, H, t, D)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None = None,
                causal: bool = False, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                memory: torch.Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C).

        Self-attention: K/V from x (appended to ``cache`` at cache.pos when given). Cross-attention: K/V
        from ``memory`` (B, S, C), or precomputed ``kv`` = (K, V), each (B, H, S, D).
        bias: (1, H, T, S) relative position bias or None; mask: bool broadcastable to (B, H, T, S), True = keep.
        """
        b, t, _ = x.shape
        q = self.heads(x, self.q)  # (B, H, T, D)
        if kv is not None:
            k, v = kv
        else:
            src = x if memory is None else memory
            k, v = self.heads(src, self.k), self.heads(src, self.v)  # (B, H, S, D)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, H, pos + T, D)
        if bias is None:
            bias = torch.zeros(1, 1, t, k.shape[2], dtype=q.dtype, device=q.device)
        p = self.dropout if self.training else 0.0
        y = attention_sdpa(q, k, v, mask=mask, causal=causal, scale=1.0, dropout_p=p, bias=bias)  # (B, H, T, D)
        return self.o(y.transpose(1, 2).reshape(b, t, self.n_head * self.d_kv))


class T5FFN(nn.Module):
    """ReLU (v1.0) or gated-GELU (v1.1) feed-forward, no biases; dropout on the hidden layer."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.gated = cfg.ffn == "gated-gelu"
        if self.gated:
            self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
            self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        else:
            self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.gated:  # HF's "gelu_new" is the tanh approximation
            h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            h = F.relu(self.wi(x))
        return self.wo(self.drop(h))


class T5EncoderLayer(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.attn = T5Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.ffn = T5FFN(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, mask):
        x = x + self.drop(self.attn(self.attn_norm(x), bias, mask=mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class T5DecoderLayer(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.self_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.self_attn = T5Attention(cfg)
        self.cross_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.cross_attn = T5Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.ffn = T5FFN(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, memory, mem_mask, cross_kv=None, cache=None, layer=0):
        x = x + self.drop(self.self_attn(self.self_norm(x), bias, causal=True, cache=cache, layer=layer))
        x = x + self.drop(self.cross_attn(self.cross_norm(x), None, mask=mem_mask, kv=cross_kv, memory=memory))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class T5Stack(nn.Module):
    """Embedding dropout -> layers (bias from the stack's first layer, shared) -> final RMSNorm -> dropout."""

    def __init__(self, cfg: T5Config, decoder: bool):
        super().__init__()
        n = cfg.n_decoder_layer if decoder else cfg.n_layer
        self.decoder = decoder
        self.rel_bias = RelativePositionBias(cfg.n_head, cfg.num_buckets, cfg.max_distance, bidirectional=not decoder)
        layer_cls = T5DecoderLayer if decoder else T5EncoderLayer
        self.layers = nn.ModuleList([layer_cls(cfg) for _ in range(n)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)


def _key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 1/0 padding mask -> bool (B, 1, 1, S), True = a real token that may be attended to."""
    return None if attention_mask is None else attention_mask.bool()[:, None, None, :]


class T5(nn.Module):
    """T5ForConditionalGeneration: ``model(input_ids, labels=...) -> (logits, loss)``."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, decoder=False)
        self.decoder = T5Stack(config, decoder=True)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mesh-TF / HF T5 initialisation (factor 1): the 1/sqrt(D) attention scale lives in W_q's std."""
        c, d, f, h = self.config.d_model, self.config.d_kv, self.config.d_ff, self.config.n_head
        nn.init.normal_(self.shared.weight, std=1.0)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=1.0)
        for m in self.modules():
            if isinstance(m, T5Attention):
                nn.init.normal_(m.q.weight, std=(c * d) ** -0.5)
                nn.init.normal_(m.k.weight, std=c ** -0.5)
                nn.init.normal_(m.v.weight, std=c ** -0.5)
                nn.init.normal_(m.o.weight, std=(h * d) ** -0.5)
            elif isinstance(m, T5FFN):
                for w in ([m.wi_0, m.wi_1] if m.gated else [m.wi]):
                    nn.init.normal_(w.weight, std=c ** -0.5)
                nn.init.normal_(m.wo.weight, std=f ** -0.5)
            elif isinstance(m, RelativePositionBias):
                nn.init.normal_(m.relative_attention_bias.weight, std=c ** -0.5)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ encoder / decoder

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, S) -> encoder output (B, S, C)."""
        if input_ids.dim() != 2:
            raise DodaiError(f"T5 input_ids must be (B, S), got shape {tuple(input_ids.shape)}")
        enc = self.encoder
        x = enc.drop(self.shared(input_ids))  # (B, S, C)
        s = x.shape[1]
        bias = enc.rel_bias(s, s)  # (1, H, S, S), computed once, shared by every encoder layer
        mask = _key_mask(attention_mask)
        for layer in enc.layers:
            x = layer(x, bias, mask)
        return enc.drop(enc.final_norm(x))

    def start_decoding(self, memory: torch.Tensor, max_len: int) -> tuple[KVCache, list]:
        """A self-attention KV cache for max_len decoder positions and each layer's cross K/V (B, H, S, D)."""
        b = memory.shape[0]
        cache = KVCache(self.config.n_decoder_layer, b, self.config.n_head, max_len, self.config.d_kv,
                        dtype=memory.dtype, device=memory.device)
        cross = [(lay.cross_attn.heads(memory, lay.cross_attn.k), lay.cross_attn.heads(memory, lay.cross_attn.v))
                 for lay in self.decoder.layers]
        return cache, cross

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor,
               memory_mask: torch.Tensor | None = None, cache: KVCache | None = None,
               cross_kv: list | None = None) -> torch.Tensor:
        """Decoder ids (B, T) at positions cache.pos.. (0 without a cache) -> logits (B, T, V)."""
        dec = self.decoder
        x = dec.drop(self.shared(decoder_input_ids))  # (B, T, C)
        t = x.shape[1]
        offset = 0 if cache is None else cache.pos
        bias = dec.rel_bias(t, offset + t, offset=offset)  # (1, H, T, pos + T): the rows of the new positions
        mask = _key_mask(memory_mask)
        for i, layer in enumerate(dec.layers):
            x = layer(x, bias, memory, mask, cross_kv=None if cross_kv is None else cross_kv[i], cache=cache, layer=i)
        if cache is not None:
            cache.advance(t)
        x = dec.drop(dec.final_norm(x))
        if self.lm_head is None:
            return F.linear(x * self.config.d_model ** -0.5, self.shared.weight)  # tied: rescale, then project
        return self.lm_head(x)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs: [start, y_0 .. y_{T-2}], ignored labels (-100) replaced by pad."""
        out = labels.new_full(labels.shape, self.config.pad_id)
        out[:, 0] = self.config.decoder_start_id
        out[:, 1:] = labels[:, :-1]
        return out.masked_fill(out == -100, self.config.pad_id)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None):
        """-> (logits (B, T, V), mean cross-entropy over labels != -100, or None)."""
        if decoder_input_ids is None:
            if labels is None:
                raise DodaiError("T5 forward needs decoder_input_ids or labels")
            decoder_input_ids = self.shift_right(labels)
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(decoder_input_ids, memory, attention_mask)
        loss = None
        if labels is not None:
            lf = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits  # fp32 or better
            loss = F.cross_entropy(lf.reshape(-1, lf.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return logits, loss

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate_greedy(self, input_ids: torch.Tensor, max_new_tokens: int,
                        attention_mask: torch.Tensor | None = None, use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding -> (B, 1 + n) ids: the start token, then the argmax tokens; a row that has emitted
        EOS is padded with pad afterwards (the layout of HF ``generate``). Stops when every row is done."""
        if max_new_tokens < 1:
            raise DodaiError("max_new_tokens must be >= 1")
        memory = self.encode(input_ids, attention_mask)
        b = input_ids.shape[0]
        out = torch.full((b, 1), self.config.decoder_start_id, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
        cache, cross = self.start_decoding(memory, max_new_tokens + 1) if use_cache else (None, None)
        for _ in range(max_new_tokens):
            if use_cache:
                logits = self.decode(out[:, -1:], memory, attention_mask, cache=cache, cross_kv=cross)
            else:  # the oracle: the whole prefix again, no cache
                logits = self.decode(out, memory, attention_mask)
            nxt = logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, self.config.pad_id), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == self.config.eos_id
            if bool(done.all()):
                break
        return out

    # ------------------------------------------------------------------ HF names, save / load

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Load an HF T5ForConditionalGeneration state dict (strict: every tensor of this model)."""
        mine = hf_to_dodai(sd, self.config)
        expected = self.state_dict()
        missing = sorted(set(expected) - set(mine))
        if missing:
            raise DodaiError(f"T5 state dict lacks {missing[0]!r} ({len(missing)} missing)")
        for k, v in mine.items():
            if k not in expected:
                raise DodaiError(f"T5 state dict has unexpected tensor {k!r}")
            if tuple(v.shape) != tuple(expected[k].shape):
                raise DodaiError(f"T5 tensor {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        self.load_state_dict(mine)

    def save(self, out_dir: str | Path) -> None:
        """Write ``model.safetensors`` (dodai names) + ``config.json`` (``"model_type": "t5"``)."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt", "model_type": "t5"})
        atomic_write_json(out / "config.json", {"model_type": "t5", **self.config.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> T5:
        from dodai.weights.safetensors import load_file

        folder = Path(path)
        cfg = read_user_json(folder / "config.json", what="model config")
        if not isinstance(cfg, dict) or cfg.get("model_type") != "t5":
            raise DodaiError(f"{folder}: config.json is not a dodai T5 config")
        model = cls(T5Config.from_dict(cfg))
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(load_file(folder / "model.safetensors", expected=shapes))
        return model


# ---------------------------------------------------------------------- HF state-dict names

# (dodai regex, HF template) for the per-layer tensors; {i} is the layer index.
_ENC = [(r"attn_norm", "layer.0.layer_norm"), (r"attn\.(q|k|v|o)", "layer.0.SelfAttention.{0}"),
        (r"ffn_norm", "layer.1.layer_norm"), (r"ffn\.(wi|wi_0|wi_1|wo)", "layer.1.DenseReluDense.{0}")]
_DEC = [(r"self_norm", "layer.0.layer_norm"), (r"self_attn\.(q|k|v|o)", "layer.0.SelfAttention.{0}"),
        (r"cross_norm", "layer.1.layer_norm"), (r"cross_attn\.(q|k|v|o)", "layer.1.EncDecAttention.{0}"),
        (r"ffn_norm", "layer.2.layer_norm"), (r"ffn\.(wi|wi_0|wi_1|wo)", "layer.2.DenseReluDense.{0}")]


def _dodai_key_to_hf(key: str) -> str:
    if key in ("shared.weight", "lm_head.weight"):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.rel_bias\.relative_attention_bias\.weight", key)
    if m:
        return f"{m[1]}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    m = re.fullmatch(r"(encoder|decoder)\.final_norm\.weight", key)
    if m:
        return f"{m[1]}.final_layer_norm.weight"
    m = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.weight", key)
    if m:
        for pat, tmpl in (_ENC if m[1] == "encoder" else _DEC):
            sub = re.fullmatch(pat, m[3])
            if sub:
                return f"{m[1]}.block.{m[2]}.{tmpl.format(*sub.groups())}.weight"
    raise DodaiError(f"no HF name for T5 tensor {key!r}")


def dodai_to_hf(sd: dict[str, torch.Tensor], config: T5Config) -> dict[str, torch.Tensor]:
    """dodai T5 state dict -> HF T5ForConditionalGeneration names (with HF's tied copies filled in)."""
    out = {_dodai_key_to_hf(k): v for k, v in sd.items()}
    out["encoder.embed_tokens.weight"] = out["decoder.embed_tokens.weight"] = out["shared.weight"]
    if config.tie_word_embeddings:
        out["lm_head.weight"] = out["shared.weight"]
    return out


def hf_to_dodai(sd: dict[str, torch.Tensor], config: T5Config) -> dict[str, torch.Tensor]:
    """HF names -> dodai names; HF's tied copies (embed_tokens, tied lm_head) are dropped."""
    names = {}
    for k in _dodai_keys(config):
        names[_dodai_key_to_hf(k)] = k
    out = {}
    for k, v in sd.items():
        if k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        if k == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if k not in names:
            raise DodaiError(f"unexpected HF T5 tensor {k!r}")
        out[names[k]] = v
    return out


def _dodai_keys(config: T5Config) -> list[str]:
    """Every parameter name of a dodai T5 with this config (without building the model)."""
    ffn = ["ffn.wi_0", "ffn.wi_1", "ffn.wo"] if config.ffn == "gated-gelu" else ["ffn.wi", "ffn.wo"]
    keys = ["shared.weight"] + ([] if config.tie_word_embeddings else ["lm_head.weight"])
    for stack, n, parts in (("encoder", config.n_layer, ["attn_norm"] + [f"attn.{p}" for p in "qkvo"] + ["ffn_norm"]),
                            ("decoder", config.n_decoder_layer,
                             ["self_norm"] + [f"self_attn.{p}" for p in "qkvo"] + ["cross_norm"]
                             + [f"cross_attn.{p}" for p in "qkvo"] + ["ffn_norm"])):
        keys += [f"{stack}.rel_bias.relative_attention_bias.weight", f"{stack}.final_norm.weight"]
        keys += [f"{stack}.layers.{i}.{p}.weight" for i in range(n) for p in parts + ffn]
    return keys
