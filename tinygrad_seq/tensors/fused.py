"""Functions that fuse several ops into one node: log-softmax, the losses on it, erf. Each is written
with the engine's Function API as a user would write one: a forward on arrays and one derivative
rule that also runs on Tensors (create_graph differentiates it again). What a rule reads must be
an input or an output of its op, so an op whose rule needs the softmax returns it as a second
output (the callers drop it); the softmax's own rule is softmax_rule.
"""
import math

from .. import threads
from ..engine import backend, ops
from ..engine.backend import array_namespace
from ..engine.function import Function

EXP_FLOOR = {2: -8.0, 4: -40.0}  # by itemsize: exp below these is negligible next to 1 (float16, float32)


def log_softmax(xp, a, axis):
    """(log_softmax(a), softmax(a)) along `axis`: no overflow for any magnitude, no cancellation at |a| ~ 1e4.
    Wide rows (a language model's vocabulary) are split into row blocks computed on several cores."""
    z, p = xp.empty_like(a), xp.empty_like(a)
    if _wide(a, axis):
        threads.in_row_blocks(lambda lo, hi: _log_softmax_into(xp, a[lo:hi], axis, z[lo:hi], p[lo:hi]), a.shape[0])
    else:
        _log_softmax_into(xp, a, axis, z, p)
    return z, p


def _log_softmax_into(xp, a, axis, z, p):
    m = a.max(axis=axis, keepdims=True)
    xp.subtract(a, xp.where(xp.isfinite(m), m, m.dtype.type(0)), out=z)
    floor = z.dtype.type(EXP_FLOOR.get(z.dtype.itemsize, -200.0))
    xp.maximum(z, floor, out=p)  # exp(z), clamped: exp(floor) is ~1e-18 of the row's 1 in float32 (1e-87 in
    xp.exp(p, out=p)             # float64), and nothing underflows
    total = p.sum(axis=axis, keepdims=True)
    z -= xp.log(total)
    p /= total


def _wide(a, axis):
    """Whether rows of `a` along the last axis are worth computing on several cores (host arrays)."""
    return type(a) is backend.ndarray and a.ndim == 2 and axis in (1, -1) and a.size >= _WIDE


_WIDE = 1 << 18  # elements: below this a ufunc call is too short to share


def _rowwise(fn, axis, *arrays):
    """fn(*arrays), computed in row blocks on several cores when they are wide host arrays reduced along
    `axis` (a rule on Tensors, or on small arrays, runs as it is written)."""
    if not _wide(arrays[0], axis):
        return fn(*arrays)
    out = backend.namespace("cpu").empty_like(arrays[0])

    def block(lo, hi):
        out[lo:hi] = fn(*[a[lo:hi] for a in arrays])
    threads.in_row_blocks(block, out.shape[0])
    return out


class LogSoftmax(Function):
    """log_softmax along `axis`, and the softmax as a second output, which its rule reads."""
    def forward(ctx, a, axis):
        out, ctx.p = log_softmax(array_namespace(a), a, axis)
        ctx.axis = axis
        return out, ctx.p

    def backward(ctx, g, g_p):
        axis = ctx.axis
        grad = None if g is None else _rowwise(lambda g, p: g - p * g.sum(axis=axis, keepdims=True), axis, g,
                                                 ctx.p)
        return grad if g_p is None else softmax_rule(ctx.p, g_p, ctx.axis, grad)


def softmax_rule(p, g_p, axis, grad=None):
    """grad + the gradient through p = softmax(x) along `axis`: p (g_p - sum(g_p p))."""
    through = p * (g_p - (g_p * p).sum(axis=axis, keepdims=True))
    return through if grad is None else grad + through


def _pick(xp, scores, target, weight, ignore_index):
    """Row and column indices of each row's target, its weight (0 where ignored) and their sum."""
    valid = target != ignore_index
    cols = xp.where(valid, target, 0)
    w_t = valid.astype(scores.dtype) if weight is None else weight[cols] * valid
    return xp.arange(scores.shape[0]), cols, w_t, w_t.sum()


def _reduced(per_row, reduction, denominator):
    if reduction == "none":
        return per_row
    total = per_row.sum()
    return total / denominator if reduction == "mean" else total


def _scale(ctx, g):
    """The upstream gradient per row (N,) or as a scalar, divided by the denominator for 'mean'."""
    return g / ctx.denominator if ctx.reduction == "mean" else g


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
        out = ops._zeros(g, ctx.shape, g.dtype)
        out[ctx.rows, ctx.cols] = -_scale(ctx, g) * ctx.w_t
        return out, None, None


class CrossEntropy(Function):
    """log_softmax + NLL (+ label smoothing) over rows of (N, C) logits in one node, PyTorch's formula:

    loss_i = (1 - eps) w[t_i] (-logp[i, t_i]) + eps / C * sum_c w_c (-logp[i, c]), ignored rows 0;
    'mean' divides both parts by the sum of w[t_i] over rows not ignored. The gradient is
    softmax * (row weight) - the target terms; the softmax is the op's second output.
    """
    def forward(ctx, logits, target, weight, ignore_index, label_smoothing, reduction):
        xp = array_namespace(logits)
        logp, ctx.p = log_softmax(xp, logits, 1)
        rows, cols, w_t, denominator = _pick(xp, logits, target, weight, ignore_index)
        loss = -logp[rows, cols] * w_t
        if label_smoothing:
            valid = (target != ignore_index).astype(logits.dtype)
            smooth = -(logp.sum(axis=1) if weight is None else logp @ weight) * valid
            loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / logits.shape[1])
            ctx.valid = valid
        ctx.rows, ctx.cols, ctx.w_t, ctx.denominator = rows, cols, w_t, denominator
        ctx.weight, ctx.label_smoothing, ctx.reduction = weight, label_smoothing, reduction
        return _reduced(loss, reduction, denominator), ctx.p

    def backward(ctx, g, g_p):
        p, grad = ctx.p, None
        if g is not None:
            eps, C = ctx.label_smoothing, p.shape[1]
            a = _scale(ctx, g) * ctx.w_t * (1 - eps)  # per row: the weight of the NLL part
            if eps:
                b = _scale(ctx, g) * ctx.valid * (eps / C)  # per row: the weight of the smoothing part
                grad = p * (a + b * (C if ctx.weight is None else ctx.weight.sum()))[:, None]
                grad -= b[:, None] if ctx.weight is None else b[:, None] * ctx.weight
            else:
                grad = _rowwise(lambda p, a: p * a[:, None], 1, p, a)
            grad[ctx.rows, ctx.cols] -= a
        return (grad if g_p is None else softmax_rule(p, g_p, 1, grad)), None, None


class Erf(Function):
    """The error function; d erf(x)/dx = 2/sqrt(pi) exp(-x^2), exactly 0 where exp underflows."""
    def forward(ctx, a):
        ctx.a = a
        return backend.erf(a)

    def backward(ctx, g):
        z = -(ctx.a * ctx.a)
        floor = EXP_FLOOR.get(g.dtype.itemsize, -200.0)
        return ops.Exp.call(ops.Maximum.call(z, floor)) * (z > floor) * g * (2 / math.sqrt(math.pi))
