"""R7.1 retrieval pieces: chunking invariants, BM25 (hand-computed and vs rank_bm25), fusion, metrics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.rag.bm25 import BM25, tokenize, top_k
from dodai.rag.chunk import chunk_documents, chunk_text, sentences
from dodai.rag.evalset import evaluate, pairs_from_documents
from dodai.rag.hybrid import reciprocal_rank_fusion, weighted_fusion

# ---- chunking ---------------------------------------------------------------------------------------

_text = st.lists(
    st.one_of(st.sampled_from(["alpha", "beta.", "Gamma!", "delta?", "x" * 40, "\n\n", "  ", "\n", "ok"]),
              st.text(alphabet="ab .\n!?", min_size=0, max_size=12)),
    min_size=0, max_size=60).map(" ".join)


def _check_chunks(text, chunks, max_size, overlap, count):
    prev = None
    for c in chunks:
        assert c.text == text[c.start:c.end]
        assert c.text and c.text == c.text.strip()
        if count is None:  # characters: the bound always holds (long words are sliced)
            assert count is None and len(c.text) <= max_size
        if prev is not None:
            assert c.start > prev.start and c.end > prev.end  # always moves on
            shared = max(0, prev.end - c.start)
            size = count or len
            assert shared == 0 or size(text[c.start:prev.end]) <= overlap
        prev = c
    # coverage: every non-space character is inside some chunk
    covered = np.zeros(len(text), dtype=bool)
    for c in chunks:
        covered[c.start:c.end] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


@settings(max_examples=150, deadline=None)
@given(_text, st.integers(1, 60), st.data())
def test_chunk_invariants_chars(text, max_size, data):
    overlap = data.draw(st.integers(0, max_size - 1))
    chunks = chunk_text(text, max_size, overlap, source="d")
    _check_chunks(text, chunks, max_size, overlap, None)
    assert [c.index for c in chunks] == list(range(len(chunks)))


@settings(max_examples=100, deadline=None)
@given(_text, st.integers(2, 12), st.data())
def test_chunk_invariants_tokens(text, max_size, data):
    overlap = data.draw(st.integers(0, max_size - 1))
    count = lambda s: len(s.split())  # noqa: E731  a word "tokenizer"
    chunks = chunk_text(text, max_size, overlap, count=count)
    _check_chunks(text, chunks, max_size, overlap, count)
    for c in chunks:  # a word is never cut in token mode, so the bound holds here too
        assert count(c.text) <= max_size


def test_chunks_follow_sentences_and_overlap():
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    assert [text[a:b] for a, b in sentences(text)] == [
        "One two three.", "Four five six.", "Seven eight nine.", "Ten eleven twelve."]
    chunks = chunk_text(text, max_size=32, overlap=0)
    assert [c.text for c in chunks] == ["One two three. Four five six.", "Seven eight nine.",
                                        "Ten eleven twelve."]
    # the previous chunk's last sentence comes again when it fits in the overlap and leaves room for a
    # new one ("Seven eight nine. Ten eleven twelve." is 36 > 32 characters, so the last chunk starts fresh)
    chunks = chunk_text(text, max_size=32, overlap=18)
    assert [c.text for c in chunks] == ["One two three. Four five six.", "Four five six. Seven eight nine.",
                                        "Ten eleven twelve."]
    docs = chunk_documents(["a b. c d.", "", "e f."], 100, 0, ids=["x", "y", "z"])
    assert [(c.source, c.text) for c in docs] == [("x", "a b. c d."), ("z", "e f.")]


def test_chunk_bad_arguments():
    for size, ov in [(0, 0), (10, 10), (10, -1)]:
        with pytest.raises(DodaiError):
            chunk_text("some text", size, ov)
    with pytest.raises(DodaiError):
        chunk_text(b"bytes", 10, 0)  # type: ignore[arg-type]
    assert chunk_text("   \n\n ", 10, 0) == []


# ---- BM25 --------------------------------------------------------------------------------------------

def test_bm25_hand_computed():
    # docs: "a b" (2 terms), "a c c" (3), "d" (1): avgdl = 2, N = 3
    bm = BM25(["a b", "a c c", "d"], k1=1.5, b=0.75)
    idf_c = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    want = idf_c * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / 2))
    assert bm.scores("c")[1] == pytest.approx(want, rel=1e-12)
    idf_a = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    want_a0 = idf_a * 1 * 2.5 / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / 2))
    assert bm.scores("a")[0] == pytest.approx(want_a0, rel=1e-12)
    assert bm.search("a c", 5)[0][0] == 1 and [d for d, _ in bm.search("a c", 5)] == [1, 0]
    assert bm.search("zzz", 5) == []
    rob = BM25(["a b", "a c c", "d"], idf="robertson")
    assert rob.idf("a") == pytest.approx(math.log((3 - 2 + 0.5) / (2 + 0.5)))
    assert rob.idf("a") < 0  # in more than half the documents: the classic weight is negative


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefghijklmnop"), min_size=0, max_size=12), min_size=1, max_size=12),
       st.lists(st.sampled_from("abcdefghijklmnopq"), min_size=1, max_size=5))
def test_bm25_index_equals_formula(docs, query):
    bm = BM25(docs, k1=1.2, b=0.6)
    s = bm.scores(query)
    for d in range(len(docs)):
        assert s[d] == pytest.approx(bm.score_reference(query, d), rel=1e-12, abs=1e-12)
    assert np.all(s >= 0)  # lucene idf is positive


def test_bm25_matches_rank_bm25():
    rank_bm25 = pytest.importorskip("rank_bm25")
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(300)]  # Zipf-like, so lengths and frequencies vary
    docs = [rng.choices(vocab, weights, k=rng.randint(3, 60)) for _ in range(200)]
    ref = rank_bm25.BM25Okapi(docs, k1=1.5, b=0.75)
    ours = BM25(docs, k1=1.5, b=0.75, idf="robertson")
    n_docs = {t: len(ours.postings[t][0]) for t in ours.postings}
    # rank_bm25 patches negative idfs (terms in > half the docs) with a floor; compare on the other terms
    usable = [t for t in vocab if t in n_docs and n_docs[t] < 100]
    for _ in range(20):
        q = rng.sample(usable, 4)
        np.testing.assert_allclose(ours.scores(q), ref.get_scores(q), rtol=1e-10, atol=1e-12)


def test_bm25_tokenize_and_errors():
    assert tokenize("os.path.join(getEffectiveLevel, max_len)") == [
        "os", "path", "join", "get", "effective", "level", "max", "len"]
    with pytest.raises(DodaiError):
        BM25([])
    with pytest.raises(DodaiError):
        BM25(["a"], b=2)
    with pytest.raises(DodaiError):
        BM25(["a"], idf="nope")
    with pytest.raises(DodaiError):
        BM25(["a"]).search("a", 0)


def test_top_k_exact_and_deterministic():
    s = np.array([0.5, 2.0, 2.0, -1.0, 3.0, 2.0])
    assert top_k(s, 3) == [(4, 3.0), (1, 2.0), (2, 2.0)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.integers(0, 5, size=50).astype(float)
        k = int(rng.integers(1, 60))
        want = sorted(range(50), key=lambda i: (-v[i], i))[:k]
        assert [i for i, _ in top_k(v, k)] == want


# ---- fusion ------------------------------------------------------------------------------------------

def test_rrf_hand_computed():
    a = [("x", 9.0), ("y", 5.0), ("z", 1.0)]
    b = [("y", 0.9), ("w", 0.8)]
    got = dict(reciprocal_rank_fusion([a, b], k=60))
    assert got["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert got["x"] == pytest.approx(1 / 61)
    assert got["w"] == pytest.approx(1 / 62)
    assert got["z"] == pytest.approx(1 / 63)
    assert [d for d, _ in reciprocal_rank_fusion([a, b], k=60)] == ["y", "x", "w", "z"]
    # only ranks matter: rescaling one list's scores changes nothing
    a2 = [(d, s * 1000 - 7) for d, s in a]
    assert reciprocal_rank_fusion([a2, b]) == reciprocal_rank_fusion([a, b])
    w = dict(reciprocal_rank_fusion([a, b], k=0, weights=[2, 0]))
    assert w["x"] == pytest.approx(2.0) and w["w"] == 0.0


def test_weighted_fusion_hand_computed():
    a = [("x", 10.0), ("y", 6.0), ("z", 2.0)]  # min-max: x 1, y 0.5, z 0
    b = [("y", 0.9), ("w", 0.3)]  # y 1, w 0
    got = dict(weighted_fusion([a, b], weights=[0.4, 0.6]))
    assert got == pytest.approx({"x": 0.4, "y": 0.4 * 0.5 + 0.6, "z": 0.0, "w": 0.0})
    assert weighted_fusion([a, b], weights=[0.4, 0.6])[0][0] == "y"
    with pytest.raises(DodaiError):
        weighted_fusion([a, b], weights=[1.0])
    with pytest.raises(DodaiError):
        reciprocal_rank_fusion([a], weights=[-1.0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 20), st.floats(-5, 5)), max_size=10), min_size=1, max_size=3))
def test_fusion_properties(rankings):
    rankings = [sorted(r, key=lambda t: -t[1]) for r in rankings]
    docs = {d for r in rankings for d, _ in r}
    for fused in (reciprocal_rank_fusion(rankings), weighted_fusion(rankings)):
        assert {d for d, _ in fused} == docs
        scores = [s for _, s in fused]
        assert scores == sorted(scores, reverse=True)
    # order of the input lists does not matter
    assert dict(reciprocal_rank_fusion(rankings[::-1])) == pytest.approx(dict(reciprocal_rank_fusion(rankings)))
    assert dict(weighted_fusion(rankings[::-1])) == pytest.approx(dict(weighted_fusion(rankings)))


# ---- evaluation set and metrics ----------------------------------------------------------------------

def test_evaluate_hand_computed():
    rankings = [[3, 1, 2], [0, 2], [5]]
    got = evaluate(rankings, [1, 0, 9], ks=(1, 2))
    assert got == pytest.approx({"recall@1": 1 / 3, "recall@2": 2 / 3, "mrr": (1 / 2 + 1) / 3})


def test_pairs_from_documents():
    body = "This explains the details of the function at some length, enough to count as a body."
    docs = [
        "Return the thing you asked for.\n\n" + body,  # kept
        "Too short.\n\n" + body.replace("This", "That"),  # summary under 4 words
        "A two line\nsummary is not one line.\n\n" + body.replace("This", "Here"),
        "Return the thing you asked for.\n\n" + body.replace("This", "It"),  # repeated summary: both dropped
        "Compute another thing entirely here.\n\nshort body",
        "Compute a different thing for you.\n\n" + body.replace("details", "facts"),
    ]
    pairs = pairs_from_documents(docs)
    assert {p.query for p in pairs} == {"Compute a different thing for you."}
    assert pairs[0].doc == body.replace("details", "facts")
