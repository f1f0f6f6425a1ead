"""torch.nn.modules.flatten"""
from .. import Flatten, Unflatten

__all__ = ["Flatten", "Unflatten"]
