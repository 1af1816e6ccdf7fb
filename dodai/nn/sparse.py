"""Sparse attention: sliding-window (Mistral) and local + global (Longformer).

Both patterns are defined twice: as a dense boolean mask (the oracle, fed to
:func:`dodai.nn.attention.attention_reference`) and as a **blocked** computation that only ever
materialises the band of the T×T score matrix, so time and memory grow as O(T·w) instead of O(T²).

* Sliding window (Mistral 7B, Jiang et al. 2023; also Child et al. 2019 / Beltagy et al. 2020):
  causal, and query at absolute position i sees keys j with ``i - window < j <= i`` — ``window`` keys
  including itself (the convention of HF ``MistralForCausalLM``'s ``sliding_window``).
* Local + global (Longformer, Beltagy, Peters & Cohan 2020): bidirectional; query i sees keys with
  ``|i - j| <= w`` (``w`` per side) plus every *global* position, and a global query sees every key.

Shapes: q (B, H, T, D); k, v (B, H_kv, S, D) with H_kv dividing H (GQA). Masks: True = attend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.nn.attention import repeat_kv

__all__ = ["sliding_window_mask", "sliding_window_attention", "longformer_mask", "longformer_attention"]


def _check_window(window: int) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise DodaiError(f"sparse attention: window must be a positive integer, got {window!r}")


def sliding_window_mask(t: int, s: int | None = None, window: int = 1, device=None) -> torch.Tensor:
    """(T, S) bool: query i (absolute position S-T+i, bottom-right aligned) sees keys j with
    ``pos_i - window < j <= pos_i``."""
    _check_window(window)
    s = t if s is None else s
    if s < t:
        raise DodaiError(f"sliding_window_mask: {t} queries but only {s} keys")
    q_pos = torch.arange(s - t, s, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
    return (k_pos <= q_pos) & (k_pos > q_pos - window)


def _chunks(x: torch.Tensor, w: int, n: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, n, w, D), zero-padded at the end to n·w positions."""
    b, h, t, d = x.shape
    x = F.pad(x, (0, 0, 0, n * w - t))
    return x.view(b, h, n, w, d)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             scale: float | None = None) -> torch.Tensor:
    """Causal sliding-window self-attention (T == S), computed in chunks of ``window`` queries.

    Query chunk c only needs key chunks c-1 and c (a query at i sees back to i-window+1, which is at
    most one chunk behind), so the scores are (B, H, n, w, 2w): O(T·w) time and memory.
    Returns (B, H, T, D); equal to ``attention_reference(q, k, v, sliding_window_mask(T, T, window))``.
    """
    _check_window(window)
    b, h, t, d = q.shape
    if k.shape[2] != t:
        raise DodaiError("sliding_window_attention: the blocked path needs T == S (use the mask path with a cache)")
    k, v = repeat_kv(k, h // k.shape[1]), repeat_kv(v, h // v.shape[1])  # (B, H, T, D)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    w = min(window, t)
    n = -(-t // w)  # number of chunks
    qc = _chunks(q, w, n)  # (B, H, n, w, D)
    kc, vc = _chunks(k, w, n), _chunks(v, w, n)
    # keys for chunk c: chunk c-1 (zeros before the first) then chunk c -> (B, H, n, 2w, D)
    kk = torch.cat((F.pad(kc, (0, 0, 0, 0, 1, 0))[:, :, :-1], kc), dim=3)
    vv = torch.cat((F.pad(vc, (0, 0, 0, 0, 1, 0))[:, :, :-1], vc), dim=3)
    scores = (qc @ kk.transpose(-2, -1)) * scale  # (B, H, n, w, 2w)
    # relative offsets inside the pair of chunks: query r sits at w + r, key s at s (s < w: previous chunk)
    qi = torch.arange(w, device=q.device)[:, None] + w
    kj = torch.arange(2 * w, device=q.device)[None, :]
    band = (kj <= qi) & (kj > qi - window)  # (w, 2w), the same for every chunk
    first = band.clone()
    first[:, :w] = False  # chunk 0 has no previous chunk
    allowed = torch.stack([first] + [band] * (n - 1)) if n > 1 else first[None]  # (n, w, 2w)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vv  # (B, H, n, w, D)
    return out.reshape(b, h, n * w, d)[:, :, :t]


def longformer_mask(t: int, w: int, global_idx, device=None) -> torch.Tensor:
    """(T, T) bool: ``|i - j| <= w`` or i global or j global (bidirectional, Longformer)."""
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise DodaiError(f"longformer: one-sided window w must be an integer >= 0, got {w!r}")
    i = torch.arange(t, device=device)
    m = (i[:, None] - i[None, :]).abs() <= w
    g = _global_index(global_idx, t, device)
    m[g, :] = True
    m[:, g] = True
    return m


def _global_index(global_idx, t: int, device) -> torch.Tensor:
    g = torch.as_tensor(list(global_idx) if not torch.is_tensor(global_idx) else global_idx,
                        dtype=torch.long, device=device).reshape(-1)
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= t):
        raise DodaiError(f"longformer: global positions must lie in [0, {t}), got {g.tolist()}")
    return torch.unique(g)


def longformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: int, global_idx,
                         scale: float | None = None) -> torch.Tensor:
    """Local (``|i-j| <= w``) + global self-attention without the T×T matrix (T == S).

    Non-global queries: one softmax over [band keys (chunks c-1, c, c+1) ; global keys], with global
    keys that already fall inside the band masked out of the global part so nothing counts twice.
    Global queries: full rows (G, T), written over their band results. Memory O(T·w + T·G).
    """
    b, h, t, d = q.shape
    if k.shape[2] != t:
        raise DodaiError("longformer_attention: needs T == S (self-attention)")
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise DodaiError(f"longformer: one-sided window w must be an integer >= 0, got {w!r}")
    g = _global_index(global_idx, t, q.device)
    k, v = repeat_kv(k, h // k.shape[1]), repeat_kv(v, h // v.shape[1])  # (B, H, T, D)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    c = max(1, min(w, t))  # chunk size: a query reaches at most one chunk either side
    n = -(-t // c)
    qc, kc, vc = _chunks(q, c, n), _chunks(k, c, n), _chunks(v, c, n)  # (B, H, n, c, D)

    def three(x):  # chunks c-1, c, c+1 side by side -> (B, H, n, 3c, D)
        prev = F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1]
        nxt = F.pad(x, (0, 0, 0, 0, 0, 1))[:, :, 1:]
        return torch.cat((prev, x, nxt), dim=3)

    kk, vv = three(kc), three(vc)
    band_scores = (qc @ kk.transpose(-2, -1)) * scale  # (B, H, n, c, 3c)
    qpos = (torch.arange(n, device=q.device)[:, None] * c + torch.arange(c, device=q.device)[None, :])  # (n, c)
    kpos = (torch.arange(n, device=q.device)[:, None] * c - c
            + torch.arange(3 * c, device=q.device)[None, :])  # (n, 3c)
    band_ok = ((kpos[:, None, :] - qpos[:, :, None]).abs() <= w) & (kpos[:, None, :] >= 0) & (kpos[:, None, :] < t)
    band_scores = band_scores.masked_fill(~band_ok, float("-inf"))
    if g.numel():
        kg, vg = k[:, :, g], v[:, :, g]  # (B, H, G, D)
        g_scores = (qc @ kg[:, :, None].transpose(-2, -1)) * scale  # (B, H, n, c, G)
        in_band = (g[None, None, :] - qpos[:, :, None]).abs() <= w  # (n, c, G): already counted
        g_scores = g_scores.masked_fill(in_band, float("-inf"))
        p = torch.softmax(torch.cat((band_scores, g_scores), dim=-1), dim=-1)
        out = p[..., :3 * c] @ vv + p[..., 3 * c:] @ vg[:, :, None]  # (B, H, n, c, D)
    else:
        out = torch.softmax(band_scores, dim=-1) @ vv
    out = out.reshape(b, h, n * c, d)[:, :, :t].clone()
    if g.numel():
        # global queries attend to every key
        rows = torch.softmax((q[:, :, g] @ k.transpose(-2, -1)) * scale, dim=-1) @ v  # (B, H, G, D)
        out[:, :, g] = rows
    return out
