"""Primitives of PyTorch's wider math surface (sin, cos, atan, log1p, expm1, cumsum), each a Function
with a forward on raw arrays and one derivative rule, as engine/ops.py's are: they sit beside the
methods that use them (elementwise.py, axis_methods.py), outside the engine a reader must know."""
from ..engine import ops
from ..engine.backend import array_namespace
from ..engine.function import Function


class Sin(Function):
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).sin(a)

    def backward(ctx, g):
        return g * Cos.call(ctx.a)


class Cos(Function):
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).cos(a)

    def backward(ctx, g):
        return -(g * Sin.call(ctx.a))


class Atan(Function):
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).arctan(a)

    def backward(ctx, g):
        return g / (ctx.a * ctx.a + 1)


class Log1p(Function):
    """log(1 + x), accurate for small x."""
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).log1p(a)

    def backward(ctx, g):
        return g / (ctx.a + 1)


class Expm1(Function):
    """exp(x) - 1, accurate for small x."""
    def forward(ctx, a):
        ctx.out = out = array_namespace(a).expm1(a)
        return out

    def backward(ctx, g):
        return g * (ctx.out + 1)


class CumSum(Function):
    """Running sums along `axis`; the rule is the running sum from the other end."""
    def forward(ctx, a, axis):
        ctx.axis = axis
        return array_namespace(a).cumsum(a, axis=axis)

    def backward(ctx, g):
        axis = (ctx.axis,)
        return ops.Flip.call(CumSum.call(ops.Flip.call(g, axis=axis), axis=ctx.axis), axis=axis)
