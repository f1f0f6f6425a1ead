"""Array backends: the only module that imports NumPy or CuPy.

A device string ("cpu", "cuda", "cuda:N") maps to an array namespace (NumPy or CuPy);
everything else in tinygrad_seq asks this module for the namespace, for transfers
between host and device, for scatter-add and for random numbers.
"""
import copy

import numpy

float16, float32, float64 = numpy.dtype("float16"), numpy.dtype("float32"), numpy.dtype("float64")
int8, int16, int32, int64 = (numpy.dtype(n) for n in ("int8", "int16", "int32", "int64"))
uint8, bool_ = numpy.dtype("uint8"), numpy.dtype("bool")
default_float = float32
ndarray = numpy.ndarray  # the host array type (for isinstance checks)

CUDA_HELP = ('CuPy is needed for device "{}": install the GPU extra with '
             '`pip install "tinygrad_seq[cuda]"` (CUDA 12) on a machine with an NVIDIA GPU')


class Backend:
    """One kind of device: its array namespace and how arrays get there and back."""
    __slots__ = ("name", "xp", "array_type", "to_device", "to_host", "scatter_add", "make_rng", "device_of")

    def __init__(self, name, xp, array_type, to_device, to_host, scatter_add, make_rng, device_of):
        self.name, self.xp, self.array_type = name, xp, array_type
        self.to_device, self.to_host, self.scatter_add = to_device, to_host, scatter_add
        self.make_rng, self.device_of = make_rng, device_of


def _numpy_scatter_add(target, index, values):
    numpy.add.at(target, index, values)


_backends = {"cpu": Backend("cpu", numpy, numpy.ndarray, lambda a, ordinal: numpy.asarray(a),
                            numpy.asarray, _numpy_scatter_add,
                            lambda seed, ordinal: numpy.random.default_rng(seed), lambda a: "cpu")}
_seed = None
_rngs = {}


def register_backend(backend):
    """Make a device kind available (CuPy registers itself lazily; tests register a fake GPU)."""
    _backends[backend.name] = backend
    for key in [k for k in _rngs if k.split(":")[0] == backend.name]:
        del _rngs[key]


def _load_cupy():
    try:
        import cupy
        import cupyx
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as e:  # ImportError, or CUDA present but unusable
        raise RuntimeError(CUDA_HELP.format("cuda") + f" ({type(e).__name__}: {e})") from None

    def to_device(a, ordinal):
        with cupy.cuda.Device(ordinal):
            return cupy.asarray(a)

    def make_rng(seed, ordinal):
        with cupy.cuda.Device(ordinal):
            return cupy.random.default_rng(seed)

    register_backend(Backend("cuda", cupy, cupy.ndarray, to_device, cupy.asnumpy, cupyx.scatter_add,
                             make_rng, lambda a: f"cuda:{a.device.id}"))


def load_nccl(ordinal):
    """cupy.cuda.nccl with GPU `ordinal` made current, and a function giving the current stream's pointer."""
    parse_device("cuda")  # loads CuPy, or raises naming the cuda extra
    import cupy
    from cupy.cuda import nccl
    cupy.cuda.Device(ordinal).use()
    return nccl, lambda: cupy.cuda.get_current_stream().ptr


def parse_device(device):
    """Normalise "cpu" / "cuda" / "cuda:N" (or None -> "cpu") to "cpu" or "kind:N"."""
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {type(device).__name__}")
    kind, _, ordinal = device.partition(":")
    if kind == "cpu" and not ordinal:
        return "cpu"
    if kind == "cuda" and "cuda" not in _backends:
        _load_cupy()
    if kind not in _backends or kind == "cpu" or (ordinal and not ordinal.isdigit()):
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return f"{kind}:{int(ordinal or 0)}"


def _backend(device):
    return _backends[device.split(":")[0]]


def namespace(device):
    """The array module (NumPy or CuPy) that computes on `device`."""
    return _backend(device).xp


def device_of(array):
    """The normalised device string an array lives on."""
    if isinstance(array, numpy.ndarray):
        return "cpu"
    for backend in _backends.values():
        if isinstance(array, backend.array_type):
            return backend.device_of(array)
    raise TypeError(f"not an array of any known device: {type(array).__name__}")


def is_array(obj):
    return any(isinstance(obj, b.array_type) for b in _backends.values())


def to_device(array, device):
    """Move (or copy) an array to `device`; host arrays, lists and scalars are accepted."""
    if device == "cpu":
        return to_host(array)
    return _backend(device).to_device(array, int(device.split(":")[1]))


def to_host(array):
    """A NumPy array holding the same values (no copy when already on the host)."""
    if isinstance(array, numpy.ndarray) or not is_array(array):
        return numpy.asarray(array)
    return _backend(device_of(array)).to_host(array)


def dtype(obj):
    """A NumPy dtype from a dtype-like (a string, numpy/cupy type or dtype)."""
    return numpy.dtype(obj)


def result_dtype(value):
    """The dtype NumPy gives a Python scalar or nested list (used to type new tensors)."""
    return numpy.asarray(value).dtype


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (in place)."""
    _backend(device_of(target)).scatter_add(target, index, values)


def manual_seed(seed):
    """Seed every random stream of every device; streams are created on first use."""
    global _seed
    _seed = int(seed)
    _rngs.clear()


def rng(device):
    """The random Generator of `device`, seeded from manual_seed (else from entropy)."""
    gen = _rngs.get(device)
    if gen is None:
        ordinal = int(device.split(":")[1]) if ":" in device else 0
        seed = None if _seed is None else (_seed if device == "cpu" else (_seed * 1_000_003 + 1 + ordinal) % 2**63)
        gen = _rngs[device] = _backend(device).make_rng(seed, ordinal)
    return gen


def rng_snapshot():
    """A copy of every random stream, to undo draws (a captured loop that falls back to eager)."""
    return _seed, {device: copy.deepcopy(gen) for device, gen in _rngs.items()}


def rng_restore(snapshot):
    global _seed
    _seed, streams = snapshot
    _rngs.clear()
    _rngs.update(streams)


def is_floating(dt):
    return numpy.dtype(dt).kind == "f"


def is_integer(dt):
    return numpy.dtype(dt).kind in "iu"


def promote_types(a, b):
    return numpy.promote_types(a, b)


def array_namespace(array):
    """The namespace that computes on `array` (fast path for host arrays)."""
    if type(array) is numpy.ndarray:
        return numpy
    return _backend(device_of(array)).xp


def new_array(data, dtype=None, device="cpu"):
    """A fresh array on `device` holding `data` (a scalar, nested list or any backend array).

    Python floats become float32 unless `dtype` says otherwise; arrays and NumPy scalars keep their dtype.
    """
    if is_array(data):
        if data.dtype.kind not in "biuf":
            raise TypeError(f"Tensor: cannot make a tensor from an array of dtype {data.dtype} "
                            "(only boolean, integer and floating-point data)")
        if dtype is None:
            dtype = data.dtype
        if device_of(data) != device:
            data = to_device(to_host(data) if device != "cpu" else data, device)
            return data.astype(dtype, copy=False) if data.dtype != dtype else data
        return data.astype(dtype, copy=True)
    host = numpy.asarray(data)
    if host.dtype == object or host.dtype.kind not in "biuf":
        raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__} data of dtype {host.dtype}")
    if dtype is None:
        dtype = default_float if host.dtype.kind == "f" and not isinstance(data, numpy.generic) else host.dtype
    host = host.astype(dtype)
    return host if device == "cpu" else to_device(host, device)


def as_array(value, device=None):
    """`value` (a NumPy scalar or array-like op result) as an array of `device`."""
    if device is None:
        device = device_of(value) if is_array(value) else "cpu"
    return _backend(device).xp.asarray(value)


# ---- .npz files (serialization.py): NumPy's archive of .npy members, never pickle ------

def save_npz(path, arrays):
    """Write {name: array} to `path` as an uncompressed .npz that numpy.load reads too.

    Values may be arrays of any device or scalars; only boolean and numeric dtypes are
    accepted, so nothing is ever pickled. Everything is checked before the file is opened.
    """
    import zipfile
    members = []
    for key, value in arrays.items():
        host = to_host(value)
        if host.dtype.hasobject or host.dtype.kind not in "biufc":
            raise TypeError(f"save: value for key {key!r} has dtype {host.dtype}; only boolean and "
                            "numeric arrays can be saved (nothing is pickled)")
        info = zipfile.ZipInfo(key + ".npy")  # fixed 1980 timestamp: same data, same bytes
        if info.filename != key + ".npy":
            raise ValueError(f"save: key {key!r} cannot be stored as a zip member name")
        members.append((info, host))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for info, host in members:
            with archive.open(info, "w", force_zip64=True) as member:
                numpy.lib.format.write_array(member, host, allow_pickle=False)


def load_npz(path):
    """{name: NumPy array} from a .npz file, read member by member without ever unpickling.

    Each member must be a .npy of a boolean or numeric dtype whose header (parsed by NumPy's
    literal-only reader) declares exactly the bytes the member holds, so a forged shape
    cannot make this allocate. Malformed input of any kind raises ValueError(reason);
    OSError (missing file, a directory) passes through.
    """
    import zipfile
    with open(path, "rb") as fh:
        try:
            arrays = {}
            with zipfile.ZipFile(fh) as archive:
                for info in archive.infolist():
                    name = info.filename
                    if not name.endswith(".npy"):
                        raise ValueError(f"member {name!r} is not a .npy array")
                    if name[:-4] in arrays:
                        raise ValueError(f"member {name!r} appears more than once")
                    with archive.open(info) as member:
                        arrays[name[:-4]] = _read_npy(member, info.file_size, name)
            return arrays
        except ValueError:
            raise
        except Exception as e:  # BadZipFile, bad CRC, zlib errors, EOF, encrypted members ...
            raise ValueError(f"{type(e).__name__}: {e}") from None


def _read_npy(member, size, name):
    fmt = numpy.lib.format
    try:
        version = fmt.read_magic(member)
    except ValueError:
        raise ValueError(f"member {name!r} is not a .npy array (bad magic string)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"member {name!r} has unsupported .npy format version {version}")
    try:  # NumPy parses the header with ast.literal_eval: literals only, no code
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dt = read_header(member)
    except Exception as e:
        raise ValueError(f"member {name!r} has an invalid .npy header ({type(e).__name__}: {e})") from None
    if dt.hasobject or dt.kind not in "biufc":
        raise ValueError(f"member {name!r} has dtype {dt}; only boolean and numeric arrays are "
                         "loaded (object arrays would need pickle)")
    count = 1
    for n in shape:
        if n < 0:
            raise ValueError(f"member {name!r} declares a negative shape {shape}")
        count *= n
    declared, held = count * dt.itemsize, size - member.tell()
    if declared != held:
        raise ValueError(f"member {name!r} declares shape {shape} of {dt} ({declared} bytes) "
                         f"but holds {held} bytes")
    data = member.read(held)
    if len(data) != held or member.read(1):
        raise ValueError(f"member {name!r} is truncated")
    array = numpy.frombuffer(data, dtype=dt)
    return array.reshape(shape, order="F" if fortran_order else "C").copy()


def erf(array):
    """The error function, elementwise: CuPy's kernel on a GPU, SciPy's when installed, else libm's erf."""
    if not isinstance(array, numpy.ndarray):
        if device_of(array).startswith("cuda:"):
            import cupyx.scipy.special
            return cupyx.scipy.special.erf(array)
        return to_device(erf(to_host(array)), device_of(array))
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return _libm_erf(array)
    return scipy_erf(array)


def _libm_erf(array):
    import math
    dtype = array.dtype if array.dtype.kind == "f" else float64
    return numpy.asarray(numpy.frompyfunc(math.erf, 1, 1)(array), dtype=dtype)  # 0-d gives a float: asarray


def ignore_float_errors():
    """A context in which NumPy does not warn about inf/NaN (anomaly checks report them instead)."""
    return numpy.errstate(all="ignore")
