"""Recurrent cells: RNNCell, LSTMCell, GRUCell, each a few Tensor ops with PyTorch's equations.

The runner (recurrent.py) talks to a cell through three methods: initial_state(batch_size);
prepare_sequence(x) once per sequence x (T, B, I), which projects every step's input with one
matmul (both biases folded in where the equations allow) and transposes the recurrent weight
into a contiguous array, returning (per-step inputs, constants); and step(x_t, state,
*constants) once per time step: the cell's equations. forward(x, state) is PyTorch's one-step
cell API and runs the same step.
"""
from ..engine.tensor import zeros
from . import init
from .module import Module, Parameter, check_input


class RNNCellBase(Module):
    """Parameters weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,), ~ U(-1/sqrt(H), 1/sqrt(H))."""
    gates, state_items = 1, 1  # G, and how many tensors the state holds

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

    def initial_state(self, batch_size):
        return zeros(batch_size, self.hidden_size, dtype=self.weight_hh.dtype, device=self.weight_hh.device)

    def forward(self, x, state=None):
        """One step on the input x (B, I): the same step the sequence layers run."""
        state = self.initial_state(x.shape[0]) if state is None else tuple(state) if isinstance(state, list) else state
        check_input(self, x, self.weight_ih)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (batch, {self.input_size}), got {x.shape}")
        for s in (state if isinstance(state, tuple) else (state,)):
            if s.shape != (x.shape[0], self.hidden_size):
                raise ValueError(f"{type(self).__name__}: expected state of shape ({x.shape[0]}, {self.hidden_size}), "
                                 f"got {s.shape}")
        return self.step(self.project(x), state, *self.constants(self.weight_hh.T))

    def prepare_sequence(self, x):
        """Once per sequence x (T, B, I): every step's input projected by one matmul, and the constants each
        step reads (the recurrent weight transposed into a contiguous array: faster at small batches)."""
        T, B, I = x.shape
        return self.project(x.reshape(T * B, I)).reshape(T, B, -1), self.constants(self.weight_hh.T.contiguous())

    def project(self, x):
        """x W_ih^T + b_ih + b_hh, for rows x (N, I)."""
        bias = self.bias_ih + self.bias_hh if self.bias_ih is not None else None
        return x @ self.weight_ih.T if bias is None else x @ self.weight_ih.T + bias

    def constants(self, w_hh_t):
        return (w_hh_t,)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None, device=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, device)

    def step(self, x_t, h, w_hh_t):
        pre = x_t + h @ w_hh_t
        if self.nonlinearity == "tanh":
            return pre.tanh()
        if self.nonlinearity == "relu":
            return pre.relu()
        raise ValueError(f"rnn_cell: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")

    def extra_repr(self):
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(RNNCellBase):
    """Gates i, f, g, o; c' = f c + i g; h' = o tanh(c'). The state is the pair (h, c)."""
    gates, state_items = 4, 2

    def initial_state(self, batch_size):
        return super().initial_state(batch_size), super().initial_state(batch_size)

    def step(self, x_t, state, w_hh_t):
        h, c = state
        i, f, g, o = (x_t + h @ w_hh_t).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class GRUCell(RNNCellBase):
    """Gates r, z, n; n = tanh(x_n + b_in + r (h W_hn^T + b_hn)); h' = (1 - z) n + z h."""
    gates = 3

    def project(self, x):
        """x W_ih^T + b_ih: b_hh cannot be folded in (r multiplies its n part)."""
        return x @ self.weight_ih.T if self.bias_ih is None else x @ self.weight_ih.T + self.bias_ih

    def constants(self, w_hh_t):
        return w_hh_t, self.bias_hh

    def step(self, x_t, h, w_hh_t, b_hh):
        hidden = h @ w_hh_t if b_hh is None else h @ w_hh_t + b_hh
        H = h.shape[1]
        x_rz, x_n = x_t.split([2 * H, H], 1)
        h_rz, h_n = hidden.split([2 * H, H], 1)
        r, z = (x_rz + h_rz).sigmoid().chunk(2, 1)  # r and z are adjacent: one add, one sigmoid
        n = (x_n + r * h_n).tanh()
        return n + z * (h - n)  # (1 - z) n + z h
