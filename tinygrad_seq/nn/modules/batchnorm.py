"""torch.nn.modules.batchnorm"""
from ..normalization import BatchNorm1d

__all__ = ["BatchNorm1d"]
