"""Truncated BPTT over a long stream: the state carried from chunk to chunk with the graph cut, and
rows whose state starts afresh where their document does.

`TBPTT(model)` runs a model chunk by chunk and keeps its state between calls, detached (Keras'
`stateful=True`, with the state outside the model). `run_with_resets(layer, x, state, resets)`
runs a recurrent layer over a chunk in which rows start new documents at any step: before step t,
the state of every row b with resets[t, b] is multiplied by zero, inside the step (the `done`
mask of recurrent reinforcement learning), so the chunk is still one captured loop and each
document's outputs and gradients are those of a fresh run from the layer's zero initial state.
"""
from ..tensors import Tensor, cat
from .cell_zoo import CellWrapper
from .recurrent import Recurrent, RNNBase


def _map_state(state, fn):
    """fn applied to every tensor of a state, kept in the same nesting of tuples and lists."""
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    return fn(state)


def detach_state(state):
    """The state's tensors detached (the graph cut), in the same nesting of tuples and lists."""
    return _map_state(state, lambda s: None if s is None else s.detach())


def _tensors(state):
    return [t for s in state for t in _tensors(s)] if isinstance(state, (tuple, list)) else [state]


class _Resetting(CellWrapper):
    """A cell whose state is multiplied by keep[t] (B, 1) before step t: zero where a row starts afresh."""

    def __init__(self, cell, keep):
        super().__init__(cell)
        self.keep = keep

    def prepare_sequence(self, x):
        inputs, constants, step = self.prepare_cell(x)
        if any(s.numpy().any() for s in _tensors(self.initial_state(x.shape[1]))):
            raise ValueError(f"run_with_resets: {type(self.cell).__name__}'s initial state is not zero, "
                             "and a reset sets the state to zero")
        return cat([inputs, self.keep], axis=2), (step, inputs.shape[2]) + constants

    def step(self, x_t, state, step, width, *constants):
        x_t, keep = x_t.split([width, 1], 1)
        state = tuple(s * keep for s in state) if isinstance(state, tuple) else state * keep
        return step(x_t, state, *constants)


def run_with_resets(layer, x, state=None, resets=None):
    """layer(x, state), with the state of row b set to zero before step t where resets[t, b] is true.

    layer: nn.RNN, nn.LSTM, nn.GRU or nn.Recurrent, one direction; x as the layer takes it (batched);
    resets: booleans shaped like x's first two axes ((T, B), or (B, T) with batch_first), or None.
    Returns what layer(x, state) returns. A row reset at step t gives the outputs and gradients of
    a fresh run (zero initial state) from step t; a chunk without resets runs the layer unchanged.
    """
    if resets is None:
        return layer(x, state)
    name = "run_with_resets"
    if not isinstance(layer, (RNNBase, Recurrent)):
        raise TypeError(f"{name}: expected nn.RNN, nn.LSTM, nn.GRU or nn.Recurrent, got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError(f"{name}: a bidirectional layer reads each row's future; resets need one direction")
    resets = resets if isinstance(resets, Tensor) else Tensor(resets)
    if x.ndim < 3 or resets.shape != x.shape[:2] or resets.dtype.kind != "b":
        raise ValueError(f"{name}: resets must be booleans of shape {x.shape[:2]} (x's first two axes, x of "
                         f"shape {x.shape}), got {resets.dtype} of shape {resets.shape}")
    if not bool(resets.numpy().any()):
        return layer(x, state)
    keep = 1 - resets.to(x.device).astype(x.dtype)
    keep = (keep.transpose(0, 1) if layer.batch_first else keep).unsqueeze(2)  # (T, B, 1), as the runner's x
    if isinstance(layer, RNNBase):
        return layer.run_cells([(_Resetting(cell, keep), None) for cell, _ in layer.cells()], x, state)
    cells = [_Resetting(cell, keep) for cell in layer.cells]
    wrapped = Recurrent(cells if layer.stacked else cells[0], batch_first=layer.batch_first, dropout=layer.dropout,
                        capture=layer.capture, checkpoint=layer.checkpoint)
    return wrapped.train(layer.training)(x, state)


class TBPTT:
    """Run `model` over a long stream, one chunk per call, carrying its state across calls with the graph cut.

    model(x, state) -> (output, state): nn.RNN, nn.LSTM, nn.GRU, nn.Recurrent, or your Module. A call
    runner(x, resets=None) runs the model on the chunk x from the carried state, keeps the new state,
    detached (`runner.state`), and returns the output; backpropagating a loss on it reaches back to the
    chunk's first step only. `resets` (booleans shaped like x's (time, batch) axes) starts row b afresh
    before step t where resets[t, b] (a new document), inside the chunk: a recurrent layer is run with
    run_with_resets, and any other model is called as model(x, state, resets=resets) (its forward passes
    them on to run_with_resets). `reset()` starts every row afresh at the next call, `reset(rows)` the
    given rows: their carried state becomes zero, every state tensor having the batch on axis -2 (as h
    has: (B, H) from a cell, (num_layers, B, H) from a layer).
    """

    def __init__(self, model):
        self.model, self.state = model, None

    def __call__(self, x, resets=None):
        if isinstance(self.model, (RNNBase, Recurrent)):
            output, state = run_with_resets(self.model, x, self.state, resets)
        elif resets is not None:
            output, state = self.model(x, self.state, resets=resets)
        else:
            output, state = self.model(x, self.state)
        self.state = detach_state(state)
        return output

    def reset(self, rows=None):
        """Start every row (rows=None) or the given rows (indices or a boolean mask) afresh."""
        if rows is None:
            self.state = None
        elif self.state is not None:
            self.state = _map_state(self.state, lambda s: s * _keep_rows(s, rows))


def _keep_rows(s, rows):
    """(B, 1) ones with zeros at `rows`, B = s.shape[-2] (the batch axis of a state tensor)."""
    keep = s.new_ones(s.shape[-2], 1)
    keep[rows] = 0
    return keep
