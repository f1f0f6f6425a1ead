"""detect_anomaly: an observer of the tape (engine.function.observed) that raises at the first NaN or inf.

Every op applied inside the block is told its creation site (the innermost line of user code)
and its input shapes, and its outputs are checked; every rule the walk runs is checked too. When an
op's output is not finite because an input already was, the error names that input and where it
came from (a leaf or constant, or an op run before the block) instead of blaming the op. NumPy's
own float warnings are off inside the block: these checks report instead, naming the op.
"""
import contextlib
import functools
import os
import traceback

from ..engine import backend
from ..engine.function import TensorBase, observed

__all__ = ["detect_anomaly"]

_library = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_skipped = (_library, os.path.abspath(contextlib.__file__))


class detect_anomaly:
    """Context manager / decorator: raise as soon as an op's forward or backward makes NaN or inf.

    The error names the op, the file and line of user code that created it, and the input
    shapes. Slow (it checks every array and records where every op was made): for debugging.
    """
    reason = "detect_anomaly is on"  # what an observer already watching (a step being recorded) is told

    def __enter__(self):
        stack = contextlib.ExitStack()
        stack.enter_context(backend.ignore_float_errors())
        stack.enter_context(observed(self))
        self.__dict__.setdefault("_stacks", []).append(stack)
        return self

    def __exit__(self, *exc):
        self._stacks.pop().close()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly():
                return fn(*args, **kwargs)
        return wrapper

    def op(self, ctx, args, kwargs, result):
        ctx.site = _user_site()
        ctx.input_shapes = [tuple(a.shape) for a in args if isinstance(a, TensorBase)]
        try:
            _check_finite(ctx, result if type(result) is tuple else (result,), "forward")
        except FloatingPointError as produced:
            _blame_an_input(ctx, args, produced)
            raise

    def rule(self, node, grads):
        if grads is not None and "site" in node.__dict__:
            _check_finite(node, grads, "backward")

    def refuse(self, reason):
        pass

    def read(self, tensor):
        pass


def _user_site():
    """'file:line' of the innermost stack frame outside tinygrad_seq (and its context managers)."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_skipped):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def _finite(value):
    a = value.array if isinstance(value, TensorBase) else value
    if a is None or not hasattr(a, "dtype"):  # (a lazy matmul product is finite if its factors are)
        return True
    a = a if backend.is_array(a) else backend.as_array(a)
    return not backend.is_floating(a.dtype) or bool(backend.array_namespace(a).isfinite(a).all())


def _check_finite(node, values, stage):
    for k, v in enumerate(values):
        if not _finite(v):
            raise FloatingPointError(f"detect_anomaly: {node.name} {stage} produced NaN or inf (output {k}); the op "
                                     f"was created at {node.site}; input shapes {node.input_shapes}")


def _blame_an_input(ctx, args, produced):
    """Raise, from `produced`, naming the first input of `ctx` that already held NaN or inf, if one did.

    Every op run in the block has its outputs checked, so such an input was not made in it: it is
    a leaf or constant (data, a parameter), or the output of an op run before the block.
    """
    inputs = [a for a in args if isinstance(a, TensorBase)]
    for k, a in enumerate(inputs):
        if not _finite(a):
            maker = a._node
            origin = ("a leaf or constant (your data, a parameter, a tensor made from an array): it came from "
                      "outside the tape" if maker is None else
                      f"made by {maker.name} before detect_anomaly was on" if "site" not in maker.__dict__ else
                      f"made by {maker.name} at {maker.site}")
            raise FloatingPointError(f"detect_anomaly: input {k} (shape {tuple(a.shape)}) of {ctx.name} forward "
                                     f"already held NaN or inf; it is {origin}. The op was created at {ctx.site}; "
                                     f"input shapes {ctx.input_shapes}") from produced
