"""Sequence padding, as in torch.nn.utils.rnn.

pad_sequence is built from Tensor ops (cat with a constant block, then one stack), so it
is differentiable. Packed sequences are not a type here: recurrent layers take `lengths=`.
"""
from ...tensors import Tensor, cat, full, stack

__all__ = ["pad_sequence"]


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
