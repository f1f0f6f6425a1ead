"""Gradient clipping and sequence padding, as in torch.nn.utils.

clip_grad_norm_ / clip_grad_value_ rescale the `.grad` of parameters in place (each leaf
owns its gradient buffer, so this touches nobody else's array). pad_sequence is built
from Tensor ops (cat with a constant block, then one stack), so it is differentiable.
"""
from .. import backend
from .._tensor import Tensor, cat, full, stack

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
            grads.append(p.grad.data)
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


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Pad tensors of shapes (L_i, *) to the longest L and stack them.

    Returns (T, B, *), or (B, T, *) with batch_first, T = max L_i. padding_side="right"
    puts the padding after each sequence, "left" before it. Gradients flow back to every
    sequence; padded positions are constants.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"pad_sequence: padding_side must be 'right' or 'left', got {padding_side!r}")
    if isinstance(sequences, Tensor):
        raise TypeError("pad_sequence: expected a list of Tensors, got a single Tensor")
    sequences = list(sequences)
    if not sequences:
        raise ValueError("pad_sequence: expected a non-empty list of sequences")
    first = sequences[0]
    for k, s in enumerate(sequences):
        if not isinstance(s, Tensor):
            raise TypeError(f"pad_sequence: sequence {k} is a {type(s).__name__}, expected a Tensor")
        if s.ndim == 0:
            raise ValueError(f"pad_sequence: sequence {k} is 0-d; sequences must have shape (L, *)")
        if s.shape[1:] != first.shape[1:]:
            raise ValueError(f"pad_sequence: sequences must share their trailing shape, sequence 0 has "
                             f"shape {first.shape} and sequence {k} has {s.shape}")
        if s.dtype != first.dtype:
            raise TypeError(f"pad_sequence: sequences must share one dtype, sequence 0 is {first.dtype} "
                            f"and sequence {k} is {s.dtype}")
        if s.device != first.device:
            raise ValueError(f"pad_sequence: sequences must be on one device, sequence 0 is on "
                             f"{first.device} and sequence {k} on {s.device}")
    longest = max(s.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        if s.shape[0] < longest:
            pad = full((longest - s.shape[0],) + s.shape[1:], padding_value, dtype=s.dtype, device=s.device)
            s = cat([s, pad] if padding_side == "right" else [pad, s], axis=0)
        padded.append(s)
    return stack(padded, axis=0 if batch_first else 1)
