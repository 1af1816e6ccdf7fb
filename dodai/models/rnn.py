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
        """x (T, B, I) -> outputs list of h_t (B, H), final state."""
        w_ih, w_hh, b_ih, b_hh = self.weights(layer, direction)
        T, B, _ = x.shape
        xi = (x.reshape(T * B, -1) @ w_ih.T).view(T, B, -1)  # (T, B, G*H), all input projections at once
        if b_ih is not None:
            xi = xi + b_ih
        steps = range(T - 1, -1, -1) if direction == 1 else range(T)
        outs = [None] * T
        for t in steps:
            state = self._step(xi[t], state, w_hh, b_hh)
            outs[t] = state[0] if isinstance(state, tuple) else state
        return outs, state

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
                dir_outs.append(torch.stack(outs, 0))  # (T, B, H)
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


def make_recurrent(kind: str, input_size: int, hidden_size: int, **kw) -> _Recurrent:
    """'rnn' | 'lstm' | 'gru' -> the matching sequence module."""
    kinds = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
    if kind not in kinds:
        raise DodaiError(f"unknown recurrent kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](input_size, hidden_size, **kw)
