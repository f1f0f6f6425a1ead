"""torch.nn.modules.linear"""
from ..activation import Identity
from ..layers import Linear

__all__ = ["Identity", "Linear"]
