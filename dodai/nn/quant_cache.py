"""An int8 key/value cache (R5.5, "quantized variants"): 3.8x fewer bytes per token than fp32.

Notation: B batch, H_kv key/value heads, T_max cache length, D head dim, t new tokens this step.

Same protocol as :class:`dodai.nn.kv_cache.KVCache` (``pos``, ``update(layer, k, v)`` once per layer,
``advance(t)`` once per forward, ``reset()``, byte accounting), so any dodai causal LM takes it as its
``cache=`` argument unchanged. Each new key (and value) vector — one token, one head, D numbers — is
quantized on its own, symmetric absmax::

    s = max_d |k[d]| / 127,   q[d] = round(k[d] / s)  (int8),   k ≈ q · s

Per token *and* per head, because key magnitudes differ a lot between heads (and between tokens:
attention-sink tokens carry outsized keys), so one scale per tensor would waste most of the int8
range; KIVI (Liu et al., 2024) and KVQuant (Hooper et al., 2024) study finer (per-channel keys, 2-bit)
schemes. The scale is stored in fp32 next to the int8 vector.

Memory per token per layer: 2 (K and V) x H_kv x (D bytes + 4 bytes of scale), against
2 x H_kv x D x 4 for fp32: (64 + 4) / 256 = 0.27 of fp32 at D = 64.

``update`` returns K, V dequantized to the model's dtype for all positions so far, **including the
new ones** (the model attends to exactly what later steps will read back, so a chunked forward and a
token-by-token one see the same keys). Dequantizing the whole prefix every step costs O(pos) work per
layer; the memory saved is the point of this variant, not speed.
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


def quantize_vectors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) float -> (q (..., D) int8, scale (..., 1) fp32), one absmax scale per vector."""
    x32 = x.float()
    absmax = x32.abs().amax(dim=-1, keepdim=True)  # (..., 1)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    q = torch.round(x32 / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


class QuantKVCache:
    """Per layer int8 K, V of shape (B, H_kv, T_max, D) and fp32 scales (B, H_kv, T_max, 1)."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, v in (("n_layer", n_layer), ("batch", batch), ("n_kv_head", n_kv_head),
                        ("max_len", max_len), ("head_dim", head_dim)):
            if not isinstance(v, int) or v < 1:
                raise DodaiError(f"QuantKVCache: {name} must be a positive integer, got {v!r}")
        self.n_layer, self.batch, self.n_kv_head = n_layer, batch, n_kv_head
        self.max_len, self.head_dim = max_len, head_dim
        self.dtype = dtype  # the dtype update() returns (the model's compute dtype)
        shape = (batch, n_kv_head, max_len, head_dim)
        sshape = (batch, n_kv_head, max_len, 1)
        self.qk = [torch.zeros(shape, dtype=torch.int8, device=device) for _ in range(n_layer)]
        self.qv = [torch.zeros(shape, dtype=torch.int8, device=device) for _ in range(n_layer)]
        self.sk = [torch.zeros(sshape, dtype=torch.float32, device=device) for _ in range(n_layer)]
        self.sv = [torch.zeros(sshape, dtype=torch.float32, device=device) for _ in range(n_layer)]
        self.pos = 0  # positions filled so far (the next token's position)
        self.key_mask: torch.Tensor | None = None  # (B, pos) bool for left-padded batches (dodai.nn.padding)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize and write k, v (B, H_kv, t, D) at pos..pos+t-1; return K, V (B, H_kv, pos+t, D)
        dequantized to ``self.dtype``."""
        t = k.shape[2]
        end = self.pos + t
        if end > self.max_len:
            raise DodaiError(f"KV cache full: {end} positions needed, {self.max_len} allocated "
                             f"(prompt + max new tokens exceed the context window)")
        qk, sk = quantize_vectors(k)
        qv, sv = quantize_vectors(v)
        self.qk[layer][:, :, self.pos:end] = qk
        self.sk[layer][:, :, self.pos:end] = sk
        self.qv[layer][:, :, self.pos:end] = qv
        self.sv[layer][:, :, self.pos:end] = sv
        K = (self.qk[layer][:, :, :end].float() * self.sk[layer][:, :, :end]).to(self.dtype)
        V = (self.qv[layer][:, :, :end].float() * self.sv[layer][:, :, :end]).to(self.dtype)
        return K, V

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions as filled; call once per forward, after every layer's update."""
        self.pos += t

    def reset(self) -> None:
        self.pos, self.key_mask = 0, None

    def bytes_per_token_per_layer(self) -> int:
        """K and V: H_kv x (D int8 + one fp32 scale) each."""
        return 2 * self.n_kv_head * (self.head_dim + 4)

    def bytes_per_token(self) -> int:
        return self.n_layer * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        return self.bytes_per_token() * self.max_len * self.batch


def new_quant_cache(model, batch: int, max_len: int) -> QuantKVCache:
    """A :class:`QuantKVCache` shaped like ``model.new_cache`` would shape a float one (any dodai causal LM)."""
    ref = model.new_cache(batch, 1)  # a one-position float cache: just to read the layout off it
    device = ref.k[0].device
    return QuantKVCache(ref.n_layer, batch, ref.n_kv_head, max_len, ref.head_dim, ref.dtype, device)
