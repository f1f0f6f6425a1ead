"""Numerical safety at large magnitudes (issue #5).

sigmoid, tanh, softmax, log_softmax, logsumexp, cross_entropy and
binary_cross_entropy_with_logits must give finite, correct values and gradients for inputs up
to magnitude 1e4 in float32 and float64, without any NumPy floating-point warning: everything
runs under np.errstate(all="raise") (underflow included) with warnings as errors. The
reference is computed here in float64 with the textbook stable formulas (sign-split sigmoid,
max-shifted exponentials) and analytic gradients, from the same (possibly float32) inputs.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
import tinygrad_seq.nn.functional as F
from tinygrad_seq import Tensor

DTYPES = [np.float32, np.float64]
IGNORE = -100

# ---- float64 references ----------------------------------------------------------------


def ref_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def ref_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_log_softmax(x, axis=-1):
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def ref_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _reduce(values, reduction, count):
    return {"none": values, "sum": values.sum(), "mean": values.sum() / count}[reduction]


def _upstream_of(value, r, reduction, count):
    """dL/d(elementwise loss) for L = sum(reduced * r)."""
    if reduction == "none":
        return r
    return np.full(value.shape, float(r) / (count if reduction == "mean" else 1))


# Each entry: (library function, reference value, reference gradient given upstream g).
ELEMENTWISE = {
    "sigmoid": (lambda x: x.sigmoid(), ref_sigmoid, lambda x, g: g * ref_sigmoid(x) * (1 - ref_sigmoid(x))),
    "tanh": (lambda x: x.tanh(), np.tanh, lambda x, g: g * (1 - np.tanh(x) ** 2)),
    "softmax": (lambda x: x.softmax(-1), ref_softmax,
                lambda x, g: ref_softmax(x) * (g - (g * ref_softmax(x)).sum(-1, keepdims=True))),
    "log_softmax": (lambda x: F.log_softmax(x, 1), ref_log_softmax,
                    lambda x, g: g - ref_softmax(x) * g.sum(-1, keepdims=True)),
    "logsumexp": (lambda x: x.logsumexp(dim=-1), ref_logsumexp, lambda x, g: ref_softmax(x) * g[:, None]),
}


def _tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


@pytest.fixture(autouse=True)
def _strict_floats():
    """Any floating-point over/underflow, division by zero or invalid op raises, as do warnings."""
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _run(fn, x_array, dtype, upstream, *args):
    """Value and input gradient of sum(fn(x) * upstream), in `dtype`, all under the strict context."""
    x = Tensor(x_array.astype(dtype), requires_grad=True)
    y = fn(x, *args)
    assert y.dtype == dtype
    (y * Tensor(np.asarray(upstream), dtype=dtype)).sum().backward()
    value, grad = y.numpy(), x.grad.numpy()
    assert np.isfinite(value).all() and np.isfinite(grad).all(), (value, grad)
    return value, grad


def _close(actual, expected, what, dtype):
    with np.errstate(under="ignore"):  # assert_allclose scales tiny reference values by rtol
        np.testing.assert_allclose(actual, expected, err_msg=what, **_tolerance(dtype))


def _reference_input(x_array, dtype):
    return x_array.astype(dtype).astype(np.float64)  # the values the library actually sees


# ---- inputs ----------------------------------------------------------------------------

FIXED = {
    "mixed": np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.5], [0.0, -1e4, -1e4]]),
    "all +1e4": np.full((2, 4), 1e4),
    "all -1e4": np.full((2, 4), -1e4),
    "near ties": np.array([[1e4, 1e4 - 0.5, 1e4 - 30.0, -1e4], [-9999.5, -1e4, -1e4 + 3, 9999.0]]),
    "ordinary": np.array([[0.3, -1.2, 2.5, 0.0], [5.0, -5.0, 40.0, -40.0]]),
}

big_mixtures = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5),
    elements=st.one_of(st.sampled_from([1e4, -1e4, 0.0, 9999.5, -9999.5, 50.0, -50.0]),
                       st.floats(-1e4, 1e4).map(lambda v: round(v, 3)), st.floats(-30, 30).map(lambda v: round(v, 3))))
# (rounded: subnormal inputs underflow in any product, which is not what this file is about)


def _upstream(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- elementwise and along-an-axis functions ---------------------------------------------

def _check_elementwise(name, x_array, dtype):
    fn, ref, ref_grad = ELEMENTWISE[name]
    x64 = _reference_input(x_array, dtype)
    with np.errstate(under="ignore"):  # the reference may underflow to 0; the library may not
        expected = ref(x64)
        g = _upstream(expected.shape)
        expected_grad = ref_grad(x64, g)
    value, grad = _run(lambda x: fn(x), x_array, dtype, g)
    _close(value, expected, f"{name} value", dtype)
    _close(grad, expected_grad, f"{name} gradient", dtype)


@pytest.mark.parametrize("case", sorted(FIXED))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_fixed_large_inputs(name, dtype, case):
    _check_elementwise(name, FIXED[case], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@settings(deadline=None)
@given(x=big_mixtures)
def test_random_mixtures_of_magnitudes(name, dtype, x):
    _check_elementwise(name, x, dtype)


# ---- losses --------------------------------------------------------------------------------

def _check_cross_entropy(x_array, target, dtype, reduction):
    x64 = _reference_input(x_array, dtype)
    valid = target != IGNORE
    count = max(int(valid.sum()), 1)
    with np.errstate(under="ignore"):
        picked = -ref_log_softmax(x64)[np.arange(len(target)), np.where(valid, target, 0)] * valid
        expected = _reduce(picked, reduction, count)
        r = _upstream(np.shape(expected), seed=1)
        g = _upstream_of(picked, r, reduction, count) * valid
        onehot = np.eye(x64.shape[1])[np.where(valid, target, 0)]
        expected_grad = (ref_softmax(x64) - onehot) * g[:, None]
    value, grad = _run(lambda x: F.cross_entropy(x, Tensor(target), reduction=reduction), x_array, dtype, r)
    _close(value, expected, "cross_entropy value", dtype)
    _close(grad, expected_grad, "cross_entropy gradient", dtype)


def _check_bce(x_array, target, dtype, reduction):
    x64 = _reference_input(x_array, dtype)
    t64 = target.astype(dtype).astype(np.float64)
    with np.errstate(under="ignore"):
        elementwise = np.maximum(x64, 0) - x64 * t64 + np.log1p(np.exp(-np.abs(x64)))
        expected = _reduce(elementwise, reduction, x64.size)
        r = _upstream(np.shape(expected), seed=2)
        expected_grad = (ref_sigmoid(x64) - t64) * _upstream_of(elementwise, r, reduction, x64.size)
    value, grad = _run(lambda x: F.binary_cross_entropy_with_logits(x, Tensor(target, dtype=dtype),
                                                                     reduction=reduction), x_array, dtype, r)
    _close(value, expected, "bce value", dtype)
    _close(grad, expected_grad, "bce gradient", dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(FIXED))
def test_losses_at_fixed_large_inputs(case, dtype, reduction):
    x = FIXED[case]
    n, c = x.shape
    target = np.arange(n) * 2 % c
    _check_cross_entropy(x, target, dtype, reduction)
    ignored = target.copy()
    ignored[0] = IGNORE
    if n > 1:
        _check_cross_entropy(x, ignored, dtype, reduction)
    probabilities = np.linspace(0.0, 1.0, x.size).reshape(x.shape)  # 0 and 1 included
    _check_bce(x, probabilities, dtype, reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None)
@given(data=st.data(), x=big_mixtures, reduction=st.sampled_from(["mean", "sum", "none"]))
def test_losses_at_random_mixtures(dtype, data, x, reduction):
    n, c = x.shape
    target = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    if n > 1 and data.draw(st.booleans()):
        target[data.draw(st.integers(0, n - 1))] = IGNORE
    _check_cross_entropy(x, target, dtype, reduction)
    t = data.draw(hnp.arrays(np.float64, x.shape, elements=st.sampled_from([0.0, 1.0, 0.25, 0.5])))
    _check_bce(x, t, dtype, reduction)


# ---- no intermediate NaN or inf, and the edge values ------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_no_intermediate_nan_or_inf_under_detect_anomaly(dtype):
    """detect_anomaly checks every op's output and gradient: none of them is NaN or inf at +-1e4."""
    x_array = FIXED["mixed"]
    target = np.array([1, 0, 2])
    with tg.detect_anomaly():
        for fn in [lambda x: x.sigmoid(), lambda x: x.tanh(), lambda x: x.softmax(-1), lambda x: x.log_softmax(-1),
                   lambda x: x.logsumexp(-1),
                   lambda x: F.cross_entropy(x, Tensor(target), reduction="none"),
                   lambda x: F.binary_cross_entropy_with_logits(x, Tensor(np.ones((3, 3)), dtype=dtype),
                                                                reduction="none")]:
            y = fn(Tensor(x_array.astype(dtype), requires_grad=True))
            (y * Tensor(np.ones(y.shape), dtype=dtype)).sum().backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_values_are_exact(dtype):
    x = Tensor(np.array([1e4, -1e4, 0.0], dtype), requires_grad=True)
    np.testing.assert_array_equal(x.sigmoid().numpy(), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(x.tanh().numpy(), [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(x.softmax(0).numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(x.log_softmax(0).numpy(), [0.0, -2e4, -1e4])
    assert x.logsumexp(0).item() == 1e4
    masked = Tensor(np.array([0.0, -np.inf, 1.0], dtype))  # a -inf mask gives probability exactly 0
    assert masked.softmax(0).numpy()[1] == 0.0
