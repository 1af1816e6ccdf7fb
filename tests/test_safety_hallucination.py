"""R8.1 hallucination tools: token entropy / log-prob on fixed logits, AUROC and risk–coverage against
sklearn and brute force, abstention, the grounding checker on handmade examples and hostile input, the
fact-set parser, uncertainty from the real SmolLM2 against the engine, and the quick experiment."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.safety.hallucination import (
    IDK,
    Fact,
    abstain,
    agreement,
    auroc,
    check_answer,
    check_grounding,
    choose_threshold,
    content_words,
    is_correct,
    names,
    normalize_answer,
    numbers,
    parse_questions_words,
    risk_coverage,
    selective_metrics,
    strip_citations,
    token_uncertainty,
)

# ------------------------------------------------------------------------------------ uncertainty


def test_entropy_and_logprob_equal_hand_computed_values():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0],  # uniform over 4: H = ln 4
                           [math.log(1.0), math.log(3.0), -math.inf, -math.inf],  # p = (1/4, 3/4, 0, 0)
                           [5.0, 5.0, 5.0, -math.inf]], dtype=torch.float64)  # uniform over 3, one masked
    u = token_uncertainty(logits, [2, 1, 0])
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert u.entropies == pytest.approx([math.log(4), h2, math.log(3)], abs=1e-12)
    assert u.logprobs == pytest.approx([math.log(0.25), math.log(0.75), math.log(1 / 3)], abs=1e-12)
    assert u.mean_entropy == pytest.approx((math.log(4) + h2 + math.log(3)) / 3)
    assert u.max_entropy == pytest.approx(math.log(4)) and u.min_entropy == pytest.approx(h2)
    assert u.seq_logprob == pytest.approx(math.log(0.25 * 0.75 / 3))
    assert u.min_logprob == pytest.approx(math.log(0.25))
    assert u.mean_logprob == pytest.approx(math.log(0.25 * 0.75 / 3) / 3)
    assert u.summary()["n_tokens"] == 3


def test_a_one_hot_distribution_has_zero_entropy():
    u = token_uncertainty(torch.tensor([[0.0, -math.inf, -math.inf]]), [0])
    assert u.entropies == [0.0] and u.logprobs == [0.0]


@pytest.mark.parametrize("logits,ids", [
    (torch.zeros(2, 5), [1]),  # row count != token count
    (torch.zeros(0, 5), []),  # no tokens
    (torch.zeros(1, 5), [5]),  # outside the vocabulary
    (torch.zeros(1, 5), [-1]),
    (torch.tensor([[0.0, float("nan")]]), [0]),
    (torch.tensor([[0.0, float("inf")]]), [0]),
    (torch.full((1, 3), -math.inf), [0]),
    (torch.zeros(5), [0]),  # not 2-D
])
def test_token_uncertainty_rejects_bad_input(logits, ids):
    with pytest.raises(DodaiError):
        token_uncertainty(logits, ids)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-30, 30), min_size=3, max_size=3), min_size=1, max_size=5))
def test_entropy_bounds(rows):
    u = token_uncertainty(torch.tensor(rows), [0] * len(rows))
    assert all(-1e-9 <= h <= math.log(3) + 1e-9 for h in u.entropies)
    assert all(lp <= 0 for lp in u.logprobs)


def test_normalisation_and_correctness():
    assert normalize_answer("  The Bogotá!  ") == "bogota"
    assert is_correct(" Indian Rupee (INR)", "rupee")
    assert is_correct("Bogotá", "Bogota")
    assert not is_correct(" Bratislana", "Bratislava")
    assert not is_correct("Newark", "New")  # whole words only
    assert is_correct("the city of New York", "New York")
    with pytest.raises(DodaiError):
        is_correct("x", "  ")


def test_agreement():
    assert agreement(["Athens", "athens.", "Sparta", "The Athens"], "Athens") == 0.75
    with pytest.raises(DodaiError):
        agreement([], "Athens")


# ------------------------------------------------------------------------------------ abstention


def _pairwise_auroc(conf, y):
    """The definition: over all (correct, wrong) pairs, 1 if the correct one is more confident, ½ on a tie."""
    pos = [c for c, t in zip(conf, y) if t]
    neg = [c for c, t in zip(conf, y) if not t]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=30))
def test_auroc_equals_the_pairwise_definition_with_ties(pairs):
    conf, y = [float(c) for c, _ in pairs], [b for _, b in pairs]
    if all(y) or not any(y):
        with pytest.raises(DodaiError):
            auroc(conf, y)
        return
    assert auroc(conf, y) == pytest.approx(_pairwise_auroc(conf, y), abs=1e-12)


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    conf = [0.3, 0.3, 0.9, 0.1, 0.5, 0.5, 0.7, 0.2, 0.9, 0.0]
    y = [True, False, True, False, True, True, False, False, True, False]
    assert auroc(conf, y) == pytest.approx(roc_auc_score(y, conf), abs=1e-12)


def test_auroc_extremes():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5] * 4, [True, False, True, False]) == 0.5
    with pytest.raises(DodaiError):
        auroc([0.1, 0.2], [True])
    with pytest.raises(DodaiError):
        auroc([float("nan"), 0.2], [True, False])


def test_risk_coverage_hand_example():
    rc = risk_coverage([0.9, 0.8, 0.7, 0.6], [True, True, False, True])
    assert rc["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert rc["risk"] == pytest.approx([0.0, 0.0, 1 / 3, 1 / 4])
    assert rc["thresholds"] == [0.9, 0.8, 0.7, 0.6]
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)
    tie = risk_coverage([0.5] * 4, [True, False, True, True])  # one group: the expected risk is flat
    assert tie["coverage"] == [1.0] and tie["aurc"] == pytest.approx(0.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=1, max_size=25))
def test_risk_coverage_invariants(pairs):
    conf, y = [c for c, _ in pairs], [b for _, b in pairs]
    rc = risk_coverage(conf, y)
    assert rc["coverage"][-1] == 1.0
    assert rc["risk"][-1] == pytest.approx(1 - sum(y) / len(y))
    oracle = risk_coverage([float(b) for b in y], y)["aurc"]  # every correct answer first
    assert oracle <= rc["aurc"] + 1e-12


def _utility(conf, y, t):
    return sum(1 if ok else -1 for c, ok in zip(conf, y) if c >= t)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=1, max_size=25))
def test_choose_threshold_maximises_dev_utility(pairs):
    conf, y = [float(c) for c, _ in pairs], [b for _, b in pairs]
    t = choose_threshold(conf, y)
    best = max([_utility(conf, y, c) for c in conf] + [0])  # brute force over "answer if conf >= c"
    assert _utility(conf, y, t) == best
    assert t not in conf  # a midpoint (or ±inf), never an example's own value


def test_threshold_abstain_and_metrics():
    conf = [0.9, 0.8, 0.3, 0.2]
    y = [True, True, False, False]
    t = choose_threshold(conf, y)
    assert t == pytest.approx(0.55)
    assert abstain("Athens", 0.9, t) == ("Athens", False)
    assert abstain("Sparta", 0.3, t) == (IDK, True)
    assert abstain("Sparta", float("nan"), t) == (IDK, True)
    assert choose_threshold([0.1, 0.2], [False, False]) == math.inf  # answering nothing is best
    m = selective_metrics([0.9, 0.8, 0.3, 0.7], [True, False, False, True], 0.75)
    assert m["coverage"] == 0.5 and m["selective_accuracy"] == 0.5 and m["accuracy_all"] == 0.5
    assert m["truthful"] == 0.75 and m["wrong_rate"] == 0.25 and m["utility"] == 0.0
    with pytest.raises(DodaiError):
        choose_threshold([0.1], [True], wrong_cost=-1)


# ------------------------------------------------------------------------------------ grounding

SRC = ("Return the canonical path of the specified filename. If strict is True, raise OSError when the "
       "path does not exist. The default buffer size is 8192 bytes and two retries are made.")


def _flags(answer, sources=(SRC,), **kw):
    return [not s.supported for s in check_grounding(answer, list(sources), **kw).sentences]


def test_checker_on_handmade_examples():
    assert _flags("It returns the canonical path of the specified filename.") == [False]
    assert _flags("The default buffer size is 4096 bytes.") == [True]  # swapped number
    assert _flags("The default buffer size is 8,192 bytes.") == [False]  # same number, other format
    assert _flags("If strict is True, raise ValueError.") == [True]  # swapped name
    assert _flags("Two retries are made.") == [False]
    assert _flags("2 retries are made.") == [False]  # number words and digits meet
    assert _flags("3 retries are made.") == [True]
    assert _flags("Paris is the capital of France.") == [True]  # unrelated claim
    assert _flags("The canonical path is returned. Paris is lovely in May.") == [False, True]
    r = check_grounding("According to source [1], the canonical path is returned [1].", [SRC])
    assert r.faithful and r.text == "the canonical path is returned."
    rep = check_grounding("The buffer holds 4096 bytes.", [SRC])
    assert rep.unsupported[0].missing_numbers == ["4096"]
    assert "number 4096 not in the sources" in rep.unsupported[0].reasons
    assert rep.support == 0.0


def test_idk_and_empty_answers_claim_nothing():
    for text in ("", "   ", "I don't know.", IDK, "[1]"):
        r = check_grounding(text, [SRC])
        assert r.faithful and r.support == 1.0


class _FakeEncoder:
    """Maps known paraphrases onto the same direction: a stand-in for MiniLM in unit tests."""

    TOPICS = {"canonical": 0, "resolves": 0, "filename": 0, "buffer": 1, "retries": 2, "weather": 3}

    def encode(self, texts, batch_size=32):
        out = torch.zeros(len(texts), 5)
        for i, t in enumerate(texts):
            for w, k in self.TOPICS.items():
                if w in t.lower():
                    out[i, k] += 1.0
            if not out[i].any():  # no known topic
                out[i, 4] = 1.0
        return torch.nn.functional.normalize(out, dim=-1)


def test_embedding_check_accepts_a_paraphrase_that_lexical_overlap_misses():
    para = "It resolves symlinks to yield the real location."
    assert _flags(para) == [True]  # few shared content words
    rep = check_grounding(para, [SRC], encoder=_FakeEncoder())
    assert rep.faithful and rep.sentences[0].cosine == pytest.approx(1.0)
    assert "canonical" in rep.sentences[0].best_source
    # a missing name is flagged whatever the cosine says
    assert _flags("It resolves the path with Pathlib.", encoder=_FakeEncoder()) == [True]
    # and off-topic text stays unsupported
    assert _flags("The weather is nice.", encoder=_FakeEncoder()) == [True]


def test_check_answer_uses_the_cited_source():
    from dodai.rag.answer import Answer
    from dodai.rag.chunk import Chunk
    from dodai.rag.index import Hit

    hits = [Hit(Chunk(0, 0, 0, len(SRC), SRC), 1.0), Hit(Chunk(1, 0, 0, 20, "Paris is in France."), 1.0)]
    a = Answer("q", "According to source [2], Paris is in France [2].", hits, citations=[2])
    assert check_answer(a).faithful
    b = Answer("q", "According to source [1], Paris is in France [1].", hits, citations=[1])
    assert not check_answer(b).faithful  # true, but not in the source it cites
    c = Answer("q", IDK, hits, abstained=True)
    assert check_answer(c).faithful and not check_answer(c).sentences


def test_extractors():
    assert names("Use os.path.join with max_len, CamelCase and Foo, then call split(x).") == [
        "os.path.join", "max_len", "CamelCase", "split", "Foo"]
    assert names("Python is great.") == []  # the sentence's first word is not taken for a name
    assert numbers("3.5 and 1,000 but not utf8 or v2; three") == ["3.5", "1000", "3"]
    assert content_words("The buffers were resized") == ["buffer", "resiz"]
    assert strip_citations("Yes [1, 2] it is [3] .") == "Yes it is."


@pytest.mark.parametrize("text", ["\udcff\udcfe broken", "nul\x00byte here.", "\u202e\u200b zero width",
                                  "😀 emoji 123.", "ｆｕｌｌｗｉｄｔｈ ＴＥＸＴ"])
def test_checker_accepts_odd_strings(text):
    rep = check_grounding(text, [text, "\udcff other"])
    assert isinstance(rep.faithful, bool)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_checker_never_crashes_on_arbitrary_text(answer, source):
    rep = check_grounding(answer, [source])
    assert all(0.0 <= s.lexical <= 1.0 for s in rep.sentences)


def test_checker_rejects_huge_and_non_text_input_quickly():
    t0 = time.perf_counter()
    with pytest.raises(DodaiError):
        check_grounding("word " * 100_000, [SRC])
    with pytest.raises(DodaiError):
        check_grounding("short.", ["x" * 2_000_001])
    with pytest.raises(DodaiError):
        check_grounding(b"bytes", [SRC])
    with pytest.raises(DodaiError):
        check_grounding("fine.", [b"bytes"])
    assert time.perf_counter() - t0 < 5
    # a long but allowed input is linear-time
    rep = check_grounding("The canonical path is returned. " * 500, [SRC * 200])
    assert rep.faithful and len(rep.sentences) == 500


# ------------------------------------------------------------------------------------ fact set

QW = """: capital-common-countries
Athens Greece Baghdad Iraq
Athens Greece Berlin Germany
: currency
Algeria dinar Angola kwanza
: city-in-state
Chicago Illinois Houston Texas
Portland Oregon Portland Maine
: family
boy girl brother sister
"""


def test_parse_questions_words():
    facts = parse_questions_words(QW)
    got = {(f.relation, f.subject, f.answer) for f in facts}
    assert got == {("capital", "Greece", "Athens"), ("capital", "Iraq", "Baghdad"), ("capital", "Germany", "Berlin"),
                   ("currency", "Algeria", "dinar"), ("currency", "Angola", "kwanza"),
                   ("state", "Chicago", "Illinois"), ("state", "Houston", "Texas")}  # ambiguous Portland dropped
    g = Fact("capital", "Greece", "Athens")
    assert g.question == "What is the capital of Greece?" and g.stem == "The capital of Greece is"
    assert g.split in ("dev", "test") and g.split == Fact("capital", "Greece", "Athens").split
    assert {f.split for f in parse_questions_words(QW * 1)} <= {"dev", "test"}


# ------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def smollm(smollm2_gguf):
    from dodai.models import load_model

    return load_model(smollm2_gguf)


def test_rescored_logprobs_equal_the_engines(smollm):
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline
    from dodai.safety.hallucination import score_continuation

    model, tok = smollm
    ids = tok.encode("The capital of France is")
    out = complete(model, ids, 4, LogitsPipeline(temperature=0.0), logprobs=0)[0]
    logits = score_continuation(model, ids, out.ids)
    u = token_uncertainty(logits, out.ids)
    engine = torch.tensor([t.logprob for t in out.logprobs], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(u.logprobs, dtype=torch.float64), engine, atol=1e-4, rtol=0)
    assert [int(i) for i in logits.argmax(-1)] == out.ids  # greedy = argmax of the rescored rows
    with pytest.raises(DodaiError):
        score_continuation(model, ids, [])
    with pytest.raises(DodaiError):
        score_continuation(model, ids, [0] * model.config.block_size)


def test_answer_with_uncertainty_on_smollm2(smollm):
    from dodai.rag.answer import _template
    from dodai.safety.hallucination import answer_with_uncertainty

    model, tok = smollm
    f = Fact("capital", "France", "Paris")
    prompt = _template(tok).render([{"role": "user", "content": f.question}], add_generation_prompt=True) + f.stem
    a = answer_with_uncertainty(model, tok, tok.encode(prompt), 6, num_samples=2, seed=0)
    assert is_correct(a.text, "Paris")
    assert len(a.uncertainty.entropies) == len(a.ids) >= 1
    assert tok.decode(a.ids).strip() == a.text  # the measured tokens spell the answer, no stop token
    assert len(a.samples) == 2 and a.agreement == agreement(a.samples, a.text)
    s = a.signals()
    assert s["neg_mean_entropy"] == -a.uncertainty.mean_entropy and "self_consistency" in s


def test_r8_1_quick(tmp_path, smollm2_gguf, minilm_dir):
    from dodai.experiments.r8_1 import run
    from dodai.safety.hallucination import questions_words_path

    try:
        questions_words_path()
    except DodaiError as e:  # no network and not cached
        pytest.skip(f"fact set unavailable: {e}")
    res = run(tmp_path, quick=True)
    cb = res["closed_book"]
    y = [r["correct"] for r in cb["rows"]]
    assert 0 < sum(y) < len(y)
    assert cb["accuracy"] == sum(y) / len(y)
    # the claim: token entropy ranks correct answers above wrong ones, clearly better than chance
    assert cb["auroc"]["neg_mean_entropy"] > 0.65
    assert cb["auroc"]["neg_mean_entropy"] == auroc([r["signals"]["neg_mean_entropy"] for r in cb["rows"]], y)
    gr = res["grounding"]
    for mode in ("lexical", "lexical+minilm"):
        rate = gr[mode]["flag_rate"]
        assert rate["number swapped"] == 1.0 and rate["name swapped"] == 1.0  # planted errors are flagged
        assert rate["original"] <= 0.1
        assert gr[mode]["recall"] >= 0.9 and gr[mode]["precision"] >= 0.9
    assert gr["real"]["n"] == 1
    assert (tmp_path / "report.md").exists() and (tmp_path / "results.json").exists()
    assert (tmp_path / "r8_1.png").stat().st_size > 0
