"""PyTorch's elementwise Tensor methods beyond the everyday ones: more math (trigonometric, rounding,
log1p, ...), comparisons and logic, NaN tests, in-place operators, conversions and random fills.
tg.Tensor inherits them (tensors/tensor.py).

Each is a primitive of engine/ops.py (sin, cos, atan, log1p, expm1; rounding, sign and every test of
values are ops.Call) or a composite of primitives. Tests of values (isnan, logical_and, x > 0 inside
a composite) are ops applied without gradient, never computations on the side: a captured time step
replays ops, and would bake in an array computed beside them.
"""
import math
import operator

from ..engine import backend, function, ops
from ..engine.tensor import operand
from . import fused, math_ops
from .methods import shape_arg


def call(name, *args, **options):
    """ops.Call without gradient: a test of values (isnan, logical_and, argsort, ...), named in errors."""
    try:
        with function.no_grad():
            return ops.Call.apply(*args, name=name, **options)
    except (TypeError, ValueError) as e:
        message = str(e).removeprefix("call: ")
        raise type(e)(message if message.startswith(name) else f"{name}: {message}") from None


class ElementwiseMethods:
    """Elementwise methods tg.Tensor adds (a mixin: no state of its own)."""
    __slots__ = ()

    def _floating(self):
        """Self, or converted to the default float dtype when it holds integers or booleans (as PyTorch's sin)."""
        return self if backend.is_floating(self.dtype) else self.to(dtype=backend.default_float)

    # ---- math --------------------------------------------------------------------------
    def sin(self):
        return math_ops.Sin.apply(self._floating())

    def cos(self):
        return math_ops.Cos.apply(self._floating())

    def tan(self):
        return self.sin() / self.cos()

    def atan(self):
        return math_ops.Atan.apply(self._floating())

    arctan = atan

    def sinh(self):
        x = self._floating()  # (e^x - e^-x) / 2 through expm1: no cancellation near 0
        return (x.expm1() - (-x).expm1()) * 0.5

    def cosh(self):
        x = self._floating()
        return (x.exp() + (-x).exp()) * 0.5

    def log1p(self):
        """log(1 + x), accurate for small x."""
        return math_ops.Log1p.apply(self._floating())

    def expm1(self):
        """exp(x) - 1, accurate for small x."""
        return math_ops.Expm1.apply(self._floating())

    def log2(self):
        return self._floating().log() * (1 / math.log(2))

    def log10(self):
        return self._floating().log() * (1 / math.log(10))

    def exp2(self):
        return 2.0 ** self._floating()

    def reciprocal(self):
        return 1 / self._floating()

    def rsqrt(self):
        return self._floating() ** -0.5

    def square(self):
        return self * self

    def pow(self, exponent):
        return self ** exponent

    def neg(self):
        return -self

    negative = neg

    def erf(self):
        return fused.Erf.apply(self._floating())

    def erfc(self):
        return 1 - self.erf()

    def clamp_min(self, min):
        return self.clip(min=min)

    def clamp_max(self, max):
        return self.clip(max=max)

    def lerp(self, end, weight):
        """self + weight * (end - self); weight a number or a tensor."""
        return self + (end - self) * weight

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        """NaN, +inf and -inf replaced (infinities by the dtype's extremes unless given); the gradient
        passes where the input was finite and is 0 where it was replaced, as in PyTorch."""
        if not backend.is_floating(self.dtype):
            return self.clone()
        return ops.Where.apply(self.isfinite(), self, call("nan_to_num", self, nan=nan, posinf=posinf, neginf=neginf))

    # ---- arithmetic with PyTorch's keywords -------------------------------------------------
    def add(self, other, *, alpha=1):
        """self + alpha * other."""
        other = operand(other, self, "add")
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, *, alpha=1):
        """self - alpha * other."""
        other = operand(other, self, "sub")
        return self - (other if alpha == 1 else other * alpha)

    subtract = sub

    def mul(self, other):
        return self * other

    multiply = mul

    def div(self, other, *, rounding_mode=None):
        """self / other; rounding_mode "trunc" or "floor" rounds the quotient (gradient 0, as in PyTorch)."""
        if rounding_mode is None:
            return self / other
        if rounding_mode == "floor":
            return self // other
        if rounding_mode != "trunc":
            raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
        floor = self // other  # its dtype is the quotient's: integers stay integers
        return (self / other).trunc().to(dtype=floor.dtype)

    divide = div

    def __floordiv__(self, other):
        return ops.Call.apply(self, operand(other, self, "floor_divide"), name="floor_divide")

    def __rfloordiv__(self, other):
        return ops.Call.apply(operand(other, self, "floor_divide"), self, name="floor_divide")

    floor_divide = __floordiv__

    def __mod__(self, other):
        """Python's (and PyTorch's remainder) modulo: the sign of the divisor."""
        other = operand(other, self, "remainder")
        return self - (self // other) * other

    def __rmod__(self, other):
        other = operand(other, self, "remainder")
        return other - (other // self) * self

    remainder = __mod__

    # ---- rounding: the gradient is zeros, as in PyTorch ----------------------------------
    def _rounded(self, name, **options):
        if not backend.is_floating(self.dtype):
            return self.clone()  # integers are whole already
        return ops.Call.apply(self, name=name, **options)

    def floor(self):
        return self._rounded("floor")

    def ceil(self):
        return self._rounded("ceil")

    def trunc(self):
        """Round toward zero."""
        return self._rounded("trunc")

    fix = trunc

    def round(self, *, decimals=0):
        """Round half to even (as PyTorch and NumPy), to `decimals` places."""
        return self._rounded("round", decimals=decimals) if decimals else self._rounded("round")

    def frac(self):
        """The fractional part, self - trunc(self) (its sign is the input's)."""
        return self - self.trunc()

    def sign(self):
        """-1, 0 or 1 by the sign of each element (gradient 0)."""
        return self.clone() if self.dtype == backend.bool_ else ops.Call.apply(self, name="sign")

    # ---- comparisons and logic: boolean results, no gradient ------------------------------
    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    not_equal, less, less_equal, greater, greater_equal = ne, lt, le, gt, ge

    def equal(self, other):
        """True if `other` has this shape and these elements (a Python bool)."""
        return self.shape == tuple(other.shape) and bool((self == other).all())

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """|self - other| <= atol + rtol |other| elementwise (a boolean tensor)."""
        return call("isclose", self, operand(other, self, "isclose"), rtol=rtol, atol=atol, equal_nan=equal_nan)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """Whether isclose holds everywhere (a Python bool)."""
        return bool(self.isclose(other, rtol, atol, equal_nan).all())

    def logical_and(self, other):
        return call("logical_and", self, operand(other, self, "logical_and"))

    def logical_or(self, other):
        return call("logical_or", self, operand(other, self, "logical_or"))

    def logical_xor(self, other):
        return call("logical_xor", self, operand(other, self, "logical_xor"))

    def logical_not(self):
        return call("logical_not", self)

    def bitwise_and(self, other):
        return call("bitwise_and", self, operand(other, self, "bitwise_and"))

    def bitwise_or(self, other):
        return call("bitwise_or", self, operand(other, self, "bitwise_or"))

    def bitwise_xor(self, other):
        return call("bitwise_xor", self, operand(other, self, "bitwise_xor"))

    def bitwise_not(self):
        """~x: logical not for booleans, bitwise for integers."""
        return call("invert", self)

    __and__, __or__, __xor__, __invert__ = bitwise_and, bitwise_or, bitwise_xor, bitwise_not
    __rand__, __ror__, __rxor__ = bitwise_and, bitwise_or, bitwise_xor

    def isnan(self):
        return call("isnan", self)

    def isinf(self):
        return call("isinf", self)

    def isfinite(self):
        return call("isfinite", self)

    def isposinf(self):
        return call("isposinf", self)

    def isneginf(self):
        return call("isneginf", self)

    # ---- in-place operators: a += b is a.add_(b), on the same tensor, as in PyTorch -----------
    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __iand__(self, other):
        return self._inplace("bitwise_and_", (other,), lambda: self & other,
                             lambda a: operator.iand(a, self._array_operand(other, "bitwise_and_")))

    def __ior__(self, other):
        return self._inplace("bitwise_or_", (other,), lambda: self | other,
                             lambda a: operator.ior(a, self._array_operand(other, "bitwise_or_")))

    def __ixor__(self, other):
        return self._inplace("bitwise_xor_", (other,), lambda: self ^ other,
                             lambda a: operator.ixor(a, self._array_operand(other, "bitwise_xor_")))

    # ---- conversions and properties -------------------------------------------------------
    def bool(self):
        return self.to(dtype=backend.bool_)

    def byte(self):
        return self.to(dtype=backend.uint8)

    def char(self):
        return self.to(dtype=backend.int8)

    def short(self):
        return self.to(dtype=backend.int16)

    def is_floating_point(self):
        return backend.is_floating(self.dtype)

    is_cuda = property(lambda self: self.device.startswith("cuda"), doc="Whether the tensor is on a CUDA GPU.")

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    def element_size(self):
        """Bytes per element."""
        return self.dtype.itemsize

    def nelement(self):
        return self._data.size

    def ndimension(self):
        return self._data.ndim

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(lambda dt, dev: backend.namespace(dev).empty(shape_arg(size), dtype=dt), dtype, device,
                         requires_grad)

    # ---- random fills (the device's seeded stream, as nn.init draws) -----------------------------
    def _fill_random(self, op, draw):
        """Fill self in place with draw(float64 uniform/normal generator) cast to self's dtype."""
        if not backend.is_floating(self.dtype):
            raise TypeError(f"{op}: expected a floating-point tensor, got {self.dtype}")
        values = draw(backend.rng(self.device)).astype(self.dtype, copy=False)

        def write(a):
            a[...] = values
        return self._inplace(op, (), lambda: self * 0 + self._make(values, None, 0), write)

    def uniform_(self, a=0.0, b=1.0):
        """Fill with samples of U(a, b), in place."""
        return self._fill_random("uniform_", lambda rng: rng.random(self.shape, dtype=backend.float64) * (b - a) + a)

    def normal_(self, mean=0.0, std=1.0):
        """Fill with samples of N(mean, std^2), in place."""
        return self._fill_random("normal_",
                                 lambda rng: rng.standard_normal(self.shape, dtype=backend.float64) * std + mean)

    def bernoulli_(self, p=0.5):
        """Fill with 1 (probability p) or 0, in place."""
        return self._fill_random("bernoulli_", lambda rng: (rng.random(self.shape, dtype=backend.float64) < p) * 1.0)

    def bernoulli(self):
        """1 with the probability held in each element, else 0 (same dtype, no gradient)."""
        probs = self.detach()._floating()
        if probs.numel() and not bool(((probs >= 0) & (probs <= 1)).all()):
            raise ValueError("bernoulli: expected every probability in [0, 1]")
        draw = backend.rng(self.device).random(self.shape, dtype=backend.float64)
        return self._make((draw < probs._data).astype(probs.dtype), None, 0)

    def multinomial(self, num_samples, replacement=False):
        """Indices drawn from the categorical distributions whose weights are the rows (the last axis)
        of this 1-D or 2-D tensor, as torch.multinomial: int64, (num_samples,) or (rows, num_samples)."""
        if self.ndim not in (1, 2):
            raise ValueError(f"multinomial: expected a 1-D or 2-D tensor of weights, got shape {self.shape}")
        weights = self.detach()._floating().astype(backend.float64)._data
        weights = weights.reshape(1, -1) if self.ndim == 1 else weights
        xp, n = backend.array_namespace(weights), weights.shape[1]
        if not bool(xp.isfinite(weights).all()) or bool((weights < 0).any()) or not bool((weights.sum(1) > 0).all()):
            raise ValueError("multinomial: each row of weights must be finite, non-negative and sum to more than 0")
        if not replacement and num_samples > n:
            raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from {n} categories")
        gen = backend.rng(self.device)
        if replacement:  # inverse CDF: the first category whose running total exceeds u * total
            cdf = xp.cumsum(weights, axis=1)
            u = gen.random((weights.shape[0], num_samples), dtype=backend.float64) * cdf[:, -1:]
            out = xp.minimum((cdf[:, None, :] <= u[:, :, None]).sum(axis=2), n - 1)
        else:  # the num_samples smallest of E_i / w_i, E_i ~ Exp(1): weighted sampling without replacement
            keys = gen.standard_exponential(weights.shape, dtype=backend.float64)
            keys = xp.where(weights > 0, keys / xp.where(weights > 0, weights, 1.0), xp.inf)
            out = xp.argsort(keys, axis=1)[:, :num_samples]
        out = out.astype(backend.int64)
        return self._make(out.reshape(-1) if self.ndim == 1 else out, None, 0)
