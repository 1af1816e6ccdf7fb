"""R6.3 FLAN-style task mixture (dodai/data/flan_tasks.py) and the T5 + FLAN experiment in quick mode."""

from __future__ import annotations

import random
import re

import pytest
import torch

from dodai.data.flan_tasks import (
    HELDOUT_TASKS,
    MONTHS,
    TASKS,
    TRAIN_TASKS,
    exact_match,
    make_example,
    mixture,
    pool_from_text,
)
from dodai.data.transduction import words_to_number
from dodai.errors import DodaiError


@pytest.fixture(scope="module")
def pool():
    from dodai.data.corpora import load_corpus

    return pool_from_text(load_corpus("python-docs")[:300_000], max_words=400)


def _fields(task: str, template: int, prompt: str) -> dict:
    """Read the fields back out of a prompt by matching it against its template."""
    pat = re.escape(TASKS[task].templates[template])
    pat = pat.replace(re.escape("{x}"), "(?P<x>.+)").replace(re.escape("{w}"), "(?P<w>[^\"]+)")
    m = re.fullmatch(pat, prompt)
    assert m, (task, template, prompt)
    return m.groupdict()


def _check(ex, k, pool):
    """Check an example's target from its prompt with logic written independently of the generators."""
    t, y = ex.task, ex.target
    f = _fields(t, k, ex.prompt)
    x = f["x"]
    if t == "number_words":
        assert str(words_to_number(x.split())) == y
    elif t == "date_norm":
        yy, mm, dd = map(int, y.split("-"))
        month = MONTHS[mm - 1]
        assert str(yy) in x and (month in x or month[:3] in x) and re.search(rf"\b{dd}(st|nd|rd|th)?\b", x)
        assert 1 <= dd <= 31 and len(y) == 10
    elif t in ("sort_words", "reverse_words", "count_words", "acronym"):
        ws = x.split()
        assert len(ws) >= 2 and all(w in pool.words for w in ws), x
        want = {"sort_words": " ".join(sorted(ws)), "reverse_words": " ".join(reversed(ws)),
                "count_words": str(len(ws)), "acronym": "".join(w[0] for w in ws)}[t]
        assert y == want, (x, y)
    else:  # word_after / word_before over a real corpus sentence
        sent, word = x.split(), f["w"]
        assert sent in pool.sentences and sent.count(word) == 1
        i = sent.index(word)
        assert y == (sent[i + 1] if t == "word_after" else sent[i - 1])


def test_every_task_and_template_is_correct(pool):
    rng = random.Random(0)
    for name, task in TASKS.items():
        assert len(task.templates) >= 3
        for k in range(len(task.templates)):
            for split in ("train", "test"):
                for _ in range(5):
                    ex = make_example(name, rng, pool, split, template=k)
                    assert ex.task == name and ex.target
                    _check(ex, k, pool)


def test_splits_are_disjoint_and_heldout_tasks_never_trained(pool):
    train = mixture(TRAIN_TASKS, 3000, pool, "train", seed=1)
    test = mixture(TRAIN_TASKS, 600, pool, "test", seed=1)
    assert {e.task for e in train} == set(TRAIN_TASKS)  # every training task is in the mixture ...
    assert not {e.task for e in train} & set(HELDOUT_TASKS)  # ... and no held-out task
    # content keys: a test item's material never shows up in training, whatever the template
    def key(e):  # the material: the answer determines the value, the date and the reversed word list
        return e.task, e.target

    train_keys = {key(e) for e in train if e.task in ("number_words", "date_norm", "reverse_words")}
    test_keys = {key(e) for e in test if e.task in ("number_words", "date_norm", "reverse_words")}
    assert train_keys and test_keys and not train_keys & test_keys
    # templates vary within a task
    assert len({e.prompt.split()[0] for e in train if e.task == "sort_words"}) >= 3


def test_mixture_is_deterministic_and_hostile_inputs(pool):
    assert mixture(TRAIN_TASKS, 50, pool, seed=3) == mixture(TRAIN_TASKS, 50, pool, seed=3)
    assert mixture(TRAIN_TASKS, 50, pool, seed=3) != mixture(TRAIN_TASKS, 50, pool, seed=4)
    with pytest.raises(DodaiError):
        make_example("nope", random.Random(0), pool)
    with pytest.raises(DodaiError):
        make_example("sort_words", random.Random(0), pool, split="dev")
    with pytest.raises(DodaiError):
        mixture([], 3, pool)
    with pytest.raises(DodaiError):
        pool_from_text("too short.")
    assert exact_match("  2021-03-05. ", "2021-03-05") and not exact_match("2021-03-06", "2021-03-05")
    assert exact_match("Apple  Fig", "apple fig")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_r6_3_quick(tmp_path):
    from dodai.experiments import EXPERIMENTS
    from dodai.experiments.r6_3 import run

    assert EXPERIMENTS["R6.3"] == "dodai.experiments.r6_3:run"
    r = run(tmp_path, quick=True)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "flan_exact_match.png").is_file()
    assert (tmp_path / "results.json").is_file()
    tr = r["summary"]["train_tasks_heldout_examples"]
    # The claim at seconds-of-CPU scale: instruction tuning makes the answers of *unseen examples* of the
    # training tasks far more likely than the span-corruption model finds them (teacher-forced loss), task by
    # task, and lowers the answer loss on the held-out tasks too. Exact match is not asserted: at this scale both
    # models score 0 on most tasks, so a ">=" on it would hold by construction (see evidence/R6.3).
    assert tr["instruction_tuned_loss"] < 0.7 * tr["pretrained_only_loss"]
    for row in r["rows"]:
        if row["task"] in TRAIN_TASKS:
            assert row["instruction_tuned_loss"] < row["pretrained_only_loss"], row
    held = r["summary"]["heldout_tasks"]  # tasks never trained on: the answer loss still falls
    assert held["instruction_tuned_loss"] < held["pretrained_only_loss"]
    assert {row["task"] for row in r["rows"]} == set(TRAIN_TASKS) | set(HELDOUT_TASKS)
    assert r["pretrain_curve"][-1][1] < r["pretrain_curve"][0][1]  # span corruption trains
