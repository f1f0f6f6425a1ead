"""The engine: what a student reads to follow a gradient, bottom up.

backend.py   the only module computing with NumPy/CuPy: devices, transfers, random numbers
function.py  Function (a primitive, and the node of the tape), grad modes, the one backward walk
ops.py       the primitives: forward on arrays and one derivative rule each
tensor.py    Tensor: the array users hold; its methods call the primitives
"""
from .function import Function, enable_grad, is_grad_enabled, no_grad
from .tensor import Tensor

__all__ = ["Function", "Tensor", "enable_grad", "is_grad_enabled", "no_grad"]
