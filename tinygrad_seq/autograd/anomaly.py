"""detect_anomaly: an observer of the tape (engine.function.observed) that raises at the first NaN or inf.

Every op applied inside the block is told its creation site (the innermost line of user code)
and its input shapes, and its outputs are checked; every rule the walk runs is checked too. NumPy's
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
        _check_finite(ctx, result if type(result) is tuple else (result,), "forward")

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


def _check_finite(node, values, stage):
    for k, v in enumerate(values):
        a = v.array if isinstance(v, TensorBase) else v
        if a is None or not hasattr(a, "dtype"):  # (a lazy matmul product is finite if its factors are)
            continue
        a = a if backend.is_array(a) else backend.as_array(a)
        if backend.is_floating(a.dtype) and not bool(backend.array_namespace(a).isfinite(a).all()):
            raise FloatingPointError(f"detect_anomaly: {node.name} {stage} produced NaN or inf (output {k}); the op "
                                     f"was created at {node.site}; input shapes {node.input_shapes}")
