"""Modules: layers, containers, activations, losses, recurrent cells, the recurrent runner and sequence layers."""
from . import functional, init, utils
from .activation import GELU, Flatten, Identity, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .containers import ModuleDict, ModuleList, Sequential
from .layers import Dropout, Embedding, LayerNorm, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, Parameter
from .recurrent import GRU, LSTM, RNN, Recurrent, RNNBase
from . import modules  # PyTorch's paths: nn.modules.rnn.LSTM, ...
