"""DPO, Bradley–Terry, GAE, PPO and GRPO losses on fixed inputs: hand-computed values (the formulas of
TRL's trainers written out with scalar math) and, where TRL exposes a function, TRL itself."""

from __future__ import annotations

import math

import pytest
import torch

from dodai.finetune import losses as L


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_dpo_sigmoid_loss_matches_formula():
    pc = torch.tensor([-3.0, -10.0, -1.5])
    pr = torch.tensor([-4.0, -9.0, -7.0])
    rc = torch.tensor([-3.5, -9.5, -2.0])
    rr = torch.tensor([-3.5, -9.5, -6.0])
    for beta, eps in ((0.1, 0.0), (0.5, 0.0), (0.3, 0.2)):
        loss, r_w, r_l = L.dpo_loss(pc, pr, rc, rr, beta, eps)
        for i in range(3):
            h = beta * ((pc[i] - rc[i]).item() - (pr[i] - rr[i]).item())
            # TRL dpo_trainer.py, loss_type "sigmoid": -(1-ε) logσ(βΔ) - ε logσ(-βΔ)
            want = -(1 - eps) * logsig(h) - eps * logsig(-h)
            assert loss[i].item() == pytest.approx(want, rel=1e-6)
            assert r_w[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item(), rel=1e-6)
            assert r_l[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item(), rel=1e-6)
    # equal policy and reference: h = 0, loss = log 2 whatever β
    loss, _, _ = L.dpo_loss(rc, rr, rc, rr, 0.7)
    torch.testing.assert_close(loss, torch.full((3,), math.log(2)))


def test_bradley_terry_matches_formula():
    rc, rr, m = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.5]), torch.tensor([0.1, 0.0, 0.3])
    want = sum(-logsig(a - b) for a, b in zip(rc.tolist(), rr.tolist())) / 3
    assert L.bradley_terry_loss(rc, rr).item() == pytest.approx(want, rel=1e-6)
    want_m = sum(-logsig(a - b - c) for a, b, c in zip(rc.tolist(), rr.tolist(), m.tolist())) / 3
    assert L.bradley_terry_loss(rc, rr, m).item() == pytest.approx(want_m, rel=1e-6)


def test_gae_hand_worked():
    # one sequence, 3 tokens, γ = 0.9, λ = 0.8
    r = torch.tensor([[0.0, 0.5, 1.0]])
    v = torch.tensor([[0.2, 0.4, 0.6]])
    g, lam = 0.9, 0.8
    d2 = 1.0 + g * 0.0 - 0.6  # 0.4 (no value after the last token)
    d1 = 0.5 + g * 0.6 - 0.4  # 0.64
    d0 = 0.0 + g * 0.4 - 0.2  # 0.16
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = L.gae(r, v, g, lam)
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.2, a1 + 0.4, a2 + 0.6]]))
    # λ = 1, γ = 1: advantage = reward-to-go − value (Monte Carlo)
    adv, _ = L.gae(r, v, 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[1.5 - 0.2, 1.5 - 0.4, 1.0 - 0.6]]))
    # a padded position (mask 0) contributes nothing to the real ones
    r2 = torch.tensor([[0.0, 0.5, 1.0, 7.0]])
    v2 = torch.tensor([[0.2, 0.4, 0.6, 3.0]])
    adv2, _ = L.gae(r2, v2, g, lam, mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    torch.testing.assert_close(adv2[:, :3], torch.tensor([[a0, a1, a2]]))


def test_ppo_clipped_surrogate_and_value_loss():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    new = old + torch.tensor([[0.5, -0.5, 0.05]])  # ratios e^0.5 = 1.65 (clipped at 1.2), e^-0.5 = 0.61, 1.05
    adv = torch.tensor([[1.0, -2.0, 0.5]])
    loss, clipfrac = L.ppo_policy_loss(new, old, adv, clip=0.2)
    ratios = [math.exp(0.5), math.exp(-0.5), math.exp(0.05)]
    terms = []
    clipped = 0
    for rho, a in zip(ratios, adv[0].tolist()):
        l1, l2 = -a * rho, -a * min(max(rho, 0.8), 1.2)
        terms.append(max(l1, l2))
        clipped += l2 > l1
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    assert clipfrac.item() == pytest.approx(clipped / 3)
    assert clipped == 2  # token 0 (ratio 1.65, A > 0) and token 1 (ratio 0.61, A < 0): the pessimistic bound
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss_m, _ = L.ppo_policy_loss(new, old, adv, clip=0.2, mask=mask)
    assert loss_m.item() == pytest.approx(sum(terms[:2]) / 2, rel=1e-6)
    v, v_old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.1]]), torch.tensor([[2.0, -1.0]])
    vf = L.ppo_value_loss(v, v_old, ret, clip=0.2)
    # token 0: (1-2)² = 1 vs clip(1, 0.3, 0.7) = 0.7 → (0.7-2)² = 1.69; token 1: (0+1)² = 1 vs (-0.1+1)² = 0.81
    assert vf.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2, rel=1e-6)


def test_grpo_advantages_and_k3():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = L.grpo_advantages(r, group_size=4)
    g0 = [1.0, 0.0, 0.0, 1.0]
    mean, std = 0.5, math.sqrt(sum((x - 0.5) ** 2 for x in g0) / 3)  # unbiased, as TRL
    torch.testing.assert_close(adv[:4], torch.tensor([(x - mean) / (std + 1e-4) for x in g0]))
    torch.testing.assert_close(adv[4:], torch.zeros(4))  # a group with equal rewards teaches nothing
    torch.testing.assert_close(L.grpo_advantages(r, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    k3 = L.kl_k3(lp, ref)
    assert k3[0].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, rel=1e-4) and k3[1].item() == 0.0
    # GRPO loss at ratio 1: −A per token + β k3, averaged per sequence then over sequences
    lp2 = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    ref2 = lp2 - torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    a = torch.tensor([1.0, -1.0])
    loss, _ = L.grpo_loss(lp2, lp2, ref2, a, mask, beta=0.1)
    k = lambda d: math.exp(d) - d - 1  # noqa: E731
    seq0 = (-1 + 0.1 * k(-0.1) - 1 - 1) / 3
    seq1 = (1 + 1 + 0.1 * k(-0.2)) / 2
    assert loss.item() == pytest.approx((seq0 + seq1) / 2, abs=1e-6)  # ±1 and ∓1 cancel: compare absolutely


def test_whiten_unbiased():
    x = torch.tensor([1.0, 2.0, 4.0, 9.0])
    w = L.whiten(x)
    mean, var = 4.0, sum((v - 4.0) ** 2 for v in x.tolist()) / 3
    torch.testing.assert_close(w, (x - mean) / math.sqrt(var + 1e-8))
    torch.testing.assert_close(L.whiten(x, shift_mean=False), (x - mean) / math.sqrt(var + 1e-8) + mean)
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    wm = L.whiten(x, m)
    mean3, var3 = 7 / 3, sum((v - 7 / 3) ** 2 for v in (1.0, 2.0, 4.0)) / 2
    torch.testing.assert_close(wm[:3], (x[:3] - mean3) / math.sqrt(var3 + 1e-8))


def test_against_trl_functions():
    """TRL's own helpers on the same inputs: selective_log_softmax (per-token log-probs) and nanstd
    (the group std of GRPO advantages)."""
    utils = pytest.importorskip("trl.trainer.utils")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    torch.testing.assert_close(L.token_logps(logits, tokens), utils.selective_log_softmax(logits, tokens))
    r = torch.rand(12, generator=g)
    std = utils.nanstd(r.view(-1, 4), dim=1).repeat_interleave(4)
    mean = r.view(-1, 4).mean(1).repeat_interleave(4)
    torch.testing.assert_close(L.grpo_advantages(r, 4), (r - mean) / (std + 1e-4))
