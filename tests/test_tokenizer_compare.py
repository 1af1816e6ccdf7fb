"""`dodai tokenizer compare`: every row present, the table's invariants, and its one-line errors."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from dodai.cli import main
from dodai.errors import DodaiError
from dodai.tokenizers.compare import compare, markdown_table, split_text


@pytest.fixture(scope="module")
def text():
    from dodai.data.corpora import load_corpus

    return load_corpus("python-docs")[:40_000]


def _benchmark_references():
    """The reference trainers live in benchmarks/ (dodai never imports HF tokenizers or sentencepiece)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "tokenizer_compare.py"
    spec = importlib.util.spec_from_file_location("_tokenizer_compare_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.available_references()


@pytest.fixture(scope="module")
def rows(text):
    return compare(text, vocab_size=400, references=_benchmark_references())


def test_dodai_alone_has_only_dodai_rows(text):
    got = {(r.name, r.library) for r in compare(text[:20_000], vocab_size=350)}
    assert got == {("BPE (byte-level)", "dodai"), ("Unigram", "dodai"), ("WordPiece", "dodai")}


def test_split_is_90_10(text):
    tr, te = split_text(text)
    assert tr + te == text
    assert abs(len(te) - 0.1 * len(text)) <= 1


def test_all_rows_present(rows):
    got = {(r.name, r.library) for r in rows}
    want = {("BPE (byte-level)", "dodai"), ("Unigram", "dodai"), ("WordPiece", "dodai")}
    if importlib.util.find_spec("tokenizers"):
        want |= {("BPE (byte-level)", "HF tokenizers"), ("Unigram", "HF tokenizers"),
                 ("WordPiece", "HF tokenizers")}
    if importlib.util.find_spec("sentencepiece"):
        want.add(("Unigram", "sentencepiece"))
    assert got == want


def test_table_invariants(rows, text):
    _, held = split_text(text)
    bytes_per_char = len(held.encode("utf-8")) / len(held)
    for r in rows:
        nums = (r.bytes_per_token, r.tokens_per_char, r.vocab_used, r.encode_mb_s, r.train_s)
        assert all(math.isfinite(x) and x >= 0 for x in nums), r
        assert 0 < r.vocab_used <= 1, r
        assert 0 < r.vocab_size <= 400, r
        # the two ratios are two views of one token count
        assert r.bytes_per_token * r.tokens_per_char == pytest.approx(bytes_per_char, rel=1e-9), r
        assert r.encode_mb_s > 0 and r.train_s > 0, r
    for r in rows:
        if r.name == "BPE (byte-level)":
            assert r.bytes_per_token > 1.0, r  # merges beyond the 256 bytes do compress


def test_dodai_bpe_row_matches_its_tokenizer(rows, text):
    from dodai.tokenizers.bpe import ByteLevelBPE

    tr, held = split_text(text)
    tok = ByteLevelBPE.train(tr, 400, special_tokens=["<|endoftext|>"])
    (row,) = [r for r in rows if r.name == "BPE (byte-level)" and r.library == "dodai"]
    assert row.tokens_per_char == pytest.approx(len(tok.encode(held)) / len(held))


def test_markdown_table(rows):
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| tokenizer | library | vocab | bytes/token")
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == 9 for line in table)


def test_cli_compare(tmp_path, capsys, text):
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")
    rc = main(["tokenizer", "compare", "--data", str(p), "--vocab-size", "350", "--max-bytes", "20000",
               "--no-reference"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.strip().splitlines()
    assert len(lines) == 5 and all("| dodai |" in line for line in lines[2:])
    assert "training dodai WordPiece" in out.err


@pytest.mark.parametrize("argv,msg", [
    (["--vocab-size", "100"], "too small"),
    (["--max-bytes", "0"], "--max-bytes"),
    (["--max-bytes", "500"], "too short"),
    (["--vocab-size", "5000"], "too large"),  # 5,000 characters of text cannot fill it
])
def test_cli_errors(tmp_path, capsys, text, argv, msg):
    p = tmp_path / "t.txt"
    p.write_text(text[:5000], encoding="utf-8")
    rc = main(["tokenizer", "compare", "--data", str(p), "--no-reference", *argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and msg in errors[0]


def test_missing_file(tmp_path, capsys):
    rc = main(["tokenizer", "compare", "--data", str(tmp_path / "nope.txt")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_empty_text_is_an_error():
    with pytest.raises(DodaiError, match="too short"):
        compare("   \n" * 10, 400, references=False)
