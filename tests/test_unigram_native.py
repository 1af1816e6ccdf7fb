"""The compiled Unigram encoder (dodai/tokenizers/_native/unigram.c) against the plain Python reference and
sentencepiece; the fast NFKC; building the C library (concurrently, without a compiler)."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.tokenizers import _native, unigram
from dodai.tokenizers.normalize import normalize, to_words
from dodai.tokenizers.unigram import UnigramTokenizer, nfkc
from dodai.tokenizers.unigram_reference import viterbi

HAVE_CC = _native._compiler() is not None and os.environ.get("DODAI_NATIVE", "1") != "0"


def _native_or_skip(tok: UnigramTokenizer):
    if not HAVE_CC:
        pytest.skip("no C compiler: the compiled encoder is not built here")
    nat = tok._native_encoder()
    assert nat is not None, "a C compiler exists but the native Unigram encoder did not build"
    return nat


def _reference_ids(tok: UnigramTokenizer, text: str) -> list[int]:
    """The plain oracle: normalise, split into words, O(n^2) Viterbi per word, ids of the path."""
    scores = {p: s for p, s in tok.vocab}
    ids: list[int] = []
    for seg, sid in tok._split_specials(text):
        if sid is not None:
            ids.append(sid)
            continue
        for w in to_words(normalize(seg)):
            ids.extend(tok._ids_of_path(w, viterbi(w, scores, tok.unk_score)))
    return ids


_ALPHA = "ab c▁日本語😀\u0301é"
_piece = st.text(alphabet=_ALPHA, min_size=1, max_size=4)
_text = st.text(alphabet=_ALPHA + "x\t\n\r\u3000\u00a0ﬁ①\x0b\x1c\x00", max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_piece, st.integers(-60, -1).map(lambda v: v / 4), min_size=1, max_size=25),
       _text, st.sampled_from(["bytes", "unk", "both"]))
def test_native_equals_reference_on_random_vocab_and_text(scores, text, mode):
    # quarter-integer scores make equal-score ties common: the tie order must match too
    meta = [("<unk>", 0.0)] if mode in ("unk", "both") else []
    if mode in ("bytes", "both"):
        meta += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    vocab = meta + [(p, s) for p, s in scores.items() if p not in dict(meta)]
    tok = UnigramTokenizer(vocab, unk_id=0 if mode != "bytes" else None, byte_fallback=mode != "unk",
                           special_tokens=[])
    _native_or_skip(tok)
    want = _reference_ids(tok, text)
    assert tok.encode(text) == want
    assert tok.encode_python(text) == want


@pytest.fixture(scope="module")
def tok() -> UnigramTokenizer:
    en, ja = SHARED_DATA / "austen.txt", SHARED_DATA / "ja_manpages.txt"
    if en.is_file() and ja.is_file():
        text = en.read_text(encoding="utf-8")[:12_000] + "\n" + ja.read_text(encoding="utf-8")[:8_000]
    else:
        import collections
        import json

        text = "\n".join([collections.__doc__, json.__doc__, "日本語の文章には単語の間に空白がありません。" * 30])
    return UnigramTokenizer.train(text, 700, character_coverage=0.999)


CASES = ["Hello world", "  a  b\n\nc ", "日本語のテキストです。", "emoji 😀🎉 unknown ☃ 𠮷", "ｆｕｌｌ ＡＢＣ ①",
         "tabs\tand\r\nnewlines\x0b\x0c", "", "   ", "▁ ▁▁x", "<s>special</s> <unk>", "e\u0301 é ﬁ", "x\x1cy\u2028z"]


def test_native_equals_python_on_real_text(tok):
    _native_or_skip(tok)
    texts = list(CASES)
    for name in ("austen.txt", "ja_manpages.txt"):
        p = SHARED_DATA / name
        if p.is_file():
            texts.append(p.read_text(encoding="utf-8")[-60_000:])
    for text in texts:
        tok._cache.clear()
        assert tok.encode(text) == tok.encode_python(text), text[:80]
    for text in CASES:
        assert tok.encode(text) == _reference_ids(tok, text), text


def test_without_unk_or_bytes_the_error_is_the_same():
    tok = UnigramTokenizer([("▁", -1.0), ("a", -2.0), ("b", -2.5)], unk_id=None, special_tokens=[])
    _native_or_skip(tok)
    assert tok.encode("ab ba") == tok.encode_python("ab ba") == [0, 1, 2, 0, 2, 1]
    with pytest.raises(DodaiError, match="cannot encode 'xy'"):
        tok.encode("ab xy")


def test_lone_surrogates_take_the_python_path(tok):
    _native_or_skip(tok)
    t = UnigramTokenizer([("<unk>", 0.0), ("▁", -1.0), ("a", -2.0)], unk_id=0)
    assert t.encode("a\ud800a") == t.encode_python("a\ud800a") == [1, 2, 0, 2]
    with pytest.raises(UnicodeEncodeError):  # as before: byte fallback cannot encode a lone surrogate
        tok.encode_python("a\ud800")
    with pytest.raises(UnicodeEncodeError):
        tok.encode("a\ud800")


def test_pickle_after_native_use(tok):
    _native_or_skip(tok)
    ids = tok.encode(CASES[3])
    again = pickle.loads(pickle.dumps(tok))
    assert again._native is None and again.encode(CASES[3]) == ids


def test_use_native_switch(tok, monkeypatch):
    calls = []
    monkeypatch.setattr(UnigramTokenizer, "encode_python", lambda self, text: calls.append(text) or [7])
    tok.use_native = False
    try:
        assert tok.encode("abc") == [7] and calls == ["abc"]
    finally:
        tok.use_native = True


def test_identical_ids_to_sentencepiece(tok):
    """A sentencepiece Unigram model's pieces and scores, loaded into dodai's tokenizer, encode English,
    Japanese, unknown characters and byte fallback exactly as sentencepiece does."""
    spm = pytest.importorskip("sentencepiece")
    _native_or_skip(tok)
    en, ja = SHARED_DATA / "austen.txt", SHARED_DATA / "ja_manpages.txt"
    if not (en.is_file() and ja.is_file()):
        pytest.skip("needs ../shared/data/austen.txt and ja_manpages.txt")
    ent, jat = en.read_text(encoding="utf-8"), ja.read_text(encoding="utf-8")
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter((ent[:40_000] + "\n" + jat[:40_000]).splitlines()),
                                   model_writer=f, vocab_size=1200, model_type="unigram", byte_fallback=True,
                                   character_coverage=0.995, minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    ours = UnigramTokenizer(vocab, unk_id=sp.unk_id(), byte_fallback=True)
    texts = ["Hello world, said Emma.", "日本語のテキストです。", "emoji 😀🎉 unknown ☃ 𠮷 Ω ß"]
    for long in (ent[-20_000:], jat[-20_000:]):
        # only lines that both normalise alike (sentencepiece's nmt_nfkc also drops format characters
        # such as U+200E, which plain NFKC keeps); "<" would make "<unk>"/"<s>" specials for dodai
        lines = [ln for ln in long.replace("<", "(").splitlines()
                 if sp.normalize(ln) == "".join(to_words(normalize(ln)))]
        assert len(lines) > 0.95 * len(long.splitlines())
        texts.append("\n".join(lines))
    for text in texts:
        assert ours.encode(text) == sp.encode(text), text[:60]
    assert ours.encode(texts[2]) == ours.encode_python(texts[2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="aé\u0301\u0327\u3099か\u309bﬁ①Ａ\u1100\u1161\u11a8 \t", max_size=12), max_size=12))
def test_fast_nfkc_equals_unicodedata(lines):
    old = unigram._NFKC_CHUNK
    unigram._NFKC_CHUNK = 8  # tiny chunks: every cut position gets exercised
    try:
        text = "\n".join(lines)
        assert nfkc(text) == unicodedata.normalize("NFKC", text)
    finally:
        unigram._NFKC_CHUNK = old


_SCRIPT = """
import sys
from dodai.tokenizers.unigram import UnigramTokenizer
t = UnigramTokenizer([("<unk>", 0.0), ("▁", -1.0), ("a", -2.0), ("▁ab", -2.5), ("b", -3.0)], unk_id=0)
print(t._native_encoder() is not None, t.encode("ab ba xa"))
"""
# by hand: "▁ab" whole (-2.5 beats ▁+a+b = -6), "▁ba" = ▁ b a, "▁xa" = ▁ <unk> a
WANT = "[3, 1, 4, 2, 1, 0, 2]"


def _run(cache: Path, **env) -> subprocess.Popen:
    e = dict(os.environ, DODAI_CACHE=str(cache), PYTHONPATH=str(REPO), **env)
    return subprocess.Popen([sys.executable, "-c", _SCRIPT], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_concurrent_builds_into_an_empty_cache(tmp_path):
    if not HAVE_CC:
        pytest.skip("no C compiler")
    procs = [_run(tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "True " + WANT, (out, err)
        assert err == ""
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].name.startswith("unigram-"), built  # no temporary files left


def test_without_a_compiler_a_notice_and_the_python_path(tmp_path):
    p = _run(tmp_path, CC=str(tmp_path / "no-such-cc"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.strip() == "False " + WANT
    assert len(err.strip().splitlines()) == 1 and "no C compiler" in err and "pure-Python" in err
    assert not (tmp_path / "native").exists()


def test_a_failing_compiler_is_reported_once(tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'fatal: broken compiler' >&2\nexit 1\n")
    fake.chmod(0o755)
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    p = _run(tmp_path, CC=str(fake))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.strip() == "False " + WANT
    assert len(err.strip().splitlines()) == 1 and "broken compiler" in err
    assert [f.name for f in (tmp_path / "native").iterdir()] == []  # the temporary output was removed
