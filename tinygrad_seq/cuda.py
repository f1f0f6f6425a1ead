"""torch.cuda's questions about the GPU, answered from CuPy (tinygrad_seq's GPU backend):

    device = tg.device("cuda" if tg.cuda.is_available() else "cpu")
"""
from .engine import backend

__all__ = ["current_device", "device_count", "is_available"]


def device_count():
    """How many CUDA GPUs CuPy sees (0 without CuPy or without a GPU)."""
    return backend.device_count("cuda")


def is_available():
    """Whether device "cuda" can be used: CuPy is installed and sees at least one GPU."""
    return device_count() > 0


def current_device():
    """The index of the GPU that device "cuda" means (always 0 here: "cuda" is "cuda:0")."""
    if not is_available():
        raise RuntimeError(backend.CUDA_HELP.format("cuda"))
    return 0
