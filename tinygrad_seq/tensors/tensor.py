"""tg.Tensor: the engine's Tensor (engine/tensor.py) with PyTorch's everyday methods (methods.py), more
elementwise ones (elementwise.py) and more along axes (axis_methods.py)."""
from ..engine import tensor as engine
from .axis_methods import AxisMethods
from .elementwise import ElementwiseMethods
from .methods import TensorMethods


class Tensor(TensorMethods, ElementwiseMethods, AxisMethods, engine.Tensor):
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Tensor(data, requires_grad=False, dtype=None, device=None) copies `data` (a scalar, nested
    list, NumPy/CuPy array or Tensor). Floats default to float32, float64 arrays stay float64,
    integers stay integers.
    """
    __slots__ = ()

    @staticmethod
    def _make(data, node, index):
        t = _new(Tensor)
        t._data, t.grad, t._node, t._index, t._hooks, t._requires_grad = data, None, node, index, None, node is not None
        return t


_new = object.__new__
