"""tinygrad_seq: a small reverse-mode autodiff engine on NumPy/CuPy for recurrent networks."""
from .autograd import (Function, detect_anomaly, enable_grad, inference_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .backend import (bool_, float16, float32, float64, get_rng_state, int8, int16, int32, int64, manual_seed,
                      set_rng_state, uint8)
from ._tensor import (Tensor, arange, cat, from_numpy, full, maximum, minimum, ones, ones_like, rand, randn, stack,
                      tensor, where, zeros, zeros_like)
from . import autograd_functional, capture, data, diagnostics, functional, nn, optim, utils
from .diagnostics import gradient_flow, to_dot
from .gradcheck import gradcheck, gradgradcheck
from .higher_order import grad
from .serialization import load, save
from .threads import get_num_threads, set_num_threads
from . import threads

threads.apply_default()  # one BLAS thread unless the user chose otherwise (see threads.py)

# PyTorch's dtype names (torch.float, torch.long, ...), all NumPy dtypes here
bool, half, float, double, int, long = bool_, float16, float32, float64, int32, int64

# what `from tinygrad_seq import *` gives: everything above except the names that would shadow builtins
__all__ = ["Function", "Tensor", "arange", "autograd_functional", "bool_", "capture", "cat", "data", "detect_anomaly",
           "diagnostics", "double", "enable_grad", "float16", "float32", "float64", "from_numpy", "full", "functional",
           "get_num_threads", "get_rng_state", "grad", "gradcheck", "gradgradcheck", "gradient_flow", "half",
           "inference_mode", "int8", "int16", "int32", "int64", "is_grad_enabled", "load", "long", "manual_seed",
           "maximum", "minimum", "nn", "no_grad", "ones", "ones_like", "optim", "rand", "randn", "save",
           "set_grad_enabled", "set_num_threads", "set_rng_state", "stack", "tensor", "to_dot", "uint8", "utils",
           "where", "zeros", "zeros_like"]
