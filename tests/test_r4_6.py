"""R4.6 Japanese end to end: quick mode asserts the claims that hold at any scale."""

from __future__ import annotations

import json
import math

import pytest

from dodai.errors import DodaiError
from dodai.experiments.r4_6 import _clean, decode_lines, encode_lines, run


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from dodai.data.corpora import CORPORA
    from dodai.experiments.r4_6 import CORPUS

    out = tmp_path_factory.mktemp("r4_6")
    if not CORPORA[CORPUS].path().is_file():
        from dodai.data.pull import pull

        try:  # only the corpus download may turn into a skip; any error of the experiment itself fails
            pull(CORPUS)
        except DodaiError as e:
            pytest.skip(f"{CORPUS} corpus unavailable (no network and not pulled): {e}")
    return out, run(out, quick=True)


def test_quick_claims(quick):
    out, r = quick
    rows = {row["tokenizer"]: row for row in r["rows"]}
    assert set(rows) == {"byte-level BPE", "Unigram"}
    for row in rows.values():
        assert row["round_trip"] is True  # every held-out line decodes back exactly
        assert row["vocab_size"] == r["vocab_size"]  # same vocabulary size for both
        assert row["bytes_per_token"] > 1.5
        assert row["val_loss_per_token"] < row["init_loss"]  # training helped on held-out text
        assert row["init_loss"] == pytest.approx(math.log(row["vocab_size"]), abs=1.0)  # untrained ~ uniform
        assert math.isfinite(row["val_bpb"]) and 0 < row["val_bpb"] < 8
    assert r["winner"] in rows
    assert len(r["segmentations"]) >= 3
    for seg in r["segmentations"]:
        for name in rows:  # the pieces, with Unigram's word-boundary mark removed, spell the sentence
            joined = seg[name].replace("|", "").replace("▁", " ").strip()
            if "<" not in seg[name]:  # BPE pieces that split a character are shown as hex bytes
                assert joined == seg["text"]
    assert (out / "report.md").is_file() and (out / "val_bpb.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["winner"] == r["winner"]
    assert "|" in (out / "report.md").read_text()


def test_encode_decode_lines_round_trip():
    class Toy:  # a character tokenizer with an end-of-text id
        eos_id = 0

        def encode(self, s):
            return [ord(c) for c in s]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    lines = ["日本語", "テスト a b", "x"]
    ids = encode_lines(Toy(), lines)
    assert ids.count(0) == len(lines)
    assert decode_lines(Toy(), ids) == "\n".join(lines) + "\n"


def test_clean_normalises_like_sentencepiece():
    assert _clean("  ｱｲｳ\t ＡＢＣ  ") == "アイウ ABC"  # NFKC + collapsed, stripped whitespace


def test_no_eos_is_an_error():
    class NoEos:
        eos_id = None

    with pytest.raises(DodaiError):
        encode_lines(NoEos(), ["a"])
