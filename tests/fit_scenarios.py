"""Tiny fixed-seed runs of every training loop that moved onto :func:`dodai.train.fit.fit`.

Each scenario calls a loop through its public function (the same call before and after the loops moved
onto ``fit``) and returns the numbers it produced: per-step losses and metrics, evaluation losses, or, for
loops that return only a model, a digest of the trained weights (the sum of the parameters and the
model's loss on a fixed batch).

``python tests/fit_scenarios.py --record tests/data/fit_baseline.json`` ran every scenario on the code
*before* the conversion (the commit is stored in the file); ``tests/test_fit_regression.py`` runs them
again on the converted loops and compares. The stored values are a regression baseline, not a
reference result: they say "the conversion did not change what the loops compute".

Models are deliberately ones whose code other work is unlikely to touch: a test-local causal LM
(:class:`TinyLM`) for the post-training loops, and the rollout sampler of GRPO/PPO is replaced by a
deterministic stand-in (the policy *update* is what moved; the generation runtime is another module's
business). BERT, T5, Seq2Seq, the VLM and the GPT of the experiments are dodai's own (the experiments
build them internally).
"""

from __future__ import annotations

import copy
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

V = 32


@dataclass
class TinyConfig:
    vocab_size: int = V
    block_size: int = 32
    n_embd: int = 16


class TinyLM(nn.Module):
    """One attention layer + one MLP, with the causal-LM protocol ``forward(idx, targets) -> (logits, loss)``,
    linear layers named like Llama's (``wq wk wv wo``: LoRA targets) and a final ``norm`` (hidden states)."""

    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.config = c = config or TinyConfig()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(c.n_embd, c.n_embd) for _ in range(4))
        self.w_up, self.w_down = nn.Linear(c.n_embd, 2 * c.n_embd), nn.Linear(2 * c.n_embd, c.n_embd)
        self.norm = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        att = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])  # (B, T, T)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1), float("-inf"))
        x = x + self.wo(att.softmax(-1) @ v)
        x = x + self.w_down(F.gelu(self.w_up(x)))
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss


def tiny_lm(seed: int) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM()


def digest(model: nn.Module, batch_fn) -> list[float]:
    """[sum of every parameter, the model's loss on a fixed batch]: a fingerprint of trained weights."""
    with torch.no_grad():
        total = float(sum(p.double().sum() for p in model.parameters()))
        was = model.training
        model.eval()
        loss = float(batch_fn(model))
        model.train(was)
    return [total, loss]


def lm_stream(n: int = 2000, seed: int = 0, vocab: int = V) -> torch.Tensor:
    """A learnable token stream: mostly ``next = current + 1 mod V`` with 10 % noise."""
    g = torch.Generator().manual_seed(seed)
    noise, rnd = torch.rand(n, generator=g), torch.randint(0, vocab, (n,), generator=g)
    x = [0]
    for i in range(1, n):
        x.append(int(rnd[i]) if noise[i] < 0.1 else (x[-1] + 1) % vocab)
    return torch.tensor(x, dtype=torch.long)


def sft_data(n: int = 24, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randrange(V) for _ in range(rng.randint(2, 6))]
        a = [(p[-1] + i + 1) % V for i in range(rng.randint(2, 6))]
        out.append((p + a, [-100] * len(p) + a))
    return out


def prompts(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(V) for _ in range(rng.randint(2, 5))] for _ in range(n)]


def pairs(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for p in prompts(n, seed):
        k = rng.randint(2, 5)
        out.append((p, [rng.randrange(V // 2) for _ in range(k)], [rng.randrange(V // 2, V) for _ in range(k)]))
    return out


def fake_sample_batch(model, prompts_, max_new_tokens, stop_ids, seeds, temperature=1.0, pad_id=0,
                      batch_size=None):
    """A deterministic stand-in for the rollout sampler: completion r is drawn from ``random.Random(seeds[r])``
    (length 1..max_new_tokens, stopping at a stop id), independent of the model."""
    out = []
    for s in seeds:
        rng = random.Random(s)
        c = []
        for _ in range(rng.randint(1, max_new_tokens)):
            c.append(rng.randrange(V))
            if c[-1] in stop_ids:
                break
        out.append(c)
    return out


def low_share(c: list[int]) -> float:
    return sum(t < V // 2 for t in c) / max(len(c), 1)


# ------------------------------------------------------------------------------------------------ scenarios
def sc_pretrain(tmp: Path) -> dict:
    from dodai.train.trainer import TrainConfig, read_metrics, train

    ids = lm_stream()
    tr, va = ids[:1800].to(torch.uint16), ids[1800:].to(torch.uint16)
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=8, block_size=8, max_iters=12, eval_interval=4, eval_iters=2, warmup_iters=3,
                      lr_decay_iters=12, learning_rate=1e-2, min_lr=1e-3, quiet=True, seed=7,
                      gradient_accumulation_steps=2)
    res = train(TinyLM(TinyConfig(block_size=8)), tr, va, cfg, tmp / "pretrain", bytes_per_token=1.0)
    rows = read_metrics(tmp / "pretrain")
    return {"train_loss": [r["train_loss"] for r in rows], "val_loss": [r["val_loss"] for r in rows],
            "last_batch": [res["last_train_batch_loss"]]}


def _sft(lora: bool) -> dict:
    from dodai.finetune import sft

    model = tiny_lm(1)
    cfg = sft.SFTConfig(steps=6, batch_size=4, lr=1e-2, warmup=2, max_len=10, seed=3,
                        lora_rank=2 if lora else 0, lora_targets=["wq", "wv"], weight_decay=0.01)
    sft.prepare(model, cfg)
    hist = sft.train_sft(model, sft_data(), cfg, pad_id=0)
    return {"loss": [r["loss"] for r in hist], "lr": [r["lr"] for r in hist]}


def sc_sft_full(tmp: Path) -> dict:
    return _sft(False)


def sc_sft_lora(tmp: Path) -> dict:
    return _sft(True)


def sc_reward(tmp: Path) -> dict:
    from dodai.finetune import reward
    from dodai.finetune.policy import RewardModel

    rm = RewardModel(tiny_lm(2))
    hist = reward.train_reward_model(rm, pairs(20, 1), reward.RMConfig(steps=5, batch_size=4, lr=1e-2, seed=1))
    return {"loss": [r["loss"] for r in hist], "accuracy": [r["accuracy"] for r in hist]}


def sc_dpo(tmp: Path) -> dict:
    from dodai.finetune import dpo

    policy = tiny_lm(3)
    ref = copy.deepcopy(policy)
    hist = dpo.train_dpo(policy, ref, pairs(20, 2), dpo.DPOConfig(steps=5, batch_size=4, lr=1e-2, seed=2))
    return {k: [r[k] for r in hist] for k in ("loss", "margin", "accuracy", "reward_chosen")}


def sc_grpo(tmp: Path) -> dict:
    from dodai.finetune import grpo

    saved = grpo.sample_batch
    grpo.sample_batch = fake_sample_batch
    try:
        policy = tiny_lm(4)
        ref = copy.deepcopy(policy)
        cfg = grpo.GRPOConfig(steps=4, prompts_per_step=2, group_size=3, max_new_tokens=5, lr=1e-2, seed=4)
        hist = grpo.train_grpo(policy, ref, prompts(8, 4), lambda i, c: low_share(c), {3}, cfg)
    finally:
        grpo.sample_batch = saved
    return {k: [r[k] for r in hist] for k in ("reward", "kl", "kl_reply", "loss", "length")}


def sc_ppo(tmp: Path) -> dict:
    from dodai.finetune import ppo

    saved = ppo.sample_batch
    ppo.sample_batch = fake_sample_batch
    try:
        policy = tiny_lm(5)
        ref = copy.deepcopy(policy)
        cfg = ppo.PPOConfig(steps=3, batch_size=4, max_new_tokens=5, lr=1e-2, ppo_epochs=2, target_kl=1.0,
                            horizon=100, seed=5)
        hist, head = ppo.train_ppo(policy, ref, prompts(8, 5),
                                   lambda idx, ps, cs: torch.tensor([low_share(c) for c in cs]), {3}, cfg)
    finally:
        ppo.sample_batch = saved
    out = {k: [r[k] for r in hist] for k in ("reward", "kl", "pg_loss", "vf_loss", "clipfrac", "entropy", "beta")}
    out["head"] = [float(head.proj.weight.double().sum()), float(head.proj.bias.double().sum())]
    return out


def _bert_blocks():
    g = torch.Generator().manual_seed(0)
    body = torch.randint(0, 8, (64, 1), generator=g).repeat(1, 10) + 5  # (64, 10)
    return torch.cat([torch.full((64, 1), 2), body, torch.full((64, 1), 3)], dim=1)


def sc_mlm(tmp: Path) -> dict:
    from dodai.models.bert import BertConfig
    from dodai.models.bert_heads import BertForMaskedLM
    from dodai.train.mlm import pretrain_mlm

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, add_pooler=False)
    m = BertForMaskedLM(cfg)
    blocks = _bert_blocks()
    out = pretrain_mlm(m, blocks[16:], mask_id=4, special_ids=[0, 1, 2, 3], steps=6, batch_size=8, lr=1e-2,
                       val_blocks=blocks[:16], eval_every=3, seed=1)
    return {"curve": [v for _, v in out["curve"]], "val": [v for _, v in out["val"]]}


def sc_classifier(tmp: Path) -> dict:
    from dodai.models.bert import BertConfig
    from dodai.models.bert_heads import BertForSequenceClassification, finetune_classifier

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    rows, ys = [], []
    for i in range(24):
        n = int(torch.randint(3, 8, (1,), generator=g))
        r = torch.randint(12, 40, (n,), generator=g).tolist()
        r[int(torch.randint(0, n, (1,), generator=g))] = 10 + i % 2
        rows.append([2, *r, 3])
        ys.append(i % 2)
    cfg = BertConfig(vocab_size=41, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    clf = BertForSequenceClassification(cfg, num_labels=2, pooling="mean")
    out = finetune_classifier(clf, rows, ys, pad_id=0, epochs=2, batch_size=8, lr=3e-3, seed=2)
    return {"curve": [v for _, v in out["curve"]]}


def sc_vlm(tmp: Path) -> dict:
    from dodai.models.gpt import GPTConfig
    from dodai.models.vlm import VLM, VLMConfig, fit

    lm = GPTConfig(vocab_size=20, block_size=16 + 8, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    m = VLM(VLMConfig(image_size=8, patch_size=2, vit_width=16, vit_layers=1, vit_heads=2, lm=lm))
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 20, (4, 7), generator=g)) for _ in range(6)]

    def batches(step):
        img, t = data[step]
        return img, t[:, :-1], t[:, 1:]

    hist = fit(m, batches, 6, lr=3e-3, warmup=2, log_every=1)
    return {"loss": [v for _, v in hist]}


def _gpt_cfg(**kw):
    from dodai.models.gpt import GPTConfig

    base = dict(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    return GPTConfig(**(base | kw))


def _gpt_loss(data):
    def f(model):
        return model(data[:64].view(8, 8), data[1:65].view(8, 8))[1]
    return f


def sc_r4_1(tmp: Path) -> dict:
    from dodai.experiments import r4_1

    ids = lm_stream()
    model, st = r4_1.train_lm(_gpt_cfg(), ids[:1800], ids[1800:], steps=6, bsz=4, evals=2)
    return {"curve": [v for _, v in st["curve"]], "digest": digest(model, _gpt_loss(ids[1800:]))}


def sc_r4_3(tmp: Path) -> dict:
    from dodai.experiments import r4_3

    ids = lm_stream()
    model = r4_3.train(_gpt_cfg(pos_encoding="sinusoidal"), ids[:1800], steps=6, bsz=4)
    return {"digest": digest(model, _gpt_loss(ids[1800:]))}


def sc_r4_5(tmp: Path) -> dict:
    from dodai.experiments import r4_5

    ids = lm_stream()
    ok = r4_5.train_run(_gpt_cfg(), ids[:1800], ids[1800:], steps=6, lr=1e-2, warmup=2, bsz=4)
    bad = r4_5.train_run(_gpt_cfg(), ids[:1800], ids[1800:], steps=6, lr=1e6, warmup=0, bsz=4)
    return {"losses": ok["losses"], "val": [ok["val_loss"]], "bad_losses": [float(x) for x in bad["losses"]],
            "bad_diverged": [float(bad["diverged"])]}


def sc_r5_1(tmp: Path) -> dict:
    from dodai.experiments import r5_1

    ids = lm_stream()
    model = r5_1.train(_gpt_cfg(), ids[:1800], steps=6, bsz=4, lr=3e-3)
    return {"digest": digest(model, _gpt_loss(ids[1800:]))}


def sc_r1_2(tmp: Path) -> dict:
    from dodai.experiments import r1_2

    text = "the quick brown fox jumps over the lazy dog. " * 60
    model, _, val = r1_2.train_byte_gpt(text, steps=4, n_embd=16)
    return {"digest": digest(model, lambda m: m(val[:64].view(1, 64), val[1:65].view(1, 64))[1])}


def sc_r3_1(tmp: Path) -> dict:
    from dodai.experiments import r3_1

    r = r3_1.train_recall("lstm", delay=4, iters=6, hidden=8, batch=8, eval_every=3)
    return {"accuracy": [r["accuracy"]], "iters": [float(r["iters"])], "grad_trained": r["grad_trained"]}


def sc_r3_3(tmp: Path) -> dict:
    from dodai.data import transduction as td
    from dodai.experiments import r3_3

    train_pairs = td.number_pairs(200, "train", seed=0)
    model, losses, _ = r3_3.train_model("bahdanau", train_pairs, steps=4, batch=8, emb=8, hidden=16)
    return {"losses": losses}


def sc_r3_4(tmp: Path) -> dict:
    from dodai.experiments import r3_4
    from dodai.models.gpt import GPT

    ids = lm_stream()
    torch.manual_seed(0)
    model = GPT(_gpt_cfg())
    r = r3_4.train_budget(model, ids[:1800], ids[1800:], 8, 4, steps=5, seconds=1e-6, lr=3e-3, evals=2, warmup=2)
    return {"val_at_steps": [r["val_at_steps"]], "curve0": [r["curve"][0][2]]}


def sc_r6_3(tmp: Path) -> dict:
    from dodai.experiments import r6_3
    from dodai.models.t5 import T5, T5Config

    torch.manual_seed(0)
    model = T5(T5Config(vocab_size=24, d_model=16, d_kv=8, n_head=2, d_ff=32, n_layer=1, num_buckets=8,
                        max_distance=16, dropout=0.0))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randint(2, 24, (4, 6), generator=g), torch.randint(2, 24, (4, 4), generator=g))
            for _ in range(5)]

    def batches(step):
        x, y = data[step]
        return x, torch.ones_like(x), y

    curve = r6_3.train_steps(model, batches, 5, 3e-3, 1, "t")
    return {"curve": [v for _, v in curve]}


SCENARIOS = {name[3:]: fn for name, fn in sorted(globals().items()) if name.startswith("sc_")}


def run_all(tmp: Path, names=None) -> dict:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {k: fn(tmp) for k, fn in SCENARIOS.items() if names is None or k in names}
    finally:
        torch.set_num_threads(n)


if __name__ == "__main__":
    import json
    import platform
    import subprocess
    import tempfile

    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit("usage: python tests/fit_scenarios.py --record OUT.json")
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    with tempfile.TemporaryDirectory() as d:
        values = run_all(Path(d))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    meta = {"recorded_from_commit": commit, "machine": f"{platform.machine()} {cpu}", "torch": torch.__version__,
            "threads": 1, "note": "regression baseline: the loops' outputs before they moved onto dodai.train.fit"}
    Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
    Path(sys.argv[2]).write_text(json.dumps({"meta": meta, "values": values}, indent=1) + "\n")
    print(f"recorded {len(values)} scenarios into {sys.argv[2]}")
