"""In-place initialisers with PyTorch's names, formulas, fan and gain rules (torch.nn.init).

Each writes into the tensor's memory off the tape (as under no_grad) and returns the tensor;
the random ones draw from the device's seeded stream (tg.manual_seed) or from `generator`.
"""
import math
import warnings

from ..engine import backend
from ..engine.function import no_grad
from ..tensors import Tensor
from ..tensors.generator import stream


def _fill(tensor, values):
    """Copy `values` (an array of the tensor's device, any float dtype) into `tensor`, in place."""
    with no_grad():
        tensor.copy_(Tensor._make(values, None, 0))
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity: 1 (linear, conv*, sigmoid), 5/3 (tanh), sqrt(2) (relu),
    sqrt(2 / (1 + slope^2)) (leaky_relu, slope = param or 0.01), 3/4 (selu)."""
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d"):
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out): shape[1] and shape[0], each times the product of the remaining sizes."""
    if tensor.ndim < 2:
        raise ValueError(f"init: fan in and fan out can not be computed for a tensor with fewer than 2 dimensions "
                         f"(shape {tensor.shape})")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    rng = stream(generator, tensor.device, "uniform_")
    return _fill(tensor, rng.random(tensor.shape, dtype=backend.float64) * (b - a) + a)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    rng = stream(generator, tensor.device, "normal_")
    return _fill(tensor, rng.standard_normal(tensor.shape, dtype=backend.float64) * std + mean)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill with N(mean, std^2) restricted to [a, b], by redrawing the values that fall outside."""
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The distribution of values "
                      "may be incorrect.", stacklevel=2)
    mass = (math.erf((b - mean) / (std * math.sqrt(2))) - math.erf((a - mean) / (std * math.sqrt(2)))) / 2
    if not mass >= 1e-8:
        raise ValueError(f"trunc_normal_: [a, b] = [{a}, {b}] holds only {mass:.3g} of N({mean}, {std}^2); "
                         "choose an interval nearer the mean")
    rng, xp = stream(generator, tensor.device, "trunc_normal_"), backend.namespace(tensor.device)
    n, kept, found = math.prod(tensor.shape), [], 0
    while found < n:
        draw = rng.standard_normal(int((n - found) / mass * 1.1) + 16, dtype=backend.float64) * std + mean
        draw = draw[(draw >= a) & (draw <= b)]
        kept.append(draw)
        found += int(draw.size)
    return _fill(tensor, xp.concatenate(kept)[:n].reshape(tensor.shape))


def constant_(tensor, val):
    """Fill with `val`."""
    return _fill(tensor, backend.namespace(tensor.device).full(tensor.shape, val, dtype=tensor.dtype))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def eye_(tensor):
    """Fill a 2-D tensor with the identity matrix (ones on the diagonal, zeros elsewhere)."""
    if tensor.ndim != 2:
        raise ValueError(f"eye_: only tensors with 2 dimensions are supported, got shape {tensor.shape}")
    return _fill(tensor, backend.namespace(tensor.device).eye(*tensor.shape, dtype=tensor.dtype))


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): U(-b, b) with b = gain * sqrt(3 / fan), fan_in or fan_out per `mode`."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): N(0, std^2) with std = gain / sqrt(fan), fan_in or fan_out per `mode`."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix (over the trailing dims flattened) from the QR decomposition of a
    Gaussian, signs fixed by R's diagonal (Saxe et al. 2013), times `gain`."""
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, got shape {tensor.shape}")
    if 0 in tensor.shape:
        return tensor
    rows = tensor.shape[0]
    cols = math.prod(tensor.shape) // rows
    xp = backend.namespace(tensor.device)
    flat = stream(generator, tensor.device, "orthogonal_").standard_normal((max(rows, cols), min(rows, cols)),
                                                                           dtype=backend.float64)
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diagonal(r))
    q = q if rows >= cols else q.T
    return _fill(tensor, (q * gain).reshape(tensor.shape))


@no_grad()
def recurrent_uniform_(module, hidden_size):
    """PyTorch's default for recurrent cells and layers: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        uniform_(p, -bound, bound)
