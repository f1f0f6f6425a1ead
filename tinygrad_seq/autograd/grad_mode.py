"""PyTorch's other grad-mode switches, on the engine's per-thread grad mode (engine/function.py)."""
from ..engine.function import GradMode, modes

__all__ = ["inference_mode", "set_grad_enabled"]


class inference_mode(GradMode):
    """PyTorch's inference_mode(mode=True): here the same as no_grad() (there are no inference tensors)."""
    def __init__(self, mode=True):
        self.enabled = not mode


class set_grad_enabled:
    """set_grad_enabled(mode): switch recording on or off now; used with `with`, the old mode comes back at exit."""
    def __init__(self, mode):
        self.previous, modes.grad = modes.grad, bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        modes.grad = self.previous
