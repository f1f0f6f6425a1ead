"""The recurrent runner, and the sequence layers built on it.

`run_direction` is the one loop over time that every recurrent layer and every custom cell goes
through: it prepares the sequence once through the cell (`prepare_sequence`), then calls the
cell's `step` (or `forward`) once per time step, applying variable lengths (PyTorch's
packed-sequence semantics). Steps 0 and 1 run through capture's Recorder, and if the guard
allows it the rest of the sequence is one captured node (capture.py). `run_layers` adds
reversal within each sequence's length, bidirectional concatenation, stacking and dropout
between layers. Backpropagation through time is not written here: the tape differentiates
the steps.
"""
import functools

from .. import capture as _capture
from ..engine import backend
from ..tensors import Tensor, cat, stack, where, zeros
from . import functional as F
from . import init
from .cells import GRUCell, LSTMCell, ProjectedLSTMCell, RNNCell
from .module import Module, Parameter
from .utils.rnn import PackedSequence, packed_as_padded


def _rows(mask, ndim):
    """A (..., B) boolean mask shaped to broadcast over a tensor of rank `ndim` whose batch axis
    is mask's last axis: (B,) -> (B, 1, ...), (T, B) -> (T, B, 1, ...)."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def run_direction(cell, x, state=None, lengths=None, capture=True, checkpoint=None):
    """Run one cell over x (T, B, ...) forward in time; returns (outputs (T, B, H), final state).

    A state is a Tensor or a tuple of Tensors whose first item is the output. With `lengths`
    (a host list), row b stops updating after step lengths[b] - 1: its final state is the one
    at its last valid step and its later outputs are zero. The loop is captured (capture.py:
    steps 0 and 1 recorded, the rest replayed as one node, `checkpoint` steps per recomputed
    segment) unless the guard or `capture=False` says to run it eagerly.
    """
    T, B = x.shape[0], x.shape[1]
    shortest, valid = T if lengths is None else min(lengths), None
    if shortest < T:
        xp = backend.namespace(x.device)
        valid = xp.arange(T)[:, None] < xp.asarray(lengths)[None, :]  # (T, B) booleans
        x = where(_rows(valid, x.ndim), x, 0)  # padding never reaches the cell, even inf or NaN
    if hasattr(cell, "prepare_sequence") and checkpoint is not None and T > 2:
        inputs, constants, step = x, (), functools.partial(_prepared_step, cell)  # O(sqrt T): no (T, B, G) projection
    elif hasattr(cell, "prepare_sequence"):
        inputs, constants = cell.prepare_sequence(x)
        step = cell.step
    else:
        inputs, constants, step = x, (), cell.forward
    state = cell.initial_state(B) if state is None else tuple(state) if isinstance(state, list) else state
    recorder = _capture.recorder(cell, capture, T, checkpoint)  # None: eager (the reason is counted)
    outputs = []
    if recorder is None:
        state = _steps(step, inputs.unbind(0), 0, state, constants, valid, shortest, outputs)
        out = _stack(outputs)
    else:
        first, rest = inputs.split([2, T - 2])
        state = _steps(step, first.unbind(0), 0, state, constants, valid, shortest, outputs, recorder)
        captured = recorder.replay(rest, state, outputs, valid, shortest)  # steps 2..T-1 as one node
        if captured is None:  # the guard said no: on from step 2, op by op
            state = _steps(step, rest.unbind(0), 2, state, constants, valid, shortest, outputs)
            out = _stack(outputs)
        else:
            out, state = captured
    if shortest < T:
        out = where(_rows(valid, out.ndim), out, 0.0)
    return out, state


def _prepared_step(cell, x_t, state):
    """One step that prepares its own input: what a checkpointed loop runs, so that each segment projects
    its inputs when it runs (and again when it is recomputed). What the preparation reads only from
    parameters (the transposed recurrent weight, summed biases) the captured loop computes once."""
    inputs, constants = cell.prepare_sequence(x_t.unsqueeze(0))
    return cell.step(inputs[0], state, *constants)


def _steps(step, xs, t, state, constants, valid, shortest, outputs, recorder=None):
    """Run step(x_t, state, *constants) for each x_t of xs, the first being time step t; appends each
    step's output to `outputs` and returns the last state. Rows past their length keep their state."""
    for x_t in xs:
        new = step(x_t, state, *constants) if recorder is None else recorder.record(step, x_t, state, constants)
        if t >= shortest:
            mask = valid[t]
            new = tuple(where(_rows(mask, n.ndim), n, o) for n, o in zip(new, state)) if isinstance(new, tuple) \
                else where(_rows(mask, new.ndim), new, state)
        state = new
        outputs.append(state[0] if isinstance(state, tuple) else state)
        t += 1
    return state


def _stack(tensors):
    """stack(tensors), or a view of the one tensor (a one-step call: a token fed to a decoder)."""
    return stack(tensors) if len(tensors) > 1 else tensors[0].unsqueeze(0)


def _reverse_index(lengths, T, device):
    """Index arrays (time, batch) that reverse each sequence within its length (an involution)."""
    xp = backend.namespace(device)
    t = xp.arange(T)[:, None]
    n = xp.asarray(lengths)[None, :]
    return xp.where(t < n, n - 1 - t, t), xp.arange(len(lengths))[None, :]


def run_layers(layers, x, states=None, lengths=None, dropout=0.0, training=False, capture=True, checkpoint=None):
    """Run stacked, possibly bidirectional, recurrent layers over x (T, B, ...).

    layers: a list with one (forward_cell, reverse_cell or None) pair per layer.
    states: None or a list with one [forward_state, reverse_state] list per layer
            (None entries start from the cell's initial_state).
    lengths: None or B ints in 1..T (a host list).
    capture, checkpoint: see run_direction.
    Returns (output (T, B, D*H) of the last layer, final states in the shape of `states`).
    """
    T = x.shape[0]
    if lengths is not None and min(lengths) == T:
        lengths = None
    reverse_index = _reverse_index(lengths, T, x.device) if lengths is not None else None
    finals = []
    for k, (forward_cell, reverse_cell) in enumerate(layers):
        if k > 0 and dropout > 0 and training:
            x = F.dropout(x, dropout, True)
        initial = states[k] if states is not None else [None, None]
        out, state = run_direction(forward_cell, x, initial[0], lengths, capture, checkpoint)
        layer_final = [state]
        if reverse_cell is not None:
            x_rev = x.flip(0) if reverse_index is None else x[reverse_index]
            out_rev, state_rev = run_direction(reverse_cell, x_rev, initial[1], lengths, capture, checkpoint)
            out_rev = out_rev.flip(0) if reverse_index is None else out_rev[reverse_index]
            out = cat([out, out_rev], axis=2)
            layer_final.append(state_rev)
        finals.append(layer_final)
        x = out
    return x, finals


def check_lengths(op, lengths, batch, T):
    """Lengths as a host list of B ints in 1..T, or a clear ValueError/TypeError."""
    if lengths is None:
        return None
    values = backend.to_host(lengths.array if isinstance(lengths, Tensor) else lengths)
    if values.ndim != 1 or values.shape[0] != batch:
        raise ValueError(f"{op}: lengths must hold one length per sequence ({batch}), got shape {tuple(values.shape)}")
    if values.dtype.kind == "f" and bool((values != values.round()).any()) or values.dtype.kind not in "iuf":
        raise TypeError(f"{op}: lengths must be integers, got {values.tolist()}")
    values = [int(v) for v in values.tolist()]
    if batch and (min(values) < 1 or max(values) > T):
        raise ValueError(f"{op}: lengths must be between 1 and the sequence length {T}, got {values}")
    return values


def _layout(x, batch_first):
    return x.transpose(0, 1) if batch_first else x


def _unpacked(op, x, lengths):
    """A PackedSequence as (padded (T, B, ...) in the original batch order, lengths, repack(output))."""
    if lengths is not None:
        raise ValueError(f"{op}: a PackedSequence carries its own lengths; do not also pass lengths=")
    return packed_as_padded(x, op)


class Recurrent(Module):
    """Run any cell over sequences: lengths, reversal, bidirectional and stacked layers.

    cell: a Module with forward(x_t, state) -> new state (a Tensor, or a tuple whose first
    item is the output) and initial_state(batch_size); or a list of such cells, one per
    layer. reverse_cell (or a list, one per layer) runs each sequence backwards, within
    its length, and its outputs are concatenated to the forward ones.
    forward(x, state=None, lengths=None) -> (output (T, B, D*H), final_state), where
    final_state has the shape `state` takes: per layer, a cell state, or a
    (forward, reverse) pair when bidirectional; a list over layers when cell is a list.
    capture=False runs the time loop eagerly, op by op; checkpoint=k or "sqrt" keeps the
    state at every k-th step only and recomputes the rest in backward (see capture.py).
    """

    def __init__(self, cell, reverse_cell=None, batch_first=False, dropout=0.0, capture=True, checkpoint=None):
        self.stacked = isinstance(cell, (list, tuple))
        self.cells = list(cell) if self.stacked else [cell]
        reverse = reverse_cell if isinstance(reverse_cell, (list, tuple)) else [reverse_cell] * (reverse_cell is not None)
        if reverse and len(reverse) != len(self.cells):
            raise ValueError(f"Recurrent: {len(self.cells)} cells but {len(reverse)} reverse cells")
        self.reverse_cells = list(reverse)
        self.batch_first, self.dropout = batch_first, dropout
        self.capture, self.checkpoint = capture, _capture.check_checkpoint(checkpoint)

    @property
    def bidirectional(self):
        return bool(self.reverse_cells)

    def forward(self, x, state=None, lengths=None):
        packed = isinstance(x, PackedSequence)
        if packed:  # run as padded with lengths, in the original batch order; the output packed back
            x, lengths, repack = _unpacked("Recurrent", x, lengths)
        elif x.ndim < 2:
            raise ValueError(f"Recurrent: expected input of shape (T, B, ...){' with batch_first' * self.batch_first}, got {x.shape}")
        else:
            x = _layout(x, self.batch_first)
        lengths = check_lengths("Recurrent", lengths, x.shape[1], x.shape[0])
        layers = [(c, self.reverse_cells[k] if self.bidirectional else None) for k, c in enumerate(self.cells)]
        per_layer = state if self.stacked else [state]
        states = None if state is None else [list(s) if self.bidirectional else [s, None] for s in per_layer]
        out, finals = run_layers(layers, x, states, lengths, self.dropout, self.training, self.capture, self.checkpoint)
        finals = [tuple(f) if self.bidirectional else f[0] for f in finals]
        return repack(out) if packed else _layout(out, self.batch_first), (finals if self.stacked else finals[0])


@functools.lru_cache(maxsize=None)
def _parameter_names(k, suffix):
    """PyTorch's names of layer k's parameters (cached: the same strings on every forward)."""
    return tuple(f"{n}_l{k}{suffix}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


class RNNBase(Module):
    """Shared by RNN, LSTM and GRU: PyTorch's arguments, parameter names, shapes and checks."""
    cell_type = RNNCell

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=None, device=None, capture=True, checkpoint=None, proj_size=0):
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError(f"{type(self).__name__}: input_size, hidden_size and num_layers must be positive, "
                             f"got {input_size}, {hidden_size}, {num_layers}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        name = type(self).__name__
        if proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable projections, "
                             f"got {proj_size}")
        if proj_size and not issubclass(self.cell_type, LSTMCell):
            raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                             f"and hidden_size={hidden_size}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        self.proj_size = proj_size
        self.capture, self.checkpoint = capture, _capture.check_checkpoint(checkpoint)
        rows, out = self.cell_type.gates * hidden_size, proj_size or hidden_size  # out: the size of h
        directions = 2 if bidirectional else 1
        for k in range(num_layers):
            for suffix in ("", "_reverse")[:directions]:
                width = input_size if k == 0 else out * directions
                setattr(self, f"weight_ih_l{k}{suffix}", Parameter(zeros(rows, width, dtype=dtype, device=device)))
                setattr(self, f"weight_hh_l{k}{suffix}", Parameter(zeros(rows, out, dtype=dtype, device=device)))
                if bias:
                    setattr(self, f"bias_ih_l{k}{suffix}", Parameter(zeros(rows, dtype=dtype, device=device)))
                    setattr(self, f"bias_hh_l{k}{suffix}", Parameter(zeros(rows, dtype=dtype, device=device)))
                if proj_size:
                    setattr(self, f"weight_hr_l{k}{suffix}", Parameter(zeros(proj_size, hidden_size, dtype=dtype,
                                                                             device=device)))
        init.recurrent_uniform_(self, hidden_size)

    def _cell(self, k, suffix):
        return self.cell_type.sharing(*[getattr(self, n, None) for n in _parameter_names(k, suffix)],
                                      **self._cell_options())

    def cells(self):
        """Per layer, the (forward, reverse or None) cells that run on this layer's parameters."""
        return [(self._cell(k, ""), self._cell(k, "_reverse") if self.bidirectional else None)
                for k in range(self.num_layers)]

    def _cell_options(self):
        return {}

    def forward(self, x, hx=None, lengths=None):
        return self.run_cells(self.cells(), x, hx, lengths)

    def flatten_parameters(self):
        """A no-op kept for PyTorch code: there is no fused cuDNN weight buffer to compact here."""

    def run_cells(self, layers, x, hx=None, lengths=None):
        """forward() with the given per-layer (forward, reverse) cells, e.g. wrapped ones from cells()."""
        name, D, H = type(self).__name__, 2 if self.bidirectional else 1, self.hidden_size
        packed = isinstance(x, PackedSequence)
        if packed:  # run as padded with lengths, in the original batch order; the output packed back
            x, lengths, repack = _unpacked(name, x, lengths)
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"{name}: expected input of shape {layout} (or unbatched (T, input_size)) "
                             f"with input_size={self.input_size}, got {x.shape}")
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(f"{name}: input is {x.dtype} on {x.device} but the parameters are "
                             f"{weight.dtype} on {weight.device}; convert one with .to()")
        unbatched = x.ndim == 2
        x = x.unsqueeze(1) if unbatched else x if packed else _layout(x, self.batch_first)
        T, B = x.shape[0], x.shape[1]
        lengths = check_lengths(name, lengths, B, T)
        states = None
        if hx is not None:
            hx = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
            if len(hx) != self.cell_type.state_items:
                raise ValueError(f"{name}: hx must be {'(h_0, c_0)' if self.cell_type.state_items == 2 else 'h_0'}")
            for h, size in zip(hx, (self.proj_size or H, H)):  # h_0 is proj_size wide when projected
                expected = (self.num_layers * D, size) if unbatched else (self.num_layers * D, B, size)
                if not isinstance(h, Tensor) or h.shape != expected or h.dtype != weight.dtype or h.device != weight.device:
                    got = f"{h.shape} {h.dtype} on {h.device}" if isinstance(h, Tensor) else type(h).__name__
                    raise ValueError(f"{name}: initial state must have shape {expected}, dtype {weight.dtype} "
                                     f"on {weight.device}; got {got}")
            per_state = [h.unsqueeze(1).unbind(0) if unbatched else h.unbind(0) for h in hx]
            flat = list(zip(*per_state)) if self.cell_type.state_items == 2 else per_state[0]
            states = [[flat[k * D + d] for d in range(D)] + [None] * (2 - D) for k in range(self.num_layers)]
        out, finals = run_layers(layers, x, states, lengths, self.dropout, self.training, self.capture, self.checkpoint)
        flat = [s for layer in finals for s in layer]
        if self.cell_type.state_items == 2:
            h_n, c_n = _stack([s[0] for s in flat]), _stack([s[1] for s in flat])
            final = (h_n[:, 0], c_n[:, 0]) if unbatched else (h_n, c_n)
        else:
            h_n = _stack(flat)
            final = h_n[:, 0] if unbatched else h_n
        out = out[:, 0] if unbatched else repack(out) if packed else _layout(out, self.batch_first)
        return out, final

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}" + (f", proj_size={self.proj_size}" if self.proj_size else "")
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class RNN(RNNBase):
    """Elman RNN over sequences: h_t = tanh (or relu)(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None, device=None, capture=True, checkpoint=None, proj_size=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype, device,
                         capture, checkpoint, proj_size)

    def _cell_options(self):
        return {"nonlinearity": self.nonlinearity}

    def extra_repr(self):
        return super().extra_repr() + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")


class LSTM(RNNBase):
    """LSTM over sequences (gates i, f, g, o); forward returns output, (h_n, c_n).

    With proj_size=P > 0 each layer's h is projected, h = (o tanh(c)) W_hr^T (weight_hr_l{k}, (P, H)), as in
    PyTorch: h_n and the output have P features per direction, c_n keeps H."""
    cell_type = LSTMCell

    def _cell(self, k, suffix):
        if not self.proj_size:
            return super()._cell(k, suffix)
        return ProjectedLSTMCell.sharing(*[getattr(self, n, None) for n in _parameter_names(k, suffix)],
                                         weight_hr=getattr(self, f"weight_hr_l{k}{suffix}"))


class GRU(RNNBase):
    """GRU over sequences (gates r, z, n); forward returns output, h_n."""
    cell_type = GRUCell
