"""Files: tg.save / tg.load (checkpoint.py: nested checkpoints as .npz + a JSON manifest, and the
choice of format), .safetensors (safetensors.py) and PyTorch's .pt (pytorch.py); never pickle."""
from . import pytorch, safetensors
from .checkpoint import load, save

__all__ = ["load", "pytorch", "safetensors", "save"]
