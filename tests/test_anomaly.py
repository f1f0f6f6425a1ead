"""detect_anomaly() (issue #5): the first op whose forward or backward makes NaN or inf raises
an error naming the op, the file and line of user code that created it, and the input shapes.

Ops are recorded with their creation site only inside the context, so the forward pass (and,
for backward anomalies, the backward pass) runs inside `with detect_anomaly():`, as with
torch.autograd.detect_anomaly.
"""
import os
import re
import sys

import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import Tensor, nn

HERE = os.path.basename(__file__)


def _next_line():
    """The line number of the caller's next line (where the op under test is created)."""
    return sys._getframe(1).f_lineno + 1


def _assert_names(error, op, stage, line, shapes):
    message = str(error)
    assert re.search(rf"\b{op}\b", message, re.IGNORECASE), message
    assert stage in message, message
    assert f"{HERE}:{line}" in message, message
    for shape in shapes:
        assert str(shape) in message, message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_of_zero_forward(dtype):
    x = Tensor(np.array([[1.0, 0.0, 2.0], [3.0, 4.0, 5.0]], dtype), requires_grad=True)
    with tg.detect_anomaly():
        with pytest.raises(FloatingPointError) as info:
            line = _next_line()
            (x * 2).log()
    _assert_names(info.value, "log", "forward", line, [(2, 3)])


def test_log_of_zero_is_not_an_error_outside_the_context():
    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with tg.detect_anomaly(), pytest.raises(FloatingPointError):
        x.log()
    with np.errstate(divide="ignore"):  # the context was left: NumPy's own behaviour again
        y = x.log()
    assert y.numpy()[0] == -np.inf


def test_sqrt_at_zero_backward():
    x = Tensor(np.array([0.0, 4.0, 9.0]), requires_grad=True)
    with tg.detect_anomaly():
        line = _next_line()
        y = x.sqrt()
        loss = (y * Tensor([1.0, 2.0, 3.0], dtype=np.float64)).sum()  # forward values are finite
        with pytest.raises(FloatingPointError) as info:
            loss.backward()
    _assert_names(info.value, "pow", "backward", line, [(3,)])  # sqrt is x ** 0.5


def test_exploding_relu_rnn_forward():
    """A ReLU RNN with large recurrent weights overflows float32 after a few dozen steps."""
    tg.manual_seed(0)
    rnn = nn.RNN(3, 4, nonlinearity="relu")
    rnn.weight_ih_l0.array[:] = 1.0
    rnn.weight_hh_l0.array[:] = 50.0  # h grows about 200x per step: inf after ~17 steps
    x = Tensor(np.ones((40, 2, 3), np.float32))
    with tg.detect_anomaly():
        with pytest.raises(FloatingPointError) as info:
            line = _next_line()
            out, h_n = rnn(x)
    message = str(info.value)
    assert re.search(r"\b(Matmul|Add|Relu)\b", message), message
    assert f"{HERE}:{line}" in message, message  # the user's call, not a line inside nn/
    assert "(2, 4)" in message and "forward" in message, message

    # without the context the same run just overflows (NumPy warns; silenced here)
    with np.errstate(over="ignore", invalid="ignore"):
        out, _ = rnn(x)
    assert not np.isfinite(out.numpy()).all()


def test_exploding_rnn_backward_through_time():
    """Finite forward values, but the gradient through 60 steps overflows float32."""
    tg.manual_seed(0)
    cell = nn.RNNCell(2, 3, nonlinearity="relu")
    cell.weight_ih.array[:] = 0.0
    cell.bias_ih.array[:] = 0.0
    cell.bias_hh.array[:] = 0.0
    cell.weight_hh.array[:] = np.eye(3, dtype=np.float32) * 4.0  # |dh_T/dh_0| = 4^60 ~ 1e36
    h0 = Tensor(np.full((1, 3), 1e-30, np.float32), requires_grad=True)
    x = Tensor(np.zeros((60, 1, 2), np.float32))
    with tg.detect_anomaly():
        h = h0
        line = _next_line()
        outputs, h = nn.Recurrent(cell)(x, h)
        assert np.isfinite(h.numpy()).all()  # 1e-30 * 4^60 ~ 1.3e6
        loss = (h * Tensor(np.full((1, 3), 1e4, np.float32))).sum()  # upstream 1e4 * 4^60 > float32 max
        with pytest.raises(FloatingPointError) as info:
            loss.backward()
    message = str(info.value)
    assert "backward" in message and f"{HERE}:{line}" in message, message
    assert re.search(r"\b(Matmul|Add|Relu|Where|Stack|Unbind|Mul)\b", message), message
    assert "(1, 3)" in message, message


def test_no_false_alarm_and_same_gradients():
    """A healthy LSTM step gives identical results with and without anomaly detection."""
    def run():
        tg.manual_seed(3)
        lstm = nn.LSTM(3, 5)
        x = tg.randn(7, 2, 3)
        out, (h, c) = lstm(x)
        (out.sum() + c.sum()).backward()
        return out.numpy(), [p.grad.numpy() for p in lstm.parameters()]

    plain_out, plain_grads = run()
    with tg.detect_anomaly():
        out, grads = run()
    np.testing.assert_array_equal(out, plain_out)
    for a, b in zip(grads, plain_grads):
        np.testing.assert_array_equal(a, b)


def test_detect_anomaly_as_a_decorator():
    @tg.detect_anomaly()
    def f(x):
        return x.log()

    with pytest.raises(FloatingPointError, match="Log"):
        f(Tensor(np.array([-1.0])))  # NaN
    with np.errstate(invalid="ignore"):
        assert np.isnan(Tensor(np.array([-1.0])).log().item())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_input_that_already_holds_nan_is_named_not_the_op(bad):
    """NaN in the data: the first op that reads it is not blamed; the input is, as coming from outside the tape."""
    x = Tensor(np.array([1.0, bad, 2.0]), requires_grad=True)
    with tg.detect_anomaly():
        with pytest.raises(FloatingPointError) as info:
            line = _next_line()
            x.reshape(3, 1) * 2
    message = str(info.value)
    assert message.startswith("detect_anomaly: input 0 (shape (3,)) of Reshape forward already held NaN or inf"), \
        message
    assert "a leaf or constant" in message and "outside the tape" in message and f"{HERE}:{line}" in message


def test_an_input_made_before_the_block_is_named_with_its_op():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        z = w * Tensor(np.array([np.inf, 0.0]))  # inf, outside the block
    with tg.detect_anomaly(), pytest.raises(FloatingPointError) as info:
        z + w
    assert "input 0 (shape (2,)) of Add forward already held NaN or inf; it is made by Mul before detect_anomaly " \
           "was on" in str(info.value)
