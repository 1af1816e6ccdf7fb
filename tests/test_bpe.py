"""Byte-level BPE: the hand-worked textbook case, fast trainer == reference loop, encode == the slow
encoder, specials, round trips (property tests), hostile input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers.bpe import ByteLevelBPE, count_words, train_fast
from dodai.tokenizers.bpe_reference import encode_reference, train_reference
from dodai.tokenizers.pretokenize import (
    BYTE_DECODER,
    BYTE_ENCODER,
    GPT2_PATTERN,
    GPT4_PATTERN,
    PreTokenizer,
    SpecialSplitter,
)

MIXED = (
    "The quick brown fox jumps over the lazy dog. I'm sure you'll see it's DONE, isn't it?\n"
    "def f(x):\n    return x ** 2  # squares\n\n\tTabs\tand  double  spaces   here.\r\n"
    "日本語のテキストです。東京は大きい都市です。カタカナ、ひらがな、漢字。\n"
    "Numbers: 1234567 3.14159 2026-11-27 ١٢٣ ½\n"
    "Emoji: 🙂🙂 👩‍👩‍👧 flags 🇯🇵 café naïve Ωmega ß straße\n"
    "<|endoftext|>a new document<|endoftext|>\n"
)


def _corpus(seed: int, n: int = 4000) -> str:
    rng = random.Random(seed)
    words = ["the", "then", "there", "low", "lower", "newest", "widest", "aaaa", "aaa", "ab", "ba", "abab",
             "日本", "日本語", "東京", "🙂", "é", "ée", "  ", "\n", "1234", "x=1;", "it's"]
    syl = ["ka", "to", "ri", "sen", "mo", "la", "qu", "zy", "本", "語", "é", "ön"]
    words += ["".join(rng.choice(syl) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    return " ".join(rng.choice(words) for _ in range(n))


def test_byte_map_is_a_bijection_onto_printable_characters():
    assert len(BYTE_ENCODER) == 256 and len(set(BYTE_ENCODER.values())) == 256
    assert all(BYTE_DECODER[c] == b for b, c in BYTE_ENCODER.items())
    assert all(c.isprintable() and not c.isspace() for c in BYTE_ENCODER.values())
    assert BYTE_ENCODER[ord(" ")] == "Ġ" and BYTE_ENCODER[ord("\n")] == "Ċ" and BYTE_ENCODER[ord("a")] == "a"


def test_textbook_example_by_hand():
    # Sennrich et al. (2016)'s toy vocabulary. Worked by hand: e-s and s-t tie at 9 -> (e,s) has the
    # smaller ids; then es-t (9); l-o ties o-w at 7 -> (l,o); lo-w (7); at 6 e-w < n-e < w-est -> (e,w);
    # then n-ew (6) beats ew-est by ids.
    words = {b"low": 5, b"lower": 2, b"newest": 6, b"widest": 3}
    expected = [b"es", b"est", b"lo", b"low", b"ew", b"new"]
    for trainer in (train_reference, train_fast):
        merges, vocab = trainer(words, 6)
        assert [vocab[c] for _, _, c in merges] == expected
        assert [c for _, _, c in merges] == list(range(256, 262))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_trainer_equals_reference(seed):
    text = _corpus(seed) + MIXED
    for pattern in ("gpt4", "gpt2"):
        wc = count_words(text, PreTokenizer.from_pattern(pattern), ["<|endoftext|>"])
        assert train_fast(wc, 150, min_frequency=1) == train_reference(wc, 150, min_frequency=1)
        assert train_fast(wc, 150, min_frequency=3) == train_reference(wc, 150, min_frequency=3)


def test_fast_trainer_equals_reference_on_real_text(tinyshakespeare):
    text = tinyshakespeare.read_text(encoding="utf-8")[:30_000]
    wc = count_words(text, PreTokenizer.from_pattern("gpt4"))
    fast = train_fast(wc, 120)
    assert fast == train_reference(wc, 120)
    assert len(fast[0]) == 120


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=8) | st.text("abc", min_size=1, max_size=12).map(str.encode),
                       st.integers(1, 5), min_size=1, max_size=12),
       st.integers(1, 40))
def test_fast_trainer_equals_reference_property(words, n):
    # Tiny alphabets produce many ties, overlapping pairs (aaa) and merge paths reaching one string.
    assert train_fast(words, n, min_frequency=1) == train_reference(words, n, min_frequency=1)


def test_duplicate_merge_results_reuse_the_token():
    # 'abc' is reachable as a+bc and as ab+c; the second path must reuse the id, not add a twin.
    words = {b"abc": 1, b"xab": 5, b"bcy": 5, b"abz": 1, b"ab": 3, b"bc": 3}
    for trainer in (train_reference, train_fast):
        merges, vocab = trainer(words, 20, min_frequency=1)
        assert len(set(vocab)) == len(vocab)
    assert train_fast(words, 20, 1) == train_reference(words, 20, 1)


@pytest.fixture(scope="module")
def tok():
    return ByteLevelBPE.train([_corpus(7, 6000), MIXED], 420, special_tokens=["<|endoftext|>", "<|pad|>"])


def test_train_layout(tok):
    assert tok.vocab_size == 420
    assert tok.special_tokens == {"<|endoftext|>": 418, "<|pad|>": 419}
    assert tok.eos_id == 418
    assert [tok.token_bytes(i) for i in range(256)] == [bytes([i]) for i in range(256)]
    assert len(tok.merges) == 420 - 256 - 2


def test_encode_equals_the_slow_encoder(tok):
    for text in (MIXED, _corpus(99, 500), "aaaaaaa abababab", ""):
        assert tok.encode(text) == encode_reference(tok, text)


def test_special_tokens(tok):
    eot = tok.special_tokens["<|endoftext|>"]
    ids = tok.encode("hi<|endoftext|>there<|pad|>")
    assert ids.count(eot) == 1 and ids[-1] == tok.special_tokens["<|pad|>"]
    plain = tok.encode("hi<|endoftext|>there", allowed_special="none")
    assert eot not in plain and tok.decode(plain) == "hi<|endoftext|>there"
    only_pad = tok.encode("<|endoftext|><|pad|>", allowed_special={"<|pad|>"})
    assert only_pad[-1] == tok.special_tokens["<|pad|>"] and eot not in only_pad
    assert tok.decode(ids, skip_special_tokens=True) == "hithere"
    with pytest.raises(DodaiError):
        tok.encode("x", allowed_special={"<|nope|>"})
    # Specials never take part in training merges: their text is not a learned token.
    assert all(b"<|" not in tok.token_bytes(c) for _, _, c in tok.merges)


def test_longest_special_wins():
    s = SpecialSplitter(["<a>", "<a><b>", "<b>"])
    assert s.split("x<a><b>y<a>") == ["x", "<a><b>", "y", "<a>", ""]


def test_decode_is_lossy_only_for_broken_utf8(tok):
    ids = tok.encode("日")  # three bytes; no merges for it in this vocabulary -> byte tokens
    assert len(ids) >= 2
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(DodaiError):
        tok.decode([tok.vocab_size])
    with pytest.raises(DodaiError):
        tok.decode([-1])
    with pytest.raises(DodaiError):
        tok.decode(["a"])


def test_lone_surrogate_is_rejected(tok):
    with pytest.raises(DodaiError, match="surrogate"):
        tok.encode("abc\ud800def")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_property(tok, s):
    # st.text() draws Unicode scalar values (no lone surrogates, see the module docstring of bpe.py).
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert all(0 <= i < tok.vocab_size for i in ids)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 日\n'sT1<|>endoftx"))))
def test_round_trip_with_specials_property(tok, s):
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(tok.encode(s, allowed_special="none")) == s


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_pretokenizers_cover_the_text(s):
    for p in (GPT2_PATTERN, GPT4_PATTERN):
        pieces = PreTokenizer.from_pattern(p).split(s)
        assert "".join(pieces) == s and all(pieces)
    assert "".join(PreTokenizer([("digits", True), ("regex", "gpt2")]).split(s)) == s
    # A pattern that leaves gaps: gaps are pieces too (HF Split "Isolated").
    assert "".join(PreTokenizer([("regex", r"\d+")]).split(s)) == s


def test_gpt4_pattern_splits_as_documented():
    pre = PreTokenizer.from_pattern("gpt4")
    assert pre.split("I'M 12345 hello!!\n\n  world") == ["I", "'M", " ", "123", "45", " hello", "!!\n\n",
                                                          " ", " world"]
    assert PreTokenizer.from_pattern("gpt2").split("I'M 12345") == ["I", "'", "M", " 12345"]


def test_from_vocab_merges_with_arbitrary_ids(tok):
    # Re-number every token (reverse order), rebuild from string vocab + string merges: same text,
    # same segmentation, mapped ids.
    n = tok.vocab_size
    specials = tok.special_tokens
    vocab = {tok.id_to_token(i): n - 1 - i for i in range(n) if i not in specials.values()}
    merges = [f"{tok.id_to_token(a)} {tok.id_to_token(b)}" for a, b, _ in tok.merges]
    other = ByteLevelBPE.from_vocab_merges(vocab, merges, "gpt4", {s: n - 1 - i for s, i in specials.items()})
    for text in (MIXED, _corpus(3, 300)):
        assert other.encode(text) == [n - 1 - i for i in tok.encode(text)]
        assert other.decode(other.encode(text)) == text


def test_bad_inputs():
    with pytest.raises(DodaiError, match="too small"):
        ByteLevelBPE.train("hello", 200)
    with pytest.raises(DodaiError, match="empty"):
        ByteLevelBPE.train("", 300)
    with pytest.raises(DodaiError, match="regex"):
        ByteLevelBPE.train("hello", 300, pattern="(")
    with pytest.raises(DodaiError):
        ByteLevelBPE.train("hello", 300, pattern="a*")
    with pytest.raises(DodaiError, match="256"):
        ByteLevelBPE.from_vocab_merges({"a": 0}, [])
    with pytest.raises(DodaiError, match="not in the vocabulary"):
        ByteLevelBPE.from_vocab_merges({BYTE_ENCODER[i]: i for i in range(256)}, [("a", "b")])
    with pytest.raises(DodaiError):
        ByteLevelBPE.from_vocab_merges({**{BYTE_ENCODER[i]: i for i in range(256)}, "日": 256}, [])


def test_small_corpus_stops_at_min_frequency():
    tok = ByteLevelBPE.train("abab abab", 1000, special_tokens=[])
    # Pairs occurring fewer than twice are not merged: the vocabulary comes out smaller.
    assert tok.vocab_size < 1000
    assert tok.decode(tok.encode("abab abab")) == "abab abab"
    assert len(tok.encode("abab")) == 1


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aab 日")), max_size=60))
def test_heap_merge_equals_rank_loop(tok, s):
    # Long pre-tokens take the heap path; force each path in turn and compare, overlaps included.
    import dodai.tokenizers.bpe as bpe_mod

    old = bpe_mod._HEAP_MIN_LEN
    try:
        out = []
        for th in (0, 10**9):
            bpe_mod._HEAP_MIN_LEN = th
            tok._cache.clear()
            out.append(tok.encode(s))
    finally:
        bpe_mod._HEAP_MIN_LEN = old
        tok._cache.clear()
    assert out[0] == out[1] == encode_reference(tok, s)


def _toy_conflicting_merges() -> ByteLevelBPE:
    # b+c before a+b, then a+bc and c+a: a pair pushed early (a,b) goes stale when b merges right.
    vocab = {BYTE_ENCODER[i]: i for i in range(256)}
    for t in ("bc", "ab", "abc", "ca", "abcab"):
        vocab[t] = len(vocab)
    return ByteLevelBPE.from_vocab_merges(vocab, ["b c", "a b", "a bc", "c a", "abc ab"], "gpt4", {})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abc", max_size=40))
def test_heap_merge_with_conflicting_ranks(s):
    import dodai.tokenizers.bpe as bpe_mod

    tok = _toy_conflicting_merges()
    old = bpe_mod._HEAP_MIN_LEN
    try:
        out = []
        for th in (0, 10**9):
            bpe_mod._HEAP_MIN_LEN = th
            tok._cache.clear()
            out.append(tok.encode(s))
    finally:
        bpe_mod._HEAP_MIN_LEN = old
    assert out[0] == out[1] == encode_reference(tok, s)


def test_toy_merges_by_hand():
    tok = _toy_conflicting_merges()
    v = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    # abcabcab: b+c twice -> a bc a bc a b; a+b -> a bc a bc ab; a+bc -> abc abc ab; abc+ab -> abc abcab.
    assert tok.encode("abcabcab") == [v["abc"], v["abcab"]]
