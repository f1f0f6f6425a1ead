"""The fused log_softmax / cross_entropy / nll_loss primitives and the folded linear.

test_ops.py checks each against NumPy, its analytic derivative (every device) and finite
differences; here: equality with the composite formulas, one node each, stability at
|x| = 1e4 with every option, and the errors.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq import Tensor
from tinygrad_seq.engine import ops
from tinygrad_seq.tensors import fused
from tinygrad_seq import functional as F
from tinygrad_seq.engine.function import Edge


def composite_log_softmax(x, axis):
    return x - x.logsumexp(axis, keepdims=True)


def np_log_softmax(x):
    """Along axis 1, shifted by the max and without cancellation (what the fused op computes)."""
    z = x - x.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def np_cross_entropy(x, target, weight, label_smoothing, reduction):
    lp, c = np_log_softmax(x), x.shape[1]
    valid = target != -100
    safe = np.where(valid, target, 0)
    w = np.ones(c) if weight is None else weight
    w_t = w[safe] * valid
    loss = (1 - label_smoothing) * -lp[np.arange(len(target)), safe] * w_t \
        + label_smoothing / c * -(lp * w).sum(1) * valid
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / w_t.sum()


def composite_cross_entropy(x, target, weight, ignore_index, label_smoothing, reduction):
    """PyTorch's formula from Tensor ops only: no fused primitive on the path."""
    lp = composite_log_softmax(x, 1)
    c = x.shape[1]
    t = target.numpy()
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    w = np.ones(c) if weight is None else weight
    w_t = Tensor(w[safe] * valid)
    nll = -lp[np.arange(len(t)), safe] * w_t
    smooth = -(lp * Tensor(w)).sum(1) * Tensor(valid.astype(np.float64))
    loss = nll * (1 - label_smoothing) + smooth * (label_smoothing / c)
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / w_t.sum()


@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), c=st.integers(2, 5),
       weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.25, 1.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_fused_cross_entropy_equals_the_composite_formula(seed, n, c, weighted, smoothing, reduction):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 3
    target = rng.integers(0, c, n)
    target[rng.random(n) < 0.3] = -100
    target[0] = 0  # at least one target counts
    weight = rng.uniform(0.5, 2, c) if weighted else None
    g = rng.standard_normal(n) if reduction == "none" else 1.0
    results = []
    for fn in (lambda x: F.cross_entropy(x, Tensor(target), None if weight is None else Tensor(weight),
                                         reduction=reduction, label_smoothing=smoothing),
               lambda x: composite_cross_entropy(x, Tensor(target), weight, -100, smoothing, reduction)):
        leaf = Tensor(x, requires_grad=True)
        out = fn(leaf)
        out.backward(Tensor(g) if reduction == "none" else None)
        results.append((out.numpy(), leaf.grad.numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 2**16), axis=st.integers(-3, 2))
def test_fused_log_softmax_equals_the_composite(seed, axis):
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal((2, 3, 4)) * 5, rng.standard_normal((2, 3, 4))
    grads = []
    for fn in (lambda t: F.log_softmax(t, dim=axis), lambda t: composite_log_softmax(t, axis)):
        leaf = Tensor(x, requires_grad=True)
        out = fn(leaf)
        out.backward(Tensor(g))
        grads.append((out.numpy(), leaf.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


def test_each_fused_loss_is_one_node():
    x = Tensor(np.zeros((3, 4)), requires_grad=True)
    t = Tensor([0, 1, 2])
    assert type(F.log_softmax(x, 1).grad_fn) is fused.LogSoftmax
    for loss in (F.cross_entropy(x, t), F.cross_entropy(x, t, label_smoothing=0.1)):
        assert type(loss.grad_fn) is fused.CrossEntropy and loss.grad_fn.parents[0].tensor is x
    assert type(F.nll_loss(x, t).grad_fn) is fused.NLLLoss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing, weighted, reduction", [(0.0, False, "mean"), (0.3, True, "mean"),
                                                           (0.3, False, "sum"), (1.0, True, "none")])
def test_fused_losses_are_stable_at_1e4_with_every_option(dtype, smoothing, weighted, reduction):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.5], [0.0, -1e4, -1e4], [1e4, 1e4 - 0.5, -1e4]])
    target, weight = np.array([0, 0, -100, 1]), np.array([1.0, 2.0, 0.5])
    with np.errstate(under="ignore"):
        expected = np_cross_entropy(x, target, weight if weighted else None, smoothing, reduction)
        expected_lsm = np_log_softmax(x)
    leaf = Tensor(x.astype(dtype), requires_grad=True)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = F.cross_entropy(leaf, Tensor(target), Tensor(weight) if weighted else None,
                              reduction=reduction, label_smoothing=smoothing)
        out.sum().backward()
        lsm = F.log_softmax(Tensor(x.astype(dtype), requires_grad=True), 1)
        lsm.sum().backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(leaf.grad.numpy()).all()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(lsm.numpy(), expected_lsm, rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_target_out_of_range_names_value_position_and_count(fn):
    x = tg.zeros(4, 3)
    with pytest.raises(ValueError, match=r"target 7 at position \(2,\) is out of range for 3 classes .*"
                                         r"ignore_index=-100\); 2 target\(s\) out of range"):
        fn(x, Tensor([0, 2, 7, -1]))
    with pytest.raises(ValueError, match=r"target 3 at position \(1, 0\)"):
        fn(tg.zeros(2, 3, 2), Tensor([[0, 1], [3, 0]]))
    fn(x, Tensor([0, 2, -100, 1]))  # ignore_index is in range


def test_loss_option_errors():
    x, t = tg.zeros(2, 3), Tensor([0, 1])
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(x, t, weight=Tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        F.nll_loss(x, t, reduction="avg")
    with pytest.raises(TypeError, match="class indices"):
        F.cross_entropy(x, Tensor([0.0, 1.0]))


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", [2, [2], -100])
def test_unbatched_input_is_a_batch_of_one(fn, reduction, target):
    """PyTorch's unbatched form: (C,) scores with a target of shape () (or (1,)); 'none' gives a 0-d loss."""
    scores = np.array([0.3, -1.2, 2.0, 0.5])
    weight = Tensor([1.0, 2.0, 0.5, 3.0])
    options = dict(weight=weight, reduction=reduction, ignore_index=-100)
    if fn is F.cross_entropy:
        options["label_smoothing"] = 0.2
    x, batched = Tensor(scores, requires_grad=True), Tensor(scores[None], requires_grad=True)
    with np.errstate(invalid="ignore"):  # the mean over no valid target is 0/0 = NaN, as in PyTorch
        loss = fn(x, Tensor(target), **options)
        expected = fn(batched, Tensor(np.reshape(target, 1)), **options)
    assert loss.shape == () and np.allclose(loss.numpy(), expected.numpy().reshape(()), equal_nan=True)
    if np.isfinite(expected.numpy()).all():
        loss.backward()
        expected.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), batched.grad.numpy()[0], rtol=1e-12)


@pytest.mark.parametrize("fn, op", [(F.cross_entropy, "cross_entropy"), (F.nll_loss, "nll_loss")])
def test_shape_errors_name_the_loss_and_the_shapes_it_takes(fn, op):
    takes = r"it takes input \(N, C\) with target \(N,\), \(N, C, d1, ...\) with target \(N, d1, ...\), " \
            r"or unbatched \(C,\) with target \(\)"
    with pytest.raises(ValueError, match=rf"^{op}: input of shape \(4,\) is one unbatched example with 4 classes, so "
                                         rf"the target must be one class index \(shape \(\)\), got shape \(4,\); "
                                         rf"{takes} \(for one logit per example, use binary_cross_entropy_with_logits\)"):
        fn(tg.zeros(4), Tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=rf"^{op}: target has shape \(2,\), expected \(4,\) for input of shape "
                                         rf"\(4, 3\); {takes}$"):
        fn(tg.zeros(4, 3), Tensor([0, 1]))
    with pytest.raises(ValueError, match=rf"^{op}: target has shape \(4,\), expected \(4, 2\) .*{takes}$"):
        fn(tg.zeros(4, 3, 2), Tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match=rf"^{op}: input must have a class axis, got a 0-d tensor; {takes}$"):
        fn(tg.zeros(()), Tensor(0))


@pytest.mark.parametrize("shape", [(4, 3), (5, 4, 3), (2, 3, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_one_node_over_all_leading_axes_with_the_textbook_gradients(shape, bias):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((2, 3)), rng.standard_normal(2)
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.linear(tx, tw, tb if bias else None)
    np.testing.assert_allclose(out.numpy(), x @ w.T + (b if bias else 0), rtol=1e-12)
    assert type(out.grad_fn) is fused.Linear and all(e is None or type(e) is not Edge for e in out.grad_fn.parents)
    g = rng.standard_normal(out.shape)
    out.backward(Tensor(g))
    rows, g_rows = x.reshape(-1, 3), g.reshape(-1, 2)
    np.testing.assert_allclose(tw.grad.numpy(), g_rows.T @ rows, rtol=1e-12)
    np.testing.assert_allclose(tx.grad.numpy(), g @ w, rtol=1e-12)
    if bias:
        np.testing.assert_allclose(tb.grad.numpy(), g_rows.sum(0), rtol=1e-12)
    else:
        assert tb.grad is None
    inputs = (tx, tw, tb) if bias else (tx, tw)
    assert tg.autograd.gradcheck(lambda *a: F.linear(*a), inputs)
    assert tg.autograd.gradgradcheck(lambda *a: F.linear(*a), inputs)


def test_linear_refuses_mixed_dtypes_and_broadcasts_other_bias_shapes_as_plus_does():
    x, w = tg.randn(4, 3, dtype="float64"), tg.randn(2, 3)
    with pytest.raises(TypeError, match=r"^linear: input, weight and bias must have one dtype, got float64, float32"):
        F.linear(x, w)
    x, b = x.float(), tg.randn(4, 2)
    np.testing.assert_allclose(F.linear(x, w, b).numpy(), x.numpy() @ w.numpy().T + b.numpy(), rtol=1e-6)


@pytest.mark.parametrize("loss", ["log_softmax", "cross_entropy"])
def test_the_softmax_is_not_kept_for_backward_only_the_log_probabilities(loss):
    x = Tensor(np.random.default_rng(4).standard_normal((5, 700)), requires_grad=True)
    out = F.log_softmax(x, dim=1) if loss == "log_softmax" else F.cross_entropy(x, Tensor(np.arange(5)))
    full = [a for a in out.grad_fn.kept_arrays() if a.shape == x.shape]
    assert len(full) == 1  # as in PyTorch: one (N, C) array between forward and backward, not two
    if loss == "log_softmax":
        assert full[0] is out.array


@pytest.mark.parametrize("loss", ["log_softmax", "cross_entropy", "nll_loss"])
def test_wide_rows_computed_in_blocks_on_several_threads_equal_one_pass(loss, monkeypatch):
    from tinygrad_seq import threads
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 1 << 13)) * 5  # 37 rows: blocks of unequal size
    target = rng.integers(0, x.shape[1], 37)
    results = []
    for blocks in (1, 3):
        monkeypatch.setattr(threads, "loop_threads", lambda: blocks)
        t = Tensor(x, requires_grad=True)
        if loss == "log_softmax":
            out = F.log_softmax(t, dim=1)
            (out * Tensor(np.cos(x))).sum().backward()
        elif loss == "cross_entropy":
            out = F.cross_entropy(t, Tensor(target))
            out.backward()
        else:
            out = F.nll_loss(F.log_softmax(t, dim=1), Tensor(target))
            out.backward()
        results.append((out.numpy(), t.grad.numpy()))
    assert fused._wide(x, 1)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)  # the same arithmetic per row, whatever the blocks
    np.testing.assert_allclose(F.log_softmax(Tensor(x), dim=1).numpy(), np_log_softmax(x), rtol=1e-12, atol=1e-12)
