"""Gradients as Tensors: grad(), and the walk behind backward(create_graph=True).

autograd._walk is the fast path: raw arrays, buffers reused, saved arrays freed as it goes.
This module walks the same tape in the same order but carries *Tensors*:

* with create_graph=True each node runs its `backward_graph(ctx, *grads)` rule, written in
  Tensor ops, under enable_grad(), so every gradient it returns is itself on the tape and
  can be differentiated again (Hessian-vector products, gradient penalties, Jacobians);
* with create_graph=False (grad() without it) each node runs its raw `backward` and the
  results are wrapped as constant Tensors.

Accumulation is a Tensor add (never in place: an earlier gradient may be on the tape),
broadcast gradients are summed back to their input's shape with Tensor ops, and hooks
see Tensor gradients. grad() prunes the walk to the nodes that lead to its inputs and
can be called from inside a backward_graph (it keeps no global state).
"""
from . import autograd
from .autograd import Edge, LeafEdge, ProductSum, enable_grad, no_grad, pause_gc
from ._tensor import Tensor

__all__ = ["grad"]


def _backward_rule(node, grads, create_graph):
    """The one place that picks a node's backward rule for this walk: Tensor gradients in, Tensor gradients out."""
    if create_graph:
        rule = getattr(node, "backward_graph", None)
        if rule is None:
            raise RuntimeError(f"{node.name} does not support create_graph: write {node.name}.backward_graph(ctx, "
                               "*grads), its backward rule in Tensor ops (see the README, 'Higher-order gradients')")
        out = rule(*grads)
        return out if type(out) is tuple else (out,)
    out = node.backward(*[None if g is None else g.data for g in grads])
    out = out if type(out) is tuple else (out,)
    return tuple(None if g is None else (g.evaluate() if type(g) is ProductSum else g) for g in out)


def _fit(g, edge, node, i, create_graph):
    """A backward rule's gradient for input i, summed back to the input's shape and dtype."""
    if not create_graph:  # raw arrays: the fast path's one reduction
        return Tensor._make(autograd._reduce_to(g, edge.shape, edge.dtype, node.array_type, node, i), None, 0)
    if not isinstance(g, Tensor):
        raise RuntimeError(f"{node.name}.backward_graph returned a {type(g).__name__} for input {i}; "
                           "it must return Tensors (or None)")
    if g.shape != edge.shape:
        extra = g.ndim - len(edge.shape)
        if extra < 0 or any(n != 1 and g.shape[k + extra] != n for k, n in enumerate(edge.shape)):
            raise RuntimeError(f"{node.name}.backward_graph returned a gradient of shape {g.shape} "
                               f"for input {i} of shape {edge.shape}")
        axes = tuple(range(extra)) + tuple(k + extra for k, n in enumerate(edge.shape)
                                           if n == 1 and g.shape[k + extra] != 1)
        g = (g.sum(axes, keepdims=True) if axes else g).reshape(edge.shape)
    if g.dtype != edge.dtype:
        g = g.astype(edge.dtype)
    if type(g.data) is not node.array_type:
        raise RuntimeError(f"{node.name}.backward_graph returned a gradient on {g.device} for input {i}, "
                           "expected the input's device")
    return g


def _add(current, g):
    return g if current is None else current + g


def _run_hooks(hooks, g):
    for hook in hooks:
        result = hook(g)
        if result is not None:
            g = result if isinstance(result, Tensor) else Tensor._make(result, None, 0)
    return g


def _topological(starts):
    """Every node reachable from `starts`, consumers before producers (Kahn's order, no recursion)."""
    deps = autograd._count_consumers(starts)
    order, ready = [], [n for n in deps if deps[n] == 0]
    while ready:
        node = ready.pop()
        order.append(node)
        for edge in node.parents:
            if type(edge) is Edge:
                deps[edge.node] -= 1
                if deps[edge.node] == 0:
                    ready.append(edge.node)
    return order


def _needed(order, leaf_targets, output_targets):
    """The nodes whose backward must run to reach the targets (a reverse pass over `order`)."""
    needed = set()
    for node in reversed(order):  # producers first
        for edge in node.parents:
            if type(edge) is LeafEdge:
                if id(edge.tensor) in leaf_targets:
                    needed.add(node)
                    break
            elif type(edge) is Edge and (edge.node in needed or (edge.node, edge.index) in output_targets):
                needed.add(node)
                break
    return needed


def walk(outputs, grads, create_graph, retain_graph, inputs=None, retain_grads=False):
    """Backpropagate Tensor `grads` from `outputs` through the tape.

    inputs=None: every leaf that requires grad gets its gradient (what backward() wants);
    otherwise only the given tensors (leaves or op outputs), and only the nodes that lead
    to them run. Returns ({id(leaf): (leaf, grad)}, {(node, index): grad}), the gradients
    of the leaves reached and of the targeted op outputs. retain_grads: fill .grad of
    tensors that called retain_grad() (backward() does, grad() does not).
    """
    leaf_targets = output_targets = None
    if inputs is not None:
        leaf_targets = {id(t) for t in inputs if t._node is None}
        output_targets = {(t._node, t._index) for t in inputs if t._node is not None}
    with (enable_grad() if create_graph else no_grad()), pause_gc():
        pending, leaves = {}, {}
        for out, g in zip(outputs, grads):
            if out._node is None:
                leaf, current = leaves.get(id(out), (out, None))
                leaves[id(out)] = (leaf, _add(current, g))
            else:
                slots = pending.setdefault(out._node, [None] * out._node.n_outputs)
                slots[out._index] = _add(slots[out._index], g)
        order = _topological(list(pending))
        needed = _needed(order, leaf_targets, output_targets) if inputs is not None else None
        captured = {}
        for node in order:
            grads_in = pending.pop(node, None)
            if grads_in is None:
                continue
            if node.hooks:
                _node_hooks(node, grads_in, retain_grads)
            if output_targets:
                for index, g in enumerate(grads_in):
                    if (node, index) in output_targets and g is not None:
                        captured[(node, index)] = g
            if needed is not None and node not in needed:
                continue
            if all(g is None for g in grads_in):
                continue
            if node.released:
                raise RuntimeError(f"backward: the graph was already freed by an earlier backward() (reached "
                                   f"{node.name} again); pass retain_graph=True to the first backward() "
                                   "to backpropagate through the same graph twice")
            if autograd._modified and getattr(node, "epoch", 0) != autograd._epoch:
                autograd._check_saved(node)
            try:
                input_grads = _backward_rule(node, grads_in, create_graph)
            except FloatingPointError as e:  # an op recorded by backward_graph, under detect_anomaly
                if not (autograd._detect_anomaly and "site" in node.__dict__):
                    raise
                raise FloatingPointError(f"detect_anomaly: {node.name} backward produced NaN or inf; the op was "
                                         f"created at {node.site}; input shapes {node.input_shapes} ({e})") from None
            if autograd._detect_anomaly and "site" in node.__dict__:
                autograd._check_finite(node.name, node.site, [None if g is None else g.data for g in input_grads],
                                       node.input_shapes, "backward")
            parents = node.parents
            if len(input_grads) != len(parents):
                raise RuntimeError(f"{node.name}.backward{'_graph' * create_graph} returned {len(input_grads)} "
                                   f"gradients for {len(parents)} inputs")
            for i, edge in enumerate(parents):
                g = input_grads[i]
                if edge is None or g is None:
                    continue
                if type(edge) is LeafEdge:
                    if leaf_targets is not None and id(edge.tensor) not in leaf_targets:
                        continue
                    g = _fit(g, edge, node, i, create_graph)
                    leaf, current = leaves.get(id(edge.tensor), (edge.tensor, None))
                    leaves[id(edge.tensor)] = (leaf, _add(current, g))
                    continue
                target = edge.node
                if needed is not None and target not in needed and (target, edge.index) not in output_targets:
                    continue
                g = _fit(g, edge, node, i, create_graph)
                slots = pending.get(target)
                if slots is None:
                    slots = pending[target] = [None] * target.n_outputs
                slots[edge.index] = _add(slots[edge.index], g)
            if not retain_graph:
                node.__dict__.clear()
                node.released = True
        for k, (leaf, g) in list(leaves.items()):
            if leaf._hooks:
                leaves[k] = (leaf, _run_hooks(leaf._hooks, g))
    return leaves, captured


def _node_hooks(node, grads, retain_grads):
    """A node's output hooks on Tensor gradients; retained gradients only when asked."""
    for index, (hooks, retained) in node.hooks.items():
        if grads[index] is None:
            continue
        grads[index] = _run_hooks(hooks, grads[index])
        tensor = retained() if retained is not None and retain_grads else None
        if tensor is not None:
            g = grads[index]
            tensor.grad = g if tensor.grad is None else tensor.grad + g


def _sequence(values, what):
    if isinstance(values, Tensor):
        return [values]
    if isinstance(values, (tuple, list)) and all(isinstance(v, Tensor) for v in values):
        return list(values)
    raise TypeError(f"grad: {what} must be a Tensor or a sequence of Tensors, got {type(values).__name__}")


def _grad_outputs(outputs, grad_outputs):
    """One Tensor per output: the given ones (checked), or ones for single-element outputs."""
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or autograd.backend.is_array(grad_outputs):
        grad_outputs = [grad_outputs]
    else:
        grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    result = []
    for k, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(f"grad: output {k} has shape {out.shape}; a gradient can be implicitly "
                                   "created only for outputs with one element, so pass grad_outputs")
            g = Tensor._make(autograd.backend.array_namespace(out.data).ones(out.shape, dtype=out.dtype), None, 0)
        elif not isinstance(g, Tensor):
            g = Tensor(g, dtype=out.dtype, device=out.device)
        if g.shape != out.shape:
            raise ValueError(f"grad: grad_outputs[{k}] has shape {g.shape}, output {k} has shape {out.shape}")
        if g.device != out.device:
            raise ValueError(f"grad: grad_outputs[{k}] is on {g.device}, output {k} on {out.device}")
        if g.dtype != out.dtype:
            g = g.astype(out.dtype)
        result.append(g)
    return result


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of `outputs` with respect to `inputs`, as a tuple of Tensors (PyTorch's autograd.grad).

    outputs, inputs: a Tensor or a sequence of Tensors; inputs may be leaves or
        intermediate tensors, and must require grad.
    grad_outputs: one Tensor per output (the vector of the vector-Jacobian product), or
        None for outputs with one element (then 1). They may themselves be on the tape.
    create_graph: the gradients are recorded on the tape (each op's backward_graph runs),
        so they can be differentiated again. retain_graph (default: create_graph) keeps
        the graph of `outputs` for another backward; with create_graph it is always kept,
        since the new gradients refer to it.
    allow_unused: an input the outputs do not depend on gets None instead of an error.

    The .grad of leaves is left alone. Hooks registered on tensors along the way run.
    """
    outputs, inputs = _sequence(outputs, "outputs"), _sequence(inputs, "inputs")
    for k, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"grad: output {k} (shape {out.shape}) does not require grad and has no grad_fn")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"grad: input {i} (shape {x.shape}) does not require grad")
    grads = _grad_outputs(outputs, grad_outputs)
    retain = create_graph or (False if retain_graph is None else bool(retain_graph))
    leaves, captured = walk(outputs, grads, create_graph, retain, inputs=inputs)
    result = []
    for i, x in enumerate(inputs):
        g = leaves.get(id(x), (None, None))[1] if x._node is None else captured.get((x._node, x._index))
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} (shape {x.shape}) was not used to compute the outputs; "
                                   "pass allow_unused=True to get None for it")
        elif not create_graph:
            g = Tensor._make(g.data.copy(), None, 0)  # never a view of a saved array or of grad_outputs
        result.append(g)
    return tuple(result)


def backward_into(root, grad_root, inputs, retain_graph, create_graph):
    """root.backward(grad_root, inputs=...): d(root)/d(input) accumulated into each input's .grad
    only (an input the root does not depend on keeps its .grad)."""
    inputs = _sequence(inputs, "inputs")
    if not inputs:
        raise RuntimeError("backward: inputs= is an empty sequence; pass the tensors to accumulate gradients into")
    grads = grad([root], inputs, [grad_root], retain_graph=retain_graph, create_graph=create_graph,
                 allow_unused=True)
    for x, g in zip(inputs, grads):
        if g is None:
            continue
        if x.grad is None:
            x.grad = g
        elif create_graph:
            x.grad = x.grad + g
        else:
            x.grad._data += g._data


def backward(root, grad):
    """root.backward(grad, create_graph=True): leaf .grad become Tensors on the tape (the graph is kept)."""
    leaves, _ = walk([root], [grad], True, True, retain_grads=True)
    for leaf, g in leaves.values():
        leaf.grad = g if leaf.grad is None else leaf.grad + g
