"""Shared by the nn tests: build float64 layers and cells with random weights, run them with
a loss in which every output counts, and collect outputs and gradients as NumPy arrays.

Imported as `from recurrent_helpers import ...` (tests/ is on sys.path under pytest).
"""
import numpy as np
from hypothesis import strategies as st

from tinygrad_seq import Tensor, nn

LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# (kind, nonlinearity): the relu RNN is its own variant
VARIANTS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def assert_close(actual, expected, what, rtol=1e-8):
    """Agreement to `rtol` relative, with an absolute floor scaled by the array's magnitude
    (sums that cancel to ~0 cannot keep relative accuracy)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12 * scale, err_msg=what)


def randomize(module, rng, scale=1.0):
    """Give every parameter of `module` fresh float64 U(-scale, scale) values (in place)."""
    module.load_state_dict({name: rng.uniform(-scale, scale, p.shape) for name, p in module.named_parameters()})
    return module


def make_layer(kind, nonlinearity, input_size, hidden_size, rng, scale=1.0, **options):
    """A float64 RNN/LSTM/GRU with U(-scale, scale) weights; options go to the constructor."""
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    return randomize(LAYERS[kind](input_size, hidden_size, **extra, **options).double(), rng, scale)


def make_cell(kind, nonlinearity, input_size, hidden_size, rng, scale=1.0, bias=True):
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    return randomize(CELLS[kind](input_size, hidden_size, bias=bias, **extra).double(), rng, scale)


def leaf(array):
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True)


def const(array):
    return Tensor(np.array(array, dtype=np.float64))


def weighted_loss(tensors, weights):
    """sum_k sum(tensors[k] * weights[k]) (None weights skipped): a scalar in which every
    element of every weighted output counts."""
    loss = None
    for t, w in zip(tensors, weights):
        if w is None:
            continue
        term = (t * const(w)).sum()
        loss = term if loss is None else loss + term
    return loss


def run_layer(layer, kind, x, h0=None, c0=None, lengths=None, grad_output=None, grad_h_n=None, grad_c_n=None):
    """Run `layer` on time-major NumPy x (T, B, I) (transposed for batch_first layers), with
    h0/c0 as leaves when given, and backpropagate sum(out*Go) + sum(h_n*Gh) (+ sum(c_n*Gc)).

    Returns (output (T, B, D*H), h_n, c_n or None, grads) with everything time-major NumPy;
    grads has every parameter name plus "x" and, when given, "h0" and "c0".
    """
    x_t = leaf(x.transpose(1, 0, 2) if layer.batch_first else x)
    h0_t = None if h0 is None else leaf(h0)
    c0_t = None if c0 is None else leaf(c0)
    hx = None
    if h0_t is not None:
        hx = (h0_t, c0_t) if kind == "lstm" else h0_t
    layer.zero_grad()
    output, state = layer(x_t, hx, lengths=lengths)
    h_n, c_n = state if kind == "lstm" else (state, None)
    if layer.batch_first:
        output = output.transpose(0, 1)
    outs = [output, h_n] + ([c_n] if c_n is not None else [])
    weights = [grad_output, grad_h_n] + ([grad_c_n] if c_n is not None else [])
    weighted_loss(outs, weights).backward()
    # copies: on the CPU .numpy() is a view, and a later backward accumulates into .grad in place
    grads = {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}
    grads["x"] = (x_t.grad.numpy().transpose(1, 0, 2) if layer.batch_first else x_t.grad.numpy()).copy()
    if h0_t is not None:
        grads["h0"] = h0_t.grad.numpy().copy()
    if c0_t is not None:
        grads["c0"] = c0_t.grad.numpy().copy()
    return output.numpy().copy(), h_n.numpy().copy(), None if c_n is None else c_n.numpy().copy(), grads


def detach(state):
    """A recurrent state cut from the tape: a Tensor, or a tuple of them (LSTM)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def lengths_strategy(T, B):
    """None, or B unsorted lengths in 1..T."""
    return st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B)


@st.composite
def layer_configs(draw, max_T=6, max_B=4, max_I=4, max_H=5, max_layers=3):
    """Small layer configurations: sizes, stacking, direction, bias, layout and lengths."""
    kind, nonlinearity = draw(st.sampled_from(VARIANTS))
    T, B = draw(st.integers(1, max_T)), draw(st.integers(1, max_B))
    return dict(
        kind=kind, nonlinearity=nonlinearity, T=T, B=B,
        I=draw(st.integers(1, max_I)), H=draw(st.integers(1, max_H)),
        num_layers=draw(st.integers(1, max_layers)), bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()), batch_first=draw(st.booleans()),
        lengths=draw(lengths_strategy(T, B)),
    )
