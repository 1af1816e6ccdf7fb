"""dodai's own CPU kernels for weight-only int4 / int8 matrix-vector products (decoding) and int4 dequantization.

Notation: M rows of activations (1 per sequence when decoding), N output features, K input features,
g = 32 weights per group, BN the row tile of PyTorch's packed int4 layout.

Why: at one token per step a decoder is a chain of matrix-*vector* products, so its speed limit is the
memory bandwidth divided by the bytes of weights read per token. PyTorch's CPU kernels for packed 4-bit
(``_weight_int4pack_mm_for_cpu``) and int8 (``_weight_int8pack_mm``) weights are compute-bound at M = 1 on
an AVX2 CPU (they reach ~2 GB/s a core, an fp32 GEMV reaches the memory's ~10), so reading 4 bits
instead of 32 bought little there. These kernels are written for M ≤ a few rows:

- **int4** (:func:`int4_gemv`) reads PyTorch's own packed layout (so ``Int4Linear`` keeps one copy of
  its weights). Probed layout (:func:`int4_tile`): rows in tiles of BN; within a tile, for each input k,
  BN/2 bytes whose byte j holds row j's code in the low nibble and row j + BN/2's in the high one. Each k
  therefore gives BN codes of one column: the kernel unpacks them into 8-lane float vectors and
  accumulates ``Σ_k q[n,k]·x[k]`` over a group for the BN rows at once, then folds the group's
  (scale, zero) in: ``y[n] += s·Σ q·x + (zero - 8 s)·Σ x`` (the weight is ``(q - 8)·s + zero``, the
  scheme of :mod:`dodai.quant.int4`). Activations stay fp32 (PyTorch's kernel rounds them to bf16).
- **int8** (:func:`int8_gemv`): ``y[n] = scale[n]·Σ_k q[n,k]·x[k]``, four rows at a time, 8 lanes of k.
- **dequantize** (:func:`int4_dequantize_t`): the packed weight to a dense fp32 Wᵀ (K, N), for prefill, where a
  dense GEMM over many rows beats any per-row kernel (dequantize-then-GEMM, the approach of
  llama.cpp's and bitsandbytes' batched paths).

The C source below is compiled once per machine with the system C compiler (``cc -O3 -mavx2 -mfma
-fopenmp``) into ``~/.cache/dodai/kernels`` and loaded with ctypes; OpenMP binds to the ``libgomp.so.1``
PyTorch has already loaded, so the kernels share PyTorch's thread pool and ``torch.set_num_threads``. No
compiler, a CPU without AVX2/FMA, or ``DODAI_NATIVE=0``: :func:`available` is False and callers take
PyTorch's kernels (same results up to rounding). tests/test_quant_native.py checks every kernel against the
dequantize-then-matmul reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

_SRC = r"""
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>

static inline float hsum8(__m256 a) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    return _mm_cvtss_f32(s4);
}
static inline __m256 bf16x8_lo(__m256i pairs) {  /* low bf16 of each 32-bit pair -> fp32 */
    return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
}
static inline __m256 bf16x8_hi(__m256i pairs) {  /* high bf16 of each 32-bit pair -> fp32 */
    return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32((int)0xFFFF0000u)));
}

/* y (M, N) = x (M, K) W^T, W in PyTorch's packed int4 CPU layout with row tile BN (32 or 64),
   sz (K/g, N, 2) bf16 (scale, zero) pairs: w = (q - 8) * scale + zero. BN is a compile-time constant in
   each caller below, so the accumulator arrays live in registers. */
static inline __attribute__((always_inline)) void q4_tile(const float *x, int M, int K, const uint8_t *tp,
        const uint16_t *sz, int N, int group, const int BN, int t, float *y) {
    const int half = BN / 2, G = K / group;
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * K;
        __m256 acc[BN / 8], inner[BN / 8];
        for (int r = 0; r < BN / 8; r++) acc[r] = _mm256_setzero_ps();
        for (int gi = 0; gi < G; gi++) {
            for (int r = 0; r < BN / 8; r++) inner[r] = _mm256_setzero_ps();
            __m256 xs8 = _mm256_setzero_ps();
            for (int k = gi * group; k < (gi + 1) * group; k++) {
                const __m256 xk = _mm256_broadcast_ss(xm + k);
                xs8 = _mm256_add_ps(xs8, xk);
                const uint8_t *b = tp + (size_t)k * half;
                for (int c = 0; c < half; c += 16) {
                    __m128i v = _mm_loadu_si128((const __m128i *)(b + c));
                    __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
                    __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
                    __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
                    __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
                    __m256 h0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
                    __m256 h1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
                    inner[c / 8] = _mm256_fmadd_ps(l0, xk, inner[c / 8]);
                    inner[c / 8 + 1] = _mm256_fmadd_ps(l1, xk, inner[c / 8 + 1]);
                    inner[(half + c) / 8] = _mm256_fmadd_ps(h0, xk, inner[(half + c) / 8]);
                    inner[(half + c) / 8 + 1] = _mm256_fmadd_ps(h1, xk, inner[(half + c) / 8 + 1]);
                }
            }
            const __m256 m8 = _mm256_set1_ps(-8.f);
            const uint16_t *zp = sz + ((size_t)gi * N + (size_t)t * BN) * 2;
            for (int r = 0; r < BN / 8; r++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(zp + r * 16));
                __m256 s = bf16x8_lo(pairs), z = bf16x8_hi(pairs);
                acc[r] = _mm256_fmadd_ps(inner[r], s, acc[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_fmadd_ps(m8, s, z), xs8, acc[r]);
            }
        }
        float *ym = y + (size_t)m * N + (size_t)t * BN;
        for (int r = 0; r < BN / 8; r++) _mm256_storeu_ps(ym + r * 8, acc[r]);
    }
}

/* The same product for several rows (M >= 2, e.g. a batch of sequences decoding together): the tile's weights
   are unpacked once per chunk of KC inputs into an L1 buffer, w = q * scale + (zero - 8 scale), and every row's
   accumulators take them from there, so unpacking is paid once per weight, not once per row and weight. */
static inline __attribute__((always_inline)) void q4_tile_rows(const float *x, int M, int K, const uint8_t *tp,
        const uint16_t *sz, int N, int group, const int BN, int t, float *y) {
    const int half = BN / 2, KC = (group % 32 == 0) ? 32 : 8;
    float wb[32 * 64] __attribute__((aligned(32)));
    for (int m = 0; m < M; m++) memset(y + (size_t)m * N + (size_t)t * BN, 0, sizeof(float) * BN);
    const __m256 m8 = _mm256_set1_ps(-8.f);
    for (int k0 = 0; k0 < K; k0 += KC) {
        const uint16_t *zp = sz + ((size_t)(k0 / group) * N + (size_t)t * BN) * 2;
        __m256 s[BN / 8], z[BN / 8];
        for (int r = 0; r < BN / 8; r++) {
            __m256i pairs = _mm256_loadu_si256((const __m256i *)(zp + r * 16));
            s[r] = bf16x8_lo(pairs);
            z[r] = _mm256_fmadd_ps(m8, s[r], bf16x8_hi(pairs));
        }
        for (int kk = 0; kk < KC; kk++) {
            const uint8_t *b = tp + (size_t)(k0 + kk) * half;
            float *w = wb + kk * BN;
            for (int c = 0; c < half; c += 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(b + c));
                __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
                __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
                const int r0 = c / 8, r1 = (half + c) / 8;
                _mm256_store_ps(w + c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), s[r0], z[r0]));
                _mm256_store_ps(w + c + 8, _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), s[r0 + 1], z[r0 + 1]));
                _mm256_store_ps(w + half + c, _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), s[r1], z[r1]));
                _mm256_store_ps(w + half + c + 8, _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), s[r1 + 1], z[r1 + 1]));
            }
        }
        /* two activation rows at a time over 32 weight rows: 8 accumulators, 4 weight vectors, 2 broadcasts */
        for (int h0 = 0; h0 < BN; h0 += 32) {
            for (int m = 0; m < M; m += 2) {
                const int pair = m + 1 < M;
                const float *x0 = x + (size_t)m * K + k0, *x1 = pair ? x0 + K : x0;
                float *y0 = y + (size_t)m * N + (size_t)t * BN + h0, *y1 = y0 + N;
                __m256 a0 = _mm256_loadu_ps(y0), a1 = _mm256_loadu_ps(y0 + 8);
                __m256 a2 = _mm256_loadu_ps(y0 + 16), a3 = _mm256_loadu_ps(y0 + 24);
                __m256 b0 = _mm256_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
                if (pair) {
                    b0 = _mm256_loadu_ps(y1); b1 = _mm256_loadu_ps(y1 + 8);
                    b2 = _mm256_loadu_ps(y1 + 16); b3 = _mm256_loadu_ps(y1 + 24);
                }
                for (int kk = 0; kk < KC; kk++) {
                    const float *w = wb + kk * BN + h0;
                    const __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8);
                    const __m256 w2 = _mm256_load_ps(w + 16), w3 = _mm256_load_ps(w + 24);
                    const __m256 xa = _mm256_broadcast_ss(x0 + kk), xb = _mm256_broadcast_ss(x1 + kk);
                    a0 = _mm256_fmadd_ps(w0, xa, a0); a1 = _mm256_fmadd_ps(w1, xa, a1);
                    a2 = _mm256_fmadd_ps(w2, xa, a2); a3 = _mm256_fmadd_ps(w3, xa, a3);
                    b0 = _mm256_fmadd_ps(w0, xb, b0); b1 = _mm256_fmadd_ps(w1, xb, b1);
                    b2 = _mm256_fmadd_ps(w2, xb, b2); b3 = _mm256_fmadd_ps(w3, xb, b3);
                }
                _mm256_storeu_ps(y0, a0); _mm256_storeu_ps(y0 + 8, a1);
                _mm256_storeu_ps(y0 + 16, a2); _mm256_storeu_ps(y0 + 24, a3);
                if (pair) {
                    _mm256_storeu_ps(y1, b0); _mm256_storeu_ps(y1 + 8, b1);
                    _mm256_storeu_ps(y1 + 16, b2); _mm256_storeu_ps(y1 + 24, b3);
                }
            }
        }
    }
}

void dodai_q4_gemv(const float *x, int M, int K, const uint8_t *packed, const uint16_t *sz, int N,
                   int group, int BN, float *y) {
    const int tiles = N / BN;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < tiles; t++) {
        const uint8_t *tp = packed + (size_t)t * K * (BN / 2);
        if ((M == 1 || group % 8) && BN == 32)
            q4_tile(x, M, K, tp, sz, N, group, 32, t, y);
        else if (M == 1 || group % 8)
            q4_tile(x, M, K, tp, sz, N, group, 64, t, y);
        else if (BN == 32)
            q4_tile_rows(x, M, K, tp, sz, N, group, 32, t, y);
        else
            q4_tile_rows(x, M, K, tp, sz, N, group, 64, t, y);
    }
}

/* W^T (K, N) fp32 from the packed layout above: for each input k, a tile's BN codes are one column of W,
   i.e. BN consecutive floats of W^T, and the (scale, zero) pairs are consecutive along N too. */
static inline __attribute__((always_inline)) void q4_dequant_tile(int K, const uint8_t *tp, const uint16_t *sz,
        int N, int group, const int BN, int t, float *wt) {
    const int half = BN / 2;
    const __m256 m8 = _mm256_set1_ps(-8.f);
    for (int k = 0; k < K; k++) {
        const uint8_t *b = tp + (size_t)k * half;
        const uint16_t *zp = sz + ((size_t)(k / group) * N + (size_t)t * BN) * 2;
        float *out = wt + (size_t)k * N + (size_t)t * BN;
        for (int c = 0; c < half; c += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(b + c));
            __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
            __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
            __m256 q[4] = {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                           _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                           _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                           _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)))};
            const int row[4] = {c, c + 8, half + c, half + c + 8};
            for (int i = 0; i < 4; i++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(zp + row[i] * 2));
                __m256 s = bf16x8_lo(pairs), z = bf16x8_hi(pairs);
                _mm256_storeu_ps(out + row[i], _mm256_fmadd_ps(_mm256_add_ps(q[i], m8), s, z));
            }
        }
    }
}

void dodai_q4_dequant_t(int K, const uint8_t *packed, const uint16_t *sz, int N, int group, int BN, float *wt) {
    const int tiles = N / BN;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < tiles; t++) {
        const uint8_t *tp = packed + (size_t)t * K * (BN / 2);
        if (BN == 32)
            q4_dequant_tile(K, tp, sz, N, group, 32, t, wt);
        else
            q4_dequant_tile(K, tp, sz, N, group, 64, t, wt);
    }
}

/* W4A8: int4 weights times int8 activations with integer dot products (the scheme of llama.cpp's Q8_0
   activations). Each row of x is quantized in blocks of 32 inputs: xq = round(x * (1 / d)), d = max|x| / 127; the
   block's float sum sx and integer sum sq = sum xq are kept. For a block, row n's output gains
   s * d * (sum_k q[n,k] xq[k] - 8 sq) + zero * sx  (w = (q - 8) s + zero, the layout and (scale, zero) pairs
   above): the rounding of x meets the centred codes (q - 8) s, not q s, so its error stays that of x alone.
   The integer sums use maddubs: unsigned codes times signed activations, two inputs per 16-bit lane, so the codes
   of inputs k and k+1 are interleaved per row first; 16-bit sums over 16 inputs stay below 2^15 (16 x 15 x 127),
   then widen to 32 bits. Rows never mix: the arithmetic of one row is the same whatever M. */
void dodai_quant_x8(const float *x, int M, int K, int8_t *xq, float *d, float *xs, int32_t *xqs) {
    const int nb = K / 32;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int m = 0; m < M; m++)
        for (int b = 0; b < nb; b++) {
            const float *v = x + (size_t)m * K + b * 32;
            const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
            const __m256 v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
            __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                      _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
            const float amax = _mm_cvtss_f32(m4);
            const float dd = amax / 127.f, id = dd > 0.f ? 1.f / dd : 0.f;
            d[(size_t)m * nb + b] = dd;
            xs[(size_t)m * nb + b] = hsum8(_mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3)));
            const __m256 iv = _mm256_set1_ps(id);
            const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;  /* half to even, as nearbyint */
            __m256i q[4] = {_mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, iv), rnd)),
                            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, iv), rnd)),
                            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, iv), rnd)),
                            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, iv), rnd))};
            const __m256i qs8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            int32_t lanes[8], codes[32];
            _mm256_storeu_si256((__m256i *)lanes, qs8);
            xqs[(size_t)m * nb + b] = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6]
                                      + lanes[7];
            for (int i = 0; i < 4; i++) _mm256_storeu_si256((__m256i *)(codes + 8 * i), q[i]);
            int8_t *o = xq + (size_t)m * K + b * 32;
            for (int i = 0; i < 32; i++) o[i] = (int8_t)codes[i];
        }
}

static inline __attribute__((always_inline)) void q4a8_tile(const int8_t *xq, const float *dx, const float *xs,
        const int32_t *xqs, int M, int K, const uint8_t *tp, const uint16_t *sz, int N, int group, const int BN,
        int t, float *y) {
    const int half = BN / 2, nb = K / 32, NV = BN / 16;  /* NV: 16-row vectors per tile */
    uint8_t wb[16 * 64 * 2] __attribute__((aligned(32)));  /* 16 input pairs x BN rows x 2 codes */
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int m = 0; m < M; m++) memset(y + (size_t)m * N + (size_t)t * BN, 0, sizeof(float) * BN);
    for (int b = 0; b < nb; b++) {
        const int k0 = b * 32;
        for (int p = 0; p < 16; p++) {
            const uint8_t *r0 = tp + (size_t)(k0 + 2 * p) * half, *r1 = r0 + half;
            uint8_t *w = wb + p * BN * 2;
            for (int c = 0; c < half; c += 16) {
                const __m128i a = _mm_loadu_si128((const __m128i *)(r0 + c));
                const __m128i bb = _mm_loadu_si128((const __m128i *)(r1 + c));
                const __m128i alo = _mm_and_si128(a, low4), blo = _mm_and_si128(bb, low4);
                const __m128i ahi = _mm_and_si128(_mm_srli_epi16(a, 4), low4);
                const __m128i bhi = _mm_and_si128(_mm_srli_epi16(bb, 4), low4);
                _mm_store_si128((__m128i *)(w + 2 * c), _mm_unpacklo_epi8(alo, blo));
                _mm_store_si128((__m128i *)(w + 2 * c + 16), _mm_unpackhi_epi8(alo, blo));
                _mm_store_si128((__m128i *)(w + 2 * (half + c)), _mm_unpacklo_epi8(ahi, bhi));
                _mm_store_si128((__m128i *)(w + 2 * (half + c) + 16), _mm_unpackhi_epi8(ahi, bhi));
            }
        }
        const uint16_t *zp = sz + ((size_t)(k0 / group) * N + (size_t)t * BN) * 2;
        for (int m = 0; m < M; m++) {
            const int8_t *xm = xq + (size_t)m * K + k0;
            __m256i acc[4][2];  /* [16-row vector][first / second 16 inputs]; 16-bit sums */
            for (int v = 0; v < NV; v++) acc[v][0] = acc[v][1] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++)
                for (int p = 8 * h; p < 8 * h + 8; p++) {
                    int16_t pair;
                    memcpy(&pair, xm + 2 * p, 2);
                    const __m256i x2 = _mm256_set1_epi16(pair);
                    const uint8_t *w = wb + p * BN * 2;
                    for (int v = 0; v < NV; v++)
                        acc[v][h] = _mm256_add_epi16(acc[v][h], _mm256_maddubs_epi16(
                            _mm256_load_si256((const __m256i *)(w + v * 32)), x2));
                }
            float *ym = y + (size_t)m * N + (size_t)t * BN;
            const __m256 dv = _mm256_set1_ps(dx[(size_t)m * nb + b]), sv = _mm256_set1_ps(xs[(size_t)m * nb + b]);
            const __m256i q8 = _mm256_set1_epi32(8 * xqs[(size_t)m * nb + b]);
            for (int v = 0; v < NV; v++) {
                const __m256i lo = _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[v][0])),
                                                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[v][1])));
                const __m256i hi = _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[v][0], 1)),
                                                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[v][1], 1)));
                for (int u = 0; u < 2; u++) {
                    const int row = v * 16 + u * 8;
                    const __m256i pairs = _mm256_loadu_si256((const __m256i *)(zp + row * 2));
                    const __m256 s = bf16x8_lo(pairs), z = bf16x8_hi(pairs);
                    __m256 yv = _mm256_loadu_ps(ym + row);
                    const __m256i c = _mm256_sub_epi32(u ? hi : lo, q8);  /* sum (q - 8) xq, exact */
                    yv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(s, dv), yv);
                    yv = _mm256_fmadd_ps(z, sv, yv);
                    _mm256_storeu_ps(ym + row, yv);
                }
            }
        }
    }
}

void dodai_q4a8_gemv(const int8_t *xq, const float *dx, const float *xs, const int32_t *xqs, int M, int K,
                     const uint8_t *packed,
                     const uint16_t *sz, int N, int group, int BN, float *y) {
    const int tiles = N / BN;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < tiles; t++) {
        const uint8_t *tp = packed + (size_t)t * K * (BN / 2);
        if (BN == 32)
            q4a8_tile(xq, dx, xs, xqs, M, K, tp, sz, N, group, 32, t, y);
        else
            q4a8_tile(xq, dx, xs, xqs, M, K, tp, sz, N, group, 64, t, y);
    }
}

/* One decoding step of a Llama-family stack (pre-norm, RMSNorm, GQA attention with half-split RoPE, SwiGLU),
   every projection an int4 weight in the layout above: x (B, C) is updated in place through L layers.
   Where keys and values live: row b's positions j = first[b] .. ncol - 1 (the last one is the new token, written
   here) sit at slot(b, j) = tab[b * ncol + j] (a paged cache's block table; tab NULL: slot = b * row_slots + j, a
   dense cache), and head g of a slot at layer l starts at kc[l] + slot * slot_elems + g * head_elems. RoPE rows:
   cos/sin + b * cs_stride (0: one position shared by every row). */
/* e^x on 8 lanes: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial (relative error below
   2e-7 on that range), 2^n put into the exponent bits; inputs clamped to [-87, 88] (no overflow to inf, and e^-87
   is already negligible next to the 1 it is added to in silu). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  /* ln2 in two parts (Cody-Waite) */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.f / 720.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static void rmsnorm(const float *x, const float *w, int C, float eps, float *out) {
    float ss = 0.f;
    for (int i = 0; i < C; i++) ss += x[i] * x[i];
    const float r = 1.f / sqrtf(ss / C + eps);
    for (int i = 0; i < C; i++) out[i] = x[i] * r * w[i];
}

static void rope(float *v, int D, const float *cos, const float *sin) {
    const int h = D / 2;
    for (int i = 0; i < h; i++) {
        const float a = v[i], b = v[i + h];
        v[i] = a * cos[i] - b * sin[i];
        v[i + h] = b * cos[i + h] + a * sin[i + h];
    }
}

/* x (M, K) through a packed int4 weight: fp32 activations (a8 = 0) or int8 blocks (a8 = 1, W4A8; scratch space for
   M x K codes and M x K/32 block scales and sums). */
static void q4_matmul(int a8, const float *x, int M, int K, const void *packed, const void *sz, int N, int group,
                      int BN, float *y, int8_t *xq, float *xd, float *xs, int32_t *xqs) {
    if (a8) {
        dodai_quant_x8(x, M, K, xq, xd, xs, xqs);
        dodai_q4a8_gemv(xq, xd, xs, xqs, M, K, packed, sz, N, group, BN, y);
    } else {
        dodai_q4_gemv(x, M, K, packed, sz, N, group, BN, y);
    }
}

void dodai_llama_step(int L, int B, int C, int H, int Hkv, int D, int F, int group, int BN, int a8, float eps,
                      float *x, void **attn_norm, void **qkv_p, void **qkv_s, void **o_p, void **o_s,
                      void **ffn_norm, void **gu_p, void **gu_s, void **down_p, void **down_s,
                      void **kc, void **vc, const int64_t *tab, int ncol, const int *first, int64_t row_slots,
                      int64_t slot_elems, int64_t head_elems, const float *cos, const float *sin, int cs_stride,
                      float scale) {
    const int NQKV = (H + 2 * Hkv) * D, rep = H / Hkv, S = ncol;
    float *h = malloc(sizeof(float) * B * C), *qkv = malloc(sizeof(float) * B * NQKV);
    float *att = malloc(sizeof(float) * B * H * D), *o = malloc(sizeof(float) * B * C);
    float *gu = malloc(sizeof(float) * B * 2 * F), *act = malloc(sizeof(float) * B * F);
    float *sc = malloc(sizeof(float) * B * H * S);
    const int KM = (C > H * D ? C : H * D) > F ? (C > H * D ? C : H * D) : F;  /* the widest input */
    int8_t *xq = malloc((size_t)B * KM);
    float *xd = malloc(sizeof(float) * B * (KM / 32 + 1)), *xs = malloc(sizeof(float) * B * (KM / 32 + 1));
    int32_t *xqs = malloc(sizeof(int32_t) * B * (KM / 32 + 1));
    for (int l = 0; l < L; l++) {
        float *kl = kc[l], *vl = vc[l];
        for (int b = 0; b < B; b++) rmsnorm(x + b * C, attn_norm[l], C, eps, h + b * C);
        q4_matmul(a8, h, B, C, qkv_p[l], qkv_s[l], NQKV, group, BN, qkv, xq, xd, xs, xqs);
        for (int b = 0; b < B; b++) {
            float *q = qkv + (size_t)b * NQKV, *k = q + H * D, *v = k + Hkv * D;
            const float *cb = cos + (size_t)b * cs_stride, *sb = sin + (size_t)b * cs_stride;
            const int64_t slot = tab ? tab[(size_t)b * ncol + S - 1] : b * row_slots + S - 1;
            for (int i = 0; i < H; i++) rope(q + i * D, D, cb, sb);
            for (int g = 0; g < Hkv; g++) {
                rope(k + g * D, D, cb, sb);
                const size_t off = (size_t)(slot * slot_elems + g * head_elems);
                memcpy(kl + off, k + g * D, sizeof(float) * D);
                memcpy(vl + off, v + g * D, sizeof(float) * D);
            }
        }
        #pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < H; i++) {
                const int g = i / rep, j0 = first ? first[b] : 0;
                const float *q = qkv + (size_t)b * NQKV + i * D;
                const int64_t *tb = tab ? tab + (size_t)b * ncol : NULL;
                float *s = sc + ((size_t)b * H + i) * S, mx = -INFINITY, den = 0.f;
                for (int t = j0; t < S; t++) {
                    const int64_t slot = tb ? tb[t] : b * row_slots + t;
                    const float *kt = kl + (size_t)(slot * slot_elems + g * head_elems);
                    float d = 0.f;
                    if (D % 8 == 0) {  /* 8 lanes of the head dimension */
                        __m256 a = _mm256_setzero_ps();
                        for (int j = 0; j < D; j += 8)
                            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(kt + j), a);
                        d = hsum8(a);
                    } else {
                        for (int j = 0; j < D; j++) d += q[j] * kt[j];
                    }
                    s[t] = d * scale;
                    if (s[t] > mx) mx = s[t];
                }
                for (int t = j0; t < S; t++) { s[t] = expf(s[t] - mx); den += s[t]; }
                float *out = att + ((size_t)b * H + i) * D;
                for (int j = 0; j < D; j++) out[j] = 0.f;
                const float inv = 1.f / den;
                for (int t = j0; t < S; t++) {
                    const float p = s[t] * inv;
                    const int64_t slot = tb ? tb[t] : b * row_slots + t;
                    const float *vt = vl + (size_t)(slot * slot_elems + g * head_elems);
                    for (int j = 0; j < D; j++) out[j] += p * vt[j];
                }
            }
        }
        q4_matmul(a8, att, B, H * D, o_p[l], o_s[l], C, group, BN, o, xq, xd, xs, xqs);
        for (int i = 0; i < B * C; i++) x[i] += o[i];
        for (int b = 0; b < B; b++) rmsnorm(x + b * C, ffn_norm[l], C, eps, h + b * C);
        q4_matmul(a8, h, B, C, gu_p[l], gu_s[l], 2 * F, group, BN, gu, xq, xd, xs, xqs);
        for (int b = 0; b < B; b++) {
            const float *g = gu + (size_t)b * 2 * F, *u = g + F;
            float *out = act + (size_t)b * F;
            int i = 0;
            for (; i + 8 <= F; i += 8) {  /* silu(g) u = g / (1 + e^-g) u, 8 lanes */
                const __m256 gv = _mm256_loadu_ps(g + i);
                const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
                _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
            }
            for (; i < F; i++) out[i] = g[i] / (1.f + expf(-g[i])) * u[i];
        }
        q4_matmul(a8, act, B, F, down_p[l], down_s[l], C, group, BN, o, xq, xd, xs, xqs);
        for (int i = 0; i < B * C; i++) x[i] += o[i];
    }
    free(h); free(qkv); free(att); free(o); free(gu); free(act); free(sc); free(xq); free(xd); free(xs); free(xqs);
}

/* y (M, N) = (x (M, K) q^T) * scale, q (N, K) int8 row-major, scale (N,) fp32; K a multiple of 8. */
static inline __m256 q8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
void dodai_q8_gemv(const float *x, int M, int K, const int8_t *q, const float *scale, int N, float *y) {
    const int blocks = (N + 3) / 4;
    #pragma omp parallel for schedule(static)
    for (int bi = 0; bi < blocks; bi++) {
        const int n0 = bi * 4;
        if (M > 1 && n0 + 4 <= N && K <= 4096) {  /* several rows: convert the 4 weight rows once, reuse them */
            float wf[4 * K];
            for (int r = 0; r < 4; r++)
                for (int k = 0; k < K; k += 8)
                    _mm256_storeu_ps(wf + (size_t)r * K + k, q8x8(q + (size_t)(n0 + r) * K + k));
            for (int m = 0; m < M; m += 2) {  /* two rows at a time: 8 independent accumulators */
                const int pair = m + 1 < M;
                const float *x0 = x + (size_t)m * K, *x1 = pair ? x0 + K : x0;
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                for (int k = 0; k < K; k += 8) {
                    const __m256 xa = _mm256_loadu_ps(x0 + k), xb = _mm256_loadu_ps(x1 + k);
                    const __m256 w0 = _mm256_loadu_ps(wf + k), w1 = _mm256_loadu_ps(wf + K + k);
                    const __m256 w2 = _mm256_loadu_ps(wf + 2 * (size_t)K + k);
                    const __m256 w3 = _mm256_loadu_ps(wf + 3 * (size_t)K + k);
                    a0 = _mm256_fmadd_ps(w0, xa, a0); a1 = _mm256_fmadd_ps(w1, xa, a1);
                    a2 = _mm256_fmadd_ps(w2, xa, a2); a3 = _mm256_fmadd_ps(w3, xa, a3);
                    b0 = _mm256_fmadd_ps(w0, xb, b0); b1 = _mm256_fmadd_ps(w1, xb, b1);
                    b2 = _mm256_fmadd_ps(w2, xb, b2); b3 = _mm256_fmadd_ps(w3, xb, b3);
                }
                float *ya = y + (size_t)m * N + n0;
                ya[0] = hsum8(a0) * scale[n0];
                ya[1] = hsum8(a1) * scale[n0 + 1];
                ya[2] = hsum8(a2) * scale[n0 + 2];
                ya[3] = hsum8(a3) * scale[n0 + 3];
                if (pair) {
                    float *yb = ya + N;
                    yb[0] = hsum8(b0) * scale[n0];
                    yb[1] = hsum8(b1) * scale[n0 + 1];
                    yb[2] = hsum8(b2) * scale[n0 + 2];
                    yb[3] = hsum8(b3) * scale[n0 + 3];
                }
            }
            continue;
        }
        for (int m = 0; m < M; m++) {
            const float *xm = x + (size_t)m * K;
            if (n0 + 4 <= N) {
                const int8_t *q0 = q + (size_t)n0 * K, *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int k = 0; k < K; k += 8) {
                    const __m256 xv = _mm256_loadu_ps(xm + k);
                    a0 = _mm256_fmadd_ps(q8x8(q0 + k), xv, a0);
                    a1 = _mm256_fmadd_ps(q8x8(q1 + k), xv, a1);
                    a2 = _mm256_fmadd_ps(q8x8(q2 + k), xv, a2);
                    a3 = _mm256_fmadd_ps(q8x8(q3 + k), xv, a3);
                }
                float *ym = y + (size_t)m * N + n0;
                ym[0] = hsum8(a0) * scale[n0];
                ym[1] = hsum8(a1) * scale[n0 + 1];
                ym[2] = hsum8(a2) * scale[n0 + 2];
                ym[3] = hsum8(a3) * scale[n0 + 3];
            } else {
                for (int n = n0; n < N; n++) {
                    __m256 a = _mm256_setzero_ps();
                    for (int k = 0; k < K; k += 8)
                        a = _mm256_fmadd_ps(q8x8(q + (size_t)n * K + k), _mm256_loadu_ps(xm + k), a);
                    y[(size_t)m * N + n] = hsum8(a) * scale[n];
                }
            }
        }
    }
}
"""

_lib = None  # the loaded library, False when unavailable
_tiles: dict[tuple[int, int], int] = {}  # (N, K) -> BN of PyTorch's packed layout (0: not understood)


def _cache_dir() -> Path:
    return Path(os.environ.get("DODAI_CACHE", Path.home() / ".cache" / "dodai")) / "kernels"


def _cpu_ok() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def _build() -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not _cpu_ok():
        return None
    tag = hashlib.sha256((_SRC + cc).encode()).hexdigest()[:16]
    so = _cache_dir() / f"dodai_native_{tag}.so"
    if not so.is_file():
        so.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "k.c", Path(tmp) / "k.so"
            src.write_text(_SRC)
            r = subprocess.run([cc, "-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", str(src), "-o",
                                str(out), "-lm"], capture_output=True, text=True)
            if r.returncode != 0:
                return None
            os.replace(out, so)  # atomic: a concurrent process sees the whole file or none
    lib = ctypes.CDLL(str(so))
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.dodai_q4_gemv.argtypes = [p, i, i, p, p, i, i, i, p]
    lib.dodai_q4_dequant_t.argtypes = [i, p, p, i, i, i, p]
    lib.dodai_q8_gemv.argtypes = [p, i, i, p, p, i, p]
    lib.dodai_quant_x8.argtypes = [p, i, i, p, p, p, p]
    lib.dodai_q4a8_gemv.argtypes = [p, p, p, p, i, i, p, p, i, i, i, p]
    pa, f32 = ctypes.POINTER(ctypes.c_void_p), ctypes.c_float
    i64 = ctypes.c_int64
    lib.dodai_llama_step.argtypes = ([i, i, i, i, i, i, i, i, i, i, f32, p] + [pa] * 12
                                     + [p, i, p, i64, i64, i64, p, p, i, f32])
    for f in (lib.dodai_q4_gemv, lib.dodai_q4_dequant_t, lib.dodai_q8_gemv, lib.dodai_llama_step, lib.dodai_quant_x8,
              lib.dodai_q4a8_gemv):
        f.restype = None
    return lib


def available() -> bool:
    """Whether the kernels are compiled and loaded (built on first call; False without a compiler/AVX2)."""
    global _lib
    if _lib is None:
        if os.environ.get("DODAI_NATIVE", "1") == "0":
            _lib = False
        else:
            try:
                _lib = _build() or False
            except OSError:
                _lib = False
    return bool(_lib)


def int4_tile(n: int, k: int) -> int:
    """BN, the row tile of PyTorch's packed int4 layout for an (n, k) weight, found by packing a probe of
    known codes and decoding it with each candidate; 0 when no candidate decodes it (then callers keep
    PyTorch's kernel)."""
    key = (n, k)
    if key not in _tiles:
        # PyTorch's packing op (as dodai.quant.int4 uses it; looked up here so the two modules stay acyclic)
        _PACK = torch.ops.aten._convert_weight_to_int4pack_for_cpu
        rows = torch.arange(n, dtype=torch.int32)[:, None]
        cols = torch.arange(k, dtype=torch.int32)[None, :]
        q = ((rows * 7 + cols * 3 + (rows // 16) * 5) % 16).contiguous()  # codes that differ between rows
        packed = _PACK(q, 1)
        _tiles[key] = 0
        for bn in (32, 64):
            if n % bn or packed.shape != (n, k // 2):
                continue
            p = packed.reshape(n // bn, k, bn // 2)  # (tiles, K, BN/2)
            got = torch.cat([p & 15, p >> 4], dim=2).permute(0, 2, 1).reshape(n, k).to(torch.int32)
            if torch.equal(got, q):
                _tiles[key] = bn
                break
    return _tiles[key]


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def int4_gemv(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, group: int, bn: int) -> torch.Tensor:
    """x (M, K) fp32 contiguous -> (M, N) fp32 through the packed int4 weight (tile ``bn``, see the module)."""
    M, K = x.shape
    N = packed.shape[0]
    if not (x.is_contiguous() and packed.is_contiguous() and sz.is_contiguous() and x.dtype == torch.float32):
        raise ValueError("int4_gemv needs contiguous fp32 x and contiguous packed weights")
    y = torch.empty(M, N, dtype=torch.float32)
    _lib.dodai_q4_gemv(_ptr(x), M, K, _ptr(packed), _ptr(sz), N, group, bn, _ptr(y))
    return y


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) fp32, K a multiple of 32 -> (xq (M, K) int8, d (M, K/32) scales, float sums, int32 sums of xq), the
    W4A8 kernel's activation blocks (see the C source)."""
    M, K = x.shape
    if not (x.is_contiguous() and x.dtype == torch.float32 and K % 32 == 0):
        raise ValueError("quantize_rows_int8 needs contiguous fp32 x with K a multiple of 32")
    xq = torch.empty(M, K, dtype=torch.int8)
    d = torch.empty(M, K // 32, dtype=torch.float32)
    xs = torch.empty(M, K // 32, dtype=torch.float32)
    xqs = torch.empty(M, K // 32, dtype=torch.int32)
    _lib.dodai_quant_x8(_ptr(x), M, K, _ptr(xq), _ptr(d), _ptr(xs), _ptr(xqs))
    return xq, d, xs, xqs


def int4_a8_gemv(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, group: int, bn: int) -> torch.Tensor:
    """x (M, K) fp32 -> (M, N) fp32 through the packed int4 weight with x quantized to int8 in blocks of 32
    (W4A8, see the C source); ``group`` a multiple of 32."""
    M, K = x.shape
    N = packed.shape[0]
    if not (packed.is_contiguous() and sz.is_contiguous()) or group % 32:
        raise ValueError("int4_a8_gemv needs contiguous packed weights and a group that is a multiple of 32")
    xq, d, xs, xqs = quantize_rows_int8(x)
    y = torch.empty(M, N, dtype=torch.float32)
    _lib.dodai_q4a8_gemv(_ptr(xq), _ptr(d), _ptr(xs), _ptr(xqs), M, K, _ptr(packed), _ptr(sz), N, group, bn, _ptr(y))
    return y


def int4_dequantize_t(packed: torch.Tensor, sz: torch.Tensor, group: int, bn: int) -> torch.Tensor:
    """Wᵀ (K, N) fp32 of a packed int4 weight, ``(q - 8)·scale + zero`` (transposed: the layout's natural
    order; ``x @ Wᵀ`` is the GEMM a prefill needs)."""
    N, K = packed.shape[0], packed.shape[1] * 2
    if not (packed.is_contiguous() and sz.is_contiguous()):
        raise ValueError("int4_dequantize_t needs contiguous packed weights")
    wt = torch.empty(K, N, dtype=torch.float32)
    _lib.dodai_q4_dequant_t(K, _ptr(packed), _ptr(sz), N, group, bn, _ptr(wt))
    return wt


def int8_gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) fp32 contiguous, q (N, K) int8 contiguous, scale (N,) fp32 -> (M, N) fp32."""
    M, K = x.shape
    N = q.shape[0]
    if not (x.is_contiguous() and q.is_contiguous() and scale.is_contiguous() and x.dtype == scale.dtype
            == torch.float32 and q.dtype == torch.int8 and K % 8 == 0):
        raise ValueError("int8_gemv needs contiguous fp32 x and scale, int8 q, K a multiple of 8")
    y = torch.empty(M, N, dtype=torch.float32)
    _lib.dodai_q8_gemv(_ptr(x), M, K, _ptr(q), _ptr(scale), N, _ptr(y))
    return y
