"""tinygrad_seq: a small reverse-mode autodiff engine on NumPy/CuPy for recurrent networks.

Layers, each importing only the ones below it: engine (backend, the engine's Tensor, Function and
the walk, the primitives); tensors (tg.Tensor with PyTorch's everyday methods, creation functions);
capture (the recorded time loop); autograd (grad, transforms, gradcheck, PyTorch-style Functions,
detect_anomaly); nn; optim; data; io (checkpoints); distributed and diagnostics on top; threads (the BLAS
thread count and the library's own parallel work) beside the engine.
"""
from .engine.backend import (bool_, float16, float32, float64, get_rng_state, int8, int16, int32, int64, manual_seed,
                             set_rng_state, uint8)
from .engine.function import enable_grad, is_grad_enabled, no_grad
from .tensors import (Tensor, arange, cat, from_numpy, full, maximum, minimum, ones, ones_like, rand, randn, stack,
                      tensor, where, zeros, zeros_like)
from . import autograd, capture, data, diagnostics, distributed, engine, io, nn, optim, tensors, threads, utils
from .autograd import Function, detect_anomaly, grad, gradcheck, gradgradcheck, inference_mode, set_grad_enabled
from .autograd import functional as autograd_functional
from .diagnostics import gradient_flow, to_dot
from .io import load, save
from .nn import functional
from .threads import get_num_threads, set_num_threads

# PyTorch's dtype names (torch.float, torch.long, ...), all NumPy dtypes here
bool, half, float, double, int, long = bool_, float16, float32, float64, int32, int64

# devices as objects (torch.device), the GPU questions (torch.cuda, torch.accelerator), random streams
from .engine.backend import Device as device
from .tensors import Generator
from . import accelerator, cuda

# what `from tinygrad_seq import *` gives: everything above except the names that would shadow builtins
__all__ = ["Function", "Tensor", "arange", "autograd", "autograd_functional", "bool_", "capture", "cat", "data",
           "detect_anomaly", "diagnostics", "distributed", "double", "enable_grad", "engine", "float16", "float32",
           "float64", "from_numpy", "full", "functional", "get_num_threads", "get_rng_state", "grad", "gradcheck",
           "gradgradcheck", "gradient_flow", "half", "inference_mode", "int8", "int16", "int32", "int64", "io",
           "is_grad_enabled", "load", "long", "manual_seed", "maximum", "minimum", "nn", "no_grad", "ones",
           "ones_like", "optim", "rand", "randn", "save", "set_grad_enabled", "set_num_threads", "set_rng_state",
           "stack", "tensor", "tensors", "threads", "to_dot", "uint8", "utils", "where", "zeros", "zeros_like"]

# PyTorch's function forms of the Tensor methods (tg.tanh(x), tg.sum(x, 1), tg.sort, ...), generated from one
# table (tensors/functions.py); the other constructors, the legacy typed ones, and the process-wide defaults
import builtins as _builtins

from .engine.backend import get_default_dtype, set_default_device, set_default_dtype
from .tensors import (BoolTensor, ByteTensor, CharTensor, DoubleTensor, FloatTensor, HalfTensor, IntTensor,
                      LongTensor, ShortTensor, as_tensor, empty, empty_like, eye, full_like, linspace, rand_like,
                      randint, randn_like, randperm)
from .tensors.functions import FUNCTIONS as _FUNCTIONS

globals().update(_FUNCTIONS)
short = int16
__all__ += ["BoolTensor", "ByteTensor", "CharTensor", "DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor",
            "LongTensor", "ShortTensor", "as_tensor", "empty", "empty_like", "eye", "full_like", "get_default_dtype",
            "linspace", "rand_like", "randint", "randn_like", "randperm", "set_default_device", "set_default_dtype",
            "short"] + sorted(name for name in _FUNCTIONS if not hasattr(_builtins, name))
__all__ += ["Generator", "accelerator", "cuda", "device"]
