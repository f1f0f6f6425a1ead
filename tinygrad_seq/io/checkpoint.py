"""save / load of checkpoints as .npz files (NumPy's zip of .npy arrays), never pickle; and the
choice of format: `save` by the path's suffix (.safetensors, .pt/.pth, else .npz), `load` by the
file's first bytes (io/safetensors.py, io/pytorch.py).

    tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7,
             "rng": tg.get_rng_state()}, "checkpoint.npz")
    checkpoint = tg.load("checkpoint.npz")
    model.load_state_dict(checkpoint["model"])

What can be saved: dicts (string or integer keys), lists and tuples, nested freely, whose
leaves are arrays (NumPy or CuPy), Tensors, Python numbers, NumPy scalars, strings, bools
and None. Each array is one .npy member of the archive; the structure is a JSON manifest
member (`__tinygrad_seq__.json`), so the file is also readable by `numpy.load` (a flat state
dict's arrays keep their names as member names). `load` gives back the same structure:
arrays as arrays, Tensors as Tensors (with their requires_grad; no gradient or graph is
saved), tuples as tuples, integer keys as integers. An .npz without a manifest (NumPy's
`savez`) loads as a flat {name: array} dict.

Devices: each array and Tensor is saved from a host copy and its device is recorded. Without
`map_location`, `load` puts each back on the device it came from (arrays as NumPy arrays on
the CPU, CuPy arrays on a GPU); `map_location="cpu"` (or "cuda", "cuda:1") puts all of them
there instead — use "cpu" to read a GPU checkpoint on a machine without a GPU.

Safety: nothing is unpickled or evaluated. Each .npy header is read with NumPy's literal-only
parser, object dtypes are refused before any data is read, the declared size must be exactly
the member's size, and the manifest is plain JSON checked node by node, so a hostile file
can raise ValueError but cannot run code or make `load` allocate more than the file holds.
"""
import io
import json
import os
import zipfile
from collections.abc import Mapping

import numpy  # host-side file I/O only: the .npy format; computation stays in backend.py

from ..engine import backend
from ..tensors import Tensor
from . import pytorch, safetensors
from .sharing import memory_key

__all__ = ["save", "load"]

MANIFEST = "__tinygrad_seq__.json"
FORMAT = "tinygrad_seq.checkpoint"
MAX_MANIFEST_BYTES = 16 * 2**20  # structure only: a large model's manifest is a few hundred KB
_NODE_KEYS = {"dict": set(), "list": set(), "tuple": set(), "array": {"device"},
              "tensor": {"device", "requires_grad"}, "scalar": set()}


# ---- save ----------------------------------------------------------------------------------

def save(obj, f):
    """Write `obj` (nested dicts/lists/tuples of arrays, Tensors, numbers, strings, None) to `f`.

    `f` is a path (written exactly there; no ".npz" is appended) or a binary file object
    opened for writing. Every value is checked before anything is written. The same object
    gives the same bytes. An array or Tensor reached under several keys (a tied weight) is
    stored once and loads back as one shared object. The suffix of the path (or of the name of
    a file opened on one) picks another format: ".safetensors" (a flat {name: array or Tensor}
    dict; io/safetensors.py), ".pt" or ".pth" (PyTorch's, for torch.load(path,
    weights_only=True); io/pytorch.py).
    """
    name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", None)  # a file opened on a path
    name = os.fspath(name) if isinstance(name, (str, os.PathLike)) else ""
    if name.endswith(".safetensors"):
        return safetensors.save_file(obj, f)
    if name.endswith((".pt", ".pth")):
        return pytorch.write(obj, f, _where)
    members, names, stored = [], set(), {}

    def add_array(host, path):
        if host.dtype.hasobject or host.dtype.kind not in "biufc":
            raise TypeError(f"save: value at {_where(path)} has dtype {host.dtype}; only boolean and "
                            "numeric arrays can be saved (nothing is pickled)")
        name = "/".join(str(k) for k in path) or "array"
        if name in names or zipfile.ZipInfo(name + ".npy").filename != name + ".npy" or name == MANIFEST[:-5]:
            name = f"arr_{len(members)}"
            while name in names:
                name += "_"
        names.add(name)
        members.append((name + ".npy", host))
        return name

    def encode(value, path):
        if isinstance(value, str):
            return str(value)
        if isinstance(value, numpy.generic):  # before int/float: numpy.float64 is a float; keep its dtype
            return {"scalar": add_array(numpy.asarray(value), path)}
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, Tensor):
            return {"tensor": add_shared(value.array, path), "device": value.device,
                    "requires_grad": bool(value.requires_grad)}
        if backend.is_array(value):
            return {"array": add_shared(value, path), "device": backend.device_of(value)}
        if isinstance(value, Mapping):
            items = []
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(f"save: dictionary keys must be strings or integers, got {key!r} "
                                    f"at {_where(path)}")
                items.append([key, encode(item, path + (key,))])
            return {"dict": items}
        if isinstance(value, (list, tuple)):
            return {"list" if isinstance(value, list) else "tuple":
                    [encode(item, path + (k,)) for k, item in enumerate(value)]}
        hint = ""
        if callable(getattr(value, "state_dict", None)):  # a Module, an optimizer, a scheduler
            obj = "model" if hasattr(value, "parameters") else "obj"
            hint = (f" (whole objects are not saved: that would need pickle). Save its state instead, "
                    f"tg.save({obj}.state_dict(), path), and load it into a new {type(value).__name__} with "
                    f"{obj}.load_state_dict(tg.load(path))")
        raise TypeError(f"save: cannot save a {type(value).__name__} at {_where(path)}; expected arrays, "
                        "Tensors, numbers, strings, bools, None, and dicts/lists/tuples of them" + hint)

    def add_shared(array, path):  # the same memory seen again (a tied weight) is stored once
        key = memory_key(array)
        if key not in stored:
            stored[key] = add_array(backend.to_host(array), path)
        return stored[key]

    manifest = json.dumps({"format": FORMAT, "version": 1, "root": encode(obj, ())}).encode()
    if hasattr(f, "write"):
        _write(f, members, manifest)
    else:
        with open(os.fspath(f), "wb") as fh:
            _write(fh, members, manifest)


def _write(fh, members, manifest):
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, host in members:
            info = zipfile.ZipInfo(name)  # fixed 1980 timestamp: same data, same bytes
            with archive.open(info, "w", force_zip64=True) as member:
                numpy.lib.format.write_array(member, host, allow_pickle=False)
        archive.writestr(zipfile.ZipInfo(MANIFEST), manifest)


def _where(path):
    return "the top level" if not path else "key path " + "".join(f"[{k!r}]" for k in path)


# ---- load ----------------------------------------------------------------------------------

def load(f, map_location=None, *, weights_only=None):
    """Read a file from a path or a binary file object: what save() wrote (see the module
    docstring), a .safetensors file ({name: array}), or a PyTorch .pt file written by
    torch.save (PyTorch >= 1.6), read without torch and without running pickle code (tensors
    as Tensors; see io/pytorch.py). The format is told by the file's first bytes.

    map_location: None (each array or Tensor back on the device it was saved from), or a
    device ("cpu", "cuda", "cuda:N") for all of them. weights_only is accepted for code
    written for PyTorch and changes nothing: no format read here can hold code. A malformed
    or hostile file raises ValueError("load: <file> is not a valid ... file: <reason>");
    a missing file raises FileNotFoundError.
    """
    if weights_only not in (None, True, False):
        raise TypeError(f"load: weights_only must be a bool, got {weights_only!r}")
    if map_location is not None:
        if not isinstance(map_location, str) and hasattr(map_location, "type"):  # a device object
            map_location = str(map_location)
        if not isinstance(map_location, str):
            raise TypeError(f"load: map_location must be a device such as 'cpu' or 'cuda:0', "
                            f"got {type(map_location).__name__} (dicts and functions are not supported)")
        map_location = backend.parse_device(map_location)
    if hasattr(f, "read"):
        label = getattr(f, "name", None) or "<file object>"
        fh = f if _seekable(f) else io.BytesIO(f.read())
        return _load(fh, label, map_location)
    label = os.fspath(f)
    with open(label, "rb") as fh:
        return _load(fh, label, map_location)


def _seekable(f):
    try:
        return f.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def _load(fh, label, map_location):
    start = fh.tell()
    head = fh.read(16)
    fh.seek(start)
    if head[8:9] == b"{":
        try:
            return safetensors.read(fh, map_location or "cpu")
        except safetensors.SafetensorsError as e:
            raise ValueError(f"load: {label} is not a valid .safetensors file: {e}") from None
    if head.startswith(pytorch.LEGACY_MAGIC):
        raise ValueError(f"load: {label} is a PyTorch file in the legacy format (before PyTorch 1.6), a bare pickle, "
                         "which is not read here because unpickling can run code; re-save it with a recent PyTorch "
                         "(torch.save(torch.load(path), path)) or as .safetensors")
    if head[:1] == b"\x80":
        raise ValueError(f"load: {label} is a pickle (pickle.dump), which is not read here because unpickling can run "
                         "code; save arrays with tg.save, numpy.savez or as .safetensors")
    if head.startswith(b"PK") and _is_torch_archive(fh):
        fh.seek(start)
        with zipfile.ZipFile(fh) as archive:
            try:
                return pytorch.read(archive, map_location)
            except pytorch.TorchFileError as e:
                raise ValueError(f"load: {label} is a PyTorch .pt file that cannot be read here: {e}") from None
    fh.seek(start)
    try:
        arrays, manifest = _read_archive(fh)
        if manifest is None:  # NumPy's savez, or a flat state dict
            return {name: _place(array, "cpu", map_location) for name, array in arrays.items()}
        return _decode_manifest(manifest, arrays, map_location)
    except _Invalid as e:
        raise ValueError(f"load: {label} is not a valid tinygrad_seq .npz file: {e}") from None


def _is_torch_archive(fh):
    try:
        with zipfile.ZipFile(fh) as archive:
            return pytorch.is_torch_archive(archive.namelist())
    except Exception:  # not a readable zip: the .npz reader says why
        return False


class _Invalid(Exception):
    pass


def _read_archive(fh):
    """({name: NumPy array}, manifest bytes or None), member by member, without unpickling."""
    try:
        arrays, manifest = {}, None
        with zipfile.ZipFile(fh) as archive:
            for info in archive.infolist():
                name = info.filename
                if name == MANIFEST:
                    if manifest is not None:
                        raise _Invalid(f"member {name!r} appears more than once")
                    if info.file_size > MAX_MANIFEST_BYTES:
                        raise _Invalid(f"manifest declares {info.file_size} bytes (at most {MAX_MANIFEST_BYTES})")
                    with archive.open(info) as member:
                        manifest = member.read(MAX_MANIFEST_BYTES + 1)
                    if len(manifest) > MAX_MANIFEST_BYTES:
                        raise _Invalid("manifest is larger than it declares")
                    continue
                if not name.endswith(".npy"):
                    raise _Invalid(f"member {name!r} is not a .npy array")
                if name[:-4] in arrays:
                    raise _Invalid(f"member {name!r} appears more than once")
                with archive.open(info) as member:
                    arrays[name[:-4]] = _read_npy(member, info.file_size, name)
        return arrays, manifest
    except _Invalid:
        raise
    except Exception as e:  # BadZipFile, bad CRC, zlib errors, EOF, encrypted members ...
        raise _Invalid(f"{type(e).__name__}: {e}") from None


def _read_npy(member, size, name):
    fmt = numpy.lib.format
    try:
        version = fmt.read_magic(member)
    except ValueError:
        raise _Invalid(f"member {name!r} is not a .npy array (bad magic string)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise _Invalid(f"member {name!r} has unsupported .npy format version {version}")
    try:  # NumPy parses the header with ast.literal_eval: literals only, no code
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dt = read_header(member)
    except Exception as e:
        raise _Invalid(f"member {name!r} has an invalid .npy header ({type(e).__name__}: {e})") from None
    if dt.hasobject or dt.kind not in "biufc":
        raise _Invalid(f"member {name!r} has dtype {dt}; only boolean and numeric arrays are "
                       "loaded (object arrays would need pickle)")
    count = 1
    for n in shape:
        if n < 0:
            raise _Invalid(f"member {name!r} declares a negative shape {shape}")
        count *= n
    declared, held = count * dt.itemsize, size - member.tell()
    if declared != held:
        raise _Invalid(f"member {name!r} declares shape {shape} of {dt} ({declared} bytes) but holds {held} bytes")
    data = member.read(held)
    if len(data) != held or member.read(1):
        raise _Invalid(f"member {name!r} is truncated")
    array = numpy.frombuffer(data, dtype=dt)
    return array.reshape(shape, order="F" if fortran_order else "C").copy()


def _decode_manifest(raw, arrays, map_location):
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Invalid(f"manifest is not JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or set(manifest) != {"format", "version",
                                                                                               "root"}:
        raise _Invalid("manifest is not a tinygrad_seq checkpoint manifest")
    if manifest["version"] != 1:
        raise _Invalid(f"manifest version {manifest['version']!r} is not supported (this version reads 1)")
    try:
        return _decode(manifest["root"], arrays, map_location, {})
    except RecursionError:
        raise _Invalid("manifest is nested too deeply") from None


def _decode(node, arrays, map_location, memo):
    """The value of a manifest node; memo gives a member read twice (a tied weight) as one object."""
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list) or not isinstance(node, dict):
        raise _Invalid(f"manifest holds a bare {type(node).__name__}, expected a tagged node")
    tags = [key for key in node if key in _NODE_KEYS]
    if len(tags) != 1 or set(node) - {tags[0]} - _NODE_KEYS[tags[0]]:
        raise _Invalid(f"manifest node has keys {sorted(node)[:6]}")
    tag, body = tags[0], node[tags[0]]
    if tag in ("list", "tuple"):
        if not isinstance(body, list):
            raise _Invalid(f"manifest {tag} node holds a {type(body).__name__}")
        items = [_decode(item, arrays, map_location, memo) for item in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        if not isinstance(body, list):
            raise _Invalid(f"manifest dict node holds a {type(body).__name__}")
        out = {}
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                    and not isinstance(pair[0], bool)):
                raise _Invalid("manifest dict entries must be [key, value] with a string or integer key")
            if pair[0] in out:
                raise _Invalid(f"manifest dict has the key {pair[0]!r} twice")
            out[pair[0]] = _decode(pair[1], arrays, map_location, memo)
        return out
    if not isinstance(body, str) or body not in arrays:
        raise _Invalid(f"manifest refers to an array member {str(body)[:80]!r} that the archive does not hold")
    host = arrays[body]
    if tag == "scalar":
        if host.ndim != 0:
            raise _Invalid(f"scalar member {body!r} has shape {host.shape}")
        return host[()]
    saved_device = node.get("device", "cpu")
    if not isinstance(saved_device, str):
        raise _Invalid(f"member {body!r} has a device that is not a string")
    if map_location is None:
        try:
            device = backend.parse_device(saved_device)
        except ValueError:
            raise _Invalid(f"member {body!r} names an unknown device {saved_device[:40]!r}") from None
        except RuntimeError as e:
            raise RuntimeError(f"load: the checkpoint holds arrays saved on {saved_device}, which is not available "
                               f"here; pass map_location='cpu' to load them on the CPU ({e})") from None
    else:
        device = map_location
    requires_grad = node.get("requires_grad", False)
    if not isinstance(requires_grad, bool):
        raise _Invalid(f"member {body!r} has a requires_grad that is not a bool")
    if requires_grad and host.dtype.kind not in "fc":
        raise _Invalid(f"member {body!r} requires grad but has dtype {host.dtype}")
    key = (tag, body, device, requires_grad)
    if key not in memo:
        memo[key] = (_place(host, device, None) if tag == "array"
                     else Tensor(host, device=device, requires_grad=requires_grad))
    return memo[key]


def _place(host, device, map_location):
    device = map_location or device
    return host if device == "cpu" else backend.to_device(host, device)
