"""torch.nn.modules.activation"""
from ..activation import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh

__all__ = ["GELU", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]
