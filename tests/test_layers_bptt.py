"""nn.RNN / nn.LSTM / nn.GRU against the hand-written NumPy BPTT oracle (tests/bptt_oracle.py).

Everything in float64: outputs, final states and the gradients of every parameter, of the
input and of the initial state must agree to 1e-8 relative. The loss weights every output
with a random array (sum(out*Go) + sum(h_n*Gh) [+ sum(c_n*Gc)]) so no output is left out.
"""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt_oracle import layer_forward_backward
from recurrent_helpers import VARIANTS, assert_close, const, leaf, layer_configs, make_layer, run_layer
from tinygrad_seq import Tensor, nn
from tinygrad_seq.autograd.gradcheck import gradcheck


def check_against_oracle(kind, nonlinearity, T, B, I, H, num_layers, bidirectional, bias, batch_first, lengths,
                         rng, with_hx=True):
    layer = make_layer(kind, nonlinearity, I, H, rng, num_layers=num_layers, bidirectional=bidirectional,
                       bias=bias, batch_first=batch_first)
    D = 2 if bidirectional else 1
    state_shape = (num_layers * D, B, H)
    lstm = kind == "lstm"
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal(state_shape) if with_hx else None
    c0 = rng.standard_normal(state_shape) if with_hx and lstm else None
    grad_output = rng.standard_normal((T, B, D * H))
    grad_h_n = rng.standard_normal(state_shape)
    grad_c_n = rng.standard_normal(state_shape) if lstm else None

    out, h_n, c_n, grads = run_layer(layer, kind, x, h0, c0, lengths, grad_output, grad_h_n, grad_c_n)
    params = {name: p.numpy() for name, p in layer.named_parameters()}
    want_out, want_h_n, want_c_n, want = layer_forward_backward(
        kind, x, params, h0=h0, c0=c0, lengths=lengths, num_layers=num_layers, bidirectional=bidirectional,
        nonlinearity=nonlinearity, grad_output=grad_output, grad_h_n=grad_h_n, grad_c_n=grad_c_n)

    assert_close(out, want_out, "output")
    assert_close(h_n, want_h_n, "h_n")
    if lstm:
        assert_close(c_n, want_c_n, "c_n")
    expected_names = set(params) | {"x"} | ({"h0"} | ({"c0"} if lstm else set()) if with_hx else set())
    assert set(grads) == expected_names
    for name, value in grads.items():
        assert_close(value, want[name], f"gradient of {name}")
    return grads


@settings(deadline=None)
@given(config=layer_configs(), with_hx=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_layer_matches_oracle(config, with_hx, seed):
    check_against_oracle(**config, rng=np.random.default_rng(seed), with_hx=with_hx)


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_three_layers_bidirectional_unsorted_lengths_batch_first(kind, nonlinearity):
    """A fixed hard case (every feature at once), so a regression shows without hypothesis."""
    lengths = [3, 6, 1, 4]
    grads = check_against_oracle(kind, nonlinearity, T=6, B=4, I=3, H=4, num_layers=3, bidirectional=True,
                                 bias=True, batch_first=True, lengths=lengths, rng=np.random.default_rng(7))
    for b, n in enumerate(lengths):
        assert not grads["x"][n:, b].any(), "padded input positions must get exactly zero gradient"


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_matches_batch_of_one(kind, nonlinearity, bidirectional):
    """x (T, I) and hx (L*D, H) give the B=1 results with the batch axis dropped (gradients too)."""
    rng = np.random.default_rng(3)
    T, I, H, L = 5, 3, 4, 2
    D = 2 if bidirectional else 1
    lstm = kind == "lstm"
    layer = make_layer(kind, nonlinearity, I, H, rng, num_layers=L, bidirectional=bidirectional)
    x = rng.standard_normal((T, I))
    h0, c0 = rng.standard_normal((L * D, H)), rng.standard_normal((L * D, H))
    go, gh, gc = rng.standard_normal((T, D * H)), rng.standard_normal((L * D, H)), rng.standard_normal((L * D, H))

    x_t, h0_t, c0_t = leaf(x), leaf(h0), leaf(c0)
    out, state = layer(x_t, (h0_t, c0_t) if lstm else h0_t)
    h_n, c_n = state if lstm else (state, None)
    assert out.shape == (T, D * H) and h_n.shape == (L * D, H)
    loss = (out * Tensor(go)).sum() + (h_n * Tensor(gh)).sum()
    if lstm:
        assert c_n.shape == (L * D, H)
        loss = loss + (c_n * Tensor(gc)).sum()
    loss.backward()
    unbatched_param_grads = {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}

    b_out, b_h_n, b_c_n, b_grads = run_layer(layer, kind, x[:, None], h0[:, None], c0[:, None] if lstm else None,
                                            None, go[:, None], gh[:, None], gc[:, None] if lstm else None)
    assert_close(out.numpy(), b_out[:, 0], "output", rtol=1e-12)
    assert_close(h_n.numpy(), b_h_n[:, 0], "h_n", rtol=1e-12)
    assert_close(x_t.grad.numpy(), b_grads["x"][:, 0], "gradient of x", rtol=1e-12)
    assert_close(h0_t.grad.numpy(), b_grads["h0"][:, 0], "gradient of h0", rtol=1e-12)
    if lstm:
        assert_close(c_n.numpy(), b_c_n[:, 0], "c_n", rtol=1e-12)
        assert_close(c0_t.grad.numpy(), b_grads["c0"][:, 0], "gradient of c0", rtol=1e-12)
    for name, value in unbatched_param_grads.items():
        assert_close(value, b_grads[name], f"gradient of {name}", rtol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_without_hx(kind):
    """Unbatched input is (T, I) whatever batch_first says, as in PyTorch."""
    rng = np.random.default_rng(4)
    layer = make_layer(kind, "tanh", 2, 3, rng, num_layers=2, batch_first=True)
    x = rng.standard_normal((4, 2))
    out, state = layer(Tensor(x))
    b_out, b_state = layer(Tensor(x[None]))
    b_out = b_out.transpose(0, 1)
    assert_close(out.numpy(), b_out.numpy()[:, 0], "output", rtol=1e-12)
    for s, b_s in zip(state if kind == "lstm" else (state,), b_state if kind == "lstm" else (b_state,)):
        assert s.shape == (2, 3)
        assert_close(s.numpy(), b_s.numpy()[:, 0], "final state", rtol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_lengths_as_list_array_or_tensor_agree(kind):
    rng = np.random.default_rng(5)
    layer = make_layer(kind, "tanh", 2, 3, rng, bidirectional=True)
    x = Tensor(rng.standard_normal((4, 3, 2)))
    results = [layer(x, lengths=lengths) for lengths in
               ([2, 4, 1], np.array([2, 4, 1]), Tensor(np.array([2, 4, 1])), (2.0, 4.0, 1.0))]
    for out, state in results[1:]:
        np.testing.assert_array_equal(out.numpy(), results[0][0].numpy())
        for s, first in zip(state if kind == "lstm" else (state,),
                            results[0][1] if kind == "lstm" else (results[0][1],)):
            np.testing.assert_array_equal(s.numpy(), first.numpy())


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_full_lengths_equal_no_lengths(kind):
    """lengths all equal to T is the same computation as lengths=None."""
    rng = np.random.default_rng(6)
    layer = make_layer(kind, "tanh", 2, 3, rng, num_layers=2, bidirectional=True)
    x = rng.standard_normal((4, 3, 2))
    grad_output, grad_h = rng.standard_normal((4, 3, 6)), rng.standard_normal((4, 3, 3))
    grad_c = grad_h if kind == "lstm" else None
    full = run_layer(layer, kind, x, None, None, [4, 4, 4], grad_output, grad_h, grad_c)
    none = run_layer(layer, kind, x, None, None, None, grad_output, grad_h, grad_c)
    for a, b in zip(full[:3], none[:3]):
        if a is not None:
            assert_close(a, b, "outputs", rtol=1e-12)
    for name in none[3]:
        assert_close(full[3][name], none[3][name], f"gradient of {name}", rtol=1e-12)


def test_layers_on_every_device_match_cpu(device):
    """Moving a layer (and the input) to a device gives the CPU's outputs and gradients."""
    rng = np.random.default_rng(8)
    for kind in ("rnn", "lstm", "gru"):
        layer = make_layer(kind, "tanh", 2, 3, rng, num_layers=2, bidirectional=True)
        x, go = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 6))
        lengths = [2, 4, 1]
        want = run_layer(layer, kind, x, lengths=lengths, grad_output=go)
        layer.to(device).zero_grad()
        x_t = Tensor(x, device=device, requires_grad=True)
        out, _ = layer(x_t, lengths=Tensor(np.array(lengths), device=device))
        (out * Tensor(go, device=device)).sum().backward()
        assert out.device.split(":")[0] == device
        assert_close(out.numpy(), want[0], "output", rtol=1e-12)
        assert_close(x_t.grad.numpy(), want[3]["x"], "gradient of x", rtol=1e-12)
        for name, p in layer.named_parameters():
            assert p.grad.device == p.device
            assert_close(p.grad.numpy(), want[3][name], f"gradient of {name}", rtol=1e-12)


# ---- input validation: each error says what was expected ---------------------------------

def zeros64(*shape):
    return Tensor(np.zeros(shape))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_input_shape_errors(kind):
    name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    layer = make_layer(kind, "tanh", 3, 4, np.random.default_rng(0))
    for bad in ((2, 2, 2, 3), (3,), (5, 2, 4)):
        with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(T, B, input_size\) "
                                             rf"\(or unbatched \(T, input_size\)\) with input_size=3, "
                                             rf"got {re.escape(str(bad))}"):
            layer(zeros64(*bad))
    layer.batch_first = True
    with pytest.raises(ValueError, match=r"\(B, T, input_size\)"):
        layer(zeros64(2, 5, 2))
    with pytest.raises(TypeError, match=f"{name}: input must be a Tensor, got ndarray"):
        layer(np.zeros((5, 2, 3)))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dtype_mismatch_errors(kind):
    layer = make_layer(kind, "tanh", 3, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="input is float32 on cpu but the parameters are float64 on cpu"):
        layer(Tensor(np.zeros((5, 2, 3), np.float32)))
    h = Tensor(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"initial state must have shape \(1, 2, 4\), dtype float64 on cpu; "
                                         r"got \(1, 2, 4\) float32 on cpu"):
        layer(zeros64(5, 2, 3), (h, h) if kind == "lstm" else h)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_initial_state_errors(kind):
    layer = make_layer(kind, "tanh", 3, 4, np.random.default_rng(0), num_layers=2, bidirectional=True)
    pair = (lambda h: (h, h)) if kind == "lstm" else (lambda h: h)
    x = zeros64(5, 2, 3)
    for bad in ((2, 2, 4), (4, 3, 4), (4, 2, 5), (4, 4)):
        with pytest.raises(ValueError, match=rf"initial state must have shape \(4, 2, 4\), dtype float64 on cpu; "
                                             rf"got {re.escape(str(bad))}"):
            layer(x, pair(zeros64(*bad)))
    with pytest.raises(ValueError, match=r"initial state must have shape \(4, 4\)"):  # unbatched input
        layer(zeros64(5, 3), pair(zeros64(4, 2, 4)))
    with pytest.raises(ValueError, match="got ndarray"):
        layer(x, pair(np.zeros((4, 2, 4))))
    expected = r"\(h_0, c_0\)" if kind == "lstm" else "h_0"
    with pytest.raises(ValueError, match=f"hx must be {expected}"):
        layer(x, (zeros64(4, 2, 4),) * (1 if kind == "lstm" else 2))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_lengths_errors(kind):
    name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    layer = make_layer(kind, "tanh", 3, 4, np.random.default_rng(0), batch_first=True)
    x = zeros64(3, 5, 3)  # B=3, T=5
    with pytest.raises(ValueError, match=rf"{name}: lengths must hold one length per sequence \(3\), got shape \(2,\)"):
        layer(x, lengths=[1, 2])
    with pytest.raises(ValueError, match=r"one length per sequence \(3\), got shape \(3, 1\)"):
        layer(x, lengths=np.array([[1], [2], [3]]))
    with pytest.raises(ValueError, match=r"lengths must be between 1 and the sequence length 5, got \[0, 2, 3\]"):
        layer(x, lengths=[0, 2, 3])
    with pytest.raises(ValueError, match=r"between 1 and the sequence length 5, got \[6, 2, 3\]"):
        layer(x, lengths=[6, 2, 3])
    with pytest.raises(TypeError, match=r"lengths must be integers, got \[2.5, 2.0, 3.0\]"):
        layer(x, lengths=[2.5, 2, 3])
    with pytest.raises(TypeError, match="lengths must be integers"):
        layer(x, lengths=np.array([True, True, False]))


def test_constructor_errors():
    with pytest.raises(ValueError, match="must be positive, got 3, 4, 0"):
        nn.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="must be positive, got 3, 0, 1"):
        nn.GRU(3, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\], got 1.5"):
        nn.RNN(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")


# ---- gradcheck, float32, long sequences ------------------------------------------------

@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_layer_gradcheck(kind, nonlinearity):
    """Finite differences through a whole stacked bidirectional layer with lengths."""
    rng = np.random.default_rng(9)
    layer = make_layer(kind, nonlinearity, 2, 2, rng, num_layers=2, bidirectional=True)
    x, h0, c0 = leaf(rng.standard_normal((3, 2, 2))), leaf(rng.standard_normal((4, 2, 2))), \
        leaf(rng.standard_normal((4, 2, 2)))
    lstm = kind == "lstm"

    def fn(x, h0, c0, *_):
        out, state = layer(x, (h0, c0) if lstm else h0, lengths=[3, 2])
        return (out, *state) if lstm else (out, state)
    gradcheck(fn, [x, h0, c0 if lstm else const(c0.numpy()), *layer.parameters()])


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_float32_layer_follows_the_float64_tape(kind, nonlinearity):
    rng = np.random.default_rng(10)
    layer = make_layer(kind, nonlinearity, 3, 4, rng, num_layers=2, bidirectional=True)
    x, go = rng.standard_normal((5, 3, 3)), rng.standard_normal((5, 3, 8))
    want = run_layer(layer, kind, x, lengths=[5, 2, 3], grad_output=go)
    layer.float().zero_grad()
    assert all(p.dtype == np.float32 for p in layer.parameters())
    x32 = Tensor(x.astype(np.float32), requires_grad=True)
    out, _ = layer(x32, lengths=[5, 2, 3])
    assert out.dtype == np.float32
    (out * Tensor(go.astype(np.float32))).sum().backward()
    assert x32.grad.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x32.grad.numpy(), want[3]["x"], rtol=1e-4, atol=1e-4)
    for name, p in layer.named_parameters():
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad.numpy(), want[3][name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_long_sequence_matches_oracle():
    """1,500 steps: the tape walk is iterative and BPTT still agrees with the oracle."""
    rng = np.random.default_rng(11)
    layer = make_layer("lstm", "tanh", 1, 2, rng)
    x, go = rng.standard_normal((1500, 1, 1)), rng.standard_normal((1500, 1, 2))
    out, h_n, c_n, grads = run_layer(layer, "lstm", x, grad_output=go)
    want = layer_forward_backward("lstm", x, layer.state_dict(), grad_output=go)
    assert_close(out, want[0], "output")
    assert_close(h_n, want[1], "h_n")
    assert_close(c_n, want[2], "c_n")
    for name, value in grads.items():
        assert_close(value, want[3][name], f"gradient of {name}")
