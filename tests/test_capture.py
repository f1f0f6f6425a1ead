"""The captured time loop (tinygrad_seq/capture.py) against the eager loop it replaces.

Captured == eager to 1e-12 relative in float64, for the built-in layers over drawn
configurations and for custom cells; each guard case falls back (and says why in
capture.counters) with unchanged results; the usual traps of tracing JITs; checkpointing.
"""
import contextlib
import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_seq as tg
from tinygrad_seq import capture, nn
from tinygrad_seq.autograd.gradcheck import gradcheck
from recurrent_helpers import LAYERS, assert_close, layer_configs, make_layer


def seeded(n):
    return np.random.default_rng(n)


@contextlib.contextmanager
def counted():
    """Yields a Counter of what the runner did inside the block (captured / fallback reasons)."""
    before = capture.counters.copy()
    seen = capture.counters.__class__()
    yield seen
    seen.update(capture.counters - before)


def run(module, x, state=None, lengths=None, device="cpu", eager=False, weights_seed=5):
    """Forward + backward of sum(output * G) + sum over the final state's items * G', as NumPy
    arrays: output, final state items, and the gradients of x, the initial state and every parameter."""
    x = tg.Tensor(x, device=device, requires_grad=True)
    state_in = None if state is None else tuple(tg.Tensor(s, device=device, requires_grad=True) for s in state)
    with capture.disabled() if eager else contextlib.nullcontext():
        module.zero_grad()
        hx = None if state_in is None else (state_in if len(state_in) > 1 else state_in[0])
        out, final = module(x, hx, lengths=lengths)
    items = flatten(final)
    rng = seeded(weights_seed)
    loss = (out * tg.Tensor(rng.standard_normal(out.shape), device=device)).sum()
    for item in items:
        loss = loss + (item * tg.Tensor(rng.standard_normal(item.shape), device=device)).sum()
    loss.backward()
    result = {"output": out.numpy().copy(), "x": x.grad.numpy().copy()}
    result.update({f"final{k}": item.numpy().copy() for k, item in enumerate(items)})
    if state_in is not None:
        result.update({f"state{k}": s.grad.numpy().copy() for k, s in enumerate(state_in)})
    result.update({name: p.grad.numpy().copy() for name, p in module.named_parameters() if p.grad is not None})
    return result


def flatten(state):
    """The tensors of a (possibly nested) tuple/list state, in order."""
    if isinstance(state, (tuple, list)):
        return [t for item in state for t in flatten(item)]
    return [state]


def assert_same(captured, eager, rtol=1e-12):
    assert captured.keys() == eager.keys()
    for name in eager:
        assert_close(captured[name], eager[name], name, rtol=rtol)


# ---- built-in layers ------------------------------------------------------------------

@settings(max_examples=15)
@given(config=layer_configs(max_T=7), seed=st.integers(0, 2**16), with_hx=st.booleans())
def test_layers_captured_equal_eager(config, seed, with_hx):
    rng = seeded(seed)
    c = config
    layer = make_layer(c["kind"], c["nonlinearity"], c["I"], c["H"], rng, num_layers=c["num_layers"],
                       bidirectional=c["bidirectional"], bias=c["bias"], batch_first=c["batch_first"])
    D = 2 if c["bidirectional"] else 1
    x = rng.standard_normal((c["B"], c["T"], c["I"]) if c["batch_first"] else (c["T"], c["B"], c["I"]))
    state = None
    if with_hx:
        n = 2 if c["kind"] == "lstm" else 1
        state = [rng.standard_normal((c["num_layers"] * D, c["B"], c["H"])) for _ in range(n)]
    with counted() as seen:
        captured = run(layer, x, state, c["lengths"])
    assert seen["captured"] == (c["num_layers"] * D if c["T"] >= 3 else 0)  # steps 0 and 1 are recorded
    assert_same(captured, run(layer, x, state, c["lengths"], eager=True))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layers_captured_equal_eager_on_every_device(kind, device):
    rng = seeded(1)
    layer = make_layer(kind, "tanh", 3, 4, rng, num_layers=2, bidirectional=True).to(device)
    x = rng.standard_normal((6, 3, 3))
    with counted() as seen:
        captured = run(layer, x, lengths=[6, 2, 4], device=device)
    assert seen["captured"] == 4
    assert_same(captured, run(layer, x, lengths=[6, 2, 4], device=device, eager=True))


def test_unbatched_input_and_dropout_between_layers_are_captured():
    rng = seeded(2)
    layer = make_layer("lstm", "tanh", 3, 4, rng, num_layers=2, dropout=0.5)
    layer.train()
    x = rng.standard_normal((5, 3))
    results = []
    for eager in (False, True):
        tg.manual_seed(7)  # the same dropout masks between layers in both runs
        results.append(run(layer, x, eager=eager))
    assert_same(*results)


def test_float32_captured_equals_eager():
    rng = seeded(3)
    layer = nn.GRU(4, 6, num_layers=2)
    x = rng.standard_normal((9, 5, 4)).astype(np.float32)
    captured, eager = run(layer, x, lengths=[9, 1, 4, 9, 3]), run(layer, x, lengths=[9, 1, 4, 9, 3], eager=True)
    for name in eager:
        np.testing.assert_allclose(captured[name], eager[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ---- custom cells -------------------------------------------------------------------

class MinimalGatedUnit(nn.Module):
    """The README's cell: f = sigmoid(W_f [x, h] + b_f); h' = (1 - f) h + f tanh(W_h [x, f h] + b_h)."""

    def __init__(self, input_size, hidden_size):
        self.hidden_size = hidden_size
        self.gate = nn.Linear(input_size + hidden_size, hidden_size)
        self.candidate = nn.Linear(input_size + hidden_size, hidden_size)

    def initial_state(self, batch_size):
        w = self.gate.weight
        return tg.zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device)

    def forward(self, x, h):
        f = self.gate(tg.cat([x, h], axis=1)).sigmoid()
        candidate = self.candidate(tg.cat([x, f * h], axis=1)).tanh()
        return (1 - f) * h + f * candidate


class PeepholeLSTM(nn.Module):
    """LSTM whose gates also see the cell state (Gers & Schmidhuber): i, f from c, o from c'."""

    def __init__(self, input_size, hidden_size):
        self.hidden_size = hidden_size
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        self.peep = nn.Parameter(tg.randn(3, hidden_size) * 0.5)

    def initial_state(self, batch_size):
        w = self.linear.weight
        z = tg.zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device)
        return z, z * 1.0

    def forward(self, x, state):
        h, c = state
        i, f, g, o = self.linear(tg.cat([x, h], axis=1)).chunk(4, 1)
        c = (f + self.peep[1] * c).sigmoid() * c + (i + self.peep[0] * c).sigmoid() * g.tanh()
        return (o + self.peep[2] * c).sigmoid() * c.tanh(), c


class ThreeStateCell(nn.Module):
    """A state of three tensors of different widths; the third is a running sum."""

    def __init__(self, input_size, hidden_size):
        self.hidden_size = hidden_size
        self.w = nn.Parameter(tg.randn(input_size + hidden_size, hidden_size) * 0.4)
        self.u = nn.Parameter(tg.randn(hidden_size, 2) * 0.4)

    def initial_state(self, batch_size):
        options = {"dtype": self.w.dtype, "device": self.w.device}
        return (tg.zeros(batch_size, self.hidden_size, **options), tg.zeros(batch_size, 2, **options),
                tg.zeros(batch_size, 1, **options))

    def forward(self, x, state):
        h, m, total = state
        h = (tg.cat([x, h], axis=1) @ self.w).tanh()
        m = m * 0.5 + h @ self.u
        return h, m, total + h.sum(axis=1, keepdims=True)


class ClosureCell(nn.Module):
    """Reads a tensor it closes over that is not a parameter (but requires grad) and a constant."""

    def __init__(self, input_size, hidden_size, context):
        self.hidden_size, self.context = hidden_size, context
        self.w = nn.Parameter(tg.randn(input_size, hidden_size) * 0.5)

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, self.hidden_size, dtype=self.w.dtype, device=self.w.device)

    def forward(self, x, h):
        scale = tg.ones(1, self.hidden_size, dtype=h.dtype, device=h.device) * 0.9  # made inside the step: a constant
        return (x @ self.w + h * self.context * scale).tanh()


def _custom_cells(device):
    tg.manual_seed(4)
    context = tg.Tensor(seeded(4).standard_normal((1, 5)), device=device, requires_grad=True)  # not a Parameter
    return {"mgu": MinimalGatedUnit(3, 5), "peephole": PeepholeLSTM(3, 5), "three": ThreeStateCell(3, 5),
            "closure": ClosureCell(3, 5, context)}


@pytest.mark.parametrize("name", ["mgu", "peephole", "three", "closure"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_custom_cells_captured_equal_eager(name, bidirectional, device):
    cell = _custom_cells(device)[name].to(device).double()
    reverse = _custom_cells(device)[name].to(device).double() if bidirectional else None
    layer = nn.Recurrent(cell, reverse)
    x = seeded(5).standard_normal((7, 3, 3))
    with counted() as seen:
        captured = run(layer, x, lengths=[7, 3, 5], device=device)
    assert seen["captured"] == (2 if bidirectional else 1), seen
    eager = run(layer, x, lengths=[7, 3, 5], device=device, eager=True)
    assert_same(captured, eager)
    if name == "closure":  # the closed-over tensor gets its gradient too, summed over steps
        cell.context.grad = None
        run(layer, x, device=device)
        g = cell.context.grad.numpy().copy()
        cell.context.grad = None
        run(layer, x, device=device, eager=True)
        assert_close(g, cell.context.grad.numpy(), "context")


def test_stacked_custom_cells_with_initial_state():
    layer = nn.Recurrent([MinimalGatedUnit(3, 4), MinimalGatedUnit(4, 4)])
    layer.double()
    rng = seeded(6)
    x = tg.Tensor(rng.standard_normal((6, 2, 3)), requires_grad=True)
    h0 = [tg.Tensor(rng.standard_normal((2, 4)), requires_grad=True) for _ in range(2)]
    grads = []
    for eager in (False, True):
        for t in [x] + h0 + list(layer.parameters()):
            t.grad = None
        with capture.disabled() if eager else contextlib.nullcontext():
            out, finals = layer(x, h0)
        (out.tanh().sum() + sum((f * f).sum() for f in finals)).backward()
        grads.append([out.numpy().copy()] + [t.grad.numpy().copy() for t in [x] + h0 + list(layer.parameters())])
    for a, b in zip(*grads):
        assert_close(a, b, "stacked", rtol=1e-12)


def test_gradcheck_through_a_captured_layer():
    rng = seeded(7)
    layer = make_layer("gru", "tanh", 2, 3, rng, bidirectional=True)
    x = tg.Tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    h0 = tg.Tensor(rng.standard_normal((2, 2, 3)), requires_grad=True)
    with counted() as seen:
        assert gradcheck(lambda x, h0: layer(x, h0, lengths=[4, 2])[0], [x, h0])
    assert seen["captured"] > 0  # (the finite differences run under no_grad: eagerly)


# ---- the guard: each case falls back, with unchanged results --------------------------

class Guarded(nn.Module):
    """A tanh RNN cell whose step does one risky thing, chosen by `mode`."""

    def __init__(self, mode, input_size=3, hidden_size=4):
        self.mode, self.hidden_size, self.calls = mode, hidden_size, 0
        self.w = nn.Parameter(tg.Tensor(seeded(8).standard_normal((input_size + hidden_size, hidden_size)) * 0.5))
        self.seen = []

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, self.hidden_size, dtype=self.w.dtype)

    def forward(self, x, h):
        self.calls += 1
        pre = tg.cat([x, h], axis=1) @ self.w
        if self.mode == "branch_on_step" and self.calls % 2 == 0:  # a different program at every other step
            pre = pre * 2.0
        if self.mode == "scalar_per_step":
            pre = pre * (1.0 + 0.1 * self.calls)
        if self.mode == "dropout":
            pre = tg.functional.dropout(pre, 0.3, True)
        if self.mode == "item" and pre.sum().item() > 0:  # a Python branch on a value
            pre = -pre
        if self.mode == "list_input":
            pre = pre + self.per_step[self.calls - 1]
        if self.mode == "in_place":
            pre = pre * 1.0
            pre.mul_(0.5)
        new = pre.tanh()
        if self.mode == "hook":
            new.register_hook(lambda g: g * 1.0)
        if self.mode == "retain_grad":
            new.retain_grad()
            self.seen.append(new)
        return new


def _guarded_run(mode, eager=False, **options):
    cell = Guarded(mode).double()
    if mode == "list_input":
        cell.per_step = [tg.Tensor(np.full((1, 4), 0.1 * k)) for k in range(6)]
    tg.manual_seed(9)
    x = seeded(10).standard_normal((6, 2, 3))
    with counted() as seen:
        result = run(nn.Recurrent(cell, **options), x, lengths=[6, 4], eager=eager)
    return result, seen, cell


@pytest.mark.parametrize("mode, reason", [
    ("branch_on_step", "different programs"),
    ("scalar_per_step", "change from step to step"),
    ("dropout", "change from step to step"),
    ("item", "reads a value to the host"),
    ("in_place", "in place"),
    ("list_input", "different outside tensor"),
    ("hook", "hook"),
    ("retain_grad", "hook"),
])
def test_guard_falls_back_with_unchanged_results(mode, reason):
    with pytest.warns(capture.FallbackWarning, match="runs eagerly") as caught:
        fallen, seen, cell = _guarded_run(mode)
    assert len(caught) == 1 and reason in str(caught[0].message) and "; " in str(caught[0].message)  # and the fix
    assert caught[0].filename == __file__  # points at the caller, not into the library
    assert seen["captured"] == 0
    assert [k for k in seen if k.startswith("fallback")] and all(reason in k for k in seen if k.startswith("fallback")), seen
    assert cell.calls == 6  # the steps recorded before falling back are not run again
    eager, _, _ = _guarded_run(mode, eager=True)
    assert_same(fallen, eager, rtol=0)  # bit for bit: the fallback is the eager loop


def test_retain_grad_inside_the_step_keeps_every_step():
    with pytest.warns(capture.FallbackWarning, match="retain_grad"):
        _, _, cell = _guarded_run("retain_grad")
    assert len(cell.seen) == 6 and all(h.grad is not None for h in cell.seen)


@pytest.mark.parametrize("how", ["runner", "global", "cell", "no_grad", "anomaly"])
def test_switches_and_modes_run_eagerly(how):
    cell = Guarded("none").double()
    options = {"capture": False} if how == "runner" else {}
    if how == "cell":
        cell.capturable = False
    layer = nn.Recurrent(cell, **options)
    x = tg.Tensor(seeded(11).standard_normal((5, 2, 3)))
    modes = {"global": capture.disabled(), "no_grad": tg.no_grad(), "anomaly": tg.detect_anomaly()}
    with counted() as seen, modes.get(how, contextlib.nullcontext()):
        layer(x)
    assert seen["captured"] == 0 and sum(seen.values()) == 1, seen
    assert capture.is_enabled()


def test_gradient_flow_runs_eagerly_and_is_unchanged():
    layer = make_layer("lstm", "tanh", 2, 3, seeded(12))
    x = tg.Tensor(seeded(13).standard_normal((5, 2, 2)))
    with counted() as seen:
        flow = tg.gradient_flow(layer, lambda out, state: out.sum(), x)
    assert seen["captured"] == 0
    with capture.disabled():
        assert flow == tg.gradient_flow(layer, lambda out, state: out.sum(), x)


# ---- the traps of tracing JITs ------------------------------------------------------

class Scaled(nn.Module):
    """h' = tanh(x W + scale * h): `scale` is a Python float the user may change between calls."""

    def __init__(self, scale):
        self.scale, self.hidden_size = scale, 4
        self.w = nn.Parameter(tg.Tensor(seeded(14).standard_normal((3, 4))))

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 4, dtype=self.w.dtype)

    def forward(self, x, h):
        return (x @ self.w + h * self.scale + tg.Tensor(self.scale, dtype=h.dtype)).tanh()


def test_python_constants_are_not_baked_in_across_calls():
    cell = Scaled(0.5).double()
    layer = nn.Recurrent(cell)
    x = seeded(15).standard_normal((6, 2, 3))
    first = run(layer, x)
    cell.scale = -1.5
    second = run(layer, x)
    assert_same(second, run(layer, x, eager=True))
    assert not np.allclose(first["output"], second["output"])


def test_outputs_of_one_call_are_not_overwritten_by_the_next():
    layer = make_layer("lstm", "tanh", 3, 4, seeded(16))
    x1, x2 = (tg.Tensor(seeded(k).standard_normal((5, 2, 3))) for k in (17, 18))
    out1, (h1, c1) = layer(x1)
    kept = [out1.numpy().copy(), h1.numpy().copy(), c1.numpy().copy()]
    layer(x2)
    for a, b in zip(kept, [out1.numpy(), h1.numpy(), c1.numpy()]):
        np.testing.assert_array_equal(a, b)


def test_new_shapes_dtypes_and_devices_are_recorded_anew():
    rng = seeded(19)
    layer = make_layer("gru", "tanh", 3, 4, rng)
    for T, B in [(5, 2), (7, 3), (4, 1)]:
        x = rng.standard_normal((T, B, 3))
        assert_same(run(layer, x), run(layer, x, eager=True))
    layer.float()
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    captured, eager = run(layer, x), run(layer, x, eager=True)
    assert captured["output"].dtype == np.float32
    np.testing.assert_allclose(captured["output"], eager["output"], rtol=1e-6)
    layer.double().to("fake")
    x = rng.standard_normal((6, 2, 3))
    assert_same(run(layer, x, device="fake"), run(layer, x, device="fake", eager=True))


class Squares(nn.Module):
    """Uses the same tensor twice in one op (h * h) and returns an input item unchanged."""
    hidden_size = 3

    def __init__(self):
        self.w = nn.Parameter(tg.Tensor(seeded(20).standard_normal((2, 3)) * 0.5))

    def initial_state(self, batch_size):
        z = tg.zeros(batch_size, 3, dtype=self.w.dtype)
        return z, z * 1.0

    def forward(self, x, state):
        h, anchor = state
        return (x @ self.w + h * h * 0.5 + anchor).tanh(), anchor


def test_the_same_tensor_twice_and_a_passed_through_state():
    layer = nn.Recurrent(Squares().double())
    rng = seeded(21)
    x = rng.standard_normal((6, 2, 2))
    state = [rng.standard_normal((2, 3)) * 0.3, rng.standard_normal((2, 3)) * 0.3]
    with counted() as seen:
        captured = run(layer, x, state, lengths=[6, 3])
    assert seen["captured"] == 1
    assert_same(captured, run(layer, x, state, lengths=[6, 3], eager=True))


class Peephole(nn.Module):
    """A peephole LSTM (diagonal peepholes from c into i, f, o) whose initial_state returns ONE
    zeros tensor as both h and c: (z, z)."""
    hidden_size = 3

    def __init__(self):
        rng = seeded(24)
        self.w = nn.Parameter(tg.Tensor(rng.standard_normal((2 + 3, 12)) * 0.5))
        self.peep = nn.Parameter(tg.Tensor(rng.standard_normal((3, 3)) * 0.5))

    def initial_state(self, batch_size):
        z = tg.zeros(batch_size, 3, dtype="float64")
        return z, z

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (tg.cat([x, h], axis=1) @ self.w).chunk(4, 1)
        i, f = (i + c * self.peep[0]).sigmoid(), (f + c * self.peep[1]).sigmoid()
        c = f * c + i * g.tanh()
        return (o + c * self.peep[2]).sigmoid() * c.tanh(), c


def test_an_initial_state_that_aliases_one_tensor_is_captured():
    layer = nn.Recurrent(Peephole())
    x = seeded(25).standard_normal((7, 2, 2))
    with counted() as seen:
        captured = run(layer, x)
    assert seen["captured"] == 1, seen
    assert_same(captured, run(layer, x, eager=True))


def test_the_same_tensor_as_initial_state_and_as_outside_tensor():
    w = tg.Tensor(seeded(22).standard_normal((2, 3)) * 0.5, requires_grad=True)
    h0 = tg.Tensor(seeded(23).standard_normal((2, 3)) * 0.5, requires_grad=True)

    class ReadsH0(nn.Module):
        hidden_size = 3

        def initial_state(self, batch_size):
            return h0

        def forward(self, x, h):
            return (x @ w + h * h0).tanh()

    x = tg.Tensor(seeded(24).standard_normal((5, 2, 2)))
    grads = []
    for eager in (False, True):
        w.grad = h0.grad = None
        with capture.disabled() if eager else contextlib.nullcontext():
            out, h = nn.Recurrent(ReadsH0())(x)
        (out.sum() + h.sum()).backward()
        grads.append((out.numpy().copy(), w.grad.numpy().copy(), h0.grad.numpy().copy()))
    for a, b in zip(*grads):
        assert_close(a, b, "h0 twice", rtol=1e-12)


# ---- checkpointing -------------------------------------------------------------------

@pytest.mark.parametrize("checkpoint", [1, 2, 3, "sqrt", 100])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_checkpointed_gradients_equal_stored(kind, checkpoint):
    rng = seeded(25)
    stored = make_layer(kind, "tanh", 3, 4, rng, num_layers=2, bidirectional=True)
    recomputed = make_layer(kind, "tanh", 3, 4, rng, num_layers=2, bidirectional=True, checkpoint=checkpoint)
    recomputed.load_state_dict(stored.state_dict())
    x = rng.standard_normal((10, 3, 3))
    assert_same(run(recomputed, x, lengths=[10, 4, 7]), run(stored, x, lengths=[10, 4, 7]))


def test_checkpointed_custom_cell():
    cell = MinimalGatedUnit(3, 4).double()
    x = seeded(26).standard_normal((9, 2, 3))
    assert_same(run(nn.Recurrent(cell, checkpoint="sqrt"), x), run(nn.Recurrent(cell), x))


def test_checkpoint_is_validated():
    for bad in (0, -2, 1.5, "log", True):
        with pytest.raises(ValueError, match="checkpoint"):
            nn.LSTM(2, 3, checkpoint=bad)


def _peak(T, **options):
    """Peak traced memory of one training step of an LSTM over T steps, and its gradients (float64)."""
    tg.manual_seed(0)
    lstm = nn.LSTM(3, 4, dtype="float64", **options)
    x = tg.randn(T, 2, 3, dtype="float64", requires_grad=True)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out, (h_n, c_n) = lstm(x)
        (out.sum() + c_n.sum()).backward()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, [x.grad.numpy()] + [p.grad.numpy() for p in lstm.parameters()]


@pytest.mark.slow
def test_sqrt_checkpointing_keeps_a_tenth_of_the_memory_at_10000_steps():
    (stored, expected), (checkpointed, grads) = _peak(10_000), _peak(10_000, checkpoint="sqrt")
    assert checkpointed * 10 <= stored, (stored, checkpointed)  # no (T, B, 4H) projection is kept either
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("checkpoint", [None, 2])
def test_retained_graph_backpropagates_twice(checkpoint):
    layer = make_layer("lstm", "tanh", 2, 3, seeded(27), checkpoint=checkpoint)
    x = tg.Tensor(seeded(28).standard_normal((6, 2, 2)), requires_grad=True)
    out, _ = layer(x)
    loss = (out * out).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-12)
    with pytest.raises(RuntimeError, match="freed"):
        loss.backward()


@pytest.mark.parametrize("checkpoint", [None, 3])
def test_second_derivatives_through_a_captured_loop_equal_eager(checkpoint):
    """create_graph through the Loop node re-runs the recorded program on the tape."""
    layer = make_layer("gru", "tanh", 2, 3, seeded(29), bidirectional=True, checkpoint=checkpoint)
    x = tg.Tensor(seeded(30).standard_normal((5, 2, 2)), requires_grad=True)
    v = tg.Tensor(seeded(31).standard_normal((5, 2, 2)))
    results = []
    for eager in (False, True):
        with capture.disabled() if eager else contextlib.nullcontext():
            out, _ = layer(x, lengths=[5, 3])
        (g,) = tg.grad((out * out).sum(), [x], create_graph=True)
        x.grad = None
        (g * v).sum().backward()  # Hessian-vector product
        results.append((g.numpy().copy(), x.grad.numpy().copy()))
    for a, b in zip(*results):
        assert_close(a, b, "hvp", rtol=1e-12)


def test_a_list_state_given_to_a_cell_that_returns_tuples_is_captured():
    cell = PeepholeLSTM(3, 4).double()
    x = tg.Tensor(seeded(32).standard_normal((5, 2, 3)))
    state = [tg.Tensor(seeded(33).standard_normal((2, 4))), tg.Tensor(seeded(34).standard_normal((2, 4)))]
    with counted() as seen:
        out, final = nn.Recurrent(cell)(x, state)
    assert seen["captured"] == 1 and isinstance(final, tuple)
    with capture.disabled():
        out_eager, final_eager = nn.Recurrent(cell)(x, state)
    np.testing.assert_allclose(out.numpy(), out_eager.numpy(), rtol=1e-12)
    np.testing.assert_allclose(final[1].numpy(), final_eager[1].numpy(), rtol=1e-12)


class ScalarGate(nn.Module):
    """A step with 0-d intermediates: a scalar made from the state (its mean square) gates the update."""
    hidden_size = 3

    def __init__(self):
        self.w = nn.Parameter(tg.Tensor(seeded(40).standard_normal((2, 3)) * 0.5))

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 3, dtype=self.w.dtype)

    def forward(self, x, h):
        gate = (h * h).mean().tanh()
        return (x @ self.w + gate * h).tanh()


def test_a_step_with_scalar_intermediates_is_captured():
    layer = nn.Recurrent(ScalarGate().double())
    rng = seeded(41)
    x, state = rng.standard_normal((7, 2, 2)), [rng.standard_normal((2, 3))]
    with counted() as seen:
        captured = run(layer, x, state, lengths=[7, 4])
    assert seen["captured"] == 1
    assert_same(captured, run(layer, x, state, lengths=[7, 4], eager=True))


def test_the_compiled_step_can_be_read_and_is_compiled_once_per_structure():
    lstm = nn.LSTM(3, 4)
    out, _ = lstm(tg.randn(5, 2, 3))
    source = out.grad_fn.run.source
    assert "def forward(" in source and "def backward(" in source
    assert source.count(".forward(") == len(out.grad_fn.run.step_ops)
    compiled = len(capture._compiled)
    again, _ = lstm(tg.randn(7, 3, 3))  # other T and batch: the same step structure, other shapes
    assert len(capture._compiled) == compiled and again.grad_fn.run.source == source
    assert again.grad_fn.run.forward_step is not out.grad_fn.run.forward_step  # each run its own closures


# ---- values the step computes from its data outside the ops --------------------------

class Embedded(nn.Module):
    """h' = tanh(h W + E[x_t] + f(x_t)): the step embeds its own tokens; `how` adds a risky read."""
    hidden_size = 3

    def __init__(self, how):
        self.how = how
        self.emb = nn.Embedding(6, 3, dtype="float64")
        self.w = nn.Parameter(tg.Tensor(seeded(30).standard_normal((3, 3)) * 0.5))

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 3, dtype="float64")

    def forward(self, x, h):
        tokens = x[:, 0]
        pre = h @ self.w + self.emb(tokens)
        if self.how == "array":  # a mask made from the step's data outside the ops
            pre = pre + tg.Tensor(tokens.array > 2).double()[:, None]
        if self.how == "index":  # an index array made from the step's data, passed as an option
            pre = pre + self.emb.weight[tokens.array][:, :1]
        return pre.tanh()


@pytest.mark.parametrize("how, reason", [("embedding", None), ("array", "reads the array of a tensor"),
                                         ("index", "reads the array of a tensor")])
def test_values_computed_from_the_steps_data_are_never_baked_in(how, reason):
    tokens = np.array([1, 1, 1, 2, 3, 4, 5]).reshape(7, 1, 1).repeat(2, axis=1)  # equal at the two recorded steps
    tokens[:, 1] = 5 - tokens[:, 1]
    cell = Embedded(how)
    layer = nn.Recurrent(cell)
    with counted() as seen, pytest.warns(capture.FallbackWarning, match=reason) if reason else \
            contextlib.nullcontext():
        out, _ = layer(tg.Tensor(tokens))
        out.sum().backward()
    grads = [p.grad.numpy().copy() for p in cell.parameters()]
    assert seen["captured"] == (reason is None), seen
    cell.zero_grad()
    with capture.disabled():
        eager, _ = layer(tg.Tensor(tokens))
        eager.sum().backward()
    np.testing.assert_allclose(out.numpy(), eager.numpy(), rtol=1e-12)
    for g, p in zip(grads, cell.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_an_index_array_made_at_each_step_falls_back():
    class Picked(Embedded):
        def forward(self, x, h):
            rows = np.arange(h.shape[0])  # a new array at every step (harmless here, but it could hold data)
            return (h @ self.w)[rows].tanh() + x
    with pytest.warns(capture.FallbackWarning, match="an array it makes at each step"):
        nn.Recurrent(Picked("none"))(tg.randn(5, 2, 3, dtype="float64"))


class Peaked(nn.Module):
    """softmax and logsumexp of the step input, whose largest entry moves after the recorded steps."""
    hidden_size = 3

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 3, dtype="float64")

    def forward(self, x, h):
        z = x * 1000.0 + h
        return z.softmax(-1) + z.logsumexp(-1, keepdims=True) * 1e-3


def test_softmax_and_logsumexp_in_a_step_are_captured_and_follow_the_data():
    x = np.zeros((6, 2, 3))
    x[:2, :, 0], x[2:, :, 1] = 1.0, 1.0
    with counted() as seen:
        captured = run(nn.Recurrent(Peaked()), x)
    assert seen["captured"] == 1, seen
    assert_same(captured, run(nn.Recurrent(Peaked()), x, eager=True))
    assert captured["output"][-1, 0, 1] > 0.99  # the moved peak, not the recorded one


def test_an_lstm_cell_first_used_inside_a_recorded_step_is_captured():
    from tinygrad_seq.nn import cells
    cells._gate_scales.cache_clear()

    class Wrapped(nn.Module):
        hidden_size = 4

        def __init__(self):
            self.cell = nn.LSTMCell(3, 4, dtype="float64")

        def initial_state(self, batch_size):
            return self.cell.initial_state(batch_size)

        def forward(self, x, state):
            return self.cell(x, state)

    with counted() as seen:
        nn.Recurrent(Wrapped())(tg.randn(5, 2, 3, dtype="float64"))
    assert seen["captured"] == 1, seen
