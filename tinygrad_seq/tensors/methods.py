"""PyTorch's everyday Tensor methods, on the engine's Tensor: tg.Tensor inherits them (tensors/__init__.py).

Each is a composite or a convenience over the primitives (engine/ops.py) and the engine's
Tensor (operators, sum, reshape, T, indexing, in-place writes); none has a derivative of its
own, so none needs reading to follow a gradient.
"""
import collections
import operator

from ..engine import backend, function, ops
from . import fused
from ..engine.tensor import Tensor as EngineTensor
from ..engine.tensor import operand, same_device

ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])
ValuesIndices.__doc__ = "(values, indices), what max(dim), min(dim) and topk return (PyTorch's return_types)."


class ToShorthands:
    """PyTorch's shorthands for self.to(...), which tensors, modules and packed sequences all have (a mixin)."""
    __slots__ = ()

    def cpu(self):
        """On the CPU (a tensor: differentiable, self if already there)."""
        return self.to("cpu")

    def cuda(self, index=0):
        """On GPU `index` (needs CuPy: pip install "tinygrad_seq[cuda]")."""
        return self.to(f"cuda:{index}")

    def float(self):
        """As float32."""
        return self.to(dtype=backend.float32)

    def double(self):
        """As float64."""
        return self.to(dtype=backend.float64)

    def half(self):
        """As float16."""
        return self.to(dtype=backend.float16)


class TensorMethods(ToShorthands):
    """The methods tg.Tensor adds to the engine's Tensor (a mixin: no state of its own)."""
    __slots__ = ()

    @property
    def data(self):
        """The values as a new Tensor that shares this one's memory and is not on the tape (PyTorch's
        `.data`): `p.data.add_(g, alpha=-lr)` changes p. The backend array itself is `.array`."""
        function.reads(self)
        return self._make(self._data, None, 0)

    @data.setter
    def data(self, value):
        """`p.data = t` swaps in t's values (a Tensor or an array of p's device), keeping p's identity."""
        if isinstance(value, EngineTensor):
            value = value._data
        elif not backend.is_array(value) and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") \
                and self.device == "cpu":
            value = backend.as_array(value)  # NumPy's 0-d results come back as NumPy scalars
        if not backend.is_array(value):
            raise TypeError(f".data = ...: expected a Tensor or an array of the tensor's device ({self.device}), got "
                            f"{type(value).__name__}; to change the values in place write `t.data.copy_(...)` or "
                            "`with no_grad(): t.copy_(...)`")
        if backend.device_of(value) != self.device:
            raise ValueError(f".data = ...: the array is on {backend.device_of(value)} but the tensor on "
                             f"{self.device}; move the tensor with .to(device) (or Module.to) instead")
        if self._requires_grad and not backend.is_floating(value.dtype):
            raise TypeError(f".data = ...: a tensor that requires grad must hold floats, got an array of {value.dtype}")
        self._data = value


    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __repr__(self):
        extra = f", grad_fn={self._node!r}" if self._node is not None else \
            (", requires_grad=True" if self._requires_grad else "")
        device = f", device='{self.device}'" if self.device != "cpu" else ""
        body = repr(self.numpy()).replace("array(", "").rstrip(")")
        body = body[:body.rfind(",", 0, body.find("dtype="))] if "dtype=" in body else body
        return f"tensor({body}, dtype={self.dtype}{device}{extra})"


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

    def __index__(self):
        """An integer tensor of one element as a Python int wherever Python wants an index (a list's, range)."""
        if self.dtype.kind not in "biu" or self._data.size != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to an index, got {self.dtype} "
                            f"of shape {self.shape}")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise ValueError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.item())


    # ---- devices and dtypes ----------------------------------------------------------
    def to(self, device=None, dtype=None):
        """This tensor on another device and/or dtype; also to(dtype) and to(other_tensor), as in PyTorch.

        Differentiable between float dtypes; a result that is not floating has no gradient. Self if nothing changes.
        """
        if isinstance(device, EngineTensor):
            device, dtype = device.device, device.dtype
        elif device is not None and not isinstance(device, str):
            device, dtype = None, device  # to(tg.float64)
        out = self
        if device is not None and backend.parse_device(device) != self.device:
            out = ops.Transfer.apply(out, device=backend.parse_device(device))
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index):
        index, advanced = _index_arrays(index, self)
        return ops.GetItem.apply(self, index, advanced=advanced)

    def __setitem__(self, index, value):
        """self[index] = value (a Tensor, array or number, broadcast), in place, as in PyTorch: on the tape
        when self or value requires grad, so gradients flow to both (see `_inplace`)."""
        index, advanced = _index_arrays(index, self, "setitem")
        value = operand(value, self, "setitem")

        def write(a):
            a[index] = self._array_operand(value, "setitem")
        self._inplace("setitem", (value,), lambda: ops.SetItem.apply(self, value, index=index, advanced=advanced),
                      write)

    # ---- in place: PyTorch's semantics, the version check in function.py --------------------
    def _inplace(self, op, others, compute, write):
        """The one way in-place ops change a tensor.

        Recorded (grad mode on and self or an operand requires grad): `compute()` builds the result
        out of place on the tape and self is rebound to it, as PyTorch rebases the graph; a leaf
        that requires grad refuses. Otherwise `write(array)` changes self's memory, which views and
        detach()ed copies share, and function.mark_modified makes any node that kept it refuse to
        run backward.
        """
        function.refuse("the step writes into a tensor in place; use the out-of-place op (x = x * 2)")
        if function.is_grad_enabled() and (self._requires_grad or any(isinstance(o, EngineTensor) and o._requires_grad
                                                                       for o in others)):
            if self._node is None and self._requires_grad:
                raise RuntimeError(f"{op}: a leaf tensor that requires grad is being used in an in-place "
                                   "operation; update parameters inside `with tg.no_grad():` (or through ._data)")
            out = compute()
            if out.shape != self.shape:
                raise ValueError(f"{op}: the result has shape {out.shape}, which does not fit the tensor's shape "
                                 f"{self.shape}")
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
        other = operand(other, self, op)
        if isinstance(other, EngineTensor):
            same_device(op, self, other)
            return other._data
        return other

    def requires_grad_(self, value=True):
        self.requires_grad = value
        return self

    def size(self, dim=None):
        """The shape as a tuple, or the length of axis `dim` (PyTorch's size(); the element count is numel())."""
        return self._data.shape if dim is None else self._data.shape[axis_arg("size", dim, self.ndim)]

    def dim(self):
        """The number of dimensions (PyTorch's name for ndim)."""
        return self._data.ndim

    def numel(self):
        """The number of elements."""
        return self._data.size

    def long(self):
        """This tensor as int64 (no gradient)."""
        return self.to(dtype=backend.int64)

    def int(self):
        """This tensor as int32 (no gradient)."""
        return self.to(dtype=backend.int32)

    def type(self, dtype=None):
        """With no argument the dtype's name; else this tensor converted to `dtype`."""
        return str(self.dtype) if dtype is None else self.to(dtype=dtype)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    def clone(self):
        """A copy that owns its memory (differentiable: the gradient passes straight through)."""
        return ops.Copy.apply(self)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A tensor copied from `data`, with this tensor's dtype and device unless told otherwise."""
        data = data._data if isinstance(data, EngineTensor) else data
        return self._new(lambda dt, dev: backend.new_array(data, dt, dev), dtype, device, requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(lambda dt, dev: backend.namespace(dev).zeros(shape_arg(size), dtype=dt), dtype, device,
                         requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(lambda dt, dev: backend.namespace(dev).ones(shape_arg(size), dtype=dt), dtype, device,
                         requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new(lambda dt, dev: backend.namespace(dev).full(shape_arg((size,)), fill_value, dtype=dt), dtype,
                         device, requires_grad)

    def _new(self, fill, dtype, device, requires_grad):
        """A new tensor, `fill(dtype, device)`, with this tensor's dtype and device unless told otherwise."""
        out = self._make(fill(backend.dtype(dtype or self.dtype), backend.parse_device(device or self.device)), None, 0)
        out.requires_grad = requires_grad
        return out

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
        value = value.item() if isinstance(value, EngineTensor) else value
        return self._inplace("fill_", (), lambda: self.masked_fill(True, value), lambda a: a.fill(value))

    def zero_(self):
        """Set every element to 0, in place."""
        return self.fill_(0)

    def copy_(self, src):
        """Copy `src` (broadcast to this shape, converted to this dtype and device) into this tensor."""
        src = src if isinstance(src, EngineTensor) else self.new_tensor(src)

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
        m = mask._data if isinstance(mask, EngineTensor) else backend.new_array(mask, backend.bool_, self.device)
        if m.dtype != backend.bool_:
            raise TypeError(f"{op}: mask must be boolean, got {m.dtype}")
        if backend.device_of(m) != self.device:
            raise ValueError(f"{op}: mask is on {backend.device_of(m)}, the tensor on {self.device}")
        return m

    def masked_fill(self, mask, value):
        """A copy with the elements where `mask` (boolean, broadcast to this shape) is true set to `value`."""
        m = self._mask("masked_fill", mask)  # (a Tensor mask goes to the op as it is: a captured step replays it)
        out = ops.Where.apply(mask if isinstance(mask, EngineTensor) else m, operand(value, self, "masked_fill"), self)
        if out.shape != self.shape:
            raise ValueError(f"masked_fill: mask of shape {m.shape} does not broadcast to the shape {self.shape}")
        return out if out.dtype == self.dtype else out.to(dtype=self.dtype)

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
        return self.__abs__()

    def clip(self, min=None, max=None):
        """Elementwise clamp to [min, max] (either may be None); also called clamp."""
        out = self if min is None else ops.Maximum.apply(self, min)
        return out if max is None else ops.Minimum.apply(out, max)

    clamp = clip

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Index of the maximum along `dim` (of the flattened tensor when None); no gradient."""
        return self._arg("argmax", dim if axis is None else axis, keepdim or bool(keepdims))

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Index of the minimum along `dim` (of the flattened tensor when None); no gradient."""
        return self._arg("argmin", dim if axis is None else axis, keepdim or bool(keepdims))

    def _arg(self, op, dim, keepdim):
        a = None if dim is None else axis_arg(op, dim, max(self.ndim, 1))
        _check_nonempty(op, self, None if a is None else (a,) if self.ndim else ())
        data = self._data if self.ndim else self._data.reshape(1)
        out = getattr(data, op)(axis=a)
        if keepdim:
            out = backend.as_array(out, self.device).reshape(
                [1] * self.ndim if a is None else [1 if k == a else n for k, n in enumerate(self.shape)])
        return self._make(backend.as_array(out, self.device).astype(backend.int64), None, 0)

    def gather(self, dim, index):
        """torch.gather: out[i][j] = self[index[i][j]][j] for dim 0 (and so on); the backward scatter-adds."""
        a = axis_arg("gather", dim, self.ndim)
        idx = index._data if isinstance(index, EngineTensor) else backend.new_array(index, None, self.device)
        if not backend.is_integer(idx.dtype) or idx.ndim != self.ndim:
            raise ValueError(f"gather: index must be an integer tensor with {self.ndim} dimensions, "
                             f"got {idx.dtype} with shape {tuple(idx.shape)}")
        xp = backend.array_namespace(idx)
        grid = [xp.arange(n).reshape([n if k == j else 1 for k in range(idx.ndim)]) for j, n in enumerate(idx.shape)]
        grid[a] = idx
        return ops.GetItem.apply(self, tuple(grid), advanced=True)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """The k largest (or smallest) elements along `dim` and their indices, as (values, indices).

        Values are gathered by the indices, so their gradient goes to the chosen elements; equal
        elements keep their order (stable sort).
        """
        a = axis_arg("topk", dim, self.ndim)
        k = int_arg("topk", k, "k")
        if not 0 <= k <= self.shape[a]:
            raise ValueError(f"topk: k={k} is out of range for axis {a} of size {self.shape[a]}")
        order = (-self._data if largest else self._data).argsort(axis=a, kind="stable")
        indices = order[(slice(None),) * a + (slice(0, k),)]
        return ValuesIndices(self.gather(a, indices), self._make(indices.astype(backend.int64), None, 0))

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Sum over `axis` (int, tuple or None for all); `dim`/`keepdim` are PyTorch's names."""
        return ops.Sum.apply(self, axis=axes_arg("sum", axis, self.ndim, dim), keepdims=bool(keepdims or keepdim))

    def reshape(self, *shape):
        """The same elements in a new shape (one size may be -1); also called view."""
        shape, count = shape_arg(shape, "reshape"), self._data.size
        known = _prod(n for n in shape if n != -1)
        if shape.count(-1) > 1 or any(n < -1 for n in shape) or \
                (-1 in shape and (known == 0 or count % known)) or (-1 not in shape and known != count):
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} ({count} elements) into {shape}")
        return self if shape == self.shape else ops.Reshape.apply(self, shape=shape)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Mean over `axis` (int, tuple or None for all); `dim`/`keepdim` are PyTorch's names."""
        axes = axes_arg("mean", axis, self.ndim, dim)
        count = self._data.size if axes is None else _prod(self.shape[a] for a in axes)
        scale = 1.0 / count if count else float("nan")  # the mean of no elements is NaN, as in NumPy
        return ops.Sum.apply(self, axis=axes, keepdims=bool(keepdims or keepdim)) * scale

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As PyTorch: max() is the largest element; max(dim) is (values, indices) along `dim`;
        max(other_tensor) is the elementwise maximum. For values over several axes use amax."""
        if isinstance(dim, EngineTensor):
            return ops.Maximum.apply(self, dim)
        return self._extreme("max", self.amax, self.argmax, dim if axis is None else axis, keepdim or bool(keepdims))

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As PyTorch: min() is the smallest element; min(dim) is (values, indices) along `dim`;
        min(other_tensor) is the elementwise minimum. For values over several axes use amin."""
        if isinstance(dim, EngineTensor):
            return ops.Minimum.apply(self, dim)
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
        axes = axes_arg("amax", axis, self.ndim, dim)
        _check_nonempty("amax", self, axes)
        return ops.Max.apply(self, axis=axes, keepdims=bool(keepdims or keepdim))

    def amin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Minimum over `axis` (int, tuple or None for all); tied minima share the gradient."""
        axes, keepdims = axes_arg("amin", axis, self.ndim, dim), bool(keepdims or keepdim)
        _check_nonempty("amin", self, axes)
        if backend.is_floating(self.dtype):
            return -((-self).amax(axes, keepdims))
        out = self._data.min(axis=axes, keepdims=keepdims)  # bool/int: no gradient; -x fails (bool) or wraps (int)
        return self._make(backend.as_array(out, self.device), None, 0)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """log(sum(exp(x))) over `axis`, shifted by the (detached) max so it never overflows."""
        axes, keepdims = axes_arg("logsumexp", axis, self.ndim, dim), bool(keepdims or keepdim)
        x = self if backend.is_floating(self.dtype) else self.double()  # integers: in float64, as NumPy's exp
        if x.numel() == 0:  # nothing to shift by: a sum over no elements is log(0) = -inf, as in PyTorch
            with backend.ignore_float_errors():
                return x.exp().sum(axes, keepdims=keepdims).log()
        shift = x.detach().amax(axes, keepdims=True)
        shift = ops.Where.apply(ops.Call.apply(shift, name="isfinite"), shift, 0.0)  # infinities: shift by 0 (ops,
        # so that a captured step computes it at every step)
        out = (x - shift)._exp_nonpositive().sum(axes, keepdims=True).log() + shift
        return out if keepdims else out.reshape(()) if axes is None else out.squeeze(axes)

    def _exp_nonpositive(self):
        """exp(z) for z <= 0, exactly 0 where it is negligible next to 1 in z's dtype (exp(-40) ~ 4e-18 in
        float32): exp, and products with its gradient, stay clear of underflow. NaN stays NaN."""
        floor = fused.EXP_FLOOR.get(self.dtype.itemsize, -200.0)
        negligible = ops.Call.apply(self.detach(), floor, name="less_equal")  # an op: a captured step replays it
        return ops.Where.apply(negligible, 0.0, self.clip(min=floor).exp())

    def softmax(self, axis=-1, *, dim=None):
        """exp(x - max) / sum(exp(x - max)) along one axis."""
        a = axis_arg("softmax", axis if dim is None else dim, self.ndim)
        e = (self - self.detach().amax(a, keepdims=True))._exp_nonpositive()
        return e / e.sum(a, keepdims=True)

    def log_softmax(self, axis=-1, *, dim=None):
        """(x - max) - log(sum(exp(x - max))) along one axis: one op (fused.LogSoftmax), stable for any magnitude.

        Subtracting log(sum) from the shifted values, not logsumexp from x, avoids cancellation:
        at |x| ~ 1e4 in float32, x - logsumexp(x) loses three digits.
        """
        a = axis_arg("log_softmax", axis if dim is None else dim, self.ndim)
        if self.numel() == 0 or not backend.is_floating(self.dtype):
            return self - self.logsumexp(a, keepdims=True)
        return fused.LogSoftmax.apply(self, axis=a)

    def view(self, *shape):
        """reshape (PyTorch's name; the result shares memory where NumPy's reshape would)."""
        return self.reshape(*shape)

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
        a = axis_arg("narrow", dim, self.ndim)
        n, start, length = self.shape[a], int_arg("narrow", start, "start"), int_arg("narrow", length, "length")
        start = start + n if -n <= start < 0 else start
        if not (0 <= start <= n and 0 <= length <= n - start):
            raise ValueError(f"narrow: start {start} and length {length} do not fit axis {a} of size {n}")
        return self[(slice(None),) * a + (slice(start, start + length),)]

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = axis_arg("flatten", start_dim, self.ndim), axis_arg("flatten", end_dim, self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:]) if s <= e else self

    def permute(self, *axes):
        """Reorder the axes: permute(2, 0, 1) or permute((2, 0, 1))."""
        axes = shape_arg(axes, "permute")
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)) or len(axes) != self.ndim \
                or any(not -self.ndim <= a < self.ndim for a in axes):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} axes of shape {self.shape}")
        return ops.Transpose.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, axis0=None, axis1=None, *, dim0=None, dim1=None):
        """Swap two axes (PyTorch); with no arguments reverse all axes (NumPy)."""
        axis0, axis1 = axis0 if dim0 is None else dim0, axis1 if dim1 is None else dim1
        if axis0 is None and axis1 is None:
            return self.permute(tuple(reversed(range(self.ndim))))
        a, b = axis_arg("transpose", axis0, self.ndim), axis_arg("transpose", axis1, self.ndim)
        axes = list(range(self.ndim))
        axes[a], axes[b] = b, a
        return ops.Transpose.apply(self, axes=tuple(axes))

    def contiguous(self):
        """A C-contiguous copy; use it to hoist a transposed weight out of a time loop."""
        return ops.Copy.apply(self, contiguous=True)

    def expand(self, *shape):
        """Broadcast size-1 axes (and new leading axes) to `shape`; -1 keeps a size."""
        shape = shape_arg(shape, "expand")
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to fewer dimensions {shape}")
        target = tuple(self.shape[k - lead] if n == -1 and k >= lead else n for k, n in enumerate(shape))
        if any(self.shape[k] not in (1, target[k + lead]) for k in range(self.ndim)) or min(target, default=0) < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to {shape}")
        return ops.Expand.apply(self, shape=target)

    def flip(self, axis=None, *, dims=None):
        """Reverse the order of elements along `axis` (all axes when None)."""
        axes = axes_arg("flip", axis if dims is None else dims, self.ndim, scalar_axis=False)
        return ops.Flip.apply(self, axis=axes)

    def squeeze(self, axis=None, *, dim=None):
        """Drop size-1 axes (all of them, or those in `axis`; other sizes are left alone)."""
        axes = axes_arg("squeeze", axis, self.ndim, dim)
        if axes is None:
            axes = tuple(k for k, n in enumerate(self.shape) if n == 1)
        return self.reshape(tuple(n for k, n in enumerate(self.shape) if not (k in axes and n == 1)))

    def unsqueeze(self, axis=None, *, dim=None):
        """Insert a size-1 axis at position `axis`."""
        a = axis_arg("unsqueeze", axis if dim is None else dim, self.ndim, extra=1)
        return ops.Reshape.apply(self, shape=self.shape[:a] + (1,) + self.shape[a:])

    def split(self, size_or_sections, axis=0, *, dim=None):
        """Split along `axis` into pieces of a given size (int) or of the given sizes (list)."""
        a = axis_arg("split", axis if dim is None else dim, self.ndim)
        n = self.shape[a]
        if not isinstance(size_or_sections, (tuple, list)):
            size_or_sections = int_arg("split", size_or_sections, "split_size")
            if size_or_sections <= 0:
                raise ValueError(f"split: size must be positive, got {size_or_sections}")
            sizes = [min(size_or_sections, n - s) for s in range(0, n, size_or_sections)] or [0]
        else:
            sizes = [int_arg("split", s, "sections") for s in size_or_sections]
            if sum(sizes) != n or min(sizes, default=0) < 0:
                raise ValueError(f"split: sections {sizes} do not add up to {n}, the size of axis {a} of shape {self.shape}")
        return ops.Split.apply(self, sizes=tuple(sizes), axis=a)

    def chunk(self, chunks, axis=0, *, dim=None):
        """Split into `chunks` pieces of equal size (the last may be smaller), like PyTorch."""
        a = axis_arg("chunk", axis if dim is None else dim, self.ndim)
        if int_arg("chunk", chunks, "chunks") <= 0:
            raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
        n = self.shape[a]
        size = max(-(-n // chunks), 1)
        return ops.Split.apply(self, sizes=tuple(min(size, n - s) for s in range(0, n, size)) or (0,), axis=a)

    def unbind(self, axis=0, *, dim=None):
        """The slices along `axis` as a tuple of tensors (one tape node)."""
        return ops.Unbind.apply(self, axis=axis_arg("unbind", axis if dim is None else dim, self.ndim))

    def __iter__(self):
        return iter(self.unbind(0))


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


def _index_arrays(index, tensor, op="getitem"):
    """An index with its Tensor/list parts as device arrays, and whether it is advanced (gathers)."""
    parts = index if isinstance(index, tuple) else (index,)
    out, advanced = [], False
    for p in parts:
        if isinstance(p, EngineTensor):
            same_device(op, tensor, p)
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


def int_arg(op, value, what="axis"):
    """A Python int from an int-like (Python or NumPy integer, not bool), else a TypeError naming the op."""
    if type(value) is int:
        return value
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{op}: {what} must be an int, got {value!r} of type {type(value).__name__}")


def shape_arg(shape, op="shape"):
    """Accept f(2, 3) and f((2, 3)) alike; every size must be an int (NumPy refuses 2.5)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int_arg(op, n, "sizes") for n in shape)


def axes_arg(op, axis, ndim, dim=None, scalar_axis=True):
    """An axis argument (int, tuple or None; PyTorch's `dim` too) as a sorted tuple of axes, or None.

    Like NumPy's reductions and squeeze (and PyTorch), a 0-d tensor accepts a single axis 0 or -1,
    which then names no axis (scalar_axis=False turns that off, for flip).
    """
    axis = axis if dim is None else dim
    if axis is None:
        return None
    if ndim == 0 and scalar_axis and not isinstance(axis, (tuple, list)) and int_arg(op, axis) in (0, -1):
        return ()
    out = [axis_arg(op, a, ndim) for a in (axis if isinstance(axis, (tuple, list)) else (axis,))]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def axis_arg(op, axis, ndim, extra=0):
    """One axis in [0, ndim + extra) (extra=1 where a new axis is made: unsqueeze, stack)."""
    axis, n = int_arg(op, axis), ndim + extra
    if not -n <= axis < n:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % n
