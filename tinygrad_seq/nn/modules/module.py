"""torch.nn.modules.module"""
from .. import Module

__all__ = ["Module"]
