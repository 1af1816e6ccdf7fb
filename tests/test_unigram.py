"""Unigram LM tokenizer: Viterbi vs the plain oracle, sampling, trainer, HF tokenizers parity, hostile input."""

from __future__ import annotations

import io
import math
import random
from collections import Counter

import pytest
from conftest import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers import load_tokenizer
from dodai.tokenizers.normalize import normalize, words
from dodai.tokenizers.unigram import UnigramTokenizer, _Lattice, digamma
from dodai.tokenizers.unigram_reference import all_segmentations, viterbi


def _text() -> str:
    en, ja = SHARED_DATA / "austen.txt", SHARED_DATA / "ja_manpages.txt"
    if en.is_file() and ja.is_file():
        return en.read_text(encoding="utf-8")[:14_000] + "\n" + ja.read_text(encoding="utf-8")[:8_000]
    import collections
    import json

    ja_lines = ["日本語の文章には単語の間に空白がありません。", "東京都に住んでいる人は多いです。",
                "今日は良い天気ですね。明日も晴れるでしょう。"] * 30
    return "\n".join([collections.__doc__, json.__doc__, random.__doc__] + ja_lines)


TEXT = _text()


@pytest.fixture(scope="module")
def tok() -> UnigramTokenizer:
    return UnigramTokenizer.train(TEXT, 900, character_coverage=0.999)


def test_digamma_matches_scipy():
    special = pytest.importorskip("scipy.special")
    for x in (0.1, 0.5, 1.0, 2.5, 7.0, 123.4, 1e6):
        assert digamma(x) == pytest.approx(float(special.digamma(x)), rel=1e-10, abs=1e-10)


_PIECES = ["▁", "a", "b", "c", "ab", "bc", "abc", "▁a", "▁ab", "ca", "cab", "日", "本", "日本", "bca"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_PIECES), st.floats(-12, -0.1), min_size=1),
       st.text(alphabet="▁abc日本x", max_size=14))
def test_fast_viterbi_equals_reference(scores, word):
    unk = min(scores.values()) - 10
    assert _Lattice(scores).viterbi(word, unk) == viterbi(word, scores, unk)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(_PIECES), st.integers(-40, -1).map(lambda v: v / 4), min_size=1),
       st.text(alphabet="▁abc日本", max_size=7))
def test_reference_viterbi_is_the_best_segmentation(scores, word):
    unk = min(scores.values()) - 10
    best = max(s for s, _ in all_segmentations(word, scores, unk))
    path = viterbi(word, scores, unk)
    got = sum(unk if u else scores[word[i:j]] for i, j, u in path)
    assert got == pytest.approx(best)
    assert "".join(word[i:j] for i, j, _ in path) == word


def _toy() -> UnigramTokenizer:
    vocab = [("<unk>", 0.0), ("▁", -2.0), ("a", -2.5), ("b", -2.7), ("c", -3.0), ("▁a", -2.2), ("ab", -2.4),
             ("bc", -2.9), ("abc", -3.5), ("▁ab", -4.0)]
    return UnigramTokenizer(vocab, unk_id=0)


def test_nbest_matches_enumeration():
    t = _toy()
    w = "▁abc"
    allseg = sorted(all_segmentations(w, {p: s for p, s in t.vocab}, t.unk_score), key=lambda x: -x[0])
    got = t.nbest(w, 5)
    assert [round(s, 9) for s, _ in got] == [round(s, 9) for s, _ in allseg[:5]]
    assert ["".join(w[i:j] for i, j, _ in p) for _, p in got] == [w] * 5


@pytest.mark.parametrize("nbest", [-1, 50])
def test_sampling_follows_p_alpha(nbest):
    t = _toy()
    alpha = 0.7
    w = "abc"
    segs = all_segmentations("▁" + w, {p: s for p, s in t.vocab}, t.unk_score)
    z = sum(math.exp(alpha * s) for s, _ in segs)
    want = {tuple(t.index[p] for p in seg): math.exp(alpha * s) / z for s, seg in segs}
    rng = random.Random(0)
    n = 4000
    got = Counter(tuple(t.sample_encode(w, alpha=alpha, nbest=nbest, rng=rng)) for _ in range(n))
    assert set(got) <= set(want)
    for seg, p in want.items():
        assert abs(got[seg] / n - p) < 0.03, (seg, got[seg] / n, p)


def test_sampling_round_trip_and_seed(tok):
    text = "Sampling keeps the text: 日本語のテキスト and English words."
    a = tok.sample_encode(text, alpha=0.1, seed=3)
    assert tok.sample_encode(text, alpha=0.1, seed=3) == a
    assert tok.decode(a) == normalize(text)
    assert tok.decode(tok.sample_encode(text, alpha=0.2, nbest=8, seed=1)) == normalize(text)
    assert tok.sample_encode(text, alpha=1.0, nbest=1, seed=0) == tok.encode(text)
    draws = {tuple(tok.sample_encode(text, alpha=0.1, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_trained_vocabulary(tok):
    assert tok.vocab_size == 900
    assert tok.pieces[:3] == ["<unk>", "<s>", "</s>"] and tok.pieces[3] == "<0x00>" and tok.pieces[258] == "<0xFF>"
    scores = [s for _, s in tok.vocab[259:]]
    assert scores == sorted(scores, reverse=True) and max(scores) < 0
    assert all("▁" not in p[1:] for p in tok.pieces[259:])
    # the frequent English words of the training text became single pieces
    assert "▁the" in tok.pieces
    if (SHARED_DATA / "austen.txt").is_file():
        assert {"▁the", "▁and", "▁of", "▁her"} <= set(tok.pieces)
    assert tok.eos_id == 2 and tok.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2}


CASES = ["Hello world", "  a  b\n\nc ", "日本語のテキストです。", "mixed 日本語 and English 123 4567",
         "emoji 😀🎉 unknown ☃", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ①", "tabs\tand\r\nnewlines", "", "   ", "▁ ▁▁x",
         "<s>special</s> <unk>", "e\u0301 é ﬁ"]


def test_round_trip(tok):
    # decode(encode(t)) == normalize(t), except that "▁" reads back as a space and specials are skipped
    for text in [c for c in CASES if "▁" not in c and "<" not in c] + [TEXT[:3000], TEXT[-2000:]]:
        assert tok.decode(tok.encode(text)) == normalize(text)
    assert tok.encode("<s>x</s>")[0] == 1 and tok.encode("<s>x</s>")[-1] == 2


def test_hf_tokenizers_identical(tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in CASES + [TEXT[i:i + 700] for i in range(0, len(TEXT), 2500)]:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == hf.decode(ids), text
    again = load_tokenizer(path)
    assert isinstance(again, UnigramTokenizer) and again.vocab == tok.vocab
    assert again.encode(TEXT[:2000]) == tok.encode(TEXT[:2000])


_HF: list = []


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab c.\n日本語テスト😀☃ \t１Ａ①ﬁé\u0301▁0123<>s/", max_size=40))
def test_hf_identical_random_text(text):
    for t, hf in _HF:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert t.encode(text) == ids
        assert t.decode(ids) == hf.decode(ids)


@pytest.fixture(scope="module", autouse=True)
def _hf_pair(tok, tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    path = tok.save(tmp_path_factory.mktemp("uni"))
    _HF.append((tok, tokenizers.Tokenizer.from_file(str(path))))
    yield
    _HF.clear()


def test_compression_close_to_sentencepiece(tok):
    spm = pytest.importorskip("sentencepiece")
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT.splitlines()), model_writer=f, vocab_size=900,
                                   model_type="unigram", byte_fallback=True, character_coverage=0.999,
                                   minloglevel=2, num_threads=1, hard_vocab_limit=False)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    if sp.get_piece_size() != tok.vocab_size:
        pytest.skip(f"the built-in fallback text is too small for sentencepiece to reach vocab {tok.vocab_size}")
    n_bytes = len(TEXT.encode())
    ours, theirs = n_bytes / len(tok.encode(TEXT)), n_bytes / len(sp.encode(TEXT))
    assert abs(ours / theirs - 1) < 0.08, (ours, theirs)


def test_training_errors():
    with pytest.raises(DodaiError, match="empty"):
        UnigramTokenizer.train("", 500)
    with pytest.raises(DodaiError, match="empty"):
        UnigramTokenizer.train(" \n\t ", 500)
    with pytest.raises(DodaiError, match="too large"):
        UnigramTokenizer.train("abc abd abe " * 10, 5000)
    with pytest.raises(DodaiError, match="too small"):
        UnigramTokenizer.train(TEXT[:3000], 100)
    with pytest.raises(DodaiError, match="too small"):
        UnigramTokenizer.train("abc", 5, byte_fallback=False)


def test_tiny_training_without_byte_fallback():
    t = UnigramTokenizer.train("low lower lowest newer newest wider " * 20, 22, byte_fallback=False)
    assert t.vocab_size == 22 and t.pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert t.decode(t.encode("lowest newer")) == "lowest newer"
    assert t.encode("lowest ☃")[-1] == 0  # unknown character -> <unk>, no byte pieces
    assert len(t.encode("newest")) < len("newest")


def test_bad_ids_and_files(tok, tmp_path):
    for bad in ([tok.vocab_size], [-1], ["3"], [True]):
        with pytest.raises(DodaiError):
            tok.decode(bad)
    d = tok.to_dict()
    d["normalizer"] = {"type": "NFC"}
    import json

    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DodaiError, match="normalizer"):
        load_tokenizer(p)
    d = tok.to_dict()
    d["model"]["vocab"] = [["a", "x"]]
    p.write_text(json.dumps(d))
    with pytest.raises(DodaiError):
        load_tokenizer(p)
    d["model"]["vocab"] = [["a", -1.0], ["a", -2.0]]
    p.write_text(json.dumps(d))
    with pytest.raises(DodaiError, match="twice"):
        load_tokenizer(p)


def test_words_helper():
    assert words("  Hello\u3000world\n") == ["▁Hello", "▁world"]
    assert words("") == []


def test_cli_train_unigram(tmp_path):
    from dodai.cli import main

    data = tmp_path / "d.txt"
    data.write_text(TEXT[:6000], encoding="utf-8")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--algo", "unigram", "--data", str(data), "--vocab-size", "600",
                 "--out", str(out), "--quiet"]) == 0
    t = load_tokenizer(out)
    assert isinstance(t, UnigramTokenizer) and t.vocab_size == 600
    assert t.decode(t.encode("Hello 日本")) == "Hello 日本"


# ---------------------------------------------------------------- fast training paths vs the plain loops

def _corpus():
    from dodai.tokenizers.normalize import script

    counts = Counter(words(TEXT[:6000] + " x1.5 ▁▁a ab▁c 😀 ﬁ"))
    chars = Counter(c for w, f in counts.items() for c in w for _ in range(f))
    required = {c for c, f in chars.items() if f > 1}
    return counts, required, {c: script(c) for c in required if c != "▁"}


def test_hashed_seed_counts_equal_plain():
    from dodai.tokenizers.unigram import _count_substrings, _seed_counts_hashed

    counts, required, cls = _corpus()
    for rb in (True, False):
        plain = _count_substrings(counts, cls, 16, "▁" in required, rb)
        assert _seed_counts_hashed(list(counts.items()), cls, 16, "▁" in required, rb) == plain
        assert len(plain) > 100 and all("▁" not in s[1:] and v >= 2 for s, v in plain.items())
    # right-branching only: "ファイ" is always followed by "ル" in the text, so it is no seed
    c = Counter({"▁ファイル": 3, "▁ファイルを": 2})
    cls2 = {ch: "han" for ch in "ファイルを"}
    got = _count_substrings(c, cls2, 16, True, True)
    assert "ファイ" not in got and got["ファイル"] == 5 and got["▁ファイル"] == 5


def test_corpus_lattice_equals_per_word_loops():
    import numpy as np

    from dodai.tokenizers.unigram import _CorpusLattice, _e_step, _viterbi_counts

    counts, required, cls = _corpus()
    words_ = list(counts.items())
    rng = random.Random(1)
    pieces = sorted({w[i:i + k] for w in counts for i in range(len(w)) for k in (1, 2, 3)
                     if all(c in required for c in w[i:i + k])})
    scores = {p: -rng.uniform(1, 12) for p in pieces}
    lat = _CorpusLattice(words_, pieces)
    # the same edges as the per-word lattice
    pos = {p: k for k, p in enumerate(pieces)}
    edges = {(lat.bases[k] + st, lat.bases[k] + e, (len(pieces) if unk else pos[w[st:e]]))
             for k, (w, _) in enumerate(words_) for st, e, _, unk in _Lattice(scores).edges(w, -99.0)}
    assert edges == set(zip(lat.src.tolist(), lat.dst.tolist(), lat.pid.tolist()))
    sc = np.array([scores[p] for p in pieces] + [min(scores.values()) - 10])
    got, obj = lat.expected_counts(sc)
    want, want_obj = _e_step(words_, scores)
    np.testing.assert_allclose(got, [want[p] for p in pieces], rtol=1e-9, atol=1e-9)
    assert obj == pytest.approx(want_obj, rel=1e-10)
    f, inv = lat.viterbi_counts(sc)
    wf, winv = _viterbi_counts(words_, scores)
    assert f.tolist() == [wf[p] for p in pieces] and inv.tolist() == [winv[p] for p in pieces]
    # dead pieces (-inf) and compaction change nothing for the living ones
    alive = np.array([rng.random() < 0.6 or len(p) == 1 for p in pieces])
    sc2 = np.where(np.append(alive, True), sc, -np.inf)
    before = lat.expected_counts(sc2)[0]
    lat.compact(alive)
    np.testing.assert_allclose(lat.expected_counts(sc2)[0], before, rtol=1e-9, atol=1e-12)


def test_fast_and_plain_training_agree():
    a = UnigramTokenizer.train(TEXT[:5000], 500, fast=True)
    b = UnigramTokenizer.train(TEXT[:5000], 500, fast=False)
    assert set(a.pieces) == set(b.pieces)
    sb = dict(b.vocab)
    assert all(s == pytest.approx(sb[p], abs=1e-9) for p, s in a.vocab)


def test_batched_encode_equals_per_word_viterbi(tok):
    text = TEXT[2000:9000]
    scores = {p: s for p, s in tok.vocab}
    want = []
    for w in words(text):
        want.extend(tok._ids_of_path(w, viterbi(w, scores, tok.unk_score)))
    tok._cache.clear()
    tok._warm(words(text), min_chars=0)  # the numpy lattice path fills the cache
    assert len(tok._cache) > 0
    assert tok.encode_python(text) == want
    tok._cache.clear()
    assert tok.encode_python(text) == want
    assert tok.encode(text) == want  # the compiled path, when there is one
