"""tinygrad_seq: a small reverse-mode autodiff engine on NumPy/CuPy for recurrent networks."""
from .autograd import Function, detect_anomaly, enable_grad, is_grad_enabled, no_grad
from .backend import bool_, float16, float32, float64, get_rng_state, int32, int64, manual_seed, set_rng_state
from .tensor import (Tensor, arange, cat, full, maximum, minimum, ones, ones_like, rand, randn, stack,
                     where, zeros, zeros_like)
from . import autograd_functional, capture, data, diagnostics, functional, nn, optim, utils
from .diagnostics import gradient_flow, to_dot
from .gradcheck import gradcheck, gradgradcheck
from .higher_order import grad
from .serialization import load, save
from .threads import get_num_threads, set_num_threads
from . import threads

threads.apply_default()  # one BLAS thread unless the user chose otherwise (see threads.py)
