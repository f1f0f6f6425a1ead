"""tg.Tensor: the engine's Tensor (engine/tensor.py) with PyTorch's everyday methods (methods.py), more
elementwise ones (elementwise.py) and more along axes (axis_methods.py); its matrix products and
backward passes follow the library's thread policy (threads.py)."""
from .. import threads
from ..engine import tensor as engine
from .axis_methods import AxisMethods
from .elementwise import ElementwiseMethods
from .methods import TensorMethods


def _policed(product):
    """The engine's matrix product `product`, run with NumPy's BLAS at threads.limit_now() threads when that
    gives a count (other tasks are using cores and the program set none), as it was after."""
    def method(self, other):
        n = threads.limit_now()
        if n is None:
            return product(self, other)
        with threads.blas_threads(n):
            return product(self, other)
    method.__name__ = product.__name__
    return method


class Tensor(TensorMethods, ElementwiseMethods, AxisMethods, engine.Tensor):
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Tensor(data, requires_grad=False, dtype=None, device=None) copies `data` (a scalar, nested
    list, NumPy/CuPy array or Tensor). Floats default to float32, float64 arrays stay float64,
    integers stay integers.
    """
    __slots__ = ()

    def backward(self, grad=None, retain_graph=None, create_graph=False, inputs=None):
        with threads.limited():  # every matmul of the pass at the free cores when other tasks use cores
            engine.Tensor.backward(self, grad, retain_graph, create_graph, inputs)

    backward.__doc__ = engine.Tensor.backward.__doc__

    __matmul__, __rmatmul__ = _policed(engine.Tensor.__matmul__), _policed(engine.Tensor.__rmatmul__)

    @staticmethod
    def _make(data, node, index):
        t = _new(Tensor)
        t._data, t.grad, t._node, t._index, t._hooks, t._requires_grad = data, None, node, index, None, node is not None
        return t


_new = object.__new__
