"""A test-only device, "fake", whose arrays behave like CuPy's on a machine without a GPU.

FakeArray wraps a NumPy array but, like cupy.ndarray, refuses to be converted to NumPy
implicitly (`numpy.asarray(fake)` raises TypeError) and refuses to be mixed with plain
numpy.ndarray operands in arithmetic, ufuncs and namespace functions. Python scalars and
NumPy scalars mix freely, as they do with CuPy. Reductions return 0-d FakeArrays (CuPy never
returns NumPy scalars). The only ways across are the backend's explicit `to_device` /
`to_host` (here `FakeArray.get()`), and NumPy arrays used as *indices* (CuPy copies those).

So any place where the engine lets a host array leak into device computation fails here,
with the same TypeError a CUDA machine would give, on every machine.

`register()` installs the backend under the name "fake" (device string "fake:0").
"""
import operator
import types

import numpy

from tinygrad_seq.engine import backend as _backend

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


def _refuse(value):
    raise TypeError(f"Unsupported type {type(value)} mixed with a fake-device array "
                    "(a host numpy.ndarray reached device computation)")


def _unwrap(value, allow_host=False):
    """FakeArray -> its NumPy array, recursively through lists, tuples and dicts.

    Plain numpy.ndarray operands are refused unless `allow_host` (indices, like CuPy).
    """
    if type(value) is FakeArray:
        return value._a
    if isinstance(value, numpy.ndarray):
        if not allow_host:
            _refuse(value)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, allow_host) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, allow_host) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results -> FakeArray (NumPy scalars become 0-d arrays, as CuPy returns)."""
    if isinstance(value, numpy.ndarray):
        return FakeArray._from(value)
    if isinstance(value, numpy.generic):
        return FakeArray._from(numpy.asarray(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_wrap(v) for v in value)
    return value


class FakeArray:
    """A device array that is not a numpy.ndarray and will not silently become one."""
    __slots__ = ("_a", "__weakref__")  # CuPy's ndarray can be weakly referenced too (the in-place check does)
    __array_priority__ = 100  # below Tensor's 1000, so Tensor's reflected operators win

    @classmethod
    def _from(cls, array):
        out = object.__new__(cls)
        out._a = array
        return out

    def __init__(self, *args, **kwargs):
        raise TypeError("create FakeArrays with fake_device.xp (asarray, zeros, ...)")

    # ---- conversions: explicit only ----------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT)

    def get(self):
        """A NumPy copy (the explicit device -> host transfer, as cupy.ndarray.get)."""
        return self._a.copy()

    @property
    def data(self):
        """The memory pointer (as cupy.ndarray.data, a MemoryPointer whose .ptr is the address)."""
        return _MemoryPointer(self._a)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # ---- attributes and methods forward to the NumPy array, results wrapped --------
    def __getattr__(self, name):
        if name.startswith("__"):  # __array_interface__, __array_struct__, __dlpack__...: no way back to NumPy
            raise AttributeError(f"FakeArray has no attribute {name!r}")
        attr = getattr(self._a, name)
        if callable(attr):
            def method(*args, **kwargs):
                return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
            return method
        return _wrap(attr)

    def __repr__(self):
        return "fake" + repr(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index, allow_host=True)])

    def __setitem__(self, index, value):
        self._a[_unwrap(index, allow_host=True)] = _unwrap(value)

    def __matmul__(self, other):
        return self._binary(operator.matmul, other)

    def __rmatmul__(self, other):
        return self._binary(operator.matmul, other, reflected=True)

    def _binary(self, op, other, reflected=False):
        if not isinstance(other, (FakeArray, numpy.ndarray, numpy.generic, bool, int, float, complex)):
            return NotImplemented
        other = _unwrap(other)
        return _wrap(op(other, self._a) if reflected else op(self._a, other))

    def _inplace(self, op, other):
        if not isinstance(other, (FakeArray, numpy.ndarray, numpy.generic, bool, int, float, complex)):
            return NotImplemented
        op(self._a, _unwrap(other))
        return self


class _MemoryPointer:
    """cupy.cuda.MemoryPointer's `ptr`: the address of the first element (keeps the array alive)."""
    __slots__ = ("_owner", "ptr")

    def __init__(self, array):
        self._owner, self.ptr = array, array.ctypes.data


def _install_operators():
    binary = ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
              "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne"]
    for name in binary:
        op = getattr(operator, name + "_" if name in ("and", "or") else name)

        def forward(self, other, op=op):
            return self._binary(op, other)

        def reflected(self, other, op=op):
            return self._binary(op, other, reflected=True)

        setattr(FakeArray, f"__{name}__", forward)
        if name not in ("lt", "le", "gt", "ge", "eq", "ne"):
            setattr(FakeArray, f"__r{name}__", reflected)
            iop = getattr(operator, f"i{name}")
            setattr(FakeArray, f"__i{name}__", lambda self, other, iop=iop: self._inplace(iop, other))
    setattr(FakeArray, "__imatmul__", lambda self, other: NotImplemented)
    for name in ("neg", "pos", "abs", "invert"):
        setattr(FakeArray, f"__{name}__", lambda self, op=getattr(operator, name): _wrap(op(self._a)))
    FakeArray.__hash__ = None


_install_operators()


# ---- the namespace: numpy's functions, taking and returning FakeArrays ----------------

_FROM_HOST = {"asarray", "array", "asanyarray"}  # explicit host -> device copies, like cupy.asarray


class _FakeNumpy(types.ModuleType):
    """`xp` for the fake device: numpy's API; host arrays are refused except by asarray/array."""

    ndarray = FakeArray

    def __getattr__(self, name):
        attr = getattr(numpy, name)
        if name in _FROM_HOST:
            def from_host(obj, *args, **kwargs):
                if type(obj) is FakeArray:  # already on the device: asarray may return it as is
                    return FakeArray._from(attr(obj._a, *args, **kwargs))
                return FakeArray._from(numpy.array(obj, *args, **kwargs))  # host data is always copied
            return from_host
        if isinstance(attr, (type, types.ModuleType)) or not callable(attr):
            return attr  # dtypes, scalar types, constants
        if isinstance(attr, numpy.ufunc):
            return _FakeUfunc(attr)

        def function(*args, **kwargs):
            return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        function.__name__ = name
        return function


class _FakeUfunc:
    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        out = kwargs.get("out")
        result = self._ufunc(*_unwrap(args), **_unwrap(kwargs))
        return out if out is not None else _wrap(result)

    def __getattr__(self, name):  # reduce, accumulate, at, ...
        attr = getattr(self._ufunc, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))


xp = _FakeNumpy("fake_numpy")


class FakeGenerator:
    """numpy.random.Generator whose samples land on the fake device."""

    def __init__(self, seed):
        self._gen = numpy.random.default_rng(seed)

    def __getattr__(self, name):
        attr = getattr(self._gen, name)
        return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))


def to_device(array, ordinal):
    if type(array) is FakeArray:
        return array
    return FakeArray._from(numpy.array(array))  # host data: an explicit copy, like cupy.asarray


def to_host(array):
    if type(array) is not FakeArray:
        raise TypeError(f"to_host: expected a fake-device array, got {type(array).__name__}")
    return array.get()


def scatter_add(target, index, values):
    """target[index] += values with repeated indices accumulating (cupyx.scatter_add)."""
    if type(target) is not FakeArray:
        raise TypeError(f"scatter_add: target must be a fake-device array, got {type(target).__name__}")
    numpy.add.at(target._a, _unwrap(index, allow_host=True), _unwrap(values))


BACKEND = _backend.Backend(name="fake", xp=xp, array_type=FakeArray, to_device=to_device, to_host=to_host,
                           scatter_add=scatter_add, make_rng=lambda seed, ordinal: FakeGenerator(seed),
                           device_of=lambda a: "fake:0", rng_state=lambda gen: gen._gen.bit_generator.state,
                           set_rng_state=lambda gen, state: setattr(gen._gen.bit_generator, "state", state))


def register():
    """Make device "fake" available to tinygrad_seq (idempotent)."""
    _backend.register_backend(BACKEND)
