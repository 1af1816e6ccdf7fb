"""BERT: a bidirectional Transformer encoder (Devlin et al. 2019), and sentence embeddings on top.

Notation: B batch, T tokens, C hidden size, H heads, D = C / H head dim, F feed-forward size.

Architecture, as in the paper and HF ``BertModel``:

    x = LayerNorm(E_word[ids] + E_pos[0..T-1] + E_type[token_type_ids])        # absolute positions
    for each layer:                                                              # post-LN (the original
        x = LayerNorm(x + W_o · Attention(x, padding mask))                      #  Transformer, Vaswani
        x = LayerNorm(x + W_2 · GELU(W_1 · x))                                   #  et al. 2017)
    pooled = tanh(W_p · x[:, 0])                                                 # optional pooler

Attention is softmax(Q Kᵀ / √D + mask) V with an additive padding mask over the keys only (every
query attends to all real tokens; padded query rows are computed and ignored). GELU is the exact
erf form, x·Φ(x) (Hendrycks & Gimpel 2016), as BERT's ``"gelu"``.

The fast path fuses Q, K and V into one (3C × C) matmul and calls ``scaled_dot_product_attention``;
:func:`attention_reference` is the plain eager formula, kept as the oracle for tests.

Sentence embeddings (Reimers & Gurevych 2019, Sentence-BERT): mean of the last hidden states over the
real tokens, then L2 normalisation — what all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; fine-tuned by
sentence-transformers) expects. :class:`SentenceEncoder` sorts texts by length so that each batch has
little padding, and restores the caller's order.

Weights use HF's names (``embeddings.word_embeddings.weight``, ``encoder.layer.{i}.attention.self.query.weight``
…, see :func:`hf_names`); dodai's module names are shorter and are mapped at load/save time.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dodai.errors import DodaiError
from dodai.io import read_user_json

# HF config.json keys that do not change the forward pass of an inference-mode encoder.
_IGNORED_HF_KEYS = {
    "_name_or_path", "architectures", "attention_probs_dropout_prob", "hidden_dropout_prob",
    "gradient_checkpointing", "initializer_range", "model_type", "transformers_version", "use_cache",
    "torch_dtype", "dtype", "classifier_dropout", "chunk_size_feed_forward", "output_attentions",
    "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type", "bos_token_id",
    "eos_token_id", "tie_word_embeddings", "tokenizer_class", "is_decoder", "add_cross_attention",
    "position_embedding_type", "directionality", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "finetuning_task",
}

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact erf form, BERT's default
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class BertConfig:
    vocab_size: int = 30522  # WordPiece vocabulary size
    hidden_size: int = 384  # C
    num_hidden_layers: int = 6  # encoder layers
    num_attention_heads: int = 12  # H; D = C / H
    intermediate_size: int = 1536  # F, the feed-forward width
    max_position_embeddings: int = 512  # longest input (learned absolute positions)
    type_vocab_size: int = 2  # segment A / B embeddings
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon
    hidden_act: str = "gelu"  # "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh approx.), "relu"
    pad_token_id: int = 0  # id of [PAD]
    add_pooler: bool = True  # tanh(W_p · h_[CLS]), used by next-sentence prediction and classifiers

    def __post_init__(self):
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, f)
            if type(v) is not int or v < 1:
                raise DodaiError(f"BertConfig.{f} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise DodaiError(f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise DodaiError(f"BertConfig: unsupported hidden_act {self.hidden_act!r} "
                             f"(dodai supports {', '.join(_ACTIVATIONS)})")
        if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
            raise DodaiError(f"BertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, cfg: dict, add_pooler: bool = True) -> BertConfig:
        """From an HF ``config.json`` dict; anything dodai's BERT cannot honour is a DodaiError."""
        if not isinstance(cfg, dict):
            raise DodaiError("BERT config.json must be a JSON object")
        if cfg.get("model_type", "bert") != "bert":
            raise DodaiError(f"config.json model_type is {cfg.get('model_type')!r}, not 'bert'")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise DodaiError(f"unsupported position_embedding_type {cfg['position_embedding_type']!r} "
                             "(dodai's BERT has absolute positions)")
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise DodaiError("a decoder/cross-attention BERT is not supported (dodai's BERT is an encoder)")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names - _IGNORED_HF_KEYS)
        if unknown:
            raise DodaiError(f"config.json has unsupported BERT setting {unknown[0]!r}")
        kw = {k: v for k, v in cfg.items() if k in names}
        kw.setdefault("add_pooler", add_pooler)
        return cls(**kw)

    def to_hf(self) -> dict:
        d = asdict(self)
        d.pop("add_pooler")
        return {"architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute", **d}


def hf_names(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name → shape for a BertModel with this config (what a checkpoint must hold)."""
    C, F_, V = config.hidden_size, config.intermediate_size, config.vocab_size
    out = {
        "embeddings.word_embeddings.weight": (V, C),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, C),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, C),
        "embeddings.LayerNorm.weight": (C,), "embeddings.LayerNorm.bias": (C,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            out[p + f"attention.self.{m}.weight"] = (C, C)
            out[p + f"attention.self.{m}.bias"] = (C,)
        out.update({
            p + "attention.output.dense.weight": (C, C), p + "attention.output.dense.bias": (C,),
            p + "attention.output.LayerNorm.weight": (C,), p + "attention.output.LayerNorm.bias": (C,),
            p + "intermediate.dense.weight": (F_, C), p + "intermediate.dense.bias": (F_,),
            p + "output.dense.weight": (C, F_), p + "output.dense.bias": (C,),
            p + "output.LayerNorm.weight": (C,), p + "output.LayerNorm.bias": (C,),
        })
    if config.add_pooler:
        out["pooler.dense.weight"] = (C, C)
        out["pooler.dense.bias"] = (C,)
    return out


# (dodai suffix, HF suffix) inside one layer; q/k/v are fused into `qkv` (see _layer_from_hf).
_LAYER_MAP = [
    ("attn_out.weight", "attention.output.dense.weight"), ("attn_out.bias", "attention.output.dense.bias"),
    ("attn_norm.weight", "attention.output.LayerNorm.weight"), ("attn_norm.bias", "attention.output.LayerNorm.bias"),
    ("ffn_in.weight", "intermediate.dense.weight"), ("ffn_in.bias", "intermediate.dense.bias"),
    ("ffn_out.weight", "output.dense.weight"), ("ffn_out.bias", "output.dense.bias"),
    ("ffn_norm.weight", "output.LayerNorm.weight"), ("ffn_norm.bias", "output.LayerNorm.bias"),
]
_TOP_MAP = [
    ("tok_emb.weight", "embeddings.word_embeddings.weight"),
    ("pos_emb.weight", "embeddings.position_embeddings.weight"),
    ("type_emb.weight", "embeddings.token_type_embeddings.weight"),
    ("emb_norm.weight", "embeddings.LayerNorm.weight"), ("emb_norm.bias", "embeddings.LayerNorm.bias"),
    ("pooler.weight", "pooler.dense.weight"), ("pooler.bias", "pooler.dense.bias"),
]


def attention_reference(q, k, v, key_mask=None):
    """Eager scaled dot-product attention, the oracle. q, k, v (B, H, T, D); key_mask (B, T) bool,
    True for real tokens. Returns (B, H, T, D)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class BertLayer(nn.Module):
    """One post-LN encoder layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.n_head, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv = nn.Linear(C, 3 * C)  # Q, K, V stacked on the output dim (fused: one matmul)
        self.attn_out = nn.Linear(C, C)
        self.attn_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(C, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, C)
        self.ffn_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.use_reference_attention = False  # tests flip this to check SDPA against the eager formula

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, sdpa_mask: torch.Tensor | None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3×(B, H, T, D)
        if self.use_reference_attention:
            y = attention_reference(q, k, v, key_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        x = self.attn_norm(x + self.attn_out(y))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertModel(nn.Module):
    """The encoder. ``forward(input_ids, attention_mask=None, token_type_ids=None)`` →
    (last hidden states (B, T, C), pooled (B, C) or None)."""

    def __init__(self, config: BertConfig, init_weights: bool = True):
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.tok_emb = nn.Embedding(config.vocab_size, C)
        self.pos_emb = nn.Embedding(config.max_position_embeddings, C)
        self.type_emb = nn.Embedding(config.type_vocab_size, C)
        self.emb_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(C, C) if config.add_pooler else None
        if init_weights:  # skipped when pretrained weights will overwrite everything anyway
            self.apply(self._init)

    @staticmethod
    def _init(m):
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None):
        if input_ids.dim() != 2:
            raise DodaiError(f"BertModel expects input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise DodaiError(f"input of {T} tokens exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.tok_emb(input_ids) + self.pos_emb(pos)[None]  # (B, T, C)
        x = x + (self.type_emb(token_type_ids) if token_type_ids is not None else self.type_emb.weight[0])
        x = self.emb_norm(x)
        key_mask = sdpa_mask = None
        if attention_mask is not None:
            key_mask = attention_mask.bool()  # (B, T)
            if not bool(key_mask.all()):  # no padding → no mask, and SDPA may take its fused kernel
                sdpa_mask = key_mask[:, None, None, :]  # (B, 1, 1, T), broadcast over heads and queries
            else:
                key_mask = None
        for layer in self.layers:
            x = layer(x, key_mask, sdpa_mask)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return x, pooled

    # -- HF weights --------------------------------------------------------------------------------

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor], assign: bool = False) -> None:
        """Copy an HF-named state dict (exactly the names of :func:`hf_names`) into this model
        (``assign=True`` adopts the tensors instead, for a model built on the meta device)."""
        from dodai.weights.safetensors import check_shapes

        check_shapes("BERT state dict", {k: list(v.shape) for k, v in sd.items()}, hf_names(self.config))
        own = {}
        for ours, theirs in _TOP_MAP:
            if theirs in sd:
                own[ours] = sd[theirs]
        for i in range(self.config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for ours, theirs in _LAYER_MAP:
                own[f"layers.{i}.{ours}"] = sd[p + theirs]
            for part in ("weight", "bias"):
                own[f"layers.{i}.qkv.{part}"] = torch.cat(
                    [sd[p + f"attention.self.{m}.{part}"] for m in ("query", "key", "value")], dim=0)
        self.load_state_dict(own, strict=True, assign=assign)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under HF's names (the inverse of :meth:`load_hf_state_dict`)."""
        sd = self.state_dict()
        out = {theirs: sd[ours] for ours, theirs in _TOP_MAP if ours in sd}
        for i in range(self.config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for ours, theirs in _LAYER_MAP:
                out[p + theirs] = sd[f"layers.{i}.{ours}"]
            for part in ("weight", "bias"):
                q, k, v = sd[f"layers.{i}.qkv.{part}"].chunk(3, dim=0)
                out.update({p + f"attention.self.query.{part}": q, p + f"attention.self.key.{part}": k,
                            p + f"attention.self.value.{part}": v})
        return out

    def save(self, folder: str | os.PathLike) -> None:
        """``model.safetensors`` (HF names) + ``config.json`` (HF format) in ``folder``."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.hf_state_dict().items()}, d / "model.safetensors",
                  metadata={"format": "pt"})
        atomic_write_json(d / "config.json", self.config.to_hf())

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> BertModel:
        """Load ``config.json`` + ``model.safetensors`` (HF BertModel names; a ``bert.`` prefix, the
        legacy ``embeddings.position_ids`` buffer and a missing pooler are accepted)."""
        from dodai.weights.safetensors import load_file, read_header

        d = Path(folder)
        cfg = _read_json(d / "config.json")
        path = d / "model.safetensors"
        header, _, _ = read_header(path)
        prefix = "bert." if any(k.startswith("bert.embeddings.") for k in header) else ""
        config = BertConfig.from_hf(cfg, add_pooler=f"{prefix}pooler.dense.weight" in header)
        expected = {prefix + k: v for k, v in hf_names(config).items()}
        extra = {}
        for k, info in header.items():  # legacy buffer: the positions 0..max-1, recomputed on the fly
            if k == f"{prefix}embeddings.position_ids":
                extra[k] = tuple(info["shape"])
        if prefix:  # a pre-training checkpoint also carries heads (cls.*); they are not part of BertModel
            extra.update({k: tuple(i["shape"]) for k, i in header.items() if k.startswith("cls.")})
        sd = load_file(path, expected={**expected, **extra})
        model = cls(config, init_weights=False)
        model.load_hf_state_dict({k[len(prefix):]: sd[k] for k in expected}, assign=True)
        return model.eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, C) over the real tokens of ``attention_mask`` (B, T) → (B, C)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class SentenceEncoder:
    """Text → one vector per text: tokenizer → BertModel → pooling (mean or [CLS]) → L2 normalisation."""

    def __init__(self, tokenizer, model: BertModel, max_seq_length: int = 256, pooling: str = "mean",
                 normalize: bool = True, lowercase_input: bool = False):
        if pooling not in ("mean", "cls"):
            raise DodaiError(f"unsupported pooling {pooling!r} (dodai supports mean and cls)")
        self.tokenizer, self.model = tokenizer, model.eval()
        self.max_seq_length = min(max_seq_length, model.config.max_position_embeddings)
        self.pooling, self.normalize, self.lowercase_input = pooling, normalize, lowercase_input

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Embeddings (N, C) in the order of ``texts``, each truncated to ``max_seq_length`` tokens."""
        if isinstance(texts, str):
            texts = [texts]
        if batch_size < 1:
            raise DodaiError(f"batch size must be positive, got {batch_size}")
        tok = self.tokenizer
        rows = [tok.encode(t.lower() if self.lowercase_input else t, max_length=self.max_seq_length)
                for t in texts]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # longest first: little padding
        out = torch.empty(len(rows), self.dim)
        device = next(self.model.parameters()).device
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", unit="batch")
        with torch.inference_mode():
            for s in starts:
                idx = order[s:s + batch_size]
                batch = tok.pad([rows[i] for i in idx])
                ids = torch.tensor(batch.input_ids, device=device)
                mask = torch.tensor(batch.attention_mask, device=device)
                hidden, _ = self.model(ids, attention_mask=mask)
                v = mean_pool(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
                if self.normalize:
                    v = F.normalize(v, p=2, dim=-1)
                out[torch.tensor(idx)] = v.float().cpu()
        return out


def _read_json(path: Path) -> dict:
    try:
        return read_user_json(path)
    except FileNotFoundError:
        raise DodaiError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DodaiError(f"{path}: not valid JSON ({type(e).__name__})") from None


def load_sentence_encoder(spec: str | os.PathLike) -> SentenceEncoder:
    """A sentence-transformers folder (or registry name such as ``all-minilm-l6-v2``) → SentenceEncoder.

    Reads config.json + model.safetensors (BERT), tokenizer.json or vocab.txt, sentence_bert_config.json
    (max_seq_length, do_lower_case), modules.json (is there a Normalize module?) and the pooling
    module's config (mean or CLS pooling).
    """
    from dodai.tokenizers.wordpiece import WordPieceTokenizer
    from dodai.weights.registry import resolve

    d = Path(resolve(str(spec)))
    if not d.is_dir():
        raise DodaiError(f"{d}: a sentence encoder is a folder (config.json, model.safetensors, tokenizer)")
    model = BertModel.from_folder(d)
    tokenizer = WordPieceTokenizer.load(d)
    max_len, lower = 512, False
    if (d / "sentence_bert_config.json").is_file():
        sb = _read_json(d / "sentence_bert_config.json")
        max_len, lower = int(sb.get("max_seq_length", max_len)), bool(sb.get("do_lower_case", False))
    pooling, normalize = "mean", False
    if (d / "modules.json").is_file():
        mods = _read_json(d / "modules.json")
        if not isinstance(mods, list):
            raise DodaiError(f"{d / 'modules.json'}: expected a JSON list of modules")
        for m in mods:
            kind = str(m.get("type", "")) if isinstance(m, dict) else ""
            if kind.endswith(".Normalize"):
                normalize = True
            elif kind.endswith(".Pooling"):
                pc = _read_json(d / str(m.get("path", "")) / "config.json")
                if pc.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif not pc.get("pooling_mode_mean_tokens", True) or any(
                        pc.get(k) for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")):
                    raise DodaiError(f"{d}: unsupported pooling mode (dodai supports mean and cls)")
            elif not kind.endswith(".Transformer"):
                raise DodaiError(f"{d}: unsupported sentence-transformers module {kind!r}")
    return SentenceEncoder(tokenizer, model, max_seq_length=max_len, pooling=pooling, normalize=normalize,
                           lowercase_input=lower)
