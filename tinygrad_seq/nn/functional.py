"""nn.functional: composites built from Tensor ops (gradients from the tape), PyTorch's losses (the
fused ones are one node each, tensors/fused.py), and the RNN/LSTM/GRU cells' steps as functions.
Also importable as tinygrad_seq.functional."""
import math

from ..engine import backend
from ..engine.function import is_grad_enabled
from ..tensors import Tensor, where
from .cells import GRUCell, LSTMCell, RNNCell
from ..tensors.fused import CrossEntropy, Erf, NLLLoss

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding", "gelu", "gru_cell", "linear",
           "log_softmax", "logsumexp", "lstm_cell", "mse_loss", "nll_loss", "one_hot", "relu", "rnn_cell", "sigmoid",
           "softmax", "tanh"]


def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """log(sum(exp(x))) over `axis`, shifted by the (detached) max so it never overflows (Tensor.logsumexp)."""
    return x.logsumexp(axis, keepdims, dim=dim, keepdim=keepdim)


def log_softmax(x, axis=-1, *, dim=None):
    """(x - max) - log(sum(exp(x - max))) along `axis`, one op, stable for any magnitude (Tensor.log_softmax)."""
    return x.log_softmax(axis, dim=dim)


def softmax(x, axis=-1, *, dim=None):
    """exp(x - max) / sum(exp(x - max)) along `axis` (Tensor.softmax)."""
    return x.softmax(axis, dim=dim)


def one_hot(target, num_classes, dtype=None):
    """A (..., num_classes) float tensor with ones at the integer `target` positions (no gradient)."""
    t = target.array if isinstance(target, Tensor) else backend.new_array(target, None, "cpu")
    if not backend.is_integer(t.dtype):
        raise TypeError(f"one_hot: target must be integer, got {t.dtype}")
    xp = backend.array_namespace(t)
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"one_hot: target values must be in [0, {num_classes}), got min {int(t.min())}, max {int(t.max())}")
    eye = xp.eye(num_classes, dtype=backend.default_float if dtype is None else backend.dtype(dtype))
    return Tensor._make(eye[t], None, 0)


def _reduce(loss, reduction, op):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


_SHAPES = ("it takes input (N, C) with target (N,), (N, C, d1, ...) with target (N, d1, ...), "
           "or unbatched (C,) with target ()")


def _class_rows(op, scores, target, weight, ignore_index):
    """Checks, then (N, C) rows with the classes last, the flat target and the weight array.

    scores (N, C) or (N, C, d1, ...) or unbatched (C,); target (N,) / (N, d1, ...) / ().
    """
    if scores.ndim < 1:
        raise ValueError(f"{op}: input must have a class axis, got a 0-d tensor; {_SHAPES}")
    target = target if isinstance(target, Tensor) else Tensor(target, device=scores.device)
    if not backend.is_integer(target.dtype):
        raise TypeError(f"{op}: target must be an integer tensor of class indices, got {target.dtype}")
    if target.device != scores.device:
        raise ValueError(f"{op}: target is on {target.device}, the input on {scores.device}")
    if scores.ndim == 1:  # unbatched (C,) with one class index, shape () (or (1,), as PyTorch takes)
        if target.shape not in ((), (1,)):
            raise ValueError(f"{op}: input of shape {scores.shape} is one unbatched example with {scores.shape[0]} "
                             f"classes, so the target must be one class index (shape ()), got shape {target.shape}; "
                             f"{_SHAPES} (for one logit per example, use binary_cross_entropy_with_logits)")
        scores, target = scores.unsqueeze(0), target.reshape(1)
    expected = (scores.shape[0],) + scores.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{op}: target has shape {target.shape}, expected {expected} for input of shape "
                         f"{scores.shape}; {_SHAPES}")
    n_classes, t = scores.shape[1], target.array
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if t.size and bool(bad.any()):
        where_bad = [backend.to_host(k) for k in bad.nonzero()]
        position = tuple(int(k[0]) for k in where_bad)
        raise ValueError(f"{op}: target {int(t[position])} at position {position} is out of range for "
                         f"{n_classes} classes (expected 0..{n_classes - 1}, or ignore_index={ignore_index}); "
                         f"{len(where_bad[0])} target(s) out of range")
    if weight is not None:
        weight = weight.array if isinstance(weight, Tensor) else backend.new_array(weight, scores.dtype, scores.device)
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"{op}: weight must have shape ({n_classes},), one per class, got {tuple(weight.shape)}")
        weight = weight.astype(scores.dtype, copy=False)
    rows = scores if scores.ndim == 2 else scores.permute(0, *range(2, scores.ndim), 1).reshape(-1, n_classes)
    return rows, t.reshape(-1), weight, expected


def _check_reduction(op, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer targets, one fused op (fused.NLLLoss).

    log_probs (N, C) or (N, C, d1, ...) or (C,); target (N, d1, ...) of class indices; weight (C,) rescales
    each class (a constant: it gets no gradient); 'mean' divides by the summed weight of the targets not ignored.
    """
    _check_reduction("nll_loss", reduction)
    rows, t, w, shape = _class_rows("nll_loss", log_probs, target, weight, ignore_index)
    loss = NLLLoss.apply(rows, t, w, ignore_index=ignore_index, reduction=reduction)
    return loss.reshape(shape) if reduction == "none" and log_probs.ndim > 1 else \
        loss.reshape(()) if reduction == "none" else loss


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """log_softmax over the class axis (1, or 0 for unbatched) then NLL, as one fused op (fused.CrossEntropy).

    PyTorch's signature and formula, label smoothing included: with eps = label_smoothing the
    target distribution is (1 - eps) one_hot + eps / C, and 'mean' divides by the summed weight
    of the targets that are not ignore_index.
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not backend.is_floating(input.dtype):
        raise TypeError(f"cross_entropy: input must be floating-point logits, got {input.dtype}")
    rows, t, w, shape = _class_rows("cross_entropy", input, target, weight, ignore_index)
    loss = CrossEntropy.apply(rows, t, w, ignore_index=ignore_index, label_smoothing=float(label_smoothing),
                              reduction=reduction)[0]
    return loss.reshape(shape) if reduction == "none" and input.ndim > 1 else \
        loss.reshape(()) if reduction == "none" else loss


def mse_loss(input, target, reduction="mean"):
    """Mean squared error (input - target)^2, reduced by 'mean', 'sum' or 'none'."""
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def binary_cross_entropy_with_logits(logits, target, weight=None, reduction="mean", pos_weight=None):
    """-w [p t log sigmoid(x) + (1-t) log(1 - sigmoid(x))], PyTorch's signature and formula.

    With softplus(x) = max(x, 0) + log(1 + exp(-|x|)) = -log(1 - sigmoid(x)) this is
    w [softplus(x) (1 - t + p t) - p t x]; weight w broadcasts to the logits, pos_weight p
    (one per class, the last axis) weighs the positive term. Both are constants.
    """
    op = "binary_cross_entropy_with_logits"
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=logits.dtype, device=logits.device)
    if logits.shape != target.shape:
        raise ValueError(f"{op}: logits shape {logits.shape} and target shape {target.shape} differ")
    weight, pos_weight = (_loss_constant(op, name, c, logits) for name, c in (("weight", weight),
                                                                              ("pos_weight", pos_weight)))
    positive = logits.relu()  # -|x| = x - 2 relu(x): the kinks cancel, so the gradient is right at x = 0 too
    softplus = positive + ((logits - positive * 2.0)._exp_nonpositive() + 1).log()
    if pos_weight is None:
        loss = softplus - logits * target
    else:
        weighted_target = target * pos_weight
        loss = softplus * (1 - target + weighted_target) - logits * weighted_target
    return _reduce(loss if weight is None else loss * weight, reduction, op)


def _loss_constant(op, name, value, logits):
    """A loss's weight as a constant Tensor that broadcasts to the logits' shape, or None."""
    if value is None:
        return None
    value = value.detach() if isinstance(value, Tensor) else Tensor(value, dtype=logits.dtype, device=logits.device)
    shape, target = value.shape, logits.shape
    if len(shape) > len(target) or any(n not in (1, m) for n, m in zip(reversed(shape), reversed(target))):
        raise ValueError(f"{op}: {name} of shape {shape} does not broadcast to the logits' shape {target}")
    return value if value.dtype == logits.dtype else value.to(dtype=logits.dtype)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with PyTorch's (out_features, in_features) weight layout.

    Leading axes are folded into one: (..., in) is reshaped to 2-D, multiplied once, and
    reshaped back, so the forward is one matmul and so is the weight's gradient.
    """
    if x.ndim == 0 or x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                         f"(expected input features {weight.shape[1]})")
    lead = x.shape[:-1]
    out = (x.reshape(math.prod(lead), x.shape[-1]) if x.ndim > 2 else x) @ weight.T
    if bias is not None:
        out = out + bias
    return out.reshape(lead + (weight.shape[0],)) if x.ndim > 2 else out


def relu(x):
    return x.relu()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def gelu(x, approximate="none"):
    """x * Phi(x) with Phi the standard normal CDF: exact (erf, fused.Erf) or approximate="tanh", as PyTorch."""
    if approximate == "none":
        return x * 0.5 * (Erf.apply(x * (1 / math.sqrt(2))) + 1)
    if approximate == "tanh":
        return x * 0.5 * (((x * x * x) * 0.044715 + x) * math.sqrt(2 / math.pi)).tanh() + x * 0.5
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def embedding(indices, weight, padding_idx=None):
    """Rows of `weight` gathered by integer `indices` (the backward scatter-adds into them)."""
    idx = indices.array if isinstance(indices, Tensor) else backend.new_array(indices, None, weight.device)
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


# ---- the recurrent cells' equations (PyTorch's, gate order included), as functions ---------------

def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh): one step of nn.RNNCell with these weights."""
    return RNNCell.sharing(w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity)(x, h)


def lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h', c') from gates i, f, g, o of x W_ih^T + b_ih + h W_hh^T + b_hh: one step of nn.LSTMCell."""
    return LSTMCell.sharing(w_ih, w_hh, b_ih, b_hh)(x, tuple(state))


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = (1 - z) n + z h with gates r, z, n: one step of nn.GRUCell with these weights."""
    return GRUCell.sharing(w_ih, w_hh, b_ih, b_hh)(x, h)
