"""tinygrad_seq: a small reverse-mode autodiff engine on NumPy/CuPy for recurrent networks."""
from .autograd import (Function, detect_anomaly, enable_grad, inference_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .backend import bool_, float16, float32, float64, int8, int16, int32, int64, manual_seed, uint8
from ._tensor import (Tensor, arange, cat, from_numpy, full, maximum, minimum, ones, ones_like, rand, randn, stack,
                      tensor, where, zeros, zeros_like)
from . import diagnostics, functional, nn, optim
from .diagnostics import gradient_flow, to_dot
from .gradcheck import gradcheck
from .serialization import load, save

# PyTorch's dtype names (torch.float, torch.long, ...), all NumPy dtypes here
bool, half, float, double, int, long = bool_, float16, float32, float64, int32, int64
