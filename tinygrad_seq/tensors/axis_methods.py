"""PyTorch's Tensor methods that work along axes, beyond the everyday ones: reductions and statistics
(all, any, prod, var, std, norm), sorting, running sums and products, repeats, index selection and
scatters, rolls, triangles and diagonals, matrix products. tg.Tensor inherits them (tensors/tensor.py).

All are composites of the primitives (engine/ops.py), so their gradients come from the tape: a sort
gathers its values by the sorted indices, a running product is a scan of multiplications (exact
with zeros), a product a tree of them. Indices (argsort, nonzero, unique) are ops without gradient.
"""
import math

from ..engine import backend, ops
from ..engine.tensor import Tensor as EngineTensor
from . import math_ops
from .elementwise import call
from .methods import ValuesIndices, _prod, axes_arg, axis_arg, int_arg, shape_arg


class AxisMethods:
    """Methods along axes that tg.Tensor adds (a mixin: no state of its own)."""
    __slots__ = ()

    # ---- reductions and statistics --------------------------------------------------------
    def all(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Whether every element along `dim` (all of them when None) is nonzero: a boolean tensor."""
        return call("all", self, axis=axes_arg("all", dim if axis is None else axis, self.ndim),
                    keepdims=bool(keepdim or keepdims))

    def any(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Whether some element along `dim` (all of them when None) is nonzero: a boolean tensor."""
        return call("any", self, axis=axes_arg("any", dim if axis is None else axis, self.ndim),
                    keepdims=bool(keepdim or keepdims))

    def count_nonzero(self, dim=None):
        return (self != 0).sum(dim)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        """The product over `dim` (all elements when None), as a tree of multiplications: its gradient
        is exact where elements are 0. Integers and booleans give int64, as in PyTorch."""
        x = self._accumulator(dtype)
        if dim is None:
            x, a = x.reshape(-1), 0
        else:
            x = x.reshape(1) if x.ndim == 0 else x
            a = axis_arg("prod", dim, x.ndim)
        if x.shape[a] == 0:
            x = x.new_ones(x.shape[:a] + (1,) + x.shape[a + 1:])  # the empty product
        while x.shape[a] > 1:
            n, half = x.shape[a], x.shape[a] // 2
            pairs = x.narrow(a, 0, half) * x.narrow(a, half, half)
            x = ops.Cat.apply(pairs, x.narrow(a, n - 1, 1), axis=a) if n % 2 else pairs
        if dim is None:
            return x.reshape((1,) * self.ndim if keepdim else ())
        return x if keepdim else x.reshape(self.shape[:a] + self.shape[a + 1:])

    def _accumulator(self, dtype):
        """Self in `dtype`, or in int64 if it holds smaller integers or booleans (PyTorch's sums and products)."""
        if dtype is not None:
            return self.to(dtype=dtype)
        return self if backend.is_floating(self.dtype) or self.dtype == backend.int64 else self.to(dtype=backend.int64)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
        """The variance over `dim` (all elements when None): sum((x - mean)^2) / (N - correction).

        correction=1 (Bessel's, the default) or unbiased=True; correction=0 or unbiased=False for the
        population variance. var(False) is var(unbiased=False), as in PyTorch. NaN when N <= correction.
        """
        if isinstance(dim, bool):
            dim, unbiased = None, dim
        if unbiased is not None and correction is not None:
            raise TypeError("var: give unbiased or correction, not both")
        if not backend.is_floating(self.dtype):
            raise TypeError(f"var: expected a floating-point tensor, got {self.dtype}")
        correction = (1 if unbiased is None else int(unbiased)) if correction is None else correction
        axes, keep = axes_arg("var", dim if axis is None else axis, self.ndim), bool(keepdim or keepdims)
        count = self.numel() if axes is None else _prod(self.shape[a] for a in axes)
        centered = self - self.mean(axes, keepdims=True)
        dof = count - correction
        return (centered * centered).sum(axes, keepdims=keep) * (1.0 / dof if dof > 0 else math.nan)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
        """The square root of var (same arguments)."""
        return self.var(dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims).sqrt()

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """The p-norm over `dim` (all elements when None): "fro"/2, 1, any p > 0, inf, -inf, or 0 (the count
        of nonzeros). At the origin the gradient is 0, as in PyTorch's."""
        x = self._floating() if dtype is None else self.to(dtype=dtype)
        axes = axes_arg("norm", dim, x.ndim)
        if p in ("fro", 2):
            return _root((x * x).sum(axes, keepdims=keepdim), 2)
        if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"norm: p must be 'fro' or a number, got {p!r} (the nuclear norm is not supported)")
        if p == 0:
            return (x != 0).sum(axes, keepdims=keepdim).to(dtype=x.dtype)
        size = _magnitude(x)
        if p == math.inf:
            return size.amax(axes, keepdims=keepdim)
        if p == -math.inf:
            return size.amin(axes, keepdims=keepdim)
        if p == 1:
            return size.sum(axes, keepdims=keepdim)
        return _root((size ** p).sum(axes, keepdims=keepdim), p)

    def dist(self, other, p=2):
        """The p-norm of self - other."""
        return (self - other).norm(p)

    # ---- sorting -------------------------------------------------------------------------------
    def argsort(self, dim=-1, descending=False, stable=False):
        """Indices that sort along `dim` (int64, no gradient). Always stable: equal elements keep their
        order, descending too; NaN sorts as the largest value, as in PyTorch."""
        if self.ndim == 0:
            return self.reshape(1).argsort(dim, descending).reshape(())
        a = axis_arg("argsort", dim, self.ndim)
        if not descending:
            return call("argsort", self, axis=a, kind="stable")
        backward = call("argsort", ops.Flip.apply(self.detach(), axis=(a,)), axis=a, kind="stable")
        return (self.shape[a] - 1) - ops.Flip.apply(backward, axis=(a,))  # stable from the far end, read back

    def sort(self, dim=-1, descending=False, stable=False):
        """(values, indices) sorted along `dim`; the values are gathered by the indices, so their
        gradient goes back to where each value came from."""
        if self.ndim == 0:
            values, indices = self.reshape(1).sort(dim, descending)
            return ValuesIndices(values.reshape(()), indices.reshape(()))
        indices = self.argsort(dim, descending)
        return ValuesIndices(self.gather(axis_arg("sort", dim, self.ndim), indices), indices)

    # ---- running sums and products ------------------------------------------------------------
    def cumsum(self, dim, *, dtype=None):
        """Running sums along `dim` (integers and booleans give int64)."""
        x = self._accumulator(dtype)
        if x.ndim == 0:
            return x.reshape(1).cumsum(dim).reshape(())
        return math_ops.CumSum.apply(x, axis=axis_arg("cumsum", dim, x.ndim))

    def cumprod(self, dim, *, dtype=None):
        """Running products along `dim`: a scan of log2(n) rounds of multiplications, whose gradient is
        exact where elements are 0 (integers and booleans give int64)."""
        x = self._accumulator(dtype)
        if x.ndim == 0:
            return x.reshape(1).cumprod(dim).reshape(())
        a = axis_arg("cumprod", dim, x.ndim)
        n, step = x.shape[a], 1
        while step < n:  # after a round, element i is the product of the 2 * step elements ending at i
            head, tail = x.narrow(a, 0, step), x.narrow(a, step, n - step) * x.narrow(a, 0, n - step)
            x, step = ops.Cat.apply(head, tail, axis=a), step * 2
        return x

    def diff(self, n=1, dim=-1, prepend=None, append=None):
        """The n-th forward difference along `dim` (prepend/append joined on first)."""
        a = axis_arg("diff", dim, self.ndim)
        parts = [t for t in (prepend, self, append) if t is not None]
        x = ops.Cat.apply(*parts, axis=a) if len(parts) > 1 else self
        for _ in range(n):
            length = max(x.shape[a] - 1, 0)
            x = x.narrow(a, 1, length) - x.narrow(a, 0, length)
        return x

    # ---- repeats ---------------------------------------------------------------------------
    def repeat(self, *sizes):
        """The tensor tiled `sizes` times along each axis (sizes may add leading axes), as torch's repeat."""
        sizes = shape_arg(sizes, "repeat")
        if len(sizes) < self.ndim or min(sizes, default=0) < 0:
            raise ValueError(f"repeat: expected at least {self.ndim} non-negative repeat counts for shape "
                             f"{self.shape}, got {sizes}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        interleaved = tuple(n for r, s in zip(sizes, shape) for n in (1, s))
        tiled = tuple(n for r, s in zip(sizes, shape) for n in (r, s))
        return self.reshape(interleaved).expand(tiled).reshape(tuple(r * s for r, s in zip(sizes, shape)))

    def tile(self, *dims):
        """repeat, with missing leading counts taken as 1."""
        dims = shape_arg(dims, "tile")
        return self.repeat((1,) * (self.ndim - len(dims)) + dims)

    def repeat_interleave(self, repeats=None, dim=None, *, output_size=None):
        """Each element (slice along `dim`; of the flattened tensor when None) repeated `repeats` times
        (an int, or one count per element). With no repeats, self holds the counts of arange(len(self))."""
        if repeats is None:
            counts = self
            return self._make(backend.namespace(self.device).arange(self.numel()), None, 0).repeat_interleave(counts)
        x, a = (self.reshape(-1), 0) if dim is None else (self, axis_arg("repeat_interleave", dim, self.ndim))
        n = x.shape[a]
        if isinstance(repeats, EngineTensor) and repeats.numel() == 1 and n != 1:
            repeats = repeats.item()
        if not isinstance(repeats, EngineTensor):
            r = int_arg("repeat_interleave", repeats, "repeats")
            if r < 0:
                raise ValueError(f"repeat_interleave: repeats must be non-negative, got {r}")
            spread = x.shape[:a + 1] + (r,) + x.shape[a + 1:]
            return x.unsqueeze(a + 1).expand(spread).reshape(x.shape[:a] + (n * r,) + x.shape[a + 1:])
        counts = [int(c) for c in repeats.reshape(-1).tolist()]
        if len(counts) != n or min(counts, default=0) < 0 or not backend.is_integer(repeats.dtype):
            raise ValueError(f"repeat_interleave: expected {n} non-negative integer repeat counts, got "
                             f"{repeats.dtype} of shape {repeats.shape}")
        xp = backend.namespace(self.device)
        return x.index_select(a, self._make(xp.repeat(xp.arange(n), counts), None, 0))

    # ---- selecting, scattering and rolling -----------------------------------------------
    def index_select(self, dim, index):
        """The slices at the integer `index` (1-D) along `dim`; the gradient is added back into them."""
        a = axis_arg("index_select", dim, self.ndim)
        index = index if isinstance(index, EngineTensor) else self.new_tensor(index, dtype=backend.int64)
        if index.ndim > 1 or not backend.is_integer(index.dtype):
            raise ValueError(f"index_select: index must be a 1-D integer tensor, got {index.dtype} of shape "
                             f"{index.shape}")
        return self[(slice(None),) * a + (index.reshape(-1),)]

    def masked_select(self, mask):
        """The elements where the boolean `mask` (broadcast with self) is true, as a 1-D tensor."""
        m = self._mask("masked_select", mask)
        shape = broadcast_shape("masked_select", self.shape, tuple(m.shape))
        m = backend.array_namespace(m).broadcast_to(m, shape)
        return self.expand(shape)[m]

    def take(self, index):
        """Elements of the flattened tensor at `index` (the result has index's shape)."""
        return self.reshape(-1)[index]

    def select(self, dim, index):
        """The slice at `index` along `dim`, without that axis."""
        return self[(slice(None),) * axis_arg("select", dim, self.ndim) + (int_arg("select", index, "index"),)]

    def roll(self, shifts, dims=None):
        """Elements shifted cyclically by `shifts` along `dims` (of the flattened tensor when None)."""
        if dims is None:
            return self.reshape(-1).roll(shifts, 0).reshape(self.shape)
        shifts, dims = ((shifts,), (dims,)) if not isinstance(dims, (tuple, list)) else (tuple(shifts), tuple(dims))
        if len(shifts) != len(dims):
            raise ValueError(f"roll: {len(shifts)} shifts for {len(dims)} dims")
        x = self
        for shift, dim in zip(shifts, dims):
            a = axis_arg("roll", dim, self.ndim)
            n = x.shape[a]
            s = int_arg("roll", shift, "shifts") % n if n else 0
            if s:
                x = ops.Cat.apply(x.narrow(a, n - s, s), x.narrow(a, 0, n - s), axis=a)
        return x

    def _scatter_where(self, op, dim, index, src):
        """The full index (index along `dim`, positions elsewhere) and the part of src it writes."""
        a = axis_arg(op, dim, self.ndim)
        idx = index._data if isinstance(index, EngineTensor) else backend.new_array(index, None, self.device)
        if not backend.is_integer(idx.dtype) or idx.ndim != self.ndim:
            raise ValueError(f"{op}: index must be an integer tensor with {self.ndim} dimensions, got {idx.dtype} "
                             f"of shape {tuple(idx.shape)}")
        limits = [n if k != a else math.inf for k, n in enumerate(self.shape)]
        if isinstance(src, EngineTensor):
            limits = [min(m, n) for m, n in zip(limits, src.shape)] if src.ndim == self.ndim else [-1]
        if any(n > m for n, m in zip(idx.shape, limits)) or len(limits) != self.ndim:
            raise ValueError(f"{op}: index of shape {tuple(idx.shape)} does not fit the tensor's shape {self.shape}"
                             + (f" and src's {src.shape}" if isinstance(src, EngineTensor) else ""))
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.shape[a]):
            raise ValueError(f"{op}: index values must be in [0, {self.shape[a]}) for axis {a}, got "
                             f"min {int(idx.min())}, max {int(idx.max())}")
        xp = backend.array_namespace(idx)
        grid = [xp.arange(n).reshape([n if k == j else 1 for k in range(idx.ndim)]) for j, n in enumerate(idx.shape)]
        grid[a] = idx
        if isinstance(src, EngineTensor):
            src = src[tuple(slice(0, n) for n in idx.shape)]
        return tuple(grid), src

    def scatter(self, dim, index, src=None, *, value=None):
        """A copy with src's elements (or `value`) written at `index` along `dim`, as torch.scatter:
        out[index[i][j]][j] = src[i][j] for dim 0. Gradients reach self (not where overwritten) and src."""
        grid, src = self._scatter_where("scatter", dim, index, value if src is None else src)
        return ops.SetItem.apply(self, src, index=grid, advanced=True)

    def scatter_(self, dim, index, src=None, *, value=None):
        """scatter, in place."""
        grid, src = self._scatter_where("scatter_", dim, index, value if src is None else src)

        def write(a):
            a[grid] = self._array_operand(src, "scatter_")
        return self._inplace("scatter_", (src,), lambda: ops.SetItem.apply(self, src, index=grid, advanced=True),
                             write)

    def scatter_add(self, dim, index, src):
        """A copy with src's elements added at `index` along `dim` (repeated indices add up)."""
        grid, src = self._scatter_where("scatter_add", dim, index, src)
        out = self + ops.Scatter.apply(src, shape=self.shape, index=grid, advanced=True)
        return out.to(dtype=self.dtype)

    def scatter_add_(self, dim, index, src):
        """scatter_add, in place."""
        grid, part = self._scatter_where("scatter_add_", dim, index, src)
        return self._inplace("scatter_add_", (src,), lambda: self.scatter_add(dim, index, src),
                             lambda a: backend.scatter_add(a, grid, self._array_operand(part, "scatter_add_")))

    def nonzero(self, *, as_tuple=False):
        """The indices of the nonzero elements: an (n, ndim) int64 tensor, or one 1-D tensor per axis."""
        parts = call("nonzero", self.reshape(1) if self.ndim == 0 else self)
        if as_tuple:
            return parts
        stacked = ops.Stack.apply(*parts, axis=1)
        return stacked[:, :0] if self.ndim == 0 else stacked  # a 0-d tensor's positions have no coordinates

    def argwhere(self):
        return self.nonzero()

    def unique(self, sorted=True, return_inverse=False, return_counts=False, dim=None):
        """The distinct elements in ascending order; with return_inverse each element's position among
        them (self's shape), with return_counts how often each occurs (no gradient)."""
        if dim is not None:
            raise ValueError("unique: dim= is not supported; unique works on the flattened tensor")
        out = call("unique", self.reshape(-1), return_inverse=return_inverse, return_counts=return_counts)
        if not (return_inverse or return_counts):
            return out
        values, *rest = out
        if return_inverse:
            rest[0] = rest[0].reshape(self.shape)
        return (values, *rest)

    # ---- triangles and diagonals ----------------------------------------------------------
    def tril(self, diagonal=0):
        """Zero above the `diagonal`-th diagonal of the last two axes."""
        return self._triangle("tril", diagonal, lower=True)

    def triu(self, diagonal=0):
        """Zero below the `diagonal`-th diagonal of the last two axes."""
        return self._triangle("triu", diagonal, lower=False)

    def _triangle(self, op, k, lower):
        if self.ndim < 2:
            raise ValueError(f"{op}: expected a tensor with at least 2 dimensions, got shape {self.shape}")
        xp, (n, m) = backend.namespace(self.device), self.shape[-2:]
        k = int_arg(op, k, "diagonal")
        keep = xp.tri(n, m, k, dtype=backend.bool_) if lower else ~xp.tri(n, m, k - 1, dtype=backend.bool_)
        return ops.Where.apply(keep, self, self.dtype.type(0))  # (keep depends on the shape only)

    def diagonal(self, offset=0, dim1=0, dim2=1):
        """The `offset`-th diagonal of the (dim1, dim2) planes, as a last axis (a copy, not a view)."""
        a, b = axis_arg("diagonal", dim1, self.ndim), axis_arg("diagonal", dim2, self.ndim)
        if a == b:
            raise ValueError(f"diagonal: dim1 and dim2 must differ, both are {a}")
        x = self.permute(*(k for k in range(self.ndim) if k not in (a, b)), a, b)
        n, m = x.shape[-2:]
        first_row, first_col = max(-offset, 0), max(offset, 0)
        xp = backend.namespace(self.device)
        steps = xp.arange(max(0, min(n - first_row, m - first_col)))
        return x[..., steps + first_row, steps + first_col]

    def diag(self, diagonal=0):
        """A 1-D tensor as the `diagonal`-th diagonal of a square matrix; a matrix's diagonal as 1-D."""
        if self.ndim == 2:
            return self.diagonal(diagonal)
        if self.ndim != 1:
            raise ValueError(f"diag: expected a 1-D or 2-D tensor, got shape {self.shape}")
        n, k = self.shape[0], int_arg("diag", diagonal, "diagonal")
        steps = backend.namespace(self.device).arange(n)
        size = n + abs(k)
        return ops.Scatter.apply(self, shape=(size, size), index=(steps + max(-k, 0), steps + max(k, 0)),
                                 advanced=True)

    def trace(self):
        """The sum of a matrix's diagonal."""
        if self.ndim != 2:
            raise ValueError(f"trace: expected a matrix, got shape {self.shape}")
        return self.diagonal().sum()

    # ---- matrix products --------------------------------------------------------------------
    def matmul(self, other):
        return self @ other

    def mm(self, mat2):
        """The product of two matrices (2-D only; matmul broadcasts)."""
        _check_ndim("mm", (self, mat2), (2, 2))
        return self @ mat2

    def bmm(self, batch2):
        """Batched matrix product of (B, n, k) and (B, k, m) (no broadcasting; matmul broadcasts)."""
        _check_ndim("bmm", (self, batch2), (3, 3))
        if self.shape[0] != batch2.shape[0]:
            raise ValueError(f"bmm: batch sizes differ, shapes {self.shape} and {batch2.shape}")
        return self @ batch2

    def mv(self, vec):
        _check_ndim("mv", (self, vec), (2, 1))
        return self @ vec

    def dot(self, other):
        """The inner product of two 1-D tensors."""
        _check_ndim("dot", (self, other), (1, 1))
        return self @ other

    def outer(self, vec2):
        """The outer product of two 1-D tensors."""
        _check_ndim("outer", (self, vec2), (1, 1))
        return self.reshape(-1, 1) * vec2.reshape(1, -1)

    ger = outer

    def broadcast_to(self, *size):
        return self.expand(*size)


def _magnitude(x):
    """|x| as x * sign(x): gradient sign(x), 0 at 0 as in PyTorch's norms and l1_loss."""
    return x * x.sign()


def _root(total, p):
    """total ** (1/p), with gradient 0 where total is 0 (PyTorch's norm at the origin)."""
    positive = total > 0
    return ops.Where.apply(positive, ops.Where.apply(positive, total, 1.0) ** (1.0 / p), 0.0)


def broadcast_shape(op, *shapes):
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + s for s in shapes]
    out = tuple(max(sizes) if min(sizes) else 0 for sizes in zip(*padded))
    if any(n not in (1, m) for s in padded for n, m in zip(s, out)):
        raise ValueError(f"{op}: shapes {' and '.join(str(s) for s in shapes)} do not broadcast together")
    return out


def _check_ndim(op, tensors, ndims):
    if tuple(getattr(t, "ndim", None) for t in tensors) != ndims:
        raise ValueError(f"{op}: expected tensors with {' and '.join(map(str, ndims))} dimensions, got shapes "
                         f"{' and '.join(str(getattr(t, 'shape', type(t).__name__)) for t in tensors)}")
