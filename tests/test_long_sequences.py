"""Long sequences and long training runs (issue #5).

- An LSTM forward + backward over T = 10,000 steps works (the walk is iterative: it runs under
  a recursion limit barely above the caller's depth) and its gradients match the hand-written
  NumPy BPTT oracle.
- Peak memory (tracemalloc, which NumPy reports its buffers to) grows linearly in T.
- 2,000 training steps of a small LSTM with Adam hold memory flat: the graph of each step is
  released, and nothing accumulates.
- The graph holds no reference cycles: dropping the last reference frees every node at once,
  with the cycle collector switched off.
The long ones are marked slow (they still run in CI, within the suite's budget).
"""
import contextlib
import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_seq as tg
import tinygrad_seq.nn.functional as F
from tinygrad_seq import Tensor, nn, optim
from tinygrad_seq.engine.function import Edge

from bptt_oracle import layer_forward_backward


def _stack_depth():
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


@contextlib.contextmanager
def _recursion_limit(extra):
    """Allow only `extra` frames beyond the current depth: a recursive graph walk would fail."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + extra)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@contextlib.contextmanager
def _traced():
    """tracemalloc on for the block (left alone if someone else already traces)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


@pytest.mark.slow
def test_lstm_over_10000_steps_matches_the_oracle():
    T, B, I, H = 10_000, 1, 2, 4
    tg.manual_seed(0)
    lstm = nn.LSTM(I, H, dtype=tg.float64)
    x = Tensor(np.random.default_rng(0).standard_normal((T, B, I)), requires_grad=True)
    grad_out = np.random.default_rng(1).standard_normal((T, B, H))
    with _recursion_limit(120):
        out, (h_n, c_n) = lstm(x)
        loss = (out * Tensor(grad_out)).sum() + c_n.sum()
        loss.backward()
    params = {name: p.numpy() for name, p in lstm.named_parameters()}
    ref_out, _, ref_c_n, ref_grads = layer_forward_backward("lstm", x.numpy(), params, grad_output=grad_out,
                                                            grad_c_n=np.ones((1, B, H)))
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), ref_c_n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), ref_grads["x"], rtol=1e-8, atol=1e-10)
    for name, p in lstm.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref_grads[name], rtol=1e-8, atol=1e-10, err_msg=name)


def _peak_bytes(T):
    """Peak traced memory of one LSTM forward + backward over T steps (model and data excluded)."""
    tg.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    x = tg.randn(T, 2, 3)
    gc.collect()
    with _traced():
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out, (h_n, c_n) = lstm(x)
        (out.sum() + c_n.sum()).backward()
        peak = tracemalloc.get_traced_memory()[1] - base
    return peak


@pytest.mark.slow
def test_peak_memory_grows_linearly_in_sequence_length():
    short, long = _peak_bytes(1000), _peak_bytes(2000)
    assert 1.6 <= long / short <= 2.4, f"peak memory {short} B at T=1000 but {long} B at T=2000"


@pytest.mark.slow
def test_training_memory_stays_flat_over_2000_steps():
    """Traced memory after step 2,000 is within 10% of that after step 200."""
    with _traced():
        tg.manual_seed(0)
        lstm, head = nn.LSTM(4, 16), nn.Linear(16, 1)
        opt = optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-2)
        x, y = tg.randn(3, 2, 4), tg.randn(2, 1)
        memory, losses = {}, []
        for step in range(1, 2001):
            opt.zero_grad()
            out, state = lstm(x)
            loss = F.mse_loss(head(out[-1]), y)
            loss.backward()
            opt.step()
            if step in (1, 200, 2000):
                losses.append(loss.item())
                del out, state, loss
                gc.collect()
                memory[step] = tracemalloc.get_traced_memory()[0]
    assert losses[-1] < losses[0]  # it trained
    assert abs(memory[2000] - memory[200]) <= 0.10 * memory[200], \
        f"traced memory {memory[200]} B after step 200 but {memory[2000]} B after step 2000"


def _graph_nodes(root):
    """Every Function node reachable from `root` (iteratively, through the documented edges)."""
    seen, stack = {}, [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(edge.node for edge in node.parents if isinstance(edge, Edge))
    return list(seen.values())


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("backward", ["none", "backward", "retain_graph"])
def test_graph_is_freed_without_the_cycle_collector(backward, capture):
    tg.manual_seed(0)
    lstm = nn.LSTM(3, 4, capture=capture)
    x = tg.randn(25, 2, 3, requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        out, (h_n, c_n) = lstm(x)
        loss = out.sum() + c_n.sum()
        nodes = _graph_nodes(loss.grad_fn)
        if capture:  # one Loop node holds the recorded steps' contexts
            assert any(type(n).__name__ == "Loop" for n in nodes)
        else:
            assert len(nodes) > 25 * 10
        refs = [weakref.ref(n) for n in nodes] + [weakref.ref(t) for t in (out, h_n, c_n, loss)]
        del nodes
        if backward != "none":
            loss.backward(retain_graph=backward == "retain_graph")
        del out, h_n, c_n, loss
        alive = [r() for r in refs if r() is not None]
        assert not alive, f"{len(alive)} graph objects outlive their last reference, e.g. {alive[:3]}"
        assert gc.collect() == 0  # and nothing cyclic was left for the collector
        assert x.grad is None or x.grad.shape == x.shape
    finally:
        gc.enable()
