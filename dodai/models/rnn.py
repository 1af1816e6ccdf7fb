"""Recurrent networks from scratch: Elman RNN, LSTM and GRU cells and multi-layer sequence wrappers (R3.1, R3.2).

Notation: B batch, T time steps, I input size, H hidden size, L layers, Dn directions (1 or 2).

Every recurrence is written with plain tensor ops (``torch.nn.RNN/LSTM/GRU`` are never called).
The parameter layout is PyTorch's, on purpose, so a ``torch.nn.LSTM`` state dict loads 1:1 and the
parity tests can compare outputs, final states and gradients in float64:

* ``weight_ih_l{k}`` (G*H, I_k), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}`` (G*H), ``bias_hh_l{k}`` (G*H),
  with the suffix ``_reverse`` for the backward direction; G = 1 (RNN), 4 (LSTM), 3 (GRU).
* two biases per layer (redundant for RNN/LSTM, but not for the GRU, where ``b_hn`` sits inside the reset gate).

The cells (one time step; x (B, I), h (B, H)):

* Elman (1990):            h' = tanh(W_ih x + b_ih + W_hh h + b_hh)    (or relu)
* LSTM (Hochreiter & Schmidhuber 1997; forget gate, Gers et al. 2000), gate order i, f, g, o:
                           i, f, o = sigmoid(.), g = tanh(.)  on  W_ih x + b_ih + W_hh h + b_hh
                           c' = f * c + i * g,   h' = o * tanh(c')
* GRU (Cho et al. 2014), PyTorch's r, z, n variant where the reset gate multiplies (W_hn h + b_hn):
                           r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
                           n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h

Fast path: the input projection ``W_ih x_t + b_ih`` does not depend on the recurrence, so the
sequence wrapper computes it for all T steps in one matrix multiply before the time loop; only the
``W_hh h`` product stays inside the loop. The cell functions below are the plain one-step reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dodai.errors import DodaiError

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


# ----------------------------------------------------------------------------- one-step reference cells

def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """Elman step: x (B, I), h (B, H) -> h' (B, H)."""
    pre = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """LSTM step: x (B, I), h, c (B, H) -> (h', c'), gate order i, f, g, o (PyTorch's)."""
    gates = x @ w_ih.T + h @ w_hh.T  # (B, 4H)
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """GRU step: x (B, I), h (B, H) -> h', gate order r, z, n, reset applied to (W_hn h + b_hn)."""
    gi = x @ w_ih.T  # (B, 3H)
    gh = h @ w_hh.T  # (B, 3H)
    if b_ih is not None:
        gi, gh = gi + b_ih, gh + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


# ----------------------------------------------------------------------------- single-step cell modules

class _CellBase(nn.Module):
    """One recurrent cell with PyTorch's ``nn.*Cell`` parameter names (weight_ih, weight_hh, bias_ih, bias_hh)."""

    mode = "rnn_tanh"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        g = GATES[self.mode]
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(g * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(g * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch's default: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _zeros(self, x):
        return x.new_zeros(x.shape[0], self.hidden_size)


class RNNCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise DodaiError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, x, h=None):
        h = self._zeros(x) if h is None else h
        return rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


class LSTMCell(_CellBase):
    mode = "lstm"

    def forward(self, x, state=None):
        h, c = (self._zeros(x), self._zeros(x)) if state is None else state
        return lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    mode = "gru"

    def forward(self, x, h=None):
        h = self._zeros(x) if h is None else h
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


# ----------------------------------------------------------------------------- multi-layer sequence wrappers

class _Recurrent(nn.Module):
    """Multi-layer, optionally bidirectional recurrence over a whole sequence.

    ``forward(x, state=None)``: x (T, B, I), or (B, T, I) with ``batch_first``; ``state`` is
    h0 (L*Dn, B, H) — or the pair (h0, c0) for the LSTM. Returns ``(output, state_n)`` with
    output (T, B, Dn*H) (batch-first if asked) and state_n shaped like the state, exactly as torch.nn.
    Dropout (training only) is applied to each layer's output except the last, as in torch.nn.
    """

    mode = "rnn_tanh"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise DodaiError("input_size, hidden_size and num_layers must be positive")
        if not 0.0 <= dropout < 1.0:
            raise DodaiError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        g = GATES[self.mode]
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            for sfx in self._suffixes(layer):
                self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(g * hidden_size, in_size)))
                self.register_parameter("weight_hh" + sfx, nn.Parameter(torch.empty(g * hidden_size, hidden_size)))
                if bias:
                    self.register_parameter("bias_ih" + sfx, nn.Parameter(torch.empty(g * hidden_size)))
                    self.register_parameter("bias_hh" + sfx, nn.Parameter(torch.empty(g * hidden_size)))
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def weights(self, layer: int, direction: int = 0):
        """(w_ih, w_hh, b_ih, b_hh) of one layer and direction (biases None when bias=False)."""
        sfx = self._suffixes(layer)[direction]
        get = lambda n: getattr(self, n + sfx) if self.bias or n.startswith("weight") else None
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    # --- per-mode pieces: the recurrent step given a precomputed input projection
    def _step(self, xi, state, w_hh, b_hh):  # pragma: no cover - overridden
        raise NotImplementedError

    def _split_state(self, state, batch, x):
        """Turn the user's state into a list (per layer*direction) of per-step states."""
        n = self.num_layers * self.num_directions
        if state is None:
            z = x.new_zeros(batch, self.hidden_size)
            return [z] * n
        h0 = state
        if h0.shape != (n, batch, self.hidden_size):
            raise DodaiError(f"initial state must have shape {(n, batch, self.hidden_size)}, got {tuple(h0.shape)}")
        return list(h0.unbind(0))

    def _join_state(self, states):
        return torch.stack(states, 0)

    def step(self, layer: int, x_t, state, direction: int = 0):
        """One time step of one layer with the reference cell: x_t (B, I_layer) -> new state."""
        w_ih, w_hh, b_ih, b_hh = self.weights(layer, direction)
        xi = x_t @ w_ih.T + (b_ih if b_ih is not None else 0)
        return self._step(xi, state, w_hh, b_hh)

    def _run_direction(self, x, state, layer, direction):
        """x (T, B, I) -> outputs (T, B, H), final state."""
        w_ih, w_hh, b_ih, b_hh = self.weights(layer, direction)
        T, B, _ = x.shape
        xi = (x.reshape(T * B, -1) @ w_ih.T).view(T, B, -1)  # (T, B, G*H), all input projections at once
        if b_ih is not None:
            xi = xi + b_ih
        return self._loop(xi, state, w_hh, b_hh, reverse=direction == 1)

    def _loop(self, xi, state, w_hh, b_hh, reverse: bool):
        """The time loop over precomputed input projections xi (T, B, G*H)."""
        T = xi.shape[0]
        steps = range(T - 1, -1, -1) if reverse else range(T)
        outs = [None] * T
        for t in steps:
            state = self._step(xi[t], state, w_hh, b_hh)
            outs[t] = state[0] if isinstance(state, tuple) else state
        return torch.stack(outs, 0), state

    def forward(self, x, state=None):
        if x.dim() != 3:
            raise DodaiError(f"expected input of shape (T, B, I) or (B, T, I), got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        T, B, I = x.shape
        if I != self.input_size:
            raise DodaiError(f"input size {I} != model input_size {self.input_size}")
        if T == 0:
            raise DodaiError("empty sequence (T = 0)")
        states = self._split_state(state, B, x)
        finals = []
        for layer in range(self.num_layers):
            dir_outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                outs, fin = self._run_direction(x, states[k], layer, d)
                dir_outs.append(outs)  # (T, B, H)
                finals.append(fin)
            x = dir_outs[0] if len(dir_outs) == 1 else torch.cat(dir_outs, dim=2)  # (T, B, Dn*H)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        out = x.transpose(0, 1) if self.batch_first else x
        return out, self._join_state(finals)


class RNN(_Recurrent):
    """Elman RNN (tanh or relu), torch.nn.RNN's interface and parameter names."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 **kw):
        if nonlinearity not in ("tanh", "relu"):
            raise DodaiError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.mode = "rnn_" + nonlinearity
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, **kw)

    def _step(self, xi, h, w_hh, b_hh):
        pre = xi + h @ w_hh.T
        if b_hh is not None:
            pre = pre + b_hh
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)


class GRU(_Recurrent):
    """GRU (PyTorch's r, z, n formulation), torch.nn.GRU's interface and parameter names."""

    mode = "gru"

    def _step(self, xi, h, w_hh, b_hh):
        gh = h @ w_hh.T  # (B, 3H)
        if b_hh is not None:
            gh = gh + b_hh
        i_r, i_z, i_n = xi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)  # = (1 - z) * n + z * h, one op fewer

    def set_update_bias(self, value: float) -> None:
        """Set the update-gate bias (b_iz + b_hz) to ``value``: a positive value makes z ~ 1 at init, so
        h' ~ h and the GRU starts out remembering (the GRU analogue of a positive LSTM forget bias)."""
        H = self.hidden_size
        with torch.no_grad():
            for layer in range(self.num_layers):
                for d in range(self.num_directions):
                    _, _, b_ih, b_hh = self.weights(layer, d)
                    if b_ih is None:
                        raise DodaiError("set_update_bias needs bias=True")
                    b_ih[H:2 * H] = value
                    b_hh[H:2 * H] = 0.0


class LSTM(_Recurrent):
    """LSTM with forget gate, gate order i, f, g, o; torch.nn.LSTM's interface and parameter names.

    The state is the pair (h, c); ``forward`` returns ``(output, (h_n, c_n))``.
    """

    mode = "lstm"
    fast = True  # use the fused-sequence autograd Function (set False for the plain per-op reference)

    def _loop(self, xi, state, w_hh, b_hh, reverse: bool):
        if not self.fast:
            return super()._loop(xi, state, w_hh, b_hh, reverse)
        h0, c0 = state
        if b_hh is None:
            b_hh = xi.new_zeros(xi.shape[-1])
        if reverse:
            xi = xi.flip(0)
        out, h, c = _LSTMSequence.apply(xi, h0, c0, w_hh, b_hh)
        return (out.flip(0) if reverse else out), (h, c)

    def _step(self, xi, state, w_hh, b_hh):
        h, c = state
        gates = xi + h @ w_hh.T  # (B, 4H)
        if b_hh is not None:
            gates = gates + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _split_state(self, state, batch, x):
        n = self.num_layers * self.num_directions
        if state is None:
            z = x.new_zeros(batch, self.hidden_size)
            return [(z, z)] * n
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise DodaiError("LSTM state must be a pair (h0, c0)")
        h0, c0 = state
        for s in (h0, c0):
            if s.shape != (n, batch, self.hidden_size):
                raise DodaiError(f"initial state must have shape {(n, batch, self.hidden_size)}, "
                                 f"got {tuple(s.shape)}")
        return list(zip(h0.unbind(0), c0.unbind(0)))

    def _join_state(self, states):
        return torch.stack([h for h, _ in states], 0), torch.stack([c for _, c in states], 0)

    def set_forget_bias(self, value: float) -> None:
        """Set the forget-gate bias (b_ih + b_hh) to ``value``; 1.0 is the usual choice
        (Gers et al. 2000; Jozefowicz et al. 2015) so the cell starts out remembering."""
        H = self.hidden_size
        with torch.no_grad():
            for layer in range(self.num_layers):
                for d in range(self.num_directions):
                    _, _, b_ih, b_hh = self.weights(layer, d)
                    if b_ih is None:
                        raise DodaiError("set_forget_bias needs bias=True")
                    b_ih[H:2 * H] = value
                    b_hh[H:2 * H] = 0.0


class _LSTMSequence(torch.autograd.Function):
    """A whole LSTM time loop with a hand-written backward pass (BPTT), the fast path of :class:`LSTM`.

    Forward runs without building an autograd graph and keeps the gate activations; backward walks the
    steps in reverse with the LSTM derivatives written out, and forms the recurrent weight gradient with
    one (T*B, 4H)^T @ (T*B, H) matmul instead of T small ones. Tested against the per-op path (gradcheck).

    xi (T, B, 4H) input projections (incl. b_ih), h0, c0 (B, H), w_hh (4H, H), b_hh (4H,)
    -> out (T, B, H), h_T, c_T.  With c_t = f c_{t-1} + i g and h_t = o tanh(c_t):
    dc_t += dh_t o (1 - tanh^2 c_t);  di = dc_t g;  df = dc_t c_{t-1};  dg = dc_t i;  do = dh_t tanh c_t;
    through the nonlinearities sigmoid' = s (1 - s), tanh' = 1 - tanh^2;  dh_{t-1} = dG_t W_hh, dc_{t-1} = dc_t f.
    """

    @staticmethod
    def forward(ctx, xi, h0, c0, w_hh, b_hh):
        T, B, G = xi.shape
        H = G // 4
        acts = xi.new_empty(T, B, G)  # i, f, g, o after their nonlinearities
        cs = xi.new_empty(T + 1, B, H)  # c_0 .. c_T
        hs = xi.new_empty(T + 1, B, H)  # h_0 .. h_T
        tcs = xi.new_empty(T, B, H)  # tanh(c_1) .. tanh(c_T)
        hs[0], cs[0] = h0, c0
        xb = xi + b_hh  # (T, B, 4H): both biases folded into the precomputed projection
        wt = w_hh.t()
        for t in range(T):
            a = acts[t]
            torch.addmm(xb[t], hs[t], wt, out=a)  # gate pre-activations (B, 4H)
            g_pre = a[:, 2 * H:3 * H]
            torch.tanh(g_pre, out=g_pre)
            a[:, :2 * H].sigmoid_()
            a[:, 3 * H:].sigmoid_()
            i, f, g, o = a.chunk(4, dim=1)
            torch.addcmul(f * cs[t], i, g, out=cs[t + 1])
            torch.tanh(cs[t + 1], out=tcs[t])
            torch.mul(o, tcs[t], out=hs[t + 1])
        ctx.save_for_backward(acts, cs, hs, tcs, w_hh)
        return hs[1:].clone(), hs[T].clone(), cs[T].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):
        acts, cs, hs, tcs, w_hh = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        dh = d_hT.clone() if d_hT is not None else acts.new_zeros(B, H)
        dc = d_cT.clone() if d_cT is not None else acts.new_zeros(B, H)
        dG = acts.new_empty(T, B, G)  # gradients of the gate pre-activations
        for t in range(T - 1, -1, -1):
            i, f, g, o = acts[t].chunk(4, dim=1)
            tc = tcs[t]
            if d_out is not None:
                dh = dh + d_out[t]
            dc = dc + dh * o * (1 - tc * tc)
            di, df, dg, do = dG[t].chunk(4, dim=1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * cs[t], f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            torch.mul(dh * tc, o * (1 - o), out=do)
            dc = dc * f
            dh = dG[t] @ w_hh  # (B, H)
        flat = dG.reshape(T * B, G)
        d_w_hh = flat.t() @ hs[:-1].reshape(T * B, H)  # sum_t dG_t^T h_{t-1}
        return dG, dh, dc, d_w_hh, flat.sum(0)


def make_recurrent(kind: str, input_size: int, hidden_size: int, **kw) -> _Recurrent:
    """'rnn' | 'lstm' | 'gru' -> the matching sequence module."""
    kinds = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
    if kind not in kinds:
        raise DodaiError(f"unknown recurrent kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](input_size, hidden_size, **kw)


# ----------------------------------------------------------------------------- a character / token language model

@dataclass
class RecurrentLMConfig:
    vocab_size: int  # V
    kind: str = "lstm"  # "rnn" | "lstm" | "gru"
    n_embd: int = 64  # E, token embedding size
    hidden: int = 128  # H, recurrent state size
    n_layer: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # between recurrent layers and before the read-out
    block_size: int = 256  # longest context used in training (the recurrence itself has no limit)


class RecurrentLM(nn.Module):
    """Embedding -> multi-layer RNN/LSTM/GRU -> linear read-out; the causal-LM protocol of dodai
    (``model(idx, targets=None) -> (logits, loss)``, ``config.block_size``), so training loops, sampling and
    beam search (uncached: it recomputes the prefix) work unchanged. The recurrent LM of Elman (1990) and
    Mikolov et al. (2010), with the gated cells of Hochreiter & Schmidhuber (1997) / Cho et al. (2014)."""

    def __init__(self, config: RecurrentLMConfig):
        super().__init__()
        self.config = c = config
        self.emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.rnn = make_recurrent(c.kind, c.n_embd, c.hidden, num_layers=c.n_layer, batch_first=True,
                                  dropout=c.dropout)
        if c.kind == "lstm":
            self.rnn.set_forget_bias(1.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None, last_only: bool = False,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V), loss (mean cross-entropy) if targets (B, T) given."""
        if cache is not None:
            raise DodaiError("RecurrentLM has no KV cache; its state is the recurrence itself")
        if attention_mask is not None or position_ids is not None:
            raise DodaiError("RecurrentLM does not take padded batches")
        out, _ = self.rnn(self.emb(idx))  # (B, T, H)
        if last_only and targets is None:
            out = out[:, -1:]
        logits = self.head(self.drop(out))
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
