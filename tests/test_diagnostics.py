"""diagnostics.gradient_flow against hand-written BPTT, and to_dot against a walk of the tape.

gradient_flow must return the *total* derivative dL/dh_t (through every later step), so it
is checked (1) against the textbook recursion for a tanh RNN written out in NumPy, and
(2) for LSTM/GRU, stacked, bidirectional and padded runs, against an independent route:
add a zero "probe" tensor d_t to each step's new state inside the cell; dL/dd_t is then
exactly dL/dh_t, and the tape computes it as an ordinary leaf gradient.
"""
import re
from collections import Counter

import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq import nn
from tinygrad_seq.engine.function import LeafEdge
from tinygrad_seq.diagnostics import gradient_flow, to_dot


def as_tensor(a, requires_grad=False):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def seeded(seed):
    tg.manual_seed(seed)
    return np.random.default_rng(seed)


# ---- gradient_flow vs the textbook recursion (tanh RNN) --------------------------------------

def textbook_rnn_flow(x, w_ih, w_hh, b, w_o, c, d):
    """||dL/dh_t|| for L = sum_t <c_t, h_t W_o^T> + <d, h_{T-1}>, by the course-notes recursion.

    dL/dh_t = dL/dy_t W_o + dL/dh_{t+1} diag(1 - h_{t+1}^2) W_hh, with dL/dy_t = c_t
    (plus d at the last step, the final-state term).
    """
    T, B, _ = x.shape
    h, hs = np.zeros((B, w_hh.shape[0])), []
    for t in range(T):
        h = np.tanh(x[t] @ w_ih.T + h @ w_hh.T + b)
        hs.append(h)
    grads = [None] * T
    g = c[T - 1] @ w_o + d
    grads[T - 1] = g
    for t in range(T - 2, -1, -1):
        g = c[t] @ w_o + (g * (1 - hs[t + 1] ** 2)) @ w_hh
        grads[t] = g
    return np.array([np.linalg.norm(g) for g in grads])


def test_gradient_flow_matches_textbook_bptt_for_tanh_rnn():
    rng = seeded(0)
    T, B, I, H, O = 7, 3, 2, 4, 3
    rnn = nn.RNN(I, H, dtype="float64")
    head = nn.Linear(H, O, dtype="float64")
    x = rng.standard_normal((T, B, I))
    c, d = rng.standard_normal((T, B, O)), rng.standard_normal((B, H))

    def loss_fn(output, h_n):
        return (head(output) * as_tensor(c)).sum() + (h_n[0] * as_tensor(d)).sum()

    flow = gradient_flow(rnn, loss_fn, as_tensor(x))
    expected = textbook_rnn_flow(x, rnn.weight_ih_l0.numpy(), rnn.weight_hh_l0.numpy(),
                                 rnn.bias_ih_l0.numpy() + rnn.bias_hh_l0.numpy(),
                                 head.weight.numpy(), c, d)
    assert isinstance(flow, list) and len(flow) == T
    np.testing.assert_allclose(flow, expected, rtol=1e-10)
    # it is the total derivative: with a loss on the last output only, early steps still get gradient
    only_last = gradient_flow(rnn, lambda out, h_n: out[-1].sum(), as_tensor(x))
    assert all(v > 0 for v in only_last)


def test_gradient_flow_leaves_gradients_and_input_alone():
    rng = seeded(1)
    rnn, head = nn.RNN(2, 3, dtype="float64"), nn.Linear(3, 1, dtype="float64")
    x = as_tensor(rng.standard_normal((5, 2, 2)))
    rnn.weight_hh_l0.grad = as_tensor(np.ones((3, 3)))
    before = rnn.weight_hh_l0.grad.numpy().copy()
    gradient_flow(rnn, lambda out, h_n: head(out).sum(), x)
    np.testing.assert_array_equal(rnn.weight_hh_l0.grad.numpy(), before)
    assert rnn.weight_ih_l0.grad is None and head.weight.grad is None and x.grad is None
    assert "_cell" not in vars(rnn)  # the layer is as it was


def test_gradient_flow_batch_first_and_frozen_parameters():
    rng = seeded(2)
    x = rng.standard_normal((6, 2, 3))
    rnn = nn.GRU(3, 4, dtype="float64")
    ref = gradient_flow(rnn, lambda out, h_n: out.sum() + h_n.sum(), as_tensor(x))
    rnn_bf = nn.GRU(3, 4, batch_first=True, dtype="float64")
    rnn_bf.load_state_dict(rnn.state_dict())
    for p in rnn_bf.parameters():
        p.requires_grad = False  # a frozen model still has a gradient with respect to its states
    got = gradient_flow(rnn_bf, lambda out, h_n: out.sum() + h_n.sum(), as_tensor(x.transpose(1, 0, 2)))
    np.testing.assert_allclose(got, ref, rtol=1e-10)


# ---- gradient_flow vs probes added to the state, for every cell and layout ------------------

class Probed(nn.Module):
    """Runs `cell` and adds probes[t] (zeros that require grad) to the new state's item `component`.

    For LSTM's cell state (component 1) the probe goes in before h' = o tanh(c') is computed,
    since the total derivative dL/dc_t includes the path through h_t. A probe per step is a
    different outside tensor at each step: the loop runs eagerly (capturable = False).
    """
    capturable = False

    def __init__(self, cell, probes, component=0):
        self.cell, self.probes, self.component, self.t = cell, probes, component, 0

    def initial_state(self, batch_size):
        return self.cell.initial_state(batch_size)

    def forward(self, x_t, state):
        probe = self.probes[self.t]
        self.t += 1
        if self.component == 1:  # LSTM's c: probe it before h' = o tanh(c') reads it
            cell, (h, c) = self.cell, state
            gates = F.linear(x_t, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
            i, f, g, o = gates.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh() + probe
            return o.sigmoid() * c.tanh(), c
        new = self.cell(x_t, state)
        if isinstance(new, tuple):
            return (new[0] + probe,) + new[1:]
        return new + probe


def probe_norms(probes, lengths, reverse):
    """||dL/dd|| per input position from the probes' gradients (T, B, H) in step order."""
    g = np.stack([p.grad.numpy() if p.grad is not None else np.zeros(p.shape) for p in probes])
    T, B = g.shape[:2]
    n = lengths or [T] * B
    per_row = (g ** 2).sum(axis=2)  # (T steps, B)
    out = np.zeros(T)
    for b in range(B):
        for t in range(T):
            position = (n[b] - 1 - t if t < n[b] else t) if reverse else t
            out[position] += per_row[t, b]
    return np.sqrt(out)


def shared_cells(layer, cell_type, k, suffix):
    names = [f"{w}_l{k}{suffix}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    options = {"nonlinearity": layer.nonlinearity} if isinstance(layer, nn.RNN) else {}
    return cell_type.sharing(*[getattr(layer, n) for n in names], **options)


@pytest.mark.parametrize("kind, component", [("LSTM", 0), ("LSTM", 1), ("GRU", 0), ("RNN", 0)])
def test_gradient_flow_stacked_bidirectional_padded_matches_probes(kind, component):
    rng = seeded(3)
    T, B, I, H, L = 6, 3, 2, 3, 2
    layer = getattr(nn, kind)(I, H, num_layers=L, bidirectional=True, dtype="float64")
    cell_type = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell, "RNN": nn.RNNCell}[kind]
    x = rng.standard_normal((T, B, I))
    c = rng.standard_normal((T, B, 2 * H))
    lengths = [6, 3, 5]

    def loss_on(output, h_n):
        return (output * as_tensor(c)).tanh().sum() + (h_n ** 2).sum()

    def layer_loss(output, final):
        return loss_on(output, final[0] if kind == "LSTM" else final)

    flow = gradient_flow(layer, layer_loss, as_tensor(x), lengths=lengths, layer=None, component=component)
    assert [len(per_layer) for per_layer in flow] == [2, 2] and len(flow[0][0]) == T

    probes = [[[as_tensor(np.zeros((B, H)), requires_grad=True) for _ in range(T)] for _ in range(2)]
              for _ in range(L)]
    cells = [Probed(shared_cells(layer, cell_type, k, ""), probes[k][0], component) for k in range(L)]
    reverse = [Probed(shared_cells(layer, cell_type, k, "_reverse"), probes[k][1], component) for k in range(L)]
    out, finals = nn.Recurrent(cells, reverse)(as_tensor(x), lengths=lengths)
    h_n = tg.stack([s[0] if kind == "LSTM" else s for f in finals for s in f])
    loss_on(out, h_n).backward()
    for k in range(L):
        for d in range(2):
            np.testing.assert_allclose(flow[k][d], probe_norms(probes[k][d], lengths, d == 1),
                                       rtol=1e-9, atol=1e-12, err_msg=f"layer {k} direction {d}")
    # the default is the last layer's forward direction
    assert gradient_flow(layer, layer_loss, as_tensor(x), lengths=lengths, component=component) == flow[-1][0]


def test_gradient_flow_on_a_custom_cell_and_a_recurrent():
    rng = seeded(4)
    x = as_tensor(rng.standard_normal((5, 2, 3)))
    cell = nn.GRUCell(3, 4, dtype="float64")

    def loss_fn(out, state):
        return out[-1].sum()

    bare = gradient_flow(cell, loss_fn, x)
    wrapped = gradient_flow(nn.Recurrent(cell), loss_fn, x)
    assert bare == wrapped and len(bare) == 5
    # loss on the last output only: the gradient shrinks going back in time (a small GRU at init)
    assert bare[0] < bare[-1]
    with pytest.raises(TypeError, match="gradient_flow"):
        gradient_flow(nn.Linear(3, 4), loss_fn, x)


# ---- to_dot ---------------------------------------------------------------------------------

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+);$")


def parse_dot(text):
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := NODE.match(line):
            nodes[m.group(1)] = (m.group(2).split("\\n"), m.group(3))
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
    return nodes, edges


def walk_tape(tensor):
    """Independent walk: every op node once, and (source, target) name pairs, one per recorded input."""
    ops, pairs, todo = {tensor.grad_fn}, [], [tensor.grad_fn]
    while todo:
        node = todo.pop()
        for edge in node.parents:
            if edge is None:
                continue
            leaf = type(edge) is LeafEdge
            source = edge.tensor if leaf else edge.node
            pairs.append((("leaf", id(source)) if leaf else type(source).__name__, type(node).__name__))
            if not leaf and source not in ops:
                ops.add(source)
                todo.append(source)
    return ops, pairs


def test_to_dot_one_node_per_op_and_one_edge_per_input():
    tg.manual_seed(5)
    w = tg.randn(3, 2, dtype="float64", requires_grad=True)
    b = tg.randn(3, dtype="float64", requires_grad=True)
    x = tg.randn(4, 2, dtype="float64")  # a constant: not on the tape
    h = (x @ w.T + b).tanh()
    y = (h * h + h).sum()  # a diamond: h feeds Mul twice and Add once
    text = to_dot(y, params={"W": w, "b": b})
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    nodes, edges = parse_dot(text)
    ops, pairs = walk_tape(y)
    op_nodes = {k: v for k, v in nodes.items() if k.startswith("op")}
    leaf_nodes = {k: v for k, v in nodes.items() if k.startswith("leaf")}
    assert len(op_nodes) == len(ops)
    assert Counter(label[0] for label, _ in op_nodes.values()) == Counter(type(n).__name__ for n in ops)
    assert sorted(label[0] for label, _ in leaf_nodes.values()) == ["W", "b"]
    assert {label[0]: label[1] for label, _ in leaf_nodes.values()} == {"W": "(3, 2)", "b": "(3,)"}
    assert len(edges) == len(pairs)
    names = {k: (label[0] if k.startswith("op") else "leaf") for k, (label, _) in nodes.items()}
    assert Counter((names[a], names[b]) for a, b in edges) == \
        Counter(("leaf" if isinstance(s, tuple) else s, t) for s, t in pairs)
    # op labels carry the output shape; the root is marked; every edge ends at an op
    assert op_nodes["op0"][0] == ["Sum", "()"] and "peripheries=2" in op_nodes["op0"][1]
    assert any(label == ["Tanh", "(4, 3)"] for label, _ in op_nodes.values())
    assert all(b.startswith("op") for _, b in edges)
    assert set(a for a, _ in edges) | set(b for _, b in edges) == set(nodes)


@pytest.mark.parametrize("capture", [False, True])
def test_to_dot_of_a_recurrent_layer_names_parameters_and_survives_backward(capture):
    tg.manual_seed(6)
    rnn = nn.RNN(2, 3, capture=capture)
    out, h_n = rnn(tg.randn(4, 1, 2))
    loss = out.sum()
    loss.backward()  # the tape is released, but its structure stays drawable
    nodes, edges = parse_dot(to_dot(loss, params=rnn.named_parameters()))
    ops, pairs = walk_tape(loss)
    labels = [label for label, _ in nodes.values()]
    assert sum(1 for k in nodes if k.startswith("op")) == len(ops) and len(edges) == len(pairs)
    assert {label[0] for k, (label, _) in nodes.items() if k.startswith("leaf")} == \
        {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    if capture:  # steps 0 and 1 are recorded on the tape; the rest is one node: outputs (T, B, H), final state
        assert ["Loop", "2 outputs (4, 1, 3)"] in labels  # (the final state is not used by the loss)
        assert sum(1 for label in labels if label[0] == "Tanh") == 2
    else:
        assert ["Unbind", "4 outputs (1, 3)"] in labels  # the runner's per-step slicing: one node, 4 outputs
        assert sum(1 for label in labels if label[0] == "Tanh") == 4  # one tanh per step


def test_to_dot_of_a_leaf_and_of_a_long_chain():
    w = tg.ones(2, requires_grad=True)
    nodes, edges = parse_dot(to_dot(w, params={"w": w}))
    assert list(nodes.values())[0][0] == ["w", "(2,)"] and not edges
    y = w
    for _ in range(3000):  # deeper than Python's recursion limit
        y = y * 1.0
    nodes, edges = parse_dot(to_dot(y))
    assert len(nodes) == 3001 and len(edges) == 3000
    assert nodes["leaf0"][0] == ["leaf", "(2,)"]


def test_gradient_flow_and_to_dot_on_every_device(device):
    rng = seeded(7)
    layer = nn.GRU(2, 3, num_layers=2, bidirectional=True, dtype="float64")
    x = rng.standard_normal((5, 3, 2))
    lengths = [5, 2, 4]

    def loss_fn(output, h_n):
        return (output ** 2).sum() + h_n.tanh().sum()

    expected = gradient_flow(layer, loss_fn, as_tensor(x), lengths=lengths, layer=None)
    layer.to(device)
    got = gradient_flow(layer, loss_fn, tg.Tensor(x, device=device), lengths=lengths, layer=None)
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-10)
    out, _ = layer(tg.Tensor(x, device=device))
    nodes, edges = parse_dot(to_dot(out.sum(), params=layer.named_parameters()))
    ops, pairs = walk_tape(out.sum())
    assert sum(k.startswith("op") for k in nodes) == len(ops) and len(edges) == len(pairs)
