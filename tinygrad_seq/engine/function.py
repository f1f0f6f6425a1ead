"""The tape: Function (a primitive, and once applied a node of the graph), grad mode, and the one walk.

A Function instance is the op's context (what forward kept) and its node; it keeps edges to its
inputs, never its outputs: no cycles. `walk` is Kahn's algorithm (no recursion): a node's rule runs
once its consumers sent their gradients, on arrays, or on Tensors under create_graph; gradients are
summed in one place (`accumulate`), fitted to their input in one (`fit`), and what a node kept is
freed after use. Grad mode and the observer (the one seam through which capture and detect_anomaly
watch the tape) are per thread, as PyTorch's modes are.
"""
import contextlib
import functools
import threading
import weakref

from . import backend


class _Modes(threading.local):
    def __init__(self):  # runs once in each thread
        self.grad = True      # record ops on the tape
        self.observer = None  # told about every op, rule, host read and in-place write (see `observed`)
        self.saved = []       # the modes to restore when the `with` blocks entered in this thread exit


modes = _Modes()


def is_grad_enabled():
    """Whether new ops are recorded on the tape (in this thread)."""
    return modes.grad


class GradMode:
    """A context manager and decorator that sets grad mode for its block, in this thread."""
    enabled = True

    def __enter__(self):
        modes.saved.append(modes.grad)
        modes.grad = self.enabled

    def __exit__(self, *exc):
        modes.grad = modes.saved.pop()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return wrapper


class no_grad(GradMode):
    """Context manager / decorator: ops inside record nothing and produce no grad_fn."""
    enabled = False


class enable_grad(GradMode):
    """Context manager / decorator: turn recording back on inside a no_grad block."""


@contextlib.contextmanager
def observed(observer):
    """In the block, in this thread, observer.op(ctx, args, kwargs, result) follows each forward,
    observer.rule(node, grads) each rule the walk runs, observer.refuse(reason) what a recording
    cannot replay (a host read, an in-place write), observer.read(tensor) each read of a tensor's
    array outside an op. An observer already watching must refuse."""
    previous = modes.observer
    if previous is not None:
        previous.refuse(observer.reason)
    modes.observer = observer
    try:
        yield observer
    finally:
        modes.observer = previous


def refuse(reason):
    """Tell the observer, if any, that what runs now cannot be recorded (Tensor.numpy, in-place writes)."""
    if modes.observer is not None:
        modes.observer.refuse(reason)


def reads(tensor):
    """Tell the observer, if any, that `tensor`'s array is read outside an op (.array, .data, Tensor(t)):
    values computed from it would be invisible to a recording."""
    if modes.observer is not None:
        modes.observer.read(tensor)


# ---- the graph -----------------------------------------------------------------------------

class TensorBase:
    """What the tape knows of a tensor: its array, gradient and the node that made it (tensor.py)."""
    __slots__ = ("_data", "grad", "_requires_grad", "_node", "_index", "_hooks", "__weakref__")


class Edge:
    """Where the gradient of an op's input goes: output `index` of `node`. `id` names the array that
    flowed along it: under create_graph, a rule that kept that array gets it back on the tape."""
    __slots__ = ("node", "index", "shape", "dtype", "id")

    def __init__(self, node, index, data):
        self.node, self.index, self.shape, self.dtype, self.id = node, index, data.shape, data.dtype, id(data)


class LeafEdge:
    """Where the gradient of an op's input goes when that input is a leaf: into `tensor.grad`."""
    __slots__ = ("tensor", "shape", "dtype", "id")

    def __init__(self, tensor, data):
        self.tensor, self.shape, self.dtype, self.id = tensor, data.shape, data.dtype, id(data)


class _NeedsInputGrad:
    """ctx.needs_input_grad: a bool per input, from `parents` (a non-data descriptor: capture sets it once)."""

    def __get__(self, ctx, owner=None):
        return self if ctx is None else tuple([p is not None for p in ctx.parents])


_host = backend.ndarray


class Function:
    """A differentiable primitive: forward on arrays and ONE derivative rule (ctx is the instance).

    forward(ctx, *arrays, **kwargs) gets backend arrays (other arguments as they are), returns
    an array or a tuple, and keeps on ctx what backward needs; a forward that also takes `out=` (an
    array of the result's shape and dtype to write into, NumPy's convention) lets the captured loop
    reuse one buffer for that result at every step. backward(ctx, *grads) gets one
    gradient per output (None where none came) and returns one per input (None where
    ctx.needs_input_grad[i] is false). It runs on arrays; under create_graph on Tensors, where
    each array kept on ctx that is an input or output of the op is that Tensor on the tape: a rule
    written with operators, array methods (reshape, sum, T, astype, indexing) and other primitives
    (`Op.call`) is differentiable again. Call it with Op.apply(...); tg.Function adds PyTorch's style.
    """
    __slots__ = ("parents", "array_type", "n_outputs", "out_ids", "hooks", "released", "epoch", "__dict__")
    forward_on_arrays = True  # False for PyTorch-style Functions, whose forward takes Tensors
    needs_input_grad = _NeedsInputGrad()

    def kept_arrays(self):
        """The arrays this node keeps for backward (attributes, or tuples of them): what the in-place check reads."""
        for value in self.__dict__.values():
            for v in value if type(value) is tuple else (value,):
                v = v._data if isinstance(v, TensorBase) else v
                if backend.is_array(v):
                    yield v

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}Backward>"

    @classmethod
    def call(cls, *args, **kwargs):
        """This primitive inside a rule: applied (recorded) if an argument is a Tensor, else run on the arrays."""
        for a in args:
            if isinstance(a, TensorBase):
                return cls.apply(*args, **kwargs)
        return cls.__new__(cls).forward(*args, **kwargs)

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        arrays, parents, first, record = [], [], None, False
        for a in args:
            if isinstance(a, TensorBase):
                data = a._data
                if first is None:
                    first, array_type = a, type(data)
                elif type(data) is not array_type or array_type is not _host:
                    _check_devices(cls, args)
                arrays.append(data)
                if a._requires_grad:
                    record = True
                    node = a._node
                    parents.append(Edge(node, a._index, data) if node is not None else LeafEdge(a, data))
                else:
                    parents.append(None)
            else:
                arrays.append(a)
                parents.append(None)
        if first is None:
            raise TypeError(f"{cls.__name__}.apply: expected at least one Tensor argument")
        m = modes.__dict__  # this thread's modes, read once
        if record and m["grad"]:
            ctx.parents = parents
        else:
            ctx.parents, record = (None,) * len(parents), False
        try:
            out = ctx.forward(*arrays, **kwargs)
        except (ValueError, TypeError, IndexError) as e:
            raise _op_error(cls.__name__.lower(), e, args, kwargs) from None
        make = first._make
        if type(out) is not tuple:
            if type(out) is not array_type and not backend.is_array(out):  # NumPy scalars from 0-d results
                out = _as_output(ctx, out, first)
            if record:
                ctx.array_type, ctx.n_outputs, ctx.out_ids, ctx.hooks, ctx.released, ctx.epoch = \
                    array_type, 1, id(out), None, False, _epoch
                result = make(out, ctx, 0)
            else:
                result = make(out, None, 0)
        else:
            out = [o if type(o) is array_type or backend.is_array(o) else _as_output(ctx, o, first) for o in out]
            node = ctx if record else None
            result = tuple([make(o, node, i) for i, o in enumerate(out)])
            if record:
                ctx.array_type, ctx.n_outputs, ctx.out_ids, ctx.hooks, ctx.released, ctx.epoch = \
                    array_type, len(out), tuple([id(o) for o in out]), None, False, _epoch
        if m["observer"] is not None:
            m["observer"].op(ctx, args, kwargs, result)
        return result

    def add_hook(self, index, hook=None, retain=None):
        """Run `hook` on (or retain the gradient of) output `index` during backward."""
        if self.hooks is None:
            self.hooks = {}
        entry = self.hooks.setdefault(index, [[], None])
        if hook is not None:
            entry[0].append(hook)
        if retain is not None:
            entry[1] = weakref.ref(retain)


def _as_output(ctx, value, like):
    """A NumPy scalar result as a 0-d array (where ctx kept it too: the rule must see the output itself)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") and not isinstance(value, TensorBase):
        array = backend.as_array(value, backend.device_of(like._data))
        for name, kept in ctx.__dict__.items():
            if kept is value:
                ctx.__dict__[name] = array
        return array
    raise TypeError(f"{ctx.name}.forward returned a {type(value).__name__}; a plain-method forward works on arrays "
                    "and must return arrays (write forward and backward as @staticmethod for the PyTorch style, "
                    "Tensors in and out)")


def _check_devices(cls, args):
    """Raise if the Tensor arguments of an op live on different devices."""
    devices = list(dict.fromkeys(backend.device_of(a._data) for a in args if isinstance(a, TensorBase)))
    if len(devices) > 1:
        raise ValueError(f"{cls.__name__.lower()}: tensors are on different devices ({' and '.join(devices)}); "
                         "move them with .to(device) first")


class OpIndexError(IndexError, ValueError):
    """An index out of range inside an op (both an IndexError and a ValueError)."""


def _op_error(op, error, args, kwargs):
    """A backend error with the op's name and what it was given."""
    if str(error).startswith(op + ":"):
        return error
    described = ", ".join(f"{tuple(a.shape)} {a.dtype}" if isinstance(a, TensorBase) else repr(a) for a in args)
    options = "".join(f", {k}={v!r}" for k, v in kwargs.items() if k != "index")
    return (OpIndexError if isinstance(error, IndexError) else type(error))(f"{op}: {error} (inputs: {described}{options})")


# ---- in-place writes: PyTorch's version counter --------------------------------------------

_epoch = 0      # in-place writes so far; each node records the count it was made at
_modified = {}  # id(buffer) -> (epoch of its last in-place write, weakref that drops the entry)


def mark_modified(array):
    """Record an in-place write into `array`'s memory: nodes made before it that kept a view of it
    refuse to run backward (_check_kept)."""
    global _epoch
    while backend.is_array(array.base):
        array = array.base
    _epoch += 1
    key = id(array)
    entry = _modified.get(key)
    _modified[key] = (_epoch, entry[1] if entry else weakref.ref(array, lambda _, k=key: _modified.pop(k, None)))


def _check_kept(node):
    for a in node.kept_arrays():
        while backend.is_array(a.base):
            a = a.base
        entry = _modified.get(id(a))
        if entry is not None and entry[0] > node.epoch:
            raise RuntimeError(f"backward: one of the variables needed for gradient computation has been modified by "
                               f"an inplace operation: {node.name} saved an array that was written in place (add_, "
                               "mul_, copy_, ...) after the op ran, so its gradient would be wrong. Use the out-of-place "
                               "op (x = x * 2), or .clone() the tensor before changing it")


# ---- gradients: lazy weight products, summing, fitting -------------------------------------

class ProductSum:
    """A matmul's weight gradient kept lazy, sum_k lefts[k].T @ rights[k]: a weight read at every time
    step gets T of these, evaluated as ONE matmul over the stacked rows, as hand-written BPTT does."""
    __slots__ = ("lefts", "rights", "dtype")

    def __init__(self, left, right):
        self.lefts, self.rights, self.dtype = [left], [right], None

    def evaluate(self):
        left, right = self.lefts, self.rights
        if len(left) == 1:
            out = left[0].T @ right[0]
        else:
            xp = backend.array_namespace(left[0])
            out = xp.concatenate(left).T @ xp.concatenate(right)
        return out if self.dtype is None or out.dtype == self.dtype else out.astype(self.dtype)


def _value(g):
    return g.evaluate() if type(g) is ProductSum else g  # a lazy product, evaluated


def accumulate(current, g, key, owned):
    """current + g at the place named `key`: the one place gradients are summed. It never writes into an
    array a rule returned: the second gradient allocates a buffer we own (its key goes into `owned`),
    later ones add into it. Tensors (create_graph) add out of place; lazy products are gathered."""
    if type(current) is ProductSum and type(g) is ProductSum:
        current.lefts += g.lefts
        current.rights += g.rights
        return current
    if type(current) is ProductSum:
        current = current.evaluate()
        owned.add(key)
    if type(g) is ProductSum:
        g = g.evaluate()
    if isinstance(current, TensorBase):
        return current + g
    if key in owned:
        current += g
        return current
    owned.add(key)
    out = current + g
    return out if type(out) is type(current) else backend.as_array(out, backend.device_of(current))  # 0-d stays


def fit(g, shape, dtype, array_type, node, i):
    """A rule's gradient for input i fitted to it: broadcast axes summed (the one place), dtype cast back,
    device checked. A lazy product only learns its dtype."""
    if type(g) is ProductSum:
        g.dtype = dtype
        return g
    data = g._data if isinstance(g, TensorBase) else g
    if type(data) is not array_type:
        if array_type is _host and not backend.is_array(data) and not isinstance(g, TensorBase):
            g = backend.to_host(data)  # a NumPy scalar from a full reduction
        else:
            raise RuntimeError(f"{node.name}.backward returned a gradient of type {type(data).__name__} for input "
                               f"{i}, expected {array_type.__name__} (the input's device)")
    if g.shape != shape:
        extra = g.ndim - len(shape)
        if extra < 0 or any(n != 1 and g.shape[k + extra] != n for k, n in enumerate(shape)):
            raise RuntimeError(f"{node.name}.backward returned a gradient of shape {g.shape} for input {i} of "
                               f"shape {shape}")
        axes = tuple(range(extra)) + tuple(k + extra for k, n in enumerate(shape) if n == 1 and g.shape[k + extra] != 1)
        g = (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)
    return g if g.dtype == dtype else g.astype(dtype)


def into_grad(tensor, g, own):
    """Accumulate g into tensor.grad (the one place): arrays in place, the first copied unless `own`."""
    if type(g) is ProductSum:
        g, own = g.evaluate(), True
    if isinstance(g, TensorBase):
        tensor.grad = g if tensor.grad is None else tensor.grad + g
    elif tensor.grad is None:
        tensor.grad = tensor._make(g if own else g.copy(), None, 0)
    else:
        tensor.grad._data += g


# ---- the walk -------------------------------------------------------------------------------

def _count_consumers(starts):
    """For every node reachable from the nodes `starts`: how many edges lead into it."""
    deps = dict.fromkeys(starts, 0)
    stack = list(deps)
    while stack:
        for edge in stack.pop().parents:
            if type(edge) is Edge:
                parent = edge.node
                if parent in deps:
                    deps[parent] += 1
                else:
                    deps[parent] = 1
                    stack.append(parent)
    return deps


def _needed(deps, leaf_targets, output_targets):
    """The nodes whose rule must run to reach the targets (producers decided before their consumers)."""
    left, ready, order = dict(deps), [n for n, d in deps.items() if d == 0], []
    while ready:
        node = ready.pop()
        order.append(node)
        for edge in node.parents:
            if type(edge) is Edge:
                left[edge.node] -= 1
                if left[edge.node] == 0:
                    ready.append(edge.node)
    needed = set()
    for node in reversed(order):
        for edge in node.parents:
            if type(edge) is LeafEdge and id(edge.tensor) in leaf_targets or type(edge) is Edge and (
                    edge.node in needed or (edge.node, edge.index) in output_targets):
                needed.add(node)
                break
    return needed


def walk(roots, grads, create_graph=False, retain_graph=False, targets=None, retain=True):
    """Backpropagate `grads` (one per root: arrays, or Tensors under create_graph) from the tensors `roots`.

    targets=None: every leaf reached gets its gradient; else only the tensors in `targets` (leaves
    or op outputs), and only the nodes leading to them run. retain: fill .grad of retain_grad()
    tensors too. Returns (gradients by id(leaf) or (node, index), leaves by id, keys the walk owns).
    """
    make, observer, needed = roots[0]._make, modes.observer, None
    leaf_targets = None if targets is None else {id(t) for t in targets if t._node is None}
    output_targets = None if targets is None else {(t._node, t._index) for t in targets if t._node is not None}
    pending, results, leaves, owned = {}, {}, {}, set()
    for root, g in zip(roots, grads):
        if root._node is None:
            key = id(root)
            leaves[key] = root
            results[key] = g if key not in results else accumulate(results[key], g, key, owned)
        else:
            slots = pending.setdefault(root._node, [None] * root._node.n_outputs)
            current = slots[root._index]
            slots[root._index] = g if current is None else accumulate(current, g, (root._node, root._index), owned)
    deps = _count_consumers(list(pending))
    if targets is not None:
        needed = _needed(deps, leaf_targets, output_targets)
    ready = [node for node in pending if deps[node] == 0]
    with enable_grad() if create_graph else contextlib.nullcontext():
        while ready:
            node = ready.pop()
            grads_in, input_grads = pending.pop(node, None), None
            if grads_in is not None:
                if node.released:
                    raise RuntimeError(f"backward: the graph was already freed by an earlier backward() (reached "
                                       f"{node.name} again). In a loop over batches that carries a hidden state "
                                       "(truncated BPTT), detach the carried state before the next batch: h = "
                                       "h.detach() (LSTM: tuple(s.detach() for s in state)); to go through the graph "
                                       "twice on purpose, pass retain_graph=True to the first backward()")
                if _modified and node.epoch != _epoch:
                    _check_kept(node)
                if node.hooks:
                    _node_hooks(node, grads_in, make, retain)
                if output_targets:
                    for index, g in enumerate(grads_in):
                        if (node, index) in output_targets and g is not None:
                            results[(node, index)] = _value(g)
                if needed is None or node in needed:
                    if create_graph:
                        input_grads = _rule_on_tape(node, grads_in)
                    elif len(grads_in) == 1:
                        g = grads_in[0]
                        input_grads = node.backward(g.evaluate() if type(g) is ProductSum else g)
                    elif any(g is not None for g in grads_in):
                        input_grads = node.backward(*[_value(g) for g in grads_in])
                    if type(input_grads) is not tuple:
                        input_grads = None if input_grads is None else (input_grads,)
                    if input_grads is not None and len(input_grads) != len(node.parents):
                        raise RuntimeError(f"{node.name}.backward returned {len(input_grads)} gradients for "
                                           f"{len(node.parents)} inputs")
                    if observer is not None:
                        observer.rule(node, input_grads)
                    if not retain_graph:
                        node.__dict__.clear()
                        node.released = True
            array_type = node.array_type
            for i, edge in enumerate(node.parents):
                if edge is None:
                    continue
                g = None if input_grads is None else input_grads[i]
                if type(edge) is LeafEdge:
                    if g is not None and (leaf_targets is None or id(edge.tensor) in leaf_targets):
                        if type(g) is not array_type or g.shape != edge.shape or g.dtype != edge.dtype:
                            g = fit(g, edge.shape, edge.dtype, array_type, node, i)
                        k = id(edge.tensor)
                        leaves[k] = edge.tensor
                        results[k] = g if k not in results else accumulate(results[k], g, k, owned)
                    continue
                target = edge.node
                if g is not None and (needed is None or target in needed or (target, edge.index) in output_targets):
                    if type(g) is not array_type or g.shape != edge.shape or g.dtype != edge.dtype:
                        g = fit(g, edge.shape, edge.dtype, array_type, node, i)
                    slots = pending.get(target)
                    if slots is None:
                        slots = pending[target] = [None] * target.n_outputs
                    current = slots[edge.index]
                    slots[edge.index] = g if current is None else accumulate(current, g, (target, edge.index), owned)
                left = deps[target] - 1
                deps[target] = left
                if left == 0:
                    ready.append(target)
        for k, leaf in leaves.items():
            if leaf._hooks and k in results:
                results[k] = _run_hooks(leaf._hooks, _value(results[k]), make)
                owned.discard(k)
    return results, leaves, owned


def _rule_on_tape(node, grads):
    """The node's rule on Tensors, recorded (create_graph): what it kept of its inputs and outputs are
    those Tensors on the tape."""
    if all(g is None for g in grads):
        return None
    originals = _kept_on_tape(node, next(g for g in grads if g is not None)._make)
    try:
        out = node.backward(*grads)
    except TypeError as e:
        raise RuntimeError(f"{node.name}.backward could not run on Tensors ({e}). Under create_graph a rule runs on "
                           "Tensors: write it with operators, array methods and other primitives (Op.call), or as "
                           "a PyTorch-style Function, to differentiate it twice") from None
    except FloatingPointError as e:  # an op of the rule, under detect_anomaly
        raise FloatingPointError(f"detect_anomaly: {node.name} backward produced NaN or inf ({e})") from None
    finally:
        node.__dict__.update(originals)
    for k, g in enumerate(out if type(out) is tuple else (out,)):
        if g is not None and not isinstance(g, TensorBase):
            raise RuntimeError(f"{node.name}.backward returned a {type(g).__name__} for input {k} under create_graph; "
                               "it must return Tensors there (write the rule with operators on what it is given)")
    return out


def _kept_on_tape(node, make):
    """Swap what `node` kept of its inputs and outputs for those Tensors; returns the originals."""
    on_tape = {edge.id: edge.tensor if type(edge) is LeafEdge else (edge.node, edge.index)
               for edge in node.parents if edge is not None}
    for k, i in enumerate(node.out_ids if type(node.out_ids) is tuple else (node.out_ids,)):
        on_tape[i] = (node, k)

    def swap(value):
        data = value._data if isinstance(value, TensorBase) else value
        spot = on_tape.get(id(data)) if backend.is_array(data) else None
        if spot is None:
            return value
        if type(spot) is tuple:
            return make(data, *spot)
        return spot if spot._data is data else value  # a leaf, unless its array was replaced since

    originals = {}
    for name, value in list(node.__dict__.items()):
        new = tuple([swap(v) for v in value]) if type(value) is tuple else swap(value)
        if new is not value:
            originals[name], node.__dict__[name] = value, new
    return originals


def _node_hooks(node, grads, make, retain):
    """A node's output hooks (register_hook on a non-leaf), and the gradients retain_grad keeps."""
    for index, (hooks, retained) in node.hooks.items():
        if grads[index] is None:
            continue
        grads[index] = _run_hooks(hooks, _value(grads[index]), make)
        tensor = retained() if retained is not None and retain else None
        if tensor is not None:
            into_grad(tensor, grads[index], False)


def _run_hooks(hooks, g, make):
    """hook(gradient) for each hook, in order; a returned Tensor replaces the gradient."""
    on_tape = isinstance(g, TensorBase)
    for hook in hooks:
        result = hook(g if on_tape else make(g, None, 0))
        if result is not None:
            g = result if on_tape or not isinstance(result, TensorBase) else result._data
    return g
