"""Alias of tinygrad_seq.data, so that `from tinygrad_seq.utils.data import DataLoader` ports unchanged."""
from ..data import *  # noqa: F401,F403
from ..data import __all__  # noqa: F401
