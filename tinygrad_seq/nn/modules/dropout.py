"""torch.nn.modules.dropout"""
from ..dropout import Dropout1d, Dropout2d
from ..layers import Dropout

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]
