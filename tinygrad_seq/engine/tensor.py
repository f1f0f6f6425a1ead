"""Tensor: an array on a device, its gradient, and the node of the tape that made it.

Every method that computes calls a primitive of ops.py (or a few of them); backward() runs
the walk of function.py.
"""
import collections
import operator

from . import backend, function, ops
from .function import TensorBase, modes


def _int(op, value, what="axis"):
    """A Python int from an int-like (Python or NumPy integer, not bool), else a TypeError naming the op."""
    if type(value) is int:
        return value
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{op}: {what} must be an int, got {value!r} of type {type(value).__name__}")


def _shape_arg(shape, op="shape"):
    """Accept f(2, 3) and f((2, 3)) alike; every size must be an int (NumPy refuses 2.5)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(_int(op, n, "sizes") for n in shape)


def _axes(op, axis, ndim, dim=None, scalar_axis=True):
    """Normalise an axis argument (int, tuple or None; PyTorch's `dim` too) to a sorted tuple.

    Like NumPy's reductions and squeeze (and PyTorch), a 0-d tensor accepts a single axis 0 or -1,
    which then names no axis (scalar_axis=False turns that off, for flip).
    """
    if dim is not None:
        axis = dim
    if axis is None:
        return None
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    if ndim == 0 and scalar_axis and not isinstance(axis, (tuple, list)) and _int(op, axis) in (0, -1):
        return ()
    out = []
    for a in axes:
        a = _int(op, a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def _axis(op, axis, ndim, extra=0):
    """One axis in [0, ndim + extra) (extra=1 for unsqueeze and stack)."""
    axis = _int(op, axis)
    n = ndim + extra
    if not -n <= axis < n:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % n


class Tensor(TensorBase):
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Tensor(data, requires_grad=False, dtype=None, device=None) copies `data` (a scalar,
    nested list, NumPy/CuPy array or Tensor). Floats default to float32, float64 arrays
    stay float64, integers stay integers.
    """
    __slots__ = ()
    __array_priority__ = 1000
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's operators; NumPy functions refuse Tensors

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data._data
        if device is None:
            device = backend.device_of(data) if backend.is_array(data) else "cpu"
        self._data = backend.new_array(data, None if dtype is None else backend.dtype(dtype),
                                      backend.parse_device(device))
        self.grad = None
        self._node, self._index, self._hooks = None, 0, None
        self._requires_grad = False
        self.requires_grad = requires_grad

    @staticmethod
    def _make(data, node, index):
        """A Tensor around `data`, output `index` of `node` (None: a constant); how the engine makes tensors."""
        t = _new(Tensor)
        t._data, t.grad, t._node, t._index, t._hooks = data, None, node, index, None
        t._requires_grad = node is not None
        return t

    # ---- attributes ------------------------------------------------------------------
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

    def requires_grad_(self, value=True):
        self.requires_grad = value
        return self

    @property
    def data(self):
        """The backend array (NumPy or CuPy) holding the values; not recorded on the tape."""
        return self._data

    @data.setter
    def data(self, value):
        self._data = _as_data(value, self)

    shape = property(lambda self: self._data.shape, doc="The shape, a tuple of ints.")
    ndim = property(lambda self: self._data.ndim, doc="The number of dimensions.")
    dtype = property(lambda self: self._data.dtype, doc="The element type (a NumPy dtype).")
    device = property(lambda self: backend.device_of(self._data), doc='"cpu" or "cuda:N".')
    is_leaf = property(lambda self: self._node is None, doc="True unless an op recorded on the tape made it.")
    grad_fn = property(lambda self: self._node, doc="The Function node that made this tensor (None for leaves).")

    def size(self, dim=None):
        """The shape as a tuple, or the length of axis `dim` (PyTorch's size(); the element count is numel())."""
        return self._data.shape if dim is None else self._data.shape[_axis("size", dim, self.ndim)]

    def dim(self):
        """The number of dimensions (PyTorch's name for ndim)."""
        return self._data.ndim

    def numel(self):
        """The number of elements."""
        return self._data.size

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __repr__(self):
        extra = f", grad_fn={self._node!r}" if self._node is not None else \
            (", requires_grad=True" if self._requires_grad else "")
        dev = self.device
        dev = f", device='{dev}'" if dev != "cpu" else ""
        body = repr(self.numpy()).replace("array(", "").rstrip(")").split(", dtype=")[0]
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # ---- host access -----------------------------------------------------------------
    def numpy(self):
        """A NumPy copy (or view, on the CPU) of the data, detached from the tape."""
        function.refuse("the step reads a value to the host (.item(), .numpy(), bool(), ...)")
        return backend.to_host(self._data)

    def item(self):
        """The single element as a Python number."""
        if self._data.size != 1:
            raise ValueError(f"item: only a tensor with one element can be converted, this one has shape {self.shape}")
        return self.numpy().item()

    def tolist(self):
        """The data as (nested) Python lists of numbers."""
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise ValueError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.item())

    # ---- autograd --------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (grad: the upstream gradient).

        retain_graph (default: create_graph) keeps the graph for another backward.
        create_graph=True records the backward pass on the tape, so the leaves' .grad are
        Tensors that can be differentiated again; they are then accumulated out of place
        (.grad = .grad + g). inputs (a Tensor or a sequence of them, leaves or not) accumulates
        into those tensors' .grad only, as PyTorch's inputs= does.
        """
        if not self._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no grad_fn "
                               "(did you forget requires_grad=True, or run inside no_grad()?)")
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError(f"backward: grad can be implicitly created only for a tensor with one "
                                   f"element; this one has shape {self.shape}, so pass grad=")
            grad = backend.array_namespace(self._data).ones(self.shape, dtype=self.dtype)
        elif create_graph and isinstance(grad, Tensor) and grad.dtype == self.dtype:
            pass  # kept as it is: it may itself require grad
        else:
            grad = grad._data if isinstance(grad, Tensor) else backend.new_array(grad, self.dtype, self.device)
            if backend.device_of(grad) != self.device:
                raise ValueError(f"backward: grad is on {backend.device_of(grad)}, the tensor on {self.device}")
            grad = grad if grad.dtype == self.dtype else grad.astype(self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, expected {self.shape}")
        if create_graph and not isinstance(grad, Tensor):
            grad = Tensor._make(grad, None, 0)
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
        return Tensor._make(self._data, None, 0)

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

    # ---- devices and dtypes ----------------------------------------------------------
    def to(self, device=None, dtype=None):
        """This tensor on another device and/or dtype; also to(dtype) and to(other_tensor), as in PyTorch.

        Differentiable between float dtypes; a result that is not floating has no gradient. Self if nothing changes.
        """
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype
        elif device is not None and not isinstance(device, str):
            device, dtype = None, device  # to(tg.float64)
        out = self
        if device is not None and backend.parse_device(device) != self.device:
            out = ops.Transfer.apply(out, device=backend.parse_device(device))
        if dtype is not None and backend.dtype(dtype) != out.dtype:
            if backend.is_floating(dtype):
                out = ops.Cast.apply(out, dtype=backend.dtype(dtype))
            else:
                out = Tensor._make(out._data.astype(backend.dtype(dtype)), None, 0)
        return out

    def cpu(self):
        """This tensor on the CPU (differentiable; self if already there)."""
        return self.to("cpu")

    def cuda(self, index=0):
        """This tensor on GPU `index` (needs CuPy: pip install "tinygrad_seq[cuda]")."""
        return self.to(f"cuda:{index}")

    def astype(self, dtype):
        """This tensor converted to `dtype` (differentiable for float dtypes)."""
        return self.to(dtype=dtype)

    def float(self):
        """This tensor as float32."""
        return self.to(dtype=backend.float32)

    def double(self):
        """This tensor as float64."""
        return self.to(dtype=backend.float64)

    def long(self):
        """This tensor as int64 (no gradient)."""
        return self.to(dtype=backend.int64)

    def int(self):
        """This tensor as int32 (no gradient)."""
        return self.to(dtype=backend.int32)

    def half(self):
        """This tensor as float16."""
        return self.to(dtype=backend.float16)

    def type(self, dtype=None):
        """With no argument the dtype's name; else this tensor converted to `dtype`."""
        return str(self.dtype) if dtype is None else self.to(dtype=dtype)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    def clone(self):
        """A copy that owns its memory (differentiable: the gradient passes straight through)."""
        return ops.Clone.apply(self)

    # ---- new tensors like this one ---------------------------------------------------
    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A tensor copied from `data`, with this tensor's dtype and device unless told otherwise."""
        return Tensor(data, requires_grad, dtype or self.dtype, device or self.device)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return zeros(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return ones(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    # ---- in place --------------------------------------------------------------------
    def _inplace(self, op, others, compute, write):
        """The one way in-place ops change a tensor.

        Recorded (grad mode on and self or an operand requires grad): `compute()` builds the
        result out of place on the tape and self is rebound to it, as PyTorch rebases the graph;
        a leaf that requires grad refuses. Otherwise `write(array)` changes self's memory, which
        views and detach()ed copies share, and autograd.mark_modified makes any tape node that
        saved that memory refuse to run backward.
        """
        function.refuse("the step writes into a tensor in place")
        if modes.grad and (self._requires_grad or any(isinstance(o, Tensor) and o._requires_grad
                                                                   for o in others)):
            if self._node is None and self._requires_grad:
                raise RuntimeError(f"{op}: a leaf tensor that requires grad is being used in an in-place "
                                   "operation; update parameters inside `with tg.no_grad():` (or through ._data)")
            out = compute()
            if out.shape != self.shape:
                raise ValueError(f"{op}: the result has shape {out.shape}, which does not fit the tensor's "
                                 f"shape {self.shape}")
            out = out.to(dtype=self.dtype)
            self._data, self._node, self._index, self._requires_grad = out._data, out._node, out._index, True
            return self
        try:
            write(self._data)
        except (ValueError, TypeError) as e:
            hint = "; tensors made by expand are read-only views: .clone() them first" if "read-only" in str(e) else ""
            raise (TypeError if isinstance(e, TypeError) else ValueError)(
                f"{op}: {e} (tensor of shape {self.shape} and dtype {self.dtype}{hint})") from None
        function.mark_modified(self._data)
        return self

    def _array_operand(self, other, op):
        other = _operand(other, self, op)
        if isinstance(other, Tensor):
            _same_device(op, self, other)
            return other._data
        return other

    def add_(self, other, *, alpha=1):
        """self += alpha * other, in place."""
        return self._inplace("add_", (other,), lambda: self + (other if alpha == 1 else other * alpha),
                             lambda a: operator.iadd(a, self._scaled(other, alpha, "add_")))

    def sub_(self, other, *, alpha=1):
        """self -= alpha * other, in place."""
        return self._inplace("sub_", (other,), lambda: self - (other if alpha == 1 else other * alpha),
                             lambda a: operator.isub(a, self._scaled(other, alpha, "sub_")))

    def _scaled(self, other, alpha, op):
        other = self._array_operand(other, op)
        return other if alpha == 1 else other * alpha

    def mul_(self, other):
        """self *= other, in place."""
        return self._inplace("mul_", (other,), lambda: self * other,
                             lambda a: operator.imul(a, self._array_operand(other, "mul_")))

    def div_(self, other):
        """self /= other, in place."""
        return self._inplace("div_", (other,), lambda: self / other,
                             lambda a: operator.itruediv(a, self._array_operand(other, "div_")))

    def clamp_(self, min=None, max=None):
        """Clamp to [min, max] in place."""
        return self._inplace("clamp_", (min, max), lambda: self.clip(min, max),
                             lambda a: a.clip(self._array_operand(min, "clamp_") if min is not None else None,
                                              self._array_operand(max, "clamp_") if max is not None else None, out=a))

    clip_ = clamp_

    def fill_(self, value):
        """Set every element to `value` (a number or a one-element tensor), in place."""
        value = value.item() if isinstance(value, Tensor) else value
        return self._inplace("fill_", (), lambda: self.masked_fill(True, value), lambda a: a.fill(value))

    def zero_(self):
        """Set every element to 0, in place."""
        return self.fill_(0)

    def copy_(self, src):
        """Copy `src` (broadcast to this shape, converted to this dtype and device) into this tensor."""
        src = src if isinstance(src, Tensor) else Tensor(src, dtype=self.dtype, device=self.device)

        def write(a):
            a[...] = backend.to_device(src._data, self.device)
        return self._inplace("copy_", (src,), lambda: src.to(self.device, self.dtype).expand(self.shape).clone(), write)

    def masked_fill_(self, mask, value):
        """Set the elements where `mask` is true to `value`, in place."""
        m = self._mask("masked_fill_", mask)
        return self._inplace("masked_fill_", (value,), lambda: self.masked_fill(mask, value),
                             lambda a: backend.array_namespace(a).copyto(a, self._array_operand(value, "masked_fill_"),
                                                                         where=m))

    def detach_(self):
        """Cut this tensor from the tape, in place."""
        self._node, self._index, self._requires_grad = None, 0, False
        return self

    def _mask(self, op, mask):
        m = mask._data if isinstance(mask, Tensor) else backend.new_array(mask, backend.bool_, self.device)
        if m.dtype != backend.bool_:
            raise TypeError(f"{op}: mask must be boolean, got {m.dtype}")
        if backend.device_of(m) != self.device:
            raise ValueError(f"{op}: mask is on {backend.device_of(m)}, the tensor on {self.device}")
        return m

    def masked_fill(self, mask, value):
        """A copy with the elements where `mask` (boolean, broadcast to this shape) is true set to `value`."""
        m = self._mask("masked_fill", mask)
        out = ops.Where.apply(m, _operand(value, self, "masked_fill"), self)
        if out.shape != self.shape:
            raise ValueError(f"masked_fill: mask of shape {m.shape} does not broadcast to the shape {self.shape}")
        return out if out.dtype == self.dtype else out.to(dtype=self.dtype)

    # ---- arithmetic ------------------------------------------------------------------
    def __add__(self, other): return ops.Add.apply(self, _operand(other, self, "add"))
    def __radd__(self, other): return ops.Add.apply(_operand(other, self, "add"), self)
    def __sub__(self, other): return ops.Sub.apply(self, _operand(other, self, "sub"))
    def __rsub__(self, other): return ops.Sub.apply(_operand(other, self, "sub"), self)
    def __mul__(self, other): return ops.Mul.apply(self, _operand(other, self, "mul"))
    def __rmul__(self, other): return ops.Mul.apply(_operand(other, self, "mul"), self)
    def __truediv__(self, other): return ops.Div.apply(self, _operand(other, self, "div"))
    def __rtruediv__(self, other): return ops.Div.apply(_operand(other, self, "div"), self)
    def __pow__(self, other): return ops.Pow.apply(self, _operand(other, self, "pow"))
    def __rpow__(self, other): return ops.Pow.apply(_operand(other, self, "pow"), self)
    def __matmul__(self, other): return ops.Matmul.apply(self, _operand(other, self, "matmul", scalars=False))
    def __rmatmul__(self, other): return ops.Matmul.apply(_operand(other, self, "matmul", scalars=False), self)
    def __neg__(self): return ops.Neg.apply(self)
    def __pos__(self): return self

    def _compare(self, other, name):
        other = _operand(other, self, name.strip("_"))
        if isinstance(other, Tensor):
            _same_device(name, self, other)
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

    # ---- elementwise -----------------------------------------------------------------
    def exp(self):
        """Elementwise e**x."""
        return ops.Exp.apply(self)

    def log(self):
        """Elementwise natural logarithm."""
        return ops.Log.apply(self)

    def tanh(self):
        """Elementwise hyperbolic tangent."""
        return ops.Tanh.apply(self)

    def sigmoid(self):
        """Elementwise 1 / (1 + exp(-x)), computed without overflow."""
        return ops.Sigmoid.apply(self)

    def relu(self):
        """Elementwise max(x, 0) (gradient 0 at x = 0)."""
        return ops.Relu.apply(self)

    def sqrt(self):
        """Elementwise square root."""
        return ops.Pow.apply(self, 0.5)

    def abs(self):
        """Elementwise |x| (gradient sign(x), +1 at 0)."""
        return ops.Where.apply(self._data >= 0, self, ops.Neg.apply(self))

    def clip(self, min=None, max=None):
        """Elementwise clamp to [min, max] (either may be None); also called clamp."""
        out = self if min is None else ops.Maximum.apply(self, min)
        return out if max is None else ops.Minimum.apply(out, max)

    clamp = clip

    # ---- indices ---------------------------------------------------------------------
    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Index of the maximum along `dim` (of the flattened tensor when None); no gradient."""
        return self._arg("argmax", dim if axis is None else axis, keepdim or bool(keepdims))

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Index of the minimum along `dim` (of the flattened tensor when None); no gradient."""
        return self._arg("argmin", dim if axis is None else axis, keepdim or bool(keepdims))

    def _arg(self, op, dim, keepdim):
        a = None if dim is None else _axis(op, dim, max(self.ndim, 1))
        _check_nonempty(op, self, None if a is None else (a,) if self.ndim else ())
        data = self._data if self.ndim else self._data.reshape(1)
        out = getattr(data, op)(axis=a)
        if keepdim:
            out = backend.as_array(out, self.device).reshape(
                [1] * self.ndim if a is None else [1 if k == a else n for k, n in enumerate(self.shape)])
        return Tensor._make(backend.as_array(out, self.device).astype(backend.int64), None, 0)

    def gather(self, dim, index):
        """torch.gather: out[i][j] = self[index[i][j]][j] for dim 0 (and so on); the backward scatter-adds."""
        a = _axis("gather", dim, self.ndim)
        idx = index._data if isinstance(index, Tensor) else backend.new_array(index, None, self.device)
        if not backend.is_integer(idx.dtype) or idx.ndim != self.ndim:
            raise ValueError(f"gather: index must be an integer tensor with {self.ndim} dimensions, "
                             f"got {idx.dtype} with shape {tuple(idx.shape)}")
        xp = backend.array_namespace(idx)
        grid = [xp.arange(n).reshape([n if k == j else 1 for k in range(idx.ndim)]) for j, n in enumerate(idx.shape)]
        grid[a] = idx
        return ops.GetItem.apply(self, index=tuple(grid), advanced=True)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """The k largest (or smallest) elements along `dim` and their indices, as (values, indices).

        Values are gathered by the indices, so their gradient goes to the chosen elements; equal
        elements keep their order (stable sort).
        """
        a = _axis("topk", dim, self.ndim)
        k = _int("topk", k, "k")
        if not 0 <= k <= self.shape[a]:
            raise ValueError(f"topk: k={k} is out of range for axis {a} of size {self.shape[a]}")
        order = (-self._data if largest else self._data).argsort(axis=a, kind="stable")
        indices = order[(slice(None),) * a + (slice(0, k),)]
        return ValuesIndices(self.gather(a, indices), Tensor._make(indices.astype(backend.int64), None, 0))

    # ---- reductions ------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Sum over `axis` (int, tuple or None for all); `dim`/`keepdim` are PyTorch's names."""
        axes = _axes("sum", axis, self.ndim, dim)
        return ops.Sum.apply(self, axis=axes, keepdims=bool(keepdims or keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Mean over `axis` (int, tuple or None for all); `dim`/`keepdim` are PyTorch's names."""
        axes = _axes("mean", axis, self.ndim, dim)
        count = self._data.size if axes is None else _prod(self.shape[a] for a in axes)
        scale = 1.0 / count if count else float("nan")  # the mean of no elements is NaN, as in NumPy
        return ops.Sum.apply(self, axis=axes, keepdims=bool(keepdims or keepdim)) * scale

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As PyTorch: max() is the largest element; max(dim) is (values, indices) along `dim`;
        max(other_tensor) is the elementwise maximum. For values over several axes use amax."""
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        return self._extreme("max", self.amax, self.argmax, dim if axis is None else axis, keepdim or bool(keepdims))

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As PyTorch: min() is the smallest element; min(dim) is (values, indices) along `dim`;
        min(other_tensor) is the elementwise minimum. For values over several axes use amin."""
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        return self._extreme("min", self.amin, self.argmin, dim if axis is None else axis, keepdim or bool(keepdims))

    def _extreme(self, op, values, indices, dim, keepdim):
        if dim is None:
            return values(None, keepdim)
        if isinstance(dim, (tuple, list)):
            raise TypeError(f"{op}: dim must be an int (max(dim) returns values and indices); for the {op} over "
                            f"several axes use a{op}({tuple(dim)})")
        return ValuesIndices(values(dim, keepdim), indices(dim, keepdim))

    def amax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Maximum over `axis` (int, tuple or None for all); tied maxima share the gradient."""
        axes = _axes("amax", axis, self.ndim, dim)
        _check_nonempty("amax", self, axes)
        return ops.Max.apply(self, axis=axes, keepdims=bool(keepdims or keepdim))

    def amin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Minimum over `axis` (int, tuple or None for all); tied minima share the gradient."""
        axes, keepdims = _axes("amin", axis, self.ndim, dim), bool(keepdims or keepdim)
        _check_nonempty("amin", self, axes)
        if backend.is_floating(self.dtype):
            return -((-self).amax(axes, keepdims))
        out = self._data.min(axis=axes, keepdims=keepdims)  # bool/int: no gradient; -x fails (bool) or wraps (int)
        return Tensor._make(backend.as_array(out, self.device), None, 0)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """log(sum(exp(x))) over `axis`, shifted by the (detached) max so it never overflows."""
        axes, keepdims = _axes("logsumexp", axis, self.ndim, dim), bool(keepdims or keepdim)
        x = self if backend.is_floating(self.dtype) else self.double()  # integers: in float64, as NumPy's exp
        if x.numel() == 0:  # nothing to shift by: a sum over no elements is log(0) = -inf, as in PyTorch
            with backend.ignore_float_errors():
                return x.exp().sum(axes, keepdims=keepdims).log()
        shift = x.detach().amax(axes, keepdims=True)
        shift = Tensor._make(backend.array_namespace(shift._data).where(  # infinities: shift by 0
            backend.array_namespace(shift._data).isfinite(shift._data), shift._data, 0), None, 0)
        out = (x - shift)._exp_nonpositive().sum(axes, keepdims=True).log() + shift
        return out if keepdims else out.reshape(()) if axes is None else out.squeeze(axes)

    def _exp_nonpositive(self):
        """exp(z) for z <= 0, exactly 0 where it is negligible next to 1 in z's dtype (exp(-40) ~ 4e-18 in
        float32): exp, and products with its gradient, stay clear of underflow. NaN stays NaN."""
        floor = ops.EXP_FLOOR.get(self.dtype.itemsize, -200.0)
        return where(~(self._data <= floor), self.clip(min=floor).exp(), 0.0)

    def softmax(self, axis=-1, *, dim=None):
        """exp(x - max) / sum(exp(x - max)) along one axis."""
        a = _axis("softmax", axis if dim is None else dim, self.ndim)
        e = (self - self.detach().amax(a, keepdims=True))._exp_nonpositive()
        return e / e.sum(a, keepdims=True)

    def log_softmax(self, axis=-1, *, dim=None):
        """(x - max) - log(sum(exp(x - max))) along one axis: one op (ops.LogSoftmax), stable for any magnitude.

        Subtracting log(sum) from the shifted values, not logsumexp from x, avoids cancellation:
        at |x| ~ 1e4 in float32, x - logsumexp(x) loses three digits.
        """
        a = _axis("log_softmax", axis if dim is None else dim, self.ndim)
        if self.numel() == 0 or not backend.is_floating(self.dtype):
            return self - self.logsumexp(a, keepdims=True)
        return ops.LogSoftmax.apply(self, axis=a)[0]

    # ---- shape -----------------------------------------------------------------------
    def reshape(self, *shape):
        """The same elements in a new shape (one size may be -1); also called view."""
        shape = _shape_arg(shape, "reshape")
        if shape == self.shape:
            return self
        known = _prod(n for n in shape if n != -1)
        if shape.count(-1) > 1 or any(n < -1 for n in shape) or \
                (-1 in shape and (known == 0 or self.numel() % known)) or (-1 not in shape and known != self.numel()):
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} ({self.numel()} elements) "
                             f"into {shape}")
        return ops.Reshape.apply(self, shape=shape)

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    def t(self):
        """The transpose of a tensor with at most 2 dimensions (as torch.t)."""
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with at most 2 dimensions, got shape {self.shape}; "
                             "use transpose(a, b)")
        return self.T if self.ndim == 2 else self

    def narrow(self, dim, start, length):
        """The `length` elements from `start` along `dim` (a view, as torch.narrow)."""
        a = _axis("narrow", dim, self.ndim)
        n, start, length = self.shape[a], _int("narrow", start, "start"), _int("narrow", length, "length")
        start = start + n if -n <= start < 0 else start
        if not (0 <= start <= n and 0 <= length <= n - start):
            raise ValueError(f"narrow: start {start} and length {length} do not fit axis {a} of size {n}")
        return self[(slice(None),) * a + (slice(start, start + length),)]

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _axis("flatten", start_dim, self.ndim), _axis("flatten", end_dim, self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:]) if s <= e else self

    def permute(self, *axes):
        """Reorder the axes: permute(2, 0, 1) or permute((2, 0, 1))."""
        axes = _shape_arg(axes, "permute")
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)) or len(axes) != self.ndim \
                or any(not -self.ndim <= a < self.ndim for a in axes):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} axes of shape {self.shape}")
        return ops.Transpose.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, axis0=None, axis1=None, *, dim0=None, dim1=None):
        """Swap two axes (PyTorch); with no arguments reverse all axes (NumPy)."""
        axis0, axis1 = axis0 if dim0 is None else dim0, axis1 if dim1 is None else dim1
        if axis0 is None and axis1 is None:
            return self.permute(tuple(reversed(range(self.ndim))))
        a, b = _axis("transpose", axis0, self.ndim), _axis("transpose", axis1, self.ndim)
        axes = list(range(self.ndim))
        axes[a], axes[b] = b, a
        return ops.Transpose.apply(self, axes=tuple(axes))

    @property
    def T(self):
        """All axes reversed (the matrix transpose for 2-D tensors)."""
        return self.permute(tuple(reversed(range(self.ndim))))

    def contiguous(self):
        """A C-contiguous copy; use it to hoist a transposed weight out of a time loop."""
        return ops.Contiguous.apply(self)

    def expand(self, *shape):
        """Broadcast size-1 axes (and new leading axes) to `shape`; -1 keeps a size."""
        shape = _shape_arg(shape, "expand")
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to fewer dimensions {shape}")
        target = tuple(self.shape[k - lead] if n == -1 and k >= lead else n for k, n in enumerate(shape))
        if any(self.shape[k] not in (1, target[k + lead]) for k in range(self.ndim)) or min(target, default=0) < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to {shape}")
        return ops.Expand.apply(self, shape=target)

    def flip(self, axis=None, *, dims=None):
        """Reverse the order of elements along `axis` (all axes when None)."""
        axes = _axes("flip", axis if dims is None else dims, self.ndim, scalar_axis=False)
        return ops.Flip.apply(self, axis=axes)

    def squeeze(self, axis=None, *, dim=None):
        """Drop size-1 axes (all of them, or those in `axis`; other sizes are left alone)."""
        axes = _axes("squeeze", axis, self.ndim, dim)
        if axes is None:
            axes = tuple(k for k, n in enumerate(self.shape) if n == 1)
        return self.reshape(tuple(n for k, n in enumerate(self.shape) if not (k in axes and n == 1)))

    def unsqueeze(self, axis=None, *, dim=None):
        """Insert a size-1 axis at position `axis`."""
        a = _axis("unsqueeze", axis if dim is None else dim, self.ndim, extra=1)
        return self.reshape(self.shape[:a] + (1,) + self.shape[a:])

    def split(self, size_or_sections, axis=0, *, dim=None):
        """Split along `axis` into pieces of a given size (int) or of the given sizes (list)."""
        a = _axis("split", axis if dim is None else dim, self.ndim)
        n = self.shape[a]
        if not isinstance(size_or_sections, (tuple, list)):
            size_or_sections = _int("split", size_or_sections, "split_size")
            if size_or_sections <= 0:
                raise ValueError(f"split: size must be positive, got {size_or_sections}")
            sizes = [min(size_or_sections, n - s) for s in range(0, n, size_or_sections)] or [0]
        else:
            sizes = [_int("split", s, "sections") for s in size_or_sections]
            if sum(sizes) != n or min(sizes, default=0) < 0:
                raise ValueError(f"split: sections {sizes} do not add up to {n}, the size of axis {a} of shape {self.shape}")
        return ops.Split.apply(self, sizes=tuple(sizes), axis=a)

    def chunk(self, chunks, axis=0, *, dim=None):
        """Split into `chunks` pieces of equal size (the last may be smaller), like PyTorch."""
        a = _axis("chunk", axis if dim is None else dim, self.ndim)
        if _int("chunk", chunks, "chunks") <= 0:
            raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
        n = self.shape[a]
        size = max(-(-n // chunks), 1)
        return ops.Split.apply(self, sizes=tuple(min(size, n - s) for s in range(0, n, size)) or (0,), axis=a)

    def unbind(self, axis=0, *, dim=None):
        """The slices along `axis` as a tuple of tensors (one tape node)."""
        return ops.Unbind.apply(self, axis=_axis("unbind", axis if dim is None else dim, self.ndim))

    def __getitem__(self, index):
        index, advanced = _index(index, self)
        return ops.GetItem.apply(self, index=index, advanced=advanced)

    def __setitem__(self, index, value):
        """self[index] = value (a Tensor, array or number, broadcast), in place, as in PyTorch: on
        the tape when self or value requires grad, so gradients flow to both (see `_inplace`)."""
        index, advanced = _index(index, self, "setitem")
        value = _operand(value, self, "setitem")

        def write(a):
            a[index] = self._array_operand(value, "setitem")
        self._inplace("setitem", (value,), lambda: ops.SetItem.apply(self, value, index=index, advanced=advanced),
                      write)

    def __iter__(self):
        return iter(self.unbind(0))


_new = object.__new__

ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])
ValuesIndices.__doc__ = "(values, indices), what max(dim), min(dim) and topk return (PyTorch's return_types)."


def _prod(values):
    out = 1
    for v in values:
        out *= v
    return out


def _check_nonempty(op, tensor, axes):
    """max/min have no identity: reducing over an axis of length 0 is an error (as in NumPy)."""
    if any(tensor.shape[a] == 0 for a in (range(tensor.ndim) if axes is None else axes)) or \
            (axes is None and tensor.numel() == 0):
        raise ValueError(f"{op}: cannot reduce over an axis of length 0 (shape {tensor.shape}, axis {axes})")


def _as_data(value, tensor):
    """What `tensor._data = value` stores: a Tensor's array, or an array on the tensor's device."""
    if isinstance(value, Tensor):
        value = value._data
    elif not backend.is_array(value) and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") \
            and tensor.device == "cpu":
        value = backend.as_array(value)  # NumPy's 0-d results come back as NumPy scalars
    if not backend.is_array(value):
        raise TypeError(f"._data must be an array of the tensor's device ({tensor.device}) or a Tensor, got "
                        f"{type(value).__name__}; to change the values in place use `t._data[...] = ...` "
                        "or `with no_grad(): t.copy_(...)`")
    if backend.device_of(value) != tensor.device:
        raise ValueError(f"._data: the array is on {backend.device_of(value)} but the tensor on {tensor.device}; "
                         "move the tensor with .to(device) (or Module.to) instead")
    if tensor._requires_grad and not backend.is_floating(value.dtype):
        raise TypeError(f"._data: a tensor that requires grad must hold floats, got an array of {value.dtype}")
    return value


def _same_device(op, a, b):
    if a.device != b.device:
        raise ValueError(f"{op}: tensors are on different devices ({a.device} and {b.device}); "
                         "move them with .to(device) first")


def _operand(value, like, op="", scalars=True):
    """Python scalars pass through (NumPy keeps the tensor's dtype); arrays become constants."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)) and scalars:
        return value
    if not backend.is_array(value) and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):
        value = backend.new_array(value, value.dtype, like.device)  # a NumPy scalar: keeps its dtype, as in NumPy
    if backend.is_array(value) or isinstance(value, (list, tuple, bool, int, float)):
        return Tensor._make(backend.new_array(value, None, backend.device_of(value) if backend.is_array(value)
                                              else like.device), None, 0)
    raise TypeError(f"{op or 'Tensor'}: unsupported operand of type {type(value).__name__} for a Tensor")


def _index(index, tensor, op="getitem"):
    """Turn Tensor/list parts of an index into device arrays; report whether it is advanced."""
    parts = index if isinstance(index, tuple) else (index,)
    out, advanced = [], False
    for p in parts:
        if isinstance(p, Tensor):
            _same_device(op, tensor, p)
            p = p._data
        elif isinstance(p, list):
            p = backend.new_array(p, None, tensor.device)
            if p.size == 0:  # [] and [[]] index nothing (NumPy's empty integer index); not float arrays
                p = p.astype(backend.int64)
        elif not isinstance(p, (int, slice)) and p is not None and p is not Ellipsis and not backend.is_array(p) \
                and hasattr(type(p), "__index__"):
            p = operator.index(p)  # a NumPy integer scalar
        elif backend.is_array(p) and backend.device_of(p) != tensor.device:
            p = backend.to_device(p, tensor.device)
        if backend.is_array(p):
            if p.dtype.kind not in "biu":
                raise TypeError(f"{op}: index arrays must be integer or boolean, got {p.dtype}")
            advanced = True
        elif not (p is None or p is Ellipsis or isinstance(p, (slice, int))):
            raise TypeError(f"{op}: unsupported index of type {type(p).__name__}")
        out.append(p)
    return (tuple(out) if isinstance(index, tuple) or len(out) != 1 else out[0]), advanced


# ---- creation ------------------------------------------------------------------------

def _creation(fill, shape, dtype, device, requires_grad):
    device = backend.parse_device(device)
    dtype = backend.default_float if dtype is None else backend.dtype(dtype)
    t = Tensor._make(fill(backend.namespace(device), _shape_arg(shape), dtype, device), None, 0)
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


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the device's seeded stream (see manual_seed)."""
    return _creation(lambda xp, s, dt, dev: backend.rng(dev).standard_normal(s, dtype=dt),
                     shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from the device's seeded stream (see manual_seed)."""
    return _creation(lambda xp, s, dt, dev: backend.rng(dev).random(s, dtype=dt),
                     shape, dtype, device, requires_grad)


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
    a = _axis("cat", axis if dim is None else dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(m != n for k, (m, n) in enumerate(zip(t.shape, tensors[0].shape)) if k != a):
            raise ValueError(f"cat: shapes {[t.shape for t in tensors]} differ outside axis {a}")
    return ops.Cat.apply(*tensors, axis=a)


def stack(tensors, axis=0, *, dim=None):
    """Stack equally shaped tensors along a new axis (one tape node, O(T) backward)."""
    tensors = _tensors("stack", tensors)
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted({t.shape for t in tensors})}")
    return ops.Stack.apply(*tensors, axis=_axis("stack", axis if dim is None else dim, tensors[0].ndim, extra=1))


def where(condition, a, b):
    """Elementwise `a` where condition is true, else `b` (the condition gets no gradient)."""
    like = a if isinstance(a, Tensor) else b
    if isinstance(condition, Tensor):
        _same_device("where", like, condition) if isinstance(like, Tensor) else None
        condition = condition._data
    elif not backend.is_array(condition):
        condition = backend.new_array(condition, backend.bool_, like.device if isinstance(like, Tensor) else "cpu")
    if condition.dtype != backend.bool_:
        raise TypeError(f"where: condition must be boolean, got {condition.dtype}")
    if not isinstance(like, Tensor):
        like = Tensor(a)
    return ops.Where.apply(condition, _operand(a, like, "where"), _operand(b, like, "where"))


def maximum(a, b):
    """Elementwise maximum (gradient split evenly at ties)."""
    return ops.Maximum.apply(*_pair(a, b, "maximum"))


def minimum(a, b):
    """Elementwise minimum (gradient split evenly at ties)."""
    return ops.Minimum.apply(*_pair(a, b, "minimum"))


def _pair(a, b, op):
    if isinstance(a, Tensor):
        return a, _operand(b, a, op)
    return _operand(a, b, op), b
