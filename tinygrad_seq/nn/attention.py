"""Attention for recurrent encoder-decoders, as ordinary Tensor code.

A decoder reads a memory: the encoder's outputs m_1..m_S (B, S, D) of a padded batch, with a
boolean mask (B, S) that is True at the real positions. For a query q (the decoder's state):

    scores   e_j = score(q, m_j)                        one per source position
    weights  a   = softmax(e) over the real positions   exactly 0 at the padded ones
    context  c   = sum_j a_j m_j

with one of three scores (Q: query size, K: key size):

    AdditiveAttention(Q, K, H)   Bahdanau et al. 2015     v^T tanh(W_q q + W_k m_j + b)
    DotProductAttention()        Luong et al. 2015 "dot"  q . m_j  (scaled=True: / sqrt(K))
    BilinearAttention(Q, K)      Luong et al. 2015 "general"  q^T W m_j

Each module splits its work in two: `prepare(keys, values, mask)` once per source sequence
(the keys' projection, padding zeroed: a `Memory`) and `attend(query, memory)` once per
decoder step. `forward(query, keys, values=None, mask=None)` does both. AttentionDecoderCell
is a decoder cell that attends at every step; `nn.Recurrent` runs it, and its captured loop
reads the memory as an outside tensor.

This is attention for recurrent models; the Transformer's multi-head attention is not here.
"""
import collections
import copy
import math

from ..engine import backend
from ..tensors import Tensor, cat, where, zeros
from .cells import GRUCell, LSTMCell, RNNCell
from .layers import Linear
from . import init
from .module import Module, Parameter

Memory = collections.namedtuple("Memory", ["keys", "values", "mask"])
Memory.__doc__ = """What `prepare` makes of a memory: keys projected for the score (B, S, ...), values
(B, S, D) and mask (B, 1, S) or None; padded positions of keys and values are zero."""


def sequence_mask(lengths, max_length=None, device=None):
    """Booleans (B, max_length), True at positions t < lengths[b]: the real positions of a padded batch.

    lengths: B integers (a list, array or Tensor); max_length defaults to the longest length; the
    mask is made on `device`, by default the lengths' device (a Tensor's, else the CPU).
    """
    values = lengths.array if isinstance(lengths, Tensor) else backend.new_array(lengths)
    if values.ndim != 1 or not backend.is_integer(values.dtype):
        raise TypeError(f"sequence_mask: lengths must be a 1-D sequence of integers, got {values.dtype} "
                        f"of shape {values.shape}")
    if max_length is None:
        max_length = int(values.max()) if values.size else 0
    positions = backend.array_namespace(values).arange(max_length)
    return Tensor(positions[None, :] < values[:, None], device=device)


def masked_softmax(scores, mask=None):
    """softmax over the last axis, in which positions where `mask` (broadcast to scores) is False get
    exactly zero weight; a row with no True position gets zero weight everywhere (and so a zero context).

    The masked scores are replaced by the dtype's lowest finite value, not -inf, so that a row with
    nothing to attend to makes no NaN. The weights are exp(log_softmax): log_softmax is one fused op
    computed from its input at every step, whereas Tensor.softmax marks its negligible entries with a
    mask read from the values, which a captured step would keep from the recorded steps.
    """
    if mask is None:
        return scores.log_softmax(-1).exp()
    lowest = backend.namespace(scores.device).finfo(scores.dtype).min
    return where(mask, where(mask, scores, lowest).log_softmax(-1).exp(), 0.0)


def _check_memory(op, keys, values, mask):
    for name, t in (("keys", keys), ("values", values)):
        if not isinstance(t, Tensor) or t.ndim != 3:
            got = t.shape if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be a Tensor of shape (batch, source length, features), got {got}")
    if values.shape[:2] != keys.shape[:2]:
        raise ValueError(f"{op}: keys {keys.shape} and values {values.shape} differ in batch or source length")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != keys.shape[:2]
                             or mask.dtype != backend.bool_):
        got = f"{mask.dtype} of shape {mask.shape}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{op}: mask must be a boolean Tensor of shape {keys.shape[:2]} (True at the real "
                         f"positions; nn.attention.sequence_mask makes one from lengths), got {got}")


class Attention(Module):
    """Shared by the attention modules; a subclass defines project_keys(keys) and score(query, keys).

    prepare(keys, values=None, mask=None) -> Memory, once per source sequence (values default to the keys).
    attend(query, memory) -> (context, weights): a query (B, Q) gives (B, D) and (B, S); queries
    (B, T, Q) give (B, T, D) and (B, T, S).
    """
    query_size = key_size = None  # checked when set; a parameter-free score takes any size

    def prepare(self, keys, values=None, mask=None):
        values = keys if values is None else values
        name = type(self).__name__
        _check_memory(name, keys, values, mask)
        if self.key_size is not None and keys.shape[2] != self.key_size:
            raise ValueError(f"{name}: expected keys with {self.key_size} features, got {keys.shape}")
        if mask is not None:  # padding, even inf or NaN, never reaches a score or a context
            B, S = mask.shape
            rows, shared = mask.reshape(B, S, 1), values is keys
            keys = where(rows, keys, 0.0)
            values = keys if shared else where(rows, values, 0.0)
            mask = mask.reshape(B, 1, S)
        return Memory(self.project_keys(keys), values, mask)

    def attend(self, query, memory):
        name = type(self).__name__
        B = memory.values.shape[0]
        if not isinstance(query, Tensor) or query.ndim not in (2, 3) or query.shape[0] != B or \
                (self.query_size is not None and query.shape[-1] != self.query_size):
            got = query.shape if isinstance(query, Tensor) else type(query).__name__
            size = "query_size" if self.query_size is None else self.query_size
            raise ValueError(f"{name}: expected a query of shape ({B}, {size}) or ({B}, T, {size}) for a memory of "
                             f"batch {B}, got {got}")
        single = query.ndim == 2
        q = query.unsqueeze(1) if single else query
        weights = masked_softmax(self.score(q, memory.keys), memory.mask)  # (B, T, S)
        context = weights @ memory.values  # (B, T, D)
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)

    def forward(self, query, keys, values=None, mask=None):
        return self.attend(query, self.prepare(keys, values, mask))

    def project_keys(self, keys):
        return keys


class AdditiveAttention(Attention):
    """Bahdanau et al. (2015): score(q, k) = v^T tanh(W_q q + W_k k + b), with parameters
    query_proj.weight (H, Q), key_proj.weight (H, K), key_proj.bias (H,) and v (H,), all initialised
    as PyTorch's Linear layers (v as the weight of a Linear(H, 1))."""

    def __init__(self, query_size, key_size, hidden_size, dtype=None, device=None):
        self.query_size, self.key_size, self.hidden_size = query_size, key_size, hidden_size
        self.query_proj = Linear(query_size, hidden_size, bias=False, dtype=dtype, device=device)
        self.key_proj = Linear(key_size, hidden_size, dtype=dtype, device=device)
        self.v = Parameter(zeros(hidden_size, dtype=dtype, device=device))
        init.uniform_(self.v, -1 / math.sqrt(hidden_size), 1 / math.sqrt(hidden_size))

    def project_keys(self, keys):
        return self.key_proj(keys)  # (B, S, H), once per sequence

    def score(self, query, keys):
        hidden = (self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1)).tanh()  # (B, T, S, H)
        return (hidden * self.v).sum(3)  # not a matmul with one output column: NumPy runs those slowly

    def extra_repr(self):
        return f"query_size={self.query_size}, key_size={self.key_size}, hidden_size={self.hidden_size}"


class DotProductAttention(Attention):
    """Luong et al. (2015) "dot": score(q, k) = q . k; scaled=True divides by sqrt(K) (Vaswani et al.
    2017). No parameters; queries and keys must have the same size."""

    def __init__(self, scaled=False):
        self.scaled = scaled

    def project_keys(self, keys):
        return keys * (1 / math.sqrt(keys.shape[2])) if self.scaled else keys

    def score(self, query, keys):
        if query.shape[2] != keys.shape[2]:
            raise ValueError(f"DotProductAttention: queries {query.shape} and keys {keys.shape} must have the same "
                             "size (BilinearAttention or AdditiveAttention relate different sizes)")
        return query @ keys.transpose(1, 2)

    def extra_repr(self):
        return f"scaled={self.scaled}"


class BilinearAttention(Attention):
    """Luong et al. (2015) "general": score(q, k) = q^T W k, with W = key_proj.weight (Q, K)."""

    def __init__(self, query_size, key_size, dtype=None, device=None):
        self.query_size, self.key_size = query_size, key_size
        self.key_proj = Linear(key_size, query_size, bias=False, dtype=dtype, device=device)

    def project_keys(self, keys):
        return self.key_proj(keys)  # W k for every source position, once per sequence

    def score(self, query, keys):
        return query @ keys.transpose(1, 2)

    def extra_repr(self):
        return f"query_size={self.query_size}, key_size={self.key_size}"


CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


class AttentionDecoderCell(Module):
    """A decoder cell that attends to a memory at every step (Luong et al. 2015, with input feeding):

        h_t  = cell([x_t ; o_{t-1}], h_{t-1})      cell(x_t, h_{t-1}) with input_feeding=False
        a_t  = attention weights of the query h_t over the memory (zero at padded positions)
        c_t  = sum_j a_tj m_j
        o_t  = tanh(W_o [c_t ; h_t] + b_o)         the output, what a classifier reads

    The state is (o, h, a) — (o, h, c, a) for an LSTM — so the output comes first, as the runner
    expects, and the last attention weights ride along for plotting. Parameters: cell.* (an
    RNNCell, GRUCell or LSTMCell), attention.* (AdditiveAttention(H, D, H) unless given) and
    out_proj.weight (H, D + H), out_proj.bias.

    cell.attending(memory, mask=None) returns this cell bound to a memory (B, S, D) — the same
    parameters, with the keys projected once — which nn.Recurrent runs over a sequence or a loop
    steps by hand; the captured loop reads the memory as an outside tensor, and the memory gets
    its gradient.
    """

    def __init__(self, input_size, hidden_size, memory_size, attention=None, cell="gru", input_feeding=True,
                 bias=True, dtype=None, device=None):
        if cell not in CELLS:
            raise ValueError(f"AttentionDecoderCell: cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.input_size, self.hidden_size, self.memory_size = input_size, hidden_size, memory_size
        self.input_feeding, self.memory = input_feeding, None
        self.cell = CELLS[cell](input_size + hidden_size * input_feeding, hidden_size, bias, dtype=dtype,
                                device=device)
        self.attention = AdditiveAttention(hidden_size, memory_size, hidden_size, dtype=dtype, device=device) \
            if attention is None else attention
        if self.attention.key_size not in (None, memory_size) or self.attention.query_size not in (None, hidden_size):
            raise ValueError(f"AttentionDecoderCell: the attention must take queries of the hidden size {hidden_size} "
                             f"and keys of the memory size {memory_size}, got {self.attention}")
        self.out_proj = Linear(memory_size + hidden_size, hidden_size, bias=bias, dtype=dtype, device=device)

    def attending(self, memory, mask=None):
        """This cell, reading `memory` (B, S, memory_size) with `mask` (B, S) True at the real positions."""
        if isinstance(memory, Tensor) and memory.ndim == 3 and memory.shape[2] != self.memory_size:
            raise ValueError(f"AttentionDecoderCell: expected a memory of shape (batch, source length, "
                             f"{self.memory_size}), got {memory.shape}")
        bound = copy.copy(self)
        bound.memory = self.attention.prepare(memory, mask=mask)
        return bound

    def _memory(self):
        if self.memory is None:
            raise RuntimeError("AttentionDecoderCell: no memory to attend to; run the cell that "
                               "cell.attending(memory, mask) returns")
        return self.memory

    def initial_state(self, batch_size, hidden=None):
        """Zeros: output (B, H), the cell's state (or `hidden`: h, or (h, c) for an LSTM, e.g. made from
        the encoder's final state), weights (B, S)."""
        values, w = self._memory().values, self.out_proj.weight
        inner = self.cell.initial_state(batch_size) if hidden is None else hidden
        return (zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device),) + \
            (inner if isinstance(inner, tuple) else (inner,)) + \
            (zeros(batch_size, values.shape[1], dtype=w.dtype, device=w.device),)

    def forward(self, x, state):
        memory = self._memory()
        output, inner = state[0], state[1:-1]
        inner = self.cell(cat([x, output], 1) if self.input_feeding else x, inner if len(inner) > 1 else inner[0])
        h = inner[0] if isinstance(inner, tuple) else inner
        context, weights = self.attention.attend(h, memory)
        output = self.out_proj(cat([context, h], 1)).tanh()
        return (output,) + (inner if isinstance(inner, tuple) else (inner,)) + (weights,)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, memory_size={self.memory_size}, " \
               f"input_feeding={self.input_feeding}"
