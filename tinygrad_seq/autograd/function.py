"""tg.Function: the engine's Function, plus PyTorch's style of writing one.

tinygrad style (plain methods): `ctx` is the instance; forward gets arrays, backward one
rule that runs on arrays (and on Tensors under create_graph): see engine.function.Function.

PyTorch style (both @staticmethod, as torch.autograd.Function): forward(ctx, *args) gets
Tensors and returns Tensors, saving them with `ctx.save_for_backward(*tensors)`; backward(ctx,
*grads) gets Tensors (zeros for outputs that got no gradient, as in PyTorch) and returns a
Tensor or None per forward argument, written with Tensor ops. Forward runs without recording;
backward runs without recording in an ordinary backward and recorded under create_graph (a
saved output is this node's output on the tape), so it is differentiable twice.
`ctx.needs_input_grad` and `ctx.mark_non_differentiable` work as in PyTorch.
"""
import inspect

from ..engine import backend, function
from ..engine.function import TensorBase, enable_grad, no_grad
from ..tensors import Tensor

__all__ = ["Function"]


class Function(function.Function):
    """A differentiable op written by a user, in the tinygrad style or PyTorch's (read from whether
    `forward` is a staticmethod); call it with `MyFunction.apply(*args, **kwargs)`."""
    __slots__ = ()

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"call a Function through its class: {type(self).__name__}.apply(*inputs)")

    def save_for_backward(self, *values):
        """Keep values for backward (arrays in the tinygrad style, Tensors in PyTorch's): ctx.saved_tensors."""
        self.saved = values

    @property
    def saved_tensors(self):
        if "saved" not in self.__dict__:
            raise RuntimeError(f"{self.name}: no saved tensors (save_for_backward was not called, or the graph was "
                               "freed by backward(); pass retain_graph=True to keep it)")
        return self.saved

    saved_arrays = saved_tensors

    def __init_subclass__(cls, _node=False, **kwargs):
        super().__init_subclass__(**kwargs)
        if _node:
            return
        static = [isinstance(inspect.getattr_static(cls, m), staticmethod) for m in ("forward", "backward")]
        if static[0] != static[1]:
            raise TypeError(f"{cls.__name__}: forward and backward must both be @staticmethod (PyTorch style: "
                            "Tensors in and out, ctx passed first) or both plain methods (tinygrad style: arrays "
                            "in and out, ctx is the instance)")
        if static[0]:
            cls.apply = classmethod(_apply_torch_style)
            cls._Node = type(cls.__name__, (_TorchStyleNode, cls), {"_function": cls}, _node=True)


class _TorchStyleNode:
    """The node (and ctx) of a PyTorch-style Function: the user's forward and backward adapted to the engine's."""
    __slots__ = ()
    forward_on_arrays = False

    def forward(self, *arrays, _tensors, **kwargs):
        """The user's forward on Tensors (the arrays of Tensor arguments, wrapped again), without recording."""
        self._tensor_inputs, self._non_differentiable = _tensors, ()
        with no_grad():
            out = self._function.forward(self, *[Tensor._make(a, None, 0) if t else a for a, t in zip(arrays, _tensors)],
                                         **kwargs)
        outs = (out,) if isinstance(out, TensorBase) else out
        if not isinstance(outs, tuple) or not outs or not all(isinstance(o, TensorBase) for o in outs):
            raise TypeError(f"{self.name}.forward (a @staticmethod, PyTorch style) must return a Tensor or a "
                            f"tuple of Tensors, got {type(out).__name__}")
        self._outputs = [(o.shape, o.dtype, backend.device_of(o.array)) for o in outs]
        self._non_differentiable = tuple(id(o.array) for o in outs if id(o) in self._non_differentiable)
        return tuple(o.array for o in outs) if type(out) is tuple else out.array

    def save_for_backward(self, *tensors):
        for t in tensors:
            if t is not None and not isinstance(t, TensorBase):
                raise TypeError(f"{self.name}: save_for_backward takes Tensors (or None), got {type(t).__name__}; "
                                "keep other values as attributes of ctx")
        self.saved = tensors

    def mark_non_differentiable(self, *tensors):
        """Outputs listed here get no gradient (e.g. indices returned beside values)."""
        self._non_differentiable = tuple(id(t) for t in tensors)  # (forward turns these into ids of arrays)

    def backward(self, *grads):
        """Given arrays (the ordinary walk) the user's backward runs without recording and arrays come back;
        given Tensors (create_graph) it is recorded."""
        arrays = not any(isinstance(g, TensorBase) for g in grads)
        grads = [g if g is None or not arrays else Tensor._make(g, None, 0) for g in grads]
        grads = [Tensor._make(backend.namespace(device).zeros(shape, dtype), None, 0) if g is None else g
                 for g, (shape, dtype, device) in zip(grads, self._outputs)]
        with no_grad() if arrays else enable_grad():
            result = self._function.backward(self, *grads)
        result = result if type(result) is tuple else (result,)
        if len(result) != len(self.parents):
            raise RuntimeError(f"{self.name}.backward returned {len(result)} gradients, expected {len(self.parents)} "
                               "(one per forward argument, None for those without a gradient)")
        out = []
        for k, (g, need, is_tensor) in enumerate(zip(result, self.needs_input_grad, self._tensor_inputs)):
            if g is not None and not is_tensor:
                raise RuntimeError(f"{self.name}.backward returned a gradient for argument {k}, which is not a Tensor; "
                                   "return None there")
            if g is not None and not isinstance(g, TensorBase):
                raise TypeError(f"{self.name}.backward returned a {type(g).__name__} for argument {k}; return a Tensor "
                                "(or None)")
            out.append((g.array if arrays else g) if need and g is not None else None)
        return tuple(out)


def _apply_torch_style(cls, *args, **kwargs):
    """Function.apply for PyTorch-style Functions: the engine's apply, with the node's forward running the
    user's on Tensors without recording; outputs marked non-differentiable (or not floating) get no node."""
    tensors = tuple(isinstance(a, TensorBase) for a in args)
    results = function.Function.apply.__func__(cls._Node, *args, _tensors=tensors, **kwargs)
    node = (results[0] if type(results) is tuple else results)._node
    if node is None:
        return results
    outs = results if type(results) is tuple else (results,)
    outs = tuple(o if id(o.array) not in node._non_differentiable and backend.is_floating(o.dtype) else
                 o._make(o.array, None, 0) for o in outs)
    return outs if type(results) is tuple else outs[0]
