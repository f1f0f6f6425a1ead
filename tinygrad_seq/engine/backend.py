"""Array backends: the only module that computes with NumPy or CuPy.

A device string ("cpu", "cuda", "cuda:N") maps to an array namespace (NumPy or CuPy);
everything else in tinygrad_seq asks this module for the namespace, for transfers
between host and device, for scatter-add and for random numbers (and their state).
The one other place that imports NumPy is tinygrad_seq.io, for host-side file I/O.
"""
import numpy

float16, float32, float64 = numpy.dtype("float16"), numpy.dtype("float32"), numpy.dtype("float64")
int8, int16, int32, int64 = (numpy.dtype(n) for n in ("int8", "int16", "int32", "int64"))
uint8, bool_ = numpy.dtype("uint8"), numpy.dtype("bool")
default_float = float32
ndarray = numpy.ndarray  # the host array type (for isinstance checks)

CUDA_HELP = ('CuPy is needed for device "{}": install the GPU extra with '
             '`pip install "tinygrad_seq[cuda]"` (CUDA 12) on a machine with an NVIDIA GPU, or ask '
             'tg.cuda.is_available() first and fall back to "cpu"')


class Device(str):
    """PyTorch's torch.device: Device("cpu"), Device("cuda:1"), Device("cuda", 1), with .type and .index.

    It is the string it prints ("cpu", "cuda:1"), so it equals, hashes and formats as that string and
    goes wherever a device string does. Making one only checks the spelling (no GPU is needed);
    Tensor.device and the functions below return these, with the index filled in ("cuda:0").
    """
    __slots__ = ()

    def __new__(cls, type, index=None):
        if isinstance(type, Device) and index is None:
            return type
        if not isinstance(type, str):
            raise TypeError(f"device: expected a string such as 'cpu' or 'cuda:0' (or a device), "
                            f"got {type.__class__.__name__}")
        kind, colon, ordinal = type.partition(":")
        if kind not in ("cpu", "cuda") and kind not in _backends:
            raise RuntimeError(f"Expected one of {', '.join(sorted({'cpu', 'cuda', *_backends}))} device type at "
                               f"start of device string: {type}")
        if colon and index is not None:
            raise ValueError(f"device: the string {type!r} already has an index and index={index!r} was passed too")
        if colon:
            if not ordinal.isdigit():
                raise RuntimeError(f"Invalid device string: {type!r}")
            index = int(ordinal)
        elif index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"device: index must be a non-negative integer, got {index!r}")
        text = kind if index is None else f"{kind}:{index}"
        return _devices.get(text) or _devices.setdefault(text, str.__new__(cls, text))

    @property
    def type(self):
        """"cpu" or "cuda" (the kind of device)."""
        return self.partition(":")[0]

    @property
    def index(self):
        """The device's number (None when not given, as for "cpu")."""
        ordinal = self.partition(":")[2]
        return int(ordinal) if ordinal else None

    def __repr__(self):
        index = self.index
        return f"device(type='{self.type}')" if index is None else f"device(type='{self.type}', index={index})"


class Backend:
    """One kind of device: its array namespace and how arrays get there and back. rng_state(gen) is a
    snapshot of a generator made of numbers, strings and host arrays; set_rng_state(gen, snapshot);
    device_count() how many devices of this kind the process sees."""
    __slots__ = ("name", "xp", "array_type", "to_device", "to_host", "scatter_add", "make_rng", "device_of",
                 "rng_state", "set_rng_state", "device_count")

    def __init__(self, name, xp, array_type, to_device, to_host, scatter_add, make_rng, device_of,
                 rng_state=lambda gen: gen.bit_generator.state, set_rng_state=None, device_count=lambda: 1):
        self.name, self.xp, self.array_type, self.to_device, self.to_host = name, xp, array_type, to_device, to_host
        self.scatter_add, self.make_rng, self.device_of, self.rng_state = scatter_add, make_rng, device_of, rng_state
        self.set_rng_state = set_rng_state or (lambda gen, state: setattr(gen.bit_generator, "state", state))
        self.device_count = device_count


def _numpy_scatter_add(target, index, values):
    if isinstance(index, numpy.ndarray) and index.dtype.kind in "iu" and index.size \
            and values.shape == index.shape + target.shape[1:]:  # rows gathered by an index array (embeddings)
        rows = index.reshape(-1)
        rows = numpy.where(rows < 0, rows + target.shape[0], rows)
        order = numpy.argsort(rows, kind="stable")  # sum each row's updates with one reduceat: add.at is slow
        rows = rows[order]
        starts = numpy.flatnonzero(numpy.concatenate(([True], rows[1:] != rows[:-1])))
        target[rows[starts]] += numpy.add.reduceat(values.reshape((-1,) + target.shape[1:])[order], starts, axis=0)
        return
    numpy.add.at(target, index, values)


_devices = {}  # "cuda:0" -> its Device: one object per device, so Tensor.device allocates nothing
_placed = {}   # what parse_device returned for each spelling it was given
_backend_of = {}  # device -> its Backend
CPU = Device("cpu")
_backends = {"cpu": Backend("cpu", numpy, numpy.ndarray, lambda a, ordinal: numpy.asarray(a), numpy.asarray,
                            _numpy_scatter_add, lambda seed, ordinal: numpy.random.default_rng(seed), lambda a: CPU)}
_seed = None
_rngs = {}


def register_backend(backend):
    """Make a device kind available (CuPy registers itself lazily; tests register a fake GPU)."""
    _backends[backend.name] = backend
    _backend_of.clear()
    for key in [k for k in _rngs if k.split(":")[0] == backend.name]:
        del _rngs[key]


def _load_cupy():
    try:
        import cupy
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

    def rng_state(gen):  # CuPy's bit generators keep cuRAND's per-thread states in one int8 device array
        return {"bit_generator": type(gen.bit_generator).__name__, "states": cupy.asnumpy(gen.bit_generator._state)}

    def set_rng_state(gen, state):
        target = gen.bit_generator._state
        if state.get("bit_generator") != type(gen.bit_generator).__name__ or state["states"].shape != target.shape:
            raise ValueError("set_rng_state: the saved CUDA random state was made by another generator or "
                             f"another GPU model ({state.get('bit_generator')}, {state['states'].shape} bytes; "
                             f"this device uses {type(gen.bit_generator).__name__}, {target.shape})")
        with target.device:
            target[...] = cupy.asarray(state["states"])

    # scatter-add is cupy.add.at (CuPy 14 deprecates cupyx.scatter_add)
    register_backend(Backend("cuda", cupy, cupy.ndarray, to_device, cupy.asnumpy, cupy.add.at,
                             make_rng, lambda a: f"cuda:{a.device.id}", rng_state, set_rng_state,
                             cupy.cuda.runtime.getDeviceCount))


def load_nccl(ordinal):
    """cupy.cuda.nccl with GPU `ordinal` made current, and a function giving the current stream's pointer."""
    parse_device("cuda")  # loads CuPy, or raises naming the cuda extra
    import cupy
    from cupy.cuda import nccl
    cupy.cuda.Device(ordinal).use()
    return nccl, lambda: cupy.cuda.get_current_stream().ptr


def parse_device(device):
    """The Device that data asked for on `device` lives on: None and "cpu" -> cpu, "cuda" -> cuda:0,
    "cuda:N" (a string or a Device) -> cuda:N. Loads CuPy the first time a GPU is asked for."""
    if device is None:
        return CPU
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0' or a tg.device, got {type(device).__name__}")
    placed = _placed.get(device)
    if placed is None:
        kind, _, ordinal = device.partition(":")
        if kind == "cuda" and "cuda" not in _backends and (not ordinal or ordinal.isdigit()):
            _load_cupy()
        if kind not in _backends or (ordinal and not ordinal.isdigit()) or (kind == "cpu" and ordinal not in ("", "0")):
            raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        placed = _placed[device] = CPU if kind == "cpu" else Device(kind, int(ordinal or 0))
    return placed


def device_count(kind):
    """How many devices of `kind` ("cuda") this process can use: 0 when none or when CuPy is missing."""
    if kind == "cuda" and "cuda" not in _backends:
        try:
            _load_cupy()
        except RuntimeError:
            return 0
    return _backends[kind].device_count() if kind in _backends else 0


def _backend(device):
    found = _backend_of.get(device)
    if found is None:
        found = _backend_of[device] = _backends[device.split(":")[0]]
    return found


def namespace(device):
    """The array module (NumPy or CuPy) that computes on `device`."""
    return _backend(device).xp


def device_of(array):
    """The Device an array lives on (cpu or kind:N)."""
    if isinstance(array, numpy.ndarray):
        return CPU
    for backend in _backends.values():
        if isinstance(array, backend.array_type):
            text = backend.device_of(array)
            return _devices.get(text) or Device(text)
    raise TypeError(f"not an array of any known device: {type(array).__name__}")


def is_array(obj):
    if type(obj) is numpy.ndarray:
        return True
    for b in _backends.values():
        if isinstance(obj, b.array_type):
            return True
    return False


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


def new_rng(device, seed):
    """A random Generator of its own on `device`, seeded with `seed` (what tg.Generator holds)."""
    return _backend(device).make_rng(seed, int(device.split(":")[1]) if ":" in device else 0)


def permutation(device, gen, n):
    """A random permutation of 0..n-1 (int64) drawn from `gen`, a generator of `device`."""
    if isinstance(gen, numpy.random.Generator):
        return gen.permutation(n)
    return namespace(device).argsort(gen.random(n))  # CuPy's Generator has no permutation


def generator_state(device, gen):
    """A snapshot of `gen` (a generator of `device`), as get_rng_state gives for each stream."""
    return _backend(device).rng_state(gen)


def set_generator_state(device, gen, state):
    """Restore a snapshot taken by generator_state."""
    _backend(device).set_rng_state(gen, state)


def host_rng(seed):
    """A NumPy Generator of its own (not one of the library's streams), e.g. for a sampler's seed."""
    return numpy.random.default_rng(seed)


def get_rng_state():
    """A snapshot of every random stream the library uses, that `save` can write: {"seed": manual_seed's
    seed (or None), "devices": {device: its generator's state}}; a device whose stream was never used is
    absent (it will be created from the seed, as it would have been without the snapshot)."""
    return {"seed": _seed, "devices": {device: _backend(device).rng_state(gen) for device, gen in _rngs.items()}}


def set_rng_state(state):
    """Restore what get_rng_state() returned: the random numbers drawn next are the ones that
    were drawn next when the snapshot was taken, on every device."""
    global _seed
    if not isinstance(state, dict) or set(state) != {"seed", "devices"} or not isinstance(state["devices"], dict):
        keys = f" with keys {sorted(state)}" if isinstance(state, dict) else ""
        raise ValueError("set_rng_state: expected the dict that get_rng_state() returns, with keys 'seed' and "
                         f"'devices', got {type(state).__name__}{keys}")
    seed = state["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"set_rng_state: 'seed' must be an integer or None, got {seed!r}")
    streams = {}
    for device, device_state in state["devices"].items():
        device = parse_device(device)
        ordinal = int(device.split(":")[1]) if ":" in device else 0
        gen = _backend(device).make_rng(0, ordinal)
        try:
            _backend(device).set_rng_state(gen, device_state)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"set_rng_state: invalid state for device {device}: {e}") from None
        streams[device] = gen
    _seed = seed
    _rngs.clear()
    _rngs.update(streams)


def is_floating(dt):
    return numpy.dtype(dt).kind == "f"


def is_integer(dt):
    return numpy.dtype(dt).kind in "iu"


def array_namespace(array):
    """The namespace that computes on `array` (fast path for host arrays; NumPy scalars are host values)."""
    if type(array) is numpy.ndarray or isinstance(array, numpy.generic):
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
        import math
        dtype = array.dtype if array.dtype.kind == "f" else float64  # asarray: 0-d gives a float
        return numpy.asarray(numpy.frompyfunc(math.erf, 1, 1)(array), dtype=dtype)
    return scipy_erf(array)


def ignore_float_errors():
    """A context in which NumPy does not warn about inf/NaN (anomaly checks report them instead)."""
    return numpy.errstate(all="ignore")


# ---- process-wide defaults (PyTorch's set_default_dtype / set_default_device) ----------------

default_device = "cpu"  # where tensors are made when no device is given (set_default_device)


def set_default_dtype(dtype):
    """Make `dtype` (a floating-point dtype) the one Python floats and tg.zeros & co. default to."""
    global default_float
    dt = numpy.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"set_default_dtype: only floating-point dtypes can be the default, got {dt}")
    default_float = dt


def get_default_dtype():
    return default_float


def set_default_device(device):
    """Make `device` the one new tensors go to when none is given (None: back to the CPU)."""
    global default_device
    default_device = parse_device(device)
