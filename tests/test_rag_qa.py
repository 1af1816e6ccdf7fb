"""R7.1 short answers: SQuAD's EM/F1 arithmetic against hand-computed cases, the QA file reader's one-line
errors, the summary arithmetic, the span constraint (whatever the model's weights, an extracted answer is a span
of the sources on word boundaries and its citation holds it), and the held-out split kept out of tuning."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from dodai.errors import DodaiError
from dodai.rag.evalset import QAItem, best_over, exact_match, f1_score, load_qa, normalize_answer, qa_scores

# ---- metrics ---------------------------------------------------------------------------------------------

def test_normalisation_as_squad():
    assert normalize_answer("The  Cat, a dog!") == "cat dog"
    assert normalize_answer("An apple") == "apple"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.-based") == "usbased"  # punctuation removed, not replaced by spaces


def test_exact_match_and_f1_hand_computed():
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert f1_score("Denver Broncos", "the Denver Broncos.") == 1.0
    # pred {broncos, won, game}, ref {denver, broncos}: 1 common, P = 1/3, R = 1/2, F1 = 2PR/(P+R) = 0.4
    assert f1_score("Broncos won the game", "Denver Broncos") == pytest.approx(0.4)
    # multiset: pred x x y, ref x y -> common min(2,1) + 1 = 2, P = 2/3, R = 1, F1 = 0.8
    assert f1_score("x x y", "x y") == pytest.approx(0.8)
    assert f1_score("nothing shared", "Denver") == 0.0
    assert f1_score("the", "Denver") == 0.0  # normalises to empty against a non-empty reference
    assert f1_score("", "") == 1.0


def test_best_over_references_and_unanswerable():
    refs = ["10th century", "the first half of the 10th century", "10th"]
    assert best_over(exact_match, "10th", refs) == 1.0
    # "in 10th century" vs "10th century": P = 2/3, R = 1 -> 0.8; vs the long one: P = 2/3, R = 2/5 -> 0.5
    assert best_over(f1_score, "in the 10th century", refs) == pytest.approx(0.8)
    assert best_over(f1_score, "", []) == 1.0 and best_over(f1_score, "France", []) == 0.0


def test_qa_scores_count_abstention_as_empty():
    items = [QAItem("q1", ("France",)), QAItem("q2", ("Rollo",)), QAItem("q3", ("911",)), QAItem("q4", ("a b",))]
    s = qa_scores(["France", None, "in 911", "a"], items)
    # EM: 1, 0, 0, 0 -> 25 %; F1: 1, 0, 2*(1/2*1)/(1.5)=2/3, "a" normalises to empty -> 0 (ref "b" non-empty)
    assert s["exact_match"] == pytest.approx(25.0)
    assert s["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3 + 0) / 4)
    assert s["abstention"] == 0.25 and s["n"] == 4


def test_summarise_arithmetic():
    from dodai.rag.qa import summarise

    def row(em, f1, gold, retrieved, cited, abstained=False):
        return {"em": em, "f1": f1, "gold": gold, "retrieved": retrieved, "cited": cited, "abstained": abstained,
                "seconds": 1.0}

    rows = [row(1, 1, 0, [0, 3], [0]), row(0, 0.5, 1, [2, 1], [2]), row(0, 0, 2, [4, 5], [], True),
            row(0, 0.25, None, [1], [1])]
    s = summarise(rows)
    assert s["exact_match"] == 25.0 and s["f1"] == pytest.approx(100 * 1.75 / 4)
    assert s["hit@k"] == pytest.approx(2 / 3)  # items with a gold id: 0 in [0,3], 1 in [2,1], 2 not in [4,5]
    assert s["gold_in_cited"] == 0.5  # answered with gold: rows 1 and 2; only row 1 cites its gold
    assert s["abstention"] == 0.25


# ---- the QA file -----------------------------------------------------------------------------------------

def test_load_qa(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "Who?", "answers": ["Rollo", "Rollo the Walker"], "gold": 3}\n\n'
                 '{"question": "Where?", "answer": "Paris", "gold": "doc a"}\n')
    items = load_qa(p)
    assert items[0] == QAItem("Who?", ("Rollo", "Rollo the Walker"), 3, None)
    assert items[1].answers == ("Paris",) and items[1].gold == "doc a"
    for bad, msg in [("{not json", ":1: not valid JSON"), ('{"answers": []}', "question"),
                     ('{"question": "q", "answers": "x"}', "list of strings"),
                     ('{"question": "q", "answers": [], "gold": true}', "gold"), ("", "empty|no questions")]:
        p.write_text(bad + "\n")
        with pytest.raises(DodaiError, match=msg):
            load_qa(p)
    with pytest.raises(DodaiError, match="no such file"):
        load_qa(tmp_path / "missing.jsonl")


# ---- the span constraint ---------------------------------------------------------------------------------

class CharTok:
    """Characters of a small alphabet plus a few multi-character tokens; ids 0-2 are specials."""

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?'")
    extra = [" the", " Ali", "ce", " Bob", "19", "99", "ob", " in", "he ", "s."]

    def __init__(self):
        self.pieces = self.specials + self.alphabet + self.extra
        self.vocab_size = len(self.pieces)
        self.special_tokens = {s: i for i, s in enumerate(self.specials)}
        self.eos_id = 2
        self.chat_template = None

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            for s, t in self.special_tokens.items():
                if text.startswith(s, i):
                    ids.append(t)
                    i += len(s)
                    break
            else:
                ids.append(self.pieces.index(text[i]) if text[i] in self.alphabet else self.pieces.index("."))
                i += 1
        return ids

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def tiny_model(vocab: int, seed: int):
    from dodai.models.llama import Llama, LlamaConfig

    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=vocab, block_size=256, n_layer=2, n_embd=16, n_head=4, n_kv_head=2,
                          ffn_hidden=32))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(20)
    return m.eval()


SOURCES = ["Alice was born in 1999 in Oslo.", "Bob  moved to Rome, then Paris."]


def _is_span(text: str) -> bool:
    from dodai.rag.extract import normalise

    return any(text in normalise(s) for s in SOURCES)


def test_span_constraint_masks():
    from dodai.rag.extract import SpanConstraint

    tok = CharTok()
    con = SpanConstraint(SOURCES, tok, [2], banned_starts={"in", "the"})
    start = con.allowed(None)
    allowed = {tok.pieces[i] for i in start.nonzero().flatten().tolist()}
    assert {"A", " Ali", "B", " Bob", "1", "19", "O", "R", "P"} <= allowed
    assert "l" not in allowed and " in" not in allowed and "i" not in allowed  # mid-word; a banned word
    assert not start[2]  # no empty answer
    st = con.state_after([tok.pieces.index(" Bob")])
    nxt = {tok.pieces[i] for i in con.allowed(st).nonzero().flatten().tolist()}
    assert " " in nxt and "<|im_end|>" in nxt  # "Bob" ends on a word boundary: the answer may stop
    st = con.state_after(tok.encode("Bo"))
    assert not con.allowed(st)[2]  # "Bo" is inside a word
    assert con.locate("Rome, then Paris") == [1] and con.locate("Oslo.") == [0] and con.locate("lice") == []


@pytest.mark.parametrize("seed", range(6))
def test_any_model_extracts_a_span(seed, monkeypatch):
    """Whatever the weights, the Reader's answer is a span of the shown sources and cites a source holding it."""
    import dodai.rag.answer as A

    tok = CharTok()
    model = tiny_model(tok.vocab_size, seed)
    monkeypatch.setattr(A, "_prompt_ids", lambda t, msgs, window, n: t.encode(
        " ".join(m["content"] for m in msgs))[-150:])
    hits = [SimpleNamespace(chunk=SimpleNamespace(text=s, source=i), score=1.0, dense_score=0.9)
            for i, s in enumerate(SOURCES)]
    reader = A.Reader(model, tok, max_new_tokens=12, shots=[], n_sentences=0, ban_question_words=False)
    a = reader.extract("Where was Alice born?", hits)
    assert not a.abstained and a.text and _is_span(a.text), a.text
    assert a.citations and a.text in " ".join(SOURCES[a.citations[0] - 1].split())


def test_answer_sentences_pick_the_overlap():
    from dodai.rag.answer import answer_sentences

    texts = ["Cats purr. The Duchy of Normandy began in 911 as a fiefdom.", "Normandy has cows. Rain falls."]
    sents, owner = answer_sentences("When was the Duchy of Normandy founded?", texts, 1)
    assert sents == ["The Duchy of Normandy began in 911 as a fiefdom."] and owner == [0]
    sents, owner = answer_sentences("When was the Duchy of Normandy founded?", texts, 2)
    assert owner == [0, 1] and sents[1] == "Normandy has cows."


def test_banned_starts_and_system_prompt():
    from dodai.rag.answer import EXTRACT_SYSTEM, SYSTEM, banned_starts, system_prompt

    b = banned_starts("Who did Edward make archbishop?")
    assert {"who", "edward", "archbishop", "the", "of"} <= b and "robert" not in b
    assert system_prompt() == EXTRACT_SYSTEM and system_prompt(mode="generate") == SYSTEM
    assert system_prompt("Wikipedia articles").startswith("The sources are from Wikipedia articles. ")
    assert system_prompt("x", system="Be brief.") == "Be brief."
    assert "Python" not in SYSTEM and "Python" not in EXTRACT_SYSTEM  # corpus-neutral


# ---- the data and the held-out split ---------------------------------------------------------------------

def test_squad_parts_are_disjoint():
    from dodai.rag.squad import load_docs, load_questions

    dev_docs, dev_titles = load_docs("dev")
    ho_docs, ho_titles = load_docs("heldout")
    assert len(dev_docs) >= 50 and len(ho_docs) >= 100
    assert not set(dev_docs) & set(ho_docs)
    assert not {t.split(" #")[0] for t in dev_titles} & {t.split(" #")[0] for t in ho_titles}
    dq, hq = load_questions("dev"), load_questions("heldout")
    assert len(hq) >= 400 and not {q.id for q in dq} & {q.id for q in hq}
    for q in hq[:50]:  # each answer occurs in its gold paragraph
        assert any(a in ho_docs[q.gold] for a in q.answers)


def test_dev_sweep_never_reads_the_heldout_files(monkeypatch):
    import dodai.experiments.r7_1 as r71
    import dodai.rag.squad as squad

    read = []
    real = squad._read
    monkeypatch.setattr(squad, "_read", lambda p: read.append(p.name) or real(p))

    class FakeIndex:
        @classmethod
        def build(cls, docs, titles):
            return cls()

    monkeypatch.setattr("dodai.rag.index.RagIndex", FakeIndex)
    monkeypatch.setattr("dodai.rag.qa.run_qa", lambda index, reader, items, **kw: [
        {"em": 1.0, "f1": 1.0, "gold": it.gold, "retrieved": [it.gold], "cited": [it.gold], "abstained": False,
         "seconds": 0.0} for it in items])
    monkeypatch.setattr("dodai.rag.answer.Reader", lambda *a, **k: None)
    out = r71.dev_sweep([(2, 1)], n_questions=5, model=object(), tok=object())
    assert out["k2_s1"]["n"] == 5
    assert read and all("dev" in name for name in read), read
    assert not any("heldout" in name for name in read)


# ---- the command ------------------------------------------------------------------------------------------

DOCS = ["The lighthouse at Kerrow Head was built in 1871 by the engineer Moira Tulloch.",
        "The Kerrow ferry crosses to the island of Sule twice a day in summer.",
        "Sule has a population of 212 people and one school."]


def _write_qa(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("argv, msg", [
    (["--qa", "QA", "--index", "IX", "--method", "dense"], "dense embeddings"),
    (["--qa", "QA", "--index", "IX", "--k", "0"], "--k must be positive"),
    (["--qa", "BAD", "--index", "IX"], "not valid JSON"),
    (["--qa", "QA", "--index", "/nonexistent/ix"], "not a dodai RAG index"),
])
def test_rag_eval_cli_errors_are_one_line(tmp_path, capsys, argv, msg):
    from dodai.cli import main
    from dodai.rag.index import RagIndex

    ix = RagIndex.build(DOCS, dense=False).save(tmp_path / "ix")
    qa = _write_qa(tmp_path / "qa.jsonl", [{"question": "Who built it?", "answers": ["Moira Tulloch"], "gold": 0}])
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    subst = {"QA": str(qa), "IX": str(ix), "BAD": str(tmp_path / "bad.jsonl")}
    assert main(["rag", "eval"] + [subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dodai: error:") and "\n" not in err and msg in err


def test_index_description_round_trip(tmp_path):
    from dodai.rag.index import RagIndex

    ix = RagIndex.build(DOCS, dense=False)
    ix.description = "notes about an island"
    assert RagIndex.load(ix.save(tmp_path / "ix")).description == "notes about an island"
    assert RagIndex.load(RagIndex.build(DOCS, dense=False).save(tmp_path / "ix2")).description is None


@pytest.mark.models
def test_rag_eval_cli_with_smollm2(tmp_path, capsys, smollm2_gguf):
    from dodai.cli import main
    from dodai.rag.index import RagIndex

    ix = RagIndex.build(DOCS, [f"doc {i}" for i in range(3)], dense=False).save(tmp_path / "ix")
    qa = _write_qa(tmp_path / "qa.jsonl", [
        {"question": "Who built the lighthouse at Kerrow Head?", "answers": ["Moira Tulloch"], "gold": 0},
        {"question": "How many people live on Sule?", "answers": ["212"], "gold": "doc 2"}])
    out = tmp_path / "rows.json"
    assert main(["rag", "eval", "--qa", str(qa), "--index", str(ix), "--method", "bm25", "--k", "1",
                 "--model", str(smollm2_gguf), "--out", str(out)]) == 0
    printed = dict(line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines())
    rows = json.loads(out.read_text())["rows"]
    assert [r["gold"] for r in rows] == [0, 2] and printed["hit@1"] == "100.0"
    for r in rows:  # each answer is a span of the one source shown, cited
        assert r["answer"] and r["answer"] in DOCS[r["gold"]] and r["cited"] == [r["gold"]]
    assert float(printed["F1"]) == pytest.approx(100 * sum(r["f1"] for r in rows) / 2, abs=0.05)
    assert float(printed["exact match"]) == pytest.approx(100 * sum(r["em"] for r in rows) / 2, abs=0.05)


@pytest.mark.models
def test_rag_ask_extract_with_smollm2(tmp_path, capsys, smollm2_gguf):
    from dodai.cli import main
    from dodai.rag.index import RagIndex

    ix = RagIndex.build(DOCS, [f"doc {i}" for i in range(3)], dense=False).save(tmp_path / "ix")
    assert main(["rag", "ask", "--index", str(ix), "--method", "bm25", "--model", str(smollm2_gguf),
                 "In which year was the lighthouse at Kerrow Head built?"]) == 0
    out = capsys.readouterr().out.splitlines()
    answer = out[0].strip()
    assert answer and answer in DOCS[0]  # a short span of the source, not a sentence about it
    assert len(answer.split()) <= 6
    starred = [ln for ln in out if ln.startswith("*[")]
    assert starred and "doc 0" in starred[0]  # cites the paragraph that holds it
