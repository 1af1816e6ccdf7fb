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


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_sft_lowers_held_out_assistant_loss(lora_rank):
    model, tok = tasks.tiny_model_and_tokenizer(seed=1, n_layer=1, n_embd=32)
    fmt = ChatFormatter(tok)
    train, test = tasks.split(96, 24, seed=3)
    data = [fmt.encode(e.messages()) for e in train]
    held = [fmt.encode(e.messages()) for e in test]
    before = sft.eval_loss(model, held)
    cfg = sft.SFTConfig(steps=25, batch_size=16, lr=3e-2 if lora_rank else 3e-3, warmup=3, lora_rank=lora_rank,
                        lora_alpha=16, lora_targets=["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"])
    trainable, total = sft.prepare(model, cfg)
    assert (trainable < total / 2) if lora_rank else (trainable == total)
    hist = sft.train_sft(model, data, cfg)
    after = sft.eval_loss(model, held)
    # a random tiny base with frozen (random) embeddings moves little under LoRA in 25 steps; full FT a lot
    assert after < (before - 0.15 if lora_rank else 0.75 * before), (before, after)
    assert hist[-1]["loss"] < hist[0]["loss"]
