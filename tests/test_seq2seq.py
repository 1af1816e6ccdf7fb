"""Seq2Seq model invariants (padding, batching, teacher forcing == stepping, attention normalisation, beam 1 ==
greedy, save/load) and the number-words task generator (hand-worked cases, round trip, split by value)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.data import transduction as td
from dodai.errors import DodaiError
from dodai.generate.beam import beam_search
from dodai.models.seq2seq import Seq2Seq, Seq2SeqConfig

KINDS = ["none", "bahdanau", "luong"]


def _model(kind, seed=0):
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(len(td.WORDS), len(td.DIGITS), emb=8, hidden=12, attention=kind)).eval()


def _batch(values):
    return td.pad_batch([td.encode_words(td.number_to_words(v)) for v in values])


@pytest.mark.parametrize("kind", KINDS)
def test_padding_and_batching_do_not_change_results(kind):
    m = _model(kind)
    values = [7, 3_040_007, 115, 9_999_999]
    src, src_len = _batch(values)
    mem = m.encode(src, src_len)
    out, attn, lp = m.greedy(src, src_len, 6)
    for i, v in enumerate(values):
        s1, l1 = _batch([v])
        m1 = m.encode(s1, l1)
        n = int(l1[0])
        torch.testing.assert_close(mem["enc"][i, :n], m1["enc"][0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(mem["summary"][i], m1["summary"][0], atol=1e-6, rtol=1e-5)
        o1, a1, lp1 = m.greedy(s1, l1, 6)
        assert out[i] == o1[0]
        torch.testing.assert_close(lp[i], lp1[0], atol=1e-5, rtol=1e-5)
    if attn is not None:
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]), atol=1e-6, rtol=1e-6)
        pads = ~(torch.arange(src.shape[1])[None, :] < src_len[:, None])  # (B, S)
        assert torch.all(attn.masked_select(pads[:, None, :].expand_as(attn)) == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forcing_equals_stepping(kind):
    m = _model(kind)
    pairs = [(td.number_to_words(v), str(v)) for v in (12, 40_500)]
    from dodai.experiments.r3_3 import make_batch

    src, src_len, tgt_in, tgt_out = make_batch(pairs)
    logits, loss = m(src, src_len, tgt_in, tgt_out)
    mem = m.encode(src, src_len)
    state = m.init_state(mem)
    for t in range(tgt_in.shape[1]):
        lg, state, _ = m.decode_step(mem, state, tgt_in[:, t])
        torch.testing.assert_close(lg, logits[:, t])
    mask = tgt_out != td.PAD
    manual = -torch.log_softmax(logits, -1).gather(2, tgt_out[:, :, None])[:, :, 0][mask].mean()
    torch.testing.assert_close(loss, manual)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_width_one_is_greedy_and_wider_is_consistent(kind):
    m = _model(kind, seed=3)
    src, src_len = _batch([5, 12_345, 800_017])
    greedy, _, glp = m.greedy(src, src_len, 8)
    step, state = m.beam_step(src, src_len, 1)
    hyps = beam_search(step, state, 3, 1, 8, eos_id=td.EOS, early_stopping=True)
    for g, lp, h in zip(greedy, glp, hyps):
        toks = h[0].tokens[:-1] if h[0].tokens[-1] == td.EOS else h[0].tokens
        assert toks == g
        assert h[0].logprob == pytest.approx(float(lp), abs=1e-4)
    step, state = m.beam_step(src, src_len, 4)
    wide = beam_search(step, state, 3, 4, 8, eos_id=td.EOS, length_penalty=0.0, num_return_sequences=4)
    for hs in wide:
        assert [h.score for h in hs] == sorted((h.score for h in hs), reverse=True)


def test_save_load_roundtrip(tmp_path):
    m = _model("luong")
    m.save(tmp_path / "s2s")
    m2 = Seq2Seq.load(tmp_path / "s2s")
    src, src_len = _batch([31, 4_000_001])
    assert m.greedy(src, src_len, 6)[0] == m2.greedy(src, src_len, 6)[0]
    (tmp_path / "s2s" / "config.json").write_text("{not json")
    with pytest.raises(DodaiError):
        Seq2Seq.load(tmp_path / "s2s")


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (15, "fifteen"), (40, "forty"), (99, "ninety nine"), (100, "one hundred"),
    (115, "one hundred and fifteen"), (2005, "two thousand and five"),
    (2105, "two thousand one hundred and five"), (1_000_000, "one million"),
    (3_040_007, "three million forty thousand and seven"),
    (9_999_999, "nine million nine hundred and ninety nine thousand nine hundred and ninety nine"),
])
def test_number_words_hand_worked(n, words):
    assert " ".join(td.number_to_words(n)) == words


@settings(max_examples=200, deadline=None)
@given(st.integers(0, td.MAX_VALUE))
def test_number_words_round_trip(n):
    w = td.number_to_words(n)
    assert td.words_to_number(w) == n
    assert 1 <= len(w) <= 16
    assert td.decode_digits(td.encode_digits(str(n))) == str(n)


def test_split_by_value_is_disjoint_and_deterministic():
    a = td.number_pairs(2000, "train", seed=1)
    b = td.number_pairs(500, "heldout", seed=1, unique=True)
    assert not {d for _, d in a} & {d for _, d in b}
    assert len({d for _, d in b}) == 500
    assert a[:10] == td.number_pairs(10, "train", seed=1)
    lens = {len(w) for w, _ in a}
    assert min(lens) == 1 and max(lens) >= 12  # a natural length range


def test_delayed_recall_batch():
    x, y = td.delayed_recall_batch(32, 10, 4, 3, torch.Generator().manual_seed(0))
    assert x.shape == (32, 12) and torch.equal(x[:, 0], y)
    assert torch.all((x[:, 1:-1] >= 4) & (x[:, 1:-1] < 7)) and torch.all(x[:, -1] == 7)


@pytest.mark.parametrize("bad", [
    lambda: td.number_to_words(-1), lambda: td.number_to_words(10_000_000), lambda: td.number_to_words(1.5),
    lambda: td.words_to_number(["seven", "banana"]), lambda: td.encode_words(["eleventy"]),
    lambda: td.encode_digits("12a"), lambda: td.number_pairs(5, "test"),
    lambda: td.delayed_recall_batch(0, 5), lambda: Seq2Seq(Seq2SeqConfig(5, 5, attention="dot-product")),
    lambda: _model("none").encode(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 0])),
    lambda: _model("none").encode(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 4])),
    lambda: _model("none").encode(torch.ones(3, dtype=torch.long), torch.tensor([3])),
])
def test_hostile_input(bad):
    with pytest.raises(DodaiError):
        bad()
