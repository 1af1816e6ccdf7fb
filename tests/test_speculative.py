"""Speculative decoding: greedy output identical to the target's greedy output (tiny Llama, SmolLM2),
cache rollback, and the stochastic acceptance rule reproducing the target's distribution (statistical tests)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from dodai.errors import DodaiError
from dodai.generate.sampling import generate
from dodai.generate.speculative import (
    SpeculativeStats,
    _probs,
    accept_drafts,
    speculative_generate,
    truncated_draft,
)
from dodai.models.llama import Llama, LlamaConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy 2-core machine stalls two-thread ops)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_llama(seed=0, vocab=64, n_layer=3, std=0.3):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=vocab, block_size=96, n_layer=n_layer, n_embd=32, n_head=4, n_kv_head=2,
                          ffn_hidden=64))
    with torch.no_grad():  # larger than the 0.02 init so that the next-token distributions are far from uniform
        for p in m.parameters():
            p.normal_(0.0, std)
    return m.eval()


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_greedy_output_identical_to_target_greedy(gamma):
    target = tiny_llama()
    prompt = [5, 17, 3, 42, 8]
    ref = list(generate(target, prompt, 40, temperature=0.0))
    drafts = [truncated_draft(target, 1), truncated_draft(target, 2), tiny_llama(seed=9, n_layer=1)]
    for draft in drafts:
        st = SpeculativeStats()
        out = list(speculative_generate(target, draft, prompt, 40, gamma=gamma, stats=st))
        assert out == ref
        assert st.emitted == 40 and st.accepted <= st.drafted
        # every round emits its accepted drafts plus one token from the target
        assert st.emitted == st.accepted + st.rounds
    # the full-depth "draft" is the target itself: every draft token is accepted
    st = SpeculativeStats()
    assert list(speculative_generate(target, truncated_draft(target, 3), prompt, 40, gamma=gamma, stats=st)) == ref
    assert st.acceptance_rate == 1.0


def test_truncated_draft_shares_weights_and_computes_early_exit():
    target = tiny_llama()
    d = truncated_draft(target, 2)
    assert d.config.n_layer == 2 and target.config.n_layer == 3
    assert d.layers[1] is target.layers[1] and d.output is target.output and d.norm is target.norm
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        h = target.tok_embeddings(x)
        cos, sin = target._cos_sin(0, 4, h.dtype, h.device)
        for blk in target.layers[:2]:
            h = blk(h, cos, sin, None, 0)
        expect = target.output(target.norm(h))
        torch.testing.assert_close(d(x)[0], expect)
    for bad in (0, 4, 1.5):
        with pytest.raises(DodaiError):
            truncated_draft(target, bad)


def test_eos_single_prompt_token_and_arguments():
    target = tiny_llama()
    draft = truncated_draft(target, 1)
    ref = list(generate(target, [7], 30, temperature=0.0))
    assert list(speculative_generate(target, draft, [7], 30, gamma=4)) == ref  # one-token prompt: no prefill
    eos = ref[10]
    out = list(speculative_generate(target, draft, [7], 30, gamma=4, eos_id=eos))
    assert out == ref[:ref.index(eos) + 1]  # EOS is yielded, then the stream stops
    assert list(speculative_generate(target, draft, [7], 0)) == []
    with pytest.raises(DodaiError, match="vocabulary"):
        speculative_generate(target, tiny_llama(vocab=50, n_layer=1), [1], 4)
    with pytest.raises(DodaiError, match="gamma"):
        speculative_generate(target, draft, [1], 4, gamma=0)
    with pytest.raises(DodaiError, match="context window"):
        speculative_generate(target, draft, [1] * 90, 10)
    with pytest.raises(DodaiError):
        speculative_generate(target, draft, [], 4)
    with pytest.raises(DodaiError):
        speculative_generate(target, draft, [64], 4)


# ---- the stochastic rule ------------------------------------------------------------------------

def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square of observed counts against probabilities; cells expected < 5 are pooled."""
    n = counts.sum().item()
    exp = probs.double() * n
    big = exp >= 5
    obs = counts[big].double().tolist()
    ex = exp[big].tolist()
    if (~big).any():
        obs.append(counts[~big].sum().item())
        ex.append(exp[~big].sum().item())
    scale = sum(obs) / sum(ex)  # exact renormalisation of float rounding
    return float(chisquare(obs, [e * scale for e in ex]).pvalue)


def test_acceptance_rule_emits_the_target_distribution():
    g = torch.Generator().manual_seed(0)
    V = 6
    p = torch.softmax(torch.randn(2, V, generator=g) * 1.5, -1)
    q = torch.softmax(torch.randn(1, V, generator=g) * 1.5, -1)
    n = 6000
    counts = torch.zeros(V)
    draft_counts = torch.zeros(V)
    accepted = 0
    for _ in range(n):
        d = int(torch.multinomial(q[0], 1, generator=g))
        k, extra = accept_drafts(p, q, [d], g)
        first = d if k == 1 else extra
        counts[first] += 1
        draft_counts[d] += 1
        accepted += k
    assert _chi2_pvalue(counts, p[0]) > 1e-3  # the first emitted token follows p
    assert _chi2_pvalue(counts, q[0]) < 1e-6  # and the test can tell p from q
    assert _chi2_pvalue(draft_counts, q[0]) > 1e-3
    # the acceptance probability is Σ min(p, q) (Leviathan et al., section 3.3)
    alpha = torch.minimum(p[0], q[0]).sum().item()
    assert abs(accepted / n - alpha) < 4 * (alpha * (1 - alpha) / n) ** 0.5


def test_speculative_sampling_matches_target_joint_distribution():
    """Two sampled tokens from a tiny Llama via speculative sampling vs the exact joint distribution of the
    target (vocabulary 5, top-k 4 at temperature 0.9 applied to both models), over many seeded runs."""
    V, temp, top_k = 5, 0.9, 4
    target = tiny_llama(seed=1, vocab=V, n_layer=2, std=0.5)
    draft = tiny_llama(seed=2, vocab=V, n_layer=1, std=0.5)
    prompt = [1, 4, 2]
    with torch.no_grad():
        p1 = _probs(target(torch.tensor([prompt]))[0][0, -1], temp, top_k, None)  # (V,)
        both = torch.tensor([prompt + [a] for a in range(V)])  # (V, 4)
        p2 = _probs(target(both)[0][:, -1], temp, top_k, None)  # (V, V): p(b | prompt, a)
        q1 = _probs(draft(torch.tensor([prompt]))[0][0, -1], temp, top_k, None)
        q2 = _probs(draft(both)[0][:, -1], temp, top_k, None)
    joint_p = (p1[:, None] * p2).flatten()
    joint_q = (q1[:, None] * q2).flatten()
    n = 600
    counts = torch.zeros(V * V)
    st = SpeculativeStats()
    for s in range(n):
        a, b = speculative_generate(target, draft, prompt, 2, gamma=2, temperature=temp, top_k=top_k,
                                    seed=s, stats=st)
        counts[a * V + b] += 1
    assert _chi2_pvalue(counts, joint_p) > 1e-3
    assert _chi2_pvalue(counts, joint_q) < 1e-6  # the draft's own distribution is clearly rejected
    assert 0 < st.acceptance_rate < 1  # both branches of the rule ran
    # same seed -> same tokens
    run = lambda: list(speculative_generate(target, draft, prompt, 8, gamma=3, temperature=temp, seed=7))  # noqa: E731
    assert run() == run()


# ---- SmolLM2 ------------------------------------------------------------------------------------

def test_smollm2_speculative_greedy_identical(smollm2_gguf, capsys):
    import copy

    from _smollm2_once import smollm2

    from dodai.quant.int8 import quantize_model

    model, tok = smollm2(str(smollm2_gguf))
    prompt = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ref = list(generate(model, prompt, 32, temperature=0.0))
    # the draft: an int8 copy of the model (same tokenizer, close distributions: high acceptance)
    st = SpeculativeStats()
    int8 = quantize_model(copy.deepcopy(model), "int8")
    out = list(speculative_generate(model, int8, prompt, 32, gamma=4, stats=st))
    print(f"SmolLM2 speculative, 32 tokens: int8 draft gamma 4: acceptance {st.acceptance_rate:.2f}, "
          f"{st.tokens_per_round:.2f} tokens per target forward; text {tok.decode(out)!r}")
    assert out == ref
    assert st.acceptance_rate > 0.5 and st.rounds < 32  # fewer target forwards than tokens
