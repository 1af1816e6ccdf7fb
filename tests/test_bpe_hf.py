"""Byte-level BPE vs HF ``tokenizers``: our tokenizer.json in HF, HF's tokenizer.json in dodai,
identical ids both ways; hostile tokenizer.json files."""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers import load_tokenizer
from dodai.tokenizers.bpe import ByteLevelBPE

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
tokenizers = pytest.importorskip("tokenizers")

VARIED = [
    "Hello world! It's a test, isn't it? I'M SHOUTING, YOU'LL SEE.",
    "日本語のテキストです。東京は大きい都市です。「かぎかっこ」と、句読点。",
    "def main(argv):\n    for i in range(10):\n        print(f'{i:>3}')  # comment\n\treturn 0\n",
    "emoji 🙂🙂 family 👩‍👩‍👧 flag 🇯🇵 skin 👍🏽 and combining e\u0301 a\u0308",
    "   leading spaces, trailing spaces   \n\n\n  \t\t mixed\r\n\r\nwindows lines  ",
    "numbers 1234567890 3.14159 1,000,000 ١٢٣٤ ½ Ⅻ and 2026-11-27T21:30:00Z",
    "<|endoftext|>doc one<|endoftext|><|endoftext|> doc two <|endoftext|>",
    "Ωmega café naïve straße ÇA ИВАН Ελληνικά עברית العربية हिन्दी",
    "",
    " ",
    "\n",
    "a" * 300 + " " + "ab" * 100,
]


def _corpus() -> str:
    rng = random.Random(0)
    syl = ["ka", "to", "ri", "sen", "mo", "la", "the", "ing", "本", "語", "é", "ön", " ", "'s", "12", "\n"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 4))) for _ in range(500)]
    return " ".join(rng.choice(words) for _ in range(8000)) + "\n" + "\n".join(VARIED)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    tok = ByteLevelBPE.train(_corpus(), 600, special_tokens=["<|endoftext|>", "<|im_start|>"])
    path = tok.save(tmp_path_factory.mktemp("ours"))
    return tok, path


def _hf_ids(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


def test_hf_loads_our_file_and_agrees(ours):
    tok, path = ours
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == tok.vocab_size
    for text in VARIED + [_corpus()[:5000]]:
        ids = tok.encode(text)
        assert _hf_ids(hf, text) == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_hf_agrees_on_random_text(ours, s):
    tok, path = ours
    hf = _hf_cached(path)
    assert _hf_ids(hf, s) == tok.encode(s)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 599), max_size=20))
def test_hf_decodes_arbitrary_ids_the_same(ours, ids):
    # Includes cut UTF-8 sequences: both replace invalid bytes with U+FFFD the same way.
    tok, path = ours
    assert _hf_cached(path).decode(ids, skip_special_tokens=False) == tok.decode(ids)


_HF_CACHE: dict = {}


def _hf_cached(path):
    if path not in _HF_CACHE:
        _HF_CACHE[path] = tokenizers.Tokenizer.from_file(str(path))
    return _HF_CACHE[path]


def test_reload_is_identical(ours):
    tok, path = ours
    again = ByteLevelBPE.load(path)
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    assert again.vocab_size == tok.vocab_size
    assert type(load_tokenizer(path.parent)) is ByteLevelBPE
    for text in VARIED:
        assert again.encode(text) == tok.encode(text)


def _hf_trained(tmp_path, pre_tokenizer, name, add_prefix_space=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizer
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([_corpus()], trainer=trainer)
    path = tmp_path / f"{name}.json"
    hf.save(str(path))
    return hf, path


def _check_hf_file(hf, path):
    tok = ByteLevelBPE.load(path)
    assert tok.vocab_size == hf.get_vocab_size()
    for text in VARIED + [_corpus()[:3000]]:
        assert tok.encode(text) == _hf_ids(hf, text), text
        assert tok.decode(tok.encode(text)) == text or tok.pretokenizer.add_prefix_space
    return tok


def test_we_agree_with_hf_bytelevel_bpe_tokenizer(tmp_path):
    # HF's ready-made ByteLevelBPETokenizer: ByteLevel(use_regex=True), i.e. the GPT-2 pattern.
    from tokenizers import ByteLevelBPETokenizer

    for aps in (False, True):
        hf = ByteLevelBPETokenizer(add_prefix_space=aps)
        hf.train_from_iterator([_corpus()], vocab_size=700, special_tokens=["<|endoftext|>"], show_progress=False)
        path = tmp_path / f"bl{aps}.json"
        hf.save(str(path))
        tok = _check_hf_file(hf, path)
        assert tok.pretokenizer.add_prefix_space is aps


def test_we_agree_with_hf_split_regex_sequence(tmp_path):
    from tokenizers import Regex, pre_tokenizers

    from dodai.tokenizers.pretokenize import GPT4_PATTERN

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf, path = _hf_trained(tmp_path, pre, "split")
    _check_hf_file(hf, path)


def test_we_agree_with_hf_digits_then_bytelevel(tmp_path):
    # The SmolLM2 arrangement: every digit alone, then the GPT-2 regex.
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    hf, path = _hf_trained(tmp_path, pre, "digits")
    tok = _check_hf_file(hf, path)
    assert tok.encode("12") == [tok.encode("1")[0], tok.encode("2")[0]]


def test_we_agree_with_hf_ignore_merges(tmp_path, ours):
    # Llama-3-style ignore_merges: a pre-token that is itself in the vocabulary maps to it directly.
    tok, path = ours
    d = json.loads(path.read_text(encoding="utf-8"))
    d["model"]["ignore_merges"] = True
    # A token only reachable as a whole word, not by merges: merges alone would never produce it.
    d["model"]["vocab"]["Ġzzqx"] = max(d["model"]["vocab"].values()) + 1
    p2 = tmp_path / "im.json"
    p2.write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(p2))
    mine = ByteLevelBPE.load(p2)
    for text in VARIED + ["a zzqx b zzqxzzqx"]:
        assert mine.encode(text) == _hf_ids(hf, text)
    assert mine.encode(" zzqx") == [d["model"]["vocab"]["Ġzzqx"]]


def test_hostile_tokenizer_files(tmp_path, ours):
    tok, path = ours
    raw = path.read_bytes()
    rng = random.Random(0)
    cases = [b"", b"{", b"[]", b'{"model": 3}', b"\xff\xfe", b'{"model": {"type": "BPE", "vocab": [], "merges": []}}',
             raw[: len(raw) // 2], raw.replace(b'"BPE"', b'"Nope"')]
    for _ in range(60):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(b))
            b[i] = rng.choice(b'{}[]",:0123456789 aZ\\')
        cases.append(bytes(b))
    d = json.loads(raw)
    for key, val in [("vocab", {"a": "b"}), ("merges", [[1, 2]]), ("merges", ["a"]), ("vocab", {"a": -1}),
                     ("dropout", 0.1)]:
        d2 = json.loads(raw)
        d2["model"][key] = val
        cases.append(json.dumps(d2).encode())
    d["pre_tokenizer"] = {"type": "Whitespace"}
    cases.append(json.dumps(d).encode())
    bad = tmp_path / "bad.json"
    for c in cases:
        bad.write_bytes(c)
        try:
            t = load_tokenizer(bad)
        except DodaiError as e:
            assert "\n" not in str(e)
            continue
        # A mutation that still parses must give a working tokenizer.
        t.decode(t.encode("hello 日本"))


def test_prefix_space_where_hf_puts_it(tmp_path):
    # Sequence[Digits, ByteLevel(add_prefix_space=True)]: HF adds the space to every digit-split piece.
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    hf, path = _hf_trained(tmp_path, pre, "digits_aps")
    tok = ByteLevelBPE.load(path)
    for text in VARIED + ["a1b22c", "x 9"]:
        assert tok.encode(text) == _hf_ids(hf, text), text
    # ... and our re-saved file means the same to HF (the prefix step stays inside ByteLevel).
    p2 = tok.save(tmp_path / "resaved.json")
    hf2 = tokenizers.Tokenizer.from_file(str(p2))
    for text in VARIED + ["a1b22c"]:
        assert _hf_ids(hf2, text) == tok.encode(text)


def test_resave_of_hf_prefix_space_tokenizer(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    hf = ByteLevelBPETokenizer(add_prefix_space=True)
    hf.train_from_iterator([_corpus()], vocab_size=500, show_progress=False)
    path = tmp_path / "aps.json"
    hf.save(str(path))
    p2 = ByteLevelBPE.load(path).save(tmp_path / "again.json")
    hf2 = tokenizers.Tokenizer.from_file(str(p2))
    for text in VARIED + ["\nfoo", "foo"]:
        assert _hf_ids(hf2, text) == _hf_ids(hf, text), text


def test_missing_byte_tokens_are_dropped_like_hf(tmp_path, ours):
    # Some real vocabularies (SmolLM2's) lack a few byte tokens; HF drops such bytes before merging.
    from dodai.tokenizers.pretokenize import BYTE_ENCODER

    tok, path = ours
    d = json.loads(path.read_text(encoding="utf-8"))
    used = {c for m in d["model"]["merges"] for s in m for c in s}
    gone = [BYTE_ENCODER[b] for b in (0x01, 0x04, 0xC0, 0xFF) if BYTE_ENCODER[b] not in used]
    assert gone
    for s in gone:
        del d["model"]["vocab"][s]
    p2 = tmp_path / "missing.json"
    p2.write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(p2))
    mine = ByteLevelBPE.load(p2)
    for text in VARIED + ["a\x01b \x04\x04 xy\x01z"]:
        assert mine.encode(text) == _hf_ids(hf, text)
    with pytest.raises(DodaiError, match="256"):
        ByteLevelBPE.from_vocab_merges(d["model"]["vocab"], d["model"]["merges"], "gpt4")
