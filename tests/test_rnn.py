"""Parity of dodai's from-scratch RNN/LSTM/GRU with torch.nn (same weights, float64, 1e-8), plus hostile input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.models import rnn

TOL = dict(rtol=1e-8, atol=1e-8)
REF = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _pair(kind, I, H, **kw):
    torch.manual_seed(0)
    ref = REF[kind](I, H, **kw).double()
    ours = rnn.make_recurrent(kind, I, H, **kw).double()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same parameter names, loads 1:1
    return ours, ref


def _state(kind, n, B, H, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, B, H, generator=g, dtype=torch.float64, requires_grad=True)
    if kind == "lstm":
        c = torch.randn(n, B, H, generator=g, dtype=torch.float64, requires_grad=True)
        return (h, c)
    return h


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,bidir,batch_first,bias", [(1, False, False, True), (2, True, True, True),
                                                             (3, False, True, False)])
def test_parity_outputs_states_and_gradients(kind, layers, bidir, batch_first, bias):
    I, H, B, T = 5, 7, 3, 6
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    ours, ref = _pair(kind, I, H, **kw)
    n = layers * (2 if bidir else 1)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_(True)
        s0 = _state(kind, n, B, H, seed=2)
        out, sn = m(xi, s0)
        # a loss touching every output and both final states, with random weights so no symmetry hides bugs
        w = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        loss = (out * w).sum() + sum((s ** 2).sum() for s in _flat(sn))
        grads = torch.autograd.grad(loss, [xi, *_flat(s0), *m.parameters()])
        results.append((out, _flat(sn), grads))
    (o1, s1, g1), (o2, s2, g2) = results
    torch.testing.assert_close(o1, o2, **TOL)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, **TOL)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_default_state_is_zeros(kind):
    ours, ref = _pair(kind, 4, 6, num_layers=2)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    o1, _ = ours(x)
    o2, _ = ref(x)
    torch.testing.assert_close(o1, o2, **TOL)


def test_relu_rnn_parity():
    ours, ref = _pair("rnn", 4, 6, nonlinearity="relu")
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL)


@pytest.mark.parametrize("ours_cls,ref_cls", [(rnn.RNNCell, torch.nn.RNNCell), (rnn.LSTMCell, torch.nn.LSTMCell),
                                              (rnn.GRUCell, torch.nn.GRUCell)])
def test_cells_match_torch_cells(ours_cls, ref_cls):
    torch.manual_seed(0)
    ref = ref_cls(4, 5).double()
    ours = ours_cls(4, 5).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    h = torch.randn(3, 5, dtype=torch.float64)
    if ref_cls is torch.nn.LSTMCell:
        c = torch.randn(3, 5, dtype=torch.float64)
        for a, b in zip(ours(x, (h, c)), ref(x, (h, c))):
            torch.testing.assert_close(a, b, **TOL)
    else:
        torch.testing.assert_close(ours(x, h), ref(x, h), **TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_step_equals_sequence(kind):
    """The reference one-step path (`step`) reproduces the fast sequence path (hoisted input projection)."""
    m = rnn.make_recurrent(kind, 3, 4).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, _ = m(x)
    z = torch.zeros(2, 4, dtype=torch.float64)
    s = (z, z) if kind == "lstm" else z
    for t in range(6):
        s = m.step(0, x[t], s)
        torch.testing.assert_close(s[0] if kind == "lstm" else s, out[t], **TOL)


def test_dropout_between_layers_only_in_training():
    m = rnn.LSTM(3, 4, num_layers=2, dropout=0.5).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    torch.testing.assert_close(a, b)
    m.train()
    torch.manual_seed(0)
    c = m(x)[0]
    assert not torch.allclose(a, c)


def test_forget_bias():
    m = rnn.LSTM(2, 3)
    m.set_forget_bias(1.0)
    assert torch.all(m.bias_ih_l0[3:6] + m.bias_hh_l0[3:6] == 1.0)


@pytest.mark.parametrize("bad", [
    lambda: rnn.make_recurrent("transformer", 2, 3),
    lambda: rnn.RNN(2, 3, nonlinearity="sigmoid"),
    lambda: rnn.LSTM(0, 3),
    lambda: rnn.GRU(2, 3, dropout=1.5),
    lambda: rnn.GRU(2, 3)(torch.randn(4, 2)),
    lambda: rnn.GRU(2, 3)(torch.randn(4, 1, 5)),
    lambda: rnn.GRU(2, 3)(torch.randn(0, 1, 2)),
    lambda: rnn.GRU(2, 3)(torch.randn(4, 1, 2), torch.zeros(2, 1, 3)),
    lambda: rnn.LSTM(2, 3)(torch.randn(4, 1, 2), torch.zeros(1, 1, 3)),
])
def test_hostile_input_raises_dodai_error(bad):
    with pytest.raises(DodaiError):
        bad()


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), T=st.integers(1, 6), B=st.integers(1, 3),
       H=st.integers(1, 5), I=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_parity_property(kind, T, B, H, I, seed):
    torch.manual_seed(seed)
    ref = REF[kind](I, H).double()
    ours = rnn.make_recurrent(kind, I, H).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    o1, s1 = ours(x)
    o2, s2 = ref(x)
    torch.testing.assert_close(o1, o2, **TOL)
    for a, b in zip(_flat(s1), _flat(s2)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("bidir,bias", [(False, True), (True, False)])
def test_lstm_fused_path_equals_per_op_reference(bidir, bias):
    """The fused-sequence Function (hand-written BPTT) against the plain per-op loop, and both against torch."""
    ours, ref = _pair("lstm", 3, 4, num_layers=2, bidirectional=bidir, bias=bias)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    s0 = _state("lstm", 2 * (2 if bidir else 1), 2, 4, seed=5)
    results = []
    for fast in (True, False):
        ours.fast = fast
        xi = x.clone().requires_grad_(True)
        out, (h, c) = ours(xi, s0)
        loss = (out ** 3).sum() + (h * c).sum()
        results.append((out, h, c, torch.autograd.grad(loss, [xi, *s0, *ours.parameters()])))
    out_r, (h_r, c_r) = ref(x, s0)
    torch.testing.assert_close(results[1][0], out_r, **TOL)
    for a, b in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(results[0][3], results[1][3]):
        torch.testing.assert_close(a, b, **TOL)


def test_lstm_fused_gradcheck():
    from dodai.models.rnn import _LSTMSequence

    g = torch.Generator().manual_seed(0)
    T, B, H = 4, 2, 3
    args = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in [(T, B, 4 * H), (B, H), (B, H), (4 * H, H), (4 * H,)]]
    assert torch.autograd.gradcheck(_LSTMSequence.apply, args)
