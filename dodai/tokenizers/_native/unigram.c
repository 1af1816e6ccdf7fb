/* dodai: the Unigram (SentencePiece) Viterbi encoder's inner loop, in plain C99.
 *
 * Compiled on first use by dodai/tokenizers/_native/__init__.py with the system C compiler into the
 * user cache folder and called through ctypes (no Python headers). The Python encoder in
 * dodai/tokenizers/unigram.py (``_Lattice.viterbi`` + ``UnigramTokenizer._ids_of_path``) is the
 * reference this file is tested against: same lattice, same tie order, same float additions, so the
 * ids are identical.
 *
 * Pieces live in a trie over Unicode code points. Its edges are one open-addressing hash table keyed
 * by (parent node, code point), so walking from a text position costs one probe per character and
 * stops as soon as the characters read are no piece's prefix (the role of sentencepiece's
 * double-array trie; Kudo & Richardson 2018).
 *
 * Viterbi over a word w of m code points (Kudo 2018): best[0] = 0 and, scanning starts st = 0..m-1
 * and for each start the ends e = st+1.. in ascending order, best[e] = best[st] + score(w[st:e]) when
 * that is strictly better (so among equal scores the smallest start wins). A start with no
 * one-character piece gets an "unknown" edge (st, st+1) scoring unk_score. Runs of unknown characters
 * in a word fuse into one <unk> id, or, with byte fallback, become the ids of their UTF-8 bytes.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX

typedef struct {
    uint64_t *keys;  /* (parent << 21 | code point), EMPTY when the slot is free */
    int32_t *vals;   /* child node of that edge */
    uint64_t mask;   /* table size - 1 (a power of two) */
    int32_t *piece;  /* piece id ending at each node, -1 when none */
    double *score;   /* that piece's score */
    int32_t n_nodes;
} Trie;

static inline uint64_t slot_of(uint64_t key, uint64_t mask) {
    key *= 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing: the high bits are well mixed */
    return (key ^ (key >> 29)) & mask;
}

static inline int32_t child(const Trie *t, int32_t node, uint32_t cp) {
    uint64_t key = ((uint64_t)node << 21) | cp;
    uint64_t i = slot_of(key, t->mask);
    for (;;) {
        uint64_t k = t->keys[i];
        if (k == key) return t->vals[i];
        if (k == EMPTY) return -1;
        i = (i + 1) & t->mask;
    }
}

void dodai_trie_free(Trie *t) {
    if (!t) return;
    free(t->keys);
    free(t->vals);
    free(t->piece);
    free(t->score);
    free(t);
}

/* Build the trie of n_pieces pieces: piece k is cps[offsets[k] .. offsets[k+1]) with score scores[k]
 * and id ids[k]. Code points must be < 0x110000 and pieces non-empty. Returns NULL when out of memory. */
Trie *dodai_trie_new(const uint32_t *cps, const int64_t *offsets, const double *scores, const int32_t *ids,
                     int64_t n_pieces) {
    int64_t total = offsets[n_pieces];
    Trie *t = calloc(1, sizeof(Trie));
    if (!t) return NULL;
    uint64_t size = 16;
    while (size < 2 * (uint64_t)total + 16) size <<= 1;
    t->mask = size - 1;
    t->keys = malloc(size * sizeof(uint64_t));
    t->vals = malloc(size * sizeof(int32_t));
    t->piece = malloc((size_t)(total + 1) * sizeof(int32_t));
    t->score = malloc((size_t)(total + 1) * sizeof(double));
    if (!t->keys || !t->vals || !t->piece || !t->score) {
        dodai_trie_free(t);
        return NULL;
    }
    memset(t->keys, 0xFF, size * sizeof(uint64_t));
    t->n_nodes = 1;
    t->piece[0] = -1;
    t->score[0] = 0.0;
    for (int64_t k = 0; k < n_pieces; k++) {
        int32_t node = 0;
        for (int64_t j = offsets[k]; j < offsets[k + 1]; j++) {
            uint64_t key = ((uint64_t)node << 21) | cps[j];
            uint64_t i = slot_of(key, t->mask);
            while (t->keys[i] != EMPTY && t->keys[i] != key) i = (i + 1) & t->mask;
            if (t->keys[i] == EMPTY) {
                t->keys[i] = key;
                t->vals[i] = t->n_nodes;
                t->piece[t->n_nodes] = -1;
                t->score[t->n_nodes] = 0.0;
                t->n_nodes++;
            }
            node = t->vals[i];
        }
        t->piece[node] = ids[k];
        t->score[node] = scores[k];
    }
    return t;
}

/* Append the ids of one unknown run cps[a..b) (fused); returns the new count, or -1 (no way to encode). */
static int64_t emit_unknown(const uint32_t *cps, int64_t a, int64_t b, const int32_t *byte_ids, int32_t unk_id,
                            int32_t *out, int64_t k) {
    if (!byte_ids) {
        if (unk_id < 0) return -1;
        out[k++] = unk_id;
        return k;
    }
    for (int64_t i = a; i < b; i++) {
        uint32_t c = cps[i];
        if (c < 0x80) {
            out[k++] = byte_ids[c];
        } else if (c < 0x800) {
            out[k++] = byte_ids[0xC0 | (c >> 6)];
            out[k++] = byte_ids[0x80 | (c & 0x3F)];
        } else if (c < 0x10000) {
            out[k++] = byte_ids[0xE0 | (c >> 12)];
            out[k++] = byte_ids[0x80 | ((c >> 6) & 0x3F)];
            out[k++] = byte_ids[0x80 | (c & 0x3F)];
        } else {
            out[k++] = byte_ids[0xF0 | (c >> 18)];
            out[k++] = byte_ids[0x80 | ((c >> 12) & 0x3F)];
            out[k++] = byte_ids[0x80 | ((c >> 6) & 0x3F)];
            out[k++] = byte_ids[0x80 | (c & 0x3F)];
        }
    }
    return k;
}

static int64_t dodai_unigram_encode_words(const Trie *t, const uint32_t *cps, int64_t n, uint32_t space,
                                          double unk_score, const int32_t *byte_ids, int32_t unk_id,
                                          int32_t *out);

static inline int is_ws(uint32_t c) {
    return c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0B || c == 0x0C || c == 0x0D;
}

/* Encode NFKC-normalised text raw[0..n_raw): whitespace runs [ \t\n\r\f\v]+ become one `space`
 * ("\u2581"), leading and trailing ones are dropped, and `space` is prepended unless the text starts
 * with one (dodai.tokenizers.normalize: the rest of normalize() and to_words()). Words start at 0 and
 * at every later `space`; each word gets its Viterbi segmentation. out must hold 4 * (n_raw + 1) ids.
 * byte_ids: 256 ids or NULL; unk_id: -1 for none. Returns the number of ids, -1 when an unknown
 * character cannot be encoded (no <unk>, no byte fallback), -2 when out of memory. */
int64_t dodai_unigram_encode(const Trie *t, const uint32_t *raw, int64_t n_raw, uint32_t space, double unk_score,
                             const int32_t *byte_ids, int32_t unk_id, int32_t *out) {
    uint32_t *cps = malloc((size_t)(n_raw + 1) * sizeof(uint32_t));
    if (!cps) return -2;
    int64_t n = 1, i0 = 0, i1 = n_raw;
    while (i0 < i1 && is_ws(raw[i0])) i0++;
    while (i1 > i0 && is_ws(raw[i1 - 1])) i1--;
    for (int64_t i = i0; i < i1; i++) {
        if (!is_ws(raw[i])) {
            cps[n++] = raw[i];
        } else if (!is_ws(raw[i - 1])) {
            cps[n++] = space;
        }
    }
    if (n == 1) {
        free(cps);
        return 0;
    }
    cps[0] = space;
    int64_t k = dodai_unigram_encode_words(t, cps[1] == space ? cps + 1 : cps, cps[1] == space ? n - 1 : n,
                                           space, unk_score, byte_ids, unk_id, out);
    free(cps);
    return k;
}

/* Viterbi of every word of cps[0..n) (cps[0] == space; a word runs from one space to the next). */
static int64_t dodai_unigram_encode_words(const Trie *t, const uint32_t *cps, int64_t n, uint32_t space,
                                          double unk_score, const int32_t *byte_ids, int32_t unk_id,
                                          int32_t *out) {
    if (n <= 0) return 0;
    int64_t maxw = 0;
    for (int64_t s = 0, i = 1; i <= n; i++) {
        if (i == n || cps[i] == space) {
            if (i - s > maxw) maxw = i - s;
            s = i;
        }
    }
    double *best = malloc((size_t)(maxw + 1) * sizeof(double));
    int64_t *bst = malloc((size_t)(maxw + 1) * sizeof(int64_t));
    int32_t *bid = malloc((size_t)(maxw + 1) * sizeof(int32_t));
    unsigned char *has = malloc((size_t)(maxw + 1));
    int64_t *path = malloc((size_t)(maxw + 1) * sizeof(int64_t));
    if (!best || !bst || !bid || !has || !path) {
        free(best); free(bst); free(bid); free(has); free(path);
        return -2;
    }
    int64_t k = 0;
    int64_t ws = 0;
    while (ws < n) {
        int64_t we = ws + 1;
        while (we < n && cps[we] != space) we++;
        const uint32_t *w = cps + ws;
        int64_t m = we - ws;
        best[0] = 0.0;
        has[0] = 1;
        memset(has + 1, 0, (size_t)m);
        for (int64_t st = 0; st < m; st++) {
            double b = best[st];
            int single = 0;
            int32_t node = 0;
            for (int64_t e = st + 1; e <= m; e++) {
                node = child(t, node, w[e - 1]);
                if (node < 0) break;
                int32_t pid = t->piece[node];
                if (pid < 0) continue;
                double c = b + t->score[node];
                if (!has[e] || c > best[e]) {
                    best[e] = c;
                    has[e] = 1;
                    bst[e] = st;
                    bid[e] = pid;
                }
                if (e == st + 1) single = 1;
            }
            if (!single) {
                double c = b + unk_score;
                if (!has[st + 1] || c > best[st + 1]) {
                    best[st + 1] = c;
                    has[st + 1] = 1;
                    bst[st + 1] = st;
                    bid[st + 1] = -1;
                }
            }
        }
        /* backtrack into path (ends, last first), then emit in text order */
        int64_t np = 0;
        for (int64_t j = m; j > 0; j = bst[j]) path[np++] = j;
        int64_t prev = 0;
        for (int64_t q = np - 1; q >= 0; q--) {
            int64_t e = path[q];
            if (bid[e] >= 0) {
                out[k++] = bid[e];
                prev = e;
                continue;
            }
            while (q > 0 && bid[path[q - 1]] < 0) e = path[--q]; /* fuse adjacent unknowns */
            k = emit_unknown(w, prev, e, byte_ids, unk_id, out, k);
            if (k < 0) {
                free(best); free(bst); free(bid); free(has); free(path);
                return -1;
            }
            prev = e;
        }
        ws = we;
    }
    free(best); free(bst); free(bid); free(has); free(path);
    return k;
}
