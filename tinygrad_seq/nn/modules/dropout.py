"""torch.nn.modules.dropout"""
from ..layers import Dropout

__all__ = ["Dropout"]
