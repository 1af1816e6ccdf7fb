"""WordPiece (BERT) tokenizer: hand-worked cases, hostile files, and id parity with HF on the MiniLM vocab."""

from __future__ import annotations

import json

import pytest

from dodai.errors import DodaiError
from dodai.tokenizers.wordpiece import WordPieceTokenizer, _longest_first

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "aff", "##a", "a", "!",
              "hello", "##llo", "he", ",", "cafe", "日", "本"]


def tiny(**kw) -> WordPieceTokenizer:
    return WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)}, **kw)


# -- hand-worked cases -------------------------------------------------------------------------------

def test_greedy_longest_match_first():
    tok = tiny()
    # "unaffable" -> un ##aff ##able (the example of the BERT README)
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    # longest first: "hello" is one piece even though "he" + "##llo" also covers it
    assert tok.tokenize("hello") == ["hello"]
    # a word with an uncoverable part is a single [UNK], not a partial split
    assert tok.tokenize("unaffablex") == ["[UNK]"]
    assert tok.tokenize("Hello, unaffable!") == ["hello", ",", "un", "##aff", "##able", "!"]


def test_basic_tokenization_rules():
    tok = tiny()
    assert tok.normalize("Café\tNAÏVE\x00\u200b") == "cafe naive"  # accents stripped, controls dropped
    assert tok.tokenize("CAFÉ") == ["cafe"]
    assert tok.tokenize("日本") == ["日", "本"]  # every CJK ideograph is its own word
    assert tok.pre_tokenize("a--b  c") == ["a", "-", "-", "b", "c"]
    assert tok.pre_tokenize("x$y^z") == ["x", "$", "y", "^", "z"]  # ASCII symbols count as punctuation
    assert tok.pre_tokenize("é«ü»") == ["é", "«", "ü", "»"]  # Unicode P* as well
    # without lower-casing, accents are kept (strip_accents follows lowercase by default)
    assert tiny(lowercase=False).normalize("Café") == "Café"
    assert tiny(lowercase=False, strip_accents=True).normalize("Café") == "Cafe"


def test_special_tokens_and_lengths():
    tok = tiny()
    assert tok.encode("hello") == [2, 12, 3]
    assert tok.encode("hello", add_special_tokens=False) == [12]
    assert tok.encode("hello [MASK] !") == [2, 12, 4, 11, 3]  # a literal special token stays whole
    assert tok.encode("a " * 10, max_length=5) == [2, 10, 10, 10, 3]
    ids, types = tok.encode_pair("hello", "a a")
    assert ids == [2, 12, 3, 10, 10, 3] and types == [0, 0, 0, 1, 1, 1]
    b = tok.encode_batch(["hello", "a a a"])
    assert b.input_ids == [[2, 12, 3, 0, 0], [2, 10, 10, 10, 3]]
    assert b.attention_mask == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert tok.encode("x" * 101) == [2, 1, 3]  # longer than max_input_chars_per_word -> [UNK]
    with pytest.raises(DodaiError):
        tok.encode("hello", max_length=1)
    with pytest.raises(DodaiError):
        tok.decode([999])


@pytest.mark.parametrize("n1,n2,budget", [(3, 4, 10), (2, 20, 10), (20, 3, 10), (20, 30, 10), (20, 30, 11),
                                          (5, 5, 9), (0, 15, 4)])
def test_longest_first_truncation(n1, n2, budget):
    a, b = _longest_first(n1, n2, budget)
    assert a <= n1 and b <= n2 and a + b == min(n1 + n2, budget)
    if a < n1 and b < n2:  # both cut: they share the budget evenly
        assert abs(a - b) <= 1


def test_roundtrip_decode_plain_text():
    tok = tiny()
    assert tok.decode(tok.encode("Hello, unaffable!")) == "hello, unaffable!"


# -- files and hostile input -------------------------------------------------------------------------

def test_vocab_txt_and_tokenizer_json(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    a = WordPieceTokenizer.from_vocab_txt(tmp_path / "vocab.txt")
    a.save(tmp_path / "tokenizer.json")
    b = WordPieceTokenizer.load(tmp_path)  # the folder prefers tokenizer.json
    for t in ["Hello, unaffable!", "CAFÉ 日本", "", "[MASK] he"]:
        assert a.encode(t) == b.encode(t)
    assert b.vocab_size == len(TINY_VOCAB) and b.special_tokens["[CLS]"] == 2 and b.eos_id is None


@pytest.mark.parametrize("obj", [
    [], {"model": None}, {"model": {"type": "BPE", "vocab": {}}},
    {"model": {"type": "WordPiece", "vocab": {"a": -1}}},
    {"model": {"type": "WordPiece", "vocab": {"a": "x"}}},
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "normalizer": {"type": "NFKC"},
     "pre_tokenizer": {"type": "BertPreTokenizer"}},
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "normalizer": None, "pre_tokenizer": None},
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3},
               "max_input_chars_per_word": "x"}, "pre_tokenizer": {"type": "BertPreTokenizer"}},
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "pre_tokenizer": {"type": "BertPreTokenizer"}},
    {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3}},
     "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": {"type": "TemplateProcessing", "single": 3}},
])
def test_bad_tokenizer_json_is_a_dodai_error(tmp_path, obj):
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(DodaiError):
        WordPieceTokenizer.from_tokenizer_json(p)


def test_unreadable_files_are_dodai_errors(tmp_path):
    with pytest.raises(DodaiError):
        WordPieceTokenizer.from_tokenizer_json(tmp_path / "missing.json")
    (tmp_path / "t.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DodaiError):
        WordPieceTokenizer.from_tokenizer_json(tmp_path / "t.json")
    (tmp_path / "vocab.txt").write_text("a\nb\n")  # no [UNK]/[CLS]/…
    with pytest.raises(DodaiError):
        WordPieceTokenizer.from_vocab_txt(tmp_path / "vocab.txt")
    with pytest.raises(DodaiError):
        WordPieceTokenizer.load(tmp_path / "empty_dir_does_not_exist")


# -- parity with HF on the real MiniLM vocabulary --------------------------------------------------

VARIED = [
    "", " ", "   \t\n  ", "Hello, world!", "café naïve Ångström résumé Æsir façade", "日本語のテキスト",
    "中文分词测试", "한국어 텍스트", "mixed 日本 text with Ελληνικά and русский", "emoji 😀🎉 👍🏽 ❤️",
    "...!!!???---", "«quotes» „German“ ‘single’ — dash – en", "a" * 101, "pneumono" * 13,
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "https://example.com/a/b?c=d&e=f#frag",
    "user@example.org", "3.14159 1,000,000 2024-01-01 10:30pm $5.99 50%", "ctrl\x00\x01\x07x\x0b\x0cy\x7f\x1fz",
    "zero\u200bwidth\u200cjoin\u200d\ufeffbom", "nbsp\xa0here\u2028line\u2029para\u3000ideo",
    "ΣΑΣ Σίσυφος ΟΔΟΣ", "İstanbul ǅemal ß ﬁ", "[CLS] literal [SEP] specials [MASK] [UNK] [PAD]", "[mask] lower",
    "don't can't won't it's I'm they're we've", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３", "Ünïcödé\u0301 combining e\u0301",
    "tab\tseparated\tvalues\nnew line\r\nwindows", "x" * 300 + " short", "\ufffd replacement \ufffd",
    "math ∑∫√∞ ≤≥ ±×÷", "Hello world " * 50,
]


@pytest.fixture(scope="module")
def minilm_tokenizers(minilm_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))
    return hf, WordPieceTokenizer.load(minilm_dir), WordPieceTokenizer.load(minilm_dir / "vocab.txt")


def test_ids_identical_to_hf_on_varied_text(minilm_tokenizers):
    hf, ours, ours_txt = minilm_tokenizers
    for text in VARIED:
        want = hf(text)["input_ids"]
        assert ours.encode(text) == want, text
        assert ours_txt.encode(text) == want, text  # vocab.txt + tokenizer_config.json gives the same
        assert ours.decode(want) == hf.decode(want, skip_special_tokens=True), text


def test_pairs_truncation_and_batches_match_hf(minilm_tokenizers):
    hf, ours, _ = minilm_tokenizers
    pairs = [("hello world " * 3, "second text here is longer " * 4), ("a b c", "d"), ("long " * 40, "longer " * 50)]
    for a, b in pairs:
        for max_length in (None, 12, 20, 33):
            kw = {"truncation": "longest_first", "max_length": max_length} if max_length else {}
            want = hf(a, b, **kw)
            ids, types = ours.encode_pair(a, b, max_length=max_length)
            assert ids == want["input_ids"] and types == want["token_type_ids"], (a, b, max_length)
    for text in VARIED:
        assert ours.encode(text, max_length=16) == hf(text, truncation=True, max_length=16)["input_ids"]
    batch = VARIED[:8]
    want = hf(batch, padding=True)
    got = ours.encode_batch(batch)
    assert got.input_ids == want["input_ids"] and got.attention_mask == want["attention_mask"]


def test_saved_tokenizer_json_loads_identically_in_hf(minilm_tokenizers, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    _, ours, _ = minilm_tokenizers
    ours.save(tmp_path / "tokenizer.json")
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in VARIED:
        assert theirs.encode(text).ids == ours.encode(text), text
    ids, types = ours.encode_pair("first one", "and a second")
    enc = theirs.encode("first one", "and a second")
    assert enc.ids == ids and enc.type_ids == types


def _plain_backend(folder):
    """HF's Rust tokenizer from the folder's tokenizer.json, without the file's fixed padding/truncation."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_ids_identical_to_hf_on_random_text(minilm_tokenizers, minilm_dir):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    _, ours, _ = minilm_tokenizers
    backend = _plain_backend(minilm_dir)
    # Dense in the interesting blocks (controls, whitespace oddities, combining marks, CJK, kana, hangul,
    # fullwidth forms, emoji) and in pieces of special tokens; the next test covers all of Unicode.
    alphabet = st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x24F),  # ASCII, controls, Latin-1, Latin Extended
        st.characters(min_codepoint=0x300, max_codepoint=0x36F),  # combining diacritics
        st.characters(min_codepoint=0x370, max_codepoint=0x4FF),  # Greek, Cyrillic
        st.characters(min_codepoint=0x2000, max_codepoint=0x206F),  # general punctuation, spaces, Cf
        st.characters(min_codepoint=0x3000, max_codepoint=0x30FF),  # CJK punctuation, kana
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),  # CJK ideographs
        st.characters(min_codepoint=0xAC00, max_codepoint=0xAC80),  # hangul
        st.characters(min_codepoint=0xFF00, max_codepoint=0xFFEF),  # fullwidth forms
        st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F),  # emoji
    )
    pieces = st.one_of(st.text(alphabet=alphabet, max_size=8),
                       st.sampled_from(["[CLS]", "[MASK]", "[SEP", "##", "don't", " ", "\t", "\n", "cafe\u0301"]))

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(pieces, max_size=12).map("".join))
    def check(text):
        assert ours.encode(text) == backend.encode(text).ids

    check()


def test_ids_identical_to_hf_on_any_unicode(minilm_tokenizers, minilm_dir):
    """Any code point (Hypothesis' full text alphabet): the Unicode 8.0 class tables make this hold too."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    _, ours, _ = minilm_tokenizers
    backend = _plain_backend(minilm_dir)

    @hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
    @hypothesis.given(st.text(max_size=40))
    def check(text):
        assert ours.encode(text) == backend.encode(text).ids

    check()


def test_unicode8_tables_agree_with_unicodedata_except_known_changes():
    """The Unicode 8.0 class tables hold only characters that Python's (newer) unicodedata puts in the same
    class, except the three whose category Unicode changed since 8.0."""
    import unicodedata as u

    from dodai.tokenizers.wordpiece import _U8_MN, _U8_PUNCT, _U8_REMOVED, _parse_ranges

    changed = {0x166D, 0x111C9, 0x1734}  # Po→So (U+166D), Po→Mn (U+111C9), Mn→Mc (U+1734)
    checks = [(_U8_PUNCT, lambda c: u.category(c).startswith("P") or ord(c) < 128),
              (_U8_MN, lambda c: u.category(c) == "Mn"),
              (_U8_REMOVED, lambda c: u.category(c) in ("Cc", "Cf", "Co") or c == "\ufffd")]
    for spec, same_class in checks:
        starts, ends = _parse_ranges(spec)
        assert starts == sorted(starts) and all(a <= b for a, b in zip(starts, ends))
        odd = {cp for a, b in zip(starts, ends) for cp in range(a, b + 1) if not same_class(chr(cp))}
        assert odd <= changed, sorted(odd)


def test_compiled_fast_path_matches_per_character_reference():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from dodai.tokenizers.wordpiece import normalize_reference, pre_tokenize_reference

    variants = [dict(), dict(lowercase=False), dict(lowercase=False, strip_accents=True),
                dict(clean_text=False, handle_chinese_chars=False)]
    toks = [tiny(**v) for v in variants]

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True)
    @hypothesis.given(st.text(max_size=40))
    def check(text):
        for v, tok in zip(variants, toks):
            assert tok.normalize(text) == normalize_reference(text, **v)
        assert WordPieceTokenizer.pre_tokenize(text) == pre_tokenize_reference(text)

    check()
    for text in VARIED:
        assert toks[0].normalize(text) == normalize_reference(text)
        assert WordPieceTokenizer.pre_tokenize(toks[0].normalize(text)) == pre_tokenize_reference(
            normalize_reference(text))
