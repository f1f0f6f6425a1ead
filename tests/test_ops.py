"""Every primitive and composite op against NumPy, finite differences and its analytic derivative.

Each op is one row of OPS: a hypothesis strategy that draws its inputs (shapes included,
values kept away from kinks and ties by construction), how to call it with tinygrad_seq,
a NumPy reference forward, and a hand-written NumPy vector-Jacobian product. Three
properties then run over every row:

* forward == NumPy (shape, dtype and values) in float32 and float64, on every device;
* the tape's gradient == the hand-written derivative, in float32 and float64, on every device;
* the tape's gradient == central finite differences (gradcheck), float64 on the CPU.

Float inputs are differentiable leaves; integer and boolean inputs are constants.
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq.engine import ops
from tinygrad_seq.tensors import fused
from tinygrad_seq.engine.backend import parse_device
from tinygrad_seq.autograd.gradcheck import gradcheck

F32, F64 = np.float32, np.float64
FLOATS = [F32, F64]
TOL = {F32: dict(rtol=1e-4, atol=1e-4), F64: dict(rtol=1e-9, atol=1e-11)}


# ---- value strategies: away from kinks by construction ---------------------------------
# Hypothesis draws the shapes, options and one seed per array; NumPy's generator fills the
# values from that seed. Drawing element by element cost most of this file's run time.

SEED = st.integers(0, 2 ** 32 - 1)


def rng_from(draw):
    """A NumPy Generator seeded by one hypothesis draw."""
    return np.random.default_rng(draw(SEED))


def uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, shape)


SIGNED = uniform(-2, 2)
POSITIVE = uniform(0.5, 2)  # log, sqrt, pow bases: positive and away from 0


def away_from_zero(lo=0.1, hi=2.0):
    """Magnitude in [lo, hi] with a random sign (relu, abs, divisors)."""
    return lambda rng, shape: rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def with_zeros(lo, hi):
    """Uniform values, about a third of them exactly 0."""
    return lambda rng, shape: np.where(rng.random(shape) < 0.3, 0.0, rng.uniform(lo, hi, shape))


@functools.lru_cache(maxsize=None)  # one strategy object per signature: hypothesis caches its analysis
def shapes(min_dims=0, max_dims=3, min_side=1, max_side=3):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def floats_array(draw, shape, elements=SIGNED):
    return np.asarray(elements(rng_from(draw), shape), dtype=F64)


def int_array(draw, shape, lo, hi):
    """Integers in [lo, hi], both ends included."""
    return np.asarray(rng_from(draw).integers(lo, hi + 1, shape), dtype=np.int64)


def bool_array(draw, shape):
    return np.asarray(rng_from(draw).random(shape) < 0.5)


def distinct_values(draw, sizes):
    """Arrays of the given sizes whose values are all distinct (a shuffled grid, 0.25 apart)."""
    total = sum(sizes)
    perm = rng_from(draw).permutation(total).astype(F64)
    values = (perm - total // 2) * 0.25 + 0.125
    out, start = [], 0
    for n in sizes:
        out.append(values[start:start + n])
        start += n
    return out


class Case:
    """One draw: the op's inputs (NumPy arrays; floats become differentiable leaves) and options."""

    def __init__(self, inputs, **kw):
        self.inputs, self.kw = [np.asarray(a) for a in inputs], kw

    def __repr__(self):
        return f"Case(inputs={self.inputs!r}, kw={self.kw!r})"


def is_float(a):
    return a.dtype.kind == "f"


def axes_of(axis, ndim):
    """NumPy axis argument -> tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,)
    return tuple(a % ndim for a in axis)


def unbroadcast(g, shape):
    """Sum a gradient over the axes along which an operand of `shape` was broadcast."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(k for k, n in enumerate(shape) if n == 1 and g.shape[k] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def expand_reduced(g, shape, axis, keepdims):
    """The gradient of a reduction's output broadcast back over the reduced axes."""
    axes = axes_of(axis, len(shape))
    if not keepdims:
        g = np.reshape(g, [1 if k in axes else n for k, n in enumerate(shape)])
    return np.broadcast_to(g, shape)


def np_logsumexp(x, axis, keepdims=True):
    m = x.max(axis=axis, keepdims=True) if x.size else 0
    out = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axes_of(axis, x.ndim))


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def np_sigmoid(x):
    return 0.5 * np.tanh(0.5 * x) + 0.5


class OpSpec:
    """One op: its input strategy, how to call it, a NumPy forward and a NumPy vector-Jacobian product."""

    def __init__(self, name, case, run, ref, vjp, finite_differences=True, fd_case=None):
        self.name, self.case, self.run, self.ref, self.vjp = name, case, run, ref, vjp
        self.finite_differences = finite_differences
        self.fd_case = case if fd_case is None else fd_case  # the draws gradcheck may use

    def __repr__(self):
        return self.name


OPS = []


def op(name, case, run, ref, vjp, **options):
    OPS.append(OpSpec(name, case, run, ref, vjp, **options))


# ---- elementwise binary ops, with broadcasting -----------------------------------------

@functools.lru_cache(maxsize=None)
def broadcast_shapes(num_shapes, min_dims=0, max_dims=3, min_side=1, max_side=3):
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side)


@st.composite
def binary_case(draw, elements_a=SIGNED, elements_b=SIGNED):
    sa, sb = draw(broadcast_shapes(2, min_side=0)).input_shapes
    return Case([floats_array(draw, sa, elements_a), floats_array(draw, sb, elements_b)])


op("add", binary_case(), lambda d, a, b: a + b, np.add,
   lambda g, a, b: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)))
op("sub", binary_case(), lambda d, a, b: a - b, np.subtract,
   lambda g, a, b: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)))
op("mul", binary_case(), lambda d, a, b: a * b, np.multiply,
   lambda g, a, b: (unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)))
op("div", binary_case(SIGNED, away_from_zero(0.5, 2.0)), lambda d, a, b: a / b, np.divide,
   lambda g, a, b: (unbroadcast(g / b, a.shape), unbroadcast(-g * a / b ** 2, b.shape)))
op("pow", binary_case(POSITIVE, SIGNED), lambda d, a, b: a ** b, np.power,
   lambda g, a, b: (unbroadcast(g * b * a ** (b - 1), a.shape), unbroadcast(g * a ** b * np.log(a), b.shape)))


@st.composite
def pow_scalar_case(draw):
    return Case([floats_array(draw, draw(shapes()), POSITIVE)],
                exponent=draw(st.sampled_from([2, 3, 0.5, -1, -1.5, 2.5])))


op("pow_scalar_exponent", pow_scalar_case(), lambda d, a, exponent: a ** exponent,
   lambda a, exponent: a ** exponent, lambda g, a, exponent: (g * exponent * a ** (exponent - 1),))


@st.composite
def rpow_case(draw):
    return Case([floats_array(draw, draw(shapes()))], base=draw(st.sampled_from([2.0, 0.5, 3.0])))


op("pow_scalar_base", rpow_case(), lambda d, a, base: base ** a, lambda a, base: base ** a,
   lambda g, a, base: (g * base ** a * np.log(base),))


@st.composite
def distinct_binary_case(draw):
    sa, sb = draw(broadcast_shapes(2)).input_shapes
    a, b = distinct_values(draw, [int(np.prod(sa)), int(np.prod(sb))])
    return Case([a.reshape(sa), b.reshape(sb)])


def _select_vjp(pick_a):
    def vjp(g, a, b):
        mask = np.broadcast_to(pick_a(a, b), g.shape)
        return unbroadcast(np.where(mask, g, 0.0), a.shape), unbroadcast(np.where(mask, 0.0, g), b.shape)
    return vjp


op("maximum", distinct_binary_case(), lambda d, a, b: tg.maximum(a, b), np.maximum,
   _select_vjp(lambda a, b: a > b))
op("minimum", distinct_binary_case(), lambda d, a, b: tg.minimum(a, b), np.minimum,
   _select_vjp(lambda a, b: a < b))


@st.composite
def where_case(draw):
    sc, sa, sb = draw(broadcast_shapes(3)).input_shapes
    return Case([bool_array(draw, sc), floats_array(draw, sa), floats_array(draw, sb)])


def _where_vjp(g, c, a, b):
    c = np.broadcast_to(c, g.shape)
    return unbroadcast(np.where(c, g, 0.0), a.shape), unbroadcast(np.where(c, 0.0, g), b.shape)


op("where", where_case(), lambda d, c, a, b: tg.where(c, a, b), np.where, _where_vjp)


# ---- elementwise unary ops -------------------------------------------------------------

@st.composite
def unary_case(draw, elements=SIGNED):
    return Case([floats_array(draw, draw(shapes(min_side=0)), elements)])


op("neg", unary_case(), lambda d, a: -a, np.negative, lambda g, a: (-g,))
op("exp", unary_case(), lambda d, a: a.exp(), np.exp, lambda g, a: (g * np.exp(a),))
op("log", unary_case(POSITIVE), lambda d, a: a.log(), np.log, lambda g, a: (g / a,))
op("tanh", unary_case(), lambda d, a: a.tanh(), np.tanh, lambda g, a: (g * (1 - np.tanh(a) ** 2),))
op("sigmoid", unary_case(uniform(-6, 6)), lambda d, a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a)),
   lambda g, a: (g * np_sigmoid(a) * (1 - np_sigmoid(a)),))
op("erf", unary_case(uniform(-3, 3)), lambda d, a: fused.Erf.apply(a), lambda a: np_erf(a),
   lambda g, a: (g * 2 / math.sqrt(math.pi) * np.exp(-a * a),))
op("gelu", unary_case(uniform(-4, 4)), lambda d, a: F.gelu(a),
   lambda a: a * 0.5 * (1 + np_erf(a / math.sqrt(2))),
   lambda g, a: (g * (0.5 * (1 + np_erf(a / math.sqrt(2)))
                      + a * np.exp(-a * a / 2) / math.sqrt(2 * math.pi)),))


def _gelu_tanh_parts(a):
    k = math.sqrt(2 / math.pi)
    u = k * (a + 0.044715 * a ** 3)
    return np.tanh(u), k * (1 + 3 * 0.044715 * a ** 2)


op("gelu_tanh", unary_case(uniform(-4, 4)), lambda d, a: F.gelu(a, approximate="tanh"),
   lambda a: 0.5 * a * (1 + _gelu_tanh_parts(a)[0]),
   lambda g, a: (g * (0.5 * (1 + _gelu_tanh_parts(a)[0]) + 0.5 * a * (1 - _gelu_tanh_parts(a)[0] ** 2)
                      * _gelu_tanh_parts(a)[1]),))
op("relu", unary_case(away_from_zero()), lambda d, a: a.relu(), lambda a: np.maximum(a, 0),
   lambda g, a: (g * (a > 0),))
op("sqrt", unary_case(POSITIVE), lambda d, a: a.sqrt(), np.sqrt, lambda g, a: (g * 0.5 / np.sqrt(a),))
op("abs", unary_case(away_from_zero()), lambda d, a: a.abs(), np.abs, lambda g, a: (g * np.sign(a),))


@st.composite
def clip_case(draw):
    """Values on half-steps of a 0.25 grid, bounds on whole steps: never at a bound."""
    shape = draw(shapes())
    x = (int_array(draw, shape, -8, 7) + 0.5) * 0.25
    lo = draw(st.one_of(st.none(), st.integers(-6, 4)))
    hi = draw(st.one_of(st.none(), st.integers(-4 if lo is None else lo + 1, 6)))
    return Case([x], lo=None if lo is None else lo * 0.25, hi=None if hi is None else hi * 0.25,
                alias=draw(st.booleans()))


def _clip_run(d, x, lo, hi, alias):
    return x.clamp(min=lo, max=hi) if alias else x.clip(lo, hi)


def _clip_ref(x, lo, hi, alias):
    y = x if lo is None else np.maximum(x, lo)
    return y if hi is None else np.minimum(y, hi)


def _clip_vjp(g, x, lo, hi, alias):
    inside = np.ones(x.shape, bool)
    if lo is not None:
        inside &= x > lo
    if hi is not None:
        inside &= x < hi
    return (g * inside,)


op("clip", clip_case(), _clip_run, _clip_ref, _clip_vjp)


# ---- reductions ------------------------------------------------------------------------

def axis_arg(ndim):
    if ndim == 0:
        return st.none()
    return st.one_of(st.none(), st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=0))


@st.composite
def reduce_case(draw, distinct=False):
    shape = draw(shapes())
    if distinct:
        x = distinct_values(draw, [int(np.prod(shape))])[0].reshape(shape)
    else:
        x = floats_array(draw, shape)
    return Case([x], axis=draw(axis_arg(len(shape))), keepdims=draw(st.booleans()), alias=draw(st.booleans()))


def reduction(method):
    """Call x.method(axis, keepdims), or with PyTorch's dim/keepdim names when `alias`."""
    def run(d, x, axis, keepdims, alias):
        if alias:
            return getattr(x, method)(dim=axis, keepdim=keepdims)
        return getattr(x, method)(axis=axis, keepdims=keepdims)
    return run


def _max_vjp(pick):
    def vjp(g, x, axis, keepdims, alias):
        hit = x == pick(x, axis=axis, keepdims=True)
        return (expand_reduced(g, x.shape, axis, keepdims) * hit,)
    return vjp


op("sum", reduce_case(), reduction("sum"), lambda x, axis, keepdims, alias: np.sum(x, axis, keepdims=keepdims),
   lambda g, x, axis, keepdims, alias: (expand_reduced(g, x.shape, axis, keepdims),))
op("mean", reduce_case(), reduction("mean"), lambda x, axis, keepdims, alias: np.mean(x, axis, keepdims=keepdims),
   lambda g, x, axis, keepdims, alias: (expand_reduced(g, x.shape, axis, keepdims)
                                        / max(1, int(np.prod([x.shape[a] for a in axes_of(axis, x.ndim)]))),))
op("max", reduce_case(distinct=True), reduction("amax"),
   lambda x, axis, keepdims, alias: np.max(x, axis, keepdims=keepdims), _max_vjp(np.max))
op("min", reduce_case(distinct=True), reduction("amin"),
   lambda x, axis, keepdims, alias: np.min(x, axis, keepdims=keepdims), _max_vjp(np.min))
op("logsumexp", reduce_case(), reduction("logsumexp"),
   lambda x, axis, keepdims, alias: np_logsumexp(x, axis, keepdims),
   lambda g, x, axis, keepdims, alias: (expand_reduced(g, x.shape, axis, keepdims)
                                        * np.exp(x - np_logsumexp(x, axis)),))


@st.composite
def softmax_case(draw):
    shape = draw(shapes(min_dims=1))
    return Case([floats_array(draw, shape, uniform(-4, 4))], axis=draw(st.integers(-len(shape), len(shape) - 1)),
                alias=draw(st.booleans()))


def _softmax_run(method):
    def run(d, x, axis, alias):
        return getattr(x, method)(dim=axis) if alias else getattr(F, method)(x, axis)
    return run


def _softmax_vjp(g, x, axis, alias):
    s = np_softmax(x, axis)
    return (s * (g - (g * s).sum(axis=axis, keepdims=True)),)


op("softmax", softmax_case(), _softmax_run("softmax"), lambda x, axis, alias: np_softmax(x, axis), _softmax_vjp)
op("log_softmax", softmax_case(), _softmax_run("log_softmax"),
   lambda x, axis, alias: x - np_logsumexp(x, axis),
   lambda g, x, axis, alias: (g - np_softmax(x, axis) * g.sum(axis=axis, keepdims=True),))


# ---- matmul ----------------------------------------------------------------------------

@st.composite
def matmul_case(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    kind = draw(st.sampled_from(["matrix", "batched", "vector @ stack", "stack @ vector", "vector @ vector"]))
    ba, bb = (), ()
    if kind != "matrix":
        ba, bb = draw(broadcast_shapes(2, max_dims=2, max_side=2)).input_shapes
    sa = (k,) if kind.startswith("vector @") else ba + (n, k)
    sb = (k,) if kind.endswith("@ vector") else bb + (k, m)
    return Case([floats_array(draw, sa), floats_array(draw, sb)])


def _matmul_vjp(g, a, b):
    """G @ B^T and A^T @ G, with 1-D operands as a row / a column and batch axes summed away."""
    if a.ndim == 1 and b.ndim == 1:  # a dot product
        return g * b, g * a
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = np.expand_dims(g, -2) if a.ndim == 1 else g
    g2 = np.expand_dims(g2, -1) if b.ndim == 1 else g2
    ga = g2 @ np.swapaxes(b2, -1, -2)
    gb = np.swapaxes(a2, -1, -2) @ g2
    return unbroadcast(ga, a2.shape).reshape(a.shape), unbroadcast(gb, b2.shape).reshape(b.shape)


op("matmul", matmul_case(), lambda d, a, b: a @ b, np.matmul, _matmul_vjp)


# ---- shape ops -------------------------------------------------------------------------

@st.composite
def reshape_case(draw):
    shape = draw(shapes(min_side=0))
    size = int(np.prod(shape))
    candidates = [(size,), shape[::-1], (1,) + shape, shape + (1,), shape]
    if size:
        candidates += [(-1,), (size, -1)] + [(d, size // d) for d in range(1, size + 1) if size % d == 0]
    return Case([floats_array(draw, shape)], target=draw(st.sampled_from(candidates)), alias=draw(st.booleans()))


op("reshape", reshape_case(),
   lambda d, x, target, alias: x.view(*target) if alias else x.reshape(target),
   lambda x, target, alias: x.reshape(target), lambda g, x, target, alias: (g.reshape(x.shape),))


@st.composite
def permute_case(draw):
    shape = draw(shapes(max_dims=4, max_side=2) if draw(st.booleans()) else shapes())
    ndim = len(shape)
    how = draw(st.sampled_from(["permute", "T", "transpose"] if ndim >= 1 else ["permute", "T"]))
    if how == "permute":
        perm = tuple(draw(st.permutations(range(ndim))))
        kw = dict(perm=perm)
    elif how == "T":
        perm = tuple(reversed(range(ndim)))
        kw = {}
    else:
        a, b = draw(st.integers(-ndim, ndim - 1)), draw(st.integers(-ndim, ndim - 1))
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
        kw = dict(pair=(a, b))
    return Case([floats_array(draw, shape)], how=how, axes=tuple(perm), **kw)


def _permute_run(d, x, how, axes, perm=None, pair=None):
    if how == "permute":
        return x.permute(*perm)
    if how == "T":
        return x.T
    return x.transpose(*pair)


op("transpose_permute", permute_case(), _permute_run, lambda x, axes, **_: x.transpose(axes),
   lambda g, x, axes, **_: (g.transpose(np.argsort(axes)),))


@st.composite
def expand_case(draw):
    target = draw(shapes(max_side=3))
    kept = draw(st.integers(0, len(target)))
    source = tuple(n if draw(st.booleans()) else 1 for n in target[len(target) - kept:])
    lead = len(target) - kept
    request = tuple(-1 if k >= lead and source[k - lead] == n and draw(st.booleans()) else n
                    for k, n in enumerate(target))
    return Case([floats_array(draw, source)], target=target, request=request)


op("expand", expand_case(), lambda d, x, target, request: x.expand(*request),
   lambda x, target, request: np.broadcast_to(x, target),
   lambda g, x, target, request: (unbroadcast(g, x.shape),))


@st.composite
def basic_index_case(draw):
    shape = draw(shapes(min_dims=1))
    index = draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    return Case([floats_array(draw, shape)], index=index)


def _basic_vjp(g, x, index):
    out = np.zeros(x.shape)
    out[index] = g
    return (out,)


op("getitem_basic", basic_index_case(), lambda d, x, index: x[index], lambda x, index: np.asarray(x[index]),
   _basic_vjp)


def device_index(index, d, host):
    """NumPy index arrays as int/bool Tensors on `d` (or left as NumPy arrays when `host`)."""
    if isinstance(index, tuple):
        return tuple(device_index(i, d, host) for i in index)
    if isinstance(index, np.ndarray) and not host:
        return tg.Tensor(index, device=d)
    return index


@st.composite
def gather_case(draw):
    """Integer-array indexing with repeated indices guaranteed (more picks than rows)."""
    n, p = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["rows", "rows 2-d", "pairs", "columns"]))
    if kind == "rows":
        index = int_array(draw, (draw(st.integers(n + 1, n + 3)),), -n, n - 1)
    elif kind == "rows 2-d":
        index = int_array(draw, (2, n + 1), -n, n - 1)
    elif kind == "pairs":  # x[rows, cols] with broadcasting index arrays
        m = draw(st.integers(1, 3))
        index = (int_array(draw, (m, 1), -n, n - 1), int_array(draw, (1, m), -p, p - 1))
    else:  # x[:, cols]
        index = (slice(None), int_array(draw, (draw(st.integers(p + 1, p + 3)),), -p, p - 1))
    shape = (n, p) if kind != "rows" or draw(st.booleans()) else (n,)
    return Case([floats_array(draw, shape)], index=index, host=draw(st.booleans()))


def _scatter_vjp(g, x, index, host):
    out = np.zeros(x.shape)
    np.add.at(out, index, g)
    return (out,)


op("getitem_gather", gather_case(), lambda d, x, index, host: x[device_index(index, d, host)],
   lambda x, index, host: x[index], _scatter_vjp)


@st.composite
def mask_case(draw):
    shape = draw(shapes(min_dims=1))
    k = draw(st.integers(1, len(shape)))
    return Case([floats_array(draw, shape)], mask=bool_array(draw, shape[:k]), host=draw(st.booleans()))


def _mask_vjp(g, x, mask, host):
    out = np.zeros(x.shape)
    out[mask] = g
    return (out,)


op("getitem_mask", mask_case(), lambda d, x, mask, host: x[device_index(mask, d, host)],
   lambda x, mask, host: x[mask], _mask_vjp)


@st.composite
def setitem_case(draw):
    """x[index] = value for a basic index or a boolean mask, with a value broadcast into the region."""
    shape = draw(shapes(min_dims=1))
    if draw(st.booleans()):
        index, host = draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True)), True
    else:
        index, host = bool_array(draw, shape[:draw(st.integers(1, len(shape)))]), draw(st.booleans())
    region = np.empty(shape)[index].shape
    kept = region[draw(st.integers(0, len(region))):]  # trailing axes, some of them 1: broadcasts into the region
    value_shape = tuple(1 if draw(st.booleans()) else n for n in kept)
    return Case([floats_array(draw, shape), floats_array(draw, value_shape)], index=index, host=host)


def _setitem(d, x, value, index, host):
    y = x.clone()
    y[device_index(index, d, host)] = value
    return y


def _setitem_ref(x, value, index, host):
    y = x.copy()
    y[index] = value
    return y


def _setitem_vjp(g, x, value, index, host):
    gx = g.copy()
    gx[index] = 0
    return gx, unbroadcast(np.asarray(g[index]), value.shape)


op("setitem", setitem_case(), _setitem, _setitem_ref, _setitem_vjp)


@st.composite
def cat_case(draw):
    shape = draw(shapes(min_dims=1, max_side=2))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(st.lists(st.integers(1, 2), min_size=1, max_size=3))
    parts = []
    for n in sizes:
        s = list(shape)
        s[axis] = n
        parts.append(floats_array(draw, tuple(s)))
    return Case(parts, axis=axis, alias=draw(st.booleans()))


op("cat", cat_case(),
   lambda d, *xs, axis, alias: tg.cat(list(xs), dim=axis) if alias else tg.cat(xs, axis),
   lambda *xs, axis, alias: np.concatenate(xs, axis),
   lambda g, *xs, axis, alias: tuple(np.split(g, np.cumsum([x.shape[axis] for x in xs])[:-1], axis)))


@st.composite
def stack_case(draw):
    shape = draw(shapes(max_dims=2))
    count = draw(st.integers(1, 4))
    return Case([floats_array(draw, shape) for _ in range(count)],
                axis=draw(st.integers(-len(shape) - 1, len(shape))), alias=draw(st.booleans()))


op("stack", stack_case(),
   lambda d, *xs, axis, alias: tg.stack(list(xs), dim=axis) if alias else tg.stack(xs, axis),
   lambda *xs, axis, alias: np.stack(xs, axis),
   lambda g, *xs, axis, alias: tuple(np.take(g, k, axis=axis) for k in range(len(xs))))


@st.composite
def used_flags(draw, count):
    """Which outputs of a multi-output op get a gradient (at least one)."""
    flags = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    if not any(flags):
        flags[draw(st.integers(0, count - 1))] = True
    return tuple(flags)


@st.composite
def unbind_case(draw):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return Case([floats_array(draw, shape)], axis=axis, used=draw(used_flags(shape[axis])), alias=draw(st.booleans()))


def _unbind_vjp(gs, x, axis, used, alias):
    out = np.zeros(x.shape)
    for k, g in enumerate(gs):
        if g is not None:
            index = [slice(None)] * x.ndim
            index[axis] = k
            out[tuple(index)] = g
    return (out,)


op("unbind", unbind_case(), lambda d, x, axis, used, alias: x.unbind(dim=axis) if alias else x.unbind(axis),
   lambda x, axis, used, alias: tuple(np.take(x, k, axis=axis) for k in range(x.shape[axis])), _unbind_vjp)


@st.composite
def split_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    how = draw(st.sampled_from(["size", "sections", "chunk"]))
    if how == "size":
        arg = draw(st.integers(1, n + 1))
        sizes = [min(arg, n - s) for s in range(0, n, arg)]
    elif how == "chunk":
        arg = draw(st.integers(1, n + 1))
        step = -(-n // arg)
        sizes = [min(step, n - s) for s in range(0, n, step)]
    else:
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
        arg = sizes
    return Case([floats_array(draw, shape)], axis=axis, how=how, arg=arg, sizes=tuple(sizes),
                used=draw(used_flags(len(sizes))))


def _split_run(d, x, axis, how, arg, sizes, used):
    if how == "chunk":
        return x.chunk(arg, dim=axis)
    return x.split(arg, axis)


def _split_vjp(gs, x, axis, how, arg, sizes, used):
    out = np.zeros(x.shape)
    start = 0
    for g, n in zip(gs, sizes):
        if g is not None:
            index = [slice(None)] * x.ndim
            index[axis] = slice(start, start + n)
            out[tuple(index)] = g
        start += n
    return (out,)


op("split_chunk", split_case(), _split_run,
   lambda x, axis, sizes, **_: tuple(np.split(x, np.cumsum(sizes)[:-1], axis)), _split_vjp)


@st.composite
def flip_case(draw):
    shape = draw(shapes())
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1))
                if ndim else st.none())
    return Case([floats_array(draw, shape)], axis=axis, alias=draw(st.booleans()))


op("flip", flip_case(), lambda d, x, axis, alias: x.flip(dims=axis) if alias else x.flip(axis),
   lambda x, axis, alias: np.flip(x, axis), lambda g, x, axis, alias: (np.flip(g, axis),))


@st.composite
def matrix_case(draw):
    return Case([floats_array(draw, draw(shapes(min_dims=2)))])


op("contiguous", matrix_case(),
   lambda d, x: x.T.contiguous(), lambda x: np.ascontiguousarray(x.T), lambda g, x: (g.T,))


def _cast_run(d, x, how):
    other = F64 if x.dtype == tg.float32 else F32
    if how == "astype":
        return x.astype(other)
    if how == "to":
        return x.to(dtype=other)
    return x.double() if other is F64 else x.float()


@st.composite
def cast_case(draw):
    return Case(draw(unary_case()).inputs, how=draw(st.sampled_from(["astype", "to", "method"])))


op("cast", cast_case(),
   _cast_run, lambda x, how: x.astype(F64 if x.dtype == F32 else F32), lambda g, x, how: (g,),
   finite_differences=False)  # float64 -> float32 rounding swamps central differences


# ---- composites: losses and layers -----------------------------------------------------

@st.composite
def classification_case(draw, log_probs=False):
    """(N, C) or (N, C, d1, d2) scores, integer targets, an ignore_index and a reduction."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    spatial = draw(st.sampled_from([(), (1, 2), (2, 2), (2,)]))
    scores = floats_array(draw, (n, c) + spatial, uniform(-4, 4) if log_probs else uniform(-3, 3))
    target = int_array(draw, (n,) + spatial, 0, c - 1)
    ignore_index = draw(st.sampled_from([-100, -1, 0]))
    if ignore_index != -100:
        ignored = bool_array(draw, target.shape)
        if ignore_index == -1:
            target = np.where(ignored, -1, target)
        if (target == ignore_index).all():  # keep one valid target, so the mean is defined
            target = target.copy()
            target.flat[0] = 1 if ignore_index == 0 else 0
    return Case([scores, target], ignore_index=ignore_index, reduction=draw(st.sampled_from(["mean", "sum", "none"])))


def _class_grad_weights(g, target, ignore_index, reduction):
    valid = target != ignore_index
    if reduction == "none":
        return g * valid
    if reduction == "sum":
        return g * valid
    return g * valid / valid.sum()


def _onehot(target, c, ignore_index):
    safe = np.where(target == ignore_index, 0, target)
    return np.moveaxis(np.eye(c)[safe], -1, 1)


def _nll_ref(lp, target, ignore_index, reduction):
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    picked = np.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    loss = -picked * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / float(valid.sum())


def _cross_entropy_vjp(g, x, target, ignore_index, reduction):
    w = _class_grad_weights(g, target, ignore_index, reduction)
    return ((np_softmax(x, 1) - _onehot(target, x.shape[1], ignore_index)) * np.expand_dims(w, 1),)


def _nll_vjp(g, lp, target, ignore_index, reduction):
    w = _class_grad_weights(g, target, ignore_index, reduction)
    return (-_onehot(target, lp.shape[1], ignore_index) * np.expand_dims(w, 1),)


op("cross_entropy", classification_case(),
   lambda d, x, t, ignore_index, reduction: F.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction),
   lambda x, t, ignore_index, reduction: _nll_ref(x - np_logsumexp(x, 1), t, ignore_index, reduction),
   _cross_entropy_vjp)
op("nll_loss", classification_case(log_probs=True),
   lambda d, x, t, ignore_index, reduction: F.nll_loss(x, t, ignore_index=ignore_index, reduction=reduction),
   _nll_ref, _nll_vjp)


@st.composite
def weighted_classification_case(draw):
    """classification_case plus class weights (constants, given as an option) and label smoothing."""
    case = draw(classification_case())
    c = case.inputs[0].shape[1]
    weight = draw(st.sampled_from([None, "drawn"]))
    if weight is not None:
        weight = floats_array(draw, (c,), POSITIVE)
    return Case(case.inputs, weight=weight, label_smoothing=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])), **case.kw)


def _smoothed_parts(x, target, weight, ignore_index):
    """Classes moved last: log-probabilities, softmax, the one-hot target, class weights, w[t] and validity."""
    lp = np.moveaxis(x - np_logsumexp(x, 1), 1, -1)
    c = lp.shape[-1]
    w = np.ones(c, x.dtype) if weight is None else weight.astype(x.dtype)
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    return lp, np.exp(lp), np.eye(c, dtype=x.dtype)[safe], w, w[safe] * valid, valid


def _smoothed_ce_ref(x, target, weight, label_smoothing, ignore_index, reduction):
    """PyTorch's label-smoothed cross-entropy, written out: (1 - eps) NLL + eps / C * sum_c w_c (-logp_c)."""
    lp, _, onehot, w, w_t, valid = _smoothed_parts(x, target, weight, ignore_index)
    eps, c = label_smoothing, lp.shape[-1]
    loss = (1 - eps) * -(lp * onehot).sum(-1) * w_t + eps / c * -(lp * w).sum(-1) * valid
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / w_t.sum()


def _smoothed_ce_vjp(g, x, target, weight, label_smoothing, ignore_index, reduction):
    _, p, onehot, w, w_t, valid = _smoothed_parts(x, target, weight, ignore_index)
    eps, c = label_smoothing, p.shape[-1]
    scale = np.broadcast_to(g, target.shape) / (w_t.sum() if reduction == "mean" else 1)
    d = (1 - eps) * w_t[..., None] * (p - onehot) + eps / c * valid[..., None] * (w.sum() * p - w)
    return (np.moveaxis(d * scale[..., None], -1, 1),)


op("cross_entropy_weighted_smoothed", weighted_classification_case(),
   lambda d, x, t, weight, label_smoothing, ignore_index, reduction: F.cross_entropy(
       x, t, weight=None if weight is None else tg.Tensor(weight, dtype=x.dtype, device=d),
       ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing),
   _smoothed_ce_ref, _smoothed_ce_vjp)


def _nll_weighted(lp, target, weight, ignore_index, reduction):
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    w_t = (np.ones(lp.shape[1], lp.dtype) if weight is None else weight.astype(lp.dtype))[safe] * valid
    loss = -np.take_along_axis(lp, np.expand_dims(safe, 1), axis=1)[:, 0] * w_t
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / w_t.sum()


def _nll_weighted_vjp(g, lp, target, weight, ignore_index, reduction):
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    w_t = (np.ones(lp.shape[1]) if weight is None else weight)[safe] * valid
    scale = np.broadcast_to(g, target.shape) / (w_t.sum() if reduction == "mean" else 1)
    return (-_onehot(target, lp.shape[1], ignore_index) * np.expand_dims(scale * w_t, 1),)


@st.composite
def weighted_nll_case(draw):
    case = draw(classification_case(log_probs=True))
    weight = floats_array(draw, (case.inputs[0].shape[1],), POSITIVE) if draw(st.booleans()) else None
    return Case(case.inputs, weight=weight, **case.kw)


op("nll_loss_weighted", weighted_nll_case(),
   lambda d, x, t, weight, ignore_index, reduction: F.nll_loss(
       x, t, weight=None if weight is None else tg.Tensor(weight, dtype=x.dtype, device=d),
       ignore_index=ignore_index, reduction=reduction),
   _nll_weighted, _nll_weighted_vjp)


def _reduce_ref(loss, reduction):
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def _reduce_weight(g, shape, reduction):
    if reduction == "none":
        return g
    return np.broadcast_to(g, shape) / (1 if reduction == "sum" else max(1, int(np.prod(shape))))


@st.composite
def pair_case(draw, target_elements=SIGNED, input_elements=SIGNED):
    shape = draw(shapes())
    return Case([floats_array(draw, shape, input_elements), floats_array(draw, shape, target_elements)],
                reduction=draw(st.sampled_from(["mean", "sum", "none"])))


op("mse_loss", pair_case(),
   lambda d, x, t, reduction: F.mse_loss(x, t, reduction=reduction),
   lambda x, t, reduction: _reduce_ref((x - t) ** 2, reduction),
   lambda g, x, t, reduction: (2 * (x - t) * _reduce_weight(g, x.shape, reduction),
                               -2 * (x - t) * _reduce_weight(g, x.shape, reduction)))

# Logits include exact zeros: softplus is smooth there, whatever kinks its stable form has.
op("binary_cross_entropy_with_logits", pair_case(uniform(0, 1), with_zeros(-5, 5)),
   lambda d, x, t, reduction: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
   lambda x, t, reduction: _reduce_ref(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))), reduction),
   lambda g, x, t, reduction: ((np_sigmoid(x) - t) * _reduce_weight(g, x.shape, reduction),
                               -x * _reduce_weight(g, x.shape, reduction)))



@st.composite
def weighted_bce_case(draw):
    """BCE with a weight broadcast over leading axes and a pos_weight per class (the last axis)."""
    shape = draw(shapes(min_dims=1))
    rng = rng_from(draw)
    weight_shape = tuple(1 if draw(st.booleans()) else n for n in shape[draw(st.integers(0, len(shape))):])
    return Case([floats_array(draw, shape, with_zeros(-5, 5)), floats_array(draw, shape, uniform(0, 1))],
                weight=rng.uniform(0.5, 2.0, weight_shape), pos_weight=rng.uniform(0.2, 3.0, shape[-1:]),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _weighted_bce_ref(x, t, weight, pos_weight, reduction):
    w, p = weight.astype(x.dtype), pos_weight.astype(x.dtype)  # the weights take the logits' dtype
    return _reduce_ref(w * (_softplus(x) * (1 - t + p * t) - p * t * x), reduction)


def _weighted_bce_vjp(g, x, t, weight, pos_weight, reduction):
    w, p, scale = weight.astype(x.dtype), pos_weight.astype(x.dtype), _reduce_weight(g, x.shape, reduction)
    return w * (np_sigmoid(x) * (1 - t + p * t) - p * t) * scale, w * (_softplus(x) * (p - 1) - p * x) * scale


op("binary_cross_entropy_with_logits_weighted", weighted_bce_case(),
   lambda d, x, t, weight, pos_weight, reduction: F.binary_cross_entropy_with_logits(
       x, t, tg.Tensor(weight, device=d), reduction, tg.Tensor(pos_weight, device=d)),
   _weighted_bce_ref, _weighted_bce_vjp)


@st.composite
def linear_case(draw):
    batch = draw(shapes(max_dims=2, max_side=3))
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    inputs = [floats_array(draw, batch + (n_in,)), floats_array(draw, (n_out, n_in))]
    if draw(st.booleans()):
        inputs.append(floats_array(draw, (n_out,)))
    return Case(inputs)


def _linear_vjp(g, x, w, b=None):
    batch_axes = tuple(range(g.ndim - 1))
    grads = (g @ w, g.reshape(-1, w.shape[0]).T @ x.reshape(-1, w.shape[1]))
    return grads + ((g.sum(axis=batch_axes),) if b is not None else ())


op("linear", linear_case(), lambda d, x, w, b=None: F.linear(x, w, b),
   lambda x, w, b=None: x @ w.T + (0 if b is None else b), _linear_vjp)


@st.composite
def embedding_case(draw, padding=True):
    vocab, dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    index_shape = draw(shapes(min_dims=1, max_dims=2, max_side=4))
    index = int_array(draw, index_shape, 0, vocab - 1)
    padding_idx = draw(st.one_of(st.none(), st.integers(0, vocab - 1))) if padding else None
    return Case([floats_array(draw, (vocab, dim)), index], padding_idx=padding_idx)


def _embedding_vjp(g, w, index, padding_idx):
    out = np.zeros(w.shape)
    np.add.at(out, index, g)
    if padding_idx is not None:
        out[padding_idx] = 0.0  # the padding row never learns
    return (out,)


op("embedding", embedding_case(), lambda d, w, i, padding_idx: F.embedding(i, w, padding_idx=padding_idx),
   lambda w, i, padding_idx: w[i], _embedding_vjp,
   fd_case=embedding_case(padding=False))  # the padding row changes the output but, by design, gets no gradient


# ---- more of PyTorch's surface: families of elementwise ops, one row each ----------------
# A family row runs every member on the same draw and returns their outputs as a tuple, so each
# example checks them all; the vector-Jacobian product is the sum of the members' derivatives.

def family(name, members, elements):
    """members: (name, call on a Tensor, NumPy forward, NumPy derivative) of elementwise ops."""
    op(name, unary_case(elements), lambda d, x: tuple(call(x) for _, call, _, _ in members),
       lambda x: tuple(forward(x) for _, _, forward, _ in members),
       lambda gs, x: (sum(g * derivative(x) for g, (_, _, _, derivative) in zip(gs, members)),))


def half_steps(lo, hi):
    """Values on the half-steps of a 0.25 grid in [lo, hi]: never 0, an integer or a multiple of 0.25."""
    return lambda rng, shape: (rng.integers(int(lo * 4), int(hi * 4), shape) + 0.5) * 0.25


def np_softplus(x):
    return np.logaddexp(0, x)


family("math_signed", [
    ("sin", lambda x: x.sin(), np.sin, np.cos),
    ("cos", lambda x: x.cos(), np.cos, lambda a: -np.sin(a)),
    ("tan", lambda x: x.tan(), np.tan, lambda a: 1 / np.cos(a) ** 2),
    ("atan", lambda x: x.atan(), np.arctan, lambda a: 1 / (1 + a * a)),
    ("sinh", lambda x: x.sinh(), np.sinh, np.cosh),
    ("cosh", lambda x: x.cosh(), np.cosh, np.sinh),
    ("expm1", lambda x: x.expm1(), np.expm1, np.exp),
    ("exp2", lambda x: x.exp2(), np.exp2, lambda a: np.exp2(a) * np.log(2)),
    ("square", lambda x: x.square(), np.square, lambda a: 2 * a),
    ("erfc", lambda x: x.erfc(), lambda a: 1 - np_erf(a), lambda a: -2 / math.sqrt(math.pi) * np.exp(-a * a)),
], uniform(-1.2, 1.2))

family("math_positive", [
    ("log1p", lambda x: x.log1p(), np.log1p, lambda a: 1 / (1 + a)),
    ("log2", lambda x: x.log2(), np.log2, lambda a: 1 / (a * np.log(2))),
    ("log10", lambda x: x.log10(), np.log10, lambda a: 1 / (a * np.log(10))),
    ("rsqrt", lambda x: x.rsqrt(), lambda a: a ** -0.5, lambda a: -0.5 * a ** -1.5),
    ("reciprocal", lambda x: x.reciprocal(), np.reciprocal, lambda a: -1 / (a * a)),
], POSITIVE)

family("rounding", [  # away from integers and halves: the derivative is 0 (frac's is 1)
    (name, lambda x, name=name: getattr(x, name)(), getattr(np, name), np.zeros_like)
    for name in ("floor", "ceil", "round", "trunc", "sign")] + [
    ("frac", lambda x: x.frac(), lambda a: a - np.trunc(a), np.ones_like),
], lambda rng, shape: rng.integers(-3, 3, shape) + rng.choice([0.2, 0.3, 0.7, 0.8], shape))

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

family("activations", [  # on half-steps of a 0.25 grid: never at a kink (0, +-1, +-3, 6, 1.5)
    ("leaky_relu", F.leaky_relu, lambda a: np.where(a > 0, a, 0.01 * a), lambda a: np.where(a > 0, 1, 0.01)),
    ("elu", F.elu, lambda a: np.where(a > 0, a, np.expm1(a)), lambda a: np.where(a > 0, 1, np.exp(a))),
    ("celu", lambda x: F.celu(x, 2.0), lambda a: np.where(a > 0, a, 2 * np.expm1(a / 2)),
     lambda a: np.where(a > 0, 1, np.exp(a / 2))),
    ("selu", F.selu, lambda a: SELU_SCALE * np.where(a > 0, a, SELU_ALPHA * np.expm1(a)),
     lambda a: SELU_SCALE * np.where(a > 0, 1, SELU_ALPHA * np.exp(a))),
    ("silu", F.silu, lambda a: a * np_sigmoid(a), lambda a: np_sigmoid(a) * (1 + a * (1 - np_sigmoid(a)))),
    ("mish", F.mish, lambda a: a * np.tanh(np_softplus(a)),
     lambda a: np.tanh(np_softplus(a)) + a * (1 - np.tanh(np_softplus(a)) ** 2) * np_sigmoid(a)),
    ("softplus", F.softplus, np_softplus, np_sigmoid),
    ("softplus_beta_threshold", lambda x: F.softplus(x, 2.0, 3.0),
     lambda a: np.where(2 * a > 3, a, np_softplus(2 * a) / 2), lambda a: np.where(2 * a > 3, 1, np_sigmoid(2 * a))),
    ("softsign", F.softsign, lambda a: a / (1 + np.abs(a)), lambda a: 1 / (1 + np.abs(a)) ** 2),
    ("hardtanh", F.hardtanh, lambda a: np.clip(a, -1, 1), lambda a: (np.abs(a) < 1) * 1.0),
    ("relu6", F.relu6, lambda a: np.clip(a, 0, 6), lambda a: ((a > 0) & (a < 6)) * 1.0),
    ("hardsigmoid", F.hardsigmoid, lambda a: np.clip(a / 6 + 0.5, 0, 1), lambda a: (np.abs(a) < 3) / 6),
    ("hardswish", F.hardswish, lambda a: a * np.clip(a / 6 + 0.5, 0, 1),
     lambda a: np.where(a < -3, 0, np.where(a > 3, 1, a / 3 + 0.5))),
    ("logsigmoid", F.logsigmoid, lambda a: -np_softplus(-a), lambda a: 1 - np_sigmoid(a)),
    ("tanhshrink", F.tanhshrink, lambda a: a - np.tanh(a), lambda a: np.tanh(a) ** 2),
], half_steps(-4, 4))


# ---- more of PyTorch's surface: ops along axes --------------------------------------------

def moved(a, axis):
    return np.moveaxis(a, axis, -1)


def excluding_each(x):
    """(..., n, n): row i is x along the last axis with element i replaced by 1 (products without it)."""
    out = np.repeat(x[..., None, :], x.shape[-1], axis=-2)
    idx = np.arange(x.shape[-1])
    out[..., idx, idx] = 1.0
    return out


@st.composite
def running_case(draw):
    shape = draw(shapes(min_dims=1))
    return Case([floats_array(draw, shape, with_zeros(-2, 2))], axis=draw(st.integers(-len(shape), len(shape) - 1)),
                keepdim=draw(st.booleans()))


def _running_run(d, x, axis, keepdim):
    return x.cumsum(axis), x.cumprod(dim=axis), x.prod(axis, keepdim), x.prod(), x.diff(dim=axis)


def _running_ref(x, axis, keepdim):
    return (np.cumsum(x, axis), np.cumprod(x, axis), np.prod(x, axis, keepdims=keepdim), np.prod(x),
            np.diff(x, axis=axis))


def _running_vjp(gs, x, axis, keepdim):
    g_sum, g_cumprod, g_prod, g_all, g_diff = gs
    xm = moved(x, axis)
    others = excluding_each(xm)  # others[..., i, :] excludes element i
    out = np.flip(np.cumsum(np.flip(moved(g_sum, axis), -1), -1), -1)
    # d cumprod_j / d x_i = prod_{k <= j, k != i} x_k for j >= i
    out += np.einsum("...j,...ij->...i", moved(g_cumprod, axis), np.triu(np.cumprod(others, -1)))
    g_prod = g_prod if keepdim else np.expand_dims(g_prod, axis)
    out += moved(g_prod, axis) * np.prod(others, -1)
    flat_others = excluding_each(x.reshape(-1))
    out += moved((g_all * np.prod(flat_others, -1)).reshape(x.shape), axis)
    gd = moved(g_diff, axis)
    zero = np.zeros(gd.shape[:-1] + (1,))
    out += np.concatenate([zero, gd], -1) - np.concatenate([gd, zero], -1)
    return (np.moveaxis(out, -1, axis),)


op("running_sums_products_diff", running_case(), _running_run, _running_ref, _running_vjp)


@st.composite
def statistics_case(draw):
    shape = draw(shapes(min_dims=1, min_side=2))
    rng = rng_from(draw)  # magnitudes distinct and never 0: no ties of |x|, no kinks
    x = (rng.permutation(int(np.prod(shape))) + 1.0).reshape(shape) * 0.25 * rng.choice([-1.0, 1.0], shape)
    return Case([x], axis=draw(axis_arg(len(shape)).filter(lambda a: a != ())), keepdim=draw(st.booleans()),
                correction=draw(st.sampled_from([0, 1])),
                p=draw(st.sampled_from(["fro", 1, 3, 0.5, math.inf, -math.inf])))


def _statistics_run(d, x, axis, keepdim, correction, p):
    return x.var(axis, keepdim=keepdim, correction=correction), x.std(axis, bool(correction), keepdim), \
        x.norm(p, axis, keepdim)


def _np_norm(x, p, axis, keepdims):
    a = np.abs(x)
    if p == math.inf or p == -math.inf:
        return (np.max if p > 0 else np.min)(a, axis, keepdims=keepdims)
    p = 2 if p == "fro" else p
    return (a ** p).sum(axis, keepdims=keepdims) ** (1 / p)


def _statistics_ref(x, axis, keepdim, correction, p):
    return (np.var(x, axis, ddof=correction, keepdims=keepdim), np.std(x, axis, ddof=correction, keepdims=keepdim),
            _np_norm(x, p, axis, keepdim))


def _statistics_vjp(gs, x, axis, keepdim, correction, p):
    g_var, g_std, g_norm = (expand_reduced(g, x.shape, axis, keepdim) for g in gs)
    n = int(np.prod([x.shape[a] for a in axes_of(axis, x.ndim)]))
    centered = x - x.mean(axis, keepdims=True)
    std = np.std(x, axis, ddof=correction, keepdims=True)
    norm = _np_norm(x, p, axis, True)
    if p in (math.inf, -math.inf):
        d_norm = np.sign(x) * (np.abs(x) == norm)
    else:
        q = 2 if p == "fro" else p
        d_norm = np.sign(x) * np.abs(x) ** (q - 1) / norm ** (q - 1)
    return (g_var * 2 * centered / (n - correction) + g_std * centered / ((n - correction) * std) + g_norm * d_norm,)


op("var_std_norm", statistics_case(), _statistics_run, _statistics_ref, _statistics_vjp)


@st.composite
def sort_case(draw):
    shape = draw(shapes(min_dims=1))
    x = distinct_values(draw, [int(np.prod(shape))])[0].reshape(shape)
    return Case([x], axis=draw(st.integers(-len(shape), len(shape) - 1)), descending=draw(st.booleans()))


def _sort_order(x, axis, descending):
    return np.flip(np.argsort(x, axis), axis) if descending else np.argsort(x, axis)


def _sort_vjp(g, x, axis, descending):
    out = np.zeros(x.shape)
    np.put_along_axis(out, _sort_order(x, axis, descending), g, axis)
    return (out,)


op("sort", sort_case(), lambda d, x, axis, descending: x.sort(axis, descending).values,
   lambda x, axis, descending: np.take_along_axis(x, _sort_order(x, axis, descending), axis), _sort_vjp)


@st.composite
def repeats_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=2))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    return Case([floats_array(draw, shape)], axis=axis,
                sizes=tuple(draw(st.lists(st.integers(0, 2), min_size=len(shape), max_size=len(shape) + 1))),
                times=draw(st.integers(0, 3)), counts=int_array(draw, (n,), 0, 3),
                shift=draw(st.integers(-4, 4)))


def _repeats_run(d, x, axis, sizes, times, counts, shift):
    return (x.repeat(*sizes), x.repeat_interleave(times, dim=axis),
            x.repeat_interleave(tg.Tensor(counts, device=d), dim=axis), x.roll(shift, axis))


def _repeats_ref(x, axis, sizes, times, counts, shift):
    return np.tile(x, sizes), np.repeat(x, times, axis), np.repeat(x, counts, axis), np.roll(x, shift, axis)


def _repeats_vjp(gs, x, axis, sizes, times, counts, shift):
    g_tile, g_times, g_counts, g_roll = gs
    lead = len(sizes) - x.ndim
    shape = (1,) * lead + x.shape
    split = g_tile.reshape([n for r, s in zip(sizes, shape) for n in (r, s)])
    out = split.sum(tuple(range(0, 2 * len(sizes), 2))).reshape(x.shape) if g_tile.size else np.zeros(x.shape)
    for g, reps in ((g_times, np.full(x.shape[axis], times)), (g_counts, counts)):
        into = np.zeros(moved(x, axis).shape)
        sources = np.repeat(np.arange(x.shape[axis]), reps)
        np.add.at(np.moveaxis(into, -1, 0), sources, np.moveaxis(moved(g, axis), -1, 0))
        out = out + np.moveaxis(into, -1, axis)
    return (out + np.roll(g_roll, -shift, axis),)


op("repeat_repeat_interleave_roll", repeats_case(), _repeats_run, _repeats_ref, _repeats_vjp)


@st.composite
def selection_case(draw):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n, size = shape[axis], int(np.prod(shape))
    k = draw(st.integers(1, len(shape)))
    return Case([floats_array(draw, shape)], axis=axis, index=int_array(draw, (draw(st.integers(0, 4)),), 0, n - 1),
                mask=bool_array(draw, shape[k:]), flat=int_array(draw, draw(shapes(max_dims=2)), 0, size - 1),
                at=draw(st.integers(-n, n - 1)))


def _selection_run(d, x, axis, index, mask, flat, at):
    return (x.index_select(axis, tg.Tensor(index, device=d)), x.masked_select(tg.Tensor(mask, device=d)),
            x.take(tg.Tensor(flat, device=d)), x.select(axis, at))


def _selection_ref(x, axis, index, mask, flat, at):
    return np.take(x, index, axis), x[np.broadcast_to(mask, x.shape)], x.reshape(-1)[flat], np.take(x, at, axis)


def _selection_vjp(gs, x, axis, index, mask, flat, at):
    g_index, g_mask, g_flat, g_at = gs
    out = np.zeros(x.shape)
    np.add.at(np.moveaxis(out, axis, 0), index, np.moveaxis(g_index, axis, 0))
    out[np.broadcast_to(mask, x.shape)] += g_mask
    np.add.at(out.reshape(-1), flat, g_flat)
    np.moveaxis(out, axis, 0)[at] += g_at
    return (out,)


op("index_select_masked_select_take_select", selection_case(), _selection_run, _selection_ref, _selection_vjp)


@st.composite
def scatter_case(draw):
    """x (n, m), index and src of shape (k, m') along dim 0 or (n', k) along dim 1; scatter's index never
    repeats along its dim (an overwritten write has no gradient), scatter_add's may."""
    n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dim = draw(st.integers(0, 1))
    rng = rng_from(draw)
    size = (n, m)[dim]
    k, other = draw(st.integers(0, size)), draw(st.integers(1, (m, n)[dim]))
    unique = np.stack([rng.permutation(size)[:k] for _ in range(other)], axis=1 - dim)
    index_shape = unique.shape
    return Case([floats_array(draw, (n, m)), floats_array(draw, index_shape), floats_array(draw, index_shape)],
                dim=dim, unique=unique, repeated=int_array(draw, index_shape, 0, size - 1))


def _grid(index, dim):
    grid = list(np.indices(index.shape))
    grid[dim] = index
    return tuple(grid)


def _scatter_run(d, x, src, other, dim, unique, repeated):
    return (x.scatter(dim, tg.Tensor(unique, device=d), src), x.scatter_add(dim, tg.Tensor(repeated, device=d), other))


def _scatter_ref(x, src, other, dim, unique, repeated):
    written = x.copy()
    written[_grid(unique, dim)] = src
    added = x.copy()
    np.add.at(added, _grid(repeated, dim), other)
    return written, added


def _scatter_vjp(gs, x, src, other, dim, unique, repeated):
    g_written, g_added = gs
    gx = g_written.copy()
    gx[_grid(unique, dim)] = 0
    return gx + g_added, g_written[_grid(unique, dim)], g_added[_grid(repeated, dim)]


op("scatter_scatter_add", scatter_case(), _scatter_run, _scatter_ref, _scatter_vjp)


@st.composite
def triangle_case(draw):
    shape = draw(shapes(min_dims=2, max_dims=3))
    ndim = len(shape)
    dim1 = draw(st.integers(-ndim, ndim - 1))
    dim2 = draw(st.integers(-ndim, ndim - 1).filter(lambda b: b % ndim != dim1 % ndim))
    return Case([floats_array(draw, shape)], k=draw(st.integers(-3, 3)), dim1=dim1, dim2=dim2)


def _triangle_run(d, x, k, dim1, dim2):
    flat = x.reshape(-1)
    return x.tril(k), x.triu(k), x.diagonal(k, dim1, dim2), flat.diag(k), x[0].diag(k), \
        (x[0] if x.ndim == 3 else x).trace()


def _triangle_ref(x, k, dim1, dim2):
    matrix = x[0] if x.ndim == 3 else x
    return (np.tril(x, k), np.triu(x, k), np.diagonal(x, k, dim1, dim2), np.diag(x.reshape(-1), k),
            np.diag(x[0], k), np.trace(matrix))


def _add_to_diagonal(m, g, k):
    """m[..., i + max(-k, 0), i + max(k, 0)] += g[..., i] (the k-th diagonal of the last two axes)."""
    steps = np.arange(g.shape[-1])
    m[..., steps + max(-k, 0), steps + max(k, 0)] += g


def _triangle_vjp(gs, x, k, dim1, dim2):
    g_tril, g_triu, g_diagonal, g_flat, g_vector, g_trace = gs
    out = np.tril(g_tril, k) + np.triu(g_triu, k)
    _add_to_diagonal(np.moveaxis(out, (dim1 % x.ndim, dim2 % x.ndim), (-2, -1)), g_diagonal, k)  # (a view of out)
    out += np.diagonal(g_flat, k).reshape(x.shape)
    if x.ndim == 2:  # diag of the vector x[0] is a matrix
        out[0] += np.diagonal(g_vector, k)
        _add_to_diagonal(out, np.full(min(x.shape), g_trace), 0)
    else:  # diag of the matrix x[0] is a vector
        _add_to_diagonal(out[0], g_vector, k)
        _add_to_diagonal(out[0], np.full(min(x.shape[1:]), g_trace), 0)
    return (out,)


op("tril_triu_diagonal_diag_trace", triangle_case(), _triangle_run, _triangle_ref, _triangle_vjp)


@st.composite
def nan_to_num_case(draw):
    shape = draw(shapes())
    rng = rng_from(draw)
    x = np.where(rng.random(shape) < 0.3, rng.choice([np.nan, np.inf, -np.inf], shape), rng.uniform(-2, 2, shape))
    return Case([x])


op("nan_to_num", nan_to_num_case(),  # (the defaults for infinities depend on the dtype: test_tensor_surface.py)
   lambda d, x: (x.nan_to_num(posinf=7.0, neginf=-7.0), x.nan_to_num(1.5, 9.0, -9.0)),
   lambda x: (np.nan_to_num(x, posinf=7.0, neginf=-7.0), np.nan_to_num(x, nan=1.5, posinf=9.0, neginf=-9.0)),
   lambda gs, x: ((gs[0] + gs[1]) * np.isfinite(x),),
   fd_case=unary_case())  # finite differences cannot step from inf or NaN


@st.composite
def lerp_case(draw):
    sa, sb, sw = draw(broadcast_shapes(3)).input_shapes
    return Case([floats_array(draw, sa), floats_array(draw, sb), floats_array(draw, sw)])


op("lerp", lerp_case(), lambda d, a, b, w: a.lerp(b, w), lambda a, b, w: a + w * (b - a),
   lambda g, a, b, w: (unbroadcast(g * (1 - w), a.shape), unbroadcast(g * w, b.shape),
                       unbroadcast(g * (b - a), w.shape)))


# ---- more of PyTorch's surface: nn.functional --------------------------------------------

@st.composite
def glu_case(draw):
    shape = list(draw(shapes(min_dims=1)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    shape[dim] *= 2
    return Case([floats_array(draw, tuple(shape))], dim=dim)


def _glu_vjp(g, x, dim):
    a, b = np.split(x, 2, dim)
    return (np.concatenate([g * np_sigmoid(b), g * a * np_sigmoid(b) * (1 - np_sigmoid(b))], dim),)


op("glu", glu_case(), lambda d, x, dim: F.glu(x, dim),
   lambda x, dim: np.split(x, 2, dim)[0] * np_sigmoid(np.split(x, 2, dim)[1]), _glu_vjp)


@st.composite
def prelu_case(draw):
    shape = draw(shapes(min_dims=2))
    weight = floats_array(draw, (draw(st.sampled_from([1, shape[1]])),), uniform(0.1, 0.5))
    return Case([floats_array(draw, shape, away_from_zero()), weight])


def _prelu_parts(x, w):
    return w.reshape((-1,) + (1,) * (x.ndim - 2)) if w.size > 1 else w.reshape(())


def _prelu_vjp(g, x, w):
    wb = _prelu_parts(x, w)
    gw = np.where(x > 0, 0.0, g * x)
    gw = gw.sum(tuple(k for k in range(x.ndim) if k != 1)) if w.size > 1 else gw.sum().reshape(1)
    return np.where(x > 0, g, g * wb), gw


op("prelu", prelu_case(), lambda d, x, w: F.prelu(x, w),
   lambda x, w: np.where(x > 0, x, x * _prelu_parts(x, w)), _prelu_vjp)


@st.composite
def layer_norm_case(draw):
    shape = draw(shapes(min_dims=1, min_side=2))
    normalized = shape[len(shape) - draw(st.integers(1, min(2, len(shape)))):]
    affine = draw(st.booleans())
    inputs = [floats_array(draw, shape)] + ([floats_array(draw, normalized), floats_array(draw, normalized)]
                                            if affine else [])
    return Case(inputs, normalized=normalized)


def _layer_norm_parts(x, normalized):
    axes = tuple(range(x.ndim - len(normalized), x.ndim))
    sigma = np.sqrt(x.var(axes, keepdims=True) + 1e-5)
    return axes, (x - x.mean(axes, keepdims=True)) / sigma, sigma


def _layer_norm_ref(x, w=None, b=None, *, normalized):
    _, xhat, _ = _layer_norm_parts(x, normalized)
    return xhat if w is None else xhat * w + b


def _layer_norm_vjp(g, x, w=None, b=None, *, normalized):
    axes, xhat, sigma = _layer_norm_parts(x, normalized)
    gy = g if w is None else g * w
    gx = (gy - gy.mean(axes, keepdims=True) - xhat * (gy * xhat).mean(axes, keepdims=True)) / sigma
    batch = tuple(range(x.ndim - len(normalized)))
    return (gx,) if w is None else (gx, (g * xhat).sum(batch), g.sum(batch))


op("layer_norm", layer_norm_case(), lambda d, x, *wb, normalized: F.layer_norm(x, normalized, *wb),
   _layer_norm_ref, _layer_norm_vjp)


@st.composite
def distances_case(draw):
    shape = draw(shapes(min_dims=1))
    x1 = floats_array(draw, shape, away_from_zero(0.5))  # x2 - x1 away from 0 too: the distance has a kink there
    return Case([x1, x1 + floats_array(draw, shape, away_from_zero(0.5))],
                dim=draw(st.integers(-len(shape), len(shape) - 1)))


def _distances_ref(x1, x2, dim):
    n1, n2 = (np.sqrt((v * v).sum(dim, keepdims=True)) for v in (x1, x2))
    diff = x1 - x2 + 1e-6
    return x1 / n1, ((x1 / n1) * (x2 / n2)).sum(dim), np.sqrt((diff * diff).sum(-1))


def _distances_vjp(gs, x1, x2, dim):
    g_normal, g_cosine, g_distance = gs
    n1, n2 = (np.sqrt((v * v).sum(dim, keepdims=True)) for v in (x1, x2))
    gx1 = g_normal / n1 - x1 * (x1 * g_normal).sum(dim, keepdims=True) / n1 ** 3
    cos = (x1 * x2).sum(dim, keepdims=True) / (n1 * n2)
    gc = np.expand_dims(g_cosine, dim)
    gx1 = gx1 + gc * (x2 / (n1 * n2) - cos * x1 / n1 ** 2)
    gx2 = gc * (x1 / (n1 * n2) - cos * x2 / n2 ** 2)
    diff = x1 - x2 + 1e-6
    gd = np.expand_dims(g_distance, -1) * diff / np.sqrt((diff * diff).sum(-1, keepdims=True))
    return gx1 + gd, gx2 - gd


op("normalize_cosine_similarity_pairwise_distance", distances_case(),
   lambda d, x1, x2, dim: (F.normalize(x1, dim=dim), F.cosine_similarity(x1, x2, dim), F.pairwise_distance(x1, x2)),
   _distances_ref, _distances_vjp)


NUMPY_PAD_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@st.composite
def pad_case(draw):
    shape = draw(shapes(min_dims=1, min_side=2))
    mode = draw(st.sampled_from(sorted(NUMPY_PAD_MODE)))
    padded = draw(st.integers(1, min(2, len(shape))))
    low = -1 if mode == "constant" else 0
    widths = []
    for n in reversed(shape[len(shape) - padded:]):  # PyTorch's order: the last axis first
        top = n - 1 if mode == "reflect" else n
        widths += [draw(st.integers(low, top)), draw(st.integers(low, top))]
    return Case([floats_array(draw, shape)], pad=tuple(widths), mode=mode,
                value=draw(st.sampled_from([None, 2.5])) if mode == "constant" else None)


def _pad_axes(x, pad):
    """[(axis, before, after)] in NumPy's order."""
    return [(x.ndim - 1 - k, pad[2 * k], pad[2 * k + 1]) for k in range(len(pad) // 2)]


def _pad_ref(x, pad, mode, value):
    for axis, lo, hi in _pad_axes(x, pad):  # crop negative widths, then pad
        x = np.take(x, np.arange(max(-lo, 0), x.shape[axis] - max(-hi, 0)), axis)
    widths = [(0, 0)] * x.ndim
    for axis, lo, hi in _pad_axes(x, pad):
        widths[axis] = (max(lo, 0), max(hi, 0))
    extra = dict(constant_values=value or 0) if mode == "constant" else {}
    return np.pad(x, widths, NUMPY_PAD_MODE[mode], **extra)


def _pad_vjp(g, x, pad, mode, value):
    source = np.arange(x.size, dtype=float).reshape(x.shape)  # which input element each output element copies
    taken = _pad_ref(source, pad, mode, -1.0)
    out = np.zeros(x.size)
    np.add.at(out, taken[taken >= 0].astype(int), g[taken >= 0])
    return (out.reshape(x.shape),)


op("pad", pad_case(), lambda d, x, pad, mode, value: F.pad(x, pad, mode, value), _pad_ref, _pad_vjp)


# ---- more of PyTorch's surface: losses ------------------------------------------------------

@st.composite
def regression_case(draw):
    """input = target + d with d on half-steps of a 0.25 grid and beta, delta, margin on whole steps: no kinks."""
    shape = draw(shapes())
    target = floats_array(draw, shape)
    return Case([target + half_steps(-3, 3)(rng_from(draw), shape), target],
                reduction=draw(st.sampled_from(["mean", "sum", "none"])), beta=draw(st.sampled_from([0.5, 1.0, 1.5])),
                delta=draw(st.sampled_from([0.5, 1.0, 2.0])), sign=rng_from(draw).choice([-1.0, 1.0], shape),
                margin=draw(st.sampled_from([0.0, 0.5])))


def _regression_run(d, x, t, reduction, beta, delta, sign, margin):
    return (F.l1_loss(x, t, reduction), F.smooth_l1_loss(x, t, reduction, beta), F.huber_loss(x, t, reduction, delta),
            F.margin_ranking_loss(x, t, tg.Tensor(sign, dtype=x.dtype, device=d), margin, reduction))


def _regression_ref(x, t, reduction, beta, delta, sign, margin):
    a = np.abs(x - t)
    return (_reduce_ref(a, reduction), _reduce_ref(np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta), reduction),
            _reduce_ref(np.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta)), reduction),
            _reduce_ref(np.maximum(-sign.astype(x.dtype) * (x - t) + margin, 0), reduction))


def _regression_vjp(gs, x, t, reduction, beta, delta, sign, margin):
    d = x - t
    w = [_reduce_weight(g, x.shape, reduction) for g in gs]
    gx = (w[0] * np.sign(d) + w[1] * np.where(np.abs(d) < beta, d / beta, np.sign(d))
          + w[2] * np.where(np.abs(d) < delta, d, delta * np.sign(d))
          + w[3] * np.where(-sign * d + margin > 0, -sign, 0))
    return gx, -gx


op("l1_smooth_l1_huber_margin_ranking_losses", regression_case(), _regression_run, _regression_ref, _regression_vjp)


@st.composite
def kl_div_case(draw, zeros=True):
    shape = draw(shapes(min_dims=1))
    rng = rng_from(draw)
    target = rng.uniform(0.1, 1.0, shape)
    log_target = draw(st.booleans())
    if zeros and not log_target:
        target = np.where(rng.random(shape) < 0.3, 0.0, target)
    return Case([floats_array(draw, shape), np.log(target) if log_target else target], log_target=log_target,
                reduction=draw(st.sampled_from(["mean", "sum", "none", "batchmean"])))


def _kl_reduce(loss, reduction):
    return loss.sum() / loss.shape[0] if reduction == "batchmean" else _reduce_ref(loss, reduction)


def _kl_ref(x, t, log_target, reduction):
    if log_target:
        return _kl_reduce(np.exp(t) * (t - x), reduction)
    return _kl_reduce(np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - x), 0.0), reduction)


def _kl_vjp(g, x, t, log_target, reduction):
    w = np.broadcast_to(g, x.shape) / x.shape[0] if reduction == "batchmean" else _reduce_weight(g, x.shape, reduction)
    if log_target:
        return -np.exp(t) * w, np.exp(t) * (t - x + 1) * w
    return -t * w, np.where(t > 0, np.log(np.where(t > 0, t, 1.0)) + 1 - x, 0.0) * w


op("kl_div", kl_div_case(), lambda d, x, t, log_target, reduction: F.kl_div(x, t, reduction, log_target),
   _kl_ref, _kl_vjp, fd_case=kl_div_case(zeros=False))  # a target of 0 has a one-sided derivative


@st.composite
def bce_case(draw):
    shape = draw(shapes())
    weight = floats_array(draw, shape[draw(st.integers(0, len(shape))):], POSITIVE) if draw(st.booleans()) else None
    return Case([floats_array(draw, shape, uniform(0.05, 0.95)), floats_array(draw, shape, uniform(0, 1))],
                weight=weight, reduction=draw(st.sampled_from(["mean", "sum", "none"])))


def _bce_vjp(g, p, t, weight, reduction):
    w = (1.0 if weight is None else weight) * _reduce_weight(g, p.shape, reduction)
    return w * (p - t) / (p * (1 - p)), w * (np.log(1 - p) - np.log(p))


op("binary_cross_entropy", bce_case(),
   lambda d, p, t, weight, reduction: F.binary_cross_entropy(
       p, t, None if weight is None else tg.Tensor(weight, device=d), reduction),
   lambda p, t, weight, reduction: _reduce_ref(-(1.0 if weight is None else weight.astype(p.dtype)) * (
       t * np.log(p) + (1 - t) * np.log(1 - p)), reduction), _bce_vjp)


# ---- the three properties over every row ------------------------------------------------

def leaves(case, dtype, d, requires_grad=True):
    return [tg.Tensor(a.astype(dtype), device=d, requires_grad=requires_grad) if is_float(a) else tg.Tensor(a, device=d)
            for a in case.inputs]


def rounded(case, dtype):
    """The inputs as the op sees them in `dtype`, widened back to float64 for the references."""
    return [a.astype(dtype).astype(F64) if is_float(a) else a for a in case.inputs]


def as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def dtype_id(dt):
    return np.dtype(dt).name


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("spec", OPS, ids=repr)
@given(data=st.data())
def test_forward_matches_numpy(spec, dtype, device, data):
    case = data.draw(spec.case, label="case")
    xs = leaves(case, dtype, device, requires_grad=False)
    outs = as_tuple(spec.run(device, *xs, **case.kw))
    typed = as_tuple(spec.ref(*[a.astype(dtype) if is_float(a) else a for a in case.inputs], **case.kw))
    exact = as_tuple(spec.ref(*rounded(case, dtype), **case.kw))
    assert len(outs) == len(exact)
    for k, (out, t, e) in enumerate(zip(outs, typed, exact)):
        assert isinstance(out, tg.Tensor)
        assert out.shape == np.shape(e), f"output {k}"
        assert out.dtype == np.asarray(t).dtype, f"output {k}"
        assert out.device == parse_device(device)
        assert out.grad_fn is None and not out.requires_grad  # nothing required grad
        np.testing.assert_allclose(out.numpy(), e, **TOL[dtype], err_msg=f"output {k}")


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("spec", OPS, ids=repr)
@given(data=st.data())
def test_gradient_matches_analytic_derivative(spec, dtype, device, data):
    case = data.draw(spec.case, label="case")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    xs = leaves(case, dtype, device)
    out = spec.run(device, *xs, **case.kw)
    outs = as_tuple(out)
    used = case.kw.get("used", (True,) * len(outs))
    gs = [rng.uniform(-1, 1, o.shape).astype(o.dtype) if u else None for o, u in zip(outs, used)]
    if isinstance(out, tg.Tensor):
        out.backward(tg.Tensor(gs[0], device=device))
    else:
        sum((o * tg.Tensor(g, device=device)).sum() for o, g in zip(outs, gs) if g is not None).backward()
    wide = [None if g is None else g.astype(F64) for g in gs]
    expected = spec.vjp(wide[0] if isinstance(out, tg.Tensor) else wide, *rounded(case, dtype), **case.kw)
    floats = [x for x, a in zip(xs, case.inputs) if is_float(a)]
    assert len(expected) == len(floats)
    for k, (x, e) in enumerate(zip(floats, expected)):
        assert x.grad is not None, f"input {k} got no gradient"
        assert x.grad.shape == x.shape and x.grad.dtype == x.dtype and x.grad.device == x.device, f"input {k}"
        np.testing.assert_allclose(x.grad.numpy(), e, **TOL[dtype], err_msg=f"input {k}")


@pytest.mark.parametrize("spec", [s for s in OPS if s.finite_differences], ids=repr)
@given(data=st.data())
def test_gradient_matches_finite_differences(spec, data):
    case = data.draw(spec.fd_case, label="case")
    xs = leaves(case, F64, "cpu")
    assert gradcheck(lambda *ts: spec.run("cpu", *ts, **case.kw), xs)


def test_every_primitive_and_composite_has_a_row():
    names = {s.name for s in OPS}
    required = {"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh", "sigmoid", "relu", "maximum",
                "minimum", "where", "sum", "max", "matmul", "reshape", "transpose_permute", "expand",
                "getitem_basic", "getitem_gather", "getitem_mask", "setitem", "cat", "stack", "unbind", "split_chunk", "flip",
                "contiguous", "cast", "mean", "min", "abs", "sqrt", "clip", "logsumexp", "softmax", "log_softmax",
                "cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits", "linear", "embedding",
                "math_signed", "math_positive", "rounding", "activations", "running_sums_products_diff",
                "var_std_norm", "sort", "repeat_repeat_interleave_roll", "index_select_masked_select_take_select",
                "scatter_scatter_add", "tril_triu_diagonal_diag_trace", "nan_to_num", "lerp", "glu", "prelu",
                "layer_norm", "normalize_cosine_similarity_pairwise_distance", "pad",
                "l1_smooth_l1_huber_margin_ranking_losses", "kl_div", "binary_cross_entropy"}
    assert required <= names, required - names


# ---- ops that are not a plain function of their inputs ---------------------------------

@pytest.mark.parametrize("dtype", [None, F32, F64], ids=lambda d: "default" if d is None else dtype_id(d))
@given(data=st.data())
def test_one_hot_matches_numpy_and_has_no_gradient(dtype, device, data):
    c = data.draw(st.integers(1, 5))
    target = int_array(data.draw, data.draw(shapes(max_dims=2)), 0, c - 1)
    out = F.one_hot(tg.Tensor(target, device=device), c, dtype=dtype)
    expected = np.eye(c, dtype=np.int64 if dtype is None else dtype)[target]  # int64 as PyTorch's
    assert out.shape == expected.shape and out.dtype == expected.dtype and out.device == parse_device(device)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), expected)


@st.composite
def dropout_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    return (floats_array(draw, shape, away_from_zero()), draw(st.sampled_from([0.1, 0.25, 0.5, 0.8])),
            draw(st.integers(0, 2 ** 31 - 1)))


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@given(case=dropout_case())
def test_dropout_is_seeded_scaled_and_differentiable(dtype, device, case):
    x_np, p, seed = case
    x = tg.Tensor(x_np.astype(dtype), device=device, requires_grad=True)
    tg.manual_seed(seed)
    out = F.dropout(x, p)
    tg.manual_seed(seed)
    again = F.dropout(x.detach(), p).numpy()
    y, xv = out.numpy(), x_np.astype(dtype).astype(F64)
    np.testing.assert_array_equal(y, again)  # the same seed, the same mask
    kept = y != 0  # inputs are nonzero by construction
    assert out.dtype == x.dtype and out.device == x.device
    np.testing.assert_allclose(y[kept], xv[kept] / (1 - p), **TOL[dtype])  # survivors scaled by 1/(1-p)
    g = np.random.default_rng(seed).uniform(-1, 1, x.shape).astype(dtype)
    out.backward(tg.Tensor(g, device=device))
    np.testing.assert_allclose(x.grad.numpy(), g * kept / (1 - p), **TOL[dtype])


@given(case=dropout_case())
def test_dropout_gradcheck_with_a_fixed_mask(case):
    x_np, p, seed = case

    def fn(x):
        tg.manual_seed(seed)  # every evaluation draws the same mask
        return F.dropout(x, p)
    assert gradcheck(fn, [tg.Tensor(x_np, dtype=F64, requires_grad=True)])


def test_dropout_drops_about_p_of_the_elements(device):
    tg.manual_seed(1234)
    x = tg.ones(200, 100, device=device)
    for p in (0.1, 0.5, 0.9):
        dropped = float((F.dropout(x, p).numpy() == 0).mean())
        assert abs(dropped - p) < 0.02, (p, dropped)  # 20,000 draws: 6+ standard deviations


@given(data=st.data(), p=st.sampled_from([0.0, 0.3, 1.0]))
def test_dropout_in_eval_is_the_identity_and_edge_probabilities(data, p):
    x = floats_array(data.draw, data.draw(shapes(min_dims=1)))
    t = tg.Tensor(x, requires_grad=True)
    assert F.dropout(t, p, training=False) is t
    if p in (0.0, 1.0):
        expected = x if p == 0 else np.zeros_like(x)  # float64 data stays float64
        np.testing.assert_array_equal(F.dropout(t, p).numpy(), expected)


def test_scatter_add_of_gathered_rows_equals_add_at():
    """The embedding-gradient fast path (sort + reduceat) against numpy.add.at, duplicates and negatives included."""
    rng = np.random.default_rng(0)
    for index in (rng.integers(-6, 6, size=(7, 5)), np.array([3, 3, 3, -1, 5]), np.array([2])):
        values = rng.standard_normal(index.shape + (4,))
        expected = rng.standard_normal((6, 4))
        target = expected.copy()
        np.add.at(expected, index, values)
        tg.engine.backend.scatter_add(target, index, values)
        np.testing.assert_allclose(target, expected, rtol=1e-13)
