"""Corpora, train/val preparation and batching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.data import corpora
from dodai.data.batching import get_batch, make_generator, to_tensor
from dodai.data.prepare import load_split, prepare, split_documents
from dodai.errors import DodaiError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ corpora
def test_clean_doc_drops_doctests_and_tidies_whitespace():
    doc = "Add two numbers.\n\n>>> add(1, 2)\n3\n\nWorks\tfor ints.   \n\n\n\nAnd floats."
    assert corpora.clean_doc(doc) == "Add two numbers.\n\nWorks    for ints.\n\nAnd floats."


def test_python_docs_on_a_fake_stdlib(tmp_path):
    (tmp_path / "b.py").write_text('"""Module b docstring, long enough to be kept by the filter."""\n'
                                   'def f():\n    """Return self."""\n')
    (tmp_path / "a.py").write_text('class A:\n    """Class A docstring, long enough to be kept by the filter."""\n'
                                   'def g():\n    """Module b docstring, long enough to be kept by the filter."""\n')
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "c.py").write_text('"""A test module docstring that must be skipped entirely."""\n')
    (tmp_path / "bad.py").write_text("def (:\n")  # syntax error: skipped, not fatal
    (tmp_path / "pydoc_data").mkdir()
    (tmp_path / "pydoc_data" / "topics.py").write_text(
        "topics = {'z': 'Topic z text that is long enough to pass the filter.',\n"
        "          'a': 'Topic a text, also long enough.'}\n"
    )
    docs = corpora.python_docs_documents(tmp_path)
    # sorted files (a.py before b.py); b's module docstring repeats a.g's and is dropped; 'Return self.'
    # and the 31-char topic 'a' are too short; test/ and the broken file are skipped; topics come last.
    assert docs == [
        "Class A docstring, long enough to be kept by the filter.",
        "Module b docstring, long enough to be kept by the filter.",
        "Topic z text that is long enough to pass the filter.",
    ]
    assert corpora.build_python_docs(tmp_path) == corpora.build_python_docs(tmp_path)  # deterministic


def test_builtin_corpus_is_about_2mb_of_clean_prose():
    # the user's cache (built on first use, like `dodai speedrun` does); building is tested on a fake stdlib above
    p = corpora.corpus_path("python-docs")
    assert p.parent == corpora.cache_dir() / "corpora" and p.name.startswith("python-docs-3.")
    text = p.read_text(encoding="utf-8")
    docs = corpora.corpus_documents("python-docs")
    assert text == corpora.DOC_SEP.join(docs) + "\n"
    assert len(docs) == len(set(docs)) > 1000 and min(map(len, docs)) >= corpora.MIN_CHARS
    assert 1_000_000 < len(text.encode()) < 5_000_000
    assert ">>>" not in text
    assert text.endswith("\n") and not text.startswith("\n")
    assert "\n\n\n" not in text
    with pytest.raises(DodaiError, match="unknown corpus"):
        corpora.corpus_path("nope")


# ------------------------------------------------------------------------------------------ prepare
def test_single_file_split_is_nanogpts(tmp_path):
    f = tmp_path / "t.txt"
    text = "".join(chr(97 + i % 26) for i in range(1000))
    f.write_text(text)
    meta = prepare(f, tmp_path / "out")
    train = (tmp_path / "out" / "train.txt").read_text()
    val = (tmp_path / "out" / "val.txt").read_text()
    assert train == text[:900] and val == text[900:]
    assert meta["train_chars"] == 900 and meta["val_chars"] == 100 and meta["documents"] == 1
    m = json.loads((tmp_path / "out" / "meta.json").read_text())
    import hashlib

    assert m["train_sha256"] == hashlib.sha256(train.encode()).hexdigest()


def test_document_split_is_stable_when_documents_are_added():
    docs = [f"document number {i} " * 3 for i in range(200)]
    tr1, va1, _ = split_documents(docs, 0.1, seed=0)
    tr2, va2, _ = split_documents(docs + [f"new doc {i}" for i in range(50)], 0.1, seed=0)
    val1 = set(va1.split("\n\n"))
    val2 = set(va2.split("\n\n"))
    assert val1 and val1 <= val2  # nothing moved out of val
    assert set(tr1.split("\n\n")) <= set(tr2.split("\n\n"))
    assert 5 <= len(val1) <= 40  # about 10 % of 200


def test_two_documents_both_sides_nonempty():
    tr, va, _ = split_documents(["alpha " * 10, "beta " * 10], 0.1)
    assert tr and va and tr != va


def test_folder_and_jsonl(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    for i in range(30):
        (d / ("sub" if i % 2 else ".") / f"f{i:02d}.md").write_text(f"text of file {i}\n")
    (d / "ignored.bin").write_bytes(b"\x00\x01")
    (d / "empty.txt").write_text("")
    s = load_split(d)
    assert s.meta["documents"] == 30 and s.meta["kind"] == "folder"
    assert len((s.train + "\n\n" + s.val).split("\n\n")) == 30
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps({"body": f"row {i} text"}) for i in range(20)) + "\n\n")
    s = load_split(j, text_field="body")
    assert s.meta["documents"] == 20 and s.meta["kind"] == "jsonl"


@pytest.mark.parametrize(
    "content, field, match",
    [
        (b'{"text": "ok"}\n{bad json\n', "text", r"d\.jsonl:2: not valid JSON"),
        (b'{"text": "ok"}\n[1, 2]\n', "text", r":2: expected a JSON object"),
        (b'{"text": "ok"}\n{"other": "x"}\n', "text", r":2: no 'text' field"),
        (b'{"text": 5}\n', "text", r":1: field 'text' is int"),
        (b'{"text": "  "}\n', "text", "no non-empty"),
    ],
)
def test_bad_jsonl_lines_name_the_line(tmp_path, content, field, match):
    p = tmp_path / "d.jsonl"
    p.write_bytes(content)
    with pytest.raises(DodaiError, match=match):
        load_split(p, text_field=field)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: (d / "e.txt").write_text("") and None or d / "e.txt", "empty"),
        (lambda d: (d / "b.txt").write_bytes(b"abc\x00def" * 10) and None or d / "b.txt", "binary"),
        (lambda d: (d / "l.txt").write_bytes("caf\xe9 au lait".encode("latin-1")) and None or d / "l.txt", "UTF-8"),
        (lambda d: (d / "f").mkdir() or d / "f", "no .txt or .md"),
        (lambda d: (d / "s.txt").write_text("x") and None or d / "s.txt", "too short"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, make, match):
    with pytest.raises(DodaiError, match=match) as e:
        load_split(make(tmp_path))
    assert "\n" not in str(e.value)


def test_bad_val_fraction(tmp_path):
    with pytest.raises(DodaiError, match="val fraction"):
        split_documents(["a", "b"], 1.5)


def test_cli_list_and_show(capsys):
    from dodai.cli import main

    assert main(["data", "list"]) == 0
    assert "python-docs" in capsys.readouterr().out
    assert main(["data", "show", "python-docs", "--chars", "200"]) == 0
    assert len(capsys.readouterr().out.strip()) > 100
    assert main(["data", "show", "no-such-corpus"]) == 2
    assert "unknown corpus" in capsys.readouterr().err


def test_cli_prepare_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world, " * 50)
    run = lambda *a: subprocess.run([sys.executable, "-m", "dodai", "data", *a], capture_output=True, text=True,
                                    cwd=REPO, timeout=60)
    r = run("prepare", str(f), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["documents"] == 1
    assert (tmp_path / "o" / "val.txt").is_file()
    r = run("prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o2"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)))
    r = run("prepare", str(tmp_path / "bin.txt"), "--out", str(tmp_path / "o3"))
    assert r.returncode != 0 and r.stderr.startswith("dodai: error:")


# ------------------------------------------------------------------------------------------ batching
def test_to_tensor_dtypes():
    assert to_tensor([1, 2, 3], 65).dtype == torch.uint16
    assert to_tensor([1, 70000], 70001).dtype == torch.int32
    with pytest.raises(DodaiError):
        to_tensor([[1, 2]])


def test_get_batch_windows_and_targets():
    data = to_tensor(torch.arange(500) % 251, 251)
    x, y = get_batch(data, 16, 8, make_generator(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    full = (torch.arange(500) % 251).long()
    for row in x:  # every row is a real contiguous window of the stream
        i = int(torch.nonzero(full == row[0])[0])
        assert torch.equal(full[i : i + 16], row) or torch.equal(full[i + 251 : i + 267], row)


def test_generator_state_is_the_data_position():
    data = to_tensor(torch.arange(1000), 1000)
    g = make_generator(3)
    get_batch(data, 8, 4, g)
    saved = g.get_state()
    a = get_batch(data, 8, 4, g)
    g2 = make_generator(999)
    g2.set_state(saved)
    b = get_batch(data, 8, 4, g2)
    assert torch.equal(a[0], b[0])


@given(world=st.sampled_from([1, 2, 3, 4]), seed=st.integers(0, 2**31))
@settings(max_examples=25, deadline=None)
def test_rank_shards_reassemble_the_global_batch(world, seed):
    data = to_tensor(torch.arange(300), 300)
    full, _ = get_batch(data, 5, 12, make_generator(seed))
    parts = [get_batch(data, 5, 12, make_generator(seed), r, world)[0] for r in range(world)]
    assert torch.equal(torch.cat(parts), full)


def test_get_batch_errors():
    with pytest.raises(DodaiError, match="need at least"):
        get_batch(to_tensor([1, 2, 3], 4), 8, 2, make_generator(0))
    with pytest.raises(DodaiError, match="divisible"):
        get_batch(to_tensor(list(range(100)), 100), 8, 3, make_generator(0), 0, 2)


def test_char_split_and_vocab_equal_nanogpts_prepare(tinyshakespeare):
    # nanoGPT data/shakespeare_char/prepare.py: chars = sorted(set(data)); first 90 % train, last 10 % val
    data = tinyshakespeare.read_text(encoding="utf-8")
    chars = sorted(set(data))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(data)
    ref_train = [stoi[c] for c in data[: int(n * 0.9)]]
    ref_val = [stoi[c] for c in data[int(n * 0.9) :]]
    from dodai.commands.pretrain import build_tokenizer, encode

    s = load_split(tinyshakespeare)
    tok = build_tokenizer("char", s.train, s.train + s.val, 0)
    assert tok.vocab_size == len(chars) == 65
    assert encode(tok, s.train).long().tolist() == ref_train
    assert encode(tok, s.val).long().tolist() == ref_val
