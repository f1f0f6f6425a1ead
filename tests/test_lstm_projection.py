"""nn.LSTM(..., proj_size=P): PyTorch's LSTM with a projected hidden state, h = (o tanh(c)) W_hr^T.

Against the hand-written NumPy BPTT oracle (tests/bptt_oracle.py, extended with the projection),
finite differences in float64, the eager loop (the captured loop must capture it), and PyTorch's
parameter names, shapes, initialisation and errors.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt_oracle import cell_forward_backward, layer_forward_backward
from recurrent_helpers import assert_close, leaf, randomize, run_layer
from test_capture import assert_same, counted, run
from tinygrad_seq import Tensor, nn
from tinygrad_seq.autograd.gradcheck import gradcheck
from tinygrad_seq.nn.cells import ProjectedLSTMCell


def projected_lstm(I, H, P, rng, **options):
    return randomize(nn.LSTM(I, H, proj_size=P, **options).double(), rng)


@st.composite
def configs(draw):
    T, B, H = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(2, 5))
    return dict(T=T, B=B, I=draw(st.integers(1, 3)), H=H, P=draw(st.integers(1, H - 1)),
                num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
                batch_first=draw(st.booleans()), with_hx=draw(st.booleans()),
                lengths=draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B)))


@settings(deadline=None)
@given(config=configs(), seed=st.integers(0, 2**32 - 1))
def test_projected_lstm_matches_the_oracle(config, seed):
    c, rng = config, np.random.default_rng(seed)
    L, D, H, P = c["num_layers"], 2 if c["bidirectional"] else 1, c["H"], c["P"]
    layer = projected_lstm(c["I"], H, P, rng, num_layers=L, bidirectional=c["bidirectional"], bias=c["bias"],
                           batch_first=c["batch_first"])
    x = rng.standard_normal((c["T"], c["B"], c["I"]))
    h0 = rng.standard_normal((L * D, c["B"], P)) if c["with_hx"] else None
    c0 = rng.standard_normal((L * D, c["B"], H)) if c["with_hx"] else None
    go, gh, gc = (rng.standard_normal(s) for s in ((c["T"], c["B"], D * P), (L * D, c["B"], P), (L * D, c["B"], H)))
    got = run_layer(layer, "lstm", x, h0, c0, c["lengths"], go, gh, gc)
    params = {name: p.numpy() for name, p in layer.named_parameters()}
    want = layer_forward_backward("lstm", x, params, h0=h0, c0=c0, lengths=c["lengths"], num_layers=L,
                                  bidirectional=c["bidirectional"], grad_output=go, grad_h_n=gh, grad_c_n=gc)
    for what, a, b in zip(("output", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(a, b, what)
    assert set(got[3]) == set(params) | {"x"} | ({"h0", "c0"} if c["with_hx"] else set())
    for name, value in got[3].items():
        assert_close(value, want[3][name], f"gradient of {name}")


def test_projected_lstm_gradcheck():
    rng = np.random.default_rng(1)
    layer = projected_lstm(2, 3, 2, rng, num_layers=2, bidirectional=True)
    x, h0, c0 = leaf(rng.standard_normal((4, 2, 2))), leaf(rng.standard_normal((4, 2, 2))), \
        leaf(rng.standard_normal((4, 2, 3)))

    def fn(x, h0, c0, *_):
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=[4, 2])
        return out, h_n, c_n
    weights = [p for name, p in layer.named_parameters() if name.startswith(("weight_hr", "weight_hh_l1"))]
    gradcheck(fn, [x, h0, c0, *weights])  # the projections, and the (4H, P) recurrent weights they feed


def test_projected_cell_step_matches_the_oracle():
    """The cell's one-step forward (PyTorch's cell API, also what diagnostics call) against the oracle's step."""
    rng = np.random.default_rng(2)
    cell = randomize(ProjectedLSTMCell(3, 5, 2).double(), rng)
    x, h, c = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((4, 2))), leaf(rng.standard_normal((4, 5)))
    gh, gc = rng.standard_normal((4, 2)), rng.standard_normal((4, 5))
    h_new, c_new = cell(x, (h, c))
    ((h_new * Tensor(gh)).sum() + (c_new * Tensor(gc)).sum()).backward()
    params = {name: p.numpy() for name, p in cell.named_parameters()}
    want_h, want_c, want = cell_forward_backward("lstm", x.numpy(), h.numpy(), c.numpy(), params, gh, gc)
    assert_close(h_new.numpy(), want_h, "h'")
    assert_close(c_new.numpy(), want_c, "c'")
    for name, t in [("x", x), ("h", h), ("c", c)] + list(cell.named_parameters()):
        assert_close(t.grad.numpy(), want[name], f"gradient of {name}")
    with pytest.raises(ValueError, match=r"expected state of shape \(4, 2\)"):
        cell(x, (c, c))


def test_projected_lstm_is_captured_and_equals_eager():
    rng = np.random.default_rng(3)
    layer = projected_lstm(3, 4, 2, rng, num_layers=2, bidirectional=True)
    x, state = rng.standard_normal((6, 3, 3)), [rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 4))]
    with counted() as seen:
        captured = run(layer, x, state, lengths=[6, 2, 4])
    assert seen["captured"] == 4 and not [k for k in seen if k.startswith("fallback")]
    assert_same(captured, run(layer, x, state, lengths=[6, 2, 4], eager=True))


def test_parameters_are_pytorchs():
    """Names in PyTorch's _flat_weights_names order, shapes, U(-1/sqrt(H), 1/sqrt(H)) init, output shapes."""
    I, H, P, L = 3, 16, 4, 2
    layer = nn.LSTM(I, H, num_layers=L, bidirectional=True, proj_size=P)
    expected = []
    for k in range(L):
        for suffix in ("", "_reverse"):
            width = I if k == 0 else 2 * P
            expected += [(f"weight_ih_l{k}{suffix}", (4 * H, width)), (f"weight_hh_l{k}{suffix}", (4 * H, P)),
                         (f"bias_ih_l{k}{suffix}", (4 * H,)), (f"bias_hh_l{k}{suffix}", (4 * H,)),
                         (f"weight_hr_l{k}{suffix}", (P, H))]
    assert [(n, p.shape) for n, p in layer.named_parameters()] == expected
    for name, p in layer.named_parameters():
        values = p.numpy()
        assert np.abs(values).max() <= 1 / math.sqrt(H) and values.std() > 0.25 / math.sqrt(H), name
    out, (h_n, c_n) = layer(Tensor(np.ones((5, 2, I), dtype=np.float32)))
    assert (out.shape, h_n.shape, c_n.shape) == ((5, 2, 2 * P), (2 * L, 2, P), (2 * L, 2, H))
    assert repr(layer).startswith(f"LSTM({I}, {H}, proj_size={P}, num_layers={L}")
    assert nn.LSTM(I, H).proj_size == 0 and "proj_size" not in repr(nn.LSTM(I, H))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.LSTM(3, 4, proj_size=-1), "proj_size should be a positive integer or zero"),
    (lambda: nn.LSTM(3, 4, proj_size=4), "proj_size has to be smaller than hidden_size"),
    (lambda: nn.GRU(3, 4, proj_size=2), "only supported for LSTM"),
    (lambda: nn.RNN(3, 4, proj_size=2), "only supported for LSTM"),
])
def test_bad_proj_size_is_refused_as_pytorch_does(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_initial_states_of_the_wrong_width_are_refused():
    layer = nn.LSTM(3, 4, proj_size=2)
    x = Tensor(np.zeros((5, 2, 3), dtype=np.float32))
    h, c = Tensor(np.zeros((1, 2, 2), dtype=np.float32)), Tensor(np.zeros((1, 2, 4), dtype=np.float32))
    assert layer(x, (h, c))[0].shape == (5, 2, 2)
    with pytest.raises(ValueError, match=r"initial state must have shape \(1, 2, 2\)"):
        layer(x, (c, c))
    with pytest.raises(ValueError, match=r"initial state must have shape \(1, 2, 4\)"):
        layer(x, (h, h))
