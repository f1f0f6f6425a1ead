"""Functions that fuse several ops into one node: a linear layer, log-softmax, the losses on it, erf. Each
is written with the engine's Function API as a user would write one: a forward on arrays and one derivative
rule that also runs on Tensors (create_graph differentiates it again). What a rule reads must be
an input or an output of its op, so CrossEntropy returns its log-probabilities as a second output
(the callers drop it); the rules get the softmax back as exp(log-probabilities), as PyTorch's do.

Wide rows (a language model's vocabulary) are computed in chunks of rows, split between the cores:
each chunk's temporaries stay in cache, and only the results are allocated at full size.
"""
import math

from .. import threads
from ..engine import backend, ops
from ..engine.backend import array_namespace
from ..engine.function import Function, ProductSum, TensorBase

EXP_FLOOR = {2: -8.0, 4: -40.0}  # by itemsize: exp below these is negligible next to 1 (float16, float32)


def log_softmax(xp, a, axis):
    """log_softmax(a) along `axis`: no overflow for any magnitude, no cancellation at |a| ~ 1e4."""
    z = xp.empty_like(a)
    _rowwise(lambda rows: _log_softmax_into(xp, a[rows], axis, z[rows]), a, axis)
    return z


def _log_softmax_into(xp, a, axis, z):
    m = a.max(axis=axis, keepdims=True)
    xp.subtract(a, xp.where(xp.isfinite(m), m, m.dtype.type(0)), out=z)
    e = _exp_clamped(z)
    z -= xp.log(e.sum(axis=axis, keepdims=True))


def _exp_clamped(z):
    """exp(z) for z <= 0, clamped: exp(floor) is ~1e-18 of a row's 1 in float32 (1e-87 in float64), and
    nothing underflows (an array, or a Tensor in a rule under create_graph)."""
    return ops.Exp.call(ops.Maximum.call(z, EXP_FLOOR.get(z.dtype.itemsize, -200.0)))


def log_softmax_rule(out, g, axis):
    """The gradient of x through out = log_softmax(x) along `axis`: g - softmax * sum(g)."""
    return g - _exp_clamped(out) * g.sum(axis=axis, keepdims=True)


def _rowwise(fill, a, axis):
    """fill(rows) over all of `a` (rows = ...), or, for wide host rows along the last axis, over chunks of
    _CHUNK rows (slices) split between the cores: fill must only write the given rows of its outputs."""
    if not _wide(a, axis):
        fill(...)
        return

    def block(lo, hi):
        for start in range(lo, hi, _CHUNK):
            fill(slice(start, min(start + _CHUNK, hi)))
    threads.in_row_blocks(block, a.shape[0])


def _wide(a, axis):
    """Whether rows of `a` along the last axis are worth computing in chunks on several cores (host arrays)."""
    return type(a) is backend.ndarray and a.ndim == 2 and axis in (1, -1) and a.size >= _WIDE


_WIDE = 1 << 18  # elements: below this a ufunc call is too short to share
_CHUNK = 32      # rows: a chunk's temporaries (32 rows of a vocabulary of 8,000: 1 MB) stay in cache


def _rows_of(rule, axis, *arrays):
    """rule(*arrays), a derivative rule, computed chunk by chunk into one array where the rows are wide (on
    Tensors under create_graph, and on other arrays, it runs as it is written)."""
    if not _wide(arrays[0], axis):
        return rule(*arrays)
    out = array_namespace(arrays[0]).empty_like(arrays[0])

    def fill(rows):
        out[rows] = rule(*[a[rows] for a in arrays])
    _rowwise(fill, arrays[0], axis)
    return out


class LogSoftmax(Function):
    """log_softmax along `axis`; its rule reads the output (the softmax is exp of it)."""
    def forward(ctx, a, axis):
        ctx.out, ctx.axis = log_softmax(array_namespace(a), a, axis), axis
        return ctx.out

    def backward(ctx, g):
        axis = ctx.axis
        return _rows_of(lambda out, g: log_softmax_rule(out, g, axis), axis, ctx.out, g)


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
    softmax * (row weight) - the target terms; the log-probabilities are the op's second output.
    """
    def forward(ctx, logits, target, weight, ignore_index, label_smoothing, reduction):
        xp = array_namespace(logits)
        ctx.logp = logp = log_softmax(xp, logits, 1)
        rows, cols, w_t, denominator = _pick(xp, logits, target, weight, ignore_index)
        loss = -logp[rows, cols] * w_t
        if label_smoothing:
            valid = (target != ignore_index).astype(logits.dtype)
            smooth = -(logp.sum(axis=1) if weight is None else logp @ weight) * valid
            loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / logits.shape[1])
            ctx.valid = valid
        ctx.rows, ctx.cols, ctx.w_t, ctx.denominator = rows, cols, w_t, denominator
        ctx.weight, ctx.label_smoothing, ctx.reduction = weight, label_smoothing, reduction
        return _reduced(loss, reduction, denominator), logp

    def backward(ctx, g, g_logp):
        logp, grad = ctx.logp, None
        if g is not None:
            eps, C = ctx.label_smoothing, logp.shape[1]
            a = _scale(ctx, g) * ctx.w_t * (1 - eps)  # per row: the weight of the NLL part
            if eps:
                b = _scale(ctx, g) * ctx.valid * (eps / C)  # per row: the weight of the smoothing part
                grad = _exp_clamped(logp) * (a + b * (C if ctx.weight is None else ctx.weight.sum()))[:, None]
                grad -= b[:, None] if ctx.weight is None else b[:, None] * ctx.weight
            else:
                grad = _rows_of(lambda logp, a: _exp_clamped(logp) * a[:, None], 1, logp, a)
            grad[ctx.rows, ctx.cols] -= a
        if g_logp is not None:
            through = log_softmax_rule(logp, g_logp, 1)
            grad = through if grad is None else grad + through
        return grad, None, None


class Linear(Function):
    """x @ w.T + b in one node, as PyTorch's addmm: the leading axes of x (..., I) are folded into one matrix
    product with w (O, I), and the bias b (O,) or None is added in place into it. w's gradient over all rows
    is one product, kept lazy on arrays (function.ProductSum) as Matmul's is, so that a layer a recurrent
    step reads at every step gets one product over all steps."""
    lazy_grads = (1,)

    def forward(ctx, x, w, b=None, out=None):
        if x.ndim == 0 or w.ndim != 2 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {w.shape}")
        if w.dtype != x.dtype or b is not None and b.dtype != x.dtype:
            raise TypeError(f"linear: input, weight and bias must have one dtype, got {x.dtype}, {w.dtype}"
                            f"{'' if b is None else f' and {b.dtype}'}")
        ctx.x, ctx.w = x, w
        rows = x if x.ndim == 2 else x.reshape((-1, x.shape[-1]))
        if out is None:
            y = rows @ w.T
        else:
            y = array_namespace(out).matmul(rows, w.T, out=out if out.ndim == 2 else out.reshape((-1, w.shape[0])))
        if b is not None:
            y += b
        return out if out is not None else y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(ctx, g):
        x, w = ctx.x, ctx.w
        need_x, need_w, need_b = ctx.needs_input_grad
        rows, g_rows = x.reshape((-1, x.shape[-1])), g.reshape((-1, g.shape[-1]))
        gw = (g_rows.T @ rows if isinstance(g, TensorBase) else ProductSum(g_rows, rows)) if need_w else None
        return ((g_rows @ w).reshape(x.shape) if need_x else None), gw, (g_rows.sum(axis=0) if need_b else None)


class Erf(Function):
    """The error function; d erf(x)/dx = 2/sqrt(pi) exp(-x^2), exactly 0 where exp underflows."""
    def forward(ctx, a):
        ctx.a = a
        return backend.erf(a)

    def backward(ctx, g):
        z = -(ctx.a * ctx.a)
        floor = EXP_FLOOR.get(g.dtype.itemsize, -200.0)
        return ops.Exp.call(ops.Maximum.call(z, floor)) * (z > floor) * g * (2 / math.sqrt(math.pi))
