"""Datasets, samplers and the DataLoader, shaped like torch.utils.data (also importable as
`tinygrad_seq.utils.data`), plus what recurrent nets need on top: a collate that pads
variable-length sequences and returns their lengths, and a batch sampler that puts
sequences of similar length together so that little of each batch is padding.

    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, seed=0)
    for epoch in range(10):
        for xb, yb in loader:          # Tensors; each example once per epoch, a new order each epoch
            ...

    batches = BucketBatchSampler(lengths, batch_size=32, seed=0)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=PadCollate(batch_first=True))
    for padded, lengths, labels in loader:
        output, h = lstm(padded, lengths=lengths)

Everything runs in the calling process (`num_workers` is accepted for ported code and
ignored). Shuffling is deterministic: with `seed=` the order of epoch e depends only on
(seed, e); without it each epoch draws a seed from the library's CPU random stream, as
PyTorch's samplers draw from torch's, so `tg.manual_seed` fixes every epoch's order and
`tg.get_rng_state()` captures where it is; with `generator=` (a tg.Generator, as in PyTorch) the
epochs draw one after another from that generator. A sampler is any iterable of indices with a
`__len__`; a batch sampler any iterable of lists of indices with a `__len__`; both may
have `set_epoch(epoch)`, which DataLoader.set_epoch forwards (a distributed sampler fits here).
"""
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence

from .engine import backend
from .tensors import Tensor, randperm, stack
from .tensors.generator import stream

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "Sampler", "SequentialSampler", "RandomSampler",
           "BatchSampler", "BucketBatchSampler", "DataLoader", "default_collate", "PadCollate"]


class Dataset:
    """A map-style dataset: `__getitem__(index)` for 0 <= index < `__len__()`."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Examples are rows: item i is (t[i] for t in tensors), of arrays or Tensors of one first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one array or Tensor")
        sizes = []
        for k, t in enumerate(tensors):
            if not (isinstance(t, Tensor) or backend.is_array(t)) or t.ndim == 0:
                raise TypeError(f"TensorDataset: argument {k} must be an array or Tensor with a first dimension, "
                                f"got {type(t).__name__}")
            sizes.append(t.shape[0])
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: every argument needs the same first dimension, got sizes {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(Tensor(t.array[index], device=t.device) if isinstance(t, Tensor) else t[index]
                     for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The examples of `dataset` at `indices`, in that order: Subset(d, [3, 1])[0] is d[3]."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __getitem__(self, index):
        if isinstance(index, list):
            return [self.dataset[self.indices[i]] for i in index]
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, generator=None):
    """Split `dataset` into Subsets of the given lengths, in a random order, as PyTorch does.

    lengths: integers summing to len(dataset), or fractions summing to 1 (each split gets
    floor(fraction * len), and the remainder is handed out one by one from the first split on).
    generator: a tg.Generator (default: the global CPU stream that tg.manual_seed seeds).
    """
    lengths = list(lengths)
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1: {fraction}")
        lengths = [int(math.floor(n * fraction)) for fraction in lengths]
        for i in range(n - sum(lengths)):
            lengths[i % len(lengths)] += 1
        for i, length in enumerate(lengths):
            if length == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.",
                              stacklevel=2)
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in lengths):
        raise ValueError(f"random_split: lengths must be non-negative integers or fractions summing to 1, "
                         f"got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: the lengths {lengths} sum to {sum(lengths)}, not to the length of the "
                         f"dataset ({n})")
    indices = randperm(n, generator=generator).tolist()
    return [Subset(dataset, indices[end - length:end]) for end, length in zip(itertools.accumulate(lengths), lengths)]


# ---- samplers ---------------------------------------------------------------------------------

class Sampler:
    """An iterable of dataset indices with a length (subclasses give __iter__ and __len__)."""

    def __iter__(self):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class _Shuffling:
    """The per-epoch random generator of a shuffling sampler (see the module docstring)."""

    def __init__(self, seed, generator=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"{type(self).__name__}: seed must be an integer or None, got {seed!r}")
        if seed is not None and generator is not None:
            raise ValueError(f"{type(self).__name__}: pass seed or generator, not both")
        if generator is not None:
            stream(generator, backend.CPU, type(self).__name__)  # a CPU tg.Generator, checked now
        self.seed, self.generator, self.epoch = seed, generator, 0

    def set_epoch(self, epoch):
        """Use epoch `epoch`'s order next (to resume, or to agree across processes)."""
        self.epoch = int(epoch)

    def _next_generator(self):
        if self.generator is not None:
            return stream(self.generator, backend.CPU, type(self).__name__)
        if self.seed is None:
            seed = int(backend.rng("cpu").integers(0, 2**63))
        else:
            seed = [self.seed, self.epoch]
        self.epoch += 1
        return backend.host_rng(seed)


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.n = len(data_source)

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class RandomSampler(_Shuffling, Sampler):
    """Every index once per epoch, in a new random order each epoch; with replacement=True,
    `num_samples` indices drawn independently (num_samples defaults to the dataset's length)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None, seed=None):
        super().__init__(seed, generator)
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement must be a bool, got {replacement!r}")
        self.n, self.replacement = len(data_source), replacement
        self.num_samples = self.n if num_samples is None else num_samples
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"RandomSampler: num_samples must be a positive integer, got {self.num_samples!r}")

    def __iter__(self):
        gen = self._next_generator()
        if self.replacement:
            return iter(gen.integers(0, self.n, self.num_samples).tolist())
        rounds, rest = divmod(self.num_samples, self.n)
        return itertools.chain(*(gen.permutation(self.n).tolist() for _ in range(rounds)),
                               gen.permutation(self.n).tolist()[:rest])

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size` (the last one shorter unless drop_last)."""

    def __init__(self, sampler, batch_size, drop_last=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"BatchSampler: batch_size must be a positive integer, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch):
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class BucketBatchSampler(_Shuffling, Sampler):
    """Batches of sequences of similar length, so that padding is small.

    Each epoch: shuffle all indices, cut them into pools of `batch_size * pool_batches`,
    sort each pool by length (ties stay in shuffled order), cut it into batches, and shuffle
    the order of all batches. Every index appears once per epoch; batches differ from epoch to
    epoch; the order is fixed by the seed (see the module docstring). Only the last pool's last
    batch can be short (dropped with drop_last). shuffle=False gives fixed batches sorted by length.

    lengths: one length per example (a list, array or Tensor of integers).
    """

    def __init__(self, lengths, batch_size, pool_batches=50, shuffle=True, drop_last=False, seed=None,
                 generator=None):
        super().__init__(seed, generator)
        if isinstance(lengths, Tensor):
            lengths = lengths.tolist()
        elif backend.is_array(lengths):
            lengths = backend.to_host(lengths).tolist()
        self.lengths = [int(n) for n in lengths]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"BucketBatchSampler: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(pool_batches, bool) or not isinstance(pool_batches, int) or pool_batches < 1:
            raise ValueError(f"BucketBatchSampler: pool_batches must be a positive integer, got {pool_batches!r}")
        self.batch_size, self.pool_batches = batch_size, pool_batches
        self.shuffle, self.drop_last = shuffle, drop_last

    def __iter__(self):
        n = len(self.lengths)
        gen = self._next_generator() if self.shuffle else None
        order = gen.permutation(n).tolist() if gen is not None else list(range(n))
        pool = self.batch_size * self.pool_batches if gen is not None else max(n, 1)
        batches = []
        for start in range(0, n, pool):
            members = sorted(order[start:start + pool], key=self.lengths.__getitem__)
            batches += [members[k:k + self.batch_size] for k in range(0, len(members), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if gen is not None:
            batches = [batches[k] for k in gen.permutation(len(batches)).tolist()]
        return iter(batches)

    def __len__(self):
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


# ---- collate ----------------------------------------------------------------------------------

def default_collate(batch):
    """Stack a list of examples into a batch, as torch.utils.data.default_collate does.

    Arrays and Tensors of one shape -> one Tensor with a new first axis; Python ints -> an
    int64 Tensor, floats -> float64, bools -> bool (NumPy's types, as PyTorch's); strings
    -> a list; tuples, lists and dicts -> the same container of collated fields.
    """
    if not isinstance(batch, Sequence) or not batch:
        raise ValueError("default_collate: expected a non-empty list of examples")
    first = batch[0]
    if isinstance(first, Tensor) or backend.is_array(first):
        shapes = {tuple(x.shape) for x in batch}
        if len(shapes) > 1:
            raise ValueError(f"default_collate: cannot stack examples of different shapes {sorted(shapes)[:4]}; "
                             "for variable-length sequences use collate_fn=PadCollate()")
        if isinstance(first, Tensor):
            return stack(batch, axis=0)
        arrays = [backend.to_device(x, backend.device_of(first)) for x in batch]
        return Tensor(backend.array_namespace(first).stack(arrays), device=backend.device_of(first))
    if isinstance(first, str):
        return list(batch)
    if isinstance(first, (bool, int, float)) or getattr(first, "shape", None) == ():  # numbers, NumPy scalars
        host = backend.to_host(list(batch))
        return Tensor(host, dtype=host.dtype)
    if isinstance(first, Mapping):
        return {key: default_collate([example[key] for example in batch]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(example) != len(first) for example in batch):
            raise ValueError("default_collate: every example must have the same number of fields")
        fields = [default_collate(list(samples)) for samples in zip(*batch)]
        if isinstance(first, tuple) and hasattr(first, "_fields"):  # a namedtuple
            return type(first)(*fields)
        return tuple(fields) if isinstance(first, tuple) else fields
    raise TypeError(f"default_collate: cannot batch examples of type {type(first).__name__}; "
                    "pass a collate_fn")


class PadCollate:
    """collate_fn for variable-length sequences: pads them like nn.utils.pad_sequence and
    returns their lengths.

    An example is a sequence of shape (L, *) (an array, Tensor or list), or a tuple whose
    fields listed in `pad_fields` (default: the first) are such sequences. Each padded field
    becomes two entries, the padded batch ((T, B, *), or (B, T, *) with batch_first) and an
    int64 Tensor of the B lengths, in the field's place; the other fields go through
    default_collate. So (tokens, label) examples give (padded, lengths, labels), ready for
    `lstm(padded, lengths=lengths)`.
    """

    def __init__(self, batch_first=False, padding_value=0, padding_side="right", pad_fields=(0,)):
        if padding_side not in ("right", "left"):
            raise ValueError(f"PadCollate: padding_side must be 'right' or 'left', got {padding_side!r}")
        self.batch_first, self.padding_value, self.padding_side = batch_first, padding_value, padding_side
        self.pad_fields = tuple(pad_fields)

    def __call__(self, batch):
        if not isinstance(batch, Sequence) or not batch:
            raise ValueError("PadCollate: expected a non-empty list of examples")
        if not isinstance(batch[0], tuple):
            return self.pad([example for example in batch])
        out = []
        for k, field in enumerate(zip(*batch)):
            out += self.pad(list(field)) if k in self.pad_fields else (default_collate(list(field)),)
        return tuple(out)

    def pad(self, sequences):
        """(padded, lengths) for a list of sequences of shapes (L_i, *)."""
        arrays = [s.array if isinstance(s, Tensor) else s if backend.is_array(s) else backend.to_host(s)
                  for s in sequences]
        first = arrays[0]
        device = backend.device_of(first)
        for k, a in enumerate(arrays):
            if a.ndim == 0 or a.shape[1:] != first.shape[1:]:
                raise ValueError(f"PadCollate: sequences must have shape (L, *) with one trailing shape; "
                                 f"sequence 0 has shape {first.shape} and sequence {k} has {a.shape}")
            if backend.device_of(a) != device:
                raise ValueError(f"PadCollate: sequences must be on one device, sequence 0 is on {device} "
                                 f"and sequence {k} on {backend.device_of(a)}")
        lengths = [a.shape[0] for a in arrays]
        T, B = max(lengths), len(arrays)
        xp = backend.array_namespace(first)
        dtype = first.dtype
        padded = xp.full((B, T) + first.shape[1:], self.padding_value, dtype=dtype)
        for b, a in enumerate(arrays):
            if self.padding_side == "right":
                padded[b, :lengths[b]] = a
            else:
                padded[b, T - lengths[b]:] = a
        if not self.batch_first:
            padded = xp.ascontiguousarray(xp.swapaxes(padded, 0, 1))
        return Tensor(padded, device=device), Tensor(backend.to_host(lengths), dtype=backend.int64)


# ---- the loader -------------------------------------------------------------------------------

class DataLoader:
    """Batches of a dataset, like torch.utils.data.DataLoader (single process).

    batch_size / shuffle / drop_last build a BatchSampler over a RandomSampler(seed=seed or
    generator=generator) or a
    SequentialSampler; `sampler` replaces the index order and `batch_sampler` the whole
    batching (then batch_size, shuffle, sampler and drop_last must be left at their defaults).
    batch_size=None yields single examples. collate_fn turns a list of examples into a batch
    (default_collate). Iterating starts a new epoch; set_epoch(e) picks epoch e's order.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, seed=None, generator=None):
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, "
                                 "sampler and drop_last")
            batch_size = None
        elif batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                         or batch_size < 1):
            raise ValueError(f"DataLoader: batch_size must be a positive integer or None, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler is mutually exclusive with shuffle (the sampler sets the order)")
        if (seed is not None or generator is not None) and not shuffle:
            raise ValueError("DataLoader: seed only applies with shuffle=True, and so does generator (a sampler "
                             "takes its own)")
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"DataLoader: expected a dataset with __getitem__ and __len__, got {type(dataset).__name__}")
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator, seed=seed) if shuffle else SequentialSampler(dataset)
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler, self.num_workers = sampler, batch_sampler, num_workers
        self.collate_fn = collate_fn if collate_fn is not None else (
            default_collate if batch_sampler is not None else (lambda example: example))

    def __iter__(self):
        if self.batch_sampler is None:
            for index in self.sampler:
                yield self.collate_fn(self.dataset[index])
            return
        for indices in self.batch_sampler:
            yield self.collate_fn([self.dataset[i] for i in indices])

    def __len__(self):
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def set_epoch(self, epoch):
        """Make the next pass use epoch `epoch`'s order (forwarded to the sampler or batch sampler)."""
        target = self.batch_sampler if hasattr(self.batch_sampler, "set_epoch") else self.sampler
        if not hasattr(target, "set_epoch"):
            raise TypeError(f"DataLoader.set_epoch: neither {type(self.batch_sampler).__name__} nor "
                            f"{type(self.sampler).__name__} has set_epoch")
        target.set_epoch(epoch)
