"""Attention (tinygrad_seq/nn/attention.py) against NumPy written from the papers' equations.

The three scores, masked softmax and context against a NumPy oracle; gradcheck in float64;
padded positions get exactly zero weight and their contents (even inf or NaN) change nothing;
AttentionDecoderCell over one decoding sequence against a NumPy forward of its equations, with
gradcheck, captured == eager (outputs and every gradient, the memory's included) and padding
invariance; and the errors.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_seq as tg
from tinygrad_seq import capture, nn
from tinygrad_seq.autograd.gradcheck import gradcheck
from tinygrad_seq.nn.attention import masked_softmax, sequence_mask
from recurrent_helpers import assert_close, randomize

SCORES = ["additive", "dot", "scaled_dot", "bilinear"]


def make_attention(kind, Q, K, H=3):
    return {"additive": lambda: nn.AdditiveAttention(Q, K, H), "dot": lambda: nn.DotProductAttention(),
            "scaled_dot": lambda: nn.DotProductAttention(scaled=True),
            "bilinear": lambda: nn.BilinearAttention(Q, K)}[kind]().double()


def np_scores(kind, attention, q, keys):
    """q (B, Q), keys (B, S, K) -> scores (B, S), as the papers write them."""
    p = {name: value.numpy() for name, value in attention.named_parameters()}
    if kind == "additive":  # v^T tanh(W_q q + W_k k + b)
        hidden = np.tanh((q @ p["query_proj.weight"].T)[:, None, :] + keys @ p["key_proj.weight"].T + p["key_proj.bias"])
        return hidden @ p["v"]
    if kind == "bilinear":  # q^T W k
        return np.einsum("bq,qk,bsk->bs", q, p["key_proj.weight"], keys)
    scale = 1 / np.sqrt(keys.shape[2]) if kind == "scaled_dot" else 1.0
    return np.einsum("bq,bsq->bs", q, keys) * scale


def np_attend(scores, values, mask):
    """Softmax over the real positions (zero weight elsewhere), and the weighted sum of the values."""
    e = np.where(mask, np.exp(scores - np.where(mask, scores, -np.inf).max(axis=1, keepdims=True)), 0.0)
    weights = e / e.sum(axis=1, keepdims=True)
    return np.einsum("bs,bsd->bd", weights, values), weights


def draw_lengths(rng, B, S):
    lengths = rng.integers(1, S + 1, size=B)
    lengths[0] = S
    return lengths


@settings(max_examples=12)
@given(kind=st.sampled_from(SCORES), B=st.integers(1, 3), S=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_attention_matches_numpy(kind, B, S, seed):
    rng = np.random.default_rng(seed)
    Q = 4
    K = Q if "dot" in kind else 3
    tg.manual_seed(seed)
    attention = randomize(make_attention(kind, Q, K), rng)
    q, keys, values = rng.standard_normal((B, Q)), rng.standard_normal((B, S, K)), rng.standard_normal((B, S, 2))
    mask = np.arange(S)[None, :] < draw_lengths(rng, B, S)[:, None]
    context, weights = attention(tg.Tensor(q), tg.Tensor(keys), tg.Tensor(values), mask=tg.Tensor(mask))
    expected_context, expected_weights = np_attend(np_scores(kind, attention, q, keys), values, mask)
    assert_close(weights.numpy(), expected_weights, "weights", rtol=1e-12)
    assert_close(context.numpy(), expected_context, "context", rtol=1e-12)
    assert (weights.numpy()[~mask] == 0).all()
    # several queries at once (B, T, Q) give each query's own attention
    queries = rng.standard_normal((B, 2, Q))
    contexts, all_weights = attention(tg.Tensor(queries), tg.Tensor(keys), tg.Tensor(values), mask=tg.Tensor(mask))
    for t in range(2):
        c, w = np_attend(np_scores(kind, attention, queries[:, t], keys), values, mask)
        assert_close(all_weights.numpy()[:, t], w, "weights of T queries", rtol=1e-12)
        assert_close(contexts.numpy()[:, t], c, "contexts of T queries", rtol=1e-12)


@pytest.mark.parametrize("kind", SCORES)
def test_attention_gradcheck_and_padding_gets_no_gradient(kind):
    rng = np.random.default_rng(1)
    tg.manual_seed(1)
    attention = make_attention(kind, 3, 3)
    q, keys = tg.Tensor(rng.standard_normal((2, 3)), requires_grad=True), tg.Tensor(rng.standard_normal((2, 4, 3)),
                                                                                      requires_grad=True)
    values = tg.Tensor(rng.standard_normal((2, 4, 2)), requires_grad=True)
    mask = sequence_mask([4, 2])
    assert gradcheck(lambda q, k, v: attention(q, k, v, mask=mask), [q, keys, values])
    context, weights = attention(q, keys, values, mask=mask)
    (context.sum() + (weights * weights).sum()).backward()
    assert (keys.grad.numpy()[1, 2:] == 0).all() and (values.grad.numpy()[1, 2:] == 0).all()


def test_padding_contents_never_matter_and_an_empty_row_attends_to_nothing():
    rng = np.random.default_rng(2)
    attention = make_attention("additive", 3, 3)
    keys = rng.standard_normal((3, 4, 3))
    mask = np.array([[True] * 4, [True, True, False, False], [False] * 4])
    garbage = keys.copy()
    garbage[~mask] = [np.nan, np.inf, -1e300]
    results = []
    for k in (keys, garbage):
        q, k = tg.Tensor(rng.standard_normal((3, 3)) * 0 + 0.5, requires_grad=True), tg.Tensor(k, requires_grad=True)
        attention.zero_grad()
        context, weights = attention(q, k, mask=tg.Tensor(mask))
        (context * context).sum().backward()
        results.append([context.numpy(), weights.numpy(), q.grad.numpy(), k.grad.numpy()] +
                       [p.grad.numpy() for p in attention.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    context, weights, _, key_grads = results[0][:4]
    assert (weights[2] == 0).all() and (context[2] == 0).all() and (key_grads[2] == 0).all()  # no NaN either


def test_masked_softmax_is_exact_and_one_op_deep_in_float32():
    scores = tg.Tensor(np.array([[1e4, -1e4, 0.0], [3.0, 2.0, 1.0]], dtype=np.float32))
    mask = tg.Tensor(np.array([[True, True, False], [False, True, True]]))
    weights = masked_softmax(scores, mask).numpy()
    np.testing.assert_allclose(weights, [[1, 0, 0], [0, 1 / (1 + np.exp(-1)), 1 / (1 + np.e)]], rtol=1e-6)
    assert weights[0, 2] == 0 and weights[1, 0] == 0
    np.testing.assert_allclose(masked_softmax(scores).numpy().sum(axis=1), 1, rtol=1e-6)


class SharpReader(nn.Module):
    """Attends with the step input as the query: sharp weights that move to another position at step 2."""

    def __init__(self, memory):
        self.memory = nn.DotProductAttention().prepare(memory)

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 3, dtype=tg.float64)

    def forward(self, x, h):
        context, _ = nn.DotProductAttention().attend(x, self.memory)
        return context + 0.5 * h


def test_captured_weights_follow_the_values_of_every_step():
    """A softmax whose negligible entries were found from the recorded steps' values would keep them."""
    queries = np.zeros((5, 1, 3))
    queries[:2, 0, 0] = queries[2:, 0, 1] = 1000.0  # steps 0, 1 read position 0, steps 2.. position 1
    reader = SharpReader(tg.Tensor(np.eye(3)[None]))
    before = capture.counters.copy()
    captured, _ = nn.Recurrent(reader)(tg.Tensor(queries, requires_grad=True))
    assert (capture.counters - before)["captured"] == 1
    with capture.disabled():
        eager, _ = nn.Recurrent(reader)(tg.Tensor(queries, requires_grad=True))
    np.testing.assert_array_equal(captured.numpy(), eager.numpy())
    assert eager.numpy()[4, 0, 1] > 1


def test_sequence_mask():
    np.testing.assert_array_equal(sequence_mask([2, 0, 3]).numpy(), [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert sequence_mask(tg.Tensor([1, 2]), max_length=4).shape == (2, 4)
    with pytest.raises(TypeError, match="sequence_mask: lengths must be"):
        sequence_mask([1.5, 2.0])


# ---- the decoder cell --------------------------------------------------------------------

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_cell(kind, p, x, state):
    """One step of PyTorch's RNN/GRU/LSTM cell in NumPy; state is h, or (h, c) for the LSTM."""
    h = state[0] if kind == "lstm" else state
    gi, gh = x @ p["cell.weight_ih"].T + p["cell.bias_ih"], h @ p["cell.weight_hh"].T + p["cell.bias_hh"]
    if kind == "rnn":
        return np.tanh(gi + gh)
    if kind == "gru":
        H = h.shape[1]
        r, z = sigmoid(gi[:, :H] + gh[:, :H]), sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h
    i, f, g, o = np.split(gi + gh, 4, axis=1)
    c = sigmoid(f) * state[1] + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def np_decode(kind, feeding, cell, xs, memory, mask, h0):
    """Luong's equations with additive scores, over xs (T, B, I): outputs o_t and weights a_t per step."""
    p = {name: value.numpy() for name, value in cell.named_parameters()}
    attention = cell.attention
    B, H = h0.shape
    o, state = np.zeros((B, H)), (h0, np.zeros((B, H))) if kind == "lstm" else h0
    outputs, weights = [], []
    for x in xs:
        state = np_cell(kind, p, np.concatenate([x, o], axis=1) if feeding else x, state)
        h = state[0] if kind == "lstm" else state
        context, a = np_attend(np_scores("additive", attention, h, memory), memory, mask)
        o = np.tanh(np.concatenate([context, h], axis=1) @ p["out_proj.weight"].T + p["out_proj.bias"])
        outputs.append(o)
        weights.append(a)
    return np.stack(outputs), np.stack(weights)


def decoder(kind, feeding, seed=3, I=3, H=4, D=5):
    tg.manual_seed(seed)
    return randomize(nn.AttentionDecoderCell(I, H, D, cell=kind, input_feeding=feeding).double(),
                     np.random.default_rng(seed), 0.8)


def initial(cell, memory, h0):
    """The bound cell's zero state, with h0 as the recurrent cell's hidden state (and c = 0 for an LSTM)."""
    inner = (h0, tg.zeros(*h0.shape, dtype=h0.dtype)) if isinstance(cell.cell, nn.LSTMCell) else h0
    return cell.initial_state(h0.shape[0], inner)


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("feeding", [True, False])
def test_decoder_cell_matches_numpy_step_by_step_and_as_a_layer(kind, feeding):
    rng = np.random.default_rng(4)
    cell = decoder(kind, feeding)
    T, B, S = 5, 3, 6
    xs, memory, h0 = rng.standard_normal((T, B, 3)), rng.standard_normal((B, S, 5)), rng.standard_normal((B, 4))
    mask = np.arange(S)[None, :] < np.array([6, 2, 4])[:, None]
    expected_outputs, expected_weights = np_decode(kind, feeding, cell, xs, memory, mask, h0)
    bound = cell.attending(tg.Tensor(memory), tg.Tensor(mask))
    state = initial(bound, memory, tg.Tensor(h0))
    for t in range(T):  # step by step, as a decoding loop runs it
        state = bound(tg.Tensor(xs[t]), state)
        assert_close(state[0].numpy(), expected_outputs[t], f"output {t}", rtol=1e-10)
        assert_close(state[-1].numpy(), expected_weights[t], f"weights {t}", rtol=1e-10)
    out, final = nn.Recurrent(bound)(tg.Tensor(xs), initial(bound, memory, tg.Tensor(h0)))  # teacher forcing
    assert_close(out.numpy(), expected_outputs, "outputs", rtol=1e-10)
    assert_close(final[-1].numpy(), expected_weights[-1], "final weights", rtol=1e-10)


def run_decoder(cell, xs, memory, mask, h0, eager):
    """Outputs and the gradients of x, memory, h0 and every parameter, for a loss reading every output."""
    leaves = [tg.Tensor(a, requires_grad=True) for a in (xs, memory, h0)]
    cell.zero_grad()
    with capture.disabled() if eager else contextlib.nullcontext():
        bound = cell.attending(leaves[1], tg.Tensor(mask))
        out, final = nn.Recurrent(bound)(leaves[0], initial(bound, memory, leaves[2]))
    w = np.random.default_rng(5)
    loss = (out * tg.Tensor(w.standard_normal(out.shape))).sum() + (final[1] * final[1]).sum()
    loss.backward()
    return [out.numpy().copy()] + [t.grad.numpy().copy() for t in leaves] + \
        [p.grad.numpy().copy() for p in cell.parameters()]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_decoder_cell_captured_equals_eager_and_ignores_padding(kind):
    rng = np.random.default_rng(6)
    cell = decoder(kind, True)
    xs, memory, h0 = rng.standard_normal((6, 2, 3)), rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4))
    mask = np.array([[True] * 4, [True, False, False, False]])
    with tg.no_grad():  # the LSTM cell makes its gate constants on first use, outside the recorded steps
        nn.Recurrent(cell.attending(tg.Tensor(memory), tg.Tensor(mask)))(tg.Tensor(xs))
    before = capture.counters.copy()
    captured = run_decoder(cell, xs, memory, mask, h0, eager=False)
    assert (capture.counters - before)["captured"] == 1, capture.counters - before
    eager = run_decoder(cell, xs, memory, mask, h0, eager=True)
    for k, (a, b) in enumerate(zip(captured, eager)):
        assert_close(a, b, f"captured vs eager, result {k}", rtol=1e-12)
    garbage = memory.copy()
    garbage[1, 1:] = np.array([np.nan, np.inf, -np.inf])[:, None]
    padded = run_decoder(cell, xs, garbage, mask, h0, eager=False)
    for k, (a, b) in enumerate(zip(captured, padded)):
        np.testing.assert_array_equal(a, b, err_msg=f"garbage padding changed result {k}")
    assert (captured[2][1, 1:] == 0).all()  # the padded memory gets no gradient


def test_decoder_cell_captured_equals_eager_on_every_device(device):
    rng = np.random.default_rng(8)
    cell = decoder("gru", True).to(device)
    xs, memory = rng.standard_normal((5, 2, 3)), rng.standard_normal((2, 4, 5))
    results = []
    for eager in (False, True):
        x, m = tg.Tensor(xs, device=device, requires_grad=True), tg.Tensor(memory, device=device, requires_grad=True)
        with capture.disabled() if eager else contextlib.nullcontext():
            out, _ = nn.Recurrent(cell.attending(m, sequence_mask([4, 2], device=device)))(x)
        assert out.device == x.device
        (out * out).sum().backward()
        results.append([out.numpy(), x.grad.numpy(), m.grad.numpy()])
    for a, b in zip(*results):
        assert_close(a, b, "captured vs eager", rtol=1e-12)


def test_decoder_cell_gradcheck():
    rng = np.random.default_rng(7)
    cell = decoder("gru", True, I=2, H=3, D=2)
    xs, memory, h0 = (tg.Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((3, 2, 2), (2, 3, 2), (2, 3)))
    mask = sequence_mask([3, 2])

    def run(xs, memory, h0, *params):
        bound = cell.attending(memory, mask)
        out, final = nn.Recurrent(bound)(xs, initial(bound, None, h0))
        return out, final[-1]
    assert gradcheck(run, [xs, memory, h0] + list(cell.parameters()))


def test_decoder_cell_errors_and_names():
    cell = nn.AttentionDecoderCell(3, 4, 5)
    assert [n for n, _ in cell.named_parameters()] == [
        "cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh", "attention.query_proj.weight",
        "attention.key_proj.weight", "attention.key_proj.bias", "attention.v", "out_proj.weight",
        "out_proj.bias"]
    assert cell.cell.weight_ih.shape == (12, 7)  # GRU gates over [x ; previous output]
    with pytest.raises(RuntimeError, match="attending"):
        cell.initial_state(2)
    with pytest.raises(ValueError, match="memory of shape"):
        cell.attending(tg.randn(2, 3, 4))
    with pytest.raises(ValueError, match="mask must be a boolean Tensor of shape \\(2, 3\\)"):
        cell.attending(tg.randn(2, 3, 5), tg.Tensor([[1, 1, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="hidden size 4 and keys of the memory size 5"):
        nn.AttentionDecoderCell(3, 4, 5, attention=nn.BilinearAttention(4, 6))
    with pytest.raises(ValueError, match="cell must be one of"):
        nn.AttentionDecoderCell(3, 4, 5, cell="transformer")
    with pytest.raises(ValueError, match=r"AdditiveAttention: expected a query of shape \(2, 4\)"):
        nn.AdditiveAttention(4, 5, 6)(tg.randn(2, 3), tg.randn(2, 3, 5))
    with pytest.raises(ValueError, match="DotProductAttention: queries .* must have the same size"):
        nn.DotProductAttention()(tg.randn(2, 3), tg.randn(2, 3, 5))
