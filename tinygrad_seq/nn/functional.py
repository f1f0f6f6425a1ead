"""nn.functional: composites built from Tensor ops (gradients from the tape), PyTorch's losses (the
fused ones are one node each, tensors/fused.py), and the RNN/LSTM/GRU cells' steps as functions.
Also importable as tinygrad_seq.functional."""
import math

from ..engine import backend, ops
from ..engine.function import is_grad_enabled
from ..tensors import Tensor, full, where
from ..tensors.elementwise import call
from ..tensors.functions import broadcast_tensors
from .cells import GRUCell, LSTMCell, RNNCell
from .dropout import dropout1d, dropout2d
from .normalization import batch_norm
from ..tensors.fused import CrossEntropy, Erf, Linear, NLLLoss

__all__ = ["batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits", "celu", "cosine_similarity", "cross_entropy",
           "dropout", "dropout1d", "dropout2d", "elu", "embedding", "gelu", "glu", "gru_cell", "hardsigmoid", "hardswish", "hardtanh",
           "huber_loss", "kl_div", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax", "logsigmoid",
           "logsumexp", "lstm_cell", "margin_ranking_loss", "mish", "mse_loss", "nll_loss", "normalize", "one_hot",
           "pad", "pairwise_distance", "prelu", "relu", "relu6", "rnn_cell", "selu", "sigmoid", "silu",
           "smooth_l1_loss", "softmax", "softmin", "softplus", "softsign", "tanh", "tanhshrink"]


def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """log(sum(exp(x))) over `axis`, shifted by the (detached) max so it never overflows (Tensor.logsumexp)."""
    return x.logsumexp(axis, keepdims, dim=dim, keepdim=keepdim)


def log_softmax(x, axis=-1, *, dim=None, dtype=None):
    """(x - max) - log(sum(exp(x - max))) along `axis`, one op, stable for any magnitude (Tensor.log_softmax);
    `dtype` converts x first."""
    return (x if dtype is None else x.to(dtype=dtype)).log_softmax(axis, dim=dim)


def softmax(x, axis=-1, *, dim=None, dtype=None):
    """exp(x - max) / sum(exp(x - max)) along `axis` (Tensor.softmax); `dtype` converts x first."""
    return (x if dtype is None else x.to(dtype=dtype)).softmax(axis, dim=dim)


def softmin(x, axis=-1, *, dim=None, dtype=None):
    """softmax(-x)."""
    return softmax(-x, axis, dim=dim, dtype=dtype)


def one_hot(target, num_classes=-1, dtype=None):
    """A (..., num_classes) tensor with ones at the integer `target` positions: int64 as PyTorch's, or `dtype`
    (num_classes=-1: one more than the largest target). No gradient."""
    target = target if isinstance(target, Tensor) else Tensor(target)
    t = target.array
    if not backend.is_integer(t.dtype):
        raise TypeError(f"one_hot: target must be integer, got {t.dtype}")
    if num_classes == -1:
        num_classes = int(t.max()) + 1 if t.size else 0
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"one_hot: target values must be in [0, {num_classes}), got min {int(t.min())}, "
                         f"max {int(t.max())}")
    dtype = backend.int64 if dtype is None else backend.dtype(dtype)
    classes = Tensor._make(backend.array_namespace(t).arange(num_classes), None, 0)
    return call("where", target.unsqueeze(-1) == classes, dtype.type(1), dtype.type(0))  # ops: a captured step replays them


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
    """x @ weight.T + bias, with PyTorch's (out_features, in_features) weight layout: one node (fused.Linear),
    whose forward is one matrix product over all leading axes with the bias added in place, and so is the
    weight's gradient. A bias of another shape than (out_features,) is broadcast as `+` does."""
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                         f"(expected input features {weight.shape[-1]})")
    if bias is None or bias.shape == weight.shape[:1]:
        return Linear.apply(x, weight, bias)
    return Linear.apply(x, weight) + bias


def relu(x, inplace=False):
    return _result(x, x.relu(), inplace)


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
    # ._data, not .array: the index array itself goes into the op, where a captured loop tracks it as the step's
    # value (the bounds check reads it too, at the recorded steps only)
    idx = indices._data if isinstance(indices, Tensor) else backend.new_array(indices, None, weight.device)
    if not backend.is_integer(idx.dtype):
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"embedding: indices must be in [0, {n}), got min {int(idx.min())}, max {int(idx.max())}")
    out = ops.GetItem.apply(weight, idx, advanced=True)  # the index positional: a captured loop reads it per step
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


# ---- more activations: PyTorch's formulas; inplace=True writes the result into x, as PyTorch's --------

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _result(x, out, inplace):
    return x.copy_(out) if inplace else out


def _negative_part(x):
    """min(x, 0), with x's gradient where x <= 0: exp of it never overflows, even where x is large."""
    return where(x > 0, 0.0, x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x."""
    return _result(x, where(x > 0, x, x * negative_slope), inplace)


def elu(x, alpha=1.0, inplace=False):
    """x where x > 0, else alpha (exp(x) - 1)."""
    return _result(x, where(x > 0, x, _negative_part(x).expm1() * alpha), inplace)


def celu(x, alpha=1.0, inplace=False):
    """x where x > 0, else alpha (exp(x / alpha) - 1)."""
    return _result(x, where(x > 0, x, (_negative_part(x) * (1 / alpha)).expm1() * alpha), inplace)


def selu(x, inplace=False):
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al. (2017)."""
    return _result(x, elu(x, _SELU_ALPHA) * _SELU_SCALE, inplace)


def silu(x, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    return _result(x, x * x.sigmoid(), inplace)


def mish(x, inplace=False):
    """x * tanh(softplus(x))."""
    return _result(x, x * softplus(x).tanh(), inplace)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold, as PyTorch's."""
    scaled = x * beta
    linear = scaled > threshold
    return where(linear, x, where(linear, 0.0, scaled).exp().log1p() * (1 / beta))


def softsign(x):
    """x / (1 + |x|)."""
    return x / (x.abs() + 1)


def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    """x clamped to [min_val, max_val]; the gradient is 0 outside (min_val, max_val), ends included (PyTorch's)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} is greater than max_val {max_val}")
    inside = (x > min_val) & (x < max_val)
    return _result(x, where(inside, x, x.detach().clamp(min_val, max_val)), inplace)


def relu6(x, inplace=False):
    """min(max(x, 0), 6)."""
    return hardtanh(x, 0.0, 6.0, inplace)


def hardsigmoid(x, inplace=False):
    """relu6(x + 3) / 6."""
    return _result(x, hardtanh(x + 3.0, 0.0, 6.0) * (1 / 6), inplace)


def hardswish(x, inplace=False):
    """x * relu6(x + 3) / 6."""
    return _result(x, x * hardsigmoid(x), inplace)


def logsigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)), stable for any x."""
    positive = x.relu()  # -|x| = x - 2 relu(x): the kinks cancel, so the gradient is right at 0 too
    return x - positive - (x - positive * 2.0)._exp_nonpositive().log1p()


def tanhshrink(x):
    """x - tanh(x)."""
    return x - x.tanh()


def glu(x, dim=-1):
    """a * sigmoid(b), where a and b are the halves of x along `dim`."""
    if x.ndim == 0 or x.shape[dim] % 2:
        raise ValueError(f"glu: the size of dim {dim} must be even, got shape {x.shape}")
    a, b = x.chunk(2, dim)
    return a * b.sigmoid()


def prelu(x, weight):
    """x where x > 0, else weight * x; weight has one element or one per channel (dim 1 of x)."""
    if weight.numel() != 1:
        if x.ndim < 2 or weight.shape != (x.shape[1],):
            raise ValueError(f"prelu: weight of shape {weight.shape} does not match the channels (dim 1) of input "
                             f"of shape {x.shape}")
        weight = weight.reshape((x.shape[1],) + (1,) * (x.ndim - 2))
    return where(x > 0, x, x * weight)


# ---- normalising, distances, padding ----------------------------------------------------------

def normalize(x, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along `dim`."""
    return x / x.norm(p, dim, keepdim=True).clamp(min=eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) over the trailing `normalized_shape` dims (biased variance), then
    * weight + bias, as nn.LayerNorm."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end in normalized_shape {shape}")
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    centered = x - x.mean(axes, keepdims=True)
    out = centered / ((centered * centered).mean(axes, keepdims=True) + eps).sqrt()
    out = out if weight is None else out * weight
    return out if bias is None else out + bias


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 * x2) / (max(||x1||, eps) max(||x2||, eps)) along `dim` of the broadcast inputs, as PyTorch's."""
    x1, x2 = broadcast_tensors(x1, x2)
    return ((x1 / x1.norm(2, dim, keepdim=True).clamp(min=eps)) * (x2 / x2.norm(2, dim, keepdim=True).clamp(min=eps))
            ).sum(dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p along the last dim, as PyTorch's."""
    return (x1 - x2 + eps).norm(p, -1, keepdim)


def pad(x, pad, mode="constant", value=None):
    """Pad (or, with negative widths in "constant" mode, crop) the trailing axes, as PyTorch's F.pad:
    pad = (left, right) for the last axis, then (left, right) for the one before, and so on.

    mode "constant" fills with `value` (0 by default); "reflect" mirrors without repeating the edge,
    "replicate" repeats the edge, "circular" wraps around. Gradients reach the elements they copy.
    """
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of widths for at most {x.ndim} axes, got {tuple(pad)}")
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    if mode == "constant":
        if any(w < 0 for pair in widths for w in pair):  # negative widths crop
            x = x[tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))]
            widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
        shape = tuple(n + lo + hi for (lo, hi), n in zip(widths, x.shape))
        filled = full(shape, 0 if value is None else value, dtype=x.dtype, device=x.device)
        return ops.SetItem.apply(filled, x, index=tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape)))
    if mode not in ("reflect", "replicate", "circular"):
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}")
    if value is not None:
        raise ValueError(f"pad: a fill value is only for mode 'constant', got value={value} with mode {mode!r}")
    xp = backend.namespace(x.device)
    for axis, (lo, hi) in enumerate(widths):
        n = x.shape[axis]
        if not (lo or hi):
            continue
        if min(lo, hi) < 0 or (mode == "reflect" and max(lo, hi) >= n) or (mode != "reflect" and max(lo, hi) > n) \
                or n == 0:
            raise ValueError(f"pad: widths ({lo}, {hi}) do not fit axis {axis} of size {n} in mode {mode!r}")
        at = xp.arange(-lo, n + hi)
        if mode == "reflect":
            at = (n - 1) - abs((n - 1) - abs(at))
        elif mode == "replicate":
            at = xp.clip(at, 0, n - 1)
        else:
            at = at % n
        x = x.index_select(axis, Tensor._make(at, None, 0))
    return x


# ---- more losses (PyTorch's formulas) ----------------------------------------------------------

def _target(op, input, target):
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ValueError(f"{op}: input shape {input.shape} and target shape {target.shape} differ")
    return target


def l1_loss(input, target, reduction="mean"):
    """|input - target| (its gradient is 0 where they are equal, as PyTorch's)."""
    d = input - _target("l1_loss", input, target)
    return _reduce(d * d.sign(), reduction, "l1_loss")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta, with d = input - target (beta = 0: l1_loss)."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction)
    d = input - _target("smooth_l1_loss", input, target)
    size = d * d.sign()
    return _reduce(where(size < beta, d * d * (0.5 / beta), size - 0.5 * beta), reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), with d = input - target."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = input - _target("huber_loss", input, target)
    size = d * d.sign()
    return _reduce(where(size < delta, d * d * 0.5, (size - 0.5 * delta) * delta), reduction, "huber_loss")


def kl_div(input, target, reduction="mean", log_target=False):
    """KL(target || exp(input)) pointwise: target (log target - input), 0 where target is 0; input holds
    log-probabilities (and target too when log_target). reduction "batchmean" divides the sum by the
    batch size (the mathematically right KL); "mean" by the number of elements, as in PyTorch."""
    target = _target("kl_div", input, target)
    if log_target:
        loss = target.exp() * (target - input)
    else:  # 0 where target is 0, with gradient 0 there (PyTorch's xlogy and its masked rule)
        present = target != 0
        loss = where(present, target * (where(present, target, 1.0).log() - input), 0.0)
    if reduction == "batchmean":
        return loss.sum() * (1 / input.shape[0]) if input.ndim else loss.sum()
    return _reduce(loss, reduction, "kl_div")


def _clamped_log(p):
    """log(p) clamped at -100 (PyTorch's binary_cross_entropy), without taking log(0)."""
    positive = p > 0
    return where(positive, where(positive, p, 1.0).log().clamp(min=-100.0), -100.0)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-w [t log p + (1 - t) log(1 - p)] for probabilities p (logs clamped at -100, as PyTorch's);
    prefer binary_cross_entropy_with_logits on logits."""
    target = _target("binary_cross_entropy", input, target)
    if input.numel() and not bool(((input >= 0) & (input <= 1)).all()):
        raise ValueError("binary_cross_entropy: every element of input must be a probability in [0, 1] "
                         "(for logits use binary_cross_entropy_with_logits)")
    loss = -(target * _clamped_log(input) + (1 - target) * _clamped_log(1 - input))
    weight = _loss_constant("binary_cross_entropy", "weight", weight, input)
    return _reduce(loss if weight is None else loss * weight, reduction, "binary_cross_entropy")


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """max(0, -target (input1 - input2) + margin), target holding 1 or -1."""
    return _reduce((-target * (input1 - input2) + margin).relu(), reduction, "margin_ranking_loss")


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
