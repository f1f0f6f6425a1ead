"""Composites: functions built only from Tensor ops, so their gradients come from the tape."""
from . import backend
from .autograd import is_grad_enabled
from ._tensor import Tensor, _axes, _axis, where


def _exp_nonpositive(z):
    """exp(z) for z <= 0, exactly 0 where exp(z) is negligible next to 1 in z's dtype.

    exp is only evaluated above that floor, which keeps it, and products with its gradient,
    clear of floating-point underflow (stable functions are tested at +-1e4 under
    np.errstate(all="raise")); the values set to 0 are far below the dtype's resolution of 1
    (exp(-40) ~ 4e-18 in float32, exp(-200) in float64). NaN stays NaN; -inf gives 0.
    """
    floor = _EXP_FLOOR.get(z.dtype.itemsize, -200.0)
    return where(~(z._data <= floor), z.clip(min=floor).exp(), 0.0)


_EXP_FLOOR = {2: -8.0, 4: -40.0}  # by itemsize: float16, float32; float64 and wider use -200


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, shifted by the (detached) max so it never overflows."""
    axes = _axes("logsumexp", axis, x.ndim)
    if not backend.is_floating(x.dtype):  # integers and bools: in float64, as NumPy's exp would
        x = x.double()
    if x.numel() == 0:  # nothing to shift by; a sum over no elements is log(0) = -inf, as in PyTorch and SciPy
        with backend.ignore_float_errors():
            out = x.exp().sum(axes, keepdims=keepdims).log()
        return out
    shift = _max_shift(x, axes)
    out = _exp_nonpositive(x - shift).sum(axes, keepdims=True).log() + shift
    if keepdims:
        return out
    return out.reshape(()) if axes is None else out.squeeze(axes)


def _max_shift(x, axes):
    """The max over `axes` (kept), detached, with infinities replaced by 0: what exp's argument is shifted by."""
    shift = x.detach().amax(axes, keepdims=True)
    finite = backend.array_namespace(shift._data).isfinite(shift._data)
    return Tensor._make(backend.array_namespace(shift._data).where(finite, shift._data, 0), None, 0)


def log_softmax(x, axis=-1):
    """(x - max) - log(sum(exp(x - max))): stable for inputs of any magnitude.

    Subtracting log(sum) from the shifted values, not logsumexp from x, avoids cancellation:
    at |x| ~ 1e4 in float32, x - logsumexp(x) loses three digits.
    """
    a = _axis("log_softmax", axis, x.ndim)
    if x.numel() == 0 or not backend.is_floating(x.dtype):
        return x - logsumexp(x, a, keepdims=True)
    z = x - _max_shift(x, (a,))
    return z - _exp_nonpositive(z).sum(a, keepdims=True).log()


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    a = _axis("softmax", axis, x.ndim)
    e = _exp_nonpositive(x - x.detach().amax(a, keepdims=True))
    return e / e.sum(a, keepdims=True)


def one_hot(target, num_classes, dtype=None):
    """A (..., num_classes) float tensor with ones at the integer `target` positions (no gradient)."""
    t = target._data if isinstance(target, Tensor) else backend.new_array(target, None, "cpu")
    if not backend.is_integer(t.dtype):
        raise TypeError(f"one_hot: target must be integer, got {t.dtype}")
    xp = backend.array_namespace(t)
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"one_hot: target values must be in [0, {num_classes}), got min {int(t.min())}, max {int(t.max())}")
    eye = xp.eye(num_classes, dtype=backend.default_float if dtype is None else backend.dtype(dtype))
    return Tensor._make(eye[t], None, 0)


def _reduce(loss, reduction, op, weight_sum=None):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / weight_sum if weight_sum is not None else loss.mean()
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs, target, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer targets; log_probs (N, C) or (N, C, d1, ...), target (N, d1, ...)."""
    if log_probs.ndim < 1:
        raise ValueError("nll_loss: log_probs must have a class axis")
    target = target if isinstance(target, Tensor) else Tensor(target)
    if not backend.is_integer(target.dtype):
        raise TypeError(f"nll_loss: target must be an integer tensor, got {target.dtype}")
    if log_probs.ndim == 1:  # unbatched (C,) with a scalar target
        log_probs, target = log_probs.unsqueeze(0), target.reshape(1)
    expected = (log_probs.shape[0],) + log_probs.shape[2:]
    if target.shape != expected:
        raise ValueError(f"nll_loss: target has shape {target.shape}, expected {expected} for input "
                         f"of shape {log_probs.shape} (classes on axis 1)")
    n_classes = log_probs.shape[1]
    xp = backend.array_namespace(target._data)
    t = target._data
    valid = t != ignore_index
    if t.size and bool(((t[valid] < 0) | (t[valid] >= n_classes)).any()):
        raise ValueError(f"nll_loss: target values must be in [0, {n_classes}) or ignore_index={ignore_index}")
    safe = xp.where(valid, t, 0)
    moved = log_probs if log_probs.ndim == 2 else log_probs.permute(0, *range(2, log_probs.ndim), 1)
    flat = moved.reshape(-1, n_classes)
    rows = xp.arange(flat.shape[0])
    picked = -flat[rows, safe.reshape(-1)].reshape(expected)
    mask = Tensor._make(valid.astype(log_probs.dtype), None, 0)
    loss = picked * mask
    return _reduce(loss, reduction, "nll_loss", weight_sum=mask.sum())


def cross_entropy(logits, target, ignore_index=-100, reduction="mean"):
    """log_softmax over the class axis (1, or 0 for unbatched) then nll_loss, like PyTorch."""
    return nll_loss(log_softmax(logits, 1 if logits.ndim > 1 else 0), target, ignore_index, reduction)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error (input - target)^2, reduced by 'mean', 'sum' or 'none'."""
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """-[t log sigmoid(x) + (1-t) log(1 - sigmoid(x))] = max(x, 0) - x t + log(1 + exp(-|x|))."""
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=logits.dtype, device=logits.device)
    if logits.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: logits shape {logits.shape} and target "
                         f"shape {target.shape} differ")
    positive = logits.relu()  # -|x| = x - 2 relu(x): the kinks cancel, so the gradient is right at x = 0 too
    loss = positive - logits * target + (_exp_nonpositive(logits - positive * 2.0) + 1).log()
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with PyTorch's (out_features, in_features) weight layout."""
    if x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                         f"(expected input features {weight.shape[1]})")
    out = x @ weight.T
    return out + bias if bias is not None else out


def embedding(indices, weight, padding_idx=None):
    """Rows of `weight` gathered by integer `indices` (the backward scatter-adds into them)."""
    idx = indices._data if isinstance(indices, Tensor) else backend.new_array(indices, None, weight.device)
    if not backend.is_integer(idx.dtype):
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"embedding: indices must be in [0, {n}), got min {int(idx.min())}, max {int(idx.max())}")
    out = weight[idx]
    if padding_idx is not None and is_grad_enabled() and weight.requires_grad:
        out = where((idx != padding_idx)[..., None], out, out.detach())  # no gradient into the padding row
    return out


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = backend.rng(x.device).random(x.shape, dtype=x.dtype) >= p
    return x * Tensor._make(keep.astype(x.dtype) * x.dtype.type(1 / (1 - p)), None, 0)


# ---- recurrent cell equations (PyTorch's, gate order included) ------------------------

def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    return rnn_update(linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh), nonlinearity)


def rnn_update(preactivation, nonlinearity="tanh"):
    if nonlinearity == "tanh":
        return preactivation.tanh()
    if nonlinearity == "relu":
        return preactivation.relu()
    raise ValueError(f"rnn_cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h', c') from gates i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    h, c = state
    return lstm_update(linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh), c)


def lstm_update(gates, c):
    """c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')."""
    i, f, g, o = gates.chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = (1 - z) n + z h with r, z, n from x W_ih^T + b_ih and h W_hh^T + b_hh."""
    return gru_update(linear(x, w_ih, b_ih), linear(h, w_hh, b_hh), h)


def gru_update(input_part, hidden_part, h):
    """r, z = sigmoid(x_rz + h_rz); n = tanh(x_n + r h_n); h' = (1 - z) n + z h = n + z (h - n)."""
    size = h.shape[-1]
    x_rz, x_n = input_part.split([2 * size, size], -1)
    h_rz, h_n = hidden_part.split([2 * size, size], -1)
    r, z = (x_rz + h_rz).sigmoid().chunk(2, -1)  # r and z are adjacent: one add, one sigmoid
    n = (x_n + r * h_n).tanh()
    return n + z * (h - n)
