"""Channel-wise dropout (PyTorch's Dropout1d and Dropout2d): each channel of each example is kept
whole or zeroed whole, with PyTorch's shape rules."""
import warnings

from ..engine import backend
from ..tensors import Tensor
from .module import Module


def _feature_dropout(x, p, training, lead=2):
    """Zero each slice x[i, j] (the first `lead` axes: example and channel, or channel alone for an
    unbatched input) with probability p; scale the rest by 1/(1-p)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = backend.rng(x.device).random(x.shape[:lead] + (1,) * (x.ndim - lead), dtype=x.dtype) >= p
    return x * Tensor._make(keep.astype(x.dtype) * x.dtype.type(1 / (1 - p)), None, 0)


def dropout1d(input, p=0.5, training=True):
    """Channel-wise dropout of (N, C, L) or unbatched (C, L) input."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: expected 2D or 3D input, but received a {input.ndim}D input of shape "
                           f"{input.shape}: dropout1d zeroes whole channels of (N, C, L) or (C, L) inputs")
    return _feature_dropout(input, p, training, lead=input.ndim - 1)


def dropout2d(input, p=0.5, training=True):
    """Channel-wise dropout of (N, C, H, W) input; like PyTorch, a 3-D input is taken as (N, C, L), with a warning."""
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is deprecated and will "
                      "result in an error in a future release. To retain the behavior and silence this warning, "
                      "please use dropout instead.", stacklevel=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel dim. "
                      "To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
                      stacklevel=2)
    return _feature_dropout(input, p, training)


class _DropoutNd(Module):
    function = None

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return self.function(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout1d(_DropoutNd):
    """In training, zero whole channels of (N, C, L) or (C, L) input with probability p (scaled by 1/(1-p))."""
    function = staticmethod(dropout1d)


class Dropout2d(_DropoutNd):
    """In training, zero whole channels of (N, C, H, W) input with probability p (scaled by 1/(1-p))."""
    function = staticmethod(dropout2d)
