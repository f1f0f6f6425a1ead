"""tg.* functions that make tensors or join them: creation (zeros, ones, full, randn, rand, randint,
randperm, arange, tensor, from_numpy, *_like), cat, stack, where, maximum, minimum."""
from ..engine import backend, ops
from ..engine.tensor import operand, same_device
from .generator import stream
from .methods import axis_arg, shape_arg
from .tensor import Tensor

# ---- creation ------------------------------------------------------------------------

def _creation(fill, shape, dtype, device, requires_grad):
    device = backend.parse_device(device)
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
    if isinstance(condition, Tensor):
        same_device("where", like, condition) if isinstance(like, Tensor) else None
        condition = condition._data
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
