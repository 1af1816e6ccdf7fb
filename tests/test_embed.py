"""`dodai embed`: cosine matrix, --json vectors, --file, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from dodai.cli import main


def test_no_texts_is_a_one_line_error(capsys):
    assert main(["embed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dodai: error:") and "no texts" in err and "\n" not in err


def test_bad_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["embed", "--model", str(tmp_path / "missing"), "hello"]) == 2
    assert capsys.readouterr().err.startswith("dodai: error:")


@pytest.mark.models
def test_embed_matrix_and_json(minilm_dir, tmp_path, capsys):
    texts = ["A man is playing a guitar.", "Someone plays music on an instrument.", "Stocks fell on Tuesday."]
    assert main(["embed", "--model", str(minilm_dir), *texts]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 + len(texts)
    rows = [[float(x) for x in line.split()[-len(texts):]] for line in out[1:]]
    sim = torch.tensor(rows)
    torch.testing.assert_close(sim.diagonal(), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(sim, sim.T)
    assert sim[0, 1] > sim[0, 2] + 0.2  # the two music sentences are closer
    assert out[1].startswith("[0] A man is playing")

    f = tmp_path / "texts.txt"
    f.write_text(texts[2] + "\n\n")
    assert main(["embed", "--model", str(minilm_dir), "--json", "--file", str(f), *texts[:2]]) == 0
    vecs = torch.tensor(json.loads(capsys.readouterr().out))
    assert vecs.shape == (3, 384)
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(3))
    # the JSON vectors give the same cosines as the printed matrix (texts in argument order, then the file)
    torch.testing.assert_close(vecs @ vecs.T, sim, atol=1e-4, rtol=0)
