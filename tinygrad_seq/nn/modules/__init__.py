"""PyTorch's module paths for the layers (torch.nn.modules.rnn.LSTM, torch.nn.modules.linear.Linear, ...),
for code that names a class by where PyTorch defines it (type checks, allowlists, subclassing).
Each submodule holds the classes PyTorch's file of the same name holds, where they exist here;
the classes are the very ones in tinygrad_seq.nn.
"""
from . import (activation, batchnorm, container, distance, dropout, flatten, linear, loss, module, normalization,
               rnn, sparse)
