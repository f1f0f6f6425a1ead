"""Which devices the suite runs on: cpu and the fake GPU always, cuda when CuPy sees a GPU."""
import importlib.util

import pytest


def _cuda_available():
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy installed without a usable driver or device
        return False


HAS_CUDA = _cuda_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs CuPy and a CUDA GPU")
DEVICE_PARAMS = ["cpu", "fake", pytest.param("cuda", marks=needs_cuda)]
