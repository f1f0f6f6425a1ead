"""Custom Functions in both styles: tinygrad (arrays, ctx is the instance) and PyTorch (@staticmethod, Tensors)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import Function, Tensor
from tinygrad_seq.engine.backend import array_namespace


class SoftsignArrays(Function):
    """x / (1 + |x|), tinygrad style."""
    def forward(ctx, x):
        ctx.denominator = 1 + array_namespace(x).abs(x)
        return x / ctx.denominator

    def backward(ctx, grad):
        return grad / (ctx.denominator * ctx.denominator)


class SoftsignTensors(Function):
    """x / (1 + |x|), PyTorch style."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x / (x.abs() + 1)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        d = x.abs() + 1
        return grad / (d * d)


class ScaledProduct(Function):
    """(a * b * scale, a + b): two inputs, a non-Tensor argument, two outputs, PyTorch style."""
    @staticmethod
    def forward(ctx, a, scale, b):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return a * b * scale, a + b

    @staticmethod
    def backward(ctx, g_prod, g_sum):
        a, b = ctx.saved_tensors
        ga = g_prod * b * ctx.scale + g_sum if ctx.needs_input_grad[0] else None
        gb = g_prod * a * ctx.scale + g_sum if ctx.needs_input_grad[2] else None
        return ga, None, gb


VALUES = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4),
                    elements=st.floats(-3, 3).filter(lambda v: abs(v) > 0.05))


@given(x=VALUES)
def test_both_styles_agree_with_each_other_and_the_derivative(x):
    for fn in (SoftsignArrays, SoftsignTensors):
        t = Tensor(x, requires_grad=True)
        out = fn.apply(t)
        np.testing.assert_allclose(out.numpy(), x / (1 + np.abs(x)))
        out.sum().backward()
        np.testing.assert_allclose(t.grad.numpy(), 1 / (1 + np.abs(x)) ** 2)
        assert tg.gradcheck(fn.apply, [Tensor(x, requires_grad=True)])


@given(a=VALUES, seed=st.integers(0, 2**16))
def test_pytorch_style_with_several_inputs_outputs_and_broadcasting(a, seed):
    b = np.random.default_rng(seed).uniform(-2, 2, a.shape[-1:])  # broadcast against a
    assert tg.gradcheck(lambda x, y: ScaledProduct.apply(x, 0.5, y), [Tensor(a, requires_grad=True),
                                                                        Tensor(b, requires_grad=True)])
    ta, tb = Tensor(a, requires_grad=True), Tensor(b)  # b needs no gradient
    prod, total = ScaledProduct.apply(ta, 2.0, tb)
    assert prod.grad_fn is total.grad_fn and repr(prod.grad_fn) == "<ScaledProductBackward>"
    total.sum().backward()  # the unused output's gradient arrives as zeros
    np.testing.assert_allclose(ta.grad.numpy(), np.ones_like(a))
    assert tb.grad is None


class ExpTensors(Function):
    """exp, saving its output (PyTorch's documentation example)."""
    @staticmethod
    def forward(ctx, x):
        result = x.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        result, = ctx.saved_tensors
        return grad * result


@given(x=VALUES)
def test_pytorch_style_backward_is_recorded_under_create_graph(x):
    """Written with Tensor ops, it is twice differentiable; a saved output is re-attached to the node."""
    assert tg.gradgradcheck(SoftsignTensors.apply, [Tensor(x, requires_grad=True)])
    assert tg.gradgradcheck(ExpTensors.apply, [Tensor(x, requires_grad=True)])
    t = Tensor(x, requires_grad=True)
    (g,) = tg.grad(ExpTensors.apply(t).sum(), t, create_graph=True)
    (gg,) = tg.grad(g.sum(), t)
    np.testing.assert_allclose(gg.numpy(), np.exp(x))


def test_pytorch_style_forward_does_not_record_and_outputs_without_grad_pass_through():
    seen = {}

    class Probe(Function):
        @staticmethod
        def forward(ctx, x):
            seen["grad_mode"] = tg.is_grad_enabled()
            seen["needs"] = ctx.needs_input_grad
            return x * 2

        @staticmethod
        def backward(ctx, g):
            seen["backward_grad_mode"] = tg.is_grad_enabled()
            return g * 2

    x = Tensor([1.0], requires_grad=True)
    y = Probe.apply(x)
    y.backward(Tensor([1.0]))
    assert seen == {"grad_mode": False, "needs": (True,), "backward_grad_mode": False}
    assert x.grad.tolist() == [2.0]
    assert Probe.apply(Tensor([1.0])).grad_fn is None  # nothing required grad: nothing recorded


def test_mark_non_differentiable_and_integer_outputs():
    class SortWithIndices(Function):
        @staticmethod
        def forward(ctx, x):
            order = Tensor(np.argsort(x.numpy()))
            values = x[order]
            ctx.save_for_backward(order)
            ctx.mark_non_differentiable(order)
            return values, order

        @staticmethod
        def backward(ctx, g, g_order):
            order, = ctx.saved_tensors
            out = tg.zeros(g.shape, dtype=g.dtype)
            out.array[order.numpy()] = g.numpy()
            return out

    x = Tensor([3.0, 1.0, 2.0], requires_grad=True)
    values, order = SortWithIndices.apply(x)
    assert values.requires_grad and not order.requires_grad and order.grad_fn is None
    (values * Tensor([1.0, 10.0, 100.0])).sum().backward()
    assert x.grad.tolist() == [100.0, 1.0, 10.0]


def test_saved_tensors_are_version_checked_and_freed():
    x = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([3.0, 4.0])
    y = ScaledProduct.apply(x, 1.0, c)[0]
    c.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation: ScaledProduct"):
        y.sum().backward()
    y = SoftsignTensors.apply(x)
    node = y.grad_fn
    y.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        node.saved_tensors


def test_mixing_styles_in_one_class_is_refused_at_definition():
    with pytest.raises(TypeError, match="both be @staticmethod"):
        class Half(Function):
            @staticmethod
            def forward(ctx, x):
                return x

            def backward(ctx, g):
                return g
    with pytest.raises(TypeError, match="both be @staticmethod"):
        class NoBackward(Function):
            @staticmethod
            def forward(ctx, x):
                return x


class ReturnsArray(Function):
    @staticmethod
    def forward(ctx, x):
        return x.numpy()

    @staticmethod
    def backward(ctx, g):
        return g


class WrongCount(Function):
    @staticmethod
    def forward(ctx, x, y):
        return x * y

    @staticmethod
    def backward(ctx, g):
        return g


class ReturnsArrayGrad(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, g):
        return g.numpy()


class GradForConstant(Function):
    @staticmethod
    def forward(ctx, x, k):
        return x * k

    @staticmethod
    def backward(ctx, g):
        return g, g


class ArraysReturnsTensor(Function):
    def forward(ctx, x):
        return Tensor(x)

    def backward(ctx, g):
        return g


@pytest.mark.parametrize("fn, args, error, match", [
    (ReturnsArray, 1, TypeError, "must return a Tensor or a tuple of Tensors, got ndarray"),
    (WrongCount, 2, RuntimeError, "returned 1 gradients, expected 2"),
    (ReturnsArrayGrad, 1, TypeError, "returned a ndarray for argument 0"),
    (GradForConstant, "k", RuntimeError, "argument 1, which is not a Tensor"),
    (ArraysReturnsTensor, 1, TypeError, "plain-method forward works on arrays"),
])
def test_wrongly_written_functions_get_clear_errors(fn, args, error, match):
    x = Tensor([1.0, 2.0], requires_grad=True)
    inputs = (x,) if args == 1 else (x, Tensor([3.0, 4.0], requires_grad=True)) if args == 2 else (x, 2.0)
    with pytest.raises(error, match=match):
        fn.apply(*inputs).sum().backward()


def test_calling_a_function_instance_says_to_use_apply():
    with pytest.raises(TypeError, match=r"SoftsignArrays.apply"):
        SoftsignArrays()(Tensor([1.0]))
