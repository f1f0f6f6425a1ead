"""torch.nn.modules.flatten"""
from ..activation import Flatten
from ..layers import Unflatten

__all__ = ["Flatten", "Unflatten"]
