"""The .safetensors format, read and written without the `safetensors` package.

    save_file({"weight": w, "bias": b}, "model.safetensors", metadata={"epoch": "3"})
    state = load_file("model.safetensors")         # {name: NumPy array}, in the file's order

(`tg.save(state, "x.safetensors")` and `tg.load("x.safetensors")` call these.) A file is an
8-byte little-endian header length N, N bytes of JSON — {name: {"dtype", "shape",
"data_offsets": [begin, end]}} plus an optional "__metadata__" {str: str} — padded with spaces,
then the tensors' raw little-endian bytes, back to back. The header is checked before any data
is read: its size is bounded, every entry names a known dtype, a non-negative shape and offsets
whose length is exactly the shape's bytes, and the tensors tile the data region with no gap,
overlap or excess, so a hostile file raises ValueError and makes `load_file` allocate no more
than the file holds.

Tied weights: an array (or Tensor) that appears under several names is stored once, under its
first name, and each other name is recorded in the metadata as {other_name: first_name} — the
safetensors package's own convention (`safetensors.torch.save_model`). `load_file` gives those
names the same array back, so a tied model loads with strict=True.

BF16 tensors load as float32 (exactly: a bfloat16 is the top half of a float32); there is no
bfloat16 here, so nothing is written as BF16. F8 types are refused.
"""
import io
import json
import os
import struct
from collections.abc import Mapping

import numpy  # host-side file I/O only: raw little-endian bytes; computation stays in backend.py

from ..engine import backend
from ..tensors import Tensor
from .sharing import memory_key

__all__ = ["load_file", "save_file"]

MAX_HEADER_BYTES = 100_000_000  # the safetensors package's own limit
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "BF16": "<u2"}
_CODES = {numpy.dtype(v).newbyteorder("<"): k for k, v in _DTYPES.items() if k != "BF16"}


class SafetensorsError(ValueError):
    """A file that is not valid .safetensors (the caller adds which file)."""


# ---- write ---------------------------------------------------------------------------------

def save_file(tensors, filename, metadata=None):
    """Write {name: array or Tensor} to `filename` (a path or a binary file object).

    `metadata`: an optional {str: str} stored in the header. Shared arrays are stored once
    (see the module docstring). Arrays must be boolean or real numbers.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"save_file: expected a dict of names to arrays or Tensors, got {type(tensors).__name__}")
    metadata = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("save_file: metadata must map strings to strings")
    header, blobs, offset, first_name = {}, [], 0, {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"save_file: names must be strings other than '__metadata__', got {name!r}")
        array = value.array if isinstance(value, Tensor) else value
        if not backend.is_array(array):
            raise TypeError(f"save_file: {name!r} is a {type(value).__name__}; .safetensors holds only arrays "
                            "(save nested checkpoints with tg.save(obj, 'checkpoint.npz'))")
        key = memory_key(array)
        if key in first_name:  # a tied weight: once, with the alias in the metadata
            if name in metadata:
                raise ValueError(f"save_file: {name!r} is both a shared tensor's alias and a metadata key")
            metadata[name] = first_name[key]
            continue
        first_name[key] = name
        host = backend.to_host(array)
        code = _CODES.get(host.dtype.newbyteorder("<"))
        if code is None:
            raise TypeError(f"save_file: {name!r} has dtype {host.dtype}, which .safetensors cannot hold here "
                            "(booleans, integers and float16/32/64 can)")
        host = numpy.asarray(host, dtype=host.dtype.newbyteorder("<"), order="C")
        header[name] = {"dtype": code, "shape": list(host.shape), "data_offsets": [offset, offset + host.nbytes]}
        blobs.append(host)
        offset += host.nbytes
    if metadata:
        clash = [k for k in metadata if k in header]
        if clash:
            raise ValueError(f"save_file: metadata keys {clash} are also tensor names")
        header = {"__metadata__": metadata, **header}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the package writes it
    if hasattr(filename, "write"):
        _write(filename, raw, blobs)
    else:
        with open(os.fspath(filename), "wb") as fh:
            _write(fh, raw, blobs)


def _write(fh, raw, blobs):
    fh.write(struct.pack("<Q", len(raw)) + raw)
    for host in blobs:
        fh.write(host.reshape(-1).view(numpy.uint8).data)


# ---- read ----------------------------------------------------------------------------------

def load_file(filename, device="cpu"):
    """{name: array} from a .safetensors file (path or binary file object), in the order of the
    data; arrays are NumPy arrays, or on `device` ("cuda:N"). Raises ValueError on an invalid file."""
    device = backend.parse_device(device)
    if hasattr(filename, "read"):
        label = getattr(filename, "name", None) or "<file object>"
        return _load(filename, label, device)
    label = os.fspath(filename)
    with open(label, "rb") as fh:
        return _load(fh, label, device)


def _load(fh, label, device):
    if not _seekable(fh):  # a pipe or a socket: read it whole first
        fh = io.BytesIO(fh.read())
    try:
        return read(fh, device)
    except SafetensorsError as e:
        raise ValueError(f"load: {label} is not a valid .safetensors file: {e}") from None


def read(fh, device="cpu"):
    """The arrays of the .safetensors file open in the seekable `fh` (from where it stands);
    SafetensorsError if the file is invalid."""
    start = fh.tell()
    size = fh.seek(0, os.SEEK_END) - start
    fh.seek(start)
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise SafetensorsError("shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise SafetensorsError(f"declares a {n}-byte header (the file holds {size}; at most {MAX_HEADER_BYTES})")
    raw = fh.read(n)
    if len(raw) != n:
        raise SafetensorsError("the header is truncated")
    entries, metadata = _parse_header(raw)
    data_bytes = entries[-1][4] if entries else 0
    if size - 8 - n != data_bytes:
        raise SafetensorsError(f"the header describes {data_bytes} bytes of data, the file holds {size - 8 - n}")
    out = {}
    for name, code, shape, begin, end in entries:
        host = numpy.empty(shape, dtype=_DTYPES[code])
        if fh.readinto(memoryview(host.reshape(-1)).cast("B")) != end - begin:
            raise SafetensorsError(f"tensor {name!r} is truncated")
        if code == "BF16":  # the top 16 bits of a float32
            wide = host.astype(numpy.uint32)
            wide <<= 16
            host = wide.view(numpy.float32)
        elif code == "BOOL":  # any nonzero byte is True, as a NumPy bool must be 0 or 1
            host = host.view(numpy.uint8).astype(bool)
        elif not host.dtype.isnative:
            host = host.astype(host.dtype.newbyteorder("="))
        out[name] = host if device == "cpu" else backend.to_device(host, device)
    for alias, name in metadata.items():  # tied weights stored once (see the module docstring)
        if alias not in out and name in out:
            out[alias] = out[name]
    return out


def _parse_header(raw):
    """[(name, dtype code, shape, begin, end)] in data order, and the metadata; checked strictly."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except SafetensorsError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SafetensorsError(f"the header is not JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError("__metadata__ must map strings to strings")
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"tensor {name!r}: expected keys dtype, shape, data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in _DTYPES:
            raise SafetensorsError(f"tensor {name!r} has dtype {str(code)[:20]!r}, which is not read here "
                                   f"(known: {', '.join(_DTYPES)})")
        if not (isinstance(shape, list) and all(_is_count(n) for n in shape)):
            raise SafetensorsError(f"tensor {name!r} has an invalid shape {str(shape)[:80]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
            raise SafetensorsError(f"tensor {name!r} has invalid data_offsets {str(offsets)[:80]}")
        count = 1
        for n in shape:
            count *= n
        if offsets[1] - offsets[0] != count * numpy.dtype(_DTYPES[code]).itemsize:
            raise SafetensorsError(f"tensor {name!r} of shape {shape} and dtype {code} needs "
                                   f"{count * numpy.dtype(_DTYPES[code]).itemsize} bytes, its offsets span "
                                   f"{offsets[1] - offsets[0]}")
        entries.append((name, code, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for name, _, _, begin, end in entries:  # the tensors tile the data region: no gap, no overlap
        if begin != position:
            raise SafetensorsError(f"tensor {name!r} starts at byte {begin} of the data, expected {position} "
                                   "(tensors must be contiguous and must not overlap)")
        position = end
    return entries, metadata


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SafetensorsError(f"the header names {sorted(k for k in keys if keys.count(k) > 1)[:3]} twice")
    return dict(pairs)


def _is_count(n):
    return type(n) is int and n >= 0


def _seekable(f):
    try:
        return f.seekable()
    except (AttributeError, OSError, ValueError):
        return False
