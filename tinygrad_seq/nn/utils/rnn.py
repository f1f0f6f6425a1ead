"""Padded and packed sequences, as in torch.nn.utils.rnn.

A PackedSequence holds a batch of variable-length sequences without their padding, time-major:
`data` (N, *) has step 0 of every sequence, then step 1 of every sequence that is still running,
and so on (N = the sum of the lengths), each step's rows in order of decreasing length;
`batch_sizes` (an int64 CPU tensor) says how many sequences run at each step; `sorted_indices`
is the batch order the sequences were sorted into (None when they came sorted) and
`unsorted_indices` its inverse.

Everything here is a gather on the tape: packing reads a padded tensor at the valid (time, batch)
positions (one getitem, whose backward is a scatter), padding reads the packed rows plus one
padding row, so gradients flow through every function. Recurrent layers run a PackedSequence
through their `lengths=` path: padded in the original batch order, run, packed back.
"""
from collections import namedtuple

from ...engine import backend
from ...tensors import Tensor, cat, full, stack
from ...tensors.methods import ToShorthands

__all__ = ["PackedSequence", "invert_permutation", "pack_padded_sequence", "pad_packed_sequence", "pad_sequence",
           "unpad_sequence", "pack_sequence", "unpack_sequence"]


class PackedSequence(ToShorthands, namedtuple("PackedSequence", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """(data, batch_sizes, sorted_indices, unsorted_indices), made by pack_padded_sequence or pack_sequence.

    unsorted_indices defaults to the inverse of sorted_indices. Conversions (`to`, `float`, `double`, ...)
    apply to `data`; the indices follow data's device and batch_sizes stays on the CPU, as in PyTorch.
    """
    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:  # PackedSequence((data, batch_sizes)), PyTorch's older form
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise TypeError("PackedSequence: give data and batch_sizes (or one (data, batch_sizes) pair)")
            data, batch_sizes = data
        if not isinstance(data, Tensor) or not isinstance(batch_sizes, Tensor):
            raise TypeError(f"PackedSequence: data and batch_sizes must be Tensors, got {type(data).__name__} "
                            f"and {type(batch_sizes).__name__}")
        if batch_sizes.device != "cpu":
            raise ValueError("batch_sizes should always be on CPU. Instances of PackedSequence should never be "
                             "created manually. They should be instantiated by functions like pack_sequence and "
                             "pack_padded_sequence in nn.utils.rnn.")
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """data.to(*args, **kwargs), the indices moved along to data's device; self if data is unchanged."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        move = (lambda t: None if t is None else t.to(data.device))
        return type(self)(data, self.batch_sizes, move(self.sorted_indices), move(self.unsorted_indices))

    def long(self):
        return self.to(dtype=backend.int64)

    def int(self):
        return self.to(dtype=backend.int32)

    @property
    def is_cuda(self):
        return self.data.device.startswith("cuda")


def invert_permutation(permutation):
    """The inverse of a permutation tensor (None for None): out[permutation[i]] = i."""
    if permutation is None:
        return None
    p = permutation.array
    out = backend.array_namespace(p).empty_like(p)
    out[p] = backend.namespace(permutation.device).arange(p.shape[0], dtype=p.dtype)
    return Tensor(out)


def _host_lengths(op, lengths):
    """Lengths (a list, an array or a Tensor of integers) as a host int64 array."""
    values = backend.to_host(lengths.array if isinstance(lengths, Tensor) else backend.as_array(lengths))
    if values.ndim != 1:
        raise ValueError(f"{op}: 'lengths' must be one length per sequence (1-D), got shape {values.shape}")
    if values.dtype.kind not in "iuf" or values.dtype.kind == "f" and bool((values != values.round()).any()):
        raise TypeError(f"{op}: 'lengths' must hold integers, got {values.dtype} values {values.tolist()}")
    return values.astype(backend.int64)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) ((B, T, *) with batch_first) of sequences of the given lengths.

    With enforce_sorted the lengths must be in decreasing order; otherwise the batch is sorted here
    (stably: ties keep their order) and sorted_indices records how. Differentiable in `input`.
    """
    op = "pack_padded_sequence"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"{op}: input must have a time and a batch axis, got shape {input.shape}")
    if isinstance(lengths, Tensor) and (lengths.device != "cpu" or lengths.ndim != 1):
        raise ValueError(f"{op}: 'lengths' argument should be a 1D CPU int64 tensor, but got {lengths.ndim}D "
                         f"{lengths.device} {lengths.dtype} tensor")
    lengths = _host_lengths(op, lengths)
    T, B = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    if input.numel() == 0:
        raise ValueError(f"{op}: Cannot pack empty tensors (input of shape {input.shape}).")
    if lengths.shape[0] != B:
        raise ValueError(f"{op}: Expected `len(lengths)` to be equal to batch_size, but got {lengths.shape[0]} "
                         f"(batch_size={B})")
    if int(lengths.min()) <= 0:
        raise ValueError(f"{op}: Length of all samples has to be greater than 0, but found an element in 'lengths' "
                         f"that is <= 0 (lengths {lengths.tolist()})")
    if int(lengths.max()) > T:
        raise ValueError(f"{op}: lengths {lengths.tolist()} run past the input's {T} time steps")
    xp = backend.namespace("cpu")
    if enforce_sorted:
        if bool((lengths[1:] > lengths[:-1]).any()):
            raise ValueError(f"{op}: `lengths` array must be sorted in decreasing order when `enforce_sorted` is "
                             "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
                             "pack_sequence to sidestep this requirement if you do not need ONNX exportability. "
                             f"(lengths {lengths.tolist()})")
        order = sorted_indices = None
    else:
        order = xp.argsort(-lengths, kind="stable")
        sorted_indices = Tensor(order, device=input.device)
        lengths = lengths[order]
    batch_sizes = (lengths[None, :] > xp.arange(int(lengths[0]))[:, None]).sum(axis=1)
    t, b = _rows(batch_sizes, order)
    return PackedSequence(_gather(input, t, b, batch_first), Tensor(batch_sizes), sorted_indices)


def _rows(batch_sizes, order):
    """For each packed row, its time step and its batch column in the original order (host int64 arrays)."""
    xp = backend.namespace("cpu")
    t = xp.repeat(xp.arange(batch_sizes.shape[0]), batch_sizes)
    rank = xp.arange(t.shape[0]) - xp.repeat(xp.cumsum(batch_sizes) - batch_sizes, batch_sizes)
    return t, (rank if order is None else order[rank])


def _gather(padded, t, b, batch_first):
    """The rows padded[t, b] (padded[b, t] with batch_first) of a (T, B, *) tensor, as one gather."""
    T, B = (padded.shape[1], padded.shape[0]) if batch_first else padded.shape[:2]
    flat = padded.reshape((T * B,) + padded.shape[2:])
    return flat[b * T + t if batch_first else t * B + b]


def _padded(sequence, op, total_length=None, batch_first=False, padding_value=0.0):
    """(padded tensor, lengths as a host array, (time step, batch column) of each packed row as host arrays)
    of a PackedSequence, in the original batch order."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{op}: expected a PackedSequence, got {type(sequence).__name__}")
    batch_sizes = backend.to_host(sequence.batch_sizes.array)
    if batch_sizes.ndim != 1 or batch_sizes.dtype.kind not in "iu" or not batch_sizes.shape[0] or \
            int(batch_sizes.min()) < 1 or bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
        raise ValueError(f"{op}: batch_sizes must be positive, non-increasing integers, got {batch_sizes.tolist()}")
    data = sequence.data
    if int(batch_sizes.sum()) != data.shape[0]:
        raise ValueError(f"{op}: batch_sizes {batch_sizes.tolist()} add up to {int(batch_sizes.sum())} rows but "
                         f"data has {data.shape[0]}")
    T = batch_sizes.shape[0]
    if total_length is not None:
        if total_length < T:
            raise ValueError(f"{op}: Expected total_length to be at least the length of the longest sequence in "
                             f"input, but got total_length={total_length} and max sequence length being {T}")
        T = total_length
    order = None if sequence.sorted_indices is None else backend.to_host(sequence.sorted_indices.array)
    t, b = _rows(batch_sizes.astype(backend.int64), order)
    B, N, xp = int(batch_sizes[0]), t.shape[0], backend.namespace("cpu")
    index = xp.full((B, T) if batch_first else (T, B), N)  # N: the padding row, where no packed row goes
    index[(b, t) if batch_first else (t, b)] = xp.arange(N)
    padding = full((1,) + data.shape[1:], padding_value, dtype=data.dtype, device=data.device)
    return cat([data, padding])[index], xp.bincount(b, minlength=B), (t, b)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """(padded (T, B, *) or (B, T, *), lengths (B,) int64): the inverse of pack_padded_sequence, in the batch
    order the sequences were packed from. T is the longest length, or total_length when given.
    Differentiable in sequence.data."""
    padded, lengths, _ = _padded(sequence, "pad_packed_sequence", total_length, batch_first, padding_value)
    return padded, Tensor(lengths)


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


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences padded[:lengths[b], b] (padded[b, :lengths[b]] with batch_first): pad_sequence undone."""
    lengths = _host_lengths("unpad_sequence", lengths).tolist()
    B = padded_sequences.shape[0 if batch_first else 1]
    if len(lengths) != B:
        raise ValueError(f"unpad_sequence: {len(lengths)} lengths for a batch of {B} sequences")
    return [padded_sequences[b, :n] if batch_first else padded_sequences[:n, b] for b, n in enumerate(lengths)]


def pack_sequence(sequences, enforce_sorted=True):
    """pack_padded_sequence(pad_sequence(sequences), their lengths, enforce_sorted=enforce_sorted)."""
    sequences = list(sequences)
    return pack_padded_sequence(pad_sequence(sequences), [s.shape[0] for s in sequences],
                                enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """The list of sequences a PackedSequence holds, in their original order: pack_sequence undone."""
    padded, lengths, _ = _padded(packed_sequences, "unpack_sequence", batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


def packed_as_padded(sequence, op):
    """A PackedSequence as the recurrent runner takes it: (padded (T, B, *) in the original batch order, the
    lengths as a host list, repack) where repack(output (T, B, *)) packs an output like `sequence`."""
    padded, lengths, (t, b) = _padded(sequence, op)

    def repack(output):
        return PackedSequence(_gather(output, t, b, False), sequence.batch_sizes, sequence.sorted_indices,
                              sequence.unsorted_indices)
    return padded, lengths.tolist(), repack
