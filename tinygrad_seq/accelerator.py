"""torch.accelerator: the one accelerator this process can use (here a CUDA GPU through CuPy), or none.

    device = tg.accelerator.current_accelerator() if tg.accelerator.is_available() else tg.device("cpu")
"""
from .engine import backend

__all__ = ["current_accelerator", "device_count", "is_available"]


def device_count():
    """How many accelerator devices there are (CUDA GPUs that CuPy sees; 0 without CuPy)."""
    return backend.device_count("cuda")


def is_available():
    """Whether an accelerator can be used."""
    return device_count() > 0


def current_accelerator(check_available=False):
    """tg.device("cuda") when CuPy sees a GPU, else None. (PyTorch names its build's accelerator even
    when no device is usable unless check_available=True; here there is no build to ask, so the
    answer is None whenever none is usable, whatever the flag.)"""
    return backend.Device("cuda") if is_available() else None
