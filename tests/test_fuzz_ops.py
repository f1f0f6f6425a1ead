"""Fuzz the public op API against NumPy (issue #5).

Hypothesis draws shapes, dtypes (float32, float64, int64, bool), axes, indices, and Python
scalars, NumPy scalars and NumPy arrays on either side of Tensors. For every call:

- if NumPy returns, the op returns a Tensor with NumPy's shape, dtype and values;
- if NumPy raises, the op raises ValueError or TypeError whose message names the op (an
  index error may also be an IndexError, as long as it is a ValueError too);
- nothing else escapes the engine (no bare IndexError, AttributeError, ...).

When the op returns floating-point Tensors that require grad, a backward pass runs too: each
input's gradient must have the input's shape and dtype, and for ops that are homogeneous of
degree k in their differentiable inputs (linear ops, max/min, mul, matmul, div) Euler's
identity sum_i <x_i, dL/dx_i> = k L must hold for L = <f(x), R> with a random R. That checks
gradient values (scatter-add of repeated indices, split pieces without a gradient, ...)
with no second implementation of each backward.

Semantics where the library deliberately follows PyTorch rather than NumPy, and which the
references below encode (see the README's "Differences from PyTorch" for the other way round):

- max/min return the values only (NumPy's amax/amin), not PyTorch's (values, indices).
- transpose(a, b) swaps two axes (PyTorch; NumPy's swapaxes); with no arguments it reverses
  them (NumPy). permute(*axes) is np.transpose.
- squeeze(axis) on an axis whose length is not 1 leaves the tensor unchanged (PyTorch);
  NumPy raises.
- reshape: only -1 means "infer this length" (PyTorch); NumPy takes any negative number.
- split(size_or_sections) and chunk(n) follow PyTorch; expand(*shape) follows PyTorch
  (-1 keeps a length); the references build the same pieces with NumPy slicing/broadcast_to.
- where() needs a boolean condition (PyTorch); NumPy accepts any array as truth values.
- logsumexp has no NumPy counterpart: the reference is the max-shifted formula in float64;
  integer and bool inputs give float64, and an empty reduction gives -inf (SciPy, PyTorch).
- the free functions cat/stack take sequences of Tensors (not lists of arrays).
Python operands follow NumPy 2 (NEP 50): Python scalars are weak (float32 + 2.5 is float32,
int64 + 2.5 is float64); NumPy scalars and arrays are strong (float32 + np.float64(2) is float64).
Floating-point warnings (x / 0) are NumPy's business, so both sides run under
np.errstate(all="ignore") here; the numerical-safety tests check the stable functions
never warn.
"""
import math
import operator
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import Tensor

DTYPES = [np.float32, np.float64, np.int64, np.bool_]
FUZZ = settings(deadline=None)

# ---- strategies ------------------------------------------------------------------------

small_shapes = st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4),
                         hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))


def _elements(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":  # a few repeated values so that ties (max, maximum) happen
        return st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0]),
                         st.floats(-4, 4, allow_nan=False, width=32))
    if dtype.kind == "i":
        return st.integers(-5, 5)
    return st.booleans()


def arrays(draw, dtype, shape):
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))


def tensor_of(array, grad=True):
    """A Tensor copy of `array`; floating tensors require grad (so backward runs too)."""
    return Tensor(array, requires_grad=grad and array.dtype.kind == "f")


def python_scalar(draw, dtype):
    kind = np.dtype(dtype).kind
    if kind == "f":
        return draw(st.sampled_from([0.5, -1.5, 2.0, 0.0, 3.25]))
    if kind == "i":
        return draw(st.integers(-3, 3))
    return draw(st.booleans())


def operand(draw, shape, require_tensor):
    """A Tensor, NumPy array, NumPy scalar or Python scalar (scalars ignore `shape`)."""
    dtype = draw(st.sampled_from(DTYPES))
    kinds = ["tensor"] if require_tensor else ["tensor", "ndarray", "python", "npscalar"]
    kind = draw(st.sampled_from(kinds))
    if kind == "python":
        return python_scalar(draw, dtype)
    if kind == "npscalar":
        return np.dtype(dtype).type(python_scalar(draw, dtype))
    array = arrays(draw, dtype, shape)
    return tensor_of(array) if kind == "tensor" else array


def two_shapes(draw):
    """Two shapes that broadcast together most of the time."""
    if draw(st.integers(0, 3)):
        return draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, min_side=0, max_side=3)).input_shapes
    return draw(small_shapes), draw(small_shapes)


def axis_arg(draw, ndim, allow_tuple=True, allow_none=True):
    """None, an int (possibly negative or out of range), a NumPy int, or a tuple (possibly repeated)."""
    one = st.integers(-ndim - 2, ndim + 1)
    choices = [one, one.map(np.int64)]
    if allow_tuple:
        choices.append(st.lists(one, max_size=3).map(tuple))
    if allow_none:
        choices.append(st.none())
    return draw(st.one_of(*choices))


# ---- the check -------------------------------------------------------------------------

def _host(value):
    return value.numpy() if isinstance(value, Tensor) else value


def _tolerance(dtype):
    return dict(rtol=2e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _assert_like(op, got, expected):
    assert isinstance(got, Tensor), f"{op}: returned {type(got).__name__}, expected a Tensor"
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{op}: shape {got.shape}, NumPy gives {expected.shape}"
    assert got.dtype == expected.dtype, f"{op}: dtype {got.dtype}, NumPy gives {expected.dtype}"
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got.numpy(), expected, equal_nan=True, err_msg=op, **_tolerance(expected.dtype))
    else:
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=op)


def check(names, call, reference, inputs=(), degree=None, seed=0):
    """Run `call` (the library) and `reference` (NumPy) and hold them to the contract above.

    names: the op's name(s); an error message must contain one of them.
    inputs: the Tensors (and other operands) passed in, for the backward check.
    degree: k if the op is homogeneous of degree k in its differentiable inputs, else None.
    Returns the library's result (None when both raised).
    """
    names = (names,) if isinstance(names, str) else names
    op = names[0]
    with np.errstate(all="ignore"):
        try:
            with warnings.catch_warnings():  # NumPy's "Mean of empty slice" and the like
                warnings.simplefilter("ignore", RuntimeWarning)
                expected, numpy_error = reference(), None
        except Exception as e:  # NumPy's IndexError, AxisError, ValueError, TypeError ...
            expected, numpy_error = None, e
        try:
            got = call()
        except (ValueError, TypeError) as e:  # anything else propagates and fails the test
            assert numpy_error is not None, f"{op} raised {type(e).__name__}: {e}, but NumPy returns {expected!r}"
            assert any(n in str(e) for n in names), f"{op}: the message does not name the op: {e}"
            return None
    assert numpy_error is None, f"{op} returned {got!r}, but NumPy raises {type(numpy_error).__name__}: {numpy_error}"
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, tuple) and len(got) == len(expected), \
            f"{op}: {len(got) if isinstance(got, tuple) else got!r} outputs, NumPy gives {len(expected)}"
        for k, (g, e) in enumerate(zip(got, expected)):
            _assert_like(f"{op}[{k}]", g, e)
        outs = list(got)
    else:
        _assert_like(op, got, expected)
        outs = [got]
    _check_backward(op, outs, inputs, degree, seed)
    return got


def _check_backward(op, outs, inputs, degree, seed):
    rng = np.random.default_rng(seed)
    leaves = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    used = [o for o in outs if o.requires_grad and rng.random() < 0.8] or [o for o in outs if o.requires_grad][:1]
    if not leaves or not used or not all(np.isfinite(o.numpy()).all() for o in used):
        return
    weights = [rng.standard_normal(o.shape) for o in used]
    loss = None
    for o, w in zip(used, weights):
        term = (o * Tensor(w, dtype=o.dtype)).sum()
        loss = term if loss is None else loss + term
    with np.errstate(all="ignore"):
        loss.backward()
    for k, x in enumerate(leaves):
        assert x.grad is not None, f"{op}: input {k} got no gradient"
        assert x.grad.shape == x.shape and x.grad.dtype == x.dtype, \
            f"{op}: gradient of input {k} is {x.grad.shape} {x.grad.dtype}, the input {x.shape} {x.dtype}"
    if degree is None:
        return
    value = sum(float((o.numpy().astype(np.float64) * w).sum()) for o, w in zip(used, weights))
    scale = sum(float(np.abs(o.numpy().astype(np.float64) * w).sum()) for o, w in zip(used, weights)) + 1.0
    euler = sum(float((x.numpy().astype(np.float64) * x.grad.numpy().astype(np.float64)).sum()) for x in leaves)
    if not math.isfinite(euler):
        return
    tol = 1e-4 if any(x.dtype == np.float32 for x in leaves) or any(o.dtype == np.float32 for o in used) else 1e-9
    assert abs(euler - degree * value) <= tol * max(scale, abs(euler)), \
        f"{op}: sum <x, grad> = {euler}, expected {degree} * {value} (wrong gradient values)"


def _all_grad_tensors(operands):
    return all(isinstance(x, Tensor) and x.requires_grad for x in operands)


# ---- binary arithmetic and comparisons --------------------------------------------------

BINARY = {"+": ("add", operator.add), "-": ("sub", operator.sub), "*": ("mul", operator.mul),
          "/": ("div", operator.truediv), "**": ("pow", operator.pow)}
COMPARE = {"<": ("lt", operator.lt), "<=": ("le", operator.le), ">": ("gt", operator.gt),
           ">=": ("ge", operator.ge), "==": ("eq", operator.eq), "!=": ("ne", operator.ne)}
REFLECTED = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}  # array < Tensor runs Tensor.__gt__


def _degree(symbol, lhs, rhs):
    g = [isinstance(x, Tensor) and x.requires_grad for x in (lhs, rhs)]
    if symbol in "+-":
        return 1 if all(g) else None
    if symbol == "*" and all(isinstance(x, Tensor) for x in (lhs, rhs)) or symbol == "@":
        return sum(g)
    if symbol == "/" and all(isinstance(x, Tensor) for x in (lhs, rhs)):
        return g[0] - g[1]
    return None


@pytest.mark.parametrize("symbol", sorted(BINARY) + sorted(COMPARE))
@FUZZ
@given(data=st.data())
def test_binary_ops_match_numpy(data, symbol):
    draw = data.draw
    shape_a, shape_b = two_shapes(draw)
    tensor_left = draw(st.booleans())
    lhs = operand(draw, shape_a, require_tensor=tensor_left)
    rhs = operand(draw, shape_b, require_tensor=not tensor_left)
    name, fn = BINARY.get(symbol) or COMPARE[symbol]
    names = (name, symbol) + ((REFLECTED[name],) if name in REFLECTED and not tensor_left else ())
    check(names, lambda: fn(lhs, rhs), lambda: fn(_host(lhs), _host(rhs)), (lhs, rhs),
          _degree(symbol, lhs, rhs), draw(st.integers(0, 2**16)))


@FUZZ
@given(st.data())
def test_matmul_matches_numpy(data):
    draw = data.draw
    if draw(st.integers(0, 3)):
        shapes = draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=3))
        shape_a, shape_b = shapes.input_shapes
        if draw(st.integers(0, 4)) == 0 and shape_b:  # an inner dimension that does not align
            shape_b = shape_b[:-2] + (shape_b[-2] + 1,) + shape_b[-1:] if len(shape_b) > 1 else (shape_b[0] + 1,)
    else:
        shape_a, shape_b = draw(small_shapes), draw(small_shapes)
    tensor_left = draw(st.booleans())
    lhs = operand(draw, shape_a, require_tensor=tensor_left)
    rhs = operand(draw, shape_b, require_tensor=not tensor_left)
    check(("matmul", "@"), lambda: lhs @ rhs, lambda: _host(lhs) @ _host(rhs), (lhs, rhs),
          _degree("@", lhs, rhs), draw(st.integers(0, 2**16)))


UNARY = {
    "neg": (lambda t: -t, lambda a: -a),
    "exp": (Tensor.exp, np.exp),
    "log": (Tensor.log, np.log),
    "tanh": (Tensor.tanh, np.tanh),
    "sigmoid": (Tensor.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    "relu": (Tensor.relu, lambda a: np.maximum(a, a.dtype.type(0))),
    "sqrt": (Tensor.sqrt, np.sqrt),
    "abs": (Tensor.abs, np.abs),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FUZZ
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64, np.int64]))
def test_unary_ops_match_numpy(data, name, dtype):
    array = arrays(data.draw, dtype, data.draw(small_shapes))
    ours, ref = UNARY[name]
    x = tensor_of(array)
    degree = 1 if name in ("neg", "relu", "abs") else None
    check(name, lambda: ours(x), lambda: ref(array), (x,), degree, data.draw(st.integers(0, 2**16)))


# ---- reductions ------------------------------------------------------------------------

def np_logsumexp(a, axis=None, keepdims=False):
    """float64, shifted by the max; -inf for empty reductions; NumPy's axis errors."""
    x = a.astype(np.float64)
    np.sum(x, axis=axis, keepdims=keepdims)  # NumPy's errors for bad axes
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    if x.size == 0:
        return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims)).astype(dtype)
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = out.reshape(np.sum(x, axis=axis).shape)
    return out.astype(dtype)


def np_mean(a, axis=None, keepdims=False):
    """np.mean, except that a 0-d array takes axis 0 or -1 as np.sum, np.max and PyTorch do."""
    if a.ndim == 0 and not isinstance(axis, tuple) and axis in (0, -1):
        axis = None
    return np.mean(a, axis=axis, keepdims=keepdims)


REDUCTIONS = {"sum": np.sum, "mean": np_mean, "amax": np.max, "amin": np.min, "logsumexp": np_logsumexp}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@FUZZ
@given(data=st.data(), dtype=st.sampled_from(DTYPES), keepdims=st.booleans(), torch_names=st.booleans())
def test_reductions_match_numpy(data, name, dtype, keepdims, torch_names):
    array = arrays(data.draw, dtype, data.draw(small_shapes))
    axis = axis_arg(data.draw, array.ndim)
    x = tensor_of(array)
    method = getattr(x, name)
    if torch_names:  # PyTorch's dim/keepdim spellings are aliases
        call = lambda: method(dim=axis, keepdim=keepdims)  # noqa: E731
    else:
        call = lambda: method(axis, keepdims)  # noqa: E731
    degree = None if name == "logsumexp" else 1
    check(name, call, lambda: REDUCTIONS[name](array, axis=axis, keepdims=keepdims), (x,), degree,
          data.draw(st.integers(0, 2**16)))


# ---- shape ops -------------------------------------------------------------------------

def _np_axis(axis, ndim):
    """NumPy's axis normalisation (raises AxisError, a ValueError, when out of range)."""
    return np.lib.array_utils.normalize_axis_index(operator.index(axis), ndim) \
        if hasattr(np.lib, "array_utils") else np.core.multiarray.normalize_axis_index(operator.index(axis), ndim)


def np_split(a, size_or_sections, axis):
    """PyTorch's split, built from NumPy slices."""
    axis = _np_axis(axis, a.ndim)
    n = a.shape[axis]
    if isinstance(size_or_sections, (list, tuple)):
        sizes = list(size_or_sections)
        if sum(sizes) != n or min(sizes, default=0) < 0:
            raise ValueError("sections do not add up")
    else:
        if size_or_sections <= 0:
            raise ValueError("size must be positive")
        sizes = [min(size_or_sections, n - s) for s in range(0, n, size_or_sections)] or [0]
    starts = np.cumsum([0] + sizes)
    return [np.take(a, np.arange(lo, hi), axis=axis) for lo, hi in zip(starts[:-1], starts[1:])]


def np_chunk(a, chunks, axis):
    """PyTorch's chunk: pieces of ceil(n / chunks) (fewer pieces when that divides n sooner)."""
    axis = _np_axis(axis, a.ndim)
    if chunks <= 0:
        raise ValueError("chunks must be positive")
    return np_split(a, max(-(-a.shape[axis] // chunks), 1), axis)


def np_expand(a, shape):
    """PyTorch's expand: -1 keeps a length; new leading axes need explicit sizes."""
    lead = len(shape) - a.ndim
    if lead < 0 or any(n == -1 for n in shape[:lead]) or any(n < -1 for n in shape):
        raise ValueError("cannot expand")
    target = tuple(a.shape[k - lead] if n == -1 else n for k, n in enumerate(shape))
    return np.broadcast_to(a, target)


def np_squeeze(a, axis):
    """PyTorch's squeeze: axes whose length is not 1 are left alone."""
    if axis is None or a.ndim == 0 and not isinstance(axis, tuple):  # NumPy: a 0-d array takes axis 0 or -1
        return np.squeeze(a, axis)
    axes = axis if isinstance(axis, tuple) else (axis,)
    normal = [_np_axis(k, a.ndim) for k in axes]
    if len(set(normal)) != len(normal):
        raise ValueError("repeated axis")
    return np.squeeze(a, tuple(k for k in normal if a.shape[k] == 1))


def np_reshape(a, shape):
    """np.reshape, except that only -1 means "infer this length" (PyTorch); NumPy takes any negative."""
    if any(isinstance(n, int) and n < -1 for n in shape):
        raise ValueError("invalid shape dimension")
    return np.reshape(a, shape)


def _reshape_target(draw, shape):
    size = math.prod(shape)
    if draw(st.integers(0, 3)):  # a valid factorisation, maybe with one -1
        dims, rest = [], size
        for _ in range(draw(st.integers(0, 3))):
            d = draw(st.sampled_from([d for d in range(1, 7) if rest % d == 0] if rest else [0, 1, 2]))
            dims.append(d)
            rest = rest // d if d else 0
        if rest != 1 or not dims:
            dims.append(rest)
        if draw(st.booleans()) and 0 not in dims:
            dims[draw(st.integers(0, len(dims) - 1))] = -1
        return tuple(draw(st.permutations(dims)))
    return tuple(draw(st.lists(st.one_of(st.integers(-2, 6), st.just(2.0)), max_size=4)))


def _expand_target(draw, shape):
    lead = tuple(draw(st.lists(st.integers(-1, 3), max_size=2)))
    body = tuple(draw(st.sampled_from([n, -1] + ([0, 2, 3] if n == 1 else [n + 1]))) for n in shape)
    if draw(st.integers(0, 9)) == 0 and body:  # fewer dimensions than the tensor
        body = body[1:]
    return lead + body


def _shape_op(draw, name, array):
    """(call on a Tensor, NumPy reference, degree) for one shape op with drawn arguments."""
    ndim = array.ndim
    if name == "reshape":
        target = _reshape_target(draw, array.shape)
        if draw(st.booleans()):
            return (lambda t: t.reshape(*target)), (lambda a: np_reshape(a, target))
        return (lambda t: t.reshape(list(target))), (lambda a: np_reshape(a, target))
    if name == "transpose":
        if draw(st.integers(0, 4)) == 0:
            return (lambda t: t.transpose()), np.transpose
        a, b = axis_arg(draw, ndim, False, False), axis_arg(draw, ndim, False, False)
        return (lambda t: t.transpose(a, b)), (lambda x: np.swapaxes(x, a, b))
    if name == "T":
        return (lambda t: t.T), (lambda x: x.T)
    if name == "permute":
        axes = list(draw(st.permutations(range(ndim))))
        axes = [k - ndim if draw(st.booleans()) else k for k in axes]
        if draw(st.integers(0, 3)) == 0:
            axes = draw(st.lists(st.integers(-ndim - 1, ndim + 1), max_size=ndim + 1))
        return (lambda t: t.permute(*axes)), (lambda x: np.transpose(x, axes))
    if name == "expand":
        target = _expand_target(draw, array.shape)
        return (lambda t: t.expand(*target)), (lambda x: np_expand(x, target))
    if name == "squeeze":
        axis = axis_arg(draw, ndim)
        return (lambda t: t.squeeze(axis)), (lambda x: np_squeeze(x, axis))
    if name == "unsqueeze":
        axis = draw(st.integers(-ndim - 2, ndim + 1))
        return (lambda t: t.unsqueeze(axis)), (lambda x: np.expand_dims(x, axis))
    if name == "flip":
        axis = axis_arg(draw, ndim)
        return (lambda t: t.flip(axis)), (lambda x: np.flip(x, axis))
    if name == "split":
        axis = draw(st.integers(-ndim - 1, ndim))
        n = array.shape[axis] if -ndim <= axis < ndim else 2
        arg = draw(st.one_of(st.integers(-1, n + 1), st.lists(st.integers(-1, n), max_size=4),
                             st.integers(0, 3).map(lambda k: [n // 2] * k + [n - k * (n // 2)] if k else [n])))
        return (lambda t: t.split(arg, axis)), (lambda x: np_split(x, arg, axis))
    if name == "chunk":
        axis, chunks = draw(st.integers(-ndim - 1, ndim)), draw(st.integers(-1, 5))
        return (lambda t: t.chunk(chunks, dim=axis)), (lambda x: np_chunk(x, chunks, axis))
    if name == "unbind":
        axis = draw(st.integers(-ndim - 1, ndim))
        return (lambda t: t.unbind(axis)), (lambda x: [np.take(x, k, axis=axis) for k in range(x.shape[_np_axis(axis, x.ndim)])])
    raise AssertionError(name)


SHAPE_OPS = ["reshape", "transpose", "T", "permute", "expand", "squeeze", "unsqueeze", "flip", "split", "chunk",
             "unbind"]


@pytest.mark.parametrize("name", SHAPE_OPS)
@FUZZ
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_shape_ops_match_numpy(data, name, dtype):
    array = arrays(data.draw, dtype, data.draw(small_shapes))
    ours, ref = _shape_op(data.draw, name, array)
    x = tensor_of(array)
    check("transpose" if name == "T" else name, lambda: ours(x), lambda: ref(array), (x,), 1,
          data.draw(st.integers(0, 2**16)))


# ---- indexing --------------------------------------------------------------------------

def _index_part(draw, size, remaining_shape):
    """One component of an index for an axis of length `size`."""
    kind = draw(st.sampled_from(["int", "int", "slice", "slice", "none", "ellipsis", "intarray", "mask"]))
    if kind == "int":
        value = draw(st.integers(-size - 2, size + 1))
        return draw(st.sampled_from([value, np.int64(value)]))
    if kind == "slice":
        bound = st.one_of(st.none(), st.integers(-size - 2, size + 2))
        return slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, 3, -1, -2] + [0] * (draw(st.integers(0, 9)) == 0))))
    if kind == "none":
        return None
    if kind == "ellipsis":
        return Ellipsis
    if kind == "intarray":
        index = draw(hnp.arrays(np.int64, draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)),
                                elements=st.integers(-size - 1, size)))
        form = draw(st.sampled_from(["ndarray", "list", "tensor"]))
        return index.tolist() if form == "list" and index.ndim else Tensor(index) if form == "tensor" else index
    # a boolean mask over the next 1 or 2 axes, of the right shape or not
    dims = remaining_shape[:draw(st.integers(1, max(1, min(2, len(remaining_shape)))))] or (size,)
    if draw(st.integers(0, 3)) == 0:
        dims = tuple(n + draw(st.sampled_from([-1, 1])) if n else 1 for n in dims)
    mask = draw(hnp.arrays(np.bool_, dims))
    return Tensor(mask) if draw(st.booleans()) else mask


def _index(draw, shape):
    parts, axis = [], 0
    for _ in range(draw(st.integers(1, len(shape) + 1))):
        size = shape[axis] if axis < len(shape) else 1
        parts.append(_index_part(draw, size, shape[axis:]))
        axis += 1
    if len(parts) == 1 and draw(st.booleans()):
        return parts[0]
    return tuple(parts)


def _host_index(index):
    if isinstance(index, tuple):
        return tuple(_host(p) for p in index)
    return _host(index)


@FUZZ
@given(st.data(), st.sampled_from(DTYPES))
def test_getitem_matches_numpy(data, dtype):
    array = arrays(data.draw, dtype, data.draw(small_shapes))
    index = _index(data.draw, array.shape)
    x = tensor_of(array)
    check("getitem", lambda: x[index], lambda: array[_host_index(index)], (x,), 1, data.draw(st.integers(0, 2**16)))


# ---- free functions --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cat", "stack"])
@FUZZ
@given(data=st.data())
def test_cat_and_stack_match_numpy(data, name):
    draw = data.draw
    base = draw(small_shapes)
    count = draw(st.integers(1, 3))
    ndim = len(base)
    axis = draw(st.integers(-ndim - 2, ndim + 1))
    shapes = []
    for _ in range(count):
        shape = list(base)
        if name == "cat" and ndim and -ndim <= axis < ndim:
            shape[axis] = draw(st.integers(0, 3))  # the concatenated axis may differ
        if draw(st.integers(0, 5)) == 0:  # a mismatch elsewhere, or another rank
            shape = list(draw(small_shapes))
        shapes.append(tuple(shape))
    arrays_ = [arrays(draw, draw(st.sampled_from(DTYPES)), s) for s in shapes]
    tensors = [tensor_of(a) for a in arrays_]
    ours, ref = (tg.cat, np.concatenate) if name == "cat" else (tg.stack, np.stack)
    if draw(st.booleans()):
        call = lambda: ours(tensors, axis)  # noqa: E731
    else:
        call = lambda: ours(tensors, dim=axis)  # noqa: E731
    degree = 1 if _all_grad_tensors(tensors) else None
    check(name, call, lambda: ref(arrays_, axis=axis), tensors, degree, draw(st.integers(0, 2**16)))


@FUZZ
@given(st.data())
def test_where_matches_numpy(data):
    draw = data.draw
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, min_side=0, max_side=3)).input_shapes
    if draw(st.integers(0, 4)) == 0:
        shapes = (draw(small_shapes),) + shapes[1:]
    condition = draw(hnp.arrays(np.bool_, shapes[0]))
    first_is_tensor = draw(st.booleans())
    a = operand(draw, shapes[1], require_tensor=first_is_tensor)
    b = operand(draw, shapes[2], require_tensor=not first_is_tensor)
    cond = draw(st.sampled_from(["tensor", "ndarray", "int tensor"]))
    if cond == "int tensor":  # documented difference: the condition must be boolean
        c = Tensor(condition.astype(np.int64))
        with np.errstate(all="ignore"), pytest.raises(TypeError, match="where"):
            tg.where(c, a, b)
        return
    c = Tensor(condition) if cond == "tensor" else condition
    degree = 1 if _all_grad_tensors((a, b)) else None
    check("where", lambda: tg.where(c, a, b), lambda: np.where(condition, _host(a), _host(b)), (a, b), degree,
          draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@FUZZ
@given(data=st.data())
def test_maximum_minimum_match_numpy(data, name):
    draw = data.draw
    shape_a, shape_b = two_shapes(draw)
    first_is_tensor = draw(st.booleans())
    a = operand(draw, shape_a, require_tensor=first_is_tensor)
    b = operand(draw, shape_b, require_tensor=not first_is_tensor)
    ours, ref = (tg.maximum, np.maximum) if name == "maximum" else (tg.minimum, np.minimum)
    degree = 1 if _all_grad_tensors((a, b)) else None
    check(name, lambda: ours(a, b), lambda: ref(_host(a), _host(b)), (a, b), degree, draw(st.integers(0, 2**16)))


# ---- regressions the fuzz found (kept as plain examples) ----------------------------------

def test_numpy_scalars_are_operands_and_indices():
    x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert (x * np.float32(2)).dtype == np.float32
    assert (np.float64(2) * x).dtype == np.float64  # NumPy scalars are strong (NEP 50)
    assert (x + np.int64(1)).dtype == (x.numpy() + np.int64(1)).dtype == np.float64
    np.testing.assert_array_equal(x[np.int64(1)].numpy(), [3, 4, 5])
    assert x.sum(np.int64(1)).shape == (2,)
    assert x[[]].shape == (0, 3)


def test_reductions_over_empty_and_zero_d_tensors():
    e = Tensor(np.zeros((0, 3), np.float32))
    assert e.amax(1).shape == (0,) and e.amin(axis=1).shape == (0,)
    with pytest.raises(ValueError, match="max"):
        e.amax(0)
    assert np.isnan(e.mean().item())
    assert e.logsumexp(0).numpy().tolist() == [-np.inf] * 3
    assert Tensor(2.0).mean(0).item() == 2.0  # used to be a bare IndexError
    with pytest.raises(ValueError, match="mean"):
        Tensor(2.0).mean((0,))
    with pytest.raises(TypeError, match="reshape"):
        Tensor(np.ones(6)).reshape(3.5, 2)  # used to truncate 3.5 to 3
    with pytest.raises(ValueError, match="permute"):
        Tensor(np.ones((2, 3))).permute(5, 0)  # used to wrap 5 to 1


def test_min_of_bool_and_int_tensors():
    b = Tensor(np.array([True, False, True]))
    assert b.min().item() is False and b.min().dtype == np.bool_
    i = Tensor(np.array([np.iinfo(np.int64).min, 0]))
    assert i.min().item() == np.iinfo(np.int64).min  # -x wraps for the most negative int64


def test_maximum_and_where_with_a_python_scalar_first():
    x = Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    y = tg.maximum(0.0, x) + tg.where(x.array > 0, 1.0, x)
    np.testing.assert_array_equal(y.numpy(), [-1.0, 3.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
