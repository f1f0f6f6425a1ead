"""torch.nn.modules.batchnorm"""
from .. import BatchNorm1d

__all__ = ["BatchNorm1d"]
