"""Preference and RL losses (R5.3), as pure functions on tensors.

Notation: B sequences (or pairs), T completion tokens, ``mask`` (B, T) is 1 on real completion tokens.
Log-probs ``logp`` are summed over a completion's tokens unless a name says ``per_token``.

- **DPO** (Rafailov et al., 2023), sigmoid loss with label smoothing ε (cDPO)::

      h = β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
      L = −(1 − ε) · log σ(h) − ε · log σ(−h)

  implicit rewards r_w = β (log π(y_w) − log π_ref(y_w)), r_l likewise (TRL's ``chosen_rewards``).
- **Bradley–Terry** reward-model loss (Ouyang et al., 2022): ``L = −log σ(r(x, y_w) − r(x, y_l) − m)``.
- **GAE** (Schulman et al., 2016): ``δ_t = r_t + γ V_{t+1} − V_t`` (V after the last token is 0),
  ``A_t = δ_t + γ λ A_{t+1}``; returns ``R_t = A_t + V_t``.
- **PPO** (Schulman et al., 2017) clipped surrogate, with ratio ρ = exp(log π − log π_old)::

      L_pg = mean_t max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε)),   clipfrac = mean_t [−A clip(ρ) > −A ρ]
      L_v  = ½ mean_t max((V − R)², (clip(V, V_old − ε_v, V_old + ε_v) − R)²)

  (the forms of TRL's ``PPOTrainer``, itself following OpenAI's ``lm-human-preferences``).
- **Whitening**: ``(x − mean) / sqrt(var + 1e-8)`` with the unbiased variance over masked entries (TRL).
- **GRPO** (Shao et al., 2024, DeepSeekMath): G samples per prompt, advantage
  ``A_i = (r_i − mean_group(r)) / (std_group(r) + 1e-4)`` (unbiased std, as TRL), and the per-token KL
  estimator k3 = ``exp(ref − logp) − (ref − logp) − 1`` (Schulman, "Approximating KL divergence").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position: logits (B, T, V), tokens (B, T) -> (B, T), in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim=None) -> torch.Tensor:
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:  # Bessel's correction n / (n - 1), n = the number of masked-in entries
        n = float(x.numel()) if mask is None else float(mask.sum())
        var = var * n / max(n - 1.0, 1.0)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / sqrt(var + 1e-8) over the masked entries; ``shift_mean=False`` adds the mean back
    (TRL whitens rewards that way so their sign survives)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0):
    """Per-pair DPO losses (B,) and implicit rewards (chosen (B,), rejected (B,)); inputs are summed
    completion log-probs (B,)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = beta * (chosen_ratio - rejected_ratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None):
    """Mean −log σ(r_w − r_l − margin) over pairs."""
    d = r_chosen - r_rejected
    if margin is not None:
        d = d - margin
    return -F.logsigmoid(d).mean()


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (B, T) from per-token rewards and values (B, T). Positions after a
    sequence's end (mask 0) must carry reward 0 and value 0: they then contribute nothing."""
    if mask is not None:
        rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float = 0.2,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped surrogate loss, clip fraction), per-token inputs (B, T)."""
    ratio = torch.exp(logp - old_logp)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    clipfrac = masked_mean((loss2 > loss1).float(), mask)
    return loss, clipfrac.detach()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float = 0.2,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    clipped = torch.clamp(values, old_values - clip, old_values + clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """rewards (N·G,) grouped consecutively by prompt -> advantages (N·G,)."""
    g = rewards.view(-1, group_size)  # (N, G)
    mean = g.mean(dim=1, keepdim=True)
    adv = g - mean
    if scale:
        std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
        adv = adv / (std + 1e-4)
    return adv.reshape(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π ‖ π_ref) (non-negative, unbiased under samples from π)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float = 0.04, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO per-token loss, averaged per sequence then over sequences (the paper's 1/G Σ 1/|o| Σ_t);
    advantages (B,) are broadcast over tokens. Returns (loss, mean per-token k3 KL)."""
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - clip, 1 + clip) * a)
    kl = kl_k3(logp, ref_logp)
    per_token = -(surrogate - beta * kl)
    per_seq = masked_mean(per_token, mask, dim=1)
    return per_seq.mean(), masked_mean(kl, mask).detach()
