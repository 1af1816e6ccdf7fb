"""RecurrentLM: the causal-LM protocol (shapes, loss), causality, and beam search over it."""

from __future__ import annotations

import pytest
import torch

from dodai.errors import DodaiError
from dodai.generate.beam import lm_beam_search
from dodai.models.rnn import RecurrentLM, RecurrentLMConfig


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_protocol_and_causality(kind):
    torch.manual_seed(0)
    m = RecurrentLM(RecurrentLMConfig(vocab_size=13, kind=kind, n_embd=8, hidden=12, n_layer=2)).eval()
    idx = torch.randint(0, 13, (3, 9))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 9, 13)
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, 13), idx.reshape(-1))
    torch.testing.assert_close(loss, manual)
    # changing a future token never changes earlier logits
    idx2 = idx.clone()
    idx2[:, 6] = (idx2[:, 6] + 1) % 13
    torch.testing.assert_close(m(idx2)[0][:, :6], logits[:, :6])
    assert not torch.allclose(m(idx2)[0][:, 6:], logits[:, 6:])
    with pytest.raises(DodaiError):
        m(idx, cache=object())


def test_beam_search_over_recurrent_lm():
    torch.manual_seed(0)
    m = RecurrentLM(RecurrentLMConfig(vocab_size=7, kind="gru", n_embd=8, hidden=8)).eval()
    hyps = lm_beam_search(m, [1, 2, 3], num_beams=3, max_new_tokens=5, eos_id=0, num_return_sequences=3)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:  # the reported log-probability is the model's
        ids = torch.tensor([[1, 2, 3] + h.tokens])
        with torch.no_grad():
            lp = torch.log_softmax(m(ids)[0][0], -1)
        total = sum(float(lp[2 + k, t]) for k, t in enumerate(h.tokens))
        assert h.logprob == pytest.approx(total, abs=1e-4)
