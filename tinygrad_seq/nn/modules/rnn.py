"""torch.nn.modules.rnn"""
from ..cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from ..recurrent import GRU, LSTM, RNN, RNNBase

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]
