"""tg.Tensor and the tg.* functions that make and join tensors: the layer above the engine that
users hold. The engine's Tensor (engine/tensor.py) has what the tape and the derivative rules
need; this layer adds PyTorch's everyday methods (methods.py, elementwise.py, axis_methods.py), functions
that make tensors (creation.py) and the function forms of the methods (functions.py).
"""
from .creation import (BoolTensor, ByteTensor, CharTensor, DoubleTensor, FloatTensor, HalfTensor, IntTensor,
                       LongTensor, ShortTensor, arange, as_tensor, cat, empty, empty_like, eye, from_numpy, full,
                       full_like, linspace, maximum, minimum, ones, ones_like, rand, rand_like, randint, randn,
                       randn_like, randperm, stack, tensor, where, zeros, zeros_like)
from .functions import FUNCTIONS
from .generator import Generator
from .methods import ValuesIndices
from .tensor import Tensor

__all__ = ["BoolTensor", "ByteTensor", "CharTensor", "DoubleTensor", "FloatTensor", "FUNCTIONS", "Generator",
           "HalfTensor", "IntTensor", "LongTensor", "ShortTensor", "Tensor", "ValuesIndices", "arange", "as_tensor",
           "cat", "empty", "empty_like", "eye", "from_numpy", "full", "full_like", "linspace", "maximum", "minimum",
           "ones", "ones_like", "rand", "rand_like", "randint", "randn", "randn_like", "randperm", "stack", "tensor",
           "where", "zeros", "zeros_like"]
