"""tinygrad_seq: a small reverse-mode autodiff engine on NumPy/CuPy for recurrent networks."""
from .autograd import Function, detect_anomaly, enable_grad, is_grad_enabled, no_grad
from .backend import bool_, float16, float32, float64, int32, int64, manual_seed
from ._tensor import (Tensor, arange, cat, full, maximum, minimum, ones, ones_like, rand, randn, stack,
                     where, zeros, zeros_like)
from . import diagnostics, functional, nn, optim
from .diagnostics import gradient_flow, to_dot
from .gradcheck import gradcheck
from .serialization import load, save
