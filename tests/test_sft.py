"""SFT: the assistant-only loss mask against the rendered text, JSONL loading, batching, training."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.finetune import sft, tasks
from dodai.finetune.sft import IGNORE, ChatFormatter


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    return tasks.tiny_model_and_tokenizer(seed=0, n_layer=1, n_embd=32)


def conversation(a1="Hello there!", a2='{"date": "2001-02-03"}'):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": a1}, {"role": "user", "content": "March 3, 2001?"},
            {"role": "assistant", "content": a2}]


def check_mask(fmt: ChatFormatter, msgs: list[dict]):
    ids, labels = fmt.encode(msgs)
    assert len(ids) == len(labels)
    full = fmt.template.render(msgs, add_generation_prompt=False)
    assert fmt.tok.decode(ids) == full  # nothing lost or added by piecewise tokenization
    # each maximal run of labelled tokens decodes to exactly one reply + the end token
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    replies = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert [fmt.tok.decode(r) for r in runs] == [r + "<|im_end|>" for r in replies]
    return ids


def test_mask_decodes_to_replies_plus_end_token(tiny):
    _, tok = tiny
    check_mask(ChatFormatter(tok), conversation())


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<|>"), min_size=1,
               max_size=30), st.text(min_size=1, max_size=20).filter(lambda s: "<|" not in s))
def test_mask_property(a1, a2):
    _, tok = tasks.tiny_model_and_tokenizer(seed=0, n_layer=1, n_embd=16)
    check_mask(ChatFormatter(tok), conversation(a1, a2))


def test_mask_with_smollm2_template(smollm2_gguf):
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    tok = tokenizer_from_gguf(smollm2_gguf)
    fmt = ChatFormatter(tok)
    msgs = conversation()
    ids = check_mask(fmt, msgs)
    assert ids == tok.encode(fmt.template.render(msgs, add_generation_prompt=False))  # same as one encode
    no_system = msgs[1:]  # SmolLM2's template inserts its default system prompt: still masked out
    check_mask(fmt, no_system)
    assert "SmolLM" in fmt.template.render(no_system, add_generation_prompt=False)


def test_jsonl_loading_and_hostile_lines(tmp_path):
    good = tmp_path / "good.jsonl"
    sft.write_chat_jsonl([conversation()], good)
    assert sft.load_chat_jsonl(good) == [conversation()]
    cases = {
        "notjson": "{nope\n", "nomsgs": json.dumps({"text": "x"}) + "\n",
        "noassistant": json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n",
        "badrole": json.dumps({"messages": [{"role": 1, "content": "x"}]}) + "\n", "empty": "\n\n",
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_text(text)
        with pytest.raises(DodaiError):
            sft.load_chat_jsonl(p)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DodaiError):
        sft.load_chat_jsonl(tmp_path / "bin.jsonl")
    with pytest.raises(DodaiError):
        sft.load_chat_jsonl(tmp_path / "missing.jsonl")


def test_bucket_batches_cover_every_example_once():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 4, 6, 10]
    batches = sft.bucket_batches(lengths, 3, seed=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:  # buckets are contiguous in sorted-length order
        ls = sorted(lengths[i] for i in b)
        assert ls[-1] - ls[0] <= 2 * (len(b) - 1)


def test_sft_cli_lora_and_hostile(tmp_path, capsys):
    from dodai.cli import main
    from dodai.finetune.lora import load_adapters
    from dodai.models import load_model

    model, tok = tasks.tiny_model_and_tokenizer(seed=2, n_layer=1, n_embd=32)
    model.save(tmp_path / "base", tokenizer=tok)
    data = sft.write_chat_jsonl([e.messages() for e in tasks.make_dates(32, 5)], tmp_path / "d.jsonl")
    rc = main(["sft", "--model", str(tmp_path / "base"), "--data", str(data), "--lora-rank", "4",
               "--steps", "3", "--batch-size", "8", "--learning-rate", "1e-2", "--out", str(tmp_path / "run"),
               "--merge", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < summary["trainable_params"] < summary["total_params"]
    # the saved adapters on the base == the merged model folder
    base, _ = load_model(tmp_path / "base")
    load_adapters(base, tmp_path / "run" / "adapters.safetensors")
    merged, _ = load_model(tmp_path / "run" / "model")
    x = torch.randint(0, tok.vocab_size, (1, 12))
    torch.testing.assert_close(merged(x)[0], base(x)[0], atol=1e-5, rtol=0)
    (tmp_path / "bad.jsonl").write_text("{]\n")
    assert main(["sft", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "bad.jsonl"), "--quiet",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "bad.jsonl:1: not valid JSON" in capsys.readouterr().err
    assert main(["sft", "--model", str(tmp_path / "base"), "--data", "dates", "--steps", "0", "--quiet"]) == 2


def test_r5_2_quick(tmp_path):
    from dodai.experiments import r5_2

    res = r5_2.run(tmp_path, quick=True)
    rows = {r["model"]: r for r in res["table"]}
    before = rows["before (no fine-tuning)"]
    full, lora = rows["full fine-tuning"], rows["LoRA r=8"]
    assert full["held_out_loss"] < 0.75 * before["held_out_loss"]
    assert lora["held_out_loss"] < before["held_out_loss"] - 0.15
    assert lora["trainable_params"] < full["trainable_params"] / 2
    assert full["held_out_accuracy"] >= before["held_out_accuracy"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "sft_loss.png").is_file()


def test_mask_when_the_assistant_speaks_first(smollm2_gguf):
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    fmt = ChatFormatter(tokenizer_from_gguf(smollm2_gguf))
    check_mask(fmt, [{"role": "assistant", "content": "Hi, how can I help?"}, {"role": "user", "content": "x"},
                     {"role": "assistant", "content": "Done."}])
