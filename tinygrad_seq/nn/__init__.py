"""Modules: layers, recurrent cells, the recurrent runner and sequence layers."""
from . import init, utils
from .cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .layers import Dropout, Embedding, LayerNorm, Linear, Sequential
from .module import Module, Parameter
from .recurrent import GRU, LSTM, RNN, Recurrent, RNNBase
