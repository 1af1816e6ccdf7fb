"""Persistent vector memory (dodai.memory.vector): persistence, crash safety, hostile files, dedup, retrieval."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from dodai.errors import DodaiError
from dodai.memory import vector as V
from dodai.memory.vector import MANIFEST, VectorMemory


class HashEncoder:
    """A deterministic stand-in encoder: bag of hashed words (identical texts → identical vectors)."""

    dim = 64

    def encode(self, texts, batch_size=32):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace("!", " ").split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, 0] += 1e-3  # never the zero vector
        return out


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from dodai.models.bert import load_sentence_encoder

    return load_sentence_encoder(minilm_dir)


FACTS = ["My name is Aiko.", "I live in Lisbon.", "I am allergic to peanuts.", "My cat is called Miso.",
         "My favourite number is 37.", "I work as a carpenter."]


def test_persistence_round_trip(tmp_path):
    d = tmp_path / "mem"
    m = VectorMemory(d, encoder=HashEncoder())
    items, new = m.add_many(FACTS[:3], metadata={"k": [1, "ü"]}, time=1234.5)
    assert all(new)
    it, is_new = m.add("Ünïcode line\u2028separator and \n newline", role="assistant")
    assert is_new
    assert m.delete(items[1].id)
    m2 = VectorMemory(d, encoder=HashEncoder())
    assert [(x.id, x.text, x.role, x.time, x.metadata) for x in m2.items] == \
        [(x.id, x.text, x.role, x.time, x.metadata) for x in m.items]
    torch.testing.assert_close(m2.embeddings, m.embeddings)
    assert [x.text for x in m2.items] == [FACTS[0], FACTS[2], it.text]
    # only the current generation's files remain
    names = sorted(p.name for p in d.iterdir())
    g = m2.generation
    assert names == sorted([MANIFEST, f"items-{g:08d}.jsonl", f"embeddings-{g:08d}.safetensors"])
    assert not m2.delete("nonexistent")
    m2.clear()
    assert len(VectorMemory(d, encoder=HashEncoder())) == 0


def test_open_missing_folder_without_create(tmp_path):
    with pytest.raises(DodaiError, match="no memory"):
        VectorMemory(tmp_path / "nothing", create=False)


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_crash_mid_write_never_loses_memories(tmp_path, monkeypatch, crash_at):
    """Simulate a crash on the n-th file write of a commit: the old memories survive, in the file and
    in the object, and the next open sweeps the debris."""
    d = tmp_path / "mem"
    m = VectorMemory(d, encoder=HashEncoder())
    m.add_many(FACTS[:3], time=1.0)
    before = [x.id for x in m.items]
    real = V.atomic_write_bytes
    import dodai.weights.safetensors as st

    real_st = st.atomic_write_bytes
    count = {"n": 0}

    def crashing(path, data, real_fn):
        count["n"] += 1
        if count["n"] == crash_at:
            # half of the bytes reach a temp file, then the process "dies"
            with open(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.crash.tmp"), "wb") as f:
                f.write(data[:len(data) // 2])
            raise OSError("simulated crash")
        return real_fn(path, data)

    monkeypatch.setattr(V, "atomic_write_bytes", lambda p, b: crashing(p, b, real))
    monkeypatch.setattr(st, "atomic_write_bytes", lambda p, b: crashing(p, b, real_st))
    with pytest.raises(OSError, match="simulated"):
        m.add("I drive a Volvo.")
    assert [x.id for x in m.items] == before and m.embeddings.shape[0] == 3  # the object is unchanged
    monkeypatch.undo()
    again = VectorMemory(d, encoder=HashEncoder())
    assert [x.id for x in again.items] == before
    again.add("I drive a Volvo.")  # a later write works and cleans the leftovers
    assert [p.name for p in d.iterdir() if p.name.endswith(".tmp")] == []
    assert len(VectorMemory(d, encoder=HashEncoder())) == 4


def _corrupt_cases(d):
    man = json.loads((d / MANIFEST).read_text())
    items, emb = d / man["items"], d / man["embeddings"]
    return {
        "manifest garbage": lambda: (d / MANIFEST).write_bytes(b"\x00\xffnot json"),
        "foreign manifest": lambda: (d / MANIFEST).write_text(json.dumps({"format": "something-else"})),
        "future version": lambda: (d / MANIFEST).write_text(json.dumps({**man, "version": 99})),
        "negative count": lambda: (d / MANIFEST).write_text(json.dumps({**man, "count": -1})),
        "bool generation": lambda: (d / MANIFEST).write_text(json.dumps({**man, "generation": True})),
        "path traversal": lambda: (d / MANIFEST).write_text(json.dumps({**man, "items": "../../etc/passwd"})),
        "items flipped byte": lambda: items.write_bytes(items.read_bytes().replace(b"Aiko", b"Aika")),
        "items missing": lambda: items.unlink(),
        "embeddings missing": lambda: emb.unlink(),
        "embeddings truncated": lambda: emb.write_bytes(emb.read_bytes()[:100]),
        "embeddings noise": lambda: emb.write_bytes(emb.read_bytes()[:-64] + b"\x01\x7f" * 32),
        "embeddings foreign": lambda: emb.write_bytes(b"PK\x03\x04 a zip file"),
    }


def test_corrupted_or_foreign_files_give_one_line_errors(tmp_path):
    d = tmp_path / "mem"
    VectorMemory(d, encoder=HashEncoder()).add_many(FACTS, time=5.0)
    pristine = {p.name: p.read_bytes() for p in d.iterdir()}
    for name, corrupt in _corrupt_cases(d).items():
        for p in d.iterdir():
            p.unlink()
        for n, b in pristine.items():
            (d / n).write_bytes(b)
        corrupt()
        with pytest.raises(DodaiError) as e:
            VectorMemory(d, encoder=HashEncoder())
        assert "\n" not in str(e.value), name


def test_items_file_with_consistent_hash_but_bad_lines(tmp_path):
    """A tampered items file whose manifest hash was updated too is still checked line by line."""
    d = tmp_path / "mem"
    VectorMemory(d, encoder=HashEncoder()).add_many(FACTS[:2], time=5.0)
    man = json.loads((d / MANIFEST).read_text())
    for blob in [b'{"id": "a", "text": "x", "role": "user", "time": 1, "metadata": {}}\n' * 2,  # dup id
                 b'[1, 2]\n{"id": "b"}\n', b'{"id": "a", "text": 5, "role": "user", "time": 1, "metadata": {}}\n'
                 b'{"id": "b", "text": "y", "role": "user", "time": 1, "metadata": {}}\n',
                 b'{"id": "a", "text": "x", "role": "user", "time": NaN, "metadata": {}}\n'
                 b'{"id": "b", "text": "y", "role": "user", "time": 1, "metadata": {}}\n']:
        (d / man["items"]).write_bytes(blob)
        (d / MANIFEST).write_text(json.dumps({**man, "items_sha256": hashlib.sha256(blob).hexdigest()}))
        with pytest.raises(DodaiError):
            VectorMemory(d, encoder=HashEncoder())


def test_bad_input(tmp_path):
    m = VectorMemory(tmp_path / "m", encoder=HashEncoder())
    for bad in ["", "   ", None, 5, "x" * (V.MAX_TEXT_CHARS + 1)]:
        with pytest.raises(DodaiError):
            m.add(bad)
    with pytest.raises(DodaiError):
        m.add("fine", metadata={"f": object()})
    assert m.search("anything") == []
    m.add("hello")
    with pytest.raises(DodaiError):
        m.search("")
    with pytest.raises(DodaiError):
        m.search("hello", k=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DodaiError):
        VectorMemory(tmp_path / "file")


def test_dedup_of_near_identical_items(tmp_path, minilm):
    m = VectorMemory(tmp_path / "mem", encoder=minilm)
    a, new_a = m.add("My name is Aiko.")
    b, new_b = m.add("my name is Aiko!")
    c, new_c = m.add("My name is Marta.")
    assert new_a and not new_b and b.id == a.id and new_c
    assert len(m) == 2
    # items added without dedup are removed by dedup(), keeping the oldest
    m.add_many(["My name is Aiko", "I live in Lisbon."], dedup=False)
    assert len(m) == 4
    assert m.dedup() == 1
    assert [x.text for x in m.items] == ["My name is Aiko.", "My name is Marta.", "I live in Lisbon."]
    assert len(VectorMemory(tmp_path / "mem", encoder=minilm)) == 3


def test_retrieval_ranks_the_right_memory_first(tmp_path, minilm):
    m = VectorMemory(tmp_path / "mem", encoder=minilm)
    m.add_many(FACTS + ["The weather was nice yesterday.", "Paris is the capital of France."])
    questions = {"What is my name?": 0, "Which city do I live in?": 1, "What am I allergic to?": 2,
                 "What is my cat called?": 3, "What is my favourite number?": 4, "What is my job?": 5}
    for q, want in questions.items():
        hits = m.search(q, k=3)
        assert hits[0].item.text == FACTS[want], (q, [(h.item.text, h.score) for h in hits])
        assert hits[0].score >= hits[1].score >= hits[2].score
    # the scores are MiniLM cosines: equal to a direct encode
    q = minilm.encode(["What is my name?"])[0]
    direct = float(torch.nn.functional.normalize(q, dim=0) @ torch.nn.functional.normalize(
        minilm.encode([FACTS[0]])[0], dim=0))
    assert m.search("What is my name?", k=1)[0].score == pytest.approx(direct, abs=1e-5)
    assert m.search("What is my name?", k=8, min_score=0.99) == []
    # reopening (no encoder given) restores the index and searches with the recorded encoder spec
    m2 = VectorMemory(tmp_path / "mem", encoder=minilm)
    assert m2.search("Where do I live?", k=1)[0].item.text == "I live in Lisbon."
