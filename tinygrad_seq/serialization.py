"""save / load of state dicts as .npz files (NumPy's zip of .npy arrays), never pickle.

    tinygrad_seq.save(model.state_dict(), "model.npz")
    model.load_state_dict(tinygrad_seq.load("model.npz"))

A state dict here is flat: {str: array}, as Module.state_dict() returns. The file is written
exactly at `path` (no ".npz" is appended) and is readable by NumPy's `load`. Loading reads
each member's header with NumPy's literal-only parser and refuses object dtypes before any
data is read, so a hostile file can raise an error but cannot run code.
Optimizer state dicts are nested (integer keys, lists of groups) and are not saved by this
module; keep them in memory or in a format of your choice.
"""
import os
from collections.abc import Mapping

from . import backend
from ._tensor import Tensor

__all__ = ["save", "load"]


def save(state_dict, path):
    """Write a flat {name: array or Tensor} mapping to `path` as an .npz file.

    Values may be NumPy or CuPy arrays, Tensors (their data; no gradient or graph is saved)
    or Python/NumPy scalars (stored as 0-d arrays). dtype, shape and every bit are kept.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save: expected a mapping of names to arrays (e.g. model.state_dict()), "
                        f"got {type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"save: keys must be non-empty strings, got {key!r}")
        if isinstance(value, Tensor):
            value = value.data
        elif not (isinstance(value, (bool, int, float)) or (hasattr(value, "dtype") and hasattr(value, "shape"))):
            raise TypeError(f"save: value for key {key!r} is a {type(value).__name__}; expected an array, "
                            "a Tensor or a number (save takes a flat mapping such as Module.state_dict(); "
                            "nested dicts such as optimizer state dicts are not supported)")
        arrays[key] = value
    backend.save_npz(os.fspath(path), arrays)


def load(path):
    """Read an .npz file written by save() (or by NumPy's savez) as {name: NumPy array}.

    Raises ValueError("load: <path> is not a valid tinygrad_seq .npz file: <reason>") for
    anything that is not a zip of plain numeric/boolean .npy arrays: pickles, object arrays,
    truncated or corrupted archives, headers that declare more data than the file holds.
    A missing file raises FileNotFoundError.
    """
    path = os.fspath(path)
    try:
        return backend.load_npz(path)
    except ValueError as e:
        raise ValueError(f"load: {path} is not a valid tinygrad_seq .npz file: {e}") from None
