"""torch.nn.modules.sparse"""
from .. import Embedding

__all__ = ["Embedding"]
