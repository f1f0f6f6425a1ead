"""The PyTorch-named Tensor API (issue 9): each method against NumPy or hand-computed values."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import Tensor

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def distinct(shape, seed):
    """Values without ties (a permutation), so argmax/topk have one right answer."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64) - 3.5


# ---- the tg.tensor name, creation, dtypes -------------------------------------------------

def test_tg_tensor_is_the_factory_and_the_module_does_not_shadow_it():
    t = tg.tensor([[1, 2], [3, 4]])
    assert callable(tg.tensor) and isinstance(t, Tensor) and t.dtype == np.int64
    f = tg.tensor([1.5, 2.0], dtype=tg.float64, requires_grad=True)
    assert f.dtype == np.float64 and f.requires_grad and f.is_leaf
    import tinygrad_seq.tensors as core
    assert core.Tensor is Tensor


def test_from_numpy_shares_memory_and_keeps_dtype():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = tg.from_numpy(a)
    assert t.dtype == np.float64 and t.shape == (2, 3)
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0
    with pytest.raises(TypeError, match="NumPy array"):
        tg.from_numpy([1, 2])
    with pytest.raises(TypeError, match="dtype object"):
        tg.from_numpy(np.array([1, "a"], dtype=object))


@pytest.mark.parametrize("data", [np.array([1, None], dtype=object), np.array(["a", "b"]),
                                  np.array([1 + 2j]), [object()]])
def test_non_numeric_data_is_rejected(data):
    with pytest.raises(TypeError, match="cannot make a tensor"):
        Tensor(data)


def test_pytorch_dtype_names():
    assert (tg.float, tg.double, tg.half, tg.long, tg.int, tg.bool) == \
        (np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_)
    assert tg.uint8 == np.uint8 and tg.int8 == np.int8 and tg.int16 == np.int16
    x = tg.randn(2, 3)
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.long().dtype == np.int64 and x.int().dtype == np.int32 and x.float().dtype == np.float32
    assert x.type() == "float32" and x.type(tg.float64).dtype == np.float64
    assert x.to(tg.float64).dtype == np.float64 and x.to(tg.zeros(1, dtype=tg.float64)).dtype == np.float64
    assert x.type_as(tg.zeros(1, dtype=tg.int64)).dtype == np.int64


def test_conversion_to_integers_cuts_the_gradient():
    x = tg.randn(3, requires_grad=True)
    assert not x.long().requires_grad and x.long().grad_fn is None
    assert x.double().requires_grad  # float to float stays differentiable


def test_new_tensors_take_dtype_and_device_from_self():
    x = tg.zeros(2, dtype=tg.float64)
    for t, value, shape in ((x.new_zeros(3, 4), 0.0, (3, 4)), (x.new_ones((2,)), 1.0, (2,)),
                            (x.new_full((2, 2), 7.0), 7.0, (2, 2))):
        assert t.dtype == np.float64 and t.shape == shape and (t.numpy() == value).all()
    n = x.new_tensor([1, 2])
    assert n.dtype == np.float64 and n.tolist() == [1.0, 2.0]
    assert x.new_zeros(2, dtype=tg.int64).dtype == np.int64


# ---- size, dim, numel ---------------------------------------------------------------------

@given(shape=SHAPES, data=st.data())
def test_size_dim_numel_follow_pytorch(shape, data):
    t = tg.zeros(shape)
    assert t.size() == shape and isinstance(t.size(), tuple)
    k = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert t.size(k) == shape[k] and t.size(dim=k) == shape[k]
    assert t.dim() == len(shape) and t.numel() == int(np.prod(shape))
    with pytest.raises(ValueError, match="size: axis"):
        t.size(len(shape))


# ---- indices: argmax, max(dim), topk, gather -----------------------------------------------

@given(shape=SHAPES, seed=st.integers(0, 2**16), keepdim=st.booleans(), data=st.data())
def test_argmax_argmin_and_max_min_with_dim(shape, seed, keepdim, data):
    x = distinct(shape, seed)
    t = Tensor(x)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    np.testing.assert_array_equal(t.argmax(dim, keepdim).numpy(), np.argmax(x, dim, keepdims=keepdim))
    np.testing.assert_array_equal(t.argmin(dim=dim, keepdim=keepdim).numpy(), np.argmin(x, dim, keepdims=keepdim))
    assert t.argmax().item() == np.argmax(x) and t.argmax().dtype == np.int64 and t.argmax().ndim == 0
    assert t.argmax(keepdim=True).shape == (1,) * len(shape)
    values, indices = t.max(dim, keepdim)
    np.testing.assert_array_equal(values.numpy(), np.max(x, dim, keepdims=keepdim))
    np.testing.assert_array_equal(indices.numpy(), np.argmax(x, dim, keepdims=keepdim))
    result = t.min(dim=dim)
    np.testing.assert_array_equal(result.values.numpy(), np.min(x, dim))
    np.testing.assert_array_equal(result.indices.numpy(), np.argmin(x, dim))
    assert t.max().item() == x.max() and t.min().item() == x.min()


def test_max_with_a_tensor_is_elementwise_and_several_axes_need_amax():
    a, b = Tensor([1.0, 5.0]), Tensor([3.0, 2.0])
    assert a.max(b).tolist() == [3.0, 5.0] and a.min(b).tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="amax"):
        tg.zeros(2, 3).max((0, 1))
    assert tg.zeros(2, 3).amax((0, 1)).shape == ()


def test_max_values_gradient_goes_to_the_maximum():
    x = Tensor([[1.0, 4.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    values, _ = x.max(1)
    (values * Tensor([1.0, 2.0])).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]


@given(shape=SHAPES, seed=st.integers(0, 2**16), largest=st.booleans(), data=st.data())
def test_topk_values_indices_and_gradient(shape, seed, largest, data):
    x = distinct(shape, seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(0, shape[dim]))
    t = Tensor(x, requires_grad=True)
    values, indices = t.topk(k, dim=dim, largest=largest)
    order = np.argsort(-x if largest else x, axis=dim)
    expected_idx = np.take(order, np.arange(k), axis=dim)
    np.testing.assert_array_equal(indices.numpy(), expected_idx)
    np.testing.assert_array_equal(values.numpy(), np.take_along_axis(x, expected_idx, axis=dim))
    g = np.random.default_rng(seed).standard_normal(values.shape)
    values.backward(Tensor(g))
    expected = np.zeros_like(x)
    np.put_along_axis(expected, expected_idx, g, axis=dim)
    np.testing.assert_allclose(t.grad.numpy(), expected)


def test_topk_rejects_k_out_of_range_and_gather_matches_take_along_axis():
    with pytest.raises(ValueError, match="topk: k=4"):
        tg.zeros(3).topk(4)
    x = np.arange(12.0).reshape(3, 4)
    idx = np.array([[0, 3], [2, 2], [1, 0]])
    t = Tensor(x, requires_grad=True)
    out = t.gather(1, Tensor(idx))
    np.testing.assert_array_equal(out.numpy(), np.take_along_axis(x, idx, 1))
    out.sum().backward()  # the repeated index 2 in row 1 accumulates
    assert t.grad.numpy()[1].tolist() == [0.0, 0.0, 2.0, 0.0]


# ---- copies, masks, shapes --------------------------------------------------------------------

def test_clone_copies_memory_and_passes_the_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x.clone()
    assert y.grad_fn is not None and not np.shares_memory(y.data, x.data)
    (y * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


@given(shape=SHAPES, seed=st.integers(0, 2**16))
def test_masked_fill_matches_numpy_and_masks_the_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    x, mask = rng.standard_normal(shape), rng.random(shape[-1:]) < 0.5  # the mask broadcasts
    t = Tensor(x, requires_grad=True)
    out = t.masked_fill(Tensor(mask), -1.5)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, -1.5, x))
    out.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.broadcast_to(~mask, shape).astype(np.float64))
    with pytest.raises(TypeError, match="boolean"):
        t.masked_fill(Tensor([1, 0]), 0.0)


def test_narrow_t_view_flatten_reshape_signatures():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    np.testing.assert_array_equal(x.narrow(2, 1, 2).numpy(), np.arange(24.0).reshape(2, 3, 4)[:, :, 1:3])
    np.testing.assert_array_equal(x.narrow(-1, -2, 2).numpy(), np.arange(24.0).reshape(2, 3, 4)[..., 2:])
    with pytest.raises(ValueError, match="narrow"):
        x.narrow(0, 1, 2)
    assert x[0].t().shape == (4, 3) and Tensor([1.0, 2.0]).t().shape == (2,)
    with pytest.raises(ValueError, match="at most 2"):
        x.t()
    assert x.view(6, 4).shape == (6, 4) and x.view((4, -1)).shape == (4, 6) and x.reshape(-1).shape == (24,)
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12) and x.flatten(0, 1).shape == (6, 4)
    assert x.view_as(tg.zeros(4, 6)).shape == (4, 6) and Tensor([1.0]).expand_as(x).shape == x.shape


# ---- grad mode switches ------------------------------------------------------------------------

def test_set_grad_enabled_as_function_and_context_manager():
    x = Tensor([1.0], requires_grad=True)
    with tg.set_grad_enabled(False):
        assert not tg.is_grad_enabled() and (x * 2).grad_fn is None
        with tg.set_grad_enabled(True):
            assert (x * 2).grad_fn is not None
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    tg.set_grad_enabled(False)
    try:
        assert not tg.is_grad_enabled()
    finally:
        tg.set_grad_enabled(True)
    assert tg.is_grad_enabled()


def test_inference_mode_and_reusable_reentrant_decorators():
    x = Tensor([1.0], requires_grad=True)
    with tg.inference_mode():
        assert (x * 2).grad_fn is None
    with tg.inference_mode(False):
        assert (x * 2).grad_fn is not None

    @tg.no_grad()
    def depth(n):
        assert not tg.is_grad_enabled()
        return 0 if n == 0 else 1 + depth(n - 1)
    assert depth(3) == 3 and tg.is_grad_enabled()


# ---- .data ------------------------------------------------------------------------------------

def test_assigning_a_tensor_to_data_stores_its_array():
    p = Tensor([1.0, 2.0], requires_grad=True)
    p.grad = Tensor([0.5, 0.5])
    p.data = p.data - 0.1 * p.grad
    assert type(p.array) is np.ndarray and np.allclose(p.numpy(), [0.95, 1.95])
    p.data = Tensor([3.0, 4.0])
    assert p.tolist() == [3.0, 4.0] and p.requires_grad and p.is_leaf
    s = Tensor(2.0)
    s.data = s.array * 3  # NumPy turns 0-d results into scalars
    assert s.item() == 6.0 and type(s.array) is np.ndarray


def test_data_is_a_detached_tensor_sharing_memory_as_in_pytorch():
    p = Tensor([1.0, 2.0], requires_grad=True)
    (p * p).sum().backward()
    d = p.data
    assert isinstance(d, Tensor) and not d.requires_grad and d.grad_fn is None and d.array is p.array
    p.data.add_(p.grad, alpha=-0.25)  # the manual SGD step of PyTorch's tutorials
    assert p.tolist() == [0.5, 1.0] and p.is_leaf and p.requires_grad
    p.data.mul_(2).copy_(Tensor([7.0, 8.0]))
    assert p.tolist() == [7.0, 8.0]
    values, indices = (p * 1).data.topk(1)
    assert values.tolist() == [8.0] and indices.tolist() == [1]


def test_writes_through_data_are_checked_like_any_in_place_write():
    p = Tensor([1.0, 2.0], requires_grad=True)
    loss = (p * p).sum()  # Mul saved p
    p.data.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("value, error, match", [([1.0, 2.0], TypeError, "expected a Tensor or an array"),
                                                 (3.0, TypeError, "expected a Tensor or an array"),
                                                 (np.array([1, 2]), TypeError, "hold floats")])
def test_assigning_anything_else_to_data_raises(value, error, match):
    p = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(error, match=match):
        p.data = value


def test_assigning_an_array_of_another_device_to_data_raises():
    p = Tensor([1.0, 2.0], device="fake")
    with pytest.raises(ValueError, match="on cpu but the tensor on fake:0"):
        p.data = np.zeros(2, np.float32)


def test_star_import_does_not_shadow_builtins():
    namespace = {}
    exec("from tinygrad_seq import *", namespace)
    assert "float" not in namespace and "int" not in namespace and "bool" not in namespace
    assert namespace["tensor"] is tg.tensor and namespace["float32"] is tg.float
