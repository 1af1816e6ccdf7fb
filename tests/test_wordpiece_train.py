"""WordPiece training: hand-checked merges, fast == reference, HF tokenizers parity, vocabulary quality."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.cli import main
from dodai.errors import DodaiError
from dodai.tokenizers.wordpiece import WordPieceTokenizer
from dodai.tokenizers.wordpiece_trainer import SPECIALS, count_words, train, train_reference, train_vocab

# The HF course's toy corpus (word: count).
TOY = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}

VARIED = [
    "Hello, World! The quick brown fox jumps over the lazy dog.",
    "def f(x): return x ** 2  # comment with numbers 12345 and symbols $+<=>^`|~",
    "Café naïve résumé ÉCOLE Straße ΣΊΣΥΦΟΣ",
    "日本語のテキストも少し。中文字符 한국어",
    "unknown glyphs: ☃ 🤖 \u2603\u200b tab\tnewline\nCRLF\r\nend",
    "[CLS] literal special tokens [MASK] inside [SEP] text",
    "",
    "   ",
    "a" * 150 + " long words " + "tokenization" * 9,
]


@pytest.fixture(scope="module")
def corpus():
    from dodai.data.corpora import load_corpus

    text = load_corpus("python-docs")
    return text[:60_000], text[60_000:80_000]


def test_first_merges_by_hand():
    # pmi: count(ab)/(count(a)count(b)) is highest for ##g ##s: 5/(20*5) = 0.05 (the HF course's example)
    assert train_reference(TOY, 1, score="pmi")[-1] == "##gs"
    # gain: count(ab)·log(N·count(ab)/(count(a)count(b))), N = 113 units: ##u ##g scores 20·log(113/36),
    # above p ##u 17·log(113/36), ##u ##n 16·log(113/36), h ##u 15·log(113/36) and ##g ##s 5·log(5.65)
    assert 20 * math.log(113 / 36) > 5 * math.log(5.65)
    assert train_reference(TOY, 1, score="gain")[-1] == "##ug"
    alphabet = sorted({"h", "p", "b", "##u", "##g", "##n", "##s"})
    assert train_reference(TOY, 0) == alphabet


@pytest.mark.parametrize("score", ["gain", "pmi"])
def test_fast_equals_reference(corpus, score):
    counts = count_words(corpus[0][:15_000])
    assert train_vocab(counts, 120, score=score) == train_reference(counts, 120, score=score)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcde", min_size=1, max_size=7), st.integers(1, 9), max_size=12),
       st.integers(0, 25), st.sampled_from(["gain", "pmi"]))
def test_fast_equals_reference_property(counts, n, score):
    assert train_vocab(counts, n, score=score) == train_reference(counts, n, score=score)


def test_vocabulary_structure(corpus):
    tr, _ = corpus
    tok = train(tr, 600)
    assert tok.vocab_size == 600
    assert [tok.id_to_token[i] for i in range(5)] == list(SPECIALS)
    assert sorted(tok.vocab.values()) == list(range(600))
    # every training word is covered by the alphabet: no [UNK] on the training text
    assert tok.unk_id not in tok.encode(tr)
    # each learned unit is a concatenation of alphabet units: its characters all occur in the text
    chars = set(tok.normalize(tr))
    for t in list(tok.vocab)[5:]:
        assert set(t.removeprefix("##")) <= chars


def test_hf_tokenizers_loads_and_encodes_identically(corpus, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tr, te = corpus
    tok = train(tr, 800)
    path = tok.save(tmp_path / "wp" / "tokenizer.json")
    assert path.is_file()
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in [te, *VARIED]:
        assert hf.encode(text).ids == tok.encode(text), text[:40]
    a, b = VARIED[0], VARIED[2]
    enc = hf.encode(a, b)
    ids, types = tok.encode_pair(a, b)
    assert enc.ids == ids and enc.type_ids == types
    # and dodai reads back what it wrote
    again = WordPieceTokenizer.load(path)
    assert again.encode(te) == tok.encode(te)


def test_quality_close_to_hf_wordpiece_trainer(corpus):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    tr, te = corpus
    V = 1000
    ours = train(tr, V)
    hf = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer()
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.train_from_iterator([tr], trainers.WordPieceTrainer(vocab_size=V, special_tokens=list(SPECIALS),
                                                           show_progress=False))
    n_words = len(ours.pre_tokenize(ours.normalize(te)))
    ours_tpw = len(ours.encode(te, add_special_tokens=False)) / n_words
    hf_tpw = len(hf.encode(te, add_special_tokens=False).ids) / n_words
    assert hf.get_vocab_size() <= V
    assert ours_tpw < 1.10 * hf_tpw, (ours_tpw, hf_tpw)
    # the pmi score spends merges on rare pairs: clearly more tokens per word than the gain score
    pmi = train(tr, V, score="pmi")
    assert len(pmi.encode(te, add_special_tokens=False)) / n_words > ours_tpw


def test_limit_alphabet_turns_rare_characters_into_unk():
    text = "aaa bbb aab abab " * 20 + "zq"
    tok = train(text, 30, limit_alphabet=2)
    assert "z" not in tok.vocab and "q" not in tok.vocab
    assert tok.encode("zq ab", add_special_tokens=False)[0] == tok.unk_id
    assert tok.unk_id not in tok.encode("ab ba", add_special_tokens=False)


def test_extra_special_tokens_and_lowercase_off():
    tok = train("Hello hello HELLO <eot> world " * 5, 40, special_tokens=[*SPECIALS, "<eot>"], lowercase=False)
    assert tok.vocab["<eot>"] == 5
    assert tok.encode("Hello <eot>", add_special_tokens=False)[-1] == 5
    assert "H" in tok.vocab and "h" in tok.vocab


@pytest.mark.parametrize("kwargs,msg", [
    ({"texts": "", "vocab_size": 100}, "empty"),
    ({"texts": "   \n\t", "vocab_size": 100}, "empty"),
    ({"texts": "abc def ghi", "vocab_size": 8}, "too small"),
    ({"texts": "abc", "vocab_size": 100, "score": "freq"}, "score"),
    ({"texts": "abc", "vocab_size": 100, "special_tokens": ["[PAD]", "[UNK]"]}, "[CLS]"),
    ({"texts": "abc", "vocab_size": 100, "special_tokens": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", ""]}, "non-empty"),
    ({"texts": "abc", "vocab_size": 100, "limit_alphabet": 0}, "limit_alphabet"),
])
def test_bad_input(kwargs, msg):
    with pytest.raises(DodaiError, match=msg.replace("[", r"\[")):
        train(**kwargs)


def test_small_text_stops_when_pairs_run_out():
    tok = train("ab ab ab", 100)
    assert tok.vocab_size < 100
    assert set(tok.vocab) == {*SPECIALS, "a", "##b", "ab"}


def test_cli_train_wordpiece(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("It is a truth universally acknowledged, that a single man. " * 30, encoding="utf-8")
    rc = main(["tokenizer", "train", "--algo", "wordpiece", "--data", str(data), "--vocab-size", "45",
               "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and "wordpiece tokenizer, vocab 45" in err
    tok = WordPieceTokenizer.load(tmp_path / "out")
    assert tok.vocab_size == 45
    assert Counter(tok.encode("a truth"))[tok.unk_id] == 0
    rc = main(["tokenizer", "train", "--algo", "wordpiece", "--data", str(data), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "--vocab-size" in capsys.readouterr().err
