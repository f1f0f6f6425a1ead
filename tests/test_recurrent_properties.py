"""Properties of the recurrent runner and layers that hold whatever the weights:
bidirectional decomposition, padding invariance, truncated BPTT, the vanishing-gradient
bound, parameter counts, custom cells through nn.Recurrent, the hoisted step path, dropout.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bptt_oracle import layer_forward_backward
from recurrent_helpers import (CELLS, GATES, LAYERS, VARIANTS, assert_close, const, detach, layer_configs, leaf,
                               lengths_strategy, make_layer, run_layer, weighted_loss)
from tinygrad_seq import manual_seed, nn, stack, zeros
from tinygrad_seq.autograd.gradcheck import gradcheck

seeds = st.integers(0, 2**32 - 1)
variants = st.sampled_from(VARIANTS)


def reverse_within(a, lengths):
    """a (T, B, ...) with each column b's first lengths[b] steps reversed; the rest kept."""
    T = a.shape[0]
    out = a.copy()
    for b, n in enumerate([T] * a.shape[1] if lengths is None else lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


# ---- (1) bidirectional == forward run ++ re-reversed forward run on reversed input ------

@given(variant=variants, T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 5),
       bias=st.booleans(), data=st.data(), seed=seeds)
def test_bidirectional_is_forward_plus_reversed_forward(variant, T, B, I, H, bias, data, seed):
    kind, nonlinearity = variant
    lengths = data.draw(lengths_strategy(T, B), label="lengths")
    rng = np.random.default_rng(seed)
    lstm = kind == "lstm"
    bi = make_layer(kind, nonlinearity, I, H, rng, bidirectional=True, bias=bias)
    params = bi.state_dict()
    # unidirectional layers holding copies of each direction's weights
    forward = make_layer(kind, nonlinearity, I, H, rng, bias=bias)
    forward.load_state_dict({n: v for n, v in params.items() if not n.endswith("_reverse")})
    backward = make_layer(kind, nonlinearity, I, H, rng, bias=bias)
    backward.load_state_dict({n[:-len("_reverse")]: v for n, v in params.items() if n.endswith("_reverse")})

    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    go, gh, gc = rng.standard_normal((T, B, 2 * H)), rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    cell_state = (lambda a: a) if lstm else (lambda a: None)  # c0 and grad_c_n exist only for the LSTM
    out, h_n, c_n, grads = run_layer(bi, kind, x, h0, cell_state(c0), lengths, go, gh, cell_state(gc))
    f_out, f_h, f_c, f_grads = run_layer(forward, kind, x, h0[:1], cell_state(c0[:1]), lengths, go[:, :, :H],
                                         gh[:1], cell_state(gc[:1]))
    r_out, r_h, r_c, r_grads = run_layer(backward, kind, reverse_within(x, lengths), h0[1:], cell_state(c0[1:]),
                                         lengths, reverse_within(go[:, :, H:], lengths), gh[1:], cell_state(gc[1:]))

    assert_close(out, np.concatenate([f_out, reverse_within(r_out, lengths)], axis=2), "output", rtol=1e-10)
    assert_close(h_n, np.concatenate([f_h, r_h]), "h_n", rtol=1e-10)
    if lstm:
        assert_close(c_n, np.concatenate([f_c, r_c]), "c_n", rtol=1e-10)
    assert_close(grads["x"], f_grads["x"] + reverse_within(r_grads["x"], lengths), "gradient of x", rtol=1e-10)
    assert_close(grads["h0"], np.concatenate([f_grads["h0"], r_grads["h0"]]), "gradient of h0", rtol=1e-10)
    if lstm:
        assert_close(grads["c0"], np.concatenate([f_grads["c0"], r_grads["c0"]]), "gradient of c0", rtol=1e-10)
    for name in params:
        part = r_grads[name.replace("_reverse", "")] if name.endswith("_reverse") else f_grads[name]
        assert_close(grads[name], part, f"gradient of {name}", rtol=1e-10)


# ---- (2) padding invariance -----------------------------------------------------------

JUNK_SCALES = [1.0, 1e3, 1e100, np.inf, np.nan]  # inf/nan: padding holds inf, -inf or NaN


@given(config=layer_configs(), extra=st.integers(1, 3), junk_scale=st.sampled_from(JUNK_SCALES),
       with_hx=st.booleans(), data=st.data(), seed=seeds)
def test_padding_changes_nothing(config, extra, junk_scale, with_hx, data, seed):
    """Padding to a longer T with arbitrary values (even inf or NaN) changes no valid output, no
    final state and no gradient; padded outputs are zero and padded inputs get exactly zero gradient."""
    T, B = config["T"], config["B"]
    lengths = config["lengths"] or data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    kind, H = config["kind"], config["H"]
    D = 2 if config["bidirectional"] else 1
    rng = np.random.default_rng(seed)
    layer = make_layer(kind, config["nonlinearity"], config["I"], H, rng, num_layers=config["num_layers"],
                       bidirectional=config["bidirectional"], bias=config["bias"], batch_first=config["batch_first"])
    state_shape = (config["num_layers"] * D, B, H)
    lstm = kind == "lstm"
    x = rng.standard_normal((T, B, config["I"]))
    h0 = rng.standard_normal(state_shape) if with_hx else None
    c0 = rng.standard_normal(state_shape) if with_hx and lstm else None
    go = rng.standard_normal((T, B, D * H))
    gh, gc = rng.standard_normal(state_shape), rng.standard_normal(state_shape) if lstm else None
    base = run_layer(layer, kind, x, h0, c0, lengths, go, gh, gc)

    T2 = T + extra
    junk = rng.standard_normal((T2, B, config["I"]))
    padded_x = junk * junk_scale if np.isfinite(junk_scale) else np.where(junk > 0, junk_scale, -junk_scale)
    for b, n in enumerate(lengths):
        padded_x[:n, b] = x[:n, b]
    padded_go = np.concatenate([go, rng.standard_normal((extra, B, D * H))])
    out, h_n, c_n, grads = run_layer(layer, kind, padded_x, h0, c0, lengths, padded_go, gh, gc)

    assert not out[T:].any()
    for b, n in enumerate(lengths):
        assert not out[n:, b].any(), "outputs past a sequence's end must be zero"
        assert not grads["x"][n:, b].any(), "padded inputs must get exactly zero gradient"
    assert_close(out[:T], base[0], "valid outputs", rtol=1e-10)
    assert_close(h_n, base[1], "h_n", rtol=1e-10)
    if lstm:
        assert_close(c_n, base[2], "c_n", rtol=1e-10)
    for name, value in base[3].items():
        assert np.all(np.isfinite(grads[name])), name
        assert_close(grads[name][:T] if name == "x" else grads[name], value, f"gradient of {name}", rtol=1e-10)


# ---- (3) truncated BPTT -----------------------------------------------------------------

def truncated_run(layer, kind, x, go, chunks):
    """Backward after each chunk, carrying the state across chunks with .detach()."""
    layer.zero_grad()
    state, start = None, 0
    for size in chunks:
        out, state = layer(const(x[start:start + size]), state)
        (out * const(go[start:start + size])).sum().backward()
        state = detach(state)
        start += size
    return {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}


def separate_graphs(layer, kind, x, go, chunks):
    """Each chunk's loss in its own graph from a constant state rebuilt from NumPy values."""
    total, state, start = {}, None, 0
    for size in chunks:
        layer.zero_grad()
        out, new_state = layer(const(x[start:start + size]), state)
        (out * const(go[start:start + size])).sum().backward()
        for name, p in layer.named_parameters():
            total[name] = total.get(name, 0) + p.grad.numpy()
        state = tuple(const(s.numpy()) for s in new_state) if kind == "lstm" else const(new_state.numpy())
        start += size
    return total


def oracle_chunks(layer, kind, nonlinearity, x, go, chunks):
    """The same truncated gradient from the NumPy oracle, chunk by chunk (h0 = carried state)."""
    params = layer.state_dict()
    total, h0, c0, start = {}, None, None, 0
    for size in chunks:
        _, h0, c0, grads = layer_forward_backward(
            kind, x[start:start + size], params, h0=h0, c0=c0, num_layers=layer.num_layers,
            nonlinearity=nonlinearity, grad_output=go[start:start + size])
        for name in params:
            total[name] = total.get(name, 0) + grads[name]
        start += size
    return total


def full_bptt(layer, kind, x, go):
    return run_layer(layer, kind, x, grad_output=go)[3]


@given(variant=variants, chunks=st.lists(st.integers(1, 3), min_size=2, max_size=3), B=st.integers(1, 3),
       I=st.integers(1, 3), H=st.integers(1, 4), num_layers=st.integers(1, 2), seed=seeds)
def test_truncated_bptt_is_the_gradient_of_the_truncated_graph(variant, chunks, B, I, H, num_layers, seed):
    kind, nonlinearity = variant
    rng = np.random.default_rng(seed)
    layer = make_layer(kind, nonlinearity, I, H, rng, num_layers=num_layers)
    T = sum(chunks)
    x, go = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    truncated = truncated_run(layer, kind, x, go, chunks)
    separate = separate_graphs(layer, kind, x, go, chunks)
    oracle = oracle_chunks(layer, kind, nonlinearity, x, go, chunks)
    for name in truncated:
        assert_close(truncated[name], separate[name], f"gradient of {name} (separate graphs)", rtol=1e-10)
        assert_close(truncated[name], oracle[name], f"gradient of {name} (oracle, per chunk)")


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
def test_truncated_bptt_differs_from_full_bptt(kind, nonlinearity):
    """The detach matters: without it the gradient is full BPTT's, which is different."""
    rng = np.random.default_rng(11)
    layer = make_layer(kind, nonlinearity, 3, 4, rng, num_layers=2)
    x, go = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 4))
    truncated = truncated_run(layer, kind, x, go, [3, 3])
    full = full_bptt(layer, kind, x, go)
    params = layer.state_dict()
    want_full = layer_forward_backward(kind, x, params, num_layers=2, nonlinearity=nonlinearity, grad_output=go)[3]
    assert_close(full["weight_hh_l0"], want_full["weight_hh_l0"], "full BPTT gradient")
    assert np.abs(truncated["weight_hh_l0"] - full["weight_hh_l0"]).max() > 1e-3
    # one chunk is no truncation at all
    assert_close(truncated_run(layer, kind, x, go, [6])["weight_hh_l0"], full["weight_hh_l0"], "one chunk",
                 rtol=1e-10)


# ---- (4) vanishing gradients: ||dh_T/dh_k|| <= (max|tanh'| ||W_hh||)^(T-k) ----------------

@given(steps=st.integers(1, 6), I=st.integers(1, 3), H=st.integers(1, 5), scale=st.floats(0.1, 2.0),
       seed=seeds)
def test_tanh_rnn_jacobian_norm_bound(steps, I, H, scale, seed):
    rng = np.random.default_rng(seed)
    layer = make_layer("rnn", "tanh", I, H, rng, scale=scale)
    h_k = leaf(rng.standard_normal((1, 1, H)))
    out, h_n = layer(const(rng.standard_normal((steps, 1, I))), h_k)
    h_T = h_n[0, 0]
    jacobian = np.zeros((H, H))
    for i in range(H):  # row i of dh_T/dh_k: backpropagate the unit vector e_i
        h_k.grad = None
        h_T.backward(np.eye(H)[i], retain_graph=True)
        jacobian[i] = h_k.grad.numpy()[0, 0]

    trajectory = out.numpy()[:, 0]  # h_{k+1} .. h_T
    w_hh = layer.weight_hh_l0.numpy()
    # the same Jacobian from the chain rule: prod_t diag(1 - h_t^2) W_hh, latest step first
    chain = np.eye(H)
    for h_t in trajectory:
        chain = np.diag(1 - h_t**2) @ w_hh @ chain
    assert_close(jacobian, chain, "dh_T/dh_k", rtol=1e-10)

    gamma = (1 - trajectory**2).max()  # max |tanh'| over the steps taken
    bound = (gamma * np.linalg.norm(w_hh, 2)) ** steps
    assert np.linalg.norm(jacobian, 2) <= bound * (1 + 1e-10)
    assert bound <= np.linalg.norm(w_hh, 2) ** steps * (1 + 1e-12)  # gamma <= 1: the looser bound holds too


# ---- (5) parameter counts --------------------------------------------------------------

@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), I=st.integers(1, 7), H=st.integers(1, 7),
       num_layers=st.integers(1, 3), bidirectional=st.booleans(), bias=st.booleans())
def test_parameter_count_formula(kind, I, H, num_layers, bidirectional, bias):
    G, D = GATES[kind], 2 if bidirectional else 1
    layer = LAYERS[kind](I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    expected = 0
    for k in range(num_layers):
        n_in = I if k == 0 else D * H
        expected += D * G * (n_in * H + H * H + (2 * H if bias else 0))
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert len(list(layer.parameters())) == num_layers * D * (4 if bias else 2)
    cell = CELLS[kind](I, H, bias=bias)
    assert sum(p.numel() for p in cell.parameters()) == G * (I * H + H * H + (2 * H if bias else 0))


# ---- (6) a custom cell through nn.Recurrent --------------------------------------------

class PeepholeLSTMCell(nn.Module):
    """LSTM whose input and forget gates see c_{t-1} and whose output gate sees c_t."""

    def __init__(self, input_size, hidden_size, rng):
        self.hidden_size = hidden_size
        H = hidden_size
        self.weight_ih = nn.Parameter(rng.uniform(-1, 1, (4 * H, input_size)))
        self.weight_hh = nn.Parameter(rng.uniform(-1, 1, (4 * H, H)))
        self.bias = nn.Parameter(rng.uniform(-1, 1, (4 * H,)))
        self.peep_i = nn.Parameter(rng.uniform(-1, 1, (H,)))
        self.peep_f = nn.Parameter(rng.uniform(-1, 1, (H,)))
        self.peep_o = nn.Parameter(rng.uniform(-1, 1, (H,)))

    def initial_state(self, batch_size):
        return (zeros(batch_size, self.hidden_size, dtype="float64"),
                zeros(batch_size, self.hidden_size, dtype="float64"))

    def forward(self, x_t, state):
        h, c = state
        i, f, g, o = (x_t @ self.weight_ih.T + h @ self.weight_hh.T + self.bias).chunk(4, -1)
        i = (i + self.peep_i * c).sigmoid()
        f = (f + self.peep_f * c).sigmoid()
        c = f * c + i * g.tanh()
        h = (o + self.peep_o * c).sigmoid() * c.tanh()
        return h, c


def peephole_recurrent(I, H, num_layers, bidirectional, batch_first, rng):
    D = 2 if bidirectional else 1
    cells = [PeepholeLSTMCell(I if k == 0 else D * H, H, rng) for k in range(num_layers)]
    reverse = [PeepholeLSTMCell(I if k == 0 else D * H, H, rng) for k in range(num_layers)] if bidirectional else None
    if num_layers == 1:  # the single-cell forms: cell, reverse_cell
        return nn.Recurrent(cells[0], reverse[0] if reverse else None, batch_first=batch_first)
    return nn.Recurrent(cells, reverse, batch_first=batch_first)


def flat_states(final, stacked, bidirectional):
    """Every Tensor of a Recurrent final state, in order."""
    layers = final if stacked else [final]
    out = []
    for layer in layers:
        for direction in (layer if bidirectional else (layer,)):
            out.extend(direction)
    return out


CUSTOM_FORMS = [  # (num_layers, bidirectional)
    (1, False), (1, True), (2, False), (2, True)]


@pytest.mark.parametrize("num_layers, bidirectional", CUSTOM_FORMS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_custom_cell_shapes(num_layers, bidirectional, batch_first):
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 3, 2, 4
    D = 2 if bidirectional else 1
    rec = peephole_recurrent(I, H, num_layers, bidirectional, batch_first, rng)
    x = const(rng.standard_normal((B, T, I) if batch_first else (T, B, I)))
    out, final = rec(x, lengths=[5, 2, 4])
    assert out.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    stacked = num_layers > 1
    if stacked:
        assert isinstance(final, list) and len(final) == num_layers
    layers = final if stacked else [final]
    for layer in layers:
        directions = layer if bidirectional else (layer,)
        assert len(directions) == D
        for h, c in directions:
            assert h.shape == (B, H) and c.shape == (B, H)
    o = out.numpy()
    o = o.transpose(1, 0, 2) if batch_first else o
    assert not o[2:, 1].any() and not o[4:, 2].any(), "outputs past a sequence's end are zero"
    # the last layer's final forward h is the output at each sequence's last valid step
    last_forward_h = (layers[-1][0] if bidirectional else layers[-1])[0].numpy()
    np.testing.assert_array_equal(last_forward_h, o[[4, 1, 3], [0, 1, 2], :H])
    if bidirectional:  # the reverse direction ends at t = 0
        np.testing.assert_array_equal(layers[-1][1][0].numpy(), o[0, :, H:])


@pytest.mark.parametrize("num_layers, bidirectional", CUSTOM_FORMS)
def test_custom_cell_batch_with_lengths_equals_each_sequence_alone(num_layers, bidirectional):
    rng = np.random.default_rng(1)
    T, B, I, H = 5, 3, 2, 3
    lengths = [3, 5, 1]
    rec = peephole_recurrent(I, H, num_layers, bidirectional, False, rng)
    x = rng.standard_normal((T, B, I))
    out, final = rec(const(x), lengths=lengths)
    states = flat_states(final, num_layers > 1, bidirectional)
    for b, n in enumerate(lengths):
        alone, alone_final = rec(const(x[:n, b:b + 1]))
        assert_close(out.numpy()[:n, b:b + 1], alone.numpy(), f"outputs of sequence {b}", rtol=1e-12)
        for s, s_alone in zip(states, flat_states(alone_final, num_layers > 1, bidirectional)):
            assert_close(s.numpy()[b:b + 1], s_alone.numpy(), f"final state of sequence {b}", rtol=1e-12)


@pytest.mark.parametrize("num_layers, bidirectional, batch_first, lengths", [
    (1, False, False, None), (1, True, True, [3, 1]), (2, True, False, [2, 3]), (2, False, True, [1, 3])])
def test_custom_cell_gradcheck(num_layers, bidirectional, batch_first, lengths):
    rng = np.random.default_rng(2)
    T, B, I, H = 3, 2, 2, 2
    rec = peephole_recurrent(I, H, num_layers, bidirectional, batch_first, rng)
    x = leaf(rng.standard_normal((B, T, I) if batch_first else (T, B, I)))
    params = list(rec.parameters())
    assert len(params) == 6 * num_layers * (2 if bidirectional else 1)

    def fn(x, *_):
        out, final = rec(x, lengths=lengths)
        return (out, *flat_states(final, num_layers > 1, bidirectional))
    gradcheck(fn, [x, *params])


class OuterProductMemory(nn.Module):
    """A cell whose state has ranks 2, 3 and 1: h (B, H), a memory M (B, H, H) += h h^T and a
    step counter n (B,): the runner must mask each along its batch axis."""

    def __init__(self, input_size, hidden_size, rng):
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(rng.uniform(-1, 1, (input_size, hidden_size)))
        self.weight_hh = nn.Parameter(rng.uniform(-1, 1, (hidden_size, hidden_size)))

    def initial_state(self, batch_size):
        H = self.hidden_size
        return (zeros(batch_size, H, dtype="float64"), zeros(batch_size, H, H, dtype="float64"),
                zeros(batch_size, dtype="float64"))

    def forward(self, x_t, state):
        h, memory, count = state
        h = (x_t @ self.weight_ih + h @ self.weight_hh + (memory @ h.unsqueeze(2)).squeeze(2) * 0.1).tanh()
        return h, memory + h.unsqueeze(2) * h.unsqueeze(1), count + 1


@pytest.mark.parametrize("B, H", [(3, 3), (2, 4)])  # B == H once: a mask on the wrong axis would broadcast
def test_custom_cell_states_of_any_rank_with_lengths(B, H):
    rng = np.random.default_rng(12)
    T, I = 4, 2
    lengths = [4, 1, 3][:B]
    rec = nn.Recurrent(OuterProductMemory(I, H, rng), OuterProductMemory(I, H, rng))
    x = rng.standard_normal((T, B, I))
    out, (forward_state, reverse_state) = rec(const(x), lengths=lengths)
    np.testing.assert_array_equal(forward_state[2].numpy(), lengths)
    np.testing.assert_array_equal(reverse_state[2].numpy(), lengths)
    for b, n in enumerate(lengths):
        alone, alone_final = rec(const(x[:n, b:b + 1]))
        assert_close(out.numpy()[:n, b:b + 1], alone.numpy(), f"outputs of sequence {b}", rtol=1e-12)
        for s, s_alone in zip((*forward_state, *reverse_state), (*alone_final[0], *alone_final[1])):
            assert_close(s.numpy()[b:b + 1], s_alone.numpy(), f"final state of sequence {b}", rtol=1e-12)
    x_t = leaf(x)
    gradcheck(lambda x, *_: (lambda o, f: (o, *f[0], *f[1]))(*rec(x, lengths=lengths)), [x_t, *rec.parameters()])


@pytest.mark.parametrize("num_layers, bidirectional", CUSTOM_FORMS)
def test_custom_cell_initial_state_is_used_and_differentiated(num_layers, bidirectional):
    """A given state (in the shape final_state has) is where each direction of each layer starts."""
    rng = np.random.default_rng(3)
    D = 2 if bidirectional else 1
    rec = peephole_recurrent(2, 2, num_layers, bidirectional, False, rng)
    x = leaf(rng.standard_normal((3, 2, 2)))
    leaves = [leaf(rng.standard_normal((2, 2))) for _ in range(2 * D * num_layers)]

    def nest(flat):
        pairs = [tuple(flat[2 * i:2 * i + 2]) for i in range(D * num_layers)]
        layers = [tuple(pairs[D * k:D * k + D]) if bidirectional else pairs[k] for k in range(num_layers)]
        return layers if num_layers > 1 else layers[0]
    out, final = rec(x, nest(leaves))
    default_out, _ = rec(x)
    assert np.abs(out.numpy() - default_out.numpy()).max() > 1e-6
    assert [s.shape for s in flat_states(final, num_layers > 1, bidirectional)] == [(2, 2)] * len(leaves)
    gradcheck(lambda x, *s: rec(x, nest(s), lengths=[3, 1])[0], [x, *leaves])


def test_recurrent_checks_its_arguments():
    rng = np.random.default_rng(4)
    cells = [PeepholeLSTMCell(2, 2, rng), PeepholeLSTMCell(2, 2, rng)]
    with pytest.raises(ValueError, match="2 cells but 1 reverse cells"):
        nn.Recurrent(cells, [PeepholeLSTMCell(2, 2, rng)])
    rec = nn.Recurrent(cells[0])
    with pytest.raises(ValueError, match=r"Recurrent: expected input of shape \(T, B, ...\)"):
        rec(const(np.zeros(3)))
    with pytest.raises(ValueError, match=r"one length per sequence \(2\)"):
        rec(const(np.zeros((3, 2, 2))), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="between 1 and the sequence length 3"):
        rec(const(np.zeros((3, 2, 2))), lengths=[4, 1])


# ---- (7) the hoisted prepare_sequence path == the plain step path == the layer ----------

class PlainStep(nn.Module):
    """A built-in cell behind a wrapper without prepare_sequence: the runner calls it step by step."""

    def __init__(self, cell):
        self.cell = cell

    def forward(self, x_t, state):
        return self.cell(x_t, state)

    def initial_state(self, batch_size):
        return self.cell.initial_state(batch_size)


def cells_of(layer, kind, nonlinearity, bias):
    """Built-in cells holding copies of each layer/direction's weights: ([forward], [reverse])."""
    params = layer.state_dict()
    D = 2 if layer.bidirectional else 1
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    found = ([], [])
    for k in range(layer.num_layers):
        for d, suffix in enumerate(("", "_reverse")[:D]):
            cell = CELLS[kind](layer.input_size if k == 0 else D * layer.hidden_size, layer.hidden_size, bias=bias,
                               **extra).double()
            cell.load_state_dict({n: params[f"{n}_l{k}{suffix}"] for n in ("weight_ih", "weight_hh", "bias_ih",
                                                                           "bias_hh")[:4 if bias else 2]})
            found[d].append(cell)
    return found


@pytest.mark.parametrize("kind, nonlinearity", VARIANTS)
@pytest.mark.parametrize("bias", [True, False])
def test_recurrent_over_builtin_cells_equals_layer(kind, nonlinearity, bias):
    rng = np.random.default_rng(5)
    T, B, I, H, L = 4, 3, 2, 3, 2
    lengths = [2, 4, 3]
    lstm = kind == "lstm"
    layer = make_layer(kind, nonlinearity, I, H, rng, num_layers=L, bidirectional=True, bias=bias,
                       batch_first=True)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((2 * L, B, H)), rng.standard_normal((2 * L, B, H))
    go = rng.standard_normal((T, B, 2 * H))
    gh, gc = rng.standard_normal((2 * L, B, H)), rng.standard_normal((2 * L, B, H))
    want = run_layer(layer, kind, x, h0, c0 if lstm else None, lengths, go, gh, gc if lstm else None)

    forward_cells, reverse_cells = cells_of(layer, kind, nonlinearity, bias)
    for wrap in (lambda c: c, PlainStep):
        assert hasattr(forward_cells[0], "prepare_sequence") and not hasattr(PlainStep, "prepare_sequence")
        rec = nn.Recurrent([wrap(c) for c in forward_cells], [wrap(c) for c in reverse_cells], batch_first=True)
        for p in rec.parameters():
            p.grad = None
        x_t, h0_t, c0_t = leaf(x.transpose(1, 0, 2)), leaf(h0), leaf(c0)
        hs, cs = h0_t.unbind(0), c0_t.unbind(0)
        state = [tuple(((hs[2 * k + d], cs[2 * k + d]) if lstm else hs[2 * k + d]) for d in range(2))
                 for k in range(L)]
        out, final = rec(x_t, state, lengths=lengths)
        flat = [s for layer_state in final for s in layer_state]
        h_n = stack([s[0] for s in flat]) if lstm else stack(flat)
        outs = [out.transpose(0, 1), h_n] + ([stack([s[1] for s in flat])] if lstm else [])
        weighted_loss(outs, [go, gh] + ([gc] if lstm else [])).backward()
        for what, got, expected in zip(("output", "h_n", "c_n"), outs, want[:3]):
            assert_close(got.numpy(), expected, what, rtol=1e-12)
        assert_close(x_t.grad.numpy().transpose(1, 0, 2), want[3]["x"], "gradient of x", rtol=1e-12)
        assert_close(h0_t.grad.numpy(), want[3]["h0"], "gradient of h0", rtol=1e-12)
        if lstm:
            assert_close(c0_t.grad.numpy(), want[3]["c0"], "gradient of c0", rtol=1e-12)
        for k in range(L):
            for d, suffix in enumerate(("", "_reverse")):
                cell = (forward_cells, reverse_cells)[d][k]
                for name, p in cell.named_parameters():
                    assert_close(p.grad.numpy(), want[3][f"{name}_l{k}{suffix}"], f"gradient of {name}_l{k}{suffix}",
                                 rtol=1e-12)


# ---- (8) dropout between layers ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_between_layers(kind):
    rng = np.random.default_rng(6)
    layer = make_layer(kind, "tanh", 3, 4, rng, num_layers=3, dropout=0.5)
    plain = LAYERS[kind](3, 4, num_layers=3).double()
    plain.load_state_dict(layer.state_dict())
    x = const(rng.standard_normal((5, 2, 3)))

    def output(module, seed=None):
        if seed is not None:
            manual_seed(seed)
        return module(x)[0].numpy()

    reference = output(plain)  # dropout=0 in training mode: no randomness at all
    np.testing.assert_array_equal(output(plain, 1), reference)
    layer.eval()
    np.testing.assert_array_equal(output(layer, 1), reference)
    np.testing.assert_array_equal(output(layer, 2), reference)
    layer.train()
    first, again, other = output(layer, 1), output(layer, 1), output(layer, 2)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - reference).max() > 1e-6, "training mode must drop something"
    assert np.abs(first - other).max() > 1e-6, "a different seed must drop differently"


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_needs_a_next_layer(kind):
    """Dropout acts on the outputs of every layer except the last, so one layer never drops."""
    rng = np.random.default_rng(7)
    layer = make_layer(kind, "tanh", 3, 4, rng, num_layers=1, dropout=0.9)
    plain = LAYERS[kind](3, 4).double()
    plain.load_state_dict(layer.state_dict())
    x = const(rng.standard_normal((5, 2, 3)))
    manual_seed(0)
    np.testing.assert_array_equal(layer.train()(x)[0].numpy(), plain(x)[0].numpy())


def test_dropout_train_gradient_matches_its_mask():
    """In training mode the gradient flows through the same dropped units as the forward pass:
    rerunning with the same seed in a closed form (gradcheck) agrees."""
    rng = np.random.default_rng(8)
    layer = make_layer("gru", "tanh", 2, 2, rng, num_layers=2, dropout=0.5)
    x = leaf(rng.standard_normal((3, 2, 2)))

    def fn(x, *_):
        manual_seed(0)
        return layer(x)[0]
    gradcheck(fn, [x, *layer.parameters()])
