"""nn.RNNCell / nn.LSTMCell / nn.GRUCell: one step against the NumPy oracle, gradcheck,
parameters, default initialisation and input checks."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bptt_oracle import cell_forward_backward
from recurrent_helpers import CELLS, GATES, VARIANTS, assert_close, const, leaf, make_cell
from tinygrad_seq import Tensor, manual_seed, nn
from tinygrad_seq.autograd.gradcheck import gradcheck


@given(variant=st.sampled_from(VARIANTS), B=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 5),
       bias=st.booleans(), state_given=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_cell_matches_oracle(variant, B, I, H, bias, state_given, seed):
    kind, nonlinearity = variant
    rng = np.random.default_rng(seed)
    lstm = kind == "lstm"
    cell = make_cell(kind, nonlinearity, I, H, rng, bias=bias)
    x, h, c = rng.standard_normal((B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    grad_h, grad_c = rng.standard_normal((B, H)), rng.standard_normal((B, H))

    x_t, h_t, c_t = leaf(x), leaf(h), leaf(c)
    state = ((h_t, c_t) if lstm else h_t) if state_given else None
    new = cell(x_t, state)
    h_new, c_new = new if lstm else (new, None)
    loss = (h_new * const(grad_h)).sum()
    if lstm:
        loss = loss + (c_new * const(grad_c)).sum()
    loss.backward()

    params = {name: p.numpy() for name, p in cell.named_parameters()}
    want_h, want_c, want = cell_forward_backward(
        kind, x, h if state_given else None, c if state_given and lstm else None, params, grad_h,
        grad_c if lstm else None, nonlinearity=nonlinearity)
    assert_close(h_new.numpy(), want_h, "h'")
    if lstm:
        assert_close(c_new.numpy(), want_c, "c'")
    assert_close(x_t.grad.numpy(), want["x"], "gradient of x")
    for name, p in cell.named_parameters():
        assert_close(p.grad.numpy(), want[name], f"gradient of {name}")
    if state_given:
        assert_close(h_t.grad.numpy(), want["h"], "gradient of h")
        if lstm:
            assert_close(c_t.grad.numpy(), want["c"], "gradient of c")
    else:
        assert h_t.grad is None


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_cell_gradcheck(kind, nonlinearity):
    rng = np.random.default_rng(1)
    cell = make_cell(kind, nonlinearity, 3, 2, rng)
    x, h, c = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 2))), leaf(rng.standard_normal((2, 2)))
    params = list(cell.parameters())
    if kind == "lstm":
        gradcheck(lambda x, h, c, *_: cell(x, (h, c)), [x, h, c, *params])
    else:
        gradcheck(lambda x, h, *_: cell(x, h), [x, h, *params])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_parameters_names_shapes_and_init(kind, bias):
    manual_seed(0)
    cell = CELLS[kind](3, 5, bias=bias)
    G = GATES[kind]
    expected = {"weight_ih": (G * 5, 3), "weight_hh": (G * 5, 5)}
    if bias:
        expected.update(bias_ih=(G * 5,), bias_hh=(G * 5,))
    assert [(n, p.shape) for n, p in cell.named_parameters()] == list(expected.items())
    bound = 1 / math.sqrt(5)
    for name, p in cell.named_parameters():
        assert p.requires_grad and p.is_leaf and p.dtype == np.float32
        assert np.all(np.abs(p.numpy()) <= bound), name
    values = np.concatenate([p.numpy().ravel() for p in cell.parameters()])
    assert values.min() < -bound / 2 and values.max() > bound / 2, "not spread over U(-1/sqrt(H), 1/sqrt(H))"


def test_cell_init_is_reproducible_with_manual_seed():
    manual_seed(3)
    a = nn.LSTMCell(2, 3).state_dict()
    manual_seed(3)
    b = nn.LSTMCell(2, 3).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_default_state_is_zeros(kind):
    rng = np.random.default_rng(2)
    cell = make_cell(kind, "tanh", 3, 4, rng)
    x = Tensor(rng.standard_normal((2, 3)))
    zeros = Tensor(np.zeros((2, 4)))
    default, explicit = cell(x), cell(x, (zeros, zeros) if kind == "lstm" else zeros)
    for a, b in zip(default if kind == "lstm" else (default,), explicit if kind == "lstm" else (explicit,)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    state = cell.initial_state(2)
    for s in state if kind == "lstm" else (state,):
        assert s.shape == (2, 4) and s.dtype == np.float64 and not s.numpy().any()


def test_lstm_cell_accepts_state_as_list():
    rng = np.random.default_rng(3)
    cell = make_cell("lstm", "tanh", 2, 3, rng)
    x, h, c = (Tensor(rng.standard_normal(s)) for s in ((4, 2), (4, 3), (4, 3)))
    for a, b in zip(cell(x, [h, c]), cell(x, (h, c))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_relu_cell_is_relu():
    rng = np.random.default_rng(4)
    cell = make_cell("rnn", "relu", 3, 4, rng)
    x, h = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    p = {name: q.numpy() for name, q in cell.named_parameters()}
    want = np.maximum(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"], 0)
    np.testing.assert_allclose(cell(Tensor(x), Tensor(h)).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_input_checks(kind):
    cell = CELLS[kind](3, 4)
    name = type(cell).__name__
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(batch, 3\), got \(2, 5\)"):
        cell(Tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\)"):
        cell(Tensor(np.zeros((2, 2, 3), np.float32)))
    bad = Tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=rf"{name}: expected state of shape \(2, 4\), got \(2, 5\)"):
        cell(Tensor(np.zeros((2, 3), np.float32)), (bad, bad) if kind == "lstm" else bad)


def test_rnn_cell_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        nn.RNNCell(2, 3, nonlinearity="gelu")


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_cell_repr(kind, nonlinearity):
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    text = repr(CELLS[kind](3, 4, bias=False, **extra))
    assert text.startswith(f"{type(CELLS[kind](1, 1)).__name__}(3, 4, bias=False")
    if kind == "rnn":
        assert repr(nonlinearity) in text
