"""Higher-order gradients through recurrent cells and layers, and the Jacobian diagnostics.

* gradgradcheck (second derivatives vs finite differences of the tape's gradient, float64)
  for the RNN, LSTM and GRU cells and layers: lengths, bidirectional, stacked;
* Hessian-vector products through an LSTM == central differences of its gradient;
  jvp == a finite-difference directional derivative; jacobian/hessian against hand-written
  or finite-difference references;
* state_jacobians == diag(1 - h'^2) W_hh for the tanh RNN, and == finite differences of one
  step for the LSTM (state (h, c)) and the GRU; Lyapunov exponents of a linear RNN ==
  log|eigenvalues|; a gradient penalty (WGAN-GP style) trains and its gradient is right;
* optionally, second derivatives == PyTorch's double backward (skipped without torch).
"""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import Tensor, nn
from tinygrad_seq import functional as F
from tinygrad_seq.autograd.functional import hessian, hvp, jacobian, jvp, vjp
from tinygrad_seq.diagnostics import jacobian_product_singular_values, lyapunov_exponents, state_jacobians
from tinygrad_seq.autograd.gradcheck import gradcheck, gradgradcheck

F64 = np.float64


def t64(values, requires_grad=True):
    return Tensor(np.asarray(values, dtype=F64), requires_grad=requires_grad)


def seeded(seed):
    tg.manual_seed(seed)
    return np.random.default_rng(seed)


# ---- second derivatives of cells and layers --------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_gradgradcheck(kind):
    rng = seeded(1)
    cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](2, 3, dtype=F64)
    x, h = t64(rng.normal(size=(2, 2))), t64(rng.normal(size=(2, 3)) * 0.5)
    inputs = [x, h, cell.weight_hh]
    if kind == "lstm":
        c = t64(rng.normal(size=(2, 3)) * 0.5)
        inputs.insert(2, c)
        fn = lambda x, h, c, w: cell(x, (h, c))  # noqa: E731  (both state items are outputs)
    else:
        fn = lambda x, h, w: cell(x, h)  # noqa: E731
    assert gradgradcheck(fn, inputs)


LAYER_CONFIGS = [  # kind, num_layers, bidirectional, lengths (T = len(lengths) or 3)
    ("rnn", 1, False, None),
    ("lstm", 1, False, [3, 2, 1]),
    ("gru", 1, True, None),
    ("lstm", 2, True, [2, 1]),
    ("gru", 2, False, [1, 2]),
]


@pytest.mark.parametrize("kind, layers, bidirectional, lengths", LAYER_CONFIGS)
def test_layers_gradgradcheck(kind, layers, bidirectional, lengths):
    rng = seeded(2)
    layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](2, 2, num_layers=layers,
                                                                  bidirectional=bidirectional, dtype=F64)
    T, B = (3, 2) if lengths is None else (max(lengths), len(lengths))
    x = t64(rng.normal(size=(T, B, 2)))
    # the input and one recurrent weight (the last layer's, reached through every layer below)
    w = getattr(layer, f"weight_hh_l{layers - 1}")

    def fn(x, w):
        out, final = layer(x, lengths=lengths)
        return out, (final[1] if kind == "lstm" else final)  # the cell state too, for the LSTM
    assert gradgradcheck(fn, [x, w])


# ---- Hessian-vector products, jvp, jacobian, hessian -------------------------------------------

def _lstm_loss(layer, head, x, y):
    out, _ = layer(x)
    return F.cross_entropy(head(out[-1]), y)


def test_hvp_through_an_lstm_equals_central_differences_of_its_gradient():
    rng = seeded(3)
    layer, head = nn.LSTM(3, 4, dtype=F64), nn.Linear(4, 3, dtype=F64)
    x, y = t64(rng.normal(size=(5, 2, 3)), False), Tensor(np.array([0, 2]))
    params = tuple(layer.parameters()) + tuple(head.parameters())
    v = tuple(t64(rng.normal(size=p.shape), False) for p in params)

    _, hv = hvp(lambda *ps: _functional_loss(layer, head, x, y, ps), params, v)
    eps = 1e-5

    def gradient_at(sign):
        shifted = tuple(Tensor(p.numpy() + sign * eps * d.numpy(), requires_grad=True) for p, d in zip(params, v))
        return tg.grad(_functional_loss(layer, head, x, y, shifted), shifted)

    plus, minus = gradient_at(1), gradient_at(-1)
    for k, (a, gp, gm) in enumerate(zip(hv, plus, minus)):
        np.testing.assert_allclose(a.numpy(), (gp.numpy() - gm.numpy()) / (2 * eps), rtol=1e-5, atol=1e-8,
                                   err_msg=f"parameter {k}")


def _functional_loss(layer, head, x, y, ps):
    """The loss of layer+head with the parameters replaced by the tensors ps (in parameters() order)."""
    n = len(list(layer.parameters()))
    w_ih, w_hh, b_ih, b_hh = ps[:n]
    cell = nn.LSTMCell.sharing(w_ih, w_hh, b_ih, b_hh)
    out, _ = nn.Recurrent(cell)(x)
    return F.cross_entropy(F.linear(out[-1], ps[n], ps[n + 1]), y)


def test_jvp_equals_a_directional_finite_difference():
    rng = seeded(4)
    cell = nn.GRUCell(3, 4, dtype=F64)
    x, h = t64(rng.normal(size=(2, 3))), t64(rng.normal(size=(2, 4)))
    u = (t64(rng.normal(size=(2, 3)), False), t64(rng.normal(size=(2, 4)), False))
    out, jv = jvp(lambda a, b: cell(a, b), (x, h), u)
    eps = 1e-6
    with tg.no_grad():
        plus = cell(x + eps * u[0], h + eps * u[1]).numpy()
        minus = cell(x - eps * u[0], h - eps * u[1]).numpy()
    np.testing.assert_allclose(jv.numpy(), (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out.numpy(), cell(x, h).numpy())
    assert not jv.requires_grad and not out.requires_grad


def test_vjp_matches_grad_and_strict_flags_unused_inputs():
    x, z = t64([0.5, -1.0]), t64([2.0])
    v = t64([1.0, 3.0], False)
    out, (gx, gz) = vjp(lambda a, b: a.tanh() * 2, (x, z), v)
    np.testing.assert_allclose(gx.numpy(), 2 * (1 - np.tanh(x.numpy()) ** 2) * v.numpy())
    assert gz.numpy().tolist() == [0.0]
    with pytest.raises(RuntimeError, match="independent of input 1"):
        vjp(lambda a, b: a.tanh() * 2, (x, z), v, strict=True)
    assert x.grad is None


def test_jacobian_of_a_tanh_rnn_step_is_diag_one_minus_h_squared_times_w_hh():
    rng = seeded(5)
    cell = nn.RNNCell(3, 4, dtype=F64)
    x, h = t64(rng.normal(size=(1, 3)), False), t64(rng.normal(size=(1, 4)))
    J = jacobian(lambda s: cell(x, s), h)  # (1, 4, 1, 4)
    h_new = cell(x, h).numpy()[0]
    expected = np.diag(1 - h_new ** 2) @ cell.weight_hh.numpy()
    np.testing.assert_allclose(J.numpy()[0, :, 0, :], expected, rtol=1e-12, atol=1e-14)


def test_hessian_of_a_small_function_and_create_graph():
    x = t64([0.3, -0.4])
    H = hessian(lambda a: (a[0] ** 2 * a[1].exp()), x)
    a, b = x.numpy()
    np.testing.assert_allclose(H.numpy(), [[2 * np.exp(b), 2 * a * np.exp(b)], [2 * a * np.exp(b), a * a * np.exp(b)]])
    _, hv = hvp(lambda a: (a ** 3).sum(), x, t64([1.0, 1.0], False), create_graph=True)
    assert hv.requires_grad
    (third,) = tg.grad(hv.sum(), x)
    np.testing.assert_allclose(third.numpy(), [6.0, 6.0])


# ---- state Jacobians and the Lyapunov spectrum -----------------------------------------------

def test_state_jacobians_of_the_tanh_rnn_are_diag_times_w_hh():
    rng = seeded(6)
    rnn = nn.RNN(3, 4, dtype=F64)
    x = t64(rng.normal(size=(5, 2, 3)), False)
    J = state_jacobians(rnn, x).numpy()
    assert J.shape == (5, 2, 4, 4)
    h = rnn(x)[0].numpy()
    W = rnn.weight_hh_l0.numpy()
    for t in range(5):
        for b in range(2):
            np.testing.assert_allclose(J[t, b], np.diag(1 - h[t, b] ** 2) @ W, rtol=1e-12, atol=1e-14)


def _finite_difference_step_jacobian(cell, x_t, state, eps=1e-6):
    """Column i: (step(s + eps e_i) - step(s - eps e_i)) / 2 eps, for one row; state flattened (h[, c])."""
    flat = np.concatenate([s.numpy()[0] for s in state]) if isinstance(state, tuple) else state.numpy()[0]
    S = flat.size

    def step(f):
        pieces = np.split(f, len(state)) if isinstance(state, tuple) else [f]
        s = tuple(t64(p[None], False) for p in pieces)
        with tg.no_grad():
            new = cell(x_t, s if isinstance(state, tuple) else s[0])
        return np.concatenate([n.numpy()[0] for n in new]) if isinstance(new, tuple) else new.numpy()[0]
    columns = []
    for i in range(S):
        e = np.zeros(S)
        e[i] = eps
        columns.append((step(flat + e) - step(flat - e)) / (2 * eps))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_jacobians_of_gated_cells_match_finite_differences_column_by_column(kind):
    rng = seeded(7)
    cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](3, 3, dtype=F64)
    x = t64(rng.normal(size=(4, 2, 3)), False)
    J = state_jacobians(cell, x).numpy()
    S = 6 if kind == "lstm" else 3
    assert J.shape == (4, 2, S, S)
    with tg.no_grad():
        state = cell.initial_state(2)
        for t in range(4):
            for b in (0, 1):
                row = tuple(s[b:b + 1] for s in state) if isinstance(state, tuple) else state[b:b + 1]
                expected = _finite_difference_step_jacobian(cell, x[t, b:b + 1], row)
                np.testing.assert_allclose(J[t, b], expected, rtol=1e-6, atol=1e-8, err_msg=f"t={t}, b={b}")
            state = cell(x[t], state)


def test_state_jacobians_of_a_stacked_bidirectional_layer_use_that_layers_input():
    rng = seeded(8)
    lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=F64)
    x = t64(rng.normal(size=(4, 2, 2)), False)
    J = state_jacobians(lstm, x, layer=1, direction=1)
    cell = lstm.cells()[1][1]
    below = lstm.run_cells([lstm.cells()[0]], x)[0]  # layer 0's output is layer 1's input
    np.testing.assert_allclose(J.numpy(), state_jacobians(cell, below.flip(0)).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="layer 2 out of range"):
        state_jacobians(lstm, x, layer=2)


class LinearCell(nn.Module):
    """h' = h W^T + x U^T: a linear RNN, whose Jacobian is W at every step."""

    def __init__(self, W, U):
        self.W, self.U = nn.Parameter(Tensor(W)), nn.Parameter(Tensor(U))

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, self.W.shape[0], dtype=F64)

    def forward(self, x, h):
        return h @ self.W.T + x @ self.U.T


def test_lyapunov_exponents_of_a_linear_rnn_are_log_abs_eigenvalues():
    rng = seeded(9)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    eigenvalues = np.array([1.3, -0.9, 0.5, -0.2])
    W = Q @ np.diag(eigenvalues) @ Q.T  # symmetric, distinct moduli
    cell = LinearCell(W, rng.normal(size=(4, 2)))
    J = state_jacobians(cell, t64(rng.normal(size=(60, 3, 2)), False))
    np.testing.assert_allclose(J.numpy()[7, 1], W, rtol=1e-12, atol=1e-14)
    expected = np.sort(np.log(np.abs(eigenvalues)))[::-1]
    exponents = lyapunov_exponents(J, warmup=20)  # once Q is aligned with the eigenvectors, each step gives them
    assert exponents.shape == (3, 4)
    np.testing.assert_allclose(exponents, np.broadcast_to(expected, (3, 4)), atol=5e-3)
    np.testing.assert_allclose(lyapunov_exponents(J, k=2, warmup=20), exponents[:, :2], rtol=1e-12)
    # without discarding the transient the mean carries an O(1/T) bias from the initial alignment
    np.testing.assert_allclose(lyapunov_exponents(J), np.broadcast_to(expected, (3, 4)), atol=0.1)
    # the products' singular values: dS_{T-1}/dS_{T-1-n} = W^n, whose largest singular value is 1.3^n
    sv = jacobian_product_singular_values(J)
    np.testing.assert_allclose(sv[[0, 4, 9], 0, 0], 1.3 ** np.array([1, 5, 10]), rtol=1e-9)


def test_a_tanh_rnn_with_tiny_weights_has_a_negative_leading_exponent():
    rng = seeded(10)
    rnn = nn.RNN(2, 5)
    with tg.no_grad():
        for p in rnn.parameters():
            p.array[...] *= 0.1
    J = state_jacobians(rnn, tg.Tensor(rng.normal(size=(30, 2, 2)).astype(np.float32)))
    exponents = lyapunov_exponents(J)
    assert (exponents[:, 0] < 0).all()
    W = rnn.weight_hh_l0.numpy().astype(F64)
    assert (exponents[:, 0] <= np.log(np.linalg.norm(W, 2)) + 1e-6).all()  # |tanh'| <= 1


# ---- a gradient penalty (WGAN-GP style) -------------------------------------------------------

def test_gradient_penalty_on_d_loss_d_input_trains_and_its_gradient_is_right():
    """penalty = (||d loss/d x|| - 1)^2 through an RNN critic: its gradient needs second derivatives."""
    rng = seeded(11)
    rnn, head = nn.RNN(2, 3, dtype=F64), nn.Linear(3, 1, dtype=F64)
    x = t64(rng.normal(size=(4, 2, 2)), False)

    def penalty(*params_and_x):
        x_ = params_and_x[-1]  # the parameters are read from the modules (gradcheck moves their .data)
        with tg.enable_grad():  # gradcheck evaluates finite differences under no_grad
            out, _ = rnn(x_)
            score = head(out[-1]).sum()
            (gx,) = tg.grad(score, x_, create_graph=True)
        return (((gx * gx).sum() + 1e-12).sqrt() - 1) ** 2

    params = list(rnn.parameters()) + list(head.parameters())
    probe = x.detach().requires_grad_()
    assert gradcheck(lambda w, b, probe: penalty(w, b, probe), [rnn.weight_hh_l0, head.bias, probe])
    opt = tg.optim.SGD(params, lr=0.05)
    history = []
    for _ in range(30):
        probe = x.detach().requires_grad_()
        loss = penalty(probe)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.1 * history[0]


# ---- optional: PyTorch's double backward ------------------------------------------------------

def test_lstm_second_derivatives_match_torch_double_backward():
    torch = pytest.importorskip("torch")
    rng = seeded(12)
    layer = nn.LSTM(3, 4, dtype=F64)
    ref = torch.nn.LSTM(3, 4).double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            getattr(ref, name).copy_(torch.from_numpy(p.numpy()))
    x_np = rng.normal(size=(5, 2, 3))
    v_np = [rng.normal(size=p.shape) for p in layer.parameters()]

    x = t64(x_np)
    out, (h, c) = layer(x)
    loss = (out ** 2).sum() + (c.tanh()).sum()
    grads = tg.grad(loss, [x] + list(layer.parameters()), create_graph=True)
    dot = sum((g * t64(v, False)).sum() for g, v in zip(grads[1:], v_np))
    second = tg.grad(dot, [x] + list(layer.parameters()))

    xt = torch.tensor(x_np, requires_grad=True)
    out_t, (h_t, c_t) = ref(xt)
    loss_t = (out_t ** 2).sum() + c_t.tanh().sum()
    grads_t = torch.autograd.grad(loss_t, [xt] + list(ref.parameters()), create_graph=True)
    dot_t = sum((g * torch.from_numpy(v)).sum() for g, v in zip(grads_t[1:], v_np))
    second_t = torch.autograd.grad(dot_t, [xt] + list(ref.parameters()))
    for k, (a, b) in enumerate(zip(second, second_t)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-11, err_msg=f"input {k}")


# ---- on every device (the fake CuPy-like device everywhere, CUDA where there is one) ------------

def test_second_derivatives_on_a_device_match_the_cpu(device):
    """An LSTM's Hessian-vector product and a state Jacobian computed on `device` == on the CPU."""
    rng = seeded(13)
    x_np, v_np = rng.normal(size=(4, 2, 3)), rng.normal(size=(16, 4))

    def products(dev):
        tg.manual_seed(13)
        layer = nn.LSTM(3, 4, dtype=F64).to(dev)
        x = Tensor(x_np, device=dev, requires_grad=True)
        out, (h, c) = layer(x)
        loss = (out.tanh() ** 2).sum() + c.sum()
        gx, gw = tg.grad(loss, [x, layer.weight_hh_l0], create_graph=True)
        (hv,) = tg.grad((gw * Tensor(v_np, device=dev)).sum() + gx.sum(), layer.weight_hh_l0)
        J = state_jacobians(layer, x.detach())
        assert hv.device == x.device and J.device == x.device
        return hv.numpy(), J.numpy()

    for a, b in zip(products(device), products("cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
