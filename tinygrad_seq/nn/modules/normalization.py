"""torch.nn.modules.normalization"""
from .. import LayerNorm

__all__ = ["LayerNorm"]
