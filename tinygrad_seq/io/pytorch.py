"""PyTorch's .pt files (torch.save's zip format, PyTorch >= 1.6), read without torch and without
running pickle code, and written so that `torch.load(path, weights_only=True)` reads them.
`tg.load("model.pt")` and `tg.save(obj, "model.pt")` call these.

Such a file is a zip archive `<name>/data.pkl` (a pickle of the saved object) plus one member
`<name>/data/<key>` per storage (raw bytes, in the byte order of `<name>/byteorder`). The pickle
is read by an Unpickler whose `find_class` allows only what a state dict needs — the same short
list PyTorch's own `weights_only=True` loader starts from: `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, the `torch.*Storage` types and
`_codecs.encode` (bytes) — each mapped to a function of ours that only records its arguments.
Any other global (a class, `os.system`, ...) stops the load before anything is called. The
result is then checked node by node: dicts, lists, tuples, strings, bytes, numbers, booleans,
None and tensors; tensors become tg.Tensors (a parameter's requires_grad kept), built from
their storage's bytes after checking that size, stride and offset stay inside the storage.
Tensors that share a storage share memory here too (a tied weight stays tied).

bfloat16 tensors load as float32 (exactly); complex and quantized tensors are refused.

Writing emits the same pickle opcode by opcode (nothing of ours is pickled, so the file names
only the globals above): dicts, lists, tuples, strings, bytes, numbers, booleans, None, and
arrays and Tensors as tensors (NumPy scalars as Python numbers). Tensors that share memory share
one storage, so a tied weight is stored once and PyTorch loads it tied.
"""
import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy  # host-side file I/O only: raw storage bytes; computation stays in backend.py

from ..engine import backend
from ..tensors import Tensor, from_numpy
from .sharing import memory_key

__all__ = ["is_torch_archive", "read", "write"]

# torch.<name>Storage -> the NumPy dtype of its elements ("bfloat16": read as uint16, widened)
_STORAGES = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
             "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
             "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1"}
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # pickle of torch's pre-1.6 magic number
MAX_PICKLE_BYTES = 64 * 2**20  # structure only: a state dict's pickle is ~100 bytes per tensor


class TorchFileError(ValueError):
    """A .pt file that cannot be read safely (the caller adds which file)."""


def is_torch_archive(names):
    """Whether the zip member names are those of a torch.save archive."""
    return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


def read(archive, map_location):
    """The object saved in the torch.save archive `archive` (an open ZipFile).

    map_location: None (each tensor on the device it was saved from, where that exists
    here) or a normalised device string for all of them.
    """
    names = archive.namelist()
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise TorchFileError("it is a TorchScript archive (torch.jit.save); load it in PyTorch and save "
                             "its weights with torch.save(model.state_dict(), path)")
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise TorchFileError(f"expected one <name>/data.pkl member, found {pickles[:3]}")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise TorchFileError(f"byteorder member says {byteorder[:20]!r}")
    unpickler = _Unpickler(io.BytesIO(_read_member(archive, pickles[0], MAX_PICKLE_BYTES)), archive, prefix,
                           byteorder)
    try:
        obj = unpickler.load()
    except TorchFileError:
        raise
    except Exception as e:  # truncated or malformed pickle, wrong argument types to our records ...
        raise TorchFileError(f"its data.pkl cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
    try:  # copies of strided views may take, in all, as many bytes as the storages hold
        return _Builder(map_location, sum(s.array.nbytes for s in unpickler.storages.values())).build(obj)
    except RecursionError:
        raise TorchFileError("its data.pkl is nested too deeply") from None


def _read_member(archive, name, size, declared=None):
    """The bytes of member `name`: exactly `size` bytes (at most `size` when `declared` is None),
    stored uncompressed as torch.save writes them, so nothing allocates more than the file holds."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise TorchFileError(f"member {name!r} is missing") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise TorchFileError(f"member {name!r} is compressed (torch.save stores its members uncompressed)")
    if info.file_size > size or (declared is not None and info.file_size != size):
        raise TorchFileError(f"{declared} ({size} bytes) but its member holds {info.file_size} bytes" if declared
                             else f"member {name!r} holds {info.file_size} bytes (at most {size} are read)")
    return archive.read(info)


# ---- the unpickler: each allowed global records its arguments; nothing else is reachable --------

class _StorageType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __setstate__(self, state):
        raise TorchFileError("its data.pkl modifies a storage type")


class _Storage:
    """One storage's elements (a 1-D host array) and the device it was saved from."""
    __slots__ = ("array", "location", "bfloat16")

    def __setstate__(self, state):
        raise TorchFileError("its data.pkl modifies a storage")


class _TensorRecord:
    """A tensor's storage and geometry, as _rebuild_tensor_v2 receives them."""
    __slots__ = ("storage", "offset", "size", "stride", "requires_grad")

    def __setstate__(self, state):
        raise TorchFileError("its data.pkl modifies a tensor")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor's storage is a {type(storage).__name__}")
    if backward_hooks or metadata:
        raise TorchFileError("a tensor carries backward hooks or conj/neg metadata, which are not read here")
    record = _TensorRecord()
    record.storage, record.offset, record.size, record.stride = storage, storage_offset, size, stride
    record.requires_grad = requires_grad
    return record


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _TensorRecord) or backward_hooks or state:
        raise TorchFileError("a Parameter holds something other than a plain tensor")
    data.requires_grad = requires_grad
    return data


def _encode(text, encoding):
    """_codecs.encode as protocol 2 pickles bytes: (str, 'latin1') -> bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TorchFileError("its data.pkl calls _codecs.encode with unexpected arguments")
    return text.encode("latin1")


_ALLOWED = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("_codecs", "encode"): _encode,
            **{("torch", name): _StorageType(name) for name in _STORAGES}}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, byteorder):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.storages = archive, prefix, byteorder, {}

    def find_class(self, module, name):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise TorchFileError(f"its data.pkl refers to {module[:80]}.{name[:80]}, which is not read: only "
                                 "tensors, (ordered) dicts, lists, tuples, numbers and strings are, and nothing "
                                 "in the file is executed. A whole model (torch.save(model)) cannot be read; if "
                                 "you trust the file, load it with PyTorch and save its weights with "
                                 "torch.save(model.state_dict(), path)")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchFileError(f"unknown persistent id {str(pid)[:80]}")
        _, kind, key, location, numel = pid
        if not (isinstance(kind, _StorageType) and isinstance(key, str) and isinstance(location, str)
                and type(numel) is int and numel >= 0):
            raise TorchFileError(f"invalid storage reference {str(pid)[:80]}")
        if key in self.storages:
            return self.storages[key]
        code = _STORAGES[kind.name]
        dtype = numpy.dtype("u2" if code == "bfloat16" else code).newbyteorder("<" if self.byteorder == "little"
                                                                               else ">")
        data = _read_member(self.archive, f"{self.prefix}data/{key}", numel * dtype.itemsize,
                            f"storage {key!r} declares {numel} {kind.name} elements")
        storage = _Storage()
        storage.array = numpy.frombuffer(bytearray(data), dtype=dtype)
        storage.location, storage.bfloat16 = location, code == "bfloat16"
        self.storages[key] = storage
        return storage


# ---- from the unpickled records to dicts, lists and Tensors, checked node by node ---------------

class _Builder:
    def __init__(self, map_location, budget):
        self.map_location, self.memo, self.budget = map_location, {}, budget

    def build(self, obj):
        if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
            return obj
        if id(obj) in self.memo:  # the same object reached twice (pickle's memo): the same result
            return self.memo[id(obj)]
        if isinstance(obj, _TensorRecord):
            out = self.tensor(obj)
        elif type(obj) in (dict, OrderedDict):
            out = {self.build(k): self.build(v) for k, v in obj.items()}
        elif type(obj) is list:
            out = [self.build(v) for v in obj]
        elif type(obj) is tuple:
            out = tuple(self.build(v) for v in obj)
        else:
            raise TorchFileError(f"its data.pkl holds a bare {type(obj).__name__.lstrip('_')} object")
        self.memo[id(obj)] = out
        return out

    def tensor(self, record):
        size, stride, offset = record.size, record.stride, record.offset
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
                and all(type(n) is int and n >= 0 for n in size + stride + (offset,))
                and isinstance(record.requires_grad, bool)):
            raise TorchFileError(f"a tensor has invalid geometry (size {str(size)[:60]}, stride "
                                 f"{str(stride)[:60]}, offset {str(offset)[:20]})")
        storage = record.storage
        source = storage.array
        count = 1
        for n in size:
            count *= n
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if count and last >= source.size:
            raise TorchFileError(f"a tensor of size {size}, stride {stride} and offset {offset} reaches element "
                                 f"{last} of a storage of {source.size}")
        if count == 0:
            host = numpy.empty(size, source.dtype)
        elif stride == _contiguous_strides(size):  # a view: tensors of one storage share memory
            host = source[offset:offset + count].reshape(size)
        else:
            self.budget -= count * source.itemsize
            if self.budget < 0:
                raise TorchFileError(f"its strided tensors (size {size}, stride {stride}, ...) would copy more bytes "
                                     "than its storages hold; save them .contiguous()")
            host = numpy.lib.stride_tricks.as_strided(source[offset:], size,
                                                      tuple(s * source.itemsize for s in stride)).copy()
        if storage.bfloat16:  # the top 16 bits of a float32
            wide = host.astype(numpy.uint32)
            wide <<= 16
            host = wide.view(numpy.float32)
        elif not host.dtype.isnative:
            host = host.astype(host.dtype.newbyteorder("="))
        device = self.map_location or self.device(storage.location)
        if record.requires_grad and host.dtype.kind != "f":
            raise TorchFileError(f"a {host.dtype} tensor requires grad")
        if device == "cpu" and host.flags.writeable:
            tensor = from_numpy(host)
            tensor.requires_grad = record.requires_grad
            return tensor
        return Tensor(host, device=device, requires_grad=record.requires_grad)

    @staticmethod
    def device(location):
        """Where a tensor saved on `location` goes without map_location: there, if it exists here."""
        if location == "cpu":
            return "cpu"
        try:
            if not location.startswith("cuda"):
                raise ValueError("only cpu and cuda devices exist here")
            return backend.parse_device(location)
        except (ValueError, RuntimeError) as e:
            raise RuntimeError(f"load: the file holds tensors saved on {location[:40]!r}, which is not available "
                               f"here ({e}); pass map_location='cpu' to load them on the CPU") from None


def _contiguous_strides(size):
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


# ---- writing: the pickle torch.save writes, opcode by opcode -------------------------------------

_STORAGE_OF = {numpy.dtype(code): name for name, code in _STORAGES.items()
               if code not in ("bfloat16", "u1")} | {numpy.dtype("u1"): "ByteStorage"}


def write(obj, f, where):
    """Write `obj` to `f` (a path or a binary file object) as torch.save would, archive name "archive".
    `where(path)` describes a key path for error messages."""
    pickler = _Pickler(where)
    pickler.value(obj, ())
    pickler.out += b"."  # STOP
    members = [("data.pkl", bytes(pickler.out)), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little")]
    members += [(f"data/{key}", host) for key, host in pickler.storages]
    members.append(("version", b"3\n"))
    if hasattr(f, "write"):
        _write_zip(f, members)
    else:
        with open(os.fspath(f), "wb") as fh:
            _write_zip(fh, members)


def _write_zip(fh, members):
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo("archive/" + name)  # fixed 1980 timestamp: same data, same bytes
            with archive.open(info, "w", force_zip64=len(data) >= 2**31) as member:
                member.write(data if isinstance(data, bytes) else data.reshape(-1).view(numpy.uint8).data)


class _Pickler:
    def __init__(self, where):
        self.out, self.storages, self.keys, self.where = bytearray(b"\x80\x02"), [], {}, where  # PROTO 2

    def value(self, v, path):
        out = self.out
        if isinstance(v, numpy.generic) and v.dtype.kind in "biuf":
            v = v.item()
        if v is None:
            out += b"N"
        elif v is True or v is False:
            out += b"\x88" if v else b"\x89"
        elif isinstance(v, int):
            out += (b"J" + struct.pack("<i", v) if -2**31 <= v < 2**31
                    else b"\x8a" + bytes([len(pickle.encode_long(v))]) + pickle.encode_long(v))
        elif isinstance(v, float):
            out += b"G" + struct.pack(">d", v)
        elif isinstance(v, str):
            self.string(v)
        elif isinstance(v, bytes):  # as protocol 2 writes bytes: _codecs.encode(text, "latin1")
            out += b"c_codecs\nencode\n"
            self.string(v.decode("latin1"))
            self.string("latin1")
            out += b"\x86R"  # TUPLE2 REDUCE
        elif isinstance(v, Tensor) or backend.is_array(v):
            self.tensor(v, path)
        elif isinstance(v, Mapping):
            out += b"}"  # EMPTY_DICT
            if v:
                out += b"("
                for key, item in v.items():
                    if not (key is None or isinstance(key, (str, int, float, bool))):
                        raise TypeError(f"save: dictionary keys must be strings or numbers, got {key!r} at "
                                        f"{self.where(path)}")
                    self.value(key, path)
                    self.value(item, path + (key,))
                out += b"u"  # SETITEMS
        elif isinstance(v, list):
            out += b"]"  # EMPTY_LIST
            if v:
                out += b"("
                for k, item in enumerate(v):
                    self.value(item, path + (k,))
                out += b"e"  # APPENDS
        elif isinstance(v, tuple):
            out += b"("
            for k, item in enumerate(v):
                self.value(item, path + (k,))
            out += b"t"
        else:
            raise TypeError(f"save: cannot write a {type(v).__name__} at {self.where(path)} to a PyTorch file; "
                            "expected arrays, Tensors, numbers, strings, bytes, None, and dicts/lists/tuples of them")

    def string(self, text):
        raw = text.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE

    def tensor(self, v, path):
        array = v.array if isinstance(v, Tensor) else v
        requires_grad = bool(isinstance(v, Tensor) and v.requires_grad)
        kind = _STORAGE_OF.get(numpy.dtype(array.dtype).newbyteorder("="))
        if kind is None:
            raise TypeError(f"save: the array at {self.where(path)} has dtype {array.dtype}, which PyTorch "
                            "files cannot hold here (booleans, int8/16/32/64, uint8, float16/32/64 can)")
        share = memory_key(array)
        if share not in self.keys:  # one storage per distinct memory: a tied weight is written once
            host = numpy.asarray(backend.to_host(array), dtype=numpy.dtype(array.dtype).newbyteorder("<"), order="C")
            self.keys[share] = str(len(self.storages))
            self.storages.append((self.keys[share], host))
        device = backend.device_of(array)
        shape = tuple(int(n) for n in array.shape)
        out = self.out
        out += b"ctorch._utils\n_rebuild_tensor_v2\n(("  # GLOBAL, MARK (args), MARK (persistent id)
        self.string("storage")
        out += b"ctorch\n" + kind.encode() + b"\n"
        self.string(self.keys[share])
        self.string(device if device.startswith("cuda") else "cpu")
        self.value(math.prod(shape), path)
        out += b"tQ"  # TUPLE, BINPERSID
        self.value(0, path)
        self.value(shape, path)
        self.value(_contiguous_strides(shape), path)
        self.value(requires_grad, path)
        out += b"ccollections\nOrderedDict\n)RtR"  # backward hooks: OrderedDict(); TUPLE; REDUCE
