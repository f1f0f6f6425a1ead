"""Streaming truncated BPTT (tinygrad_seq/nn/tbptt.py) against its definition, built from plain layer calls.

The reference runs every document piece of every row on its own, as a batch of one: a piece
that starts a document (a reset) from a fresh run (no state given), a piece that goes on from
the previous chunk from that chunk's final state as a constant (the graph cut), with the layer
itself or with the hand-written NumPy forward and BPTT of tests/bptt_oracle.py. Outputs and
gradients of TBPTT (and of run_with_resets on one chunk) must equal it, for RNN, LSTM and GRU
layers, stacked, and for a custom cell run by nn.Recurrent; without resets it is the
full-sequence run's forward values and the per-chunk truncated gradients. The reset steps are
one captured loop, equal to the eager one.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_seq as tg
from tinygrad_seq import capture, nn
from tinygrad_seq.nn.tbptt import TBPTT, detach_state, run_with_resets
from bptt_oracle import layer_forward_backward
from recurrent_helpers import VARIANTS, assert_close, make_layer, randomize


def recurrent_lstm(I, H, num_layers, rng):
    """nn.Recurrent over a stack of peephole LSTM cells (the nn.Recurrent path, a tuple state per layer)."""
    cells = [nn.PeepholeLSTMCell(I if k == 0 else H, H) for k in range(num_layers)]
    return randomize(nn.Recurrent(cells if num_layers > 1 else cells[0]).double(), rng)


def make(kind, nonlinearity, I, H, num_layers, rng):
    if kind == "recurrent":
        return recurrent_lstm(I, H, num_layers, rng)
    return make_layer(kind, nonlinearity, I, H, rng, num_layers=num_layers)


def row(state, b):
    """Row b of a layer's state (batch on axis -2), kept as a batch of one."""
    if isinstance(state, (tuple, list)):
        return type(state)(row(s, b) for s in state)
    return state[..., b:b + 1, :]


def pieces(resets, start, stop):
    """[start, stop) cut before every step t with resets[t]: (first, last, starts a document) triples."""
    cuts = [t for t in range(start + 1, stop) if resets[t]]
    bounds = [start] + cuts + [stop]
    return [(a, b, bool(resets[a])) for a, b in zip(bounds, bounds[1:])]


def reference(layer, x, go, resets, chunks):
    """Outputs and gradients (parameters, x) of every row's document pieces run separately, as defined above."""
    T, B = resets.shape
    x_leaf = tg.Tensor(x, requires_grad=True)
    layer.zero_grad()
    outputs, loss = [[None] * B for _ in range(T)], 0
    for b in range(B):
        carried = None
        for start, stop in chunks:
            for first, last, fresh in pieces(resets[:, b], start, stop):
                out, state = layer(x_leaf[first:last, b:b + 1], None if fresh else carried)
                loss = loss + (out * tg.Tensor(go[first:last, b:b + 1])).sum()
                for t in range(first, last):
                    outputs[t][b] = out.numpy()[t - first, 0]
            carried = detach_state(state)
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}
    return np.array(outputs), grads, x_leaf.grad.numpy()


def oracle_reference(layer, kind, nonlinearity, x, go, resets, chunks):
    """The same from the hand-written NumPy forward and BPTT (tests/bptt_oracle.py), piece by piece."""
    params = layer.state_dict()
    outputs, gx, grads = np.zeros(go.shape), np.zeros(x.shape), dict.fromkeys(params, 0)
    for b in range(resets.shape[1]):
        carried = (None, None)
        for start, stop in chunks:
            for first, last, fresh in pieces(resets[:, b], start, stop):
                h0, c0 = (None, None) if fresh else carried
                out, h_n, c_n, g = layer_forward_backward(kind, x[first:last, b:b + 1], params, h0=h0, c0=c0,
                                                          num_layers=layer.num_layers, nonlinearity=nonlinearity,
                                                          grad_output=go[first:last, b:b + 1])
                outputs[first:last, b], gx[first:last, b] = out[:, 0], g["x"][:, 0]
                grads = {name: grads[name] + g[name] for name in params}
            carried = (h_n, c_n)
    return outputs, grads, gx


def streamed(layer, x, go, resets, chunks, eager=False):
    """The same with TBPTT: one call and one backward per chunk."""
    x_leaf = tg.Tensor(x, requires_grad=True)
    layer.zero_grad()
    runner, outputs = TBPTT(layer), []
    for start, stop in chunks:
        with capture.disabled() if eager else contextlib.nullcontext():
            out = runner(x_leaf[start:stop], None if resets is None else resets[start:stop])
        (out * tg.Tensor(go[start:stop])).sum().backward()
        outputs.append(out.numpy())
    grads = {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}
    return np.concatenate(outputs), grads, x_leaf.grad.numpy()


def assert_same(got, want, rtol=1e-10):
    (out, grads, gx), (want_out, want_grads, want_gx) = got, want
    assert_close(out, want_out, "output", rtol=rtol)
    assert_close(gx, want_gx, "gradient of x", rtol=rtol)
    assert grads.keys() == want_grads.keys()
    for name in grads:
        assert_close(grads[name], want_grads[name], f"gradient of {name}", rtol=rtol)


def chunking(T, sizes):
    bounds = np.cumsum([0] + sizes)
    bounds = [int(b) for b in bounds if b < T] + [T]
    return list(zip(bounds, bounds[1:]))


KINDS = [v for v in VARIANTS] + [("recurrent", None)]


@settings(max_examples=8)
@given(kind=st.sampled_from(KINDS), num_layers=st.integers(1, 2), B=st.integers(1, 3),
       sizes=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data(), seed=st.integers(0, 2**16))
def test_tbptt_with_resets_is_a_fresh_run_per_document(kind, num_layers, B, sizes, data, seed):
    rng = np.random.default_rng(seed)
    T = sum(sizes)
    layer = make(*kind, 2, 3, num_layers, rng)
    x, go = rng.standard_normal((T, B, 2)), rng.standard_normal((T, B, 3))
    resets = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=B, max_size=B), min_size=T, max_size=T),
                                label="resets"), dtype=bool).reshape(T, B)
    chunks = chunking(T, sizes)
    assert_same(streamed(layer, x, go, resets, chunks), reference(layer, x, go, resets, chunks))


@pytest.mark.parametrize("kind", KINDS)
def test_documents_with_different_boundaries_per_row(kind):
    """Three rows, documents ending at different steps inside and at the edges of 6-step chunks, stacked."""
    rng = np.random.default_rng(1)
    layer = make(*kind, 2, 3, 2, rng)
    T, B = 14, 3
    x, go = rng.standard_normal((T, B, 2)), rng.standard_normal((T, B, 3))
    resets = np.zeros((T, B), dtype=bool)
    resets[[3, 6, 7], 0] = True   # one mid-chunk, one at a chunk's first step, one right after
    resets[[1, 11], 1] = True
    chunks = [(0, 6), (6, 12), (12, 14)]  # row 2 never resets
    want = reference(layer, x, go, resets, chunks) if kind[0] == "recurrent" else \
        oracle_reference(layer, *kind, x, go, resets, chunks)  # textbook BPTT in NumPy, per document piece
    assert_same(streamed(layer, x, go, resets, chunks), want)


@pytest.mark.parametrize("kind", KINDS)
def test_without_resets_the_forward_is_the_full_run_and_the_gradient_truncated(kind):
    rng = np.random.default_rng(2)
    layer = make(*kind, 2, 3, 2, rng)
    T, B = 10, 2
    x, go = rng.standard_normal((T, B, 2)), rng.standard_normal((T, B, 3))
    chunks = [(0, 4), (4, 8), (8, 10)]
    got = streamed(layer, x, go, None, chunks)
    full, _ = layer(tg.Tensor(x))
    assert_close(got[0], full.numpy(), "output", rtol=1e-12)  # forward values: the full run's
    assert_same(got, reference(layer, x, go, np.zeros((T, B), dtype=bool), chunks))  # gradients: truncated
    name = "weight_hh_l0" if kind[0] != "recurrent" else "cells.0.weight_hh"
    layer.zero_grad()
    (full * tg.Tensor(go)).sum().backward()  # and the truncation is visible: full BPTT differs
    assert np.abs(dict(layer.named_parameters())[name].grad.numpy() - got[1][name]).max() > 1e-6


@pytest.mark.parametrize("kind", [("lstm", "tanh"), ("recurrent", None)])
def test_resets_run_as_one_captured_loop_equal_to_the_eager_one(kind):
    rng = np.random.default_rng(3)
    layer = make(*kind, 2, 3, 2, rng)
    x, go = rng.standard_normal((9, 3, 2)), rng.standard_normal((9, 3, 3))
    resets = rng.random((9, 3)) < 0.3
    before = capture.counters.copy()
    captured = streamed(layer, x, go, resets, [(0, 9)])
    assert (capture.counters - before) == {"captured": 2}  # one loop per layer, resets included
    assert_same(captured, streamed(layer, x, go, resets, [(0, 9)], eager=True), rtol=1e-12)


def test_batch_first_layers_take_batch_first_resets():
    rng = np.random.default_rng(4)
    layer = make_layer("gru", "tanh", 2, 3, rng, batch_first=True)
    x = rng.standard_normal((2, 6, 2))
    resets = np.zeros((2, 6), dtype=bool)
    resets[1, 4] = True
    out, _ = run_with_resets(layer, tg.Tensor(x), None, resets)
    fresh, _ = layer(tg.Tensor(x[1:, 4:]))
    assert_close(out.numpy()[1, 4:], fresh.numpy()[0], "row 1 after its reset", rtol=1e-12)
    whole, _ = layer(tg.Tensor(x))
    assert_close(out.numpy()[0], whole.numpy()[0], "row 0 (no reset)", rtol=0)


class Tagger(nn.Module):
    """A model around a layer: its forward takes resets and passes them on to run_with_resets."""

    def __init__(self, rng):
        self.lstm = make_layer("lstm", "tanh", 2, 3, rng)
        self.head = randomize(nn.Linear(3, 2).double(), rng)

    def forward(self, x, state=None, resets=None):
        out, state = run_with_resets(self.lstm, x, state, resets)
        return self.head(out), state


def test_a_model_gets_the_resets_and_reset_rows_starts_rows_afresh():
    rng = np.random.default_rng(5)
    model = Tagger(rng)
    x = tg.Tensor(rng.standard_normal((8, 3, 2)))
    runner = TBPTT(model)
    runner(x[:4])
    runner.reset([0, 2])  # rows 0 and 2 start afresh at the next call: as resets at its first step
    by_rows = runner(x[4:])
    resets = np.zeros((8, 3), dtype=bool)
    resets[4, [0, 2]] = True
    runner.reset()
    assert runner.state is None
    runner(x[:4])
    by_mask = runner(x[4:], resets[4:])
    assert_close(by_rows.numpy(), by_mask.numpy(), "reset(rows) == resets at the first step", rtol=1e-12)
    assert all(not s.requires_grad for s in runner.state)  # the carried state is cut from the graph


def test_errors_say_what_was_expected():
    rng = np.random.default_rng(6)
    x = tg.Tensor(rng.standard_normal((5, 2, 2)))
    with pytest.raises(ValueError, match=r"resets must be booleans of shape \(5, 2\)"):
        run_with_resets(make_layer("gru", "tanh", 2, 3, rng), x, None, np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="bidirectional"):
        run_with_resets(make_layer("gru", "tanh", 2, 3, rng, bidirectional=True), x, None, np.ones((5, 2), bool))
    with pytest.raises(TypeError, match="expected nn.RNN, nn.LSTM, nn.GRU or nn.Recurrent"):
        run_with_resets(nn.Linear(2, 3).double(), x, None, np.ones((5, 2), bool))

    class LearnedStart(nn.RNNCell):
        def initial_state(self, batch_size):
            return super().initial_state(batch_size) + 1
    with pytest.raises(ValueError, match="LearnedStart's initial state is not zero"):
        run_with_resets(nn.Recurrent(LearnedStart(2, 3).double()), x, None, np.ones((5, 2), bool))
