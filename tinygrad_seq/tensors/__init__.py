"""tg.Tensor and the tg.* functions that make and join tensors: the layer above the engine that
users hold. The engine's Tensor (engine/tensor.py) has what the tape and the derivative rules
need; this layer adds PyTorch's everyday methods (methods.py) and functions (creation.py).
"""
from .creation import (arange, cat, from_numpy, full, maximum, minimum, ones, ones_like, rand, randint, randn,
                       randperm, stack, tensor, where, zeros, zeros_like)
from .generator import Generator
from .methods import ValuesIndices
from .tensor import Tensor

__all__ = ["Generator", "Tensor", "ValuesIndices", "arange", "cat", "from_numpy", "full", "maximum", "minimum", "ones",
           "ones_like", "rand", "randint", "randn", "randperm", "stack", "tensor", "where", "zeros", "zeros_like"]
