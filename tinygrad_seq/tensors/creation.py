"""tg.* functions that make tensors or join them: creation (zeros, ones, full, empty, randn, rand, randint,
randperm, arange, linspace, eye, tensor, as_tensor, from_numpy, *_like, the legacy typed constructors
FloatTensor, LongTensor, ...), cat, stack, where, maximum, minimum."""
from ..engine import backend, ops
from ..engine.tensor import operand, same_device
from .generator import stream
from .methods import axis_arg, shape_arg
from .tensor import Tensor

# ---- creation ------------------------------------------------------------------------

def _creation(fill, shape, dtype, device, requires_grad):
    device = backend.default_device if device is None else backend.parse_device(device)
    dtype = backend.default_float if dtype is None else backend.dtype(dtype)
    t = Tensor._make(fill(backend.namespace(device), shape_arg(shape), dtype, device), None, 0)
    t.requires_grad = requires_grad
    return t


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: zeros(2, 3) or zeros((2, 3)); float32 unless `dtype` says otherwise."""
    return _creation(lambda xp, s, dt, dev: xp.zeros(s, dtype=dt), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of ones: ones(2, 3) or ones((2, 3)); float32 unless `dtype` says otherwise."""
    return _creation(lambda xp, s, dt, dev: xp.ones(s, dtype=dt), shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of `shape` filled with `fill_value` (float32 unless `dtype` says otherwise)."""
    return _creation(lambda xp, s, dt, dev: xp.full(s, fill_value, dtype=dt), (shape,), dtype, device, requires_grad)


def randn(*shape, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the device's seeded stream (see manual_seed) or from `generator`."""
    return _creation(lambda xp, s, dt, dev: stream(generator, dev, "randn").standard_normal(s, dtype=dt),
                     shape, dtype, device, requires_grad)


def rand(*shape, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from the device's seeded stream (see manual_seed) or from `generator`."""
    return _creation(lambda xp, s, dt, dev: stream(generator, dev, "rand").random(s, dtype=dt),
                     shape, dtype, device, requires_grad)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    """Integers drawn uniformly from [low, high): randint(high, size) or randint(low, high, size); int64
    unless `dtype` says otherwise."""
    if size is None:
        low, high, size = 0, low, high
    if high is None or size is None:
        raise TypeError("randint: expected randint(high, size) or randint(low, high, size), e.g. randint(0, 10, (3,))")
    if not low < high:
        raise RuntimeError(f"randint: expected low < high, got low={low} and high={high}")
    dtype = backend.int64 if dtype is None else dtype

    def fill(xp, s, dt, dev):
        return stream(generator, dev, "randint").integers(low, high, s, dtype=backend.int64).astype(dt, copy=False)
    return _creation(fill, (size,), dtype, device, requires_grad)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of 0, ..., n-1 (int64 unless `dtype` says otherwise)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise RuntimeError(f"randperm: n must be a non-negative integer, got {n!r}")
    dtype = backend.int64 if dtype is None else dtype

    def fill(xp, s, dt, dev):
        return backend.permutation(dev, stream(generator, dev, "randperm"), n).astype(dt, copy=False)
    return _creation(fill, (), dtype, device, requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    """Evenly spaced values in [start, stop); int64 for int arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = backend.int64 if all(isinstance(v, int) for v in (start, stop, step)) else backend.default_float
    return _creation(lambda xp, s, dt, dev: xp.arange(start, stop, step, dtype=dt), (), dtype, device, requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor copied from `data` (PyTorch's torch.tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def from_numpy(array):
    """A CPU tensor that shares memory with the NumPy array `array` (its dtype is kept)."""
    if not isinstance(array, backend.ndarray):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"from_numpy: cannot make a tensor from an array of dtype {array.dtype}")
    return Tensor._make(array, None, 0)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    """Zeros with t's shape, dtype and device (unless given)."""
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    """Ones with t's shape, dtype and device (unless given)."""
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor (its values are whatever the memory held): empty(2, 3) or empty((2, 3))."""
    return _creation(lambda xp, s, dt, dev: xp.empty(s, dtype=dt), shape, dtype, device, requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end, both included."""
    return _creation(lambda xp, s, dt, dev: xp.linspace(start, end, steps, dtype=dt), (), dtype, device,
                     requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """An n x m (n x n) matrix with ones on the diagonal."""
    return _creation(lambda xp, s, dt, dev: xp.eye(n, m, dtype=dt), (), dtype, device, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """`data` as a tensor, sharing memory where it can: a Tensor or NumPy array already of the dtype and
    device is not copied (PyTorch's torch.as_tensor)."""
    if isinstance(data, Tensor):
        return data.to(device, dtype)
    if isinstance(data, backend.ndarray) and data.dtype.kind in "biuf" and (dtype is None or backend.dtype(dtype) ==
                                                                            data.dtype):
        shared = from_numpy(data)
        return shared.to(backend.default_device if device is None else device)
    return tensor(data, dtype=dtype, device=device)


class _LegacyTensorType(type):
    """torch.FloatTensor & co.: calling one makes a CPU tensor of its dtype, FloatTensor(2, 3) of that shape
    (uninitialised) and FloatTensor([1, 2]) from data; isinstance(t, FloatTensor) tests dtype and device."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor) and obj.dtype == cls.dtype and obj.device == "cpu"

    def __call__(cls, *args, device=None):
        if device is not None and backend.parse_device(device) != "cpu":
            raise ValueError(f"{cls.__name__}: the legacy constructor makes CPU tensors, got device {device!r}; "
                             f"use tg.empty(..., dtype=tg.{cls.dtype}, device={device!r}) or tg.tensor(...)")
        if all(type(a) is int for a in args):  # sizes (none: an empty tensor)
            return empty(args or (0,), dtype=cls.dtype, device="cpu")
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}: expected sizes (ints) or one sequence of data, got {args!r}")
        data = args[0]
        if isinstance(data, Tensor):
            if data.dtype != cls.dtype or data.device != "cpu":
                raise TypeError(f"{cls.__name__}: expected a CPU tensor of {cls.dtype}, got one of {data.dtype} "
                                f"on {data.device}; convert it with .to(...)")
            return data.detach()  # the same memory, as PyTorch's
        return tensor(data, dtype=cls.dtype, device="cpu")


def _legacy(name, dtype):
    return _LegacyTensorType(name, (), {"dtype": dtype, "__module__": __name__, "__doc__": f"A CPU tensor of {dtype} "
                                        f"(PyTorch's legacy constructor): {name}(sizes...) or {name}(data)."})


FloatTensor = _legacy("FloatTensor", backend.float32)
DoubleTensor = _legacy("DoubleTensor", backend.float64)
HalfTensor = _legacy("HalfTensor", backend.float16)
LongTensor = _legacy("LongTensor", backend.int64)
IntTensor = _legacy("IntTensor", backend.int32)
ShortTensor = _legacy("ShortTensor", backend.int16)
CharTensor = _legacy("CharTensor", backend.int8)
ByteTensor = _legacy("ByteTensor", backend.uint8)
BoolTensor = _legacy("BoolTensor", backend.bool_)


# ---- free functions ------------------------------------------------------------------

def _tensors(op, tensors):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{op}: expected a sequence of Tensors")
    return tensors


def cat(tensors, axis=0, *, dim=None):
    """Concatenate along an existing axis (one tape node)."""
    tensors = _tensors("cat", tensors)
    a = axis_arg("cat", axis if dim is None else dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(m != n for k, (m, n) in enumerate(zip(t.shape, tensors[0].shape)) if k != a):
            raise ValueError(f"cat: shapes {[t.shape for t in tensors]} differ outside axis {a}")
    return ops.Cat.apply(*tensors, axis=a)


def stack(tensors, axis=0, *, dim=None):
    """Stack equally shaped tensors along a new axis (one tape node, O(T) backward)."""
    tensors = _tensors("stack", tensors)
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted({t.shape for t in tensors})}")
    return ops.Stack.apply(*tensors, axis=axis_arg("stack", axis if dim is None else dim, tensors[0].ndim, extra=1))


def where(condition, a, b):
    """Elementwise `a` where condition is true, else `b` (the condition gets no gradient)."""
    like = a if isinstance(a, Tensor) else b
    if isinstance(condition, Tensor):  # kept a Tensor: the op reads it, so a captured step replays the test
        same_device("where", like, condition) if isinstance(like, Tensor) else None
    elif not backend.is_array(condition):
        condition = backend.new_array(condition, backend.bool_, like.device if isinstance(like, Tensor) else "cpu")
    if condition.dtype != backend.bool_:
        raise TypeError(f"where: condition must be boolean, got {condition.dtype}")
    if not isinstance(like, Tensor):
        like = Tensor(a)
    return ops.Where.apply(condition, operand(a, like, "where"), operand(b, like, "where"))


def maximum(a, b):
    """Elementwise maximum (gradient split evenly at ties)."""
    return ops.Maximum.apply(*_pair(a, b, "maximum"))


def minimum(a, b):
    """Elementwise minimum (gradient split evenly at ties)."""
    return ops.Minimum.apply(*_pair(a, b, "minimum"))


def _pair(a, b, op):
    if isinstance(a, Tensor):
        return a, operand(b, a, op)
    return operand(a, b, op), b
