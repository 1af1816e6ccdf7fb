"""Direction of effect of each post-training loop on a tiny random Llama (seconds, one thread):
the reward model learns a preference, DPO raises the held-out chosen-minus-rejected log-ratio, GRPO and
PPO raise the mean reward while the KL to the reference stays bounded.

Toy preference / verifiable reward: the share of completion tokens from the lower half of the vocabulary
(the start policy scores ≈ 0.5; nothing about it is visible in the prompt)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from dodai.finetune import dpo, grpo, ppo, reward
from dodai.finetune.policy import RewardModel
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


def low_share(c: list[int]) -> float:
    return sum(t < V // 2 for t in c) / max(len(c), 1)


def prompts(n, seed):
    rng = random.Random(seed)
    return [[rng.randrange(V) for _ in range(rng.randint(3, 6))] for _ in range(n)]


def pairs(n, seed):
    rng = random.Random(seed)
    out = []
    for p in prompts(n, seed):
        k = rng.randint(3, 6)
        lo = [rng.randrange(V // 2) for _ in range(k)]
        hi = [rng.randrange(V // 2, V) for _ in range(k)]
        out.append((p, lo, hi))
    return out


def test_reward_model_learns_the_preference():
    rm = RewardModel(tiny(1))
    held = pairs(40, 2)
    assert reward.pairwise_accuracy(rm, held) == 0.5  # zero-initialised head: all ties
    reward.train_reward_model(rm, pairs(128, 1), reward.RMConfig(steps=25, batch_size=16, lr=3e-3))
    assert reward.pairwise_accuracy(rm, held) > 0.8


def test_dpo_raises_held_out_log_ratio():
    policy, held = tiny(2), pairs(40, 4)
    ref = copy.deepcopy(policy)
    for p in policy.parameters():
        p.requires_grad_(True)
    before = dpo.implicit_margin(policy, ref, held, beta=0.1)
    assert before == (0.0, 0.0)
    hist = dpo.train_dpo(policy, ref, pairs(128, 3), dpo.DPOConfig(steps=15, batch_size=16, lr=3e-3, beta=0.1))
    margin, acc = dpo.implicit_margin(policy, ref, held, beta=0.1)
    assert margin > 0.1 and acc > 0.8
    assert hist[-1]["loss"] < hist[0]["loss"]


def _mean(rows, key, sl):
    xs = [r[key] for r in rows[sl]]
    return sum(xs) / len(xs)


def test_grpo_raises_reward_and_beta_bounds_kl():
    def run(beta):
        policy = tiny(3)
        ref = copy.deepcopy(policy)
        cfg = grpo.GRPOConfig(steps=16, prompts_per_step=2, group_size=6, max_new_tokens=8, lr=3e-2, beta=beta)
        return grpo.train_grpo(policy, ref, prompts(16, 5), lambda i, c: low_share(c), stop_ids=set(), cfg=cfg)

    weak, strong = run(0.04), run(1.0)
    first, last = _mean(weak, "reward", slice(0, 3)), _mean(weak, "reward", slice(-3, None))
    assert last > first + 0.15, (first, last)
    # the KL penalty is what keeps the policy near the reference: 25x the β, a fraction of the drift
    assert _mean(strong, "kl", slice(-3, None)) < 0.5 * _mean(weak, "kl", slice(-3, None))
    assert max(r["kl"] for r in strong) < 0.5  # nats per token


def test_ppo_raises_reward_and_beta_bounds_kl():
    def score(idx, prompts_, comps):
        return torch.tensor([low_share(c) for c in comps])

    def run(kl_coef, target_kl=None):
        policy = tiny(4)
        ref = copy.deepcopy(policy)
        cfg = ppo.PPOConfig(steps=14, batch_size=8, max_new_tokens=8, lr=3e-2, kl_coef=kl_coef, target_kl=target_kl,
                            whiten_rewards=False)
        return ppo.train_ppo(policy, ref, prompts(16, 6), score, stop_ids=set(), cfg=cfg)[0]

    weak, strong = run(0.05, target_kl=4.0), run(1.0)
    first, last = _mean(weak, "reward", slice(0, 3)), _mean(weak, "reward", slice(-3, None))
    assert last > first + 0.15, (first, last)
    assert _mean(strong, "kl", slice(-5, None)) < 0.6 * _mean(weak, "kl", slice(-5, None))  # measured 0.42
    assert all(0.0 <= h["clipfrac"] <= 1.0 and h["entropy"] > 0 for h in weak)
    assert weak[-1]["beta"] != 0.05  # the adaptive controller moved β


def test_r5_3_quick(tmp_path):
    """The comparison runs end to end on the date task; DPO's held-out margin rises and every arm moves
    away from the start (KL ≠ 0). (The tiny model's reward model is near chance on these subtle pairs:
    reported, not asserted; test_reward_model_learns_the_preference asserts that the RM learns.)"""
    import math

    from dodai.experiments import r5_3

    res = r5_3.run(tmp_path, quick=True)
    rows = {r["method"]: r for r in res["table"]}
    assert set(rows) == {"start", "SFT", "RM+PPO", "DPO", "GRPO"}
    r = res["results"]
    assert r["DPO"]["held_out_margin_after"] > r["DPO"]["held_out_margin_before"] == 0.0
    assert r["DPO"]["held_out_pair_accuracy"] > 0.6
    assert r["RM+PPO"]["rm_pairwise_accuracy_before"] == 0.5
    for name in ("SFT", "RM+PPO", "DPO", "GRPO"):
        assert 0.0 <= rows[name]["win_rate_vs_start"] <= 1.0
        assert math.isfinite(rows[name]["kl_to_start"]) and rows[name]["kl_to_start"] != 0.0
    assert rows["start"]["kl_to_start"] == 0.0
    assert len(res["curves"]["RM+PPO"]) == len(res["curves"]["GRPO"]) > 0
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "report.md").is_file()


def test_cli_dpo_grpo_rlhf(tmp_path, capsys):
    import json

    from dodai.cli import main
    from dodai.finetune import tasks

    model, tok = tasks.tiny_model_and_tokenizer(seed=5, n_layer=1, n_embd=16)
    model.save(tmp_path / "base", tokenizer=tok)
    base = str(tmp_path / "base")
    common = ["--model", base, "--steps", "2", "--batch-size", "2", "--quiet", "--lora-rank", "2"]
    assert main(["dpo", "--data", "dates", "--task-size", "12", "--out", str(tmp_path / "d"), *common]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["margin_before"] == 0.0 and (tmp_path / "d" / "adapters.safetensors").is_file()
    assert main(["grpo", "--task-size", "6", "--eval-size", "2", "--group-size", "2", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "g"), *common]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= s["reward_first"] <= 1.0 and (tmp_path / "g" / "model" / "config.json").is_file()
    assert main(["rlhf", "--data", "dates", "--task-size", "12", "--rm-steps", "2", "--max-new-tokens", "4",
                 "--target-kl", "1.0", "--out", str(tmp_path / "r"), *common]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= s["rm_pairwise_accuracy_held_out"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "r" / "ppo_metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"reward", "kl", "entropy", "clipfrac", "beta"} <= set(rows[0])
    # hostile input: one-line errors, exit code 2
    (tmp_path / "bad.jsonl").write_text('{"messages": [], "chosen": "a", "rejected": "b"}\n')
    assert main(["dpo", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "x"), *common]) == 2
    assert main(["grpo", "--data", "mine.jsonl", "--out", str(tmp_path / "x"), *common]) == 2
    assert main(["rlhf", "--data", "dates", "--target-kl", "-1", "--out", str(tmp_path / "x"), *common]) == 2
    err = capsys.readouterr().err
    assert "non-empty list" in err and "verifiable reward" in err and "--target-kl" in err
