"""The public Tensor API of DESIGN.md section 2: names, dtype rules, shape methods, RNG, errors."""
import inspect
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq.engine.backend import parse_device
from devices import HAS_CUDA

MODULE_NAMES = ["Tensor", "zeros", "ones", "full", "randn", "rand", "arange", "zeros_like", "ones_like",
                "cat", "stack", "where", "maximum", "minimum", "no_grad", "enable_grad", "is_grad_enabled",
                "manual_seed", "Function"]
DTYPE_NAMES = ["float16", "float32", "float64", "int32", "int64", "bool_"]
TENSOR_ATTRIBUTES = ["data", "grad"]  # plain slots
TENSOR_PROPERTIES = ["shape", "ndim", "dtype", "device", "requires_grad", "is_leaf", "grad_fn", "T"]
TENSOR_METHODS = ["numpy", "item", "tolist", "backward", "detach", "retain_grad", "register_hook", "to", "cpu",
                  "cuda", "astype", "float", "double", "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs",
                  "sum", "mean", "max", "min", "logsumexp", "softmax", "log_softmax", "reshape", "transpose",
                  "permute", "expand", "flip", "squeeze", "unsqueeze", "split", "chunk", "unbind", "contiguous",
                  "clip"]
FUNCTIONAL_NAMES = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "nll_loss", "mse_loss",
                    "binary_cross_entropy_with_logits", "linear", "embedding", "one_hot", "dropout"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3)


def floats(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, allow_subnormal=False))


# ---- names and docstrings ----------------------------------------------------------------

def test_every_public_name_exists():
    for name in MODULE_NAMES + DTYPE_NAMES:
        assert hasattr(tg, name), name
    for name in TENSOR_ATTRIBUTES:
        assert hasattr(tg.Tensor([1.0]), name), name
    for name in TENSOR_PROPERTIES:
        assert isinstance(inspect.getattr_static(tg.Tensor, name), property), name
    for name in TENSOR_METHODS:
        assert callable(getattr(tg.Tensor, name)), name
    for name in FUNCTIONAL_NAMES:
        assert callable(getattr(F, name)), name


def _documented_objects():
    for name in MODULE_NAMES:
        yield f"tinygrad_seq.{name}", getattr(tg, name)
    for name in TENSOR_PROPERTIES + TENSOR_METHODS:
        yield f"Tensor.{name}", inspect.getattr_static(tg.Tensor, name)
    for name in FUNCTIONAL_NAMES:
        yield f"functional.{name}", getattr(F, name)


@pytest.mark.parametrize("qualified, obj", list(_documented_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_public_function_and_class_has_a_one_line_summary(qualified, obj):
    doc = obj.__doc__ if isinstance(obj, property) else inspect.getdoc(obj)
    assert doc and doc.strip(), f"{qualified} has no docstring"
    summary = doc.strip().splitlines()[0]
    assert len(summary) >= 10 and len(summary) <= 120, f"{qualified}: summary {summary!r}"


# ---- construction and dtype rules --------------------------------------------------------

def test_default_float_is_float32_and_float64_data_is_kept(device):
    d = parse_device(device)
    assert tg.Tensor(1.5, device=device).dtype == np.float32
    assert tg.Tensor([[1.0, 2.0]], device=device).dtype == np.float32
    assert tg.Tensor(np.array([1.0]), device=device).dtype == np.float64
    assert tg.Tensor(np.array([1.0], np.float32), device=device).dtype == np.float32
    assert tg.Tensor(np.float64(2.0), device=device).dtype == np.float64  # a NumPy scalar keeps its dtype
    assert tg.Tensor([1.0], dtype="float64", device=device).dtype == np.float64
    assert tg.Tensor([1.0], dtype=tg.float64, device=device).device == d


def test_integer_and_boolean_data_stay_integer_and_boolean(device):
    assert tg.Tensor([1, 2, 3], device=device).dtype == np.int64
    assert tg.Tensor(np.array([1, 2], np.int32), device=device).dtype == np.int32
    assert tg.Tensor([True, False], device=device).dtype == np.bool_
    assert tg.arange(5, device=device).dtype == np.int64
    assert tg.arange(0.0, 1.0, 0.25, device=device).dtype == np.float32


@pytest.mark.parametrize("make", [lambda: tg.Tensor([1, 2], requires_grad=True),
                                  lambda: tg.zeros(2, dtype=tg.int64, requires_grad=True),
                                  lambda: tg.arange(3, requires_grad=True),
                                  lambda: tg.Tensor([True], requires_grad=True)])
def test_integer_tensors_refuse_requires_grad(make):
    with pytest.raises(TypeError, match="floating"):
        make()


def test_setting_requires_grad_on_an_integer_tensor_raises():
    t = tg.Tensor([1, 2])
    with pytest.raises(TypeError):
        t.requires_grad = True
    assert not t.requires_grad


@given(x=SHAPES.flatmap(floats))
def test_tensor_copies_its_data(x):
    t = tg.Tensor(x)
    x_before = x.copy()
    t.array[...] = 0.0
    np.testing.assert_array_equal(x, x_before)
    u = tg.Tensor(t)
    assert u.array is not t.array


@pytest.mark.parametrize("dtype", [None, tg.float32, tg.float64])
def test_creation_functions(dtype, device):
    d, expected = parse_device(device), np.float32 if dtype is None else dtype
    for make, value in ((tg.zeros, 0.0), (tg.ones, 1.0)):
        for t in (make(2, 3, dtype=dtype, device=device), make((2, 3), dtype=dtype, device=device)):
            assert t.shape == (2, 3) and t.dtype == expected and t.device == d and not t.requires_grad
            np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
    t = tg.full((2, 1), 7.5, dtype=dtype, device=device, requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.dtype == expected and t.device == d
    np.testing.assert_array_equal(t.numpy(), np.full((2, 1), 7.5))
    for t in (tg.zeros_like(t), tg.ones_like(t)):
        assert t.shape == (2, 1) and t.dtype == expected and t.device == d
    assert tg.ones_like(t, dtype=tg.float64).dtype == np.float64
    for make in (tg.randn, tg.rand):
        t = make(4, 5, dtype=dtype, device=device, requires_grad=True)
        assert t.shape == (4, 5) and t.dtype == expected and t.device == d and t.requires_grad
    r = tg.rand(1000, device=device).numpy()
    assert r.min() >= 0 and r.max() < 1
    np.testing.assert_array_equal(tg.arange(2, 11, 3, device=device).numpy(), np.arange(2, 11, 3))


def test_host_access(device):
    t = tg.Tensor([[1.5, -2.0], [3.0, 4.25]], device=device)
    host = t.numpy()
    assert type(host) is np.ndarray and host.dtype == np.float32
    np.testing.assert_array_equal(host, [[1.5, -2.0], [3.0, 4.25]])
    assert t.tolist() == [[1.5, -2.0], [3.0, 4.25]]
    assert t[1, 1].item() == 4.25 and isinstance(t[1, 1].item(), float)
    assert tg.Tensor([7], device=device).item() == 7 and isinstance(tg.Tensor([7], device=device).item(), int)
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_to_moves_between_devices_and_dtypes(device):
    d = parse_device(device)
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    y = x.to(device)
    assert y.device == d and y.dtype == np.float32
    z = y.to(dtype=tg.float64).cpu()
    assert z.device == "cpu" and z.dtype == np.float64
    (z * z).sum().backward()
    assert x.grad.device == "cpu" and x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert x.to("cpu") is x
    assert tg.Tensor([1, 2]).float().dtype == np.float32 and tg.Tensor([1.0]).double().dtype == np.float64
    assert tg.Tensor([1.5]).astype("float64").dtype == np.float64


def test_to_cuda_without_cupy_names_the_extra():
    if HAS_CUDA:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"tinygrad_seq\[cuda\]"):
        tg.Tensor([1.0]).to("cuda")
    with pytest.raises(RuntimeError, match=r"tinygrad_seq\[cuda\]"):
        tg.zeros(2, device="cuda:0")


# ---- reductions, shapes and their PyTorch aliases ----------------------------------------

@given(x=SHAPES.filter(lambda s: len(s) > 0).flatmap(floats), data=st.data())
def test_dim_and_keepdim_are_aliases_of_axis_and_keepdims(x, data):
    t = tg.Tensor(x)
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    keep = data.draw(st.booleans())
    for name in ("sum", "mean", "amax", "amin", "logsumexp"):
        a = getattr(t, name)(axis=axis, keepdims=keep).numpy()
        b = getattr(t, name)(dim=axis, keepdim=keep).numpy()
        np.testing.assert_array_equal(a, b)
    for name in ("softmax", "log_softmax"):
        np.testing.assert_array_equal(getattr(t, name)(axis).numpy(), getattr(t, name)(dim=axis).numpy())
    np.testing.assert_array_equal(t.sum(axis, keep).numpy(), x.astype(np.float64).sum(axis, keepdims=keep))
    np.testing.assert_array_equal(t.unsqueeze(dim=axis).numpy(), t.unsqueeze(axis).numpy())
    np.testing.assert_array_equal(t.flip(dims=axis).numpy(), np.flip(x, axis))
    assert [p.shape for p in t.unbind(dim=axis)] == [p.shape for p in t.unbind(axis)]


@given(x=SHAPES.flatmap(floats), data=st.data())
def test_squeeze_and_unsqueeze_match_numpy(x, data):
    t = tg.Tensor(x)
    assert t.squeeze().shape == np.squeeze(x).shape
    for axis in range(-x.ndim, x.ndim):
        expected = np.squeeze(x, axis).shape if x.shape[axis] == 1 else x.shape  # PyTorch: a no-op otherwise
        assert t.squeeze(axis).shape == expected
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    u = t.unsqueeze(axis)
    assert u.shape == np.expand_dims(x, axis).shape
    np.testing.assert_array_equal(u.numpy(), np.expand_dims(x, axis))


@given(x=SHAPES.filter(lambda s: len(s) >= 2).flatmap(floats), data=st.data())
def test_transpose_permute_and_T(x, data):
    t = tg.Tensor(x)
    a, b = data.draw(st.integers(-x.ndim, x.ndim - 1)), data.draw(st.integers(-x.ndim, x.ndim - 1))
    np.testing.assert_array_equal(t.transpose(a, b).numpy(), np.swapaxes(x, a, b))
    np.testing.assert_array_equal(t.transpose(dim0=a, dim1=b).numpy(), np.swapaxes(x, a, b))
    perm = data.draw(st.permutations(range(x.ndim)))
    np.testing.assert_array_equal(t.permute(*perm).numpy(), x.transpose(perm))
    np.testing.assert_array_equal(t.permute(perm).numpy(), x.transpose(perm))
    np.testing.assert_array_equal(t.T.numpy(), x.T)
    np.testing.assert_array_equal(t.transpose().numpy(), x.T)


@given(x=SHAPES.filter(lambda s: len(s) >= 1).flatmap(floats), data=st.data())
def test_split_chunk_and_unbind_follow_pytorch(x, data):
    t = tg.Tensor(x)
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    size = data.draw(st.integers(1, n + 1))
    pieces = t.split(size, axis)
    assert [p.shape[axis] for p in pieces] == [min(size, n - s) for s in range(0, n, size)]
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in pieces], axis), x)
    chunks = data.draw(st.integers(1, n + 1))
    got = t.chunk(chunks, dim=axis)
    step = -(-n // chunks)
    assert len(got) == len(range(0, n, step)) <= chunks
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in got], axis), x)
    slices = t.unbind(axis)
    assert len(slices) == n
    for k, s in enumerate(slices):
        np.testing.assert_array_equal(s.numpy(), np.take(x, k, axis))


@given(x=SHAPES.flatmap(floats), data=st.data())
def test_expand_accepts_minus_one_and_new_leading_axes(x, data):
    t = tg.Tensor(x)
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    target = lead + tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in x.shape)
    request = lead + tuple(-1 if m == n and data.draw(st.booleans()) else n  # -1: keep the size
                           for m, n in zip(x.shape, target[len(lead):]))
    out = t.expand(*request)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(x, target))
    np.testing.assert_array_equal(t.expand(target).numpy(), np.broadcast_to(x, target))


def test_getitem_accepts_lists_tensors_and_arrays(device):
    x = tg.Tensor(np.arange(12.0).reshape(3, 4), device=device, requires_grad=True)
    ref = np.arange(12.0).reshape(3, 4)
    index = [2, 0, 2]
    for idx in (index, np.array(index), tg.Tensor(index, device=device)):
        np.testing.assert_array_equal(x[idx].numpy(), ref[index])
    mask = ref > 5
    for m in (mask, tg.Tensor(mask, device=device), x > 5):
        np.testing.assert_array_equal(x[m].numpy(), ref[mask])
    np.testing.assert_array_equal(x[1:, ::-2].numpy(), ref[1:, ::-2])
    np.testing.assert_array_equal(x[None, ..., -1].numpy(), ref[None, ..., -1])


# ---- operators -----------------------------------------------------------------------------

OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
             "/": lambda a, b: a / b, "**": lambda a, b: a ** b}


@pytest.mark.parametrize("op", list(OPERATORS))
@given(x=SHAPES.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.floats(0.5, 2))),
       scalar=st.sampled_from([2, 0.5, 3.0]))
def test_reflected_operators_with_scalars_and_arrays_on_the_left(op, x, scalar):
    fn = OPERATORS[op]
    for left in (scalar, np.full(x.shape, scalar)):
        t = tg.Tensor(x, requires_grad=True)
        out = fn(left, t)
        assert isinstance(out, tg.Tensor) and out.dtype == np.float64
        np.testing.assert_allclose(out.numpy(), fn(np.float64(scalar), x), rtol=1e-12)
        out.sum().backward()
        h = 1e-6  # the gradient reached t: compare with a central difference of the NumPy expression
        numeric = (fn(np.float64(scalar), x + h) - fn(np.float64(scalar), x - h)) / (2 * h)
        np.testing.assert_allclose(t.grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


def test_matmul_with_an_array_on_the_left():
    w = tg.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    a = np.ones((4, 3))
    out = a @ w
    assert isinstance(out, tg.Tensor)
    np.testing.assert_array_equal(out.numpy(), a @ np.arange(6.0).reshape(3, 2))
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), a.T @ np.ones((4, 2)))


@given(x=SHAPES.flatmap(floats), y=SHAPES.flatmap(floats))
def test_comparisons_give_boolean_tensors_without_gradient(x, y):
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        y = y.reshape(-1)[:1].reshape(())
    t = tg.Tensor(x, requires_grad=True)
    for compare, fn in ((operator.lt, np.less), (operator.le, np.less_equal), (operator.gt, np.greater),
                        (operator.ge, np.greater_equal), (operator.eq, np.equal), (operator.ne, np.not_equal)):
        for other in (tg.Tensor(y), y, 0.5):
            out = compare(t, other)
            assert isinstance(out, tg.Tensor) and out.dtype == np.bool_
            assert not out.requires_grad and out.grad_fn is None
            np.testing.assert_array_equal(out.numpy(), fn(x, other.numpy() if isinstance(other, tg.Tensor) else other))


def test_maximum_minimum_and_where_accept_scalars_on_either_side(device):
    x = tg.Tensor([-1.0, 0.5, 2.0], device=device, requires_grad=True)
    outs = [tg.maximum(x, 0.0), tg.maximum(0.0, x), tg.minimum(1.0, x), tg.where(x > 0, x, 0.0),
            tg.where(x > 0, 0.0, x)]
    np.testing.assert_array_equal(outs[0].numpy(), [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(outs[1].numpy(), [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(outs[2].numpy(), [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(outs[3].numpy(), [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(outs[4].numpy(), [-1.0, 0.0, 0.0])
    sum(o.sum() for o in outs).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0 + 0 + 1 + 0 + 1, 1 + 1 + 1 + 1 + 0, 1 + 1 + 0 + 1 + 0])


# ---- random numbers ------------------------------------------------------------------------

def test_manual_seed_makes_every_random_stream_reproducible(device):
    def draw():
        return (tg.randn(3, 4, device=device).numpy(), tg.rand(5, device=device).numpy(),
                F.dropout(tg.ones(50, device=device), 0.5).numpy())
    tg.manual_seed(7)
    first = draw()
    tg.manual_seed(7)
    again = draw()
    tg.manual_seed(8)
    other = draw()
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_randn_is_standard_normal():
    tg.manual_seed(0)
    x = tg.randn(100_000, dtype=tg.float64).numpy()
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02  # about 6 standard errors


# ---- clear errors ---------------------------------------------------------------------------

def test_matmul_shape_mismatch_names_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) do not align"):
        tg.zeros(3, 4) @ tg.zeros(5, 2)


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "add"), (lambda a, b: a * b, "mul"),
                                      (lambda a, b: a - b, "sub"), (lambda a, b: a / b, "div"),
                                      (tg.maximum, "maximum")])
def test_broadcast_mismatch_names_the_op_and_both_shapes(op, name):
    with pytest.raises(ValueError) as info:
        op(tg.zeros(2, 3), tg.zeros(4))
    message = str(info.value)
    assert message.startswith(name + ":") and "(2, 3)" in message and "(4,)" in message


def test_backward_of_a_non_scalar_needs_a_grad():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one element"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2.0).backward(np.ones(3))


def test_backward_without_requires_grad_explains():
    with pytest.raises(RuntimeError, match="requires_grad"):
        tg.Tensor([1.0]).sum().backward()


def test_ops_across_devices_name_both_devices():
    a, b = tg.Tensor([1.0], device="fake"), tg.Tensor([1.0])
    for fn in (lambda: a + b, lambda: b * a, lambda: tg.cat([a, b]), lambda: tg.where(b > 0, a, b),
               lambda: a @ b):
        with pytest.raises(ValueError) as info:
            fn()
        assert "fake:0" in str(info.value) and "cpu" in str(info.value)


def test_unknown_devices_are_refused():
    with pytest.raises(ValueError, match="unknown device"):
        tg.Tensor([1.0], device="tpu")
    with pytest.raises(TypeError):
        tg.Tensor([1.0], device=0)
