"""Files: save/load of nested checkpoints as .npz + a JSON manifest, never pickle (checkpoint.py)."""
from .checkpoint import load, save

__all__ = ["load", "save"]
