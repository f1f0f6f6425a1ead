"""In-place ops: values, aliasing, and the version check that keeps them from corrupting gradients."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import Tensor

FLOATS = hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                    elements=st.floats(-3, 3).filter(lambda v: abs(v) > 0.1))

IN_PLACE = {  # method call, NumPy reference
    "add_": (lambda t, o: t.add_(o), lambda x, o: x + o),
    "add_ alpha": (lambda t, o: t.add_(o, alpha=-0.5), lambda x, o: x - 0.5 * o),
    "sub_": (lambda t, o: t.sub_(o), lambda x, o: x - o),
    "sub_ alpha": (lambda t, o: t.sub_(o, alpha=2), lambda x, o: x - 2 * o),
    "mul_": (lambda t, o: t.mul_(o), lambda x, o: x * o),
    "div_": (lambda t, o: t.div_(o), lambda x, o: x / o),
    "clamp_": (lambda t, o: t.clamp_(-1.0, 0.5), lambda x, o: np.clip(x, -1.0, 0.5)),
    "clamp_ min": (lambda t, o: t.clamp_(min=0.0), lambda x, o: np.maximum(x, 0.0)),
    "fill_": (lambda t, o: t.fill_(2.5), lambda x, o: np.full_like(x, 2.5)),
    "zero_": (lambda t, o: t.zero_(), lambda x, o: np.zeros_like(x)),
    "copy_": (lambda t, o: t.copy_(o), lambda x, o: np.broadcast_to(o, x.shape)),
    "masked_fill_": (lambda t, o: t.masked_fill_(Tensor(o > 0), -7.0), lambda x, o: np.where(o > 0, -7.0, x)),
}


@pytest.mark.parametrize("name", list(IN_PLACE))
@given(x=FLOATS, data=st.data())
def test_in_place_values_match_numpy_and_return_self(name, x, data):
    other = data.draw(hnp.arrays(np.float64, x.shape[data.draw(st.integers(0, x.ndim)):],
                                 elements=st.floats(-3, 3).filter(lambda v: abs(v) > 0.1)))
    method, reference = IN_PLACE[name]
    t = Tensor(x)
    view = t.detach()  # shares the memory: an in-place op writes through
    assert method(t, Tensor(other)) is t
    np.testing.assert_allclose(t.numpy(), reference(x, other))
    np.testing.assert_allclose(view.numpy(), reference(x, other))


def test_in_place_writes_through_views_like_pytorch():
    w = tg.zeros(3, 2)
    with tg.no_grad():
        w[1].fill_(5.0)
        w[:, 0].add_(1.0)
    assert w.tolist() == [[1.0, 0.0], [6.0, 5.0], [1.0, 0.0]]


def test_in_place_keeps_the_dtype_and_refuses_unsafe_casts():
    i = tg.tensor([1, 2, 3])
    i.add_(2)
    assert i.dtype == np.int64 and i.tolist() == [3, 4, 5]
    with pytest.raises(TypeError, match="div_"):
        i.div_(2)
    with pytest.raises(ValueError, match="add_"):
        tg.zeros(3).add_(tg.ones(2, 3))  # the result would not fit
    with pytest.raises(ValueError, match="read-only"):
        tg.zeros(1).expand(3).add_(1.0)


def test_modifying_a_tensor_the_tape_saved_raises_at_backward():
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([3.0, 4.0])
    y = w * x          # Mul saved x for w's gradient
    x.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation: Mul"):
        y.sum().backward()


def test_modifying_a_view_of_saved_memory_raises_too():
    w = Tensor([[1.0, 2.0]], requires_grad=True)
    x = Tensor([[3.0, 4.0], [5.0, 6.0]])
    y = (w * x[1]).sum()  # saved the row view
    x[0].zero_()           # another view of the same memory
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_modifying_after_the_graph_was_built_is_fine_when_nothing_saved_it():
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([3.0, 4.0])
    y = w + x          # Add saves nothing
    x.mul_(2)
    y.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0]
    z = w * x          # made after the write: its saved x is current
    z.sum().backward()
    assert w.grad.tolist() == [7.0, 9.0]


def test_in_place_on_a_leaf_that_requires_grad_raises_unless_no_grad():
    p = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        p.add_(1.0)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        p.zero_()
    with tg.no_grad():  # the ported optimizer step
        p.add_(Tensor([0.5, 0.5]), alpha=-2)
    assert p.tolist() == [0.0, 1.0] and p.is_leaf and p.requires_grad


@pytest.mark.parametrize("walk", ["backward", "create_graph"])
def test_optimizer_step_between_forward_and_backward_is_caught(walk):
    p = Tensor([1.0, 2.0], requires_grad=True)
    loss = (p * p).sum()
    with tg.no_grad():
        p.sub_(0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward() if walk == "backward" else tg.grad(loss, p, create_graph=True)


WRITES = {  # every way to write into a tensor in place
    "add_": lambda t: t.add_(1.0), "sub_": lambda t: t.sub_(1.0, alpha=2), "mul_": lambda t: t.mul_(2.0),
    "div_": lambda t: t.div_(2.0), "clamp_": lambda t: t.clamp_(max=0.5), "fill_": lambda t: t.fill_(3.0),
    "zero_": lambda t: t.zero_(), "copy_": lambda t: t.copy_(Tensor([7.0, 8.0])),
    "masked_fill_": lambda t: t.masked_fill_(Tensor([True, False]), 0.0), "setitem": lambda t: t.__setitem__(0, 9.0),
}


def _backward(loss, leaf, walk):
    """The ordinary backward, or the create_graph one: the version check runs in the one walk either way."""
    return loss.backward() if walk == "backward" else tg.grad(loss, leaf, create_graph=True)


@pytest.mark.parametrize("walk", ["backward", "create_graph"])
@pytest.mark.parametrize("write", list(WRITES))
def test_every_in_place_write_into_a_saved_tensor_is_caught(write, walk):
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([3.0, 4.0])
    loss = (w * x).sum()  # Mul saved x
    WRITES[write](x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation: Mul"):
        _backward(loss, w, walk)


@pytest.mark.parametrize("walk", ["backward", "create_graph"])
@pytest.mark.parametrize("write", list(WRITES))
def test_every_in_place_write_into_a_parameter_under_no_grad_is_caught(write, walk):
    """An optimizer-style update (with no_grad(): p.copy_(w), ...) between forward and backward."""
    p = Tensor([1.0, 2.0], requires_grad=True)
    loss = (p * p).sum()
    with tg.no_grad():
        WRITES[write](p)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _backward(loss, p, walk)


class _TanhCell(tg.nn.Module):
    """A cell whose last op (tanh) saves its output: the final state the runner returns."""
    hidden_size = 3

    def __init__(self):
        self.w = tg.nn.Parameter(tg.randn(2, 3))

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, 3)

    def forward(self, x, h):
        return (x @ self.w + h * 0.5).tanh()


@pytest.mark.parametrize("written", ["final_state", "parameter", "input"])
@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("checkpoint", [None, 2])
def test_a_write_into_what_a_recurrent_loop_saved_raises_captured_or_not(written, capture, checkpoint):
    if checkpoint and not capture:
        pytest.skip("checkpointing needs a captured loop")
    tg.manual_seed(0)
    cell = _TanhCell()
    layer = tg.nn.Recurrent(cell, capture=capture, checkpoint=checkpoint)
    x = tg.randn(6, 2, 2, requires_grad=True)
    out, h_n = layer(x)
    assert (type(out.grad_fn).__name__ == "Loop") == capture
    if written == "final_state" and checkpoint:
        pytest.skip("a checkpointed loop keeps no step's output: the write harms nothing")
    with tg.no_grad():
        {"final_state": h_n, "parameter": cell.w, "input": x}[written].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out.sum() + h_n.sum()).backward()


def test_in_place_on_a_recorded_tensor_rebases_the_graph():
    w = Tensor([1.0, 2.0], requires_grad=True)
    h = w * 2
    h.add_(1.0)       # h = 2w + 1
    h.mul_(h)         # h = (2w + 1)^2
    assert h.grad_fn is not None and h.tolist() == [9.0, 25.0]
    h.sum().backward()
    assert w.grad.tolist() == [12.0, 20.0]  # 4 (2w + 1)
    a = tg.zeros(2)
    a.add_(w)         # a constant joins the graph through its operand
    assert a.requires_grad and a.grad_fn is not None
    w.grad = None
    (a * 3).sum().backward()
    assert w.grad.tolist() == [3.0, 3.0]


def test_recorded_in_place_op_whose_input_was_saved_gives_the_right_gradient():
    w = Tensor([1.5, -2.0], requires_grad=True)
    h = w * 1.0
    y = h * h          # saved h's array
    h.mul_(3)          # rebinds h: the saved array is untouched
    (y.sum() + h.sum()).backward()
    assert w.grad.tolist() == [2 * 1.5 + 3, 2 * -2.0 + 3]


def test_detach_in_place_and_grad_zero():
    w = Tensor([1.0], requires_grad=True)
    h = w * 2
    h.detach_()
    assert h.grad_fn is None and not h.requires_grad
    (w * 3).sum().backward()
    w.grad.zero_()
    assert w.grad.tolist() == [0.0]


# ---- item assignment: t[index] = value ------------------------------------------------------

def test_setitem_writes_like_numpy_through_views():
    x = tg.zeros(3, 4)
    row = x[1]
    x[1] = 5.0
    x[:, 0] = Tensor([1.0, 2.0, 3.0])
    x[x > 4] = -1.0
    x[[0, 2], 3] = np.array([7.0, 8.0])
    expected = np.zeros((3, 4), np.float32)
    expected[1], expected[:, 0] = 5.0, [1.0, 2.0, 3.0]
    expected[expected > 4] = -1.0
    expected[[0, 2], 3] = [7.0, 8.0]
    np.testing.assert_array_equal(x.numpy(), expected)
    np.testing.assert_array_equal(row.numpy(), expected[1])  # a view sees the write, as in PyTorch


def test_setitem_filling_an_output_buffer_gives_the_gradients_of_stack():
    """The PyTorch pattern `out = zeros(T, ...); out[t] = h` backpropagates like stacking the steps."""
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    xs = Tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)

    def run(fill):
        h, steps = tg.zeros(2, 3, dtype="float64"), []
        out = tg.zeros(4, 2, 3, dtype="float64")
        for t in range(4):
            h = (xs[t] + h @ w).tanh()
            if fill:
                out[t] = h
            else:
                steps.append(h)
        out = out if fill else tg.stack(steps)
        (out * out).sum().backward()
        grads = w.grad.numpy().copy(), xs.grad.numpy().copy()
        w.grad = xs.grad = None
        return out.numpy(), grads

    (filled, (gw_f, gx_f)), (stacked, (gw_s, gx_s)) = run(True), run(False)
    np.testing.assert_allclose(filled, stacked, rtol=1e-12)
    np.testing.assert_allclose(gw_f, gw_s, rtol=1e-12)
    np.testing.assert_allclose(gx_f, gx_s, rtol=1e-12)


def test_setitem_refuses_what_in_place_ops_refuse():
    p = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="setitem: a leaf tensor that requires grad"):
        p[0] = 0.0
    x = Tensor([1.0, 2.0, 3.0])
    loss = (p * x).sum()  # Mul saved x
    x[1] = 10.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with pytest.raises(ValueError, match=r"setitem: could not broadcast .* \(tensor of shape \(3,\)"):
        x[0:2] = Tensor([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="setitem: index arrays must be integer or boolean"):
        x[np.array([0.5])] = 1.0
