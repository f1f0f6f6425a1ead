"""In-place initialisers for parameters (PyTorch's names and formulas)."""
import math

from ..engine import backend
from ..engine.function import no_grad


def _fill(tensor, values):
    tensor.data = values.astype(tensor.dtype, copy=False).reshape(tensor.shape)
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with U(a, b) from the device's seeded stream."""
    return _fill(tensor, backend.rng(tensor.device).random(tensor.shape, dtype=backend.float64) * (b - a) + a)


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with N(mean, std^2) from the device's seeded stream."""
    return _fill(tensor, backend.rng(tensor.device).standard_normal(tensor.shape, dtype=backend.float64) * std + mean)


def constant_(tensor, value):
    return _fill(tensor, backend.namespace(tensor.device).full(tensor.shape, value, dtype=tensor.dtype))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def _fans(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"init: fan in/out need at least 2 dimensions, got shape {tensor.shape}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0.0, nonlinearity="leaky_relu"):
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity in ("leaky_relu", "relu") else 1.0
    bound = gain * math.sqrt(3.0 / _fans(tensor)[0])
    return uniform_(tensor, -bound, bound)


def orthogonal_(tensor, gain=1.0):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian (Saxe et al.)."""
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    xp = backend.namespace(tensor.device)
    flat = backend.rng(tensor.device).standard_normal((max(rows, cols), min(rows, cols)), dtype=backend.float64)
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diagonal(r))
    q = q if rows >= cols else q.T
    return _fill(tensor, q * gain)


@no_grad()
def recurrent_uniform_(module, hidden_size):
    """PyTorch's default for recurrent cells and layers: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        uniform_(p, -bound, bound)
