"""Gradients as values: grad() (PyTorch's torch.autograd.grad), the function transforms in
`functional` (vjp, jvp, hvp, jacobian, hessian) and `gradcheck`. All of them run the engine's
one walk (engine/function.py); with create_graph the rules run on Tensors, so the gradients
are on the tape and can be differentiated again.
"""
from ..engine.function import enable_grad, no_grad
from . import functional
from .anomaly import detect_anomaly
from .function import Function
from .grad import grad
from .grad_mode import inference_mode, set_grad_enabled
from .gradcheck import gradcheck, gradgradcheck

__all__ = ["Function", "detect_anomaly", "enable_grad", "functional", "grad", "gradcheck", "gradgradcheck",
           "inference_mode", "no_grad", "set_grad_enabled"]
