"""Tensor: an array on a device, its gradient, and the node of the tape that made it.

This is the engine's tensor: what the tape needs (the array, requires_grad, the node that
made it, backward, hooks), its operators, and the methods the walk and the rules call on
Tensors under create_graph (sum, reshape, T, astype: NumPy's signatures); each calls a primitive
of ops.py. tg.Tensor (tinygrad_seq/tensors) adds PyTorch's everyday methods and conventions on
top; the engine makes tensors with `_make` of those it is given, so they are of the user's class.
"""

from . import backend, function, ops
from .function import TensorBase, modes


def same_device(op, a, b):
    if a.device != b.device:
        raise ValueError(f"{op}: tensors are on different devices ({a.device} and {b.device}); "
                         "move them with .to(device) first")


def operand(value, like, op="", scalars=True):
    """An op's other argument: Python scalars pass through (NumPy keeps the tensor's dtype); arrays,
    NumPy scalars and lists become constant tensors on `like`'s device."""
    if isinstance(value, Tensor) or isinstance(value, (bool, int, float)) and scalars:
        return value
    if not backend.is_array(value) and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):
        value = backend.new_array(value, value.dtype, like.device)  # a NumPy scalar: keeps its dtype, as in NumPy
    if backend.is_array(value) or isinstance(value, (list, tuple, bool, int, float)):
        device = backend.device_of(value) if backend.is_array(value) else like.device
        return like._make(backend.new_array(value, None, device), None, 0)
    raise TypeError(f"{op or 'Tensor'}: unsupported operand of type {type(value).__name__} for a Tensor")


class Tensor(TensorBase):
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Tensor(data, requires_grad=False, dtype=None, device=None) copies `data` (a scalar, nested
    list, NumPy/CuPy array or Tensor). Floats default to float32, float64 arrays stay float64,
    integers stay integers.
    """
    __slots__ = ()
    __array_priority__ = 1000
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's operators; NumPy functions refuse Tensors

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if device is None:  # a tensor's or a GPU array's device, else the default (backend.set_default_device)
            array = data._data if isinstance(data, Tensor) else data
            device = backend.device_of(array) if isinstance(data, Tensor) or backend.is_array(array) and \
                not isinstance(array, backend.ndarray) else backend.default_device
        if isinstance(data, Tensor):
            function.reads(data)
            data = data._data
        self._data = backend.new_array(data, None if dtype is None else backend.dtype(dtype),
                                      backend.parse_device(device))
        self.grad, self._node, self._index, self._hooks, self._requires_grad = None, None, 0, None, False
        self.requires_grad = requires_grad

    @staticmethod
    def _make(data, node, index):
        """A Tensor around `data`, output `index` of `node` (None: a constant): how the engine makes tensors."""
        t = _new(Tensor)
        t._data, t.grad, t._node, t._index, t._hooks, t._requires_grad = data, None, node, index, None, node is not None
        return t

    @property
    def requires_grad(self):
        """Whether backward() computes a gradient for this tensor (only floating-point tensors can)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and not backend.is_floating(self._data.dtype):
            raise TypeError(f"only floating-point tensors can require grad, this one is {self._data.dtype}")
        if not value and self._node is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; use .detach()")
        self._requires_grad = bool(value)

    @property
    def array(self):
        """The backend array (NumPy or CuPy) holding the values: shared, not a copy, and not recorded on the tape."""
        if modes.observer is not None:
            function.reads(self)
        return self._data
    shape = property(lambda self: self._data.shape, doc="The shape, a tuple of ints.")
    ndim = property(lambda self: self._data.ndim, doc="The number of dimensions.")
    dtype = property(lambda self: self._data.dtype, doc="The element type (a NumPy dtype).")
    device = property(lambda self: backend.device_of(self._data), doc='"cpu" or "cuda:N".')
    is_leaf = property(lambda self: self._node is None, doc="True unless an op recorded on the tape made it.")
    grad_fn = property(lambda self: self._node, doc="The Function node that made this tensor (None for leaves).")

    # ---- host access -----------------------------------------------------------------
    def numpy(self):
        """A NumPy copy (or view, on the CPU) of the data, detached from the tape."""
        function.refuse("the step reads a value to the host (.item(), .numpy(), bool(), ...); keep the step on "
                        "tensors (tg.where instead of a Python if on a value)")
        return backend.to_host(self._data)

    # ---- autograd --------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (grad: the upstream gradient).

        retain_graph (default: create_graph) keeps the graph for another backward.
        create_graph=True runs every rule on Tensors, so the leaves' .grad are on the tape and
        can be differentiated again; they are then accumulated out of place (.grad = .grad + g).
        inputs (a Tensor or a sequence of them, leaves or not) accumulates into those tensors'
        .grad only, as PyTorch's inputs= does.
        """
        if not self._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no grad_fn "
                               "(did you forget requires_grad=True, or run inside no_grad()?)")
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError(f"backward: grad can be implicitly created only for a tensor with one "
                                   f"element; this one has shape {self.shape}, so pass grad=")
            grad = backend.array_namespace(self._data).ones(self.shape, dtype=self.dtype)
        elif not (create_graph and isinstance(grad, Tensor) and grad.dtype == self.dtype):  # else: kept, on the tape
            grad = grad._data if isinstance(grad, Tensor) else backend.new_array(grad, self.dtype, self.device)
            if backend.device_of(grad) != self.device:
                raise ValueError(f"backward: grad is on {backend.device_of(grad)}, the tensor on {self.device}")
            grad = grad if grad.dtype == self.dtype else grad.astype(self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, expected {self.shape}")
        if create_graph and not isinstance(grad, Tensor):
            grad = self._make(grad, None, 0)
        targets = None
        if inputs is not None:
            targets = [inputs] if isinstance(inputs, Tensor) else list(inputs)
            if not targets:
                raise RuntimeError("backward: inputs= is an empty sequence; pass the tensors to accumulate "
                                   "gradients into")
            if not all(isinstance(t, Tensor) for t in targets):
                raise TypeError(f"backward: inputs= must be a Tensor or a sequence of Tensors, got {inputs!r}")
        retain = create_graph if retain_graph is None else bool(retain_graph)
        grads, leaves, owned = function.walk([self], [grad], create_graph, retain, targets)
        for t in (leaves.values() if targets is None else targets):
            key = id(t) if t._node is None else (t._node, t._index)
            if key in grads:
                function.into_grad(t, grads.pop(key), key in owned)

    def detach(self):
        """The same data, cut from the tape (shares memory)."""
        return self._make(self._data, None, 0)

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (leaves always keep it)."""
        if self._node is not None:
            self._node.add_hook(self._index, retain=self)

    def register_hook(self, hook):
        """Call hook(grad) during backward; a returned Tensor replaces the gradient."""
        if not self._requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not require grad")
        if self._node is not None:
            self._node.add_hook(self._index, hook=hook)
        else:
            self._hooks = (self._hooks or []) + [hook]
        return hook

    def astype(self, dtype):
        """This tensor converted to `dtype` (differentiable between float dtypes; other results have no gradient)."""
        dtype = backend.dtype(dtype)
        if dtype == self.dtype:
            return self
        return ops.Cast.apply(self, dtype=dtype) if backend.is_floating(dtype) else \
            self._make(self._data.astype(dtype), None, 0)

    # ---- operators -------------------------------------------------------------------
    def __add__(self, other): return ops.Add.apply(self, operand(other, self, "add"))
    def __radd__(self, other): return ops.Add.apply(operand(other, self, "add"), self)
    def __sub__(self, other): return ops.Sub.apply(self, operand(other, self, "sub"))
    def __rsub__(self, other): return ops.Sub.apply(operand(other, self, "sub"), self)
    def __mul__(self, other): return ops.Mul.apply(self, operand(other, self, "mul"))
    def __rmul__(self, other): return ops.Mul.apply(operand(other, self, "mul"), self)
    def __truediv__(self, other): return ops.Div.apply(self, operand(other, self, "div"))
    def __rtruediv__(self, other): return ops.Div.apply(operand(other, self, "div"), self)
    def __pow__(self, other): return ops.Pow.apply(self, operand(other, self, "pow"))
    def __rpow__(self, other): return ops.Pow.apply(operand(other, self, "pow"), self)
    def __matmul__(self, other): return ops.Matmul.apply(self, operand(other, self, "matmul", scalars=False))
    def __rmatmul__(self, other): return ops.Matmul.apply(operand(other, self, "matmul", scalars=False), self)
    def __neg__(self): return ops.Neg.apply(self)
    def __pos__(self): return self
    def __abs__(self):  # the sign test is an op, so a captured step replays it rather than baking it in
        return ops.Where.apply(self._compare(0, "__ge__"), self, ops.Neg.apply(self))

    def _compare(self, other, name):
        other = operand(other, self, name.strip("_"))
        if isinstance(other, Tensor):
            same_device(name, self, other)
            other = other._data
        with function.no_grad():  # an op, so that a captured time step replays it; no gradient
            return ops.Compare.apply(self, other, name=name)

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    def __eq__(self, other): return self._compare(other, "__eq__")
    def __ne__(self, other): return self._compare(other, "__ne__")
    __hash__ = object.__hash__

    # ---- what the walk and the rules call on Tensors ------------------------------------
    def sum(self, axis=None, keepdims=False):
        """Sum over `axis` (an int or a tuple of non-negative axes, or None for all), as NumPy's."""
        axis = (axis % self._data.ndim,) if type(axis) is int else axis
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def reshape(self, shape):
        """The same elements in the shape `shape` (a tuple; one size may be -1), as NumPy's."""
        return self if shape == self._data.shape else ops.Reshape.apply(self, shape=tuple(shape))

    @property
    def T(self):
        """All axes reversed (the matrix transpose for 2-D tensors)."""
        return ops.Transpose.apply(self, axes=tuple(reversed(range(self.ndim))))


_new = object.__new__
