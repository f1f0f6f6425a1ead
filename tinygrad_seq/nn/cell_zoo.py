"""The cells people ask for, each a few Tensor ops run by the one runner (nn.Recurrent) and captured.

Two cells, with their papers' equations: LayerNormLSTMCell (Ba et al. 2016) and PeepholeLSTMCell
(Gers et al. 2002). Two wrappers that regularise any cell: VariationalDropout (Gal & Ghahramani
2016: one dropout mask per sequence on the inputs and on h) and Zoneout (Krueger et al. 2016:
each unit keeps its previous value with probability p at each step). Random masks are drawn in
prepare_sequence, once per sequence, never inside the step: the two recorded steps then run the
same program and the loop is captured. Zoneout draws a mask for every step, so its masks come
in as part of the per-step input, as data does.
"""
from ..tensors import cat, ones, rand, zeros
from . import functional as F
from . import init
from .cells import GRUCell, RNNCellBase
from .layers import LayerNorm
from .module import Module, Parameter


class LayerNormLSTMCell(RNNCellBase):
    """The layer-normalized LSTM of Ba, Kiros and Hinton (2016), gates in PyTorch's order i, f, g, o:

        (i, f, g, o) = LN(h_{t-1} W_hh^T; a_1, b_1) + LN(x_t W_ih^T; a_2, b_2) + b
        c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
        h_t = sigmoid(o) tanh(LN(c_t; a_3, b_3))

    LN(z; a, b) = a (z - mean(z)) / sqrt(var(z) + eps) + b over the features of each row: 4H for the
    two projections (normalized separately: `layernorm_hh`, `layernorm_ih`), H for the cell
    (`layernorm_c`); gains start at 1, shifts at 0. b is bias_ih + bias_hh, as in nn.LSTMCell (the
    paper's b; b_1 and b_2 overlap it, as in the paper). The input side is normalized once per
    sequence, for all steps, in prepare_sequence.
    """
    gates, state_items = 4, 2

    def __init__(self, input_size, hidden_size, bias=True, eps=1e-5, dtype=None, device=None):
        super().__init__(input_size, hidden_size, bias, dtype, device)
        self.layernorm_ih = LayerNorm(4 * hidden_size, eps, dtype=dtype, device=device)
        self.layernorm_hh = LayerNorm(4 * hidden_size, eps, dtype=dtype, device=device)
        self.layernorm_c = LayerNorm(hidden_size, eps, dtype=dtype, device=device)

    def initial_state(self, batch_size):
        return super().initial_state(batch_size), super().initial_state(batch_size)

    def project(self, x):
        """LN(x W_ih^T; a_2, b_2) + b, for x (..., I)."""
        z = self.layernorm_ih(F.linear(x, self.weight_ih))
        return z + (self.bias_ih + self.bias_hh) if self.bias_ih is not None else z

    def step(self, x_t, state, w_hh_t):
        h, c = state
        i, f, g, o = (x_t + self.layernorm_hh(h @ w_hh_t)).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * self.layernorm_c(c).tanh(), c


class PeepholeLSTMCell(RNNCellBase):
    """LSTM with peephole connections (Gers, Schraudolph and Schmidhuber 2002; Gers and Schmidhuber 2000):
    the gates also see the cell through diagonal weights p_i, p_f, p_o (`peephole_i`, ...; (H,) each):

        i = sigmoid(z_i + p_i c_{t-1}),  f = sigmoid(z_f + p_f c_{t-1}),  g = tanh(z_g)
        c_t = f c_{t-1} + i g
        o = sigmoid(z_o + p_o c_t),      h_t = o tanh(c_t)

    where (z_i, z_f, z_g, z_o) = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, as in nn.LSTMCell. Every
    parameter starts ~ U(-1/sqrt(H), 1/sqrt(H)).
    """
    gates, state_items = 4, 2

    def __init__(self, input_size, hidden_size, bias=True, dtype=None, device=None):
        super().__init__(input_size, hidden_size, bias, dtype, device)
        bound = hidden_size ** -0.5
        for name in ("peephole_i", "peephole_f", "peephole_o"):
            weight = Parameter(zeros(hidden_size, dtype=dtype, device=device))
            setattr(self, name, init.uniform_(weight, -bound, bound))

    def initial_state(self, batch_size):
        return super().initial_state(batch_size), super().initial_state(batch_size)

    def step(self, x_t, state, w_hh_t):
        h, c = state
        i, f, g, o = (x_t + h @ w_hh_t).chunk(4, 1)
        c = (f + self.peephole_f * c).sigmoid() * c + (i + self.peephole_i * c).sigmoid() * g.tanh()
        return (o + self.peephole_o * c).sigmoid() * c.tanh(), c


class CellWrapper(Module):
    """A cell that runs another cell (`self.cell`) and changes what goes in or comes out of its steps.

    It has the wrapped cell's state and hidden_size; forward(x, state) runs one step, as
    prepare_sequence and step do for the runner.
    """

    def __init__(self, cell):
        self.cell = cell

    @property
    def hidden_size(self):
        return self.cell.hidden_size

    @property
    def capturable(self):
        return getattr(self.cell, "capturable", True)

    def initial_state(self, batch_size):
        return self.cell.initial_state(batch_size)

    def forward(self, x, state=None):
        """One step on x (B, I): the step the runner runs, on a sequence of one."""
        state = self.initial_state(x.shape[0]) if state is None else state
        inputs, constants = self.prepare_sequence(x.unsqueeze(0))
        return self.step(inputs[0], state, *constants)

    def prepare_cell(self, x):
        """The wrapped cell's (per-step inputs, constants, step function) for the sequence x (T, B, I)."""
        if hasattr(self.cell, "prepare_sequence"):
            inputs, constants = self.cell.prepare_sequence(x)
            return inputs, tuple(constants), self.cell.step
        return x, (), self.cell.forward


def _items(state):
    return state if isinstance(state, tuple) else (state,)


def _like(state, items):
    return tuple(items) if isinstance(state, tuple) else items[0]


class VariationalDropout(CellWrapper):
    """Variational dropout (Gal and Ghahramani 2016) around a cell: one mask per sequence, the same at
    every step, on the inputs x_t (`dropout`) and on h_{t-1} where the cell reads it (`recurrent_dropout`):

        state_t = cell(x_t * m_x, (h_{t-1} * m_h, ...)),   m ~ Bernoulli(1 - p) / (1 - p) per sequence and unit

    The masks are drawn in prepare_sequence, outside the step; in eval mode this is the cell itself.
    Masking h before the step drops it where the cell's recurrent weights read it, as the paper does,
    for cells that read h_{t-1} only there: RNNCell, LSTMCell and the LSTM cells above. GRUCell also
    carries h_{t-1} into h_t (h_t = n + z (h_{t-1} - n)), which a mask on h would drop: it is refused.
    """

    def __init__(self, cell, dropout=0.0, recurrent_dropout=0.0):
        for name, p in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0 <= p < 1:
                raise ValueError(f"VariationalDropout: {name} must be in [0, 1), got {p}")
        if isinstance(cell, GRUCell) and recurrent_dropout:
            raise ValueError("VariationalDropout: GRUCell reads h_{t-1} outside its recurrent weights "
                             "(h_t = n + z (h_{t-1} - n)), where a mask would drop the memory itself; "
                             "use recurrent_dropout=0 or an RNN/LSTM cell")
        super().__init__(cell)
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout

    def masks(self, x):
        """(m_x (1, B, I) or None, m_h (B, H) or None) for a sequence x (T, B, I); (None, None) in eval mode."""
        def mask(shape, p):
            return F.dropout(ones(*shape, dtype=x.dtype, device=x.device), p) if self.training and p else None
        return mask((1,) + tuple(x.shape[1:]), self.dropout), mask((x.shape[1], self.hidden_size),
                                                                   self.recurrent_dropout)

    def prepare_sequence(self, x):
        m_x, m_h = self.masks(x)
        inputs, constants, step = self.prepare_cell(x if m_x is None else x * m_x)
        return inputs, (step, m_h) + constants

    def step(self, x_t, state, step, m_h, *constants):
        if m_h is not None:
            items = _items(state)
            state = _like(state, (items[0] * m_h,) + items[1:])
        return step(x_t, state, *constants)

    def extra_repr(self):
        return f"dropout={self.dropout}, recurrent_dropout={self.recurrent_dropout}"


class Zoneout(CellWrapper):
    """Zoneout (Krueger et al. 2016) around a cell: in training each unit of each state item keeps its
    previous value with probability p, drawn per unit and step; in eval mode it takes the expectation:

        training: s_t = d_t s_{t-1} + (1 - d_t) cell(x_t, s_{t-1}),  d_t ~ Bernoulli(p)
        eval:     s_t = p s_{t-1} + (1 - p) cell(x_t, s_{t-1})

    p is one rate for every state item, or one per item: (p_h, p_c) for an LSTM's (h, c), as in the
    paper (whose LSTM computes h_t from the new cell before zoneout of c, as wrapping does). The
    T masks of a sequence are drawn in prepare_sequence and reach each step with its input.
    """

    def __init__(self, cell, p):
        super().__init__(cell)
        n = len(_items(cell.initial_state(1)))
        rates = tuple(p) if isinstance(p, (tuple, list)) else (p,) * n
        if len(rates) != n or not all(0 <= r <= 1 for r in rates):
            raise ValueError(f"Zoneout: p must be a rate in [0, 1] or one per state item ({n}), got {p!r}")
        self.p = rates

    def zoned(self, batch_size):
        """(width, rate) of each state item with a rate above 0, in order."""
        return [(s.shape[1], p) for s, p in zip(_items(self.initial_state(batch_size)), self.p) if p]

    def masks(self, x):
        """d (T, B, widths of the zoned-out state items, one after the other) for a sequence x (T, B, I):
        1 where a unit keeps its previous value, with probability p."""
        zoned = self.zoned(x.shape[1])
        rates = cat([ones(w, dtype=x.dtype, device=x.device) * p for w, p in zoned])
        u = rand(x.shape[0], x.shape[1], sum(w for w, _ in zoned), dtype=x.dtype, device=x.device)
        return (u < rates).astype(x.dtype)

    def prepare_sequence(self, x):
        inputs, constants, step = self.prepare_cell(x)
        if not self.training or not any(self.p):
            return inputs, (step, None) + constants
        d = self.masks(x)
        sizes = [inputs.shape[2]] + [w for w, _ in self.zoned(x.shape[1])] * 2  # x_t, then d_t and 1 - d_t
        return cat([inputs, d, 1 - d], axis=2), (step, sizes) + constants

    def step(self, x_t, state, step, sizes, *constants):
        zoned = [k for k, p in enumerate(self.p) if p]
        if sizes is None:  # eval mode: the expectation
            weights = [(self.p[k], 1 - self.p[k]) for k in zoned]
        else:  # training: this step's d and 1 - d, which came with its input
            x_t, *d = x_t.split(sizes, 1)
            weights = list(zip(d[:len(zoned)], d[len(zoned):]))
        old, new = _items(state), list(_items(step(x_t, state, *constants)))
        for k, (keep, take) in zip(zoned, weights):
            new[k] = keep * old[k] + take * new[k]
        return _like(state, new)

    def extra_repr(self):
        return f"p={self.p}"
