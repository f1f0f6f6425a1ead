"""grad(): PyTorch's torch.autograd.grad, on the engine's one walk."""
from .. import threads
from ..engine import backend
from ..engine.function import ProductSum, walk
from ..tensors import Tensor

__all__ = ["grad"]


def _sequence(values, what):
    if isinstance(values, Tensor):
        return [values]
    if isinstance(values, (tuple, list)) and all(isinstance(v, Tensor) for v in values):
        return list(values)
    raise TypeError(f"grad: {what} must be a Tensor or a sequence of Tensors, got {type(values).__name__}")


def _grad_outputs(outputs, grad_outputs, create_graph):
    """One gradient per output: arrays, or Tensors under create_graph (they may require grad themselves)."""
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or backend.is_array(grad_outputs):
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
            g = Tensor._make(backend.array_namespace(out.array).ones(out.shape, dtype=out.dtype), None, 0)
        elif not isinstance(g, Tensor):
            g = Tensor(g, dtype=out.dtype, device=out.device)
        if g.shape != out.shape:
            raise ValueError(f"grad: grad_outputs[{k}] has shape {g.shape}, output {k} has shape {out.shape}")
        if g.device != out.device:
            raise ValueError(f"grad: grad_outputs[{k}] is on {g.device}, output {k} on {out.device}")
        g = g if g.dtype == out.dtype else g.astype(out.dtype)
        result.append(g if create_graph else g.array)
    return result


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of `outputs` with respect to `inputs`, as a tuple of Tensors (PyTorch's autograd.grad).

    outputs, inputs: a Tensor or a sequence of Tensors; inputs may be leaves or
        intermediate tensors, and must require grad.
    grad_outputs: one Tensor per output (the vector of the vector-Jacobian product), or
        None for outputs with one element (then 1). They may themselves be on the tape.
    create_graph: the gradients are recorded on the tape (every rule runs on Tensors), so
        they can be differentiated again. retain_graph (default: create_graph) keeps the
        graph of `outputs` for another backward.
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
    grads = _grad_outputs(outputs, grad_outputs, create_graph)
    retain = create_graph if retain_graph is None else bool(retain_graph)
    with threads.limited():  # the pass's matmuls at the free cores when other tasks use cores
        found, _, owned = walk(outputs, grads, create_graph, retain, targets=inputs, retain=False)
        result = []
        for i, x in enumerate(inputs):
            key = id(x) if x._node is None else (x._node, x._index)
            g = found.get(key)
            if g is None:
                if not allow_unused:
                    raise RuntimeError(f"grad: input {i} (shape {x.shape}) was not used to compute the outputs; "
                                       "pass allow_unused=True to get None for it")
            elif not create_graph:  # never a view of a saved array or of grad_outputs
                g = Tensor._make(g.evaluate() if type(g) is ProductSum else g if key in owned else g.copy(), None, 0)
            result.append(g)
    return tuple(result)
