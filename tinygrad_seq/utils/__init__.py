"""`tinygrad_seq.utils.data` is `tinygrad_seq.data`, under the path PyTorch code imports it from."""
from . import data  # noqa: F401
