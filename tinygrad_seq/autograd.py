"""The tape: Function nodes, grad-mode switches and the backward walk.

A Function instance is both the op's context (what forward saved for backward) and the
node of the graph. It keeps its inputs' edges (`parents`), never its outputs, so the graph
holds no reference cycles. backward() walks the nodes in topological order with Kahn's
algorithm (dependency counts, no recursion), sums each node's incoming gradients, and
frees what a node saved as soon as its backward has run.
"""
import functools
import weakref

from . import backend

Tensor = None  # set by tensor.py (tensor.py imports this module first)

_grad_enabled = True


def is_grad_enabled():
    """Whether new ops are recorded on the tape."""
    return _grad_enabled


class _GradMode:
    """Base of no_grad / enable_grad: a context manager and a decorator."""
    enabled = True

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Context manager / decorator: ops inside record nothing and produce no grad_fn."""
    enabled = False


class enable_grad(_GradMode):
    """Context manager / decorator: turn recording back on inside a no_grad block."""
    enabled = True


class Function:
    """A differentiable primitive: subclass it and write `forward` and `backward`.

    forward(ctx, *arrays, **kwargs) gets raw backend arrays (and any non-Tensor
    arguments as they are) and returns an array or a tuple of arrays; it stores on `ctx`
    whatever backward needs (`ctx.save_for_backward(*arrays)` or plain attributes).
    backward(ctx, *grads) gets one gradient array per output (None for outputs that got
    no gradient) and returns one gradient per input (an array or None), in input order.
    `ctx.needs_input_grad[i]` tells whether input i wants a gradient. Call the op with
    `MyFunction.apply(*tensors, **kwargs)`.
    """
    __slots__ = ("parents", "needs_input_grad", "input_meta", "n_outputs", "hooks", "released", "__dict__")

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def save_for_backward(self, *arrays):
        self.saved_arrays = arrays

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}Backward>"

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        arrays, needs, array_type, record = [], [], None, False
        for a in args:
            if isinstance(a, Tensor):
                data = a.data
                if array_type is None:
                    array_type = type(data)
                elif type(data) is not array_type or array_type is not _host_array:
                    _check_devices(cls, args)
                arrays.append(data)
                needs.append(a._requires_grad)
                record = record or a._requires_grad
            else:
                arrays.append(a)
                needs.append(False)
        ctx.needs_input_grad = needs = tuple(needs)
        try:
            out = ctx.forward(*arrays, **kwargs)
        except (ValueError, TypeError, IndexError) as e:
            raise _op_error(cls.__name__.lower(), e, args, kwargs) from None
        if type(out) is not tuple:
            if type(out) is not array_type:  # NumPy returns scalars for 0-d results
                out = backend.as_array(out, _device(args))
            if not (record and _grad_enabled):
                return Tensor._make(out, None, 0)
            ctx._record(args, needs, array_type, 1)
            return Tensor._make(out, ctx, 0)
        outs = tuple(o if type(o) is array_type else backend.as_array(o, _device(args)) for o in out)
        if not (record and _grad_enabled):
            return tuple(Tensor._make(o, None, 0) for o in outs)
        ctx._record(args, needs, array_type, len(outs))
        return tuple(Tensor._make(o, ctx, i) for i, o in enumerate(outs))

    def _record(self, args, needs, array_type, n_outputs):
        parents, meta = [], []
        for a, needed in zip(args, needs):
            if needed:
                data = a.data
                parents.append((a._node, a._index) if a._node is not None else (a, -1))
                meta.append((data.shape, data.dtype, array_type))
            else:
                parents.append(None)
                meta.append(None)
        self.parents, self.input_meta = parents, meta
        self.hooks = None
        self.released = False
        self.n_outputs = n_outputs

    def add_hook(self, index, hook=None, retain=None):
        """Run `hook` on (or retain the gradient of) output `index` during backward."""
        if self.hooks is None:
            self.hooks = {}
        entry = self.hooks.setdefault(index, [[], None])
        if hook is not None:
            entry[0].append(hook)
        if retain is not None:
            entry[1] = weakref.ref(retain)


_host_array = backend.ndarray


def _device(args):
    return next((a.device for a in args if isinstance(a, Tensor)), "cpu")


def _check_devices(cls, args):
    """Raise if the Tensor arguments of an op live on different devices."""
    devices = list(dict.fromkeys(a.device for a in args if isinstance(a, Tensor)))
    if len(devices) > 1:
        raise ValueError(f"{cls.__name__.lower()}: tensors are on different devices "
                         f"({' and '.join(devices)}); move them with .to(device) first")


class OpIndexError(IndexError, ValueError):
    """An index out of range inside an op (both an IndexError and a ValueError)."""


def _op_error(op, error, args, kwargs):
    """Re-raise a backend error with the op's name and what it was given."""
    message = str(error)
    if message.startswith(op + ":"):
        return error
    described = ", ".join(f"{tuple(a.shape)} {a.dtype}" if isinstance(a, Tensor) else repr(a) for a in args)
    options = "".join(f", {k}={v!r}" for k, v in kwargs.items() if k != "index") if kwargs else ""
    kind = OpIndexError if isinstance(error, IndexError) else type(error)
    return kind(f"{op}: {message} (inputs: {described}{options})")


def _reduce_to(grad, meta, node, i):
    """Sum a broadcast gradient back to its input's shape; the one place this happens."""
    shape, dtype, array_type = meta
    if type(grad) is not array_type:
        if array_type is backend.ndarray and not backend.is_array(grad):
            grad = backend.to_host(grad)  # a NumPy scalar from a full reduction
        else:
            raise RuntimeError(f"{node.name}.backward returned a gradient of type {type(grad).__name__} "
                               f"for input {i}, expected {array_type.__name__} (the input's device)")
    if grad.shape != shape:
        extra = grad.ndim - len(shape)
        axes = tuple(range(extra)) + tuple(k + extra for k, n in enumerate(shape)
                                           if n == 1 and grad.shape[k + extra] != 1)
        if extra < 0 or any(n != 1 and grad.shape[k + extra] != n for k, n in enumerate(shape)):
            raise RuntimeError(f"{node.name}.backward returned a gradient of shape {grad.shape} "
                               f"for input {i} of shape {shape}")
        grad = grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)
    if grad.dtype != dtype:
        grad = grad.astype(dtype)
    return grad


def _run_hooks(hooks, grad):
    for hook in hooks:
        result = hook(Tensor._make(grad, None, 0))
        if result is not None:
            grad = result.data if isinstance(result, Tensor) else result
    return grad


def backward(root, grad, retain_graph=False):
    """Backpropagate `grad` (an array shaped like root) through the tape into leaf .grad."""
    leaf_grads = {}  # id(leaf) -> [leaf, grad, owned]

    def send(edge, g, pending, owned):
        target, index = edge
        if index < 0:  # a leaf tensor
            entry = leaf_grads.get(id(target))
            if entry is None:
                leaf_grads[id(target)] = [target, g, False]
            elif entry[2]:
                entry[1] += g
            else:
                entry[1], entry[2] = entry[1] + g, True
            return
        slots = pending.get(target)
        if slots is None:
            slots = pending[target] = [None] * target.n_outputs
        current = slots[index]
        if current is None:
            slots[index] = g
        elif (target, index) in owned:
            current += g
        else:
            slots[index] = current + g
            owned.add((target, index))

    root_edge = root._edge()
    if root_edge[1] < 0:
        send(root_edge, grad, None, None)
    else:
        _walk(root_edge, grad, retain_graph, send)
    for leaf, g, owned in leaf_grads.values():
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g)
            owned = False
        if leaf.grad is None:
            leaf.grad = Tensor._make(g if owned else g.copy(), None, 0)
        else:
            leaf.grad.data += g


def _walk(root_edge, grad, retain_graph, send):
    start = root_edge[0]
    deps = {start: 0}
    stack = [start]
    while stack:
        for edge in stack.pop().parents:
            if edge is not None and edge[1] >= 0:
                parent = edge[0]
                if parent in deps:
                    deps[parent] += 1
                else:
                    deps[parent] = 1
                    stack.append(parent)
    pending, owned = {start: [None] * start.n_outputs}, set()
    pending[start][root_edge[1]] = grad
    ready = [start]
    while ready:
        node = ready.pop()
        grads = pending.pop(node)
        if node.released:
            raise RuntimeError(f"backward: the graph was already freed after an earlier backward() (reached "
                               f"{node.name} again); pass retain_graph=True to the first backward() "
                               "to backpropagate through the same graph twice")
        if node.hooks:
            for index, (hooks, retained) in node.hooks.items():
                if grads[index] is not None:
                    grads[index] = _run_hooks(hooks, grads[index])
                    tensor = retained() if retained is not None else None
                    if tensor is not None:
                        tensor.grad = Tensor._make(grads[index].copy(), None, 0)
        if any(g is not None for g in grads):
            input_grads = node.backward(*grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(node.parents):
                raise RuntimeError(f"{node.name}.backward returned {len(input_grads)} gradients for "
                                   f"{len(node.parents)} inputs")
        else:
            input_grads = (None,) * len(node.parents)
        if not retain_graph:
            node.__dict__.clear()
            node.released = True
        for i, (edge, g) in enumerate(zip(node.parents, input_grads)):
            if edge is None:
                continue
            if g is not None:
                meta = node.input_meta[i]
                if g.shape != meta[0] or g.dtype != meta[1] or type(g) is not meta[2]:
                    g = _reduce_to(g, meta, node, i)
                send(edge, g, pending, owned)
            if edge[1] >= 0:
                parent = edge[0]
                deps[parent] -= 1
                if deps[parent] == 0:
                    if parent not in pending:  # no gradient reached it; walk on to keep counts right
                        pending[parent] = [None] * parent.n_outputs
                    ready.append(parent)
