"""A small vision-language model: ViT patch encoder + MLP projector + GPT decoder (R9.2).

Notation: B batch, Ch image channels, S image side (pixels), P patch side, N = (S / P)^2 patches (image
tokens), W vision width, C LM width, T text tokens, V vocabulary.

    patches = patchify(image)                         (B, N, P*P*Ch)   row-major patches, (row, col, ch) inside
    z = patches W_e + pos                             (B, N, W)        linear patch embedding + learned 1-D
                                                                        positions (ViT, Dosovitskiy et al. 2021)
      or z = ConvStem(image) + pos                    (B, N, W)        ``stem="conv"``: 3x3 convolutions down to
                                                                        the same P-pixel grid (hybrid ViT)
    z = ViT blocks(z), pre-LN, bidirectional          (B, N, W)        every patch sees every patch
    u = W_2 GELU(W_1 LN(z))                           (B, N, C)        the projector (LLaVA-1.5's 2-layer MLP,
                                                                        Liu et al. 2023)
    x = [u ; wte(text)] + wpe[0 .. N+T-1]             (B, N+T, C)      image tokens prepended to the text
    logits = GPT blocks(x) -> ln_f -> lm_head, text positions only      (B, T, V)

The decoder is a plain causal :class:`dodai.models.gpt.GPT` (its modules are reused as they are; only the
input is built here, from embeddings instead of ids). Because the image tokens come first, the causal
mask lets every text token attend to all N image tokens (and image tokens to earlier image tokens only,
as in LLaVA). The loss is the cross-entropy on caption tokens only: image positions get no target, and
padding targets are -100 (see :func:`dodai.data.digit_scenes.caption_batch`).

Training (:func:`fit`) is the caption loss through :func:`dodai.train.fit.fit`; :func:`pretrain_vision` is an
optional first stage that trains the vision encoder alone as a dense digit tagger on training scenes (as VLMs
start from a pre-trained vision encoder), also through :func:`dodai.train.fit.fit`. ``fit(...,
train_vision=False)`` then keeps that encoder frozen (as LLaVA keeps CLIP's). :func:`train_recipe` runs both
stages with R9.2's settings (:data:`dodai.models.vlm_recipe.RECIPE`), for the experiment and ``dodai vlm train``.

Decoding: :class:`ImagePrefixedLM` wraps a VLM and a batch of images into dodai's causal-LM protocol
(``config.block_size``, ``new_cache``, ``model(idx, cache=...)``), so dodai's KV-cache engine
(:func:`dodai.generate.engine.complete`) decodes captions: the prefill writes the N image tokens and
``<bos>`` into the cache, then each step feeds one token. With ``use_cache=False`` the engine re-runs the
whole sequence each step (the reference the cached path is tested against).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dodai.data.digit_scenes import NO_DIGIT
from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.vlm_recipe import RECIPE
from dodai.nn.attention import attention_reference, attention_sdpa
from dodai.nn.ffn import MLP
from dodai.nn.kv_cache import KVCache
from dodai.nn.norm import LayerNorm

LM_POSITIONS = ("learned", "sinusoidal", "rope", "none")  # the GPT position schemes the prefix path supports
STEMS = ("linear", "conv")  # how pixels become the ViT's N tokens


@dataclass
class VLMConfig:
    image_size: int = 24  # S, square input images (pixels)
    patch_size: int = 4  # P, square patches; S must be a multiple of P
    channels: int = 1  # Ch, image channels
    vit_width: int = 64  # W, vision Transformer width
    vit_layers: int = 2  # vision Transformer blocks
    vit_heads: int = 4  # vision attention heads (W divisible by it)
    stem: str = "linear"  # "linear": ViT's patch embedding; "conv": a convolutional stem (see ConvStem)
    stem_width: int = 32  # channels of the convolutional stem (stem="conv" only)
    lm: GPTConfig = field(default_factory=GPTConfig)  # the decoder; block_size must hold N + caption tokens

    def __post_init__(self):
        if isinstance(self.lm, dict):
            self.lm = GPTConfig.from_dict(self.lm)
        for name in ("image_size", "patch_size", "channels", "vit_width", "vit_layers", "vit_heads", "stem_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DodaiError(f"VLMConfig.{name} must be a positive integer, got {v!r}")
        if self.image_size % self.patch_size:
            raise DodaiError(f"VLMConfig: image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.stem not in STEMS:
            raise DodaiError(f"VLMConfig.stem must be one of {STEMS}, got {self.stem!r}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise DodaiError(f"VLMConfig: the conv stem needs a power-of-two patch_size, got {self.patch_size}")
        if self.vit_width % self.vit_heads:
            raise DodaiError(f"VLMConfig: vit_width {self.vit_width} is not divisible by vit_heads {self.vit_heads}")
        if self.lm.pos_encoding not in LM_POSITIONS:
            raise DodaiError(f"VLMConfig: the LM's pos_encoding must be one of {LM_POSITIONS}")
        if self.lm.block_size <= self.n_patches:
            raise DodaiError(f"VLMConfig: LM block_size {self.lm.block_size} leaves no room for text after "
                             f"{self.n_patches} image tokens")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VLMConfig:
        if not isinstance(d, dict) or not isinstance(d.get("lm"), dict):
            raise DodaiError("VLM config must be a JSON object with an 'lm' object")
        d = {k: v for k, v in d.items() if k not in ("model_type", "words")}
        try:
            return cls(**d)
        except TypeError as e:
            raise DodaiError(f"VLM config: {e}") from None


# ----------------------------------------------------------------------------------------------- vision
def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, Ch, S, S) -> (B, N, P*P*Ch): patches in row-major order, each flattened as (row, col, channel)."""
    b, ch, h, w = images.shape
    if h % p or w % p:
        raise DodaiError(f"image {h}x{w} is not divisible into {p}x{p} patches")
    x = images.reshape(b, ch, h // p, p, w // p, p)  # (B, Ch, S/P, P, S/P, P)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, S/P, S/P, P, P, Ch): patch grid first, then pixels inside a patch
    return x.reshape(b, (h // p) * (w // p), p * p * ch)  # (B, N, P*P*Ch)


class EncoderAttention(nn.Module):
    """Bidirectional multi-head self-attention (no mask): every patch attends to every patch."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, width // n_head
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.keep_weights = False  # True: use the explicit softmax and keep the last map (for plots)
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, W) -> (B, N, W)
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, D)
        if self.keep_weights:
            y, self.last_weights = attention_reference(q, k, v, return_weights=True)
        else:
            y = attention_sdpa(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))  # (B, H, N, D) -> (B, N, H, D) -> (B, N, W)


class EncoderBlock(nn.Module):
    """Pre-LN Transformer encoder block (ViT): x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = EncoderAttention(width, n_head)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width, 4 * width, activation="gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ConvStem(nn.Module):
    """A convolutional stem in place of the linear patch embedding (the "hybrid" ViT of Dosovitskiy et al.
    2021; Xiao et al. 2021, "Early Convolutions Help Transformers See Better"). (B, Ch, S, S) -> (B, N, W):

        h = GELU(conv3x3(image))                                   (B, c, S, S)
        log2(P) times:  h = GELU(conv3x3(GELU(conv3x3_stride2(h))))  halves the side each time
        tokens = conv1x1(h) -> (B, W, S/P, S/P) -> row-major      (B, N, W), the same grid as P x P patches

    The shared 3x3 filters make the features translation-equivariant, and each token's receptive field
    (3, 5, 9, 13, 21, ... pixels after each conv) covers a whole 8x8 scan around its cell, so a digit is
    recognised wherever it lies; a linear patch embedding must learn each digit's pieces at every offset
    separately. P must be a power of two."""

    def __init__(self, channels: int, width: int, patch: int, out: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.GELU()]
        side = 1
        while side < patch:
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
            side *= 2
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(width, out, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal weights, zero biases (He et al. 2015). PyTorch's default conv init shrinks the
        signal by about 1/sqrt(3) per layer, so after seven of them every image gives nearly the same tokens
        (the biases dominate) and the digits are not learned in any reasonable number of steps."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, Ch, S, S) -> (B, N, W)
        h = self.proj(self.convs(images))  # (B, W, S/P, S/P)
        return h.flatten(2).transpose(1, 2)  # (B, N, W), row-major over the grid as patchify


class ViTEncoder(nn.Module):
    """Patch embedding (or :class:`ConvStem`) + learned 1-D positions + pre-LN blocks + final LayerNorm; no
    [CLS] token (the LM reads every patch, as LLaVA does)."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        if cfg.stem == "conv":
            self.patch_embed = ConvStem(cfg.channels, cfg.stem_width, cfg.patch_size, cfg.vit_width)
        else:
            self.patch_embed = nn.Linear(cfg.patch_size * cfg.patch_size * cfg.channels, cfg.vit_width)
        self.pos = nn.Parameter(torch.zeros(cfg.n_patches, cfg.vit_width))
        self.blocks = nn.ModuleList([EncoderBlock(cfg.vit_width, cfg.vit_heads) for _ in range(cfg.vit_layers)])
        self.ln_f = LayerNorm(cfg.vit_width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, Ch, S, S) -> (B, N, W)
        if isinstance(self.patch_embed, ConvStem):
            z = self.patch_embed(images) + self.pos
        else:
            z = self.patch_embed(patchify(images, self.patch_size)) + self.pos
        for blk in self.blocks:
            z = blk(z)
        return self.ln_f(z)


class Projector(nn.Module):
    """LLaVA-1.5's projector: LayerNorm-free 2-layer MLP from the vision width W to the LM width C."""

    def __init__(self, w: int, c: int):
        super().__init__()
        self.fc1 = nn.Linear(w, c)
        self.fc2 = nn.Linear(c, c)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, N, W) -> (B, N, C)
        return self.fc2(F.gelu(self.fc1(z)))


# ----------------------------------------------------------------------------------------------- the VLM
class VLM(nn.Module):
    def __init__(self, config: VLMConfig):
        super().__init__()
        self.config = config
        self.vision = ViTEncoder(config)
        self.projector = Projector(config.vit_width, config.lm.n_embd)
        self.lm = GPT(config.lm)
        for m in (self.vision, self.projector):
            m.apply(GPT._init_weights)  # N(0, 0.02) as in the decoder
        nn.init.normal_(self.vision.pos, std=0.02)

    def image_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Ch, S, S) float -> (B, N, C): the image tokens, in the LM's embedding space."""
        cfg = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise DodaiError(f"images must be (B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}), "
                             f"got {tuple(images.shape)}")
        return self.projector(self.vision(images))

    def forward(self, images: torch.Tensor | None, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None):
        """images (B, Ch, S, S) or None, idx (B, T) text ids -> logits (B, T, V) at the text positions, loss.

        ``images=None`` runs the decoder on text alone (the text-only baseline, and decoding steps after
        the prefix is in the cache). ``targets`` (B, T): next-token ids for the text positions, -100 = none.
        """
        lm = self.lm
        tok = lm.transformer.wte(idx)  # (B, T, C)
        x = tok if images is None else torch.cat([self.image_prefix(images).to(tok.dtype), tok], dim=1)
        n_img = x.shape[1] - idx.shape[1]
        x = self._decode(x, cache)[:, n_img:]  # (B, T, C): the text positions
        logits = lm.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def _decode(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """GPT's forward from input embeddings: positions, blocks (with the cache), ln_f. (B, T, C) -> same."""
        lm, cfg = self.lm, self.config.lm
        t = x.shape[1]
        pos0 = cache.pos if cache is not None else 0
        if pos0 + t > cfg.block_size:
            raise DodaiError(f"sequence of {pos0 + t} tokens exceeds the context window "
                             f"(block_size {cfg.block_size})")
        rope = None
        if cfg.pos_encoding == "learned":
            x = x + lm.transformer.wpe(torch.arange(pos0, pos0 + t, device=x.device))
        elif cfg.pos_encoding == "sinusoidal":
            x = x + lm.pos_table[pos0:pos0 + t].to(x.dtype)
        elif cfg.pos_encoding == "rope":
            rope = (lm.rope_cos[pos0:pos0 + t].to(x.dtype), lm.rope_sin[pos0:pos0 + t].to(x.dtype))
        x = lm.transformer.drop(x)
        for i, block in enumerate(lm.transformer.h):
            x = block(x, rope=rope, cache=cache, layer=i)
        if cache is not None:
            cache.advance(t)
        return lm.transformer.ln_f(x)

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        return self.lm.new_cache(batch, max_len, dtype)

    # ------------------------------------------------------------------------------------------- files
    def save(self, out_dir: str | Path, words: list[str] | None = None) -> None:
        """``model.safetensors`` + ``config.json`` (``"model_type": "vlm"``, and the vocabulary ``words``)."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict()
        tensors = {k: v for k, v in sd.items() if k in self.expected_shapes()}
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt", "model_type": "vlm"})
        meta = {"model_type": "vlm", **self.config.to_dict()}
        if words is not None:
            meta["words"] = list(words)
        atomic_write_json(out / "config.json", meta)

    def expected_shapes(self) -> dict[str, tuple]:
        sd = self.state_dict()
        if self.config.lm.tie_weights:
            sd.pop("lm.lm_head.weight")
        return {k: tuple(v.shape) for k, v in sd.items()}

    @classmethod
    def load(cls, path: str | Path) -> tuple[VLM, list[str] | None]:
        """A folder written by :meth:`save` -> (model, vocabulary words or None). Strict shapes."""
        from dodai.weights.safetensors import load_file

        folder = Path(path)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise DodaiError(f"{folder}: no config.json (not a dodai VLM folder)")
        raw = read_user_json(cfg_path, what="model config")
        if not isinstance(raw, dict) or raw.get("model_type") != "vlm":
            raise DodaiError(f"{cfg_path}: model_type is not 'vlm'")
        config = VLMConfig.from_dict(raw)
        with torch.device("meta"):
            shapes = cls(config).expected_shapes()
        sd = load_file(folder / "model.safetensors", expected=shapes)
        model = cls(config)
        if config.lm.tie_weights:
            sd["lm.lm_head.weight"] = sd["lm.transformer.wte.weight"]
        model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
        words = raw.get("words")
        return model.eval(), (words if isinstance(words, list) else None)


# ----------------------------------------------------------------------------------------------- decoding
class _PrefixConfig:
    def __init__(self, block_size: int, vocab_size: int):
        self.block_size, self.vocab_size = block_size, vocab_size


class ImagePrefixedLM(nn.Module):
    """A VLM bound to B images, seen as a text-only causal LM (dodai's protocol) whose every sequence
    starts after its image's N tokens. Row r of a batch belongs to image r, so the engine's
    ``num_samples`` must equal B (with greedy decoding the rows are independent captions).

    ``images=None`` binds no image: the text-only model (for the baseline)."""

    def __init__(self, vlm: VLM, images: torch.Tensor | None):
        super().__init__()
        self.vlm = vlm
        self.images = images
        self.n_img = 0 if images is None else vlm.config.n_patches
        self.config = _PrefixConfig(vlm.config.lm.block_size - self.n_img, vlm.config.lm.vocab_size)

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        self._check_batch(batch)
        return self.vlm.new_cache(batch, max_len + self.n_img, dtype)

    def _check_batch(self, b: int) -> None:
        if self.images is not None and b != self.images.shape[0]:
            raise DodaiError(f"{b} decoding rows for {self.images.shape[0]} images: one row per image")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None):
        """The causal-LM protocol (dodai.models.protocol); rows are never padded (one bos per image)."""
        if attention_mask is not None or position_ids is not None:
            raise DodaiError("the image-prefixed VLM decodes unpadded rows only")
        first = cache is None or cache.pos == 0  # the prefill (or every step without a cache)
        if first:  # later steps may have fewer rows: the engine drops finished ones from the cache
            self._check_batch(idx.shape[0])
        logits, loss = self.vlm(self.images if first else None, idx, targets, cache=cache)
        return (logits[:, -1:] if last_only and targets is None else logits), loss


def caption(model: VLM, images: torch.Tensor | None, tok, max_new_tokens: int | None = None,
            use_cache: bool = True, n: int | None = None) -> list[str]:
    """Greedy captions for images (B, Ch, S, S) through dodai's engine (KV cache by default).

    ``images=None`` decodes ``n`` rows from the text-only model. ``max_new_tokens`` defaults to what
    the context window leaves after the image tokens and ``<bos>``."""
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline

    rows = images.shape[0] if images is not None else (n or 1)
    if rows == 0:
        return []
    if max_new_tokens is None:
        max_new_tokens = model.config.lm.block_size - model.config.n_patches - 1
    greedy = LogitsPipeline(temperature=0.0)
    with torch.inference_mode():
        if not use_cache:  # the reference re-runs every row's images each step: one image at a time
            return [complete(ImagePrefixedLM(model, None if images is None else images[i:i + 1]), [tok.bos_id],
                             max_new_tokens, pipeline=greedy, eos_id=tok.eos_id, tokenizer=tok,
                             use_cache=False)[0].text for i in range(rows)]
        outs = complete(ImagePrefixedLM(model, images), [tok.bos_id], max_new_tokens, pipeline=greedy,
                        num_samples=rows, eos_id=tok.eos_id, tokenizer=tok)
    return [o.text for o in outs]


def caption_batches(model: VLM, images: torch.Tensor, tok, batch_size: int = 256, **kw) -> list[str]:
    out: list[str] = []
    for i in range(0, images.shape[0], batch_size):
        out += caption(model, images[i:i + batch_size], tok, **kw)
    return out


# ----------------------------------------------------------------------------------------------- analysis
def text_to_image_attention(model: VLM, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Decoder attention from the text positions to the image tokens: (L, B, H, T, N), each layer's
    weights (explicit softmax, ``attn_impl="reference"`` for this call only)."""
    attns = [blk.attn for blk in model.lm.transformer.h]
    saved = [(a.attn_impl, a.keep_weights) for a in attns]
    try:
        for a in attns:
            a.attn_impl, a.keep_weights = "reference", True
        with torch.no_grad():
            model(images, idx)
        n = model.config.n_patches
        return torch.stack([a.last_weights[:, :, n:, :n] for a in attns])  # (L, B, H, T, N)
    finally:
        for a, (impl, keep) in zip(attns, saved):
            a.attn_impl, a.keep_weights, a.last_weights = impl, keep, None


# ----------------------------------------------------------------------------------------------- training
def fit(model: VLM, batches: Callable[[int], tuple], steps: int, lr: float = 1e-3, warmup: int = 50,
        weight_decay: float = 0.01, text_only: bool = False, progress: bool = False,
        log_every: int = 50, grad_accum: int = 1, dtype: str = "float32", compile: bool = False,
        out_dir=None, resume: bool = False, checkpoint_every: int = 0, log=None,
        train_vision: bool = True) -> list[tuple[int, float]]:
    """AdamW with linear warm-up and cosine decay to lr/10, on :func:`dodai.train.fit.fit`.
    ``batches(i) -> (images, inp, tgt)`` (tensors) for micro-batch ``i``. ``text_only`` trains the decoder
    on the captions alone (the baseline). ``train_vision=False`` keeps the vision encoder frozen for this call
    (the projector and the decoder learn; LLaVA keeps its pre-trained CLIP encoder frozen the same way), which
    also skips the backward pass through the encoder. Returns [(step, loss)] every ``log_every`` steps.
    ``out_dir``: checkpoints every ``checkpoint_every`` steps and at the end (``resume`` continues from them)."""
    if steps < 1:
        raise DodaiError(f"steps must be positive, got {steps}")
    frozen = [] if train_vision else [p for p in model.vision.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return _fit(model, batches, steps, lr, warmup, weight_decay, text_only, progress, log_every, grad_accum,
                    dtype, compile, out_dir, resume, checkpoint_every, log)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _fit(model, batches, steps, lr, warmup, weight_decay, text_only, progress, log_every, grad_accum, dtype, compile,
         out_dir, resume, checkpoint_every, log):
    from dodai.train.fit import FitConfig
    from dodai.train.fit import fit as fit_loop

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def lr_at(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        frac = (s - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def loss_fn(m, b):
        images, inp, tgt = b
        return m(None if text_only else images, inp, tgt)[1]

    cfg = FitConfig(steps=steps, optimizer="adamw", lr=lr, betas=(0.9, 0.99), grad_clip=1.0, grad_accum=grad_accum,
                    dtype=dtype, compile=compile, eval_every=checkpoint_every or None, quiet=not progress,
                    desc="vlm train", metrics_file="events.jsonl")
    res = fit_loop(model, batches, loss_fn, cfg, lr_fn=lr_at, param_groups=groups, out_dir=out_dir, resume=resume,
                   on_step=log)
    model.eval()
    return [(r["step"] - 1, r["loss"]) for r in res.history
            if (r["step"] - 1) % log_every == 0 or r["step"] == steps]


class DigitTagger(nn.Module):
    """The VLM's vision encoder with a linear head tagging every image token with a digit or 'none'."""

    def __init__(self, vision: ViTEncoder, width: int, classes: int = 11):
        super().__init__()
        self.vision = vision
        self.head = nn.Linear(width, classes)

    def forward(self, images: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:  # (B, Ch, S, S), (B, N) -> loss
        logits = self.head(self.vision(images))  # (B, N, 11)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tags.reshape(-1))

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, tags: torch.Tensor, batch_size: int = 512) -> dict:
        """Tagging accuracy on (images, tags): on the cells that hold a digit's centre (the digit named right)
        and on the other cells ('none' predicted), with the cell counts."""
        was = self.training
        self.eval()
        pred = torch.cat([self.head(self.vision(images[i:i + batch_size])).argmax(-1)
                          for i in range(0, images.shape[0], batch_size)])
        self.train(was)
        digit = tags != NO_DIGIT
        return {"digit_cells": float((pred[digit] == tags[digit]).float().mean()) if digit.any() else float("nan"),
                "none_cells": float((pred[~digit] == NO_DIGIT).float().mean()) if (~digit).any() else float("nan"),
                "n_digit_cells": int(digit.sum()), "n_none_cells": int((~digit).sum())}


def pretrain_vision(model: VLM, batches: Callable[[int], tuple], steps: int, lr: float = 3e-3, warmup: int = 20,
                    log_every: int = 50, tagger: DigitTagger | None = None) -> list[tuple[int, float]]:
    """Stage 1: train ``model.vision`` alone as a dense digit tagger (every image token predicts the digit whose
    box centre lies in its cell, or 'none'; :func:`dodai.data.digit_scenes.token_tags`), with a linear head
    that is thrown away afterwards. VLMs start from a pre-trained vision encoder (LLaVA from CLIP's ViT); here
    the encoder is pre-trained on the *training* scans' labels only. ``batches(i) -> (images, tags)``.
    Then :func:`fit` trains the VLM on captions (the encoder frozen or not). ``tagger``: a
    :class:`DigitTagger` on ``model.vision`` to train (to keep its head, e.g. to score the tagging on held-out
    scenes); by default a fresh one. Returns [(step, loss)]."""
    from dodai.train.fit import FitConfig
    from dodai.train.fit import fit as fit_loop

    if steps < 1:
        raise DodaiError(f"steps must be positive, got {steps}")
    if tagger is None:
        tagger = DigitTagger(model.vision, model.config.vit_width)
    elif tagger.vision is not model.vision:
        raise DodaiError("pretrain_vision: the tagger must wrap this model's vision encoder")

    def lr_at(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))

    cfg = FitConfig(steps=steps, optimizer="adamw", lr=lr, betas=(0.9, 0.99), grad_clip=1.0, quiet=True,
                    desc="vlm vision pre-training")
    res = fit_loop(tagger, batches, lambda m, b: m(*b), cfg, lr_fn=lr_at)
    model.eval()
    return [(r["step"] - 1, r["loss"]) for r in res.history
            if (r["step"] - 1) % log_every == 0 or r["step"] == steps]


def tag_batches(images, labels, pool, batch_size: int, patch: int, seed: int = 0):
    """Stage-1 batches ``step -> (images (B, 1, S, S), tags (B, N))`` from fresh random training scenes."""
    import numpy as np

    from dodai.data.digit_scenes import make_scene, stack_images, token_tags

    rng = np.random.default_rng(seed)

    def batch(_step: int):
        scenes = [make_scene(rng, images, labels, pool) for _ in range(batch_size)]
        tags = np.stack([token_tags(s, patch) for s in scenes])
        return torch.from_numpy(stack_images(scenes)), torch.from_numpy(tags)

    return batch


def scene_batches(images, labels, pool, batch_size: int, tok, seed: int = 0, kinds: tuple[str, ...] | None = None):
    """An infinite sampler of training batches ``step -> (images (B, 1, S, S), inp (B, T), tgt (B, T))``
    drawing fresh random scenes from the scans in ``pool``; T fixed to the longest caption + 1. ``kinds``:
    only these scene kinds (drawn uniformly; default every kind)."""
    import numpy as np

    from dodai.data.digit_scenes import caption_batch, make_scene, stack_images

    rng = np.random.default_rng(seed)
    length = max_caption_tokens() + 1

    def batch(_step: int):
        scenes = [make_scene(rng, images, labels, pool, None if kinds is None else kinds[int(rng.integers(len(kinds)))])
                  for _ in range(batch_size)]
        inp, tgt = caption_batch([s.caption for s in scenes], tok, length)
        return torch.from_numpy(stack_images(scenes)), torch.from_numpy(inp), torch.from_numpy(tgt)

    return batch


def max_caption_tokens() -> int:
    """Words in the longest caption of the scene language (the 'row' captions)."""
    from dodai.data.digit_scenes import CORNERS, caption_for

    return max(len(caption_for(lay, d).split()) for lay, d in
               [("row", (0, 0, 0)), ("left of", (0, 0)), ("above", (0, 0)), ("large", (0,)),
                *[(c, (0,)) for c in CORNERS]])


def default_config(vocab_size: int, image_size: int = 24, patch_size: int = 8, vit_width: int = 64,
                   vit_layers: int = 2, n_embd: int = 128, n_layer: int = 3, stem: str = "conv",
                   stem_width: int = 32) -> VLMConfig:
    """The R9.2 model: by default a convolutional stem down to a 3x3 grid of 8x8-pixel cells (9 image tokens;
    ``stem="linear"`` for ViT's linear patch embedding), a ViT 2 x 64 wide and a 3-layer 128-wide GPT decoder
    (~0.8 M parameters); the context holds the image tokens, <bos>, the longest caption and <eos>."""
    n = (image_size // patch_size) ** 2
    lm = GPTConfig(vocab_size=vocab_size, block_size=n + max_caption_tokens() + 2, n_layer=n_layer, n_head=4,
                   n_embd=n_embd, pos_encoding="learned")
    return VLMConfig(image_size=image_size, patch_size=patch_size, vit_width=vit_width, vit_layers=vit_layers,
                     vit_heads=4, stem=stem, stem_width=stem_width, lm=lm)



def train_recipe(model: VLM, images, labels, pool, tok, *, pre_steps: int = RECIPE["pre_steps"],
                 pre_lr: float = RECIPE["pre_lr"], curriculum_steps: int = RECIPE["curriculum_steps"],
                 curriculum_kinds: tuple[str, ...] = ("large",), steps: int = RECIPE["steps"],
                 batch_size: int = RECIPE["batch_size"], lr: float = RECIPE["lr"],
                 train_vision: bool = RECIPE["train_vision"], seed: int = 0, tagger: DigitTagger | None = None,
                 progress: bool = False, grad_accum: int = 1, dtype: str = "float32", compile: bool = False) -> dict:
    """Both stages on fresh random scenes of the scans in ``pool``: :func:`pretrain_vision` (skipped when
    ``pre_steps`` is 0), then :func:`fit` on captions (``curriculum_steps`` on ``curriculum_kinds`` scenes
    first, when > 0). Every stage goes through :func:`dodai.train.fit.fit`. Returns the loss histories
    ``pretrain``, ``curriculum``, ``captions`` ([(step, loss)], caption steps counted after the curriculum's)
    and the wall seconds ``pretrain_seconds`` and ``train_seconds``."""
    import time

    for name, v in (("pre_steps", pre_steps), ("curriculum_steps", curriculum_steps)):
        if v < 0:
            raise DodaiError(f"{name} must be >= 0, got {v}")
    if steps < 1 or batch_size < 1:
        raise DodaiError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    t0 = time.perf_counter()
    hist_pre = pretrain_vision(model, tag_batches(images, labels, pool, batch_size, model.config.patch_size,
                                                  seed=seed + 5), pre_steps, lr=pre_lr,
                               log_every=max(1, pre_steps // 50), tagger=tagger) if pre_steps else []
    pre_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kw = dict(lr=lr, progress=progress, grad_accum=grad_accum, dtype=dtype, compile=compile, train_vision=train_vision)
    hist_cur = fit(model, scene_batches(images, labels, pool, batch_size, tok, seed=seed + 7, kinds=curriculum_kinds),
                   curriculum_steps, log_every=max(1, curriculum_steps // 50), **kw) if curriculum_steps else []
    hist = fit(model, scene_batches(images, labels, pool, batch_size, tok, seed=seed), steps,
               log_every=max(1, steps // 50), **kw)
    return {"pretrain": hist_pre, "curriculum": hist_cur, "captions": [(curriculum_steps + i, v) for i, v in hist],
            "pretrain_seconds": pre_s, "train_seconds": time.perf_counter() - t0}
