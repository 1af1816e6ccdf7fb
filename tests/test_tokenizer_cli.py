"""`dodai tokenizer train | encode | decode`, end to end, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dodai.cli import main

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. 日本語も少し。\n") * 40


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _ok(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out


def _err(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    assert rc == 2
    msg = out.err.strip()
    assert msg.startswith("dodai: error:") and "\n" not in msg and "Traceback" not in msg
    return msg


def test_train_encode_decode_bpe(tmp_path, data, capsys):
    out_dir = tmp_path / "tok"
    err = _ok(capsys, "tokenizer", "train", "--data", str(data), "--vocab-size", "300", "--out", str(out_dir)).err
    assert "bytes/token" in err and "vocab" in err
    assert (out_dir / "tokenizer.json").is_file()
    text = "a single man 日本語 <|endoftext|>"
    ids = json.loads(_ok(capsys, "tokenizer", "encode", "--tokenizer", str(out_dir), text).out)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    from dodai.tokenizers.bpe import ByteLevelBPE

    tok = ByteLevelBPE.load(out_dir)
    assert ids == tok.encode(text) and tok.special_tokens["<|endoftext|>"] == ids[-1]
    assert len(ids) < len(text.encode())  # merges were learned and used
    back = _ok(capsys, "tokenizer", "decode", "--tokenizer", str(out_dir / "tokenizer.json"), json.dumps(ids)).out
    assert back == text + "\n"


def test_train_char_and_options(tmp_path, data, capsys):
    out_dir = tmp_path / "c"
    _ok(capsys, "tokenizer", "train", "--data", str(data), "--out", str(out_dir), "--algo", "char")
    ids = json.loads(_ok(capsys, "tokenizer", "encode", "--tokenizer", str(out_dir), "a man").out)
    chars = sorted(set(TEXT))
    assert ids == [chars.index(c) for c in "a man"]
    d2 = tmp_path / "g2"
    _ok(capsys, "tokenizer", "train", "--data", str(data), str(data), "--out", str(d2), "--vocab-size", "280",
        "--pattern", "gpt2", "--special", "<s>", "</s>")
    tj = json.loads((d2 / "tokenizer.json").read_text(encoding="utf-8"))
    assert [t["content"] for t in tj["added_tokens"]] == ["<s>", "</s>"]
    assert "\\p{N}+" in tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]


def test_errors_are_one_line(tmp_path, data, capsys):
    out = str(tmp_path / "o")
    assert "no such file" in _err(capsys, "tokenizer", "train", "--data", str(tmp_path / "nope.txt"),
                                  "--vocab-size", "300", "--out", out)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _err(capsys, "tokenizer", "train", "--data", str(empty), "--vocab-size", "300", "--out", out)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 ol\xe9".encode("latin-1"))
    assert "UTF-8" in _err(capsys, "tokenizer", "train", "--data", str(binary), "--vocab-size", "300", "--out", out)
    assert "too small" in _err(capsys, "tokenizer", "train", "--data", str(data), "--vocab-size", "100",
                               "--out", out)
    assert "too large" in _err(capsys, "tokenizer", "train", "--data", str(data), "--vocab-size", "99999999",
                               "--out", out)
    assert "--vocab-size" in _err(capsys, "tokenizer", "train", "--data", str(data), "--out", out)
    assert "algorithm" in _err(capsys, "tokenizer", "encode", "--tokenizer", "char", "x")
    assert "neither" in _err(capsys, "tokenizer", "encode", "--tokenizer", str(tmp_path / "missing"), "x")
    _ok(capsys, "tokenizer", "train", "--data", str(data), "--out", out, "--algo", "char")
    assert "not in the char" in _err(capsys, "tokenizer", "encode", "--tokenizer", out, "Zebra!")
    assert "JSON" in _err(capsys, "tokenizer", "decode", "--tokenizer", out, "[1, 2")
    assert "integers" in _err(capsys, "tokenizer", "decode", "--tokenizer", out, '["a"]')
    assert "not in the vocabulary" in _err(capsys, "tokenizer", "decode", "--tokenizer", out, "[100000]")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "JSON" in _err(capsys, "tokenizer", "encode", "--tokenizer", str(bad), "x")


def test_registry_name_is_accepted(minilm_dir, capsys):
    # A registry name resolves to the model's tokenizer; all-MiniLM is WordPiece, which another module
    # reads: either it works, or the error says so in one line.
    rc = main(["tokenizer", "encode", "--tokenizer", "all-minilm-l6-v2", "hello"])
    out = capsys.readouterr()
    if rc == 0:
        assert json.loads(out.out)
    else:
        assert "WordPiece" in out.err and out.err.count("\n") == 1


def test_subprocess_round_trip(tmp_path, data):
    d = tmp_path / "t"
    r = subprocess.run([sys.executable, "-m", "dodai", "tokenizer", "train", "--data", str(data), "--vocab-size",
                        "280", "--out", str(d)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and "bytes/token" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dodai", "tokenizer", "encode", "--tokenizer", str(d), "-"],
                       input="good fortune", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)


def test_load_tokenizer_dispatch(tmp_path, smollm2_gguf, capsys):
    from dodai.errors import DodaiError
    from dodai.tokenizers import load_tokenizer
    from dodai.tokenizers.bpe import ByteLevelBPE

    # A GGUF path and its registry name give the same byte-level BPE (the GGUF reader is another module's).
    by_path = load_tokenizer(smollm2_gguf)
    assert isinstance(by_path, ByteLevelBPE)
    text = "Hello, world! 123 日本語"
    ids = json.loads(_ok(capsys, "tokenizer", "encode", "--tokenizer", "smollm2-135m-instruct", text).out)
    assert ids == by_path.encode(text) and by_path.decode(ids) == text
    for bad in ("bpe", "char", str(tmp_path), str(tmp_path / "x.gguf")):
        with pytest.raises(DodaiError):
            load_tokenizer(bad)
