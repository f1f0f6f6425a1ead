"""The primitive ops: each a Function with forward and backward on raw backend arrays.

Gradients of broadcast operands are returned at the broadcast shape; the engine sums them
back to each input's shape (autograd._reduce_to). Everything else is a composite of these.

Each op also has `backward_graph(ctx, *grads)`: the same rule written with Tensor ops, which
the create_graph walk (higher_order.py) runs so that gradients are themselves on the tape.
It gets Tensor gradients (None for outputs without one) and rebuilds the inputs and
outputs it needs as tape Tensors with `ctx.input_tensor(i, array)` and
`ctx.output_tensor(k, array)`, so second derivatives flow through the saved values.
"""
import math

from . import autograd, backend
from .autograd import Function, ProductSum
from .backend import array_namespace, as_array, device_of, erf, is_array, scatter_add, to_device


def _namespace(*values):
    """The namespace of the first array among `values` (the others may be Python scalars)."""
    return array_namespace(next(v for v in values if is_array(v)))


def _all_present(grads):
    """No None among `grads` (a plain loop: this runs for every split at every time step)."""
    for g in grads:
        if g is None:
            return False
    return True


def _constant(array):
    """A Tensor off the tape (masks and shares: piecewise constant, so no second derivative)."""
    return autograd.Tensor._make(array if is_array(array) else as_array(array), None, 0)  # NumPy scalars: 0-d


# ---- elementwise, binary -------------------------------------------------------------

class Add(Function):
    def forward(ctx, a, b):
        return a + b

    def backward(ctx, g):
        return g, g

    def backward_graph(ctx, g):
        return g, g


class Sub(Function):
    def forward(ctx, a, b):
        return a - b

    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)

    backward_graph = backward  # the same expression on Tensors


class Mul(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a * b

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (g * ctx.b if need_a else None), (g * ctx.a if need_b else None)

    def backward_graph(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        ga = g * ctx.input_tensor(1, ctx.b) if need_a else None
        return ga, (g * ctx.input_tensor(0, ctx.a) if need_b else None)


class Div(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a / b

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        ga = g / ctx.b
        return (ga if need_a else None), (-ga * ctx.a / ctx.b if need_b else None)

    def backward_graph(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        a, b = ctx.input_tensor(0, ctx.a), ctx.input_tensor(1, ctx.b)
        ga = g / b
        return (ga if need_a else None), (-ga * a / b if need_b else None)


class Pow(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        ctx.out = out = a ** b
        return out

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        a, b = ctx.a, ctx.b
        ga = g * b * a ** (b - 1) if need_a else None
        if need_b:  # a may be a Python scalar base (2 ** x): take its log in g's dtype
            gb = g * ctx.out * array_namespace(g).log(a if is_array(a) else g.dtype.type(a))
        else:
            gb = None
        return ga, gb

    def backward_graph(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        a, b = ctx.input_tensor(0, ctx.a), ctx.input_tensor(1, ctx.b)
        ga = g * b * a ** (b - 1) if need_a else None
        gb = None
        if need_b:
            log_a = a.log() if is_array(ctx.a) else float(array_namespace(g.data).log(g.dtype.type(ctx.a)))
            gb = g * ctx.output_tensor(0, ctx.out) * log_a
        return ga, gb


class Maximum(Function):
    """Elementwise max; at ties the gradient is split evenly, like PyTorch."""
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return _namespace(a, b).maximum(a, b)

    def share(ctx, dtype):
        """How much of the gradient goes to a: 1 where a wins, 1/2 at ties, else 0."""
        a, b = ctx.a, ctx.b
        return ((a > b) + (a == b) * 0.5).astype(dtype)

    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        share = ctx.share(g.dtype)
        return (g * share if need_a else None), (g * (1 - share) if need_b else None)

    def backward_graph(ctx, g):  # the share is piecewise constant
        share = _constant(ctx.share(g.dtype))
        return g * share, g * (1 - share)


class Minimum(Function):
    """Elementwise min; at ties the gradient is split evenly, like PyTorch."""
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return _namespace(a, b).minimum(a, b)

    def share(ctx, dtype):
        """How much of the gradient goes to a: 1 where a wins, 1/2 at ties, else 0."""
        a, b = ctx.a, ctx.b
        return ((a < b) + (a == b) * 0.5).astype(dtype)

    backward, backward_graph = Maximum.backward, Maximum.backward_graph


class Where(Function):
    """where(condition, a, b); the condition is a constant boolean array."""
    def forward(ctx, condition, a, b):
        ctx.condition = condition
        return _namespace(condition, a, b).where(condition, a, b)

    def backward(ctx, g):
        xp, c = array_namespace(g), ctx.condition
        zero = g.dtype.type(0)
        _, need_a, need_b = ctx.needs_input_grad
        return None, (xp.where(c, g, zero) if need_a else None), (xp.where(c, zero, g) if need_b else None)

    def backward_graph(ctx, g):
        c = ctx.condition
        _, need_a, need_b = ctx.needs_input_grad
        return None, (Where.apply(c, g, 0.0) if need_a else None), (Where.apply(c, 0.0, g) if need_b else None)


class Compare(Function):
    """a < b, a == b, ... (name: "__lt__", "__eq__", ...): a boolean array, no gradient."""
    def forward(ctx, a, b, name):
        try:
            return getattr(a, name)(b)
        except ValueError as e:
            raise ValueError(f"{name.strip('_')}: {e}") from None

    def backward(ctx, g):
        return None, None

    backward_graph = backward


# ---- elementwise, unary --------------------------------------------------------------

class Neg(Function):
    def forward(ctx, a):
        return -a

    def backward(ctx, g):
        return -g

    backward_graph = backward


class Exp(Function):
    def forward(ctx, a):
        ctx.out = out = array_namespace(a).exp(a)
        return out

    def backward(ctx, g):
        return g * ctx.out

    def backward_graph(ctx, g):
        return g * ctx.output_tensor(0, ctx.out)


class Log(Function):
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).log(a)

    def backward(ctx, g):
        return g / ctx.a

    def backward_graph(ctx, g):
        return g / ctx.input_tensor(0, ctx.a)


class Tanh(Function):
    def forward(ctx, a):
        ctx.out = out = array_namespace(a).tanh(a)
        return out

    def backward(ctx, g):
        out = ctx.out
        d = g * out  # (1 - tanh^2) g = g - g tanh tanh: three array operations
        d *= out
        return g - d

    def backward_graph(ctx, g):
        out = ctx.output_tensor(0, ctx.out)
        return g * (1 - out * out)


class Sigmoid(Function):
    """1 / (1 + exp(-x)) computed as tanh(x/2)/2 + 1/2: no overflow for any x."""
    def forward(ctx, a):
        out = array_namespace(a).tanh(a * 0.5)
        out *= 0.5
        out += 0.5
        ctx.out = out
        return out

    def backward(ctx, g):
        out = ctx.out
        d = 1 - out  # sigmoid' = s (1 - s), in one fresh buffer
        d *= out
        d *= g
        return d

    def backward_graph(ctx, g):
        out = ctx.output_tensor(0, ctx.out)
        return g * (out * (1 - out))


class Erf(Function):
    """The error function; d erf(x)/dx = 2/sqrt(pi) exp(-x^2)."""
    def forward(ctx, a):
        ctx.a = a
        return erf(a)

    def backward(ctx, g):
        a = ctx.a
        d = _exp_nonpositive(array_namespace(g), -(a * a))
        d *= g
        d *= 2 / math.sqrt(math.pi)
        return d

    def backward_graph(ctx, g):
        x = ctx.input_tensor(0, ctx.a)
        floor = EXP_FLOOR.get(ctx.a.dtype.itemsize, -200.0)
        return g * (-(x * x)).clip(min=floor).exp() * (2 / math.sqrt(math.pi))


class Relu(Function):
    def forward(ctx, a):
        ctx.a = a
        return array_namespace(a).maximum(a, a.dtype.type(0))

    def backward(ctx, g):
        return g * (ctx.a > 0)

    def backward_graph(ctx, g):
        return g * _constant((ctx.a > 0).astype(g.dtype))


# ---- reductions ----------------------------------------------------------------------

def _expand_back(g, shape, axis, keepdims):
    """Broadcast a reduced gradient back over the reduced axes of `shape`."""
    if not keepdims and axis is not None:
        g = g.reshape([1 if (k in axis) else n for k, n in enumerate(shape)])
    return array_namespace(g).broadcast_to(g, shape)


def _expand_back_graph(g, shape, axis, keepdims):
    """_expand_back with Tensor ops."""
    if not keepdims and axis is not None:
        g = g.reshape([1 if (k in axis) else n for k, n in enumerate(shape)])
    return Expand.apply(g, shape=tuple(shape)) if g.shape != tuple(shape) else g


class Sum(Function):
    """sum over `axis` (a tuple of non-negative axes, or None for all)."""
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return array_namespace(a).asarray(a.sum(axis=axis, keepdims=keepdims))

    def backward(ctx, g):
        return _expand_back(g, ctx.shape, ctx.axis, ctx.keepdims)

    def backward_graph(ctx, g):
        return _expand_back_graph(g, ctx.shape, ctx.axis, ctx.keepdims)


class Max(Function):
    """max over `axis`; the gradient is shared evenly between tied maxima, like PyTorch's amax."""
    def forward(ctx, a, axis=None, keepdims=False):
        out = array_namespace(a).asarray(a.max(axis=axis, keepdims=True))
        ctx.a, ctx.out, ctx.axis, ctx.keepdims = a, out, axis, keepdims
        return out if keepdims else out.reshape([n for k, n in enumerate(out.shape)
                                                 if axis is not None and k not in axis])

    def share(ctx, dtype):
        """1/(number of tied maxima) at the maxima, 0 elsewhere."""
        mask = (ctx.a == ctx.out).astype(dtype)
        mask /= mask.sum(axis=ctx.axis, keepdims=True)
        return mask

    def backward(ctx, g):
        return _expand_back(g, ctx.a.shape, ctx.axis, ctx.keepdims) * ctx.share(g.dtype)

    def backward_graph(ctx, g):  # the share is piecewise constant
        return _expand_back_graph(g, ctx.a.shape, ctx.axis, ctx.keepdims) * _constant(ctx.share(g.dtype))


# ---- log-softmax and the losses on it (fused: one node each, forward and backward) ----------

EXP_FLOOR = {2: -8.0, 4: -40.0}  # by itemsize: float16, float32; float64 and wider use -200


def _exp_nonpositive(xp, z):
    """exp(z) for z <= 0, exactly 0 below a floor where it is negligible next to 1 (no underflow; NaN stays)."""
    floor = z.dtype.type(EXP_FLOOR.get(z.dtype.itemsize, -200.0))
    e = xp.maximum(z, floor, out=xp.empty_like(z))  # out= keeps 0-d results arrays
    xp.exp(e, out=e)
    e *= z > floor  # NaN stays NaN: maximum propagated it, and NaN * 0 is NaN
    return e


def _log_softmax(xp, a, axis):
    """(log_softmax(a), softmax(a)) along `axis`: no overflow for any magnitude, no cancellation at |a| ~ 1e4."""
    m = a.max(axis=axis, keepdims=True)
    z = a - xp.where(xp.isfinite(m), m, m.dtype.type(0))
    floor = z.dtype.type(EXP_FLOOR.get(z.dtype.itemsize, -200.0))
    p = xp.maximum(z, floor, out=xp.empty_like(z))  # exp(z), clamped: exp(floor) is ~1e-18 of the row's 1 in
    xp.exp(p, out=p)                                # float32 (1e-87 in float64), and nothing underflows
    total = p.sum(axis=axis, keepdims=True)
    z -= xp.log(total)
    p /= total
    return z, p


class LogSoftmax(Function):
    """log_softmax along `axis`; backward g - softmax * sum(g), with the softmax kept from forward."""
    def forward(ctx, a, axis):
        out, ctx.p = _log_softmax(array_namespace(a), a, axis)
        ctx.axis = axis
        return out

    def backward(ctx, g):
        return g - ctx.p * g.sum(axis=ctx.axis, keepdims=True)

    def backward_graph(ctx, g):
        p = _softmax_on_tape(ctx, ctx.axis)
        return g - p * g.sum(ctx.axis, keepdims=True)


def _softmax_on_tape(ctx, axis):
    """softmax(input 0) as a tape Tensor, for backward_graph. The input's values are not kept:
    log(softmax) stands in for them, which softmax cannot tell apart (it ignores a shift per row)."""
    with backend.ignore_float_errors():  # log(0) = -inf where the softmax underflowed; softmax maps it back to 0
        return ctx.input_tensor(0, array_namespace(ctx.p).log(ctx.p)).softmax(axis)


def _scale_on_tape(ctx, g):
    """The upstream gradient per row (N,) or as a scalar, divided by the denominator for 'mean'."""
    return g / _constant(ctx.denominator) if ctx.reduction == "mean" else g


def _rows(t):
    return t.reshape(-1, 1) if t.ndim else t


def _reduced(per_row, reduction, denominator):
    if reduction == "none":
        return per_row
    total = per_row.sum()
    return total / denominator if reduction == "mean" else total


class NLLLoss(Function):
    """-w[t_i] logp[i, t_i] over rows of a (N, C) array of log-probabilities, reduced.

    target (N,) holds class indices (ignore_index rows count for nothing); weight (C,) or None.
    """
    def forward(ctx, logp, target, weight, ignore_index, reduction):
        xp = array_namespace(logp)
        ctx.rows, ctx.cols, ctx.w_t, ctx.denominator = _pick(xp, logp, target, weight, ignore_index)
        ctx.shape, ctx.reduction = logp.shape, reduction
        return _reduced(-logp[ctx.rows, ctx.cols] * ctx.w_t, reduction, ctx.denominator)

    def backward(ctx, g):
        out = array_namespace(g).zeros(ctx.shape, dtype=g.dtype)
        scale = g if ctx.reduction == "none" else (g / ctx.denominator if ctx.reduction == "mean" else g)
        out[ctx.rows, ctx.cols] = -scale * ctx.w_t
        return out, None, None

    def backward_graph(ctx, g):
        picked = array_namespace(ctx.w_t).zeros(ctx.shape, dtype=ctx.w_t.dtype)
        picked[ctx.rows, ctx.cols] = -ctx.w_t
        return _constant(picked) * _rows(_scale_on_tape(ctx, g)), None, None


def _pick(xp, scores, target, weight, ignore_index):
    """Row and column indices of each row's target, its weight (0 where ignored) and their sum."""
    valid = target != ignore_index
    cols = xp.where(valid, target, 0)
    w_t = valid.astype(scores.dtype) if weight is None else weight[cols] * valid
    return xp.arange(scores.shape[0]), cols, w_t, w_t.sum()


class CrossEntropy(Function):
    """log_softmax + NLL (+ label smoothing) over rows of (N, C) logits in one node, PyTorch's formula:

    loss_i = (1 - eps) w[t_i] (-logp[i, t_i]) + eps / C * sum_c w_c (-logp[i, c]), ignored rows 0;
    'mean' divides both parts by the sum of w[t_i] over rows not ignored. The gradient is
    softmax * (row weight) - the target terms, from the softmax kept by forward.
    """
    def forward(ctx, logits, target, weight, ignore_index, label_smoothing, reduction):
        xp = array_namespace(logits)
        logp, ctx.p = _log_softmax(xp, logits, 1)
        rows, cols, w_t, denominator = _pick(xp, logits, target, weight, ignore_index)
        loss = -logp[rows, cols] * w_t
        if label_smoothing:
            valid = (target != ignore_index).astype(logits.dtype)
            smooth = -(logp.sum(axis=1) if weight is None else logp @ weight) * valid
            loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / logits.shape[1])
            ctx.valid = valid
        ctx.rows, ctx.cols, ctx.w_t, ctx.denominator = rows, cols, w_t, denominator
        ctx.weight, ctx.label_smoothing, ctx.reduction = weight, label_smoothing, reduction
        return _reduced(loss, reduction, denominator)

    def backward(ctx, g):
        eps, C = ctx.label_smoothing, ctx.p.shape[1]
        scale = g if ctx.reduction == "none" else (g / ctx.denominator if ctx.reduction == "mean" else g)
        a = scale * ctx.w_t * (1 - eps)  # per row: the weight of the NLL part
        if eps:
            b = scale * ctx.valid * (eps / C)  # per row: the weight of the smoothing part
            total = C if ctx.weight is None else ctx.weight.sum()
            grad = ctx.p * (a + b * total)[:, None]
            grad -= b[:, None] if ctx.weight is None else b[:, None] * ctx.weight
        else:
            grad = ctx.p * a[:, None]
        grad[ctx.rows, ctx.cols] -= a
        return grad, None, None

    def backward_graph(ctx, g):
        eps, C = ctx.label_smoothing, ctx.p.shape[1]
        p = _softmax_on_tape(ctx, 1)
        a = _scale_on_tape(ctx, g) * _constant(ctx.w_t * (1 - eps))
        onehot = array_namespace(ctx.p).zeros(ctx.p.shape, dtype=ctx.p.dtype)
        onehot[ctx.rows, ctx.cols] = 1
        coefficient = a
        if eps:
            b = _scale_on_tape(ctx, g) * _constant(ctx.valid * (eps / C))
            coefficient = a + b * (C if ctx.weight is None else _constant(ctx.weight.sum()))
        grad = p * coefficient.reshape(-1, 1) - _constant(onehot) * a.reshape(-1, 1)
        if eps:
            grad = grad - b.reshape(-1, 1) * (1.0 if ctx.weight is None else _constant(ctx.weight))
        return grad, None, None


# ---- linear algebra ------------------------------------------------------------------

class Matmul(Function):
    """a @ b with NumPy's rules: 1-D operands, batched and broadcasting stacks."""
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k_a} != {k_b})")
        ctx.a, ctx.b = a, b
        return a @ b

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        need_a, need_b = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # the common case (and every recurrent step), without reshaping;
            # b's gradient stays lazy: the engine sums a reused weight's products as one matmul
            return (g @ b.T if need_a else None), (ProductSum(a, g) if need_b else None)
        a2 = a[None, :] if a.ndim == 1 else a  # 1-D operands act as a row / a column
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:  # a dot product: g is 0-d
            g2 = g.reshape(1, 1)
        else:
            g2 = g[..., None, :] if a.ndim == 1 else g[..., None] if b.ndim == 1 else g
        ga = gb = None
        if need_a:
            ga = g2 @ b2.swapaxes(-1, -2)
            ga = ga[..., 0, :] if a.ndim == 1 else ga
        if need_b:
            if b2.ndim == 2 and a2.ndim > 2 and a2.size and g2.size:  # a stack times one matrix: one big matmul
                # (not when empty: reshape(-1, 0) cannot infer the -1)
                gb = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = a2.swapaxes(-1, -2) @ g2
            gb = gb[..., 0] if b.ndim == 1 else gb
        return ga, gb

    def backward_graph(ctx, g):  # batch axes of a broadcast operand are summed by the walk
        a, b = ctx.input_tensor(0, ctx.a), ctx.input_tensor(1, ctx.b)
        need_a, need_b = ctx.needs_input_grad
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g2 = g.reshape(1, 1)
        else:
            g2 = g.unsqueeze(-2) if a.ndim == 1 else g.unsqueeze(-1) if b.ndim == 1 else g
        ga = gb = None
        if need_a:
            ga = g2 @ b2.transpose(-1, -2)
            ga = ga.squeeze(-2) if a.ndim == 1 else ga
        if need_b:
            gb = a2.transpose(-1, -2) @ g2
            gb = gb.squeeze(-1) if b.ndim == 1 else gb
        return ga, gb


# ---- shape ---------------------------------------------------------------------------

class Reshape(Function):
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    def backward(ctx, g):
        return g.reshape(ctx.shape)

    backward_graph = backward


class Transpose(Function):
    """Permute axes (a view): `axes` is a full permutation."""
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    def inverse(ctx):
        inverse = [0] * len(ctx.axes)
        for k, ax in enumerate(ctx.axes):
            inverse[ax] = k
        return tuple(inverse)

    def backward(ctx, g):
        return g.transpose(ctx.inverse())

    def backward_graph(ctx, g):
        return Transpose.apply(g, axes=ctx.inverse())


class Contiguous(Function):
    """A C-contiguous copy (an identity for gradients): hoist it out of time loops."""
    def forward(ctx, a):
        return array_namespace(a).ascontiguousarray(a)

    def backward(ctx, g):
        return g

    backward_graph = backward


class Clone(Function):
    """A copy that owns its memory (an identity for gradients)."""
    def forward(ctx, a):
        return a.copy()

    def backward(ctx, g):
        return g

    backward_graph = backward


class Cast(Function):
    """Convert to another dtype; the gradient is converted back."""
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    def backward(ctx, g):
        return g.astype(ctx.dtype)

    def backward_graph(ctx, g):
        return Cast.apply(g, dtype=ctx.dtype) if g.dtype != ctx.dtype else g


class Transfer(Function):
    """Copy to another device; the gradient travels back."""
    def forward(ctx, a, device):
        ctx.device = device_of(a)
        return to_device(a, device)

    def backward(ctx, g):
        return to_device(g, ctx.device)

    def backward_graph(ctx, g):
        return Transfer.apply(g, device=ctx.device) if g.device != ctx.device else g


class Expand(Function):
    """Broadcast to `shape` (a view); the engine sums the gradient back."""
    def forward(ctx, a, shape):
        return array_namespace(a).broadcast_to(a, shape)

    def backward(ctx, g):
        return g

    backward_graph = backward


class Flip(Function):
    def forward(ctx, a, axis):
        ctx.axis = axis
        return array_namespace(a).flip(a, axis)

    def backward(ctx, g):
        return array_namespace(g).flip(g, ctx.axis)

    def backward_graph(ctx, g):
        return Flip.apply(g, axis=ctx.axis)


class GetItem(Function):
    """a[index]: basic slicing, integer arrays (gather) and boolean masks.

    Backward writes the gradient into zeros; advanced indices scatter-add, so repeated
    indices accumulate.
    """
    def forward(ctx, a, index, advanced=False):
        ctx.shape, ctx.index, ctx.advanced = a.shape, index, advanced
        return a[index]

    def backward(ctx, g):
        return _scatter(g, ctx.shape, ctx.index, ctx.advanced)

    def backward_graph(ctx, g):
        return Scatter.apply(g, shape=ctx.shape, index=ctx.index, advanced=ctx.advanced)


def _scatter(g, shape, index, advanced):
    """zeros(shape) with g written at `index` (added up where advanced indices repeat)."""
    out = array_namespace(g).zeros(shape, dtype=g.dtype)
    if advanced:
        scatter_add(out, index, g)
    else:
        out[index] = g
    return out


class Scatter(Function):
    """zeros(shape) with the input written at `index`: GetItem's backward, as an op (the adjoint pair)."""
    def forward(ctx, g, shape, index, advanced=False):
        ctx.index, ctx.advanced = index, advanced
        return _scatter(g, shape, index, advanced)

    def backward(ctx, gg):
        return gg[ctx.index]

    def backward_graph(ctx, gg):
        return GetItem.apply(gg, index=ctx.index, advanced=ctx.advanced)


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
        ga = gv = None
        if need_a:
            ga = g.copy()
            ga[ctx.index] = 0
        if need_value:
            gv = g[ctx.index]
            if gv.ndim < ctx.value_ndim:  # NumPy lets a value with extra leading 1s fill a smaller region
                gv = gv.reshape((1,) * (ctx.value_ndim - gv.ndim) + gv.shape)
        return ga, gv

    def backward_graph(ctx, g):
        need_a, need_value = ctx.needs_input_grad
        ga = SetItem.apply(g, 0.0, index=ctx.index, advanced=ctx.advanced) if need_a else None
        gv = None
        if need_value:
            gv = GetItem.apply(g, index=ctx.index, advanced=ctx.advanced)
            if gv.ndim < ctx.value_ndim:
                gv = gv.reshape((1,) * (ctx.value_ndim - gv.ndim) + gv.shape)
        return ga, gv


class Cat(Function):
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.bounds = []
        start = 0
        for a in arrays:
            ctx.bounds.append((start, start + a.shape[axis]))
            start += a.shape[axis]
        return array_namespace(arrays[0]).concatenate(arrays, axis=axis)

    def backward(ctx, g):
        lead = (slice(None),) * ctx.axis
        return tuple(g[lead + (slice(lo, hi),)] if need else None
                     for (lo, hi), need in zip(ctx.bounds, ctx.needs_input_grad))

    def backward_graph(ctx, g):
        parts = Split.apply(g, sizes=tuple(hi - lo for lo, hi in ctx.bounds), axis=ctx.axis)
        return tuple(p if need else None for p, need in zip(parts, ctx.needs_input_grad))


class Stack(Function):
    """Stack T arrays along a new axis: one node, so gathering T step outputs is O(T)."""
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return array_namespace(arrays[0]).stack(arrays, axis=axis)

    def backward(ctx, g):
        xp = array_namespace(g)
        return tuple(xp.take(g, k, axis=ctx.axis) if need else None
                     for k, need in enumerate(ctx.needs_input_grad))

    def backward_graph(ctx, g):
        parts = Unbind.apply(g, axis=ctx.axis)
        return tuple(p if need else None for p, need in zip(parts, ctx.needs_input_grad))


class Unbind(Function):
    """Split along `axis` into views without that axis: one node with many outputs."""
    def forward(ctx, a, axis=0):
        ctx.shape, ctx.axis, ctx.dtype = a.shape, axis, a.dtype
        lead = (slice(None),) * axis
        return tuple(a[lead + (k,)] for k in range(a.shape[axis]))

    def backward(ctx, *grads):
        if _all_present(grads):
            return array_namespace(grads[0]).stack(grads, axis=ctx.axis)
        out = _namespace(*grads).zeros(ctx.shape, dtype=ctx.dtype)
        lead = (slice(None),) * ctx.axis
        for k, g in enumerate(grads):
            if g is not None:
                out[lead + (k,)] = g
        return out

    def backward_graph(ctx, *grads):
        like = next(g for g in grads if g is not None)
        shape = ctx.shape[:ctx.axis] + ctx.shape[ctx.axis + 1:]
        zero = None
        if any(g is None for g in grads):
            zero = _constant(array_namespace(like.data).zeros(shape, dtype=ctx.dtype))
        return Stack.apply(*[zero if g is None else g for g in grads], axis=ctx.axis)


class Split(Function):
    """Split along `axis` at the given section sizes: one node with many outputs."""
    def forward(ctx, a, sizes, axis=0):
        ctx.shape, ctx.sizes, ctx.axis, ctx.dtype = a.shape, sizes, axis, a.dtype
        lead, start, outs = (slice(None),) * axis, 0, []
        for n in sizes:
            outs.append(a[lead + (slice(start, start + n),)])
            start += n
        return tuple(outs)

    def backward(ctx, *grads):
        if _all_present(grads):
            return array_namespace(grads[0]).concatenate(grads, axis=ctx.axis)
        out = _namespace(*grads).zeros(ctx.shape, dtype=ctx.dtype)
        lead, start = (slice(None),) * ctx.axis, 0
        for g, n in zip(grads, ctx.sizes):
            if g is not None:
                out[lead + (slice(start, start + n),)] = g
            start += n
        return out

    def backward_graph(ctx, *grads):
        xp = array_namespace(next(g for g in grads if g is not None).data)
        parts = []
        for g, n in zip(grads, ctx.sizes):
            if g is None:
                shape = ctx.shape[:ctx.axis] + (n,) + ctx.shape[ctx.axis + 1:]
                g = _constant(xp.zeros(shape, dtype=ctx.dtype))
            parts.append(g)
        return Cat.apply(*parts, axis=ctx.axis)
