"""Folders the user hands us (a model folder, a RAG index, a memory folder) hold JSON files that dodai parses:
each reader opens only a regular file, caps what it reads, and turns JSON nested past the parser's recursion
limit, a FIFO with no writer, invalid UTF-8 or a non-JSON file into one DodaiError line — never a traceback or
a hang (regression: a config.json of 200,000 ``[`` raised RecursionError from ``dodai generate --model DIR``)."""

from __future__ import annotations

import os
import time

import pytest

from dodai.errors import DodaiError
from dodai.io import read_user_json

DEEP = "[" * 200_000 + "]" * 200_000


def _bad_files(d):
    """(name, path) of hostile JSON files in folder ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    out = []
    (d / "deep.json").write_text(DEEP)
    out.append(("deep", d / "deep.json"))
    (d / "latin1.json").write_bytes(b'{"a": "\xff"}')
    out.append(("not utf-8", d / "latin1.json"))
    (d / "text.json").write_text("model_type = llama")
    out.append(("not json", d / "text.json"))
    os.mkfifo(d / "fifo.json")
    out.append(("fifo", d / "fifo.json"))
    os.symlink("/dev/zero", d / "zero.json")
    out.append(("device", d / "zero.json"))
    return out


def test_read_user_json_gives_one_line_errors_fast(tmp_path):
    for name, path in _bad_files(tmp_path):
        t0 = time.perf_counter()
        with pytest.raises(DodaiError) as e:
            read_user_json(path, what="model config")
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, name
        assert time.perf_counter() - t0 < 5, name
    (tmp_path / "big.json").write_text("[" + "1," * 600_000 + "1]")
    with pytest.raises(DodaiError, match="more than dodai reads"):
        read_user_json(tmp_path / "big.json", max_bytes=1_000_000)
    (tmp_path / "ok.json").write_text('{"model_type": "gpt", "n": [1, 2]}')
    assert read_user_json(tmp_path / "ok.json") == {"model_type": "gpt", "n": [1, 2]}


@pytest.mark.parametrize("kind", ["deep", "fifo", "not json"])
def test_loaders_and_cli_refuse_hostile_config_json(tmp_path, kind, capsys):
    from dodai.cli import main

    """The model loaders (every family's ``load``) and the CLI paths that read a folder's JSON."""
    files = dict(_bad_files(tmp_path / "src"))
    src = files[kind]
    model, index = tmp_path / "model", tmp_path / "index"
    for folder, name in ((model, "config.json"), (index, "meta.json")):
        folder.mkdir()
        if kind == "fifo":
            os.mkfifo(folder / name)
        else:
            (folder / name).write_bytes(src.read_bytes())
    cmds = [["generate", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "2"],
            ["rag", "ask", "--index", str(index), "what?"]]
    for cmd in cmds:
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err.strip()
        assert err.startswith("dodai: error:") and "\n" not in err and "Traceback" not in err, (cmd, err)


def test_every_model_family_loader_refuses_a_deep_config(tmp_path):
    from dodai.models import load_decoder_dir, load_model
    from dodai.models.bert import BertModel, load_sentence_encoder
    from dodai.models.gpt import GPT
    from dodai.models.llama import load_llama_dir
    from dodai.models.seq2seq import Seq2Seq
    from dodai.models.t5 import T5
    from dodai.models.vlm import VLM
    from dodai.weights.hf_gpt2 import load_hf_gpt2

    (tmp_path / "config.json").write_text(DEEP)
    loads = (GPT.load, VLM.load, T5.load, Seq2Seq.load, load_llama_dir, load_hf_gpt2, BertModel.from_folder,
             load_sentence_encoder, load_model, lambda d: load_decoder_dir(d, "llama"),
             lambda d: load_decoder_dir(d, "gemma3"))
    for load in loads:
        with pytest.raises(DodaiError) as e:
            load(tmp_path)
        assert "\n" not in str(e.value), load


def test_memory_manifest_nested_too_deeply_is_one_line(tmp_path):
    from dodai.memory.vector import MANIFEST, VectorMemory

    (tmp_path / MANIFEST).write_text(DEEP)
    with pytest.raises(DodaiError) as e:
        VectorMemory(tmp_path, encoder=object())
    assert "\n" not in str(e.value)
