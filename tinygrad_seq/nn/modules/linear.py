"""torch.nn.modules.linear"""
from .. import Identity, Linear

__all__ = ["Identity", "Linear"]
