"""Recurrent cells written as a few Tensor ops each (equations in functional.py).

A cell maps (x_t, state) to the new state. `prepare_sequence(x)` lets the runner hoist
per-sequence work out of the time loop: one matmul projects every time step's input at
once, and the recurrent weight is transposed into a contiguous array once.
"""
from .. import functional as F
from .._tensor import full, zeros
from . import init
from .module import Module, Parameter, check_input


class RNNCellBase(Module):
    """Parameters weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,), ~ U(-1/sqrt(H), 1/sqrt(H))."""
    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, dtype=None, device=None):
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gates * hidden_size
        self.weight_ih = Parameter(zeros(rows, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(zeros(rows, hidden_size, dtype=dtype, device=device))
        self.bias_ih = Parameter(zeros(rows, dtype=dtype, device=device)) if bias else None
        self.bias_hh = Parameter(zeros(rows, dtype=dtype, device=device)) if bias else None
        init.recurrent_uniform_(self, hidden_size)

    @classmethod
    def sharing(cls, weight_ih, weight_hh, bias_ih=None, bias_hh=None, **options):
        """A cell that uses the given parameters (how RNN/LSTM/GRU layers run their weights)."""
        cell = cls.__new__(cls)
        cell.input_size, cell.hidden_size = weight_ih.shape[1], weight_hh.shape[1]
        cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh
        for name, value in options.items():
            setattr(cell, name, value)
        return cell

    def _zeros(self, batch_size):
        return zeros(batch_size, self.hidden_size, dtype=self.weight_hh.dtype, device=self.weight_hh.device)

    def initial_state(self, batch_size):
        return self._zeros(batch_size)

    def _check(self, x, state):
        check_input(self, x, self.weight_ih)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (batch, {self.input_size}), got {x.shape}")
        for s in (state if isinstance(state, tuple) else (state,)):
            if s.shape != (x.shape[0], self.hidden_size):
                raise ValueError(f"{type(self).__name__}: expected state of shape ({x.shape[0]}, {self.hidden_size}), "
                                 f"got {s.shape}")

    def _input_projection(self, x, fold_bias_hh):
        """x (T, B, I) -> (T, B, G*H) in one matmul, with bias_ih (and bias_hh when it can be folded)."""
        T, B, I = x.shape
        bias = self.bias_ih
        if fold_bias_hh and bias is not None:
            bias = bias + self.bias_hh
        return F.linear(x.reshape(T * B, I), self.weight_ih, bias).reshape(T, B, -1)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None, device=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, device)

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0]) if state is None else state
        self._check(x, state)
        return F.rnn_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)

    def prepare_sequence(self, x):
        projected, w_hh_t, act = self._input_projection(x, True), self.weight_hh.T.contiguous(), self.nonlinearity
        return projected, lambda x_t, h: F.rnn_update(x_t + h @ w_hh_t, act)

    def extra_repr(self):
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(RNNCellBase):
    """Gates i, f, g, o; c' = f c + i g; h' = o tanh(c'). The state is the pair (h, c)."""
    gates = 4

    def initial_state(self, batch_size):
        return self._zeros(batch_size), self._zeros(batch_size)

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0]) if state is None else tuple(state)
        self._check(x, state)
        return F.lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def prepare_sequence(self, x):
        """Halve the i, f, o rows of the weights and biases once, so each step needs one tanh
        for all four gates (F.lstm_update_halved)."""
        H, dtype, device = self.hidden_size, self.weight_hh.dtype, self.weight_hh.device
        scale = full((4 * H,), 0.5, dtype=dtype, device=device)
        scale.data[2 * H:3 * H] = 1.0
        shift = scale * -1.0 + 1.0  # 1/2 for i, f, o; 0 for g
        rows = scale.reshape(4 * H, 1)
        bias = None if self.bias_ih is None else (self.bias_ih + self.bias_hh) * scale
        T, B, I = x.shape
        projected = F.linear(x.reshape(T * B, I), self.weight_ih * rows, bias).reshape(T, B, -1)
        w_hh_t = (self.weight_hh * rows).T.contiguous()
        return projected, lambda x_t, state: F.lstm_update_halved(x_t + state[0] @ w_hh_t, state[1], scale, shift)


class GRUCell(RNNCellBase):
    """Gates r, z, n; n = tanh(x_n + r (h W_hn^T + b_hn)); h' = (1 - z) n + z h."""
    gates = 3

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0]) if state is None else state
        self._check(x, state)
        return F.gru_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def prepare_sequence(self, x):
        projected, w_hh_t, b_hh = self._input_projection(x, False), self.weight_hh.T.contiguous(), self.bias_hh

        def step(x_t, h):
            hidden = h @ w_hh_t
            return F.gru_update(x_t, hidden + b_hh if b_hh is not None else hidden, h)
        return projected, step
