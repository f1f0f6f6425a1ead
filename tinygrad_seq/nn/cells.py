"""Recurrent cells: RNNCell, LSTMCell, GRUCell, each a few Tensor ops with PyTorch's equations.

The runner (recurrent.py) talks to a cell through three methods: initial_state(batch_size);
prepare_sequence(x) once per sequence x (T, B, I), which projects every step's input with one
matmul (both biases folded in where the equations allow) and transposes the recurrent weight
into a contiguous array, returning (per-step inputs, constants); and step(x_t, state,
*constants) once per time step: the cell's equations. forward(x, state) is PyTorch's one-step
cell API and runs the same step.
"""
import functools

from ..tensors import Tensor, zeros
from ..tensors.fused import Linear
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
        cell.input_size, cell.hidden_size = weight_ih.shape[1], weight_hh.shape[0] // cls.gates
        cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh
        for name, value in options.items():
            setattr(cell, name, value)
        return cell

    def initial_state(self, batch_size):
        return zeros(batch_size, self.hidden_size, dtype=self.weight_hh.dtype, device=self.weight_hh.device)

    def _state_sizes(self):
        """The width of each item of the state."""
        return (self.hidden_size,) * self.state_items

    def forward(self, x, state=None):
        """One step on the input x (B, I): the same step the sequence layers run."""
        state = self.initial_state(x.shape[0]) if state is None else tuple(state) if isinstance(state, list) else state
        check_input(self, x, self.weight_ih)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (batch, {self.input_size}), got {x.shape}")
        for s, size in zip(state if isinstance(state, tuple) else (state,), self._state_sizes()):
            if s.shape != (x.shape[0], size):
                raise ValueError(f"{type(self).__name__}: expected state of shape ({x.shape[0]}, {size}), "
                                 f"got {s.shape}")
        return self.step(self.project(x), state, *self.constants(self.weight_hh.T))

    def prepare_sequence(self, x):
        """Once per sequence x (T, B, I): every step's input projected by one matmul, and the constants each
        step reads (the recurrent weight transposed into a contiguous array: faster at small batches)."""
        one_step = x.shape[0] == 1  # (a decoder fed token by token): as forward does it, no weight copied
        return self.project(x), self.constants(self.weight_hh.T if one_step else self.weight_hh.T.contiguous())

    def project(self, x):
        """x W_ih^T + b_ih + b_hh for x (..., I): one product over all rows (fused.Linear)."""
        return Linear.apply(x, self.weight_ih, None if self.bias_ih is None else self.bias_ih + self.bias_hh)

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

    def prepare_sequence(self, x):
        """As for every cell, with the i, f and o rows of the projected inputs and of the recurrent weight
        halved once here, so that step does not halve them at every time step (one step: it does)."""
        if x.shape[0] == 1:
            return super().prepare_sequence(x)
        scale, shift = _gate_scales(self.hidden_size, self.weight_hh.dtype, self.weight_hh.device)
        rows = scale.reshape((4 * self.hidden_size, 1))
        bias = None if self.bias_ih is None else (self.bias_ih + self.bias_hh) * scale
        inputs = Linear.apply(x, self.weight_ih * rows, bias)
        return inputs, ((self.weight_hh * rows).T.contiguous(), scale, shift, True)

    def constants(self, w_hh_t):
        return (w_hh_t,) + _gate_scales(self.hidden_size, self.weight_hh.dtype, self.weight_hh.device) + (False,)

    def step(self, x_t, state, w_hh_t, scale, shift, halved):
        """Gates i, f, o = sigmoid(.), g = tanh(.) of z = x_t + h W_hh^T, all four from ONE tanh: sigmoid(z) =
        tanh(z / 2) / 2 + 1 / 2. `scale` is 1/2 on the i, f, o rows and 1 on g, `shift` 1/2 and 0; the rows of
        z are halved here, or already (`halved`: prepare_sequence halved the weights once per sequence)."""
        h, c = state
        z = x_t + h @ w_hh_t
        i, f, g, o = ((z if halved else z * scale).tanh() * scale + shift).chunk(4, 1)
        c = f * c + i * g
        return o * c.tanh(), c


class ProjectedLSTMCell(LSTMCell):
    """The cell nn.LSTM(..., proj_size=P) runs: an LSTMCell whose output is projected, h' = (o tanh(c')) W_hr^T.

    weight_hr (P, H) joins LSTMCell's parameters and weight_hh is (4H, P); the state is (h (B, P), c (B, H)).
    """

    def __init__(self, input_size, hidden_size, proj_size, bias=True, dtype=None, device=None):
        super().__init__(input_size, hidden_size, bias, dtype, device)
        self.weight_hh = Parameter(zeros(4 * hidden_size, proj_size, dtype=dtype, device=device))
        self.weight_hr = Parameter(zeros(proj_size, hidden_size, dtype=dtype, device=device))
        init.recurrent_uniform_(self, hidden_size)

    @property
    def proj_size(self):
        return self.weight_hr.shape[0]

    def _state_sizes(self):
        return self.proj_size, self.hidden_size

    def initial_state(self, batch_size):
        w = self.weight_hh
        return zeros(batch_size, self.proj_size, dtype=w.dtype, device=w.device), super().initial_state(batch_size)[1]

    def prepare_sequence(self, x):
        if x.shape[0] == 1:  # one step: prepared as forward does it, through constants()
            return super().prepare_sequence(x)
        inputs, constants = super().prepare_sequence(x)
        return inputs, constants + (self.weight_hr.T.contiguous(),)

    def constants(self, w_hh_t):
        return super().constants(w_hh_t) + (self.weight_hr.T,)

    def step(self, x_t, state, w_hh_t, scale, shift, halved, w_hr_t):
        h, c = super().step(x_t, state, w_hh_t, scale, shift, halved)
        return h @ w_hr_t, c

    def extra_repr(self):
        return super().extra_repr() + f", proj_size={self.proj_size}"


@functools.lru_cache(maxsize=32)
def _gate_scales(hidden_size, dtype, device):
    """LSTMCell.step's `scale` and `shift` (constants, made once per size, dtype and device)."""
    H = hidden_size  # made from a list, not written in place: a first call inside a recorded step stays capturable
    scale = Tensor([0.5] * (2 * H) + [1.0] * H + [0.5] * H, dtype=dtype, device=device)
    return scale, Tensor([0.5] * (2 * H) + [0.0] * H + [0.5] * H, dtype=dtype, device=device)


class GRUCell(RNNCellBase):
    """Gates r, z, n; n = tanh(x_n + b_in + r (h W_hn^T + b_hn)); h' = (1 - z) n + z h."""
    gates = 3

    def project(self, x):
        """x W_ih^T + b_ih: b_hh cannot be folded in (r multiplies its n part)."""
        return Linear.apply(x, self.weight_ih, self.bias_ih)

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
