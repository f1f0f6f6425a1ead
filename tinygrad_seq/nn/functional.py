"""PyTorch's import path for the functional API: `import tinygrad_seq.nn.functional as F`.

The implementation is tinygrad_seq/functional.py; this module re-exports its public names.
"""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401
