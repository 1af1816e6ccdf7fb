"""CharTokenizer: nanoGPT's shakespeare_char ids, round trips, tokenizer.json that HF also reads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers import load_tokenizer
from dodai.tokenizers.char import CharTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. 日本 🙂\t"


def test_ids_match_nanogpt_prepare():
    tok = CharTokenizer.train(TEXT)
    chars = sorted(list(set(TEXT)))  # nanoGPT shakespeare_char/prepare.py
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert tok.vocab_size == len(chars)
    assert tok.encode(TEXT) == [stoi[c] for c in TEXT]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.special_tokens == {} and tok.eos_id is None


def test_tinyshakespeare_has_65_chars(tinyshakespeare):
    tok = CharTokenizer.train(tinyshakespeare.read_text(encoding="utf-8"))
    assert tok.vocab_size == 65  # nanoGPT's shakespeare_char reports vocab size 65
    assert tok.encode("\n !") == [0, 1, 2]


def test_unknown_character_is_named():
    tok = CharTokenizer.train("abc")
    with pytest.raises(DodaiError, match="'z'.*position 2"):
        tok.encode("abz")
    with pytest.raises(DodaiError):
        tok.decode([3])
    with pytest.raises(DodaiError):
        tok.decode([-1])
    with pytest.raises(DodaiError):
        CharTokenizer.train("")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_round_trip_property(s):
    tok = CharTokenizer.train(s)
    assert tok.decode(tok.encode(s)) == s
    assert tok.encode(s[::-1]) == tok.encode(s)[::-1]


def test_save_load_and_hf_agrees(tmp_path):
    tok = CharTokenizer.train(TEXT)
    path = tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in (TEXT, "   ", "\n\n", "Speak 日本🙂"):
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert hf.decode(ids) == text


def test_hostile_char_files(tmp_path):
    d = CharTokenizer.train("abc").to_hf_dict()
    bad = tmp_path / "t.json"
    for vocab in ({"ab": 0}, {"a": 0, "b": 2}, {"a": "0"}, {}, {"a": 0, "b": 0}):
        d["model"]["vocab"] = vocab
        bad.write_text(json.dumps(d))
        with pytest.raises(DodaiError):
            CharTokenizer.load(bad)
