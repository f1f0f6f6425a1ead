"""The primitives: each a Function with a forward on raw arrays and ONE derivative rule.

A rule uses operators, array methods (reshape, sum, T, astype) and other primitives (`Op.call`),
so the same lines run on arrays in an ordinary backward and on Tensors under create_graph. A
broadcast operand's gradient comes back at the broadcast shape: the walk sums it back. All else
is a composite of these, or a primitive beside the methods that use it (the fused log-softmax,
losses and erf in tensors/fused.py; sin, cos, atan, log1p, expm1 and cumsum in tensors/math_ops.py).
"""
import itertools
import operator

from . import backend
from .backend import array_namespace
from .function import Function, ProductSum, TensorBase


# What NumPy functions would do, for rules: on arrays directly (the hot path), on Tensors as ops.

def _zeros(like, shape, dtype):
    """Zeros of `shape` where `like` lives: an array, or a constant Tensor when `like` is one."""
    data = like._data if isinstance(like, TensorBase) else like
    zeros = array_namespace(data).zeros(shape, dtype=dtype)
    return like._make(zeros, None, 0) if isinstance(like, TensorBase) else zeros


def _concatenate(parts, axis):
    return Cat.apply(*parts, axis=axis) if isinstance(parts[0], TensorBase) else \
        array_namespace(parts[0]).concatenate(parts, axis=axis)


def _stack(parts, axis):
    return Stack.apply(*parts, axis=axis) if isinstance(parts[0], TensorBase) else \
        array_namespace(parts[0]).stack(parts, axis=axis)


def _all_present(grads):
    """No None among `grads` (a plain loop: `None in grads` would compare arrays elementwise)."""
    for g in grads:
        if g is None:
            return False
    return True


# ---- elementwise ---------------------------------------------------------------------

class Add(Function):
    def forward(ctx, a, b, out=None):
        return a + b if out is None else array_namespace(out).add(a, b, out=out)

    def backward(ctx, g):
        return g, g


class Sub(Function):
    def forward(ctx, a, b, out=None):
        return a - b if out is None else array_namespace(out).subtract(a, b, out=out)

    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    def forward(ctx, a, b, out=None):
        ctx.a, ctx.b = a, b
        return a * b if out is None else array_namespace(out).multiply(a, b, out=out)

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (g * ctx.b if need_a else None), (g * ctx.a if need_b else None)


class Div(Function):
    def forward(ctx, a, b, out=None):
        ctx.a, ctx.b = a, b
        return a / b if out is None else array_namespace(out).divide(a, b, out=out)

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        ga = g / ctx.b
        return (ga if need_a else None), (-ga * ctx.a / ctx.b if need_b else None)


class Pow(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        ctx.out = out = a ** b
        return out

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        a, b = ctx.a, ctx.b
        if need_b:  # a Python scalar base (2 ** x) has its log taken in g's dtype
            log_a = Log.call(a) if isinstance(a, TensorBase) or backend.is_array(a) else \
                array_namespace(g._data if isinstance(g, TensorBase) else g).log(g.dtype.type(a))
        return (g * b * a ** (b - 1) if need_a else None), (g * ctx.out * log_a if need_b else None)


class Maximum(Function):
    """Elementwise max; at ties the gradient is split evenly, like PyTorch."""
    wins = staticmethod(operator.gt)

    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return array_namespace(a if hasattr(a, "dtype") else b).maximum(a, b)  # (one may be a Python number)

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        share = (ctx.wins(a, b) + (a == b) * 0.5).astype(g.dtype)  # a's share: 1, 1/2 at ties, else 0
        need_a, need_b = ctx.needs_input_grad
        return (g * share if need_a else None), (g * (1 - share) if need_b else None)


class Minimum(Maximum):
    """Elementwise min; at ties the gradient is split evenly, like PyTorch."""
    wins = staticmethod(operator.lt)

    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return array_namespace(a if hasattr(a, "dtype") else b).minimum(a, b)


class Where(Function):
    """where(condition, a, b); the condition is a constant boolean array."""
    def forward(ctx, condition, a, b):
        ctx.condition = condition
        return array_namespace(condition).where(condition, a, b)

    def backward(ctx, g):
        _, need_a, need_b = ctx.needs_input_grad
        c, zero = ctx.condition, g.dtype.type(0)
        return None, (Where.call(c, g, zero) if need_a else None), (Where.call(c, zero, g) if need_b else None)


class Neg(Function):
    def forward(ctx, a, out=None):
        return -a if out is None else array_namespace(out).negative(a, out=out)

    def backward(ctx, g):
        return -g


class Exp(Function):
    def forward(ctx, a, out=None):
        ctx.out = out = array_namespace(a).exp(a, out=out)
        return out

    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    def forward(ctx, a, out=None):
        ctx.a = a
        return array_namespace(a).log(a, out=out)

    def backward(ctx, g):
        return g / ctx.a


class Tanh(Function):
    def forward(ctx, a, out=None):
        ctx.out = out = array_namespace(a).tanh(a, out=out)
        return out

    def backward(ctx, g):
        out = ctx.out
        d = g * out  # (1 - tanh^2) g = g - g tanh tanh: three passes (in place on arrays)
        d *= out
        return g - d


class Sigmoid(Function):
    """1 / (1 + exp(-x)) computed as tanh(x/2)/2 + 1/2: no overflow for any x."""
    def forward(ctx, a, out=None):
        xp = array_namespace(a)
        out = xp.tanh(a * 0.5 if out is None else xp.multiply(a, 0.5, out=out), out=out)
        out *= 0.5
        out += 0.5
        ctx.out = out
        return out

    def backward(ctx, g):
        out = ctx.out
        d = 1 - out  # sigmoid' = s (1 - s), in one fresh buffer on arrays
        d *= out
        d *= g
        return d


class Relu(Function):
    def forward(ctx, a, out=None):
        ctx.a = a
        return array_namespace(a).maximum(a, a.dtype.type(0), out=out)

    def backward(ctx, g):
        return g * (ctx.a > 0)


class Call(Function):
    """xp.<name>(*arrays, **options), a NumPy function with no useful derivative: zero where it has one
    (floor, round, sign: the gradient is zeros, as PyTorch's) or none at all (isnan, logical_and, argsort:
    callers apply those under no_grad). An op, not a computation on the side, so a captured step replays it."""
    def forward(ctx, *arrays, name, **options):
        return getattr(array_namespace(next(a for a in arrays if backend.is_array(a))), name)(*arrays, **options)

    def backward(ctx, g):
        return tuple([_zeros(g, g.shape, g.dtype) if need else None for need in ctx.needs_input_grad])


# ---- reductions ----------------------------------------------------------------------

def _expand_back(g, shape, axis, keepdims):
    """Broadcast a reduced gradient back over the reduced axes of `shape`."""
    if not keepdims and axis is not None:
        g = g.reshape(tuple(1 if k in axis else n for k, n in enumerate(shape)))
    return Expand.call(g, shape=tuple(shape))


class Sum(Function):
    """sum over `axis` (a tuple of non-negative axes, or None for all)."""
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return array_namespace(a).asarray(a.sum(axis=axis, keepdims=keepdims))

    def backward(ctx, g):
        return _expand_back(g, ctx.shape, ctx.axis, ctx.keepdims)


class Max(Function):
    """max over `axis`; the gradient is shared evenly between tied maxima, like PyTorch's amax."""
    def forward(ctx, a, axis=None, keepdims=False):
        top = array_namespace(a).asarray(a.max(axis=axis, keepdims=True))
        ctx.a, ctx.top, ctx.axis, ctx.keepdims = a, top, axis, keepdims
        return top if keepdims else top.reshape([n for k, n in enumerate(top.shape) if axis is not None and k not in axis])

    def backward(ctx, g):
        share = (ctx.a == ctx.top).astype(g.dtype)  # 1/(number of tied maxima) at the maxima: a constant
        share = share / share.sum(axis=ctx.axis, keepdims=True)
        return _expand_back(g, ctx.a.shape, ctx.axis, ctx.keepdims) * share


# ---- linear algebra ------------------------------------------------------------------

class Matmul(Function):
    """a @ b with NumPy's rules: 1-D operands, batched and broadcasting stacks."""
    lazy_grads = (1,)  # b's gradient may come back as a ProductSum

    def forward(ctx, a, b, out=None):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k_a} != {k_b})")
        ctx.a, ctx.b = a, b
        return a @ b if out is None else array_namespace(out).matmul(a, b, out=out)

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        need_a, need_b = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # every recurrent step: b's gradient stays lazy on arrays, so a weight
            gb = (a.T @ g if isinstance(g, TensorBase) else ProductSum(a, g)) if need_b else None  # read at every
            return (g @ b.T if need_a else None), gb  # step gets one matmul over all steps (function.ProductSum)
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a  # 1-D operands act as a row / a column
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
        g2 = g.reshape(g.shape[:-1] + (1,) + g.shape[-1:]) if a.ndim == 1 else g
        g2 = g2.reshape(g2.shape + (1,)) if b.ndim == 1 else g2
        ga = gb = None
        if need_a:
            ga = g2 @ _swap(b2)
            ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:]) if a.ndim == 1 else ga
        if need_b:
            if b2.ndim == 2 and a2.ndim > 2 and a2.shape[-1] and g2.shape[-1]:
                gb = a2.reshape((-1, a2.shape[-1])).T @ g2.reshape((-1, g2.shape[-1]))  # a stack times one matrix
            else:
                gb = _swap(a2) @ g2
            gb = gb.reshape(gb.shape[:-1]) if b.ndim == 1 else gb
        return ga, gb


def _swap(a):
    """a with its last two axes swapped (a view)."""
    return Transpose.call(a, axes=tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2))


# ---- shape ---------------------------------------------------------------------------

class Reshape(Function):
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Transpose(Function):
    """Permute axes (a view): `axes` is a full permutation."""
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    def backward(ctx, g):  # the inverse permutation
        return Transpose.call(g, axes=tuple(sorted(range(len(ctx.axes)), key=ctx.axes.__getitem__)))


class Copy(Function):
    """A copy that owns its memory (C-contiguous if asked: hoist that out of time loops); the gradient passes."""
    def forward(ctx, a, contiguous=False):
        return array_namespace(a).ascontiguousarray(a) if contiguous else a.copy()

    def backward(ctx, g):
        return g


class Cast(Function):
    """Convert to another dtype; the gradient is converted back."""
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    def backward(ctx, g):
        return g.astype(ctx.dtype)


class Transfer(Function):
    """Copy to another device; the gradient travels back."""
    def forward(ctx, a, device):
        ctx.device = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(ctx, g):
        return Transfer.call(g, device=ctx.device)


class Expand(Function):
    """Broadcast to `shape` (a view); the walk sums the gradient back."""
    def forward(ctx, a, shape):
        return array_namespace(a).broadcast_to(a, shape)

    def backward(ctx, g):
        return g


class Flip(Function):
    def forward(ctx, a, axis):
        ctx.axis = axis
        return array_namespace(a).flip(a, axis)

    def backward(ctx, g):
        return Flip.call(g, axis=ctx.axis)


class GetItem(Function):
    """a[index]: basic slicing, integer arrays (gather) and boolean masks. Its rule is Scatter. The index
    comes as an argument (an array the captured loop can read at each step; it gets no gradient)."""
    def forward(ctx, a, index, advanced=False):
        ctx.shape, ctx.index, ctx.advanced = a.shape, index, advanced
        return a[index]

    def backward(ctx, g):
        return Scatter.call(g, shape=ctx.shape, index=ctx.index, advanced=ctx.advanced), None


class Scatter(Function):
    """zeros(shape) with the input written at `index` (added up where advanced indices repeat):
    GetItem's rule, and GetItem is its rule (the adjoint pair)."""
    def forward(ctx, g, shape, index, advanced=False):
        ctx.index, ctx.advanced = index, advanced
        out = array_namespace(g).zeros(shape, dtype=g.dtype)
        if advanced:
            backend.scatter_add(out, index, g)
        else:
            out[index] = g
        return out

    def backward(ctx, g):
        return GetItem.call(g, ctx.index, advanced=ctx.advanced)


class SetItem(Function):
    """A copy of `a` with `value` (broadcast) written at `index`: a[index] = value as recorded on the
    tape (Tensor.__setitem__). a's gradient is zero where it was overwritten; value's is the
    gradient there. Where advanced indices repeat, NumPy keeps the last write and each repeat
    passes the gradient on, as PyTorch's index_put does."""
    def forward(ctx, a, value, index, advanced=False):
        ctx.index, ctx.advanced, ctx.value_ndim = index, advanced, getattr(value, "ndim", 0)
        out = a.copy()
        out[index] = value
        return out

    def backward(ctx, g):
        need_a, need_value = ctx.needs_input_grad
        ga = SetItem.call(g, g.dtype.type(0), index=ctx.index, advanced=ctx.advanced) if need_a else None
        gv = GetItem.call(g, ctx.index, advanced=ctx.advanced) if need_value else None
        if gv is not None and gv.ndim < ctx.value_ndim:  # a value with extra leading 1s fills a smaller region
            gv = gv.reshape((1,) * (ctx.value_ndim - gv.ndim) + gv.shape)
        return ga, gv


class Cat(Function):
    def forward(ctx, *arrays, axis=0):
        ctx.axis, ctx.sizes = axis, [a.shape[axis] for a in arrays]
        return array_namespace(arrays[0]).concatenate(arrays, axis=axis)

    def backward(ctx, g):
        parts = Split.call(g, sizes=ctx.sizes, axis=ctx.axis)
        return tuple([p if need else None for p, need in zip(parts, ctx.needs_input_grad)])


class Stack(Function):
    """Stack T arrays along a new axis: one node, so gathering T step outputs is O(T)."""
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return array_namespace(arrays[0]).stack(arrays, axis=axis)

    def backward(ctx, g):
        parts = Unbind.call(g, axis=ctx.axis)
        return tuple([p if need else None for p, need in zip(parts, ctx.needs_input_grad)])


class Unbind(Function):
    """Split along `axis` into views without that axis: one node with many outputs."""
    def forward(ctx, a, axis=0):
        ctx.shape, ctx.axis, ctx.dtype = a.shape, axis, a.dtype
        lead = (slice(None),) * axis
        return tuple([a[lead + (k,)] for k in range(a.shape[axis])])

    def backward(ctx, *grads):
        if not _all_present(grads):  # a gradient that did not come is zeros
            like, part = next(g for g in grads if g is not None), ctx.shape[:ctx.axis] + ctx.shape[ctx.axis + 1:]
            grads = [_zeros(like, part, ctx.dtype) if g is None else g for g in grads]
        return _stack(grads, ctx.axis)


class Split(Function):
    """Split along `axis` at the given section sizes: one node with many outputs."""
    def forward(ctx, a, sizes, axis=0):
        ctx.shape, ctx.sizes, ctx.axis, ctx.dtype = a.shape, sizes, axis, a.dtype
        lead, ends = (slice(None),) * axis, list(itertools.accumulate(sizes))
        return tuple([a[lead + (slice(end - n, end),)] for n, end in zip(sizes, ends)])

    def backward(ctx, *grads):
        if not _all_present(grads):  # a gradient that did not come is zeros
            like, axis = next(g for g in grads if g is not None), ctx.axis
            grads = [_zeros(like, ctx.shape[:axis] + (n,) + ctx.shape[axis + 1:], ctx.dtype) if g is None else g
                     for g, n in zip(grads, ctx.sizes)]
        return _concatenate(grads, ctx.axis)


class Compare(Function):
    """a < b, a == b, ... (name: "__lt__", "__eq__", ...): a boolean array, no gradient."""
    def forward(ctx, a, b, name):
        try:
            return getattr(a, name)(b)
        except ValueError as e:
            raise ValueError(f"{name.strip('_')}: {e}") from None

    def backward(ctx, g):
        return None, None
