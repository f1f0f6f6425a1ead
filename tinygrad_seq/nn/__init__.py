"""Modules: layers, containers, activations, losses, recurrent cells, the recurrent runner and sequence layers."""
from . import attention, decoding, functional, init, utils
from .activation import (CELU, ELU, GELU, GLU, SELU, Flatten, Hardsigmoid, Hardswish, Hardtanh, Identity,
                         LeakyReLU, LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax,
                         Softmin, Softplus, Softsign, Tanh, Tanhshrink)
from .cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .containers import ModuleDict, ModuleList, Sequential
from .layers import Dropout, Embedding, LayerNorm, Linear
from .distance import CosineSimilarity, PairwiseDistance
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MarginRankingLoss,
                   MSELoss, NLLLoss, SmoothL1Loss)
from .module import Module, Parameter
from .recurrent import GRU, LSTM, RNN, Recurrent, RNNBase
from .containers import ParameterDict, ParameterList
from .dropout import Dropout1d, Dropout2d
from .layers import Unflatten
from .module import RemovableHandle
from .normalization import BatchNorm1d
from .attention import AdditiveAttention, AttentionDecoderCell, BilinearAttention, DotProductAttention
from .cell_zoo import CellWrapper, LayerNormLSTMCell, PeepholeLSTMCell, VariationalDropout, Zoneout
from . import tbptt
from .tbptt import TBPTT, run_with_resets
from . import modules  # PyTorch's paths: nn.modules.rnn.LSTM, ...
