"""The BPTT oracle (tests/bptt_oracle.py) agrees with PyTorch's nn.RNN/LSTM/GRU and cells.

Skipped where torch is not installed (as in CI); it documents why the oracle can be trusted.
Everything runs in float64 and must agree to 1e-10 relative: outputs, final states and the
gradients of every parameter, the input and the initial state.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from bptt_oracle import cell_forward_backward, layer_forward_backward  # noqa: E402

LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}
VARIANTS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=what)


def randomized(module, rng):
    """Give every parameter of a float64 torch module fresh uniform(-1, 1) values."""
    state = {name: torch.from_numpy(rng.uniform(-1.0, 1.0, p.shape)) for name, p in module.named_parameters()}
    module.load_state_dict(state)
    return module


def leaf(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def maybe(rng, present, shape):
    return rng.standard_normal(shape) if present else None


def torch_layer_run(module, kind, x, h0, c0, lengths, grad_output, grad_h_n, grad_c_n):
    """Run the module (packing when lengths are given) and backprop the oracle's loss."""
    T = x.shape[0]
    x_t, h0_t = leaf(x), leaf(h0)
    c0_t = leaf(c0) if kind == "lstm" else None
    if lengths is None:
        inputs = x_t
    else:
        inputs = pack_padded_sequence(x_t, torch.tensor(lengths), enforce_sorted=False)
    output, state = module(inputs, (h0_t, c0_t) if kind == "lstm" else h0_t)
    if lengths is not None:
        output, _ = pad_packed_sequence(output, total_length=T)
    h_n, c_n = state if kind == "lstm" else (state, None)
    loss = (output * torch.from_numpy(grad_output)).sum() + (h_n * torch.from_numpy(grad_h_n)).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.from_numpy(grad_c_n)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    grads.update(x=x_t.grad.numpy(), h0=h0_t.grad.numpy())
    if c0_t is not None:
        grads["c0"] = c0_t.grad.numpy()
    detached = (output, h_n) + ((c_n,) if c_n is not None else ())
    return [t.detach().numpy() for t in detached], grads


def check_layer(kind, nonlinearity, T, B, I, H, num_layers, bidirectional, bias, lengths, rng, given_mask):
    """Compare oracle and torch on one configuration; given_mask says which optional arrays are passed."""
    D = 2 if bidirectional else 1
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    module = LAYERS[kind](
        I, H, num_layers=num_layers, bias=bias, bidirectional=bidirectional, dtype=torch.float64, **extra
    )
    randomized(module, rng)
    params = {name: p.detach().numpy().copy() for name, p in module.named_parameters()}
    state_shape = (num_layers * D, B, H)
    is_lstm = kind == "lstm"
    x = rng.standard_normal((T, B, I))
    h0 = maybe(rng, given_mask["h0"], state_shape)
    c0 = maybe(rng, given_mask["h0"] and is_lstm, state_shape)
    grad_output = maybe(rng, given_mask["grad_output"], (T, B, D * H))
    grad_h_n = maybe(rng, given_mask["grad_h_n"], state_shape)
    grad_c_n = maybe(rng, given_mask["grad_c_n"] and is_lstm, state_shape)

    output, h_n, c_n, grads = layer_forward_backward(
        kind, x, params, h0=h0, c0=c0, lengths=lengths, num_layers=num_layers, bidirectional=bidirectional,
        nonlinearity=nonlinearity, grad_output=grad_output, grad_h_n=grad_h_n, grad_c_n=grad_c_n,
    )

    def or_zeros(array, shape):
        return np.zeros(shape) if array is None else array

    expected, expected_grads = torch_layer_run(
        module, kind, x, or_zeros(h0, state_shape), or_zeros(c0, state_shape), lengths,
        or_zeros(grad_output, (T, B, D * H)), or_zeros(grad_h_n, state_shape),
        or_zeros(grad_c_n, state_shape),
    )
    assert (c_n is not None) == is_lstm
    for what, actual, wanted in zip(("output", "h_n", "c_n"), (output, h_n, c_n), expected):
        assert_close(actual, wanted, what)
    assert list(grads) and set(grads) == set(expected_grads)
    for name, wanted in expected_grads.items():
        assert_close(grads[name], wanted, f"grad of {name}")
    return grads


@st.composite
def layer_configs(draw):
    T = draw(st.integers(1, 5))
    B = draw(st.integers(1, 4))
    return dict(
        T=T, B=B, I=draw(st.integers(1, 4)), H=draw(st.integers(1, 4)),
        num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
        lengths=draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B)),
        given_mask={key: draw(st.booleans()) for key in ("h0", "grad_output", "grad_h_n", "grad_c_n")},
    )


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
@settings(deadline=None)
@given(config=layer_configs(), seed=st.integers(0, 2**32 - 1))
def test_layer_matches_torch(kind, nonlinearity, config, seed):
    check_layer(kind, nonlinearity, rng=np.random.default_rng(seed), **config)


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_stacked_bidirectional_unsorted_lengths(kind, nonlinearity):
    """A fixed hard case: 2 layers, both directions, unsorted lengths, every input given."""
    lengths = [2, 5, 1, 3]
    everything = dict.fromkeys(("h0", "grad_output", "grad_h_n", "grad_c_n"), True)
    grads = check_layer(
        kind, nonlinearity, T=5, B=4, I=3, H=2, num_layers=2, bidirectional=True, bias=True,
        lengths=lengths, rng=np.random.default_rng(0), given_mask=everything,
    )
    for b, length in enumerate(lengths):
        assert not grads["x"][length:, b].any(), "padded inputs must get exactly zero gradient"


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
@settings(deadline=None)
@given(
    B=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 4), bias=st.booleans(),
    state_given=st.booleans(), seed=st.integers(0, 2**32 - 1),
)
def test_cell_matches_torch(kind, nonlinearity, B, I, H, bias, state_given, seed):
    rng = np.random.default_rng(seed)
    is_lstm = kind == "lstm"
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    cell = randomized(CELLS[kind](I, H, bias=bias, dtype=torch.float64, **extra), rng)
    params = {name: p.detach().numpy().copy() for name, p in cell.named_parameters()}
    x = rng.standard_normal((B, I))
    h = maybe(rng, state_given, (B, H))
    c = maybe(rng, state_given and is_lstm, (B, H))
    grad_h = rng.standard_normal((B, H))
    grad_c = rng.standard_normal((B, H)) if is_lstm else None

    h_new, c_new, grads = cell_forward_backward(
        kind, x, h, c, params, grad_h, grad_c, nonlinearity=nonlinearity
    )

    x_t = leaf(x)
    h_t = leaf(np.zeros((B, H)) if h is None else h)
    c_t = leaf(np.zeros((B, H)) if c is None else c)
    out = cell(x_t, (h_t, c_t) if is_lstm else h_t)
    h_expected, c_expected = out if is_lstm else (out, None)
    loss = (h_expected * torch.from_numpy(grad_h)).sum()
    if is_lstm:
        loss = loss + (c_expected * torch.from_numpy(grad_c)).sum()
    loss.backward()

    assert_close(h_new, h_expected.detach().numpy(), "h")
    if is_lstm:
        assert_close(c_new, c_expected.detach().numpy(), "c")
    else:
        assert c_new is None
    expected_grads = {name: p.grad.numpy() for name, p in cell.named_parameters()}
    expected_grads.update(x=x_t.grad.numpy(), h=h_t.grad.numpy())
    if is_lstm:
        expected_grads["c"] = c_t.grad.numpy()
    assert set(grads) == set(expected_grads)
    for name, wanted in expected_grads.items():
        assert_close(grads[name], wanted, f"grad of {name}")
