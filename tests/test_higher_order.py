"""Higher-order gradients: grad(), backward(create_graph=True), every rule run on Tensors.

Second derivatives of every primitive and composite of tests/test_ops.py (its OPS table:
the same hypothesis-drawn shapes and values, kept away from kinks by construction) are
checked with gradgradcheck: finite differences of the tape's recorded gradient, float64.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq import Function, Tensor
from tinygrad_seq.engine import ops
from tinygrad_seq.tensors import fused
from tinygrad_seq.autograd.gradcheck import GradcheckError, gradgradcheck
from test_ops import OPS, leaves

F64 = np.float64


def t64(values, requires_grad=True):
    return Tensor(np.asarray(values, dtype=F64), requires_grad=requires_grad)


# ---- every primitive and composite, twice differentiated --------------------------------------

@pytest.mark.parametrize("spec", [s for s in OPS if s.finite_differences], ids=repr)
@settings(max_examples=4)
@given(data=st.data())
def test_second_derivatives_match_finite_differences(spec, data):
    case = data.draw(spec.fd_case, label="case")
    xs = leaves(case, F64, "cpu")
    assert gradgradcheck(lambda *ts: spec.run("cpu", *ts, **case.kw), xs,
                         seed=data.draw(st.integers(0, 2 ** 16), label="seed"))


@pytest.mark.parametrize("spec", OPS, ids=repr)
@settings(max_examples=4)
@given(data=st.data())
def test_rules_on_tensors_give_the_same_first_derivatives_as_on_arrays(spec, data):
    """gradgradcheck differentiates the rules run on Tensors; this pins their values to the same rules on arrays."""
    case = data.draw(spec.case, label="case")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    xs = leaves(case, F64, "cpu")
    floats = [x for x in xs if x.requires_grad]
    outs = spec.run("cpu", *xs, **case.kw)
    outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o.requires_grad]
    vs = [t64(rng.uniform(-1, 1, o.shape), False) for o in outs]
    if not outs:
        return
    raw = tg.grad(outs, floats, vs, retain_graph=True, allow_unused=True)
    recorded = tg.grad(outs, floats, vs, create_graph=True, allow_unused=True)
    for k, (a, b) in enumerate(zip(raw, recorded)):
        assert (a is None) == (b is None), f"input {k}"
        if a is not None:
            assert a.shape == b.shape and a.dtype == b.dtype, f"input {k}"
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-14, err_msg=f"input {k}")


def test_every_primitive_writes_its_derivative_once():
    """One rule per primitive (engine and fused ones): the same backward runs on arrays and on Tensors."""
    base = ops.Function
    classes = [c for module in (ops, fused) for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, base) and c is not base]
    assert len(classes) >= 28
    assert [c.__name__ for c in classes if hasattr(c, "backward_graph") or not callable(getattr(c, "backward", None))] == []


def test_scatter_and_getitem_are_adjoint_twice():
    x = t64(np.arange(12.0).reshape(3, 4) / 7)
    index = np.array([0, 2, 0])
    assert gradgradcheck(lambda a: (a[index] ** 2), [x])
    assert gradgradcheck(lambda a: (a[1:, ::2] ** 3), [x])


def test_known_second_derivatives():
    x = t64([0.3, -0.7, 1.2])
    (g,) = tg.grad((x ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    assert g.requires_grad
    (h,) = tg.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())
    assert not h.requires_grad
    (g,) = tg.grad(x.tanh().sum(), x, create_graph=True)
    (h,) = tg.grad(g.sum(), x)
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(h.numpy(), -2 * t * (1 - t ** 2))


def test_third_derivative():
    x = t64([0.4, -1.1])
    (g,) = tg.grad((x.exp() * x).sum(), x, create_graph=True)
    (h,) = tg.grad(g.sum(), x, create_graph=True)
    (k,) = tg.grad(h.sum(), x)
    np.testing.assert_allclose(k.numpy(), np.exp(x.numpy()) * (x.numpy() + 3))


# ---- backward(create_graph=True) ---------------------------------------------------------------

def test_backward_create_graph_fills_grad_on_the_tape():
    x = t64([0.5, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad and x.grad.grad_fn is not None
    g = x.grad
    x.grad = None
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * np.array([0.5, 2.0]))


def test_backward_create_graph_accumulates_out_of_place_and_honours_hooks():
    x = t64([1.0, 2.0])
    x.register_hook(lambda g: g * 2)
    (x * x).sum().backward(create_graph=True)
    first = x.grad
    (x * x).sum().backward(create_graph=True)
    np.testing.assert_allclose(first.numpy(), 4 * x.numpy())  # the first .grad was not written into
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.numpy())


def test_retained_gradient_and_node_hooks_see_tensors():
    x = t64([1.0, -2.0])
    y = x * 3
    y.retain_grad()
    seen = []
    y.register_hook(lambda g: seen.append(type(g)))
    (y ** 2).sum().backward(create_graph=True)
    assert seen == [Tensor]
    np.testing.assert_allclose(y.grad.numpy(), 2 * y.numpy())
    assert y.grad.requires_grad


def test_default_backward_is_unchanged_and_frees_the_graph():
    x = t64([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    assert not x.grad.requires_grad
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


# ---- grad() semantics ------------------------------------------------------------------------

def test_grad_leaves_dot_grad_alone_and_takes_sequences():
    x, w = t64([1.0, 2.0]), t64([3.0, -1.0])
    x.grad = t64([9.0, 9.0], requires_grad=False)
    y1, y2 = (x * w).sum(), (x * x).sum()
    gx, gw = tg.grad([y1, y2], [x, w], [t64(1.0, False), t64(2.0, False)])
    np.testing.assert_allclose(gx.numpy(), w.numpy() + 4 * x.numpy())
    np.testing.assert_allclose(gw.numpy(), x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), [9.0, 9.0])
    assert w.grad is None


def test_grad_with_respect_to_an_intermediate_tensor_stops_there():
    x = t64([1.0, 2.0])
    h = x.exp()
    y = (h * h).sum()
    (gh,) = tg.grad(y, h)
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())


def test_grad_allow_unused():
    x, z = t64([1.0]), t64([2.0, 3.0])
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"input 1 \(shape \(2,\)\) was not used"):
        tg.grad(y, [x, z], retain_graph=True)
    gx, gz = tg.grad(y, [x, z], allow_unused=True)
    assert gz is None and gx.numpy().tolist() == [2.0]


def test_grad_retain_graph_defaults_to_create_graph():
    x = t64([1.0, 2.0])
    y = (x.exp()).sum()
    tg.grad(y, x)
    with pytest.raises(RuntimeError, match="already freed"):
        tg.grad(y, x)
    y = (x.exp()).sum()
    tg.grad(y, x, create_graph=True)
    tg.grad(y, x)  # kept: create_graph implies retain_graph
    y = (x.exp()).sum()
    tg.grad(y, x, retain_graph=True)
    tg.grad(y, x)


def test_grad_outputs_checked():
    x = t64([[1.0, 2.0]])
    y = x * 2
    with pytest.raises(RuntimeError, match="implicitly created only for outputs with one element"):
        tg.grad(y, x)
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\), output 0 has shape \(1, 2\)"):
        tg.grad(y, x, t64([1.0, 1.0], False))
    with pytest.raises(ValueError, match="2 grad_outputs for 1 outputs"):
        tg.grad(y, x, [t64([[1.0, 1.0]], False)] * 2)
    with pytest.raises(RuntimeError, match="input 0 .* does not require grad"):
        tg.grad(y, t64([1.0], False))
    with pytest.raises(RuntimeError, match="output 0 .* does not require grad"):
        tg.grad(t64([1.0], False), x)
    v = np.array([[0.5, -1.0]])
    (g,) = tg.grad(y, x, v)  # an array is accepted as grad_output
    np.testing.assert_allclose(g.numpy(), 2 * v)
    assert v.tolist() == [[0.5, -1.0]]


def test_grad_result_is_not_a_view_of_grad_outputs():
    x = t64([1.0, 2.0])
    v = t64([1.0, 1.0], False)
    (g,) = tg.grad(x + 1, x, v)
    g.array[...] += 1
    assert v.numpy().tolist() == [1.0, 1.0]


def test_grad_outputs_on_the_tape_double_vjp():
    """grad_outputs may require grad: the vjp is then differentiable in them (what jvp uses)."""
    x = t64([0.5, -0.3])
    u = t64([0.0, 0.0])
    y = x.tanh() * 3
    (g,) = tg.grad(y, x, u, create_graph=True)
    v = t64([1.0, 2.0], False)
    (jv,) = tg.grad(g, u, v)
    np.testing.assert_allclose(jv.numpy(), 3 * (1 - np.tanh(x.numpy()) ** 2) * v.numpy())


def test_grad_is_reentrant_from_a_rule():
    """A node whose rule differentiates its own recomputed forward with grad() (as the captured loop does)."""
    class Recomputed(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a.tanh()

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            with tg.enable_grad():
                out = (a * 1.0).tanh()  # any graph built from a
                return tg.grad(out, a, g, create_graph=True)[0]

    x = t64([0.2, 0.9])
    y = Recomputed.apply(x)
    (g,) = tg.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 1 - np.tanh(x.numpy()) ** 2)
    (h,) = tg.grad(g.sum(), x)
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(h.numpy(), -2 * t * (1 - t ** 2))


def test_a_rule_written_with_operators_is_differentiable_twice():
    """The rule reads its input from ctx: under create_graph that is the input on the tape."""
    class Cube(Function):
        def forward(ctx, a):
            ctx.a = a
            return a ** 3

        def backward(ctx, g):
            return 3 * g * ctx.a ** 2

    x = t64([1.0, -2.0])
    assert gradgradcheck(lambda a: Cube.apply(a * 1.5), [x])
    (g,) = tg.grad(Cube.apply(x).sum(), x, create_graph=True)
    (h,) = tg.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())


def test_a_rule_that_calls_numpy_says_it_works_on_arrays_only():
    class Sine(Function):
        def forward(ctx, a):
            ctx.a = a
            return np.sin(a)

        def backward(ctx, g):
            return g * np.cos(ctx.a)

    x = t64([1.0, 2.0])
    y = Sine.apply(x).sum()
    (g,) = tg.grad(y, x, retain_graph=True)  # first order: on arrays
    np.testing.assert_allclose(g.numpy(), np.cos([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="Sine.backward could not run on Tensors"):
        tg.grad(y, x, create_graph=True)


def test_gradgradcheck_catches_a_wrong_second_derivative():
    class WrongCurvature(Function):
        def forward(ctx, a):
            ctx.a_squared = a ** 2  # kept, but neither an input nor an output: a constant under create_graph
            return a ** 3

        def backward(ctx, g):
            return 3 * g * ctx.a_squared

    x = t64([1.0, -2.0])
    with pytest.raises(GradcheckError):
        gradgradcheck(lambda a: WrongCurvature.apply(a), [x])


def test_create_graph_through_broadcasting_and_float32():
    x = Tensor(np.array([[0.5], [1.5]], dtype=np.float32), requires_grad=True)
    b = Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    y = (x * b).tanh().sum()
    gx, gb = tg.grad(y, [x, b], create_graph=True)
    assert gx.shape == (2, 1) and gb.shape == (3,) and gx.dtype == np.float32
    (h,) = tg.grad((gx * gx).sum(), b)
    assert h.shape == (3,) and h.dtype == np.float32


def test_deep_chain_create_graph_has_no_recursion():
    x = t64([0.1])
    y = x
    for _ in range(3000):
        y = y * 1.0001
    (g,) = tg.grad(y.sum(), x, create_graph=True)
    assert not g.requires_grad  # the gradient of a linear chain is constant in x, as in PyTorch
    np.testing.assert_allclose(g.numpy(), [1.0001 ** 3000])
    (g,) = tg.grad((y * x).sum(), x, create_graph=True)
    (h,) = tg.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), [2 * 1.0001 ** 3000])


# ---- the README's section runs ------------------------------------------------------------------

def test_readme_higher_order_section_runs(capsys):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Higher-order gradients", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "|Hv - finite differences|" in out and out.strip().endswith("True")


def test_grad_walks_only_what_leads_to_its_inputs():
    """Upstream of an intermediate input the walk stops: a rule there is never run."""
    class NoSecondOrder(Function):
        def forward(ctx, a):
            return a * 2

        def backward(ctx, g):
            raise AssertionError("not needed: the walk should stop at h")

    x = t64([0.3, 0.6])
    h = NoSecondOrder.apply(x).tanh()
    (gh,) = tg.grad((h ** 3).sum(), h, create_graph=True)
    np.testing.assert_allclose(gh.numpy(), 3 * h.numpy() ** 2)


def test_detect_anomaly_names_the_op_in_a_create_graph_backward():
    x = t64([0.0, 1.0])
    with tg.detect_anomaly():
        y = (x.sqrt()).sum()
        with pytest.raises(FloatingPointError, match="Pow backward produced NaN or inf"):
            tg.grad(y, x, create_graph=True)
