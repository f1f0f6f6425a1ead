"""The cell zoo (tinygrad_seq/nn/cell_zoo.py) against its papers' equations written out in NumPy.

Each cell and wrapper, run by nn.Recurrent (captured), gives the outputs and final state of a NumPy
loop over its paper's equations (float64, 1e-12), its gradients agree with finite differences
(gradcheck, float64), and the captured loop equals the eager one to 1e-12. The random wrappers
are checked with the masks they drew (`masks(x)` draws them in the order prepare_sequence does),
for the rates they promise, and as their expectation (or the bare cell) in eval mode.
"""
import contextlib

import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import capture, nn
from tinygrad_seq.autograd.gradcheck import gradcheck
from tinygrad_seq.nn import LayerNormLSTMCell, PeepholeLSTMCell, VariationalDropout, Zoneout
from recurrent_helpers import assert_close, randomize

T, B, I, H = 5, 3, 2, 4


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def layer_norm(z, gain, shift, eps=1e-5):
    centered = z - z.mean(axis=-1, keepdims=True)
    return gain * centered / np.sqrt((centered ** 2).mean(axis=-1, keepdims=True) + eps) + shift


def lstm_gates(p, x_t, h):
    z = x_t @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    return np.split(z, 4, axis=1)  # i, f, g, o


# ---- each paper's step, in NumPy: (x_t, (h, c), parameters, masks of this step) -> (h, c) ------------

def layernorm_lstm_step(x_t, state, p, _):
    """Ba et al. 2016: (f, i, o, g) = LN(W_h h) + LN(W_x x) + b; c = s(f) c + s(i) tanh(g); h = s(o) tanh(LN(c))."""
    h, c = state
    z = (layer_norm(h @ p["weight_hh"].T, p["layernorm_hh.weight"], p["layernorm_hh.bias"])
         + layer_norm(x_t @ p["weight_ih"].T, p["layernorm_ih.weight"], p["layernorm_ih.bias"])
         + p["bias_ih"] + p["bias_hh"])
    i, f, g, o = np.split(z, 4, axis=1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(layer_norm(c, p["layernorm_c.weight"], p["layernorm_c.bias"])), c


def peephole_lstm_step(x_t, state, p, _):
    """Gers et al. 2002: i, f see c_{t-1}; o sees c_t."""
    h, c_prev = state
    i, f, g, o = lstm_gates(p, x_t, h)
    c = sigmoid(f + p["peephole_f"] * c_prev) * c_prev + sigmoid(i + p["peephole_i"] * c_prev) * np.tanh(g)
    return sigmoid(o + p["peephole_o"] * c) * np.tanh(c), c


def variational_lstm_step(x_t, state, p, masks):
    """Gal & Ghahramani 2016: the LSTM on x_t m_x and h_{t-1} m_h, the same masks at every step."""
    m_x, m_h = masks
    h, c = state
    i, f, g, o = lstm_gates(p, x_t * m_x, h * m_h)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def zoneout_lstm_step(x_t, state, p, d):
    """Krueger et al. 2016: c_t = d^c c_{t-1} + (1 - d^c)(f c_{t-1} + i g);
    h_t = d^h h_{t-1} + (1 - d^h)(o tanh(f c_{t-1} + i g))."""
    d_h, d_c = d
    h, c = state
    i, f, g, o = lstm_gates(p, x_t, h)
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_new = sigmoid(o) * np.tanh(c_new)
    return d_h * h + (1 - d_h) * h_new, d_c * c + (1 - d_c) * c_new


def zoneout_gru_step(x_t, h, p, d):
    """Zoneout of a GRU's h (PyTorch's GRU equations)."""
    x_r, x_z, x_n = np.split(x_t @ p["weight_ih"].T + p["bias_ih"], 3, axis=1)
    h_r, h_z, h_n = np.split(h @ p["weight_hh"].T + p["bias_hh"], 3, axis=1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return d * h + (1 - d) * ((1 - z) * n + z * h)


def oracle(step, x, state, params, masks_at):
    """Run `step` over x (T, B, I) from `state`: (outputs (T, B, H), final state)."""
    outputs = []
    for t, x_t in enumerate(x):
        state = step(x_t, state, params, masks_at(t))
        outputs.append(state[0] if isinstance(state, tuple) else state)
    return np.stack(outputs), state


# ---- the cells and wrappers under test ----------------------------------------------------------------

def make(name, device="cpu", hidden=H, seed=1):
    """(cell, its NumPy step): a float64 cell with U(-1, 1) weights (LayerNorm gains included)."""
    cells = {"layernorm": lambda: LayerNormLSTMCell(I, hidden), "peephole": lambda: PeepholeLSTMCell(I, hidden),
             "variational": lambda: VariationalDropout(nn.LSTMCell(I, hidden), dropout=0.3, recurrent_dropout=0.4),
             "zoneout_lstm": lambda: Zoneout(nn.LSTMCell(I, hidden), (0.3, 0.6)),
             "zoneout_gru": lambda: Zoneout(nn.GRUCell(I, hidden), 0.4)}
    cell = randomize(cells[name]().double(), np.random.default_rng(seed)).to(device)
    return cell, {"layernorm": layernorm_lstm_step, "peephole": peephole_lstm_step, "variational":
                  variational_lstm_step, "zoneout_lstm": zoneout_lstm_step, "zoneout_gru": zoneout_gru_step}[name]


NAMES = ["layernorm", "peephole", "variational", "zoneout_lstm", "zoneout_gru"]


def inputs(cell, steps=T, batch=B, seed=2):
    """x (steps, batch, I) and an initial state, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    shape = (batch, cell.hidden_size)
    x = rng.standard_normal((steps, batch, I))
    state = tuple(rng.standard_normal(shape) for _ in range(2)) if isinstance(cell.initial_state(1), tuple) \
        else rng.standard_normal(shape)
    return x, state


def tensors(state, device="cpu", requires_grad=False):
    if isinstance(state, tuple):
        return tuple(tensors(s, device, requires_grad) for s in state)
    return tg.Tensor(state, device=device, requires_grad=requires_grad)


def flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def drawn_masks(cell, x, seed):
    """masks_at(t) for the NumPy step: what the wrapper draws after manual_seed(seed)."""
    tg.manual_seed(seed)
    if isinstance(cell, VariationalDropout):
        m_x, m_h = cell.masks(x)
        return lambda t: (m_x.numpy()[0], m_h.numpy())
    if isinstance(cell, Zoneout):
        d = cell.masks(x).numpy()
        return lambda t: tuple(np.split(d[t], len(cell.p), axis=1)) if len(cell.p) > 1 else d[t]
    return lambda t: None


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_the_papers_equations(name):
    cell, step = make(name)
    x, state = inputs(cell)
    masks_at = drawn_masks(cell, tg.Tensor(x), seed=3)
    tg.manual_seed(3)
    out, final = nn.Recurrent(cell)(tg.Tensor(x), tensors(state))
    params = (cell.cell if isinstance(cell, nn.CellWrapper) else cell).state_dict()
    want_out, want_final = oracle(step, x, state, params, masks_at)
    assert_close(out.numpy(), want_out, "output", rtol=1e-12)
    for got, want in zip(flat(final), flat(want_final)):
        assert_close(got.numpy(), want, "final state", rtol=1e-12)


@pytest.mark.parametrize("name", ["variational", "zoneout_lstm", "zoneout_gru"])
def test_eval_mode_is_the_cell_or_the_expectation(name):
    cell, step = make(name)
    cell.eval()
    x, state = inputs(cell)
    out, _ = nn.Recurrent(cell)(tg.Tensor(x), tensors(state))
    if isinstance(cell, VariationalDropout):  # no masks: the bare cell
        want, _ = nn.Recurrent(cell.cell)(tg.Tensor(x), tensors(state))
        want = want.numpy()
    else:  # d replaced by its expectation p
        p = cell.p
        want, _ = oracle(step, x, state, cell.cell.state_dict(),
                         lambda t: tuple(np.full((B, H), r) for r in p) if len(p) > 1 else p[0])
    assert_close(out.numpy(), want, "eval output", rtol=1e-12)


def test_masks_have_the_promised_rates_and_shapes():
    x = tg.zeros(50, 400, 5, dtype="float64")
    variational = VariationalDropout(nn.LSTMCell(5, 6).double(), dropout=0.3, recurrent_dropout=0.6)
    m_x, m_h = variational.masks(x)
    assert m_x.shape == (1, 400, 5) and m_h.shape == (400, 6)  # one mask per sequence: no time axis
    for m, p in ((m_x, 0.3), (m_h, 0.6)):
        values = m.numpy()
        assert set(np.unique(values)) == {0.0, 1 / (1 - p)}
        assert abs((values == 0).mean() - p) < 0.03
    zoneout = Zoneout(nn.LSTMCell(5, 6).double(), (0.1, 0.7))
    d = zoneout.masks(x).numpy()
    assert d.shape == (50, 400, 12) and set(np.unique(d)) == {0.0, 1.0}
    assert abs(d[..., :6].mean() - 0.1) < 0.01 and abs(d[..., 6:].mean() - 0.7) < 0.01  # h, then c
    assert Zoneout(nn.LSTMCell(5, 6).double(), (0.0, 0.5)).masks(x).shape == (50, 400, 6)  # p = 0: no mask
    variational.eval()
    assert variational.masks(x) == (None, None)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    cell, _ = make(name, hidden=2)
    x, state = inputs(cell, steps=3, batch=2)
    x, state = tg.Tensor(x, requires_grad=True), tensors(state, requires_grad=True)
    layer = nn.Recurrent(cell)

    def run(x, *state_and_parameters):  # gradcheck moves these tensors' values in place
        tg.manual_seed(4)  # the same masks at every evaluation
        out, final = layer(x, state)
        return [out] + flat(final)
    assert gradcheck(run, [x] + flat(state) + list(cell.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_captured_equals_eager(name, device):
    layer = nn.Recurrent(make(name, device)[0], reverse_cell=make(name, device, seed=2)[0])
    x = np.random.default_rng(5).standard_normal((7, 3, I))
    results = []
    for eager in (False, True):
        layer.zero_grad()
        xt = tg.Tensor(x, device=device, requires_grad=True)
        before = capture.counters.copy()
        tg.manual_seed(6)
        with capture.disabled() if eager else contextlib.nullcontext():
            out, _ = layer(xt, lengths=[7, 4, 6])
        assert (capture.counters - before)["captured"] == (0 if eager else 2)
        (out * tg.Tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape), device=device)).sum().backward()
        results.append([out.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
    for captured, eager in zip(*results):
        assert_close(captured, eager, name, rtol=1e-12)


def test_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="GRUCell reads h_{t-1} outside its recurrent weights"):
        VariationalDropout(nn.GRUCell(2, 3), recurrent_dropout=0.2)
    VariationalDropout(nn.GRUCell(2, 3), dropout=0.2)  # input dropout alone is fine for a GRU
    with pytest.raises(ValueError, match=r"recurrent_dropout must be in \[0, 1\)"):
        VariationalDropout(nn.LSTMCell(2, 3), recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"one per state item \(2\)"):
        Zoneout(nn.LSTMCell(2, 3), (0.1, 0.2, 0.3))


def test_one_step_forward_is_the_runner_step():
    cell, _ = make("zoneout_lstm")
    x, state = inputs(cell)
    tg.manual_seed(7)
    h, c = cell(tg.Tensor(x[0]), tensors(state))
    tg.manual_seed(7)
    out, (h_n, c_n) = nn.Recurrent(cell)(tg.Tensor(x[:1]), tensors(state))
    assert_close(h.numpy(), h_n.numpy(), "h", rtol=0)
    assert_close(c.numpy(), c_n.numpy(), "c", rtol=0)
