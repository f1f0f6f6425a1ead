"""Look inside training: how gradients flow through time, and what the tape holds.

gradient_flow(module, loss_fn, x) runs a recurrent layer or cell over a batch, takes the
loss, and returns ||dL/dh_t|| for every step t: the *total* derivative of the loss with
respect to the hidden state h_t, through the output at t and through every later step,
which is what the textbook recursion dL/dh_t = dL/dy_t W_o + dL/dh_{t+1} dh_{t+1}/dh_t
computes. Its decay towards early steps is the vanishing gradient.

to_dot(tensor) writes the tape behind a tensor as Graphviz DOT text (one node per op,
one per leaf, one edge per recorded input), for `dot -Tpng` or any DOT viewer.

The Jacobian view of the recurrence, computed from the tape (grad() of one cell step):
state_jacobians(module, x) gives every step's dS_t/dS_{t-1} (S the full state: (h, c) for an
LSTM), jacobian_product_singular_values(J) the singular values of their products
dS_{T-1}/dS_k as k moves back in time, and lyapunov_exponents(J) the Lyapunov spectrum of
the trajectory by the QR method (Vogt et al. 2022, "On Lyapunov Exponents for RNNs").
"""
from .engine import backend
from .engine.function import Function, LeafEdge, enable_grad, no_grad
from .autograd.grad import grad
from .nn.module import Module
from .nn.recurrent import Recurrent, RNNBase, _layout, run_layers
from .tensors import Tensor, cat, stack, zeros_like

__all__ = ["gradient_flow", "to_dot", "state_jacobians", "jacobian_product_singular_values", "lyapunov_exponents"]


class _StateRecorder(Module):
    """Wraps a cell for the runner and keeps every step's new state (with retain_grad).

    It forwards `initial_state`, `prepare_sequence` and `step` to the cell, so the runner does
    exactly what it does for the bare cell (hoisted input projections included). It keeps every
    step's state, so the loop runs eagerly (capturable = False).
    """
    capturable = False

    def __init__(self, cell, component):
        self.cell, self.component, self.states = cell, component, []

    def initial_state(self, batch_size):
        return self.cell.initial_state(batch_size)

    def prepare_sequence(self, x):
        if hasattr(self.cell, "prepare_sequence"):
            return self.cell.prepare_sequence(x)
        return x, ()

    def step(self, x_t, state, *constants):
        return self._keep(self.cell.step(x_t, state, *constants) if hasattr(self.cell, "prepare_sequence")
                          else self.cell(x_t, state))

    def forward(self, x_t, state=None):
        return self._keep(self.cell(x_t, state))

    def _keep(self, new):
        h = new[self.component] if isinstance(new, tuple) else new
        if not isinstance(h, Tensor):
            raise TypeError(f"gradient_flow: the cell's state item {self.component} is a "
                            f"{type(h).__name__}, expected a Tensor")
        h.retain_grad()
        self.states.append(h)
        return new


def _run_recorded(module, x, state, lengths, component):
    """module(x, state, lengths) with every cell wrapped; returns (result, [[recorders per direction] per layer])."""
    if isinstance(module, RNNBase):
        layers = [tuple(_StateRecorder(c, component) if c is not None else None for c in pair)
                  for pair in module.cells()]
        result = module.run_cells(layers, x, state, lengths)
        return result, [[c for c in pair if c is not None] for pair in layers]
    if isinstance(module, Recurrent):
        forward = [_StateRecorder(c, component) for c in module.cells]
        reverse = [_StateRecorder(c, component) for c in module.reverse_cells]
        wrapped = Recurrent(forward if module.stacked else forward[0],
                            (reverse if module.stacked else reverse[0]) if reverse else None,
                            batch_first=module.batch_first, dropout=module.dropout)
        wrapped.training = module.training
        result = wrapped(x, state, lengths=lengths)
        return result, [[f] + ([reverse[k]] if reverse else []) for k, f in enumerate(forward)]
    if callable(getattr(module, "initial_state", None)):
        recorder = _StateRecorder(module, component)
        return Recurrent(recorder)(x, state, lengths=lengths), [[recorder]]
    raise TypeError(f"gradient_flow: expected nn.RNN/LSTM/GRU, nn.Recurrent or a cell with initial_state(), "
                    f"got {type(module).__name__}")


def _leaves(root):
    """The leaf tensors reachable from root's node, each once, in walk order."""
    leaves, seen, stack_ = {}, set(), [root._node]
    while stack_:
        node = stack_.pop()
        for edge in node.parents:
            if type(edge) is LeafEdge:
                leaves.setdefault(id(edge.tensor), edge.tensor)
            elif edge is not None and edge.node not in seen:
                seen.add(edge.node)
                stack_.append(edge.node)
    return list(leaves.values())


def _step_norms(recorder, lengths, reverse):
    """||dL/dh|| per sequence position: Frobenius norm over the batch and hidden units."""
    grads = [h.grad if h.grad is not None else h.detach() * 0.0 for h in recorder.states]
    T = len(grads)
    squares = (stack(grads) ** 2).reshape(T, grads[0].shape[0], -1).sum(axis=2)  # (T, B), in step order
    if reverse:  # the reverse cell's step t read position len_b - 1 - t of row b: put it back there
        B = squares.shape[1]
        n = lengths if lengths is not None else [T] * B
        steps = [[n[b] - 1 - p if p < n[b] else p for b in range(B)] for p in range(T)]
        squares = squares[steps, [list(range(B))] * T]
    return [float(v) ** 0.5 for v in squares.sum(axis=1).tolist()]


def gradient_flow(module, loss_fn, x, state=None, *, lengths=None, layer=-1, direction=0, component=0):
    """Norms of dL/dh_t, the total gradient reaching each step's hidden state.

    module:  an nn.RNN / nn.LSTM / nn.GRU layer, an nn.Recurrent, or a bare cell (a Module
             with forward(x_t, state) and initial_state(batch_size), run as nn.Recurrent(cell)).
    loss_fn: loss_fn(output, final_state) -> a scalar Tensor; it receives exactly what
             module(x, state, lengths=lengths) returns (for a bare cell: (T, B, H) outputs
             and the final state), so a readout layer or targets go in through a closure.
    x:       the input batch, laid out as the module expects (batch_first is honoured).
    lengths: optional per-sequence lengths; past a sequence's end its h_t has no gradient (0).
    layer, direction: which layer (default the last) and direction (0 forward, 1 reverse)
             to report; layer=None returns every one, as result[layer][direction][t].
    component: for tuple states (LSTM's (h, c)), which item is "the hidden state" (0: h, 1: c;
             dL/dc_t is total too: it includes the path through h_t = o_t tanh(c_t)).

    Returns a list of T floats, t = 0 .. T-1 in input order (for the reverse direction too):
    entry t is the Frobenius norm, over the batch and hidden units, of dL/dh_t where h_t is
    the state after reading x_t. It is the total derivative, through the output at t and
    through every later step (for the reverse direction: every earlier position), not only
    the direct part from the output at t.

    Side effects: none on gradients. Every leaf the loss depends on (the module's and the
    readout's parameters, x) keeps the .grad it had; x itself is not modified.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"gradient_flow: x must be a Tensor, got {type(x).__name__}")
    probe = x.detach()
    probe.requires_grad = True  # so the tape is recorded even when every parameter is frozen
    result, recorders = _run_recorded(module, probe, state, lengths, component)
    loss = loss_fn(*result)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("gradient_flow: loss_fn must return a Tensor with one element, got "
                         f"{loss.shape if isinstance(loss, Tensor) else type(loss).__name__}")
    if loss._node is None:
        raise ValueError("gradient_flow: the loss does not depend on the module's output")
    leaves = _leaves(loss)
    kept = [leaf.grad for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    try:
        loss.backward()
    finally:
        for leaf, grad in zip(leaves, kept):
            leaf.grad = grad
    host_lengths = None if lengths is None else [int(n) for n in
                                                 (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
    norms = [[_step_norms(r, host_lengths, d == 1) for d, r in enumerate(per_layer)] for per_layer in recorders]
    if layer is None:
        return norms
    if not -len(norms) <= layer < len(norms):
        raise ValueError(f"gradient_flow: layer {layer} out of range; the module has {len(norms)}")
    chosen = norms[layer]
    if not -len(chosen) <= direction < len(chosen):
        raise ValueError(f"gradient_flow: direction {direction} out of range; the module has {len(chosen)}")
    return chosen[direction]


# ---- the tape as a picture -------------------------------------------------------------------

def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape_text(shape):
    return str(tuple(int(n) for n in shape))


def to_dot(tensor, params=None, name="tape"):
    """Graphviz DOT text of the tape that produced `tensor`.

    One node per op (Function node), labelled with the op's name and its output shape
    (for multi-output ops such as unbind: the number of outputs and their shape), one
    node per leaf tensor that requires grad (parameters, inputs), and one edge
    `input -> op` per recorded input of every op (an op that uses two outputs of an
    unbind gets two edges). Constants (tensors that do not require grad) are not on the
    tape and do not appear. `params` names leaves: a mapping or iterable of
    (name, tensor) pairs such as `model.named_parameters()`; unnamed leaves are
    labelled by their shape. The op that made `tensor` is drawn with a double border.
    Node ids are `op0, op1, ...` and `leaf0, leaf1, ...` in walk order (deterministic).

    Works before and after backward(). Render with `dot -Tpng tape.dot -o tape.png`.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    names = {}
    if params is not None:
        items = params.items() if hasattr(params, "items") else params
        names = {id(t): str(n) for n, t in items}
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];']
    if tensor._node is None:
        label = names.get(id(tensor), "leaf") + "\n" + _shape_text(tensor.shape)
        lines += [f"  leaf0 [label={_quote(label)}, shape=ellipse, peripheries=2];", "}"]
        return "\n".join(lines) + "\n"

    op_ids, leaf_ids, order, edges = {}, {}, [], []
    out_shapes = {tensor._node: {tensor._index: tuple(tensor.shape)}}
    op_ids[tensor._node] = "op0"
    stack_ = [tensor._node]
    while stack_:  # iterative depth-first walk: no recursion limit on long tapes
        node = stack_.pop()
        order.append(node)
        for edge in node.parents:
            if edge is None:
                continue
            if type(edge) is LeafEdge:
                target = edge.tensor
                if id(target) not in leaf_ids:
                    leaf_ids[id(target)] = (f"leaf{len(leaf_ids)}", target)
                source = leaf_ids[id(target)][0]
            else:
                target = edge.node
                out_shapes.setdefault(target, {})[edge.index] = tuple(edge.shape)
                if target not in op_ids:
                    op_ids[target] = f"op{len(op_ids)}"
                    stack_.append(target)
                source = op_ids[target]
            edges.append((source, op_ids[node]))

    for node in sorted(order, key=lambda n: int(op_ids[n][2:])):
        label = node.name + "\n" + _output_text(node, out_shapes.get(node, {}))
        extra = ", peripheries=2" if node is tensor._node else ""
        lines.append(f"  {op_ids[node]} [label={_quote(label)}, shape=box{extra}];")
    for leaf_id, leaf in leaf_ids.values():
        label = names.get(id(leaf), "leaf") + "\n" + _shape_text(leaf.shape)
        lines.append(f"  {leaf_id} [label={_quote(label)}, shape=ellipse, style=filled, fillcolor=lightgrey];")
    lines += [f"  {a} -> {b};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _output_text(node, shapes):
    """'(4, 8)' for one output; '5 outputs (4, 8)' or '3 outputs (2, 8), (1, 8)' for several."""
    n = node.n_outputs if isinstance(node, Function) else 1
    known = [shapes[i] for i in sorted(shapes)]
    if n == 1:
        return _shape_text(known[0]) if known else ""
    distinct = list(dict.fromkeys(known))
    if len(distinct) == 1 and len(known) == n:
        return f"{n} outputs {_shape_text(distinct[0])}"
    return f"{n} outputs " + ", ".join(_shape_text(s) for s in distinct[:4]) + (" ..." if len(distinct) > 4 else "")


# ---- the Jacobian view: dS_t/dS_{t-1}, their products, Lyapunov exponents ----------------------

def _cell_and_inputs(module, x, layer, direction):
    """The cell that runs (layer, direction) of `module` and its input sequence (T, B, ...), detached."""
    if isinstance(module, (RNNBase, Recurrent)):
        if isinstance(module, RNNBase):
            x = x.unsqueeze(1) if x.ndim == 2 else _layout(x, module.batch_first)
            layers = module.cells()
        else:
            x = _layout(x, module.batch_first)
            reverse = module.reverse_cells if module.bidirectional else [None] * len(module.cells)
            layers = list(zip(module.cells, reverse))
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"state_jacobians: layer {layer} out of range; the module has {len(layers)}")
        layer %= len(layers)
        if direction not in (0, 1) or layers[layer][direction] is None:
            raise ValueError(f"state_jacobians: direction {direction} out of range for this module")
        with no_grad():
            below = run_layers(layers[:layer], x)[0] if layer else x  # what the chosen layer reads (no dropout)
        return layers[layer][direction], (below.flip(0) if direction else below).detach()
    if callable(getattr(module, "initial_state", None)):
        return module, x.detach()
    raise TypeError(f"state_jacobians: expected nn.RNN/LSTM/GRU, nn.Recurrent or a cell with initial_state(), "
                    f"got {type(module).__name__}")


def _flat(state):
    """A state (a Tensor or a tuple of them, batch first) as one (B, S) Tensor, and how to undo it."""
    parts = state if isinstance(state, tuple) else (state,)
    shapes = [tuple(p.shape[1:]) for p in parts]
    rows = [p.reshape(p.shape[0], -1) for p in parts]
    flat = cat(rows, axis=1) if len(rows) > 1 else rows[0]
    sizes = [p.numel() // p.shape[0] if p.shape[0] else 0 for p in parts]

    def unflat(f):
        pieces = f.split(sizes, axis=1) if len(sizes) > 1 else (f,)
        out = tuple(q.reshape((f.shape[0],) + shape) for q, shape in zip(pieces, shapes))
        return out if isinstance(state, tuple) else out[0]
    return flat, unflat


def state_jacobians(module, x, state=None, *, layer=0, direction=0):
    """dS_t/dS_{t-1} at every step of the trajectory of `module` on the batch x, from the tape.

    module: nn.RNN / nn.LSTM / nn.GRU, nn.Recurrent, or a bare cell (forward(x_t, state),
            initial_state(batch_size)); layer and direction pick one of a layer's cells (the
            input of layer k > 0 is layer k-1's output; the reverse direction reads the
            sequence backwards; dropout is off).
    x:      the input batch, laid out as the module expects; state: the cell's initial state
            (default its initial_state).
    S is the cell's whole state flattened: h for RNN and GRU, (h, c) for an LSTM (2H numbers,
    h first). Returns a Tensor (T, B, S, S) whose [t, b] is the Jacobian of row b's state after
    step t with respect to its state before it (t = 0: the initial state).

    The trajectory is recorded first; then the cell runs one step on every (t, b) at once, from
    the recorded states (detached, requiring grad), and S reverse passes of grad() give all
    T*B Jacobians: row b's new state depends only on row b's old one (the cell must not mix
    rows of the batch, as every cell in nn does).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"state_jacobians: x must be a Tensor, got {type(x).__name__}")
    cell, xs = _cell_and_inputs(module, x, layer, direction)
    T, B = xs.shape[0], xs.shape[1]
    with no_grad():
        s = cell.initial_state(B) if state is None else state
        before = []
        for x_t in xs.unbind(0):
            before.append(_flat(s)[0])
            s = cell(x_t, s)
    _, unflat = _flat(s)
    prev = stack(before).reshape(T * B, -1).detach()
    prev.requires_grad = True
    with enable_grad():
        new = _flat(cell(xs.reshape((T * B,) + tuple(xs.shape[2:])), unflat(prev)))[0]
    S = prev.shape[1]
    rows = []
    for j in range(S):
        e = zeros_like(new)  # picks output j of every row: row j of every (t, b) Jacobian
        e.array[:, j] = 1
        (g,) = grad(new, prev, e, retain_graph=j < S - 1, allow_unused=True)
        rows.append(g if g is not None else zeros_like(prev))
    return stack(rows, axis=1).reshape(T, B, S, S)


def _host64(jacobians):
    """(T, B, S, S) Jacobians as a float64 host array."""
    array = jacobians.numpy() if isinstance(jacobians, Tensor) else backend.to_host(backend.as_array(jacobians))
    if array.ndim != 4 or array.shape[2] != array.shape[3]:
        raise ValueError(f"expected Jacobians of shape (T, B, S, S), got {array.shape}")
    return array.astype(backend.float64)


def jacobian_product_singular_values(jacobians):
    """Singular values of dS_{T-1}/dS_{T-1-n} = J_{T-1} J_{T-2} ... J_{T-n}, for n = 1 .. T.

    jacobians: (T, B, S, S) from state_jacobians. Returns a float64 host array (T, B, S):
    entry [n-1, b] holds the singular values, largest first, of row b's product over the last
    n steps (n = T reaches back to the initial state). The largest one bounds how much of a
    gradient at the last step can reach n steps back; its decay with n is the vanishing
    gradient, its growth the exploding one.
    """
    J = _host64(jacobians)
    linalg = backend.namespace("cpu").linalg
    T = J.shape[0]
    product, out = None, []
    for n in range(1, T + 1):
        step = J[T - n]
        product = step if product is None else product @ step
        out.append(linalg.svd(product, compute_uv=False))
    return backend.namespace("cpu").stack(out)


def lyapunov_exponents(jacobians, k=None, warmup=0):
    """The k leading Lyapunov exponents of each trajectory, per step, by the QR method.

    An orthonormal Q (S, k) is pushed through the Jacobians, Q <- qr(J_t Q), and the
    exponents are the means of log|diag(R)| over the steps after `warmup` (Vogt et al. 2022;
    Benettin et al. 1980). jacobians: (T, B, S, S) from state_jacobians. Returns a float64
    host array (B, k), largest first: a positive leading exponent means nearby trajectories
    separate (chaotic, exploding gradients), negative that they converge (a contracting
    system, vanishing gradients).
    """
    J = _host64(jacobians)
    xp = backend.namespace("cpu")
    T, B, S = J.shape[0], J.shape[1], J.shape[2]
    k = S if k is None else k
    if not 1 <= k <= S or not 0 <= warmup < T:
        raise ValueError(f"lyapunov_exponents: need 1 <= k <= {S} and 0 <= warmup < {T}, got k={k}, warmup={warmup}")
    Q = xp.broadcast_to(xp.eye(S, k), (B, S, k)).copy()
    total = xp.zeros((B, k))
    tiny = xp.finfo(xp.float64).tiny
    for t in range(T):
        Q, R = xp.linalg.qr(J[t] @ Q)
        if t >= warmup:
            total += xp.log(xp.maximum(xp.abs(xp.diagonal(R, axis1=1, axis2=2)), tiny))
    return -xp.sort(-total / (T - warmup), axis=1)
