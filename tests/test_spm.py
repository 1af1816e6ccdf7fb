"""sentencepiece .model reader: identical ids and decode to the sentencepiece library; hostile files."""

from __future__ import annotations

import functools
import io
import random

import pytest
from conftest import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers.spm_model import SentencePieceModel

spm = pytest.importorskip("sentencepiece")


def _fallback_text() -> str:
    """Training text that exists without ../shared: stdlib docstrings plus a few Japanese lines."""
    import collections
    import json
    import textwrap

    docs = [m.__doc__ or "" for m in (collections, json, textwrap, random, io)]
    ja = ["日本語の文章には単語の間に空白がありません。", "形態素解析を使わずに分割するのがユニグラム言語モデルです。",
          "東京都に住んでいる人は多いです。", "今日は良い天気ですね。明日も晴れるでしょう。"] * 20
    return "\n".join(docs + ja)


def _training_text() -> str:
    en, ja = SHARED_DATA / "austen.txt", SHARED_DATA / "ja_manpages.txt"
    if en.is_file() and ja.is_file():
        return en.read_text(encoding="utf-8")[:60_000] + "\n" + ja.read_text(encoding="utf-8")[:60_000]
    return _fallback_text()


TEXT = _training_text()
CASES = [
    "Hello world", "  leading and   multiple   spaces  ", "日本語のテキストです。", "mixed 日本語 and English 123 4567",
    "emoji 😀🎉 and ✓ unknown ☃ chars", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "tabs\tand\nnewlines\r\n", "", "   ",
    "ﾊﾝｶｸｶﾀｶﾅ", "e\u0301 vs é", "①②③ ㌔", "Ω≠Ω", "\x00\x01ctrl", "a\u200bb", "ß ǅ ﬁ", "digits 3.14159 2026-11-27",
    "「括弧」と『二重括弧』、句読点。", "𠮷野家 🍣🍺", "<unk> <s> </s> ▁ ▁▁", TEXT[1000:1600], TEXT[-800:],
]


@functools.cache
def _train(model_type: str, byte_fallback: bool, rule: str = "nmt_nfkc", vocab: int = 1000) -> bytes:
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT.splitlines()), model_writer=f, vocab_size=vocab,
                                   model_type=model_type, byte_fallback=byte_fallback, character_coverage=0.995,
                                   normalization_rule_name=rule, minloglevel=2, num_threads=1,
                                   hard_vocab_limit=False)
    return f.getvalue()


MODELS = [("unigram", False, "nmt_nfkc"), ("unigram", True, "nmt_nfkc"), ("bpe", False, "nmt_nfkc"),
          ("bpe", True, "nmt_nfkc"), ("unigram", False, "identity"), ("bpe", True, "nfkc_cf")]


@pytest.fixture(scope="module", params=MODELS, ids=lambda p: "-".join(str(x) for x in p))
def pair(request):
    blob = _train(*request.param)
    return spm.SentencePieceProcessor(model_proto=blob), SentencePieceModel.from_bytes(blob), blob


def test_identical_ids_and_decode(pair):
    sp, m, _ = pair
    for text in CASES:
        assert m.normalize(text) == sp.normalize(text), text
        ids = sp.encode(text)
        assert m.encode(text) == ids, text
        assert m.decode(ids) == sp.decode(ids), text
    assert m.vocab_size == sp.get_piece_size()
    assert m.eos_id == sp.eos_id() and m.special_tokens["<unk>"] == sp.unk_id()


def test_identical_ids_long_text(pair):
    sp, m, _ = pair
    chunk = TEXT[20_000:40_000]
    assert m.encode(chunk) == sp.encode(chunk)


_ALPHABET = "ab c.日本語テスト😀☃ \t\n１Ａ①ﬁé\u03010123"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_random_text_matches(text):
    for sp, m in _RANDOM_PAIRS:
        assert m.encode(text) == sp.encode(text)
        ids = sp.encode(text)
        assert m.decode(ids) == sp.decode(ids)


_RANDOM_PAIRS: list = []


@pytest.fixture(scope="module", autouse=True)
def _random_pairs():
    for mt in ("unigram", "bpe"):
        blob = _train(mt, True)
        _RANDOM_PAIRS.append((spm.SentencePieceProcessor(model_proto=blob), SentencePieceModel.from_bytes(blob)))
    yield
    _RANDOM_PAIRS.clear()


def test_load_from_path_and_load_tokenizer(tmp_path):
    from dodai.tokenizers import load_tokenizer

    blob = _train("unigram", True)
    p = tmp_path / "t.model"
    p.write_bytes(blob)
    sp = spm.SentencePieceProcessor(model_file=str(p))
    tok = load_tokenizer(p)
    assert tok.encode(CASES[3]) == sp.encode(CASES[3])


def test_hostile_files(tmp_path):
    blob = _train("unigram", True)
    rng = random.Random(0)
    ok = 0
    for k in range(200):
        b = bytearray(blob)
        kind = k % 3
        if kind == 0:
            b = b[: rng.randrange(len(b))]
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            i = rng.randrange(len(b))
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        try:
            m = SentencePieceModel.from_bytes(bytes(b))
        except DodaiError:
            continue
        ok += 1
        # a model that parses must still encode and decode without crashing
        ids = m.encode("hello 日本語 😀")
        assert all(0 <= i < m.vocab_size for i in ids)
        m.decode(ids)
    assert ok < 200
    for bad in (b"", b"\x0a", b"\xff" * 20, b"GGUF\x03\x00\x00\x00"):
        with pytest.raises(DodaiError):
            SentencePieceModel.from_bytes(bad)
    p = tmp_path / "bad.model"
    p.write_bytes(blob[:100])
    with pytest.raises(DodaiError, match="bad.model"):
        SentencePieceModel.load(p)
    with pytest.raises(DodaiError):
        SentencePieceModel.load(tmp_path / "missing.model")
