"""Gradient clipping, as in torch.nn.utils, and sequence padding (nn.utils.rnn, re-exported here).

clip_grad_norm_ / clip_grad_value_ rescale the `.grad` of parameters in place (each leaf
owns its gradient buffer, so this touches nobody else's array).
"""
from ...engine import backend
from ...tensors import Tensor
from .rnn import pad_sequence

__all__ = ["clip_grad_norm_", "clip_grad_value_", "pad_sequence"]


def _grads(op, parameters):
    """The gradient arrays of `parameters` (a Tensor or an iterable of them), skipping None."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for p in parameters:
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: expected Tensors (e.g. model.parameters()), got {type(p).__name__}")
        if p.grad is not None:
            grads.append(p.grad.array)
    return grads


def _vector_norm(xp, a, norm_type):
    """The norm of all elements of `a`, in a's dtype (0 for an empty array)."""
    if a.size == 0:
        return xp.zeros((), dtype=a.dtype)
    if norm_type == float("inf"):
        return xp.max(xp.abs(a))
    if norm_type == 2.0:
        return xp.sqrt(xp.sum(a * a))
    if norm_type == 1.0:
        return xp.sum(xp.abs(a))
    return xp.sum(xp.abs(a) ** norm_type) ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most `max_norm`.

    The total norm is the `norm_type` norm (float('inf') for the max-abs norm) of the
    vector of every gradient's norm, as in PyTorch. Gradients are multiplied in place by
    min(max_norm / (total_norm + 1e-6), 1). Returns the total norm before clipping as a
    0-d Tensor on the first gradient's device. Parameters whose grad is None are skipped.
    """
    grads = _grads("clip_grad_norm_", parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive or float('inf'), got {norm_type}")
    if not grads:
        return Tensor(0.0)
    device = backend.device_of(grads[0])
    xp = backend.array_namespace(grads[0])
    norms = [backend.to_device(_vector_norm(backend.array_namespace(g), g, norm_type), device) for g in grads]
    total = _vector_norm(xp, xp.stack(norms), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"non-finite ({float(total)}), so it cannot be clipped; pass "
                           "error_if_nonfinite=False to scale the gradients by it anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    if not bool(coef == 1.0):  # multiplying by 1 changes nothing
        for g in grads:
            g *= coef if backend.device_of(g) == device else backend.to_device(coef, backend.device_of(g))
    return Tensor(backend.as_array(total, device))


def clip_grad_value_(parameters, clip_value):
    """Clip every gradient element to [-clip_value, clip_value] in place (None grads are skipped)."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for g in _grads("clip_grad_value_", parameters):
        backend.array_namespace(g).clip(g, -clip_value, clip_value, out=g)
