"""torch.nn.modules.flatten"""
from ..activation import Flatten

__all__ = ["Flatten"]
