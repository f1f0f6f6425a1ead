"""The tape itself: accumulation, graph release, grad modes, hooks, custom Functions, depth, cost, dtypes."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq.engine import ops
from tinygrad_seq import Function
from tinygrad_seq.engine.function import Edge
from tinygrad_seq.engine.backend import parse_device
from tinygrad_seq.autograd.gradcheck import gradcheck

SMALL_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def values(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_subnormal=False))


def arrays_of_small_shape(lo=-2.0, hi=2.0):
    return SMALL_SHAPES.flatmap(lambda s: values(s, lo, hi))


def leaf(array, device="cpu", dtype=None):
    return tg.Tensor(array, dtype=dtype, device=device, requires_grad=True)


def graph_nodes(t):
    """Every Function node reachable from t.grad_fn (iteratively)."""
    seen, stack = {}, [t.grad_fn] if t.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for edge in node.parents:
            if isinstance(edge, Edge):
                stack.append(edge.node)
    return list(seen.values())


# ---- accumulation ----------------------------------------------------------------------

@given(arrays_of_small_shape())
def test_a_tensor_used_several_times_gets_the_sum_of_its_gradients(x_np):
    x = leaf(x_np)
    (x * x * x + x - x * 2.0).sum().backward()  # d/dx = 3x^2 + 1 - 2
    np.testing.assert_allclose(x.grad.numpy(), 3 * x_np ** 2 - 1, rtol=1e-12, atol=1e-12)


@given(arrays_of_small_shape())
def test_diamond(x_np):
    x = leaf(x_np)
    y = x * x + x  # two paths from x to y
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x_np + 1, rtol=1e-12, atol=1e-12)


@given(arrays_of_small_shape(), st.integers(2, 4))
def test_separate_backward_calls_accumulate_into_grad(x_np, calls):
    x = leaf(x_np)
    for _ in range(calls):
        (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(x_np.shape, 3.0 * calls))


def test_gradients_reaching_a_shared_intermediate_are_summed_before_its_backward():
    x = leaf(np.array([0.5, -1.0, 2.0]))
    h = x.tanh()  # consumed three times
    (h * 2.0 + h * h + h.exp()).sum().backward()
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), (2 + 2 * t + np.exp(t)) * (1 - t ** 2), rtol=1e-12)


def test_zero_dimensional_gradients_stay_arrays(device):
    """NumPy turns the sum of two 0-d arrays into a scalar; accumulated grads must stay arrays."""
    x = leaf(np.array(-1.5), device)
    x.abs().backward()  # x reaches the leaf through two edges (where's branches)
    (x * x + x).backward()
    assert x.grad.shape == () and x.grad.device == parse_device(device)
    np.testing.assert_allclose(x.grad.numpy(), -1.0 + 2 * -1.5 + 1)


# ---- retain_graph and graph release ----------------------------------------------------

def test_retain_graph_allows_a_second_backward_and_a_released_graph_refuses_a_third():
    x = leaf(np.array([1.0, 2.0, 3.0]))
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 2 * x.numpy())
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_a_second_backward_through_a_shared_released_subgraph_raises():
    x = leaf(np.array([1.0, 2.0]))
    h = x.exp()
    h.sum().backward()  # frees h's node
    with pytest.raises(RuntimeError, match="freed"):
        (h * 2.0).sum().backward()


def test_backward_frees_saved_arrays():
    x = leaf(np.ones((3, 3)))
    y = (x.tanh() * x.sigmoid()).sum()
    nodes = graph_nodes(y)
    assert any(vars(node) for node in nodes)  # forward saved something
    y.backward()
    assert all(not vars(node) and node.released for node in nodes)


def test_retain_graph_keeps_saved_arrays():
    x = leaf(np.ones(3))
    y = (x * x.exp()).sum()
    nodes = graph_nodes(y)
    saved = [sorted(vars(node)) for node in nodes]
    assert any(saved)
    y.backward(retain_graph=True)
    assert [sorted(vars(node)) for node in nodes] == saved
    assert not any(node.released for node in nodes)


# ---- grad modes -------------------------------------------------------------------------

def test_no_grad_records_nothing_and_enable_grad_inside_records_again():
    x = leaf(np.ones(2))
    assert tg.is_grad_enabled()
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * 2.0
        with tg.enable_grad():
            assert tg.is_grad_enabled()
            z = x * 2.0
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    assert y.grad_fn is None and not y.requires_grad and y.is_leaf
    assert z.grad_fn is not None and z.requires_grad


def test_grad_mode_decorators():
    x = leaf(np.ones(2))

    @tg.no_grad()
    def inference(t):
        assert not tg.is_grad_enabled()
        return t * 2.0

    @tg.enable_grad()
    def training(t):
        assert tg.is_grad_enabled()
        return t * 2.0

    assert not inference(x).requires_grad
    with tg.no_grad():
        assert training(x).requires_grad
        assert not tg.is_grad_enabled()
    assert inference.__name__ == "inference"  # functools.wraps


def test_grad_mode_is_restored_after_an_exception():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with tg.no_grad():
            raise Boom()
    assert tg.is_grad_enabled()

    @tg.no_grad()
    def failing():
        raise Boom()

    with pytest.raises(Boom):
        failing()
    assert tg.is_grad_enabled()
    with tg.no_grad():
        with pytest.raises(Boom):
            with tg.enable_grad():
                raise Boom()
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()


def test_a_decorated_function_may_recurse():
    @tg.no_grad()
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)
    assert depth(5) == 5 and tg.is_grad_enabled()


# ---- detach, retain_grad, hooks ----------------------------------------------------------

@given(arrays_of_small_shape())
def test_detach_shares_data_and_stops_the_gradient(x_np):
    x = leaf(x_np)
    d = x.detach()
    assert d.is_leaf and not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.array, x.array)
    (x * d).sum().backward()  # d is a constant: d/dx = d
    np.testing.assert_allclose(x.grad.numpy(), x_np)


def test_retain_grad_on_a_non_leaf():
    x = leaf(np.array([0.5, -2.0]))
    h = x * 3.0
    h.retain_grad()
    other = x * 2.0  # not retained
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    assert other.grad is None
    np.testing.assert_allclose(x.grad.numpy(), 2 * h.numpy() * 3 + 2)


def test_retained_non_leaf_gradients_accumulate_over_backward_calls_like_leaves():
    x = leaf(np.array([1.0, 2.0]))
    h = x * 3.0
    h.retain_grad()
    y = (h * h).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 2 * h.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 2 * 2 * h.numpy() * 3)


def test_hooks_observe_and_replace_gradients_on_leaves_and_non_leaves():
    x = leaf(np.array([1.0, -1.0, 2.0]))
    seen = []
    x.register_hook(lambda g: seen.append(("leaf", g.numpy().copy())))
    h = x * 2.0
    h.register_hook(lambda g: seen.append(("h", g.numpy().copy())))
    h.register_hook(lambda g: g * 10.0)  # replaces the gradient flowing on from h
    (h * h).sum().backward()
    np.testing.assert_allclose(dict(seen)["h"], 2 * h.numpy())
    np.testing.assert_allclose(dict(seen)["leaf"], 2 * h.numpy() * 10.0 * 2.0)
    np.testing.assert_allclose(x.grad.numpy(), 2 * h.numpy() * 10.0 * 2.0)


def test_a_leaf_hook_sees_the_total_gradient_once_and_can_replace_it():
    x = leaf(np.array([1.0, 2.0]))
    calls = []

    def hook(g):
        calls.append(g.numpy().copy())
        return g * 0.0 + 7.0
    x.register_hook(hook)
    (x * x + x * 3.0).sum().backward()  # two edges into x: one hook call with their sum
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 * x.numpy() + 3.0)
    np.testing.assert_allclose(x.grad.numpy(), [7.0, 7.0])


def test_register_hook_needs_requires_grad():
    with pytest.raises(RuntimeError, match="requires? grad"):
        tg.Tensor([1.0]).register_hook(lambda g: g)


# ---- depth and cost ----------------------------------------------------------------------

def test_a_10000_deep_chain_backpropagates_without_recursion():
    x = leaf(np.array([1.0, -0.5]))
    y, n, c = x, 10_000, 1.0001
    for _ in range(n):
        y = y * c
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(2, c ** n), rtol=1e-9)


def test_a_10000_deep_graph_is_freed_without_recursion():
    x = leaf(np.ones(1))
    y = x
    for _ in range(10_000):
        y = y.tanh()
    probe = weakref.ref(y.grad_fn)
    del y  # dropping the head must release the chain (no deep recursive deallocation crash)
    gc.collect()
    assert probe() is None


def _step_graph(T, use_every=1):
    x = leaf(np.arange(T * 2, dtype=np.float64).reshape(T, 2) / T)
    steps = x.unbind(0)
    out = tg.stack([steps[t] * 2.0 for t in range(0, T, use_every)])
    return x, out.sum()


def test_unbind_and_stack_over_2000_steps_are_single_nodes():
    T = 2000
    x, loss = _step_graph(T)
    kinds = {}
    for node in graph_nodes(loss):
        kinds[node.name] = kinds.get(node.name, 0) + 1
    assert kinds == {"Sum": 1, "Stack": 1, "Mul": T, "Unbind": 1}


@pytest.mark.parametrize("use_every", [1, 3])
def test_unbind_stack_backward_runs_each_node_once_and_is_linear_in_T(monkeypatch, use_every):
    """Count the array work that Unbind/Stack backward do: proportional to T, not T^2."""
    calls = {"Unbind": 0, "Stack": 0, "Mul": 0}
    for cls in (ops.Unbind, ops.Stack, ops.Mul):
        original = cls.backward

        def counted(ctx, *grads, _original=original, _name=cls.__name__):
            calls[_name] += 1
            return _original(ctx, *grads)
        monkeypatch.setattr(cls, "backward", counted)
    for T in (500, 2000):
        for k in calls:
            calls[k] = 0
        x, loss = _step_graph(T, use_every)
        loss.backward()
        used = len(range(0, T, use_every))
        assert calls == {"Unbind": 1, "Stack": 1, "Mul": used}
        expected = np.zeros((T, 2))
        expected[::use_every] = 2.0
        np.testing.assert_array_equal(x.grad.numpy(), expected)


# ---- custom Functions and multi-output ops ----------------------------------------------

class Cube(Function):
    """x ** 3 written as a user primitive."""

    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    def backward(ctx, g):
        (x,) = ctx.saved_arrays
        return 3 * x * x * g


class StraightThroughClamp(Function):
    """clip(x, lo, hi) forward; identity backward (straight-through estimator)."""

    def forward(ctx, x, lo=-1.0, hi=1.0):
        xp = tg.engine.backend.array_namespace(x)
        return xp.clip(x, lo, hi)

    def backward(ctx, g):
        return g


class SplitSigns(Function):
    """Two outputs: relu(x) and relu(-x); records which gradients it received."""
    received = []

    def forward(ctx, x):
        xp = tg.engine.backend.array_namespace(x)
        ctx.positive = x > 0
        return xp.maximum(x, 0), xp.maximum(-x, 0)

    def backward(ctx, g_pos, g_neg):
        SplitSigns.received.append((g_pos is None, g_neg is None))
        grad = 0
        if g_pos is not None:
            grad = grad + g_pos * ctx.positive
        if g_neg is not None:
            grad = grad - g_neg * ~ctx.positive
        return grad


@given(arrays_of_small_shape())
def test_a_user_defined_function_matches_its_derivative_and_gradcheck(x_np):
    x = leaf(x_np)
    Cube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * x_np ** 2, rtol=1e-12, atol=1e-300)  # 3x^2 may be subnormal
    assert gradcheck(lambda t: Cube.apply(t), [leaf(x_np)])


def test_a_user_defined_function_on_every_device(device):
    x = leaf(np.array([[0.5, -2.0], [3.0, 0.25]]), device)
    y = StraightThroughClamp.apply(x, lo=-1.0, hi=1.0)
    assert y.device == parse_device(device)
    np.testing.assert_array_equal(y.numpy(), np.clip(x.numpy(), -1, 1))
    (y * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 3.0))  # straight through
    assert x.grad.device == parse_device(device)


def test_function_apply_without_grad_records_nothing():
    y = Cube.apply(tg.Tensor([2.0]))
    assert y.grad_fn is None and not y.requires_grad
    with tg.no_grad():
        assert Cube.apply(leaf(np.array([2.0]))).grad_fn is None


@pytest.mark.parametrize("use", [(True, False), (False, True), (True, True)])
def test_multi_output_function_gets_none_for_unused_outputs(use):
    SplitSigns.received.clear()
    x_np = np.array([1.0, -2.0, 0.5, -0.25])
    x = leaf(x_np)
    pos, neg = SplitSigns.apply(x)
    loss = 0
    if use[0]:
        loss = loss + (pos * 2.0).sum()
    if use[1]:
        loss = loss + (neg * 5.0).sum()
    loss.backward()
    assert SplitSigns.received == [(not use[0], not use[1])]
    expected = np.where(x_np > 0, 2.0 * use[0], -5.0 * use[1])
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_unused_split_outputs_give_zero_gradient_there():
    x = leaf(np.arange(6.0))
    a, b, c = x.split([1, 2, 3])
    (b * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 2, 2, 0, 0, 0])


# ---- buffers, dtypes and devices of gradients ---------------------------------------------

@given(arrays_of_small_shape(), st.booleans())
def test_the_users_backward_grad_is_never_modified(x_np, as_tensor):
    x = leaf(x_np)
    g = np.linspace(-1, 1, x_np.size).reshape(x_np.shape)
    kept = g.copy()
    user_grad = tg.Tensor(g) if as_tensor else g
    y = x + x * 2.0 + x + x.reshape(x_np.shape)  # x gets four gradients, the first borrowed from the user's
    y.backward(user_grad)
    np.testing.assert_array_equal(g, kept)
    np.testing.assert_array_equal(user_grad.numpy() if as_tensor else user_grad, kept)
    np.testing.assert_allclose(x.grad.numpy(), 5 * kept)
    leaf_root = leaf(x_np)
    grad_tensor = tg.Tensor(g)
    leaf_root.backward(grad_tensor)  # a leaf as the root: .grad must be a copy
    leaf_root.grad.array[...] += 1.0
    np.testing.assert_array_equal(grad_tensor.numpy(), kept)


def test_no_two_leaves_share_a_gradient_buffer(device):
    a = leaf(np.array([1.0, 2.0]), device)
    b = leaf(np.array([3.0, 4.0]), device)
    g = tg.Tensor(np.array([1.0, 1.0]), dtype=tg.float64, device=device)
    (a + b).backward(g)  # Add hands the same array to both inputs
    assert a.grad.array is not b.grad.array
    a.grad.array[...] = 5.0
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(g.numpy(), [1.0, 1.0])


def test_leaf_grads_do_not_alias_each_other_on_the_host():
    a, b = leaf(np.ones(3)), leaf(np.ones(3))
    c = leaf(np.ones(3))
    (a + b + c.reshape(3)).sum().backward()
    assert not np.shares_memory(a.grad.array, b.grad.array)
    assert not np.shares_memory(b.grad.array, c.grad.array)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_have_their_inputs_dtype(dtype, device):
    x = leaf(np.array([0.5, -1.0, 2.0]), device, dtype)
    y = ((x.tanh() * 3.0).exp() + x.sigmoid()).logsumexp(0)
    y.backward()
    assert y.dtype == dtype and x.grad.dtype == dtype


def test_mixed_precision_gives_each_leaf_its_own_dtype(device):
    a = leaf(np.array([1.0, 2.0]), device, np.float32)
    b = leaf(np.array([3.0, 4.0]), device, np.float64)
    y = a * b
    assert y.dtype == np.float64  # NumPy's promotion
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 2.0])


def test_python_scalars_do_not_promote_float32(device):
    x = leaf(np.array([1.0, 2.0]), device, np.float32)
    for y in (x * 2.5, 2.5 * x, x + 1, x / 3.0, 1.0 - x, x ** 2, 2.0 ** x, -x, x.clip(0.1, 1.5)):
        assert y.dtype == np.float32, y


# ---- numerical stability at +-1e4 -------------------------------------------------------
# Every floating-point exception raises, underflow included (the composites never evaluate
# exp far below the dtype's resolution).
STRICT = dict(all="raise")
BIG = 1e4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_at_1e4(dtype):
    x = leaf(np.array([-BIG, -20.0, 0.0, 20.0, BIG]), dtype=dtype)
    with np.errstate(**STRICT):
        y = x.sigmoid()
        y.sum().backward()
    s = 1 / (1 + np.exp(-np.array([-20.0, 0.0, 20.0])))
    np.testing.assert_allclose(y.numpy(), [0.0, s[0], 0.5, s[2], 1.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), [0.0, s[0] * (1 - s[0]), 0.25, s[2] * (1 - s[2]), 0.0],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_logsumexp_and_cross_entropy_are_stable_at_1e4(dtype):
    x_np = np.array([[BIG, -BIG, 0.0], [-BIG, -BIG, -BIG], [BIG, BIG, 3.0]])
    with np.errstate(**STRICT):
        x = leaf(x_np, dtype=dtype)
        lse = x.logsumexp(axis=1)
        lse.sum().backward()
        np.testing.assert_allclose(lse.numpy(), [BIG, -BIG + np.log(3), BIG + np.log(2)], rtol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], atol=1e-6)

        x = leaf(x_np, dtype=dtype)
        ls = x.log_softmax(axis=1)
        g = np.array([[1.0, 2.0, 3.0], [1.0, -1.0, 0.5], [0.0, 1.0, 2.0]])
        ls.backward(g.astype(dtype))
        np.testing.assert_allclose(ls.numpy(), [[0, -2 * BIG, -BIG], [-np.log(3)] * 3,
                                                [-np.log(2), -np.log(2), 3 - BIG - np.log(2)]],
                                   rtol=1e-6, atol=1e-3)
        softmax = np.array([[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]])
        np.testing.assert_allclose(x.grad.numpy(), g - softmax * g.sum(1, keepdims=True), atol=1e-5)

        x = leaf(x_np, dtype=dtype)
        target = tg.Tensor([1, 0, 2])
        loss = F.cross_entropy(x, target)
        loss.backward()
        np.testing.assert_allclose(loss.numpy(), (2 * BIG + np.log(3) + BIG - 3 + np.log(2)) / 3, rtol=1e-6)
        onehot = np.eye(3)[[1, 0, 2]]
        np.testing.assert_allclose(x.grad.numpy(), (softmax - onehot) / 3, atol=1e-6)
    assert np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_with_logits_is_stable_at_1e4(dtype):
    x_np = np.array([BIG, -BIG, BIG, -BIG, 0.0])
    t_np = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    x = leaf(x_np, dtype=dtype)
    with np.errstate(**STRICT):
        loss = F.binary_cross_entropy_with_logits(x, tg.Tensor(t_np, dtype=dtype), reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [BIG, BIG, 0.0, 0.0, np.log(2)], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), [1.0, -1.0, 0.0, 0.0, -0.5], atol=1e-7)


def test_backward_with_inputs_accumulates_into_those_tensors_only():
    rng = np.random.default_rng(3)
    w, b = leaf(rng.standard_normal((3, 2))), leaf(rng.standard_normal(2))
    x = tg.Tensor(rng.standard_normal((4, 3)))
    h = x @ w
    loss = ((h + b).tanh() ** 2).sum()
    loss.backward(retain_graph=True)
    full_w, full_b = w.grad.numpy().copy(), b.grad.numpy().copy()
    w.grad = b.grad = None
    loss.backward(inputs=[w], retain_graph=True)
    np.testing.assert_allclose(w.grad.numpy(), full_w, rtol=1e-12)
    assert b.grad is None
    loss.backward(inputs=w, retain_graph=True)  # accumulates, like every backward
    np.testing.assert_allclose(w.grad.numpy(), 2 * full_w, rtol=1e-12)
    loss.backward(inputs=[h, b])  # a non-leaf input gets its .grad too
    (dh,) = tg.grad(((h + b).tanh() ** 2).sum(), h)
    np.testing.assert_allclose(h.grad.numpy(), dh.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), full_b, rtol=1e-12)


def test_backward_with_inputs_and_create_graph_gives_differentiable_grads():
    x = leaf(np.array([0.5, -1.5]))
    (x ** 3).sum().backward(inputs=[x], create_graph=True)
    assert x.grad.requires_grad
    (hessian_diagonal,) = tg.grad(x.grad.sum(), x)
    np.testing.assert_allclose(hessian_diagonal.numpy(), 6 * x.numpy())
    with pytest.raises(RuntimeError, match="inputs= is an empty sequence"):
        (x ** 2).sum().backward(inputs=[])
