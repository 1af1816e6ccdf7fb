"""PPO-based RLHF (Ziegler et al., 2019; Stiennon et al., 2020; Ouyang et al., 2022).

One iteration:

1. **Rollout**: one sampled completion per prompt from the policy; the reward model scores the whole
   ``prompt + completion`` (a scalar per sequence). Scores are whitened over the batch (variance only,
   the mean is kept: ``shift_mean=False`` as TRL) when ``whiten_rewards``.
2. **Per-token rewards**: ``r_t = −β (log π(y_t) − log π_ref(y_t))`` on every completion token, plus the
   score on the last one — the KL penalty to the frozen reference keeps the policy near the start.
   β is fixed or **adaptive** (Ziegler et al. §2.2): ``β ← β · (1 + clip(KL / target − 1, ±0.2) · n / horizon)``.
3. **GAE** with the value head's estimates (:func:`dodai.finetune.losses.gae`), advantages whitened.
4. ``ppo_epochs`` passes of the clipped surrogate + ``vf_coef`` × clipped value loss.

Logged per iteration: mean score, KL (summed over tokens, mean over sequences), policy entropy,
clip fraction, β. The value head is a :class:`~dodai.finetune.policy.ScalarHead` on the policy's final
hidden state (a shared trunk, as in Ziegler et al.).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from dodai.errors import DodaiError
from dodai.finetune.losses import gae, masked_mean, ppo_policy_loss, ppo_value_loss, token_logps, whiten
from dodai.finetune.policy import ScalarHead, forward_hidden, pack, sample_batch, sample_completions, sequence_logps

ScoreFn = Callable[[list[int], list[list[int]], list[list[int]]], torch.Tensor]
# (prompt indices, prompts, completions) -> scores (B,)


@dataclass
class PPOConfig:
    steps: int = 20  # rollout + update iterations
    batch_size: int = 8  # prompts (= completions) per rollout
    max_new_tokens: int = 16
    lr: float = 1e-5
    ppo_epochs: int = 2
    clip: float = 0.2
    vf_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05  # initial β
    target_kl: float | None = None  # adaptive β toward this KL (nats per sequence); None = fixed β
    horizon: int = 10_000
    whiten_rewards: bool = True
    temperature: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    batched: bool = True  # rollouts decoded as one left-padded batch (False: prompt by prompt, the reference)
    dtype: str = "float32"  # float32 | bfloat16 (autocast) for the update
    compile: bool = False  # torch.compile the policy + value head for the update steps
    checkpoint_every: int = 0  # with an output folder: checkpoint every this many iterations (0: at the end only)

    def to_dict(self) -> dict:
        return asdict(self)


class PolicyWithValue(nn.Module):
    """The policy and its value head as one module (what the optimizer, DDP and checkpoints see):
    ``forward(x) -> (logits (B, T − 1, V), values (B, T − 1))``, the value of the state before each
    predicted token."""

    def __init__(self, policy: nn.Module, head: ScalarHead):
        super().__init__()
        self.policy, self.head = policy, head

    def forward(self, x: torch.Tensor):
        logits, h = forward_hidden(self.policy, x)
        return logits[:, :-1], self.head(h[:, :-1])


class Rollouts:
    """The batch source of PPO: every ``ppo_epochs``-th micro-batch samples one completion per prompt from
    the current policy, scores it with the reward model and builds the per-token rewards (score − β·KL),
    GAE advantages and returns; the ``ppo_epochs − 1`` micro-batches after it reuse that rollout. The
    state (prompt sampler, β) is checkpointed: the rollouts depend on the model and cannot be replayed."""

    def __init__(self, model: PolicyWithValue, ref, prompts, score_fn: ScoreFn, stop_ids, cfg: PPOConfig,
                 pad_id: int):
        self.model, self.ref, self.prompts, self.score_fn = model, ref, prompts, score_fn
        self.stop_ids, self.cfg, self.pad_id = stop_ids, cfg, pad_id
        self.rng = random.Random(cfg.seed)
        self.beta = cfg.kl_coef
        self.current: dict | None = None

    def __call__(self, i: int) -> dict:
        cfg = self.cfg
        if i % cfg.ppo_epochs and self.current is not None:
            return self.current
        step = i // cfg.ppo_epochs
        policy = self.model.policy
        idx = [self.rng.randrange(len(self.prompts)) for _ in range(cfg.batch_size)]
        ps = [self.prompts[k] for k in idx]
        seeds = [cfg.seed * 100_003 + step * 1009 + j for j in range(len(ps))]
        was = self.model.training
        self.model.eval()
        if cfg.batched:
            cs = sample_batch(policy, ps, cfg.max_new_tokens, self.stop_ids, seeds, cfg.temperature, self.pad_id)
        else:
            cs = [sample_completions(policy, p, 1, cfg.max_new_tokens, self.stop_ids, cfg.temperature, seed=sd)[0]
                  for p, sd in zip(ps, seeds)]
        x, mask, lens = pack(ps, cs, self.pad_id)
        with torch.no_grad():  # not inference_mode: these tensors are saved by the backward of the loss
            logits, old_values = self.model(x)
            old_lp = token_logps(logits, x[:, 1:]) * mask
            ref_lp = sequence_logps(self.ref, x, mask)
            scores = self.score_fn(idx, ps, cs).float()
            s = whiten(scores, shift_mean=False) if cfg.whiten_rewards and len(scores) > 1 else scores
            kl_tok = (old_lp - ref_lp) * mask
            rewards = -self.beta * kl_tok
            last = lens - 2  # the shifted position that predicts the final token
            rewards[torch.arange(len(ps)), last] += s
            old_values = old_values * mask
            adv, returns = gae(rewards, old_values, cfg.gamma, cfg.lam, mask)
            adv = whiten(adv, mask) * mask
        self.model.train(was)
        self.current = {"x": x, "mask": mask, "old_lp": old_lp, "old_values": old_values, "returns": returns,
                        "adv": adv, "scores": scores, "kl_seq": kl_tok.sum(1)}
        return self.current

    def state_dict(self) -> dict:
        v, st, gauss = self.rng.getstate()
        return {"version": v, "state": list(st), "gauss": gauss, "beta": self.beta}

    def load_state_dict(self, st: dict) -> None:
        self.rng.setstate((st["version"], tuple(st["state"]), st["gauss"]))
        self.beta = float(st["beta"])
        self.current = None


def train_ppo(policy, ref, prompts: list[list[int]], score_fn: ScoreFn, stop_ids, cfg: PPOConfig,
              pad_id: int = 0, log: Callable[[dict], None] | None = None, out_dir=None, resume: bool = False,
              progress: bool = False) -> tuple[list[dict], ScalarHead]:
    """Returns (per-iteration rows, the trained value head).

    The updates run on :func:`dodai.train.fit.fit`: one iteration is ``ppo_epochs`` optimizer steps on one
    rollout (:class:`Rollouts`); checkpoints fall on iteration boundaries. Under data parallelism the
    masked means are per rank, so the update is close to, not exactly, one process's."""
    from dodai.train.fit import FitConfig, fit

    if not prompts:
        raise DodaiError("PPO needs at least one prompt")
    if cfg.ppo_epochs < 1:
        raise DodaiError(f"ppo epochs must be >= 1, got {cfg.ppo_epochs}")
    model = PolicyWithValue(policy, ScalarHead(policy.config.n_embd))
    ref.eval()
    source = Rollouts(model, ref, prompts, score_fn, stop_ids, cfg, pad_id)

    def loss_fn(m, b):
        mask = b["mask"]
        logits, values = m(b["x"])
        lp = token_logps(logits, b["x"][:, 1:])
        pg, clipfrac = ppo_policy_loss(lp, b["old_lp"], b["adv"], cfg.clip, mask)
        vf = ppo_value_loss(values, b["old_values"], b["returns"], cfg.vf_clip, mask)
        with torch.no_grad():
            p = torch.softmax(logits.float(), -1)
            ent = masked_mean(-(p * torch.log(p.clamp_min(1e-30))).sum(-1), mask)
        return pg + cfg.vf_coef * vf, {"pg_loss": pg, "vf_loss": vf, "clipfrac": clipfrac, "entropy": ent,
                                       "reward": b["scores"].mean(), "kl": b["kl_seq"].mean(),
                                       "length": mask.sum(1).mean()}

    history: list[dict] = []
    epochs: list[dict] = []

    def on_step(row: dict) -> None:  # one row per iteration, after its last epoch
        epochs.append(row)
        if len(epochs) < cfg.ppo_epochs:
            return
        kl = epochs[0]["kl"]
        if cfg.target_kl is not None:  # adaptive β (Ziegler et al. §2.2), used by the next rollout
            err = max(-0.2, min(0.2, kl / cfg.target_kl - 1.0))
            source.beta *= 1.0 + err * cfg.batch_size / cfg.horizon
        out = {"step": row["step"] // cfg.ppo_epochs, "reward": epochs[0]["reward"], "kl": kl,
               "pg_loss": epochs[-1]["pg_loss"], "vf_loss": epochs[-1]["vf_loss"],
               "clipfrac": sum(e["clipfrac"] for e in epochs) / len(epochs), "entropy": epochs[0]["entropy"],
               "beta": source.beta, "length": epochs[0]["length"], "seconds": row["seconds"]}
        epochs.clear()
        history.append(out)
        if log:
            log(out)

    fcfg = FitConfig(steps=cfg.steps * cfg.ppo_epochs, optimizer="adamw", lr=cfg.lr, weight_decay=0.0,
                     decay_matrices_only=False, grad_clip=cfg.grad_clip, dtype=cfg.dtype, compile=cfg.compile,
                     eval_every=cfg.checkpoint_every * cfg.ppo_epochs or None, quiet=not progress, desc="ppo",
                     metrics_file="events.jsonl")
    fit(model, source, loss_fn, fcfg, out_dir=out_dir, resume=resume, on_step=on_step)
    policy.eval()
    return history, model.head
