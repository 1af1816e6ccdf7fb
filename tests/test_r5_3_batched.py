"""The fast paths of R5.3 equal their plain references: batched rollouts (left-padded, one KV cache) give
the same completions as sampling each prompt alone with the same seed; batched greedy evaluation gives the
same replies as decoding prompt by prompt; PPO / GRPO / the KL estimate are unchanged by batching; LoRA
arms share the frozen start weights instead of copying them."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from dodai.errors import DodaiError
from dodai.finetune import grpo, ppo, sft, tasks
from dodai.finetune.policy import greedy_batch, sample_batch, sample_completions, strip_end
from dodai.models.llama import Llama, LlamaConfig

V = 64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(seed=0):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=V, block_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64))
    return m.eval()


def prompts(n, seed):
    rng = random.Random(seed)
    return [[rng.randrange(V) for _ in range(rng.randint(2, 9))] for _ in range(n)]


def _a_stop_token(m, ps):
    """A token the model does produce mid-greedy-completion, so that some rows stop early and leave the batch."""
    c = sample_completions(m, ps[0], 1, 10, set(), temperature=0.0)[0]
    return {c[3]}


def test_sample_batch_equals_one_by_one_with_the_same_seeds():
    m = tiny(1)
    ps = prompts(6, 0)
    ps = ps + [ps[2]] * 3  # a repeated prompt (a GRPO group): different seeds, different samples
    stop = set(range(6))  # ~1 in 11 draws of the random model: some rows stop early, some run to the end
    seeds = [7 * i + 1 for i in range(len(ps))]
    got = sample_batch(m, ps, 10, stop, seeds, temperature=1.0, pad_id=0, batch_size=4)
    ref = [sample_completions(m, p, 1, 10, stop, 1.0, seed=s)[0] for p, s in zip(ps, seeds)]
    assert got == ref
    assert any(len(c) < 10 and c[-1] in stop for c in got)  # the early-stop path ran
    assert any(len(c) == 10 for c in got)
    assert len({tuple(c) for c in got[-4:]}) > 1  # the group's samples differ
    # a different seed gives a different draw (the seeds are really used)
    assert sample_batch(m, ps, 10, stop, [s + 1 for s in seeds]) != got
    with pytest.raises(DodaiError):
        sample_batch(m, ps, 10, stop, seeds[:-1])


def test_greedy_batch_equals_greedy_one_by_one():
    m = tiny(2)
    ps = prompts(7, 1)
    stop = _a_stop_token(m, ps)
    got = greedy_batch(m, ps, 9, stop, pad_id=5, batch_size=3)
    ref = [strip_end(sample_completions(m, p, 1, 9, stop, temperature=0.0)[0], stop) for p in ps]
    assert got == ref
    assert len(got[0]) <= 3 and any(len(c) == 9 for c in got)
    assert all(not c or c[-1] not in stop for c in got)


def test_task_accuracy_batched_equals_per_prompt_reply():
    model, tok = tasks.tiny_model_and_tokenizer(seed=0, n_layer=1, n_embd=32)
    fmt = sft.ChatFormatter(tok)
    _, test = tasks.split(8, 6, seed=3)
    # warm the random model a little so that replies end at <|im_end|> at different lengths
    data = [fmt.encode(e.messages()) for e in tasks.split(64, 1, seed=4)[0]]
    sft.prepare(model, sft.SFTConfig(steps=25, batch_size=16, lr=3e-3, warmup=2))
    sft.train_sft(model, data, sft.SFTConfig(steps=25, batch_size=16, lr=3e-3, warmup=2), pad_id=tok.eos_id)
    acc_ref, ref = sft.task_accuracy(model, fmt, test, 16)
    acc, got = sft.task_accuracy(model, fmt, test, 16, batch_size=4)
    assert got == ref and acc == acc_ref
    assert all(tok.special_tokens["<|im_end|>"] not in tok.encode(r) for r in got)
    assert sft.task_accuracy(model, fmt, [], 16, batch_size=4) == (0.0, [])


def _low_share(c):
    return sum(t < V // 2 for t in c) / max(len(c), 1)


def test_ppo_batched_rollouts_equal_the_reference():
    def run(batched):
        policy = tiny(4)
        ref = copy.deepcopy(policy)
        cfg = ppo.PPOConfig(steps=3, batch_size=6, max_new_tokens=8, lr=3e-2, batched=batched)
        score = lambda idx, ps, cs: torch.tensor([_low_share(c) for c in cs])  # noqa: E731
        return ppo.train_ppo(policy, ref, prompts(10, 6), score, stop_ids={3, 9}, cfg=cfg)[0]

    fast, slow = run(True), run(False)
    for a, b in zip(fast, slow, strict=True):
        for k in ("reward", "kl", "length", "pg_loss", "clipfrac"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    assert fast[-1]["kl"] != 0.0  # the policy moved


def test_grpo_batched_rollouts_equal_the_reference():
    def run(batched):
        policy = tiny(3)
        ref = copy.deepcopy(policy)
        cfg = grpo.GRPOConfig(steps=3, prompts_per_step=2, group_size=4, max_new_tokens=8, lr=3e-2, batched=batched)
        return grpo.train_grpo(policy, ref, prompts(10, 5), lambda i, c: _low_share(c), stop_ids={3}, cfg=cfg)

    fast, slow = run(True), run(False)
    for a, b in zip(fast, slow, strict=True):
        for k in ("reward", "kl", "kl_reply", "length", "loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    assert fast[-1]["kl_reply"] != 0.0


def test_kl_estimate_batched_equals_reference_and_lora_copies_share_the_base():
    from dodai.experiments import r5_3

    start = tiny(5)
    for p in start.parameters():
        p.requires_grad_(False)
    s = {"lora_rank": 4, "targets": ["wq", "wv", "w_up"]}
    pol = r5_3._trainable_copy(start, s)
    base = dict(start.named_parameters())
    shared = [n for n, p in pol.named_parameters() if not p.requires_grad]
    assert shared and all(any(p is q for q in base.values()) for n, p in pol.named_parameters() if n in shared)
    trainable = [p for p in pol.parameters() if p.requires_grad]
    assert trainable and all(not any(p is q for q in base.values()) for p in trainable)
    assert r5_3.kl_to(pol, start, prompts(5, 8), {3}, 8, 0) == pytest.approx(0.0, abs=1e-5)  # B = 0: no change yet
    before = {n: p.clone() for n, p in base.items()}
    with torch.no_grad():
        for n, p in pol.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.5)
    ps = prompts(5, 8)
    fast = r5_3.kl_to(pol, start, ps, {3}, 8, 0, batch_size=2)
    slow = r5_3.kl_to(pol, start, ps, {3}, 8, 0, batch_size=None)
    assert fast == pytest.approx(slow, rel=1e-4, abs=1e-6) and abs(fast) > 1e-3  # a 5-sample estimate: any sign
    for n, p in base.items():  # changing the adapters left the start model alone
        assert torch.equal(p, before[n]), n
    full = r5_3._trainable_copy(start, {"lora_rank": 0})
    assert all(p.requires_grad for p in full.parameters())
    assert not any(p is q for p in full.parameters() for q in base.values())


def test_r5_3_arms_are_cached_and_reused_only_for_the_same_config(tmp_path):
    import json

    from dodai.experiments import r5_3

    out = r5_3.run(tmp_path, quick=True, arms=("DPO",))
    f = tmp_path / "arm_DPO.json"
    assert set(out["results"]) == {"start", "DPO"} and f.is_file() and (tmp_path / "arm_start.json").is_file()
    assert not (tmp_path / "report.md").exists()  # a partial run only caches
    saved = json.loads(f.read_text())
    assert saved["result"]["held_out_margin_after"] == out["results"]["DPO"]["held_out_margin_after"]
    saved["result"]["accuracy"] = -1.0  # a marker: reused, not recomputed
    f.write_text(json.dumps(saved))
    assert r5_3.run(tmp_path, quick=True, arms=("DPO",))["results"]["DPO"]["accuracy"] == -1.0
    saved["config"] = "another configuration"
    f.write_text(json.dumps(saved))
    again = r5_3.run(tmp_path, quick=True, arms=("DPO",))["results"]["DPO"]
    assert again["accuracy"] != -1.0
    assert again["held_out_margin_after"] == pytest.approx(out["results"]["DPO"]["held_out_margin_after"], rel=1e-4)
    f.write_text("{not json")
    assert r5_3.run(tmp_path, quick=True, arms=("DPO",))["results"]["DPO"]["accuracy"] != -1.0
