"""The tape: Function (a primitive and, once applied, a node of the graph), the modes, and the one walk.

A Function instance is both the op's context (what forward kept for backward) and its node.
It keeps edges to its inputs (`parents`), never its outputs, so the graph holds no cycles.
Each primitive writes its derivative once, in `backward`, with operators, array methods and
other primitives (`Op.call`): the ordinary walk runs it on raw arrays; under create_graph the
walk runs the same rule on Tensors, so every gradient is itself on the tape.

`walk` is Kahn's algorithm (dependency counts, no recursion): a node runs once every consumer
has sent its gradient; gradients are summed in one place (`accumulate`) and fitted to their input's
shape in one place (`fit`); what a node kept is freed as soon as its rule has run.

Grad mode, anomaly mode and the observer (the one seam through which capture records a time
step) are per thread, as in PyTorch.
"""
import contextlib
import functools
import inspect
import os
import threading
import traceback
import weakref

from . import backend


class _Modes(threading.local):
    grad = True       # record ops on the tape
    anomaly = False   # detect_anomaly: check every result for NaN and inf
    observer = None   # an object told about every op, host read and in-place write (capture's recorder)
    watched = False   # anomaly or observer: the one flag the fast path reads


modes = _Modes()


def is_grad_enabled():
    """Whether new ops are recorded on the tape (in this thread)."""
    return modes.grad


def _set(name, value):
    """Set a mode of this thread; returns the previous value."""
    previous = getattr(modes, name)
    setattr(modes, name, value)
    modes.watched = modes.anomaly or modes.observer is not None
    return previous


class _Mode:
    """A context manager and decorator that sets one mode for its block (this thread only)."""
    name, value = "grad", True

    def __enter__(self):
        self.__dict__.setdefault("_previous", []).append(_set(self.name, self.value))
        return self

    def __exit__(self, *exc):
        _set(self.name, self._previous.pop())

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self).__new__(type(self)).__init_from(self):  # a fresh context per call: thread-safe
                return fn(*args, **kwargs)
        return wrapper

    def __init_from(self, other):
        self.name, self.value = other.name, other.value
        return self


class no_grad(_Mode):
    """Context manager / decorator: ops inside record nothing and produce no grad_fn."""
    value = False


class enable_grad(_Mode):
    """Context manager / decorator: turn recording back on inside a no_grad block."""
    value = True


class inference_mode(_Mode):
    """PyTorch's inference_mode(mode=True): here the same as no_grad() (there are no inference tensors)."""
    def __init__(self, mode=True):
        self.value = not mode


class set_grad_enabled(_Mode):
    """set_grad_enabled(mode): switch recording on or off now; used with `with`, the old mode comes back at exit."""
    def __init__(self, mode):
        self.value, self._previous = bool(mode), [_set("grad", bool(mode))]

    def __enter__(self):
        return self


class detect_anomaly(_Mode):
    """Context manager / decorator: raise as soon as an op's forward or backward makes NaN or inf.

    The error names the op, the file and line of user code that created it, and the input
    shapes. Slow (it checks every array and records where every op was made): for debugging.
    """
    name, value = "anomaly", True


@contextlib.contextmanager
def observed(observer):
    """Tell `observer` about every op applied in this thread inside the block: observer.op(ctx,
    args, kwargs, result) after each forward, and observer.refuse(reason) for what cannot be
    replayed (a host read, an in-place write). The one seam through which capture records a step."""
    previous = _set("observer", observer)
    try:
        yield observer
    finally:
        _set("observer", previous)


def refuse(reason):
    """Tell the observer, if any, that the code running now cannot be recorded (Tensor.numpy, in-place ops)."""
    if modes.observer is not None:
        modes.observer.refuse(reason)


# ---- anomaly: where an op was made, and finite results -----------------------------------

_library = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_skipped = (_library, os.path.abspath(contextlib.__file__))


def _user_site():
    """'file:line' of the innermost stack frame outside tinygrad_seq (and its context managers)."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_skipped):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def _check_finite(node, values, stage):
    for k, v in enumerate(values):
        a = v._data if isinstance(v, TensorBase) else v
        if a is None or type(a) is ProductSum:
            continue
        a = a if backend.is_array(a) else backend.as_array(a)
        if backend.is_floating(a.dtype) and not bool(backend.array_namespace(a).isfinite(a).all()):
            raise FloatingPointError(f"detect_anomaly: {node.name} {stage} produced NaN or inf (output {k}); the op "
                                     f"was created at {node.site}; input shapes {node.input_shapes}")


# ---- the graph -----------------------------------------------------------------------------

class TensorBase:
    """What the tape knows of a tensor: its array, gradient and the node that made it.

    Tensor (tensor.py, built on the primitives) is the one subclass. The engine makes new
    tensors with `t._make(array, node, index)` of a tensor it was given, so this module
    needs no import of the Tensor class.
    """
    __slots__ = ("_data", "grad", "_requires_grad", "_node", "_index", "_hooks", "__weakref__")


class Edge:
    """Where the gradient of an op's input goes: output `index` of `node`. `id` names the array
    that flowed along it, so a rule that kept it can get it back on the tape (create_graph)."""
    __slots__ = ("node", "index", "shape", "dtype", "id")

    def __init__(self, node, index, data):
        self.node, self.index, self.shape, self.dtype, self.id = node, index, data.shape, data.dtype, id(data)


class LeafEdge:
    """Where the gradient of an op's input goes when that input is a leaf: into `tensor.grad`."""
    __slots__ = ("tensor", "shape", "dtype", "id")

    def __init__(self, tensor, data):
        self.tensor, self.shape, self.dtype, self.id = tensor, data.shape, data.dtype, id(data)


class _NeedsInputGrad:
    """`ctx.needs_input_grad`: one bool per input, does it want a gradient? Read from `parents`,
    unless the node holds its own value (a non-data descriptor: the captured loop sets it once)."""

    def __get__(self, ctx, owner=None):
        return self if ctx is None else tuple([p is not None for p in ctx.parents])


class Function:
    """A differentiable primitive: subclass it and write `forward` and `backward`, in one of two styles.

    tinygrad style (plain methods; what ops.py uses): `ctx` is the instance. forward(ctx,
    *arrays, **kwargs) gets raw backend arrays (other arguments as they are) and returns an
    array or a tuple of arrays, keeping on `ctx` what backward needs. backward(ctx, *grads)
    gets one gradient per output (None for outputs without one) and returns one per input.
    The ordinary backward runs it on arrays. Under create_graph the same rule runs on Tensors:
    the gradients are Tensors, and every array kept on ctx that is one of the op's inputs or
    outputs is that Tensor on the tape (other kept arrays are constants). So a rule written
    with operators, array methods (reshape, sum, T, astype, indexing) and other primitives
    (`Op.call`) is differentiable again; one that calls NumPy functions works on arrays only.

    PyTorch style (both @staticmethod): forward(ctx, *args) gets Tensors and returns Tensors,
    saving them with `ctx.save_for_backward(*tensors)`; backward(ctx, *grads) gets Tensors and
    returns a Tensor or None per forward argument, written with Tensor ops (recorded under
    create_graph). The style is read from whether `forward` is a staticmethod.

    Either way `ctx.needs_input_grad[i]` tells whether input i wants a gradient. Call the op
    with `MyFunction.apply(*args, **kwargs)`.
    """
    __slots__ = ("parents", "array_type", "n_outputs", "out_ids", "hooks", "released", "epoch", "__dict__")

    def __init_subclass__(cls, _node=False, **kwargs):
        super().__init_subclass__(**kwargs)
        if _node:
            return
        static = [isinstance(inspect.getattr_static(cls, m), staticmethod) for m in ("forward", "backward")]
        if static[0] != static[1]:
            raise TypeError(f"{cls.__name__}: forward and backward must both be @staticmethod (PyTorch style: "
                            "Tensors in and out, ctx passed first) or both plain methods (tinygrad style: arrays "
                            "in and out, ctx is the instance)")
        if static[0]:
            cls.apply = classmethod(_apply_torch_style)
            cls._Node = type(cls.__name__, (_TorchStyleNode, cls), {"_function": cls}, _node=True)

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"call a Function through its class: {type(self).__name__}.apply(*inputs)")

    needs_input_grad = _NeedsInputGrad()
    forward_on_arrays = True  # False for PyTorch-style Functions, whose forward takes Tensors

    def save_for_backward(self, *values):
        """Keep values for backward (arrays in the tinygrad style, Tensors in PyTorch's): ctx.saved_tensors."""
        self.saved = values

    @property
    def saved_tensors(self):
        if "saved" not in self.__dict__:
            raise RuntimeError(f"{self.name}: no saved tensors (save_for_backward was not called, or the graph was "
                               "freed by backward(); pass retain_graph=True to keep it)")
        return self.saved

    saved_arrays = saved_tensors

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
        """This primitive inside a derivative rule: recorded on the tape when an argument is a Tensor
        (create_graph), else its forward run on the arrays directly."""
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
                    first = a
                elif type(data) is not type(first._data) or type(data) is not backend.ndarray:
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
        m = modes
        record = record and m.grad
        ctx.parents = parents if record else (None,) * len(parents)
        try:
            if m.anomaly:
                with backend.ignore_float_errors():
                    out = ctx.forward(*arrays, **kwargs)
            else:
                out = ctx.forward(*arrays, **kwargs)
        except (ValueError, TypeError, IndexError) as e:
            raise _op_error(cls.__name__.lower(), e, args, kwargs) from None
        node = ctx if record else None
        make, array_type = first._make, type(first._data)
        if type(out) is not tuple:
            if type(out) is not array_type and not backend.is_array(out):  # NumPy scalars from 0-d results
                out = _as_output(ctx, out, first)
            result = make(out, node, 0)
            outs = (out,)
        else:
            outs = tuple(o if type(o) is array_type or backend.is_array(o) else _as_output(ctx, o, first) for o in out)
            result = tuple([make(o, node, i) for i, o in enumerate(outs)])
        if record:
            ctx.array_type, ctx.n_outputs, ctx.hooks, ctx.released, ctx.epoch = array_type, len(outs), None, False, _epoch
            ctx.out_ids = tuple([id(o) for o in outs])
        if m.watched:
            _watch(ctx, args, kwargs, arrays, outs, result)
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


def _watch(ctx, args, kwargs, arrays, outs, result):
    """apply's slow path: anomaly checks and the observer."""
    if modes.anomaly:
        ctx.site, ctx.input_shapes = _user_site(), [tuple(a.shape) for a in arrays if backend.is_array(a)]
        _check_finite(ctx, outs, "forward")
    if modes.observer is not None:
        modes.observer.op(ctx, args, kwargs, result)


def _as_output(ctx, value, like):
    """A forward result that is not an array: a NumPy scalar becomes a 0-d array (also where ctx kept it, so
    that the rule sees the output itself); anything else is a mistake."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") and not isinstance(value, TensorBase):
        array = backend.as_array(value, backend.device_of(like._data))
        for name, kept in ctx.__dict__.items():
            if kept is value:
                ctx.__dict__[name] = array
        return array
    raise TypeError(f"{ctx.name}.forward returned a {type(value).__name__}; a plain-method forward works on "
                    "arrays and must return arrays (write forward and backward as @staticmethod for the "
                    "PyTorch style, Tensors in and out)")


def _check_devices(cls, args):
    """Raise if the Tensor arguments of an op live on different devices."""
    devices = list(dict.fromkeys(backend.device_of(a._data) for a in args if isinstance(a, TensorBase)))
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
    described = ", ".join(f"{tuple(a.shape)} {a.dtype}" if isinstance(a, TensorBase) else repr(a) for a in args)
    options = "".join(f", {k}={v!r}" for k, v in kwargs.items() if k != "index") if kwargs else ""
    kind = OpIndexError if isinstance(error, IndexError) else type(error)
    return kind(f"{op}: {message} (inputs: {described}{options})")


class _TorchStyleNode:
    """The node (and ctx) of a PyTorch-style Function: runs the user's Tensor backward for the walk."""
    __slots__ = ()
    forward_on_arrays = False

    def save_for_backward(self, *tensors):
        for t in tensors:
            if t is not None and not isinstance(t, TensorBase):
                raise TypeError(f"{self.name}: save_for_backward takes Tensors (or None), got {type(t).__name__}; "
                                "keep other values as attributes of ctx")
        self.saved = tensors

    def mark_non_differentiable(self, *tensors):
        """Outputs listed here get no gradient (e.g. indices returned beside values)."""
        self._non_differentiable = tuple(id(t) for t in tensors)

    def backward(self, *grads):
        """The user's backward on Tensors: given arrays (the ordinary walk) it runs without recording and
        returns arrays; given Tensors (create_graph) it is recorded."""
        arrays = not any(isinstance(g, TensorBase) for g in grads)
        grads = [g if g is None or not arrays else self._make(g, None, 0) for g in grads]
        grads = [self._make(backend.namespace(device).zeros(shape, dtype), None, 0) if g is None else g
                 for g, (shape, dtype, device) in zip(grads, self._outputs)]  # zeros where none came, as PyTorch
        with (no_grad() if arrays else enable_grad()):
            result = self._function.backward(self, *grads)
        result = result if type(result) is tuple else (result,)
        if len(result) != len(self.parents):
            raise RuntimeError(f"{self.name}.backward returned {len(result)} gradients, expected {len(self.parents)} "
                               "(one per forward argument, None for those without a gradient)")
        out = []
        for k, (g, need, is_tensor) in enumerate(zip(result, self.needs_input_grad, self._tensor_inputs)):
            if g is not None and not is_tensor:
                raise RuntimeError(f"{self.name}.backward returned a gradient for argument {k}, which is not a Tensor; "
                                   "return None there")
            if g is not None and not isinstance(g, TensorBase):
                raise TypeError(f"{self.name}.backward returned a {type(g).__name__} for argument {k}; return a Tensor "
                                "(or None)")
            out.append((g._data if arrays else g) if need and g is not None else None)
        return tuple(out)


def _apply_torch_style(cls, *args, **kwargs):
    """Function.apply for PyTorch-style Functions: forward runs on Tensors without recording."""
    ctx = cls._Node.__new__(cls._Node)
    parents, record, first = [], False, None
    for a in args:
        if isinstance(a, TensorBase):
            if first is None:
                first = a
            elif backend.device_of(a._data) != backend.device_of(first._data):
                _check_devices(cls, args)
            if a._requires_grad:
                record = True
                parents.append(Edge(a._node, a._index, a._data) if a._node is not None else LeafEdge(a, a._data))
                continue
        parents.append(None)
    record = record and modes.grad
    ctx.parents = parents if record else [None] * len(parents)
    ctx._tensor_inputs = tuple(isinstance(a, TensorBase) for a in args)
    ctx._non_differentiable = ()
    with no_grad():
        out = cls.forward(ctx, *args, **kwargs)
    outs = (out,) if isinstance(out, TensorBase) else out
    if not isinstance(outs, tuple) or not outs or not all(isinstance(o, TensorBase) for o in outs):
        raise TypeError(f"{cls.__name__}.forward (a @staticmethod, PyTorch style) must return a Tensor or a "
                        f"tuple of Tensors, got {type(out).__name__}")
    if not record:
        return out
    ctx.array_type, ctx.hooks, ctx.released, ctx.n_outputs, ctx.epoch = type(first._data), None, False, len(outs), _epoch
    ctx.out_ids = tuple(id(o._data) for o in outs)
    ctx._outputs, ctx._make = [(o.shape, o.dtype, backend.device_of(o._data)) for o in outs], first._make
    results = tuple(first._make(o._data, None if id(o) in ctx._non_differentiable or not backend.is_floating(o.dtype)
                                else ctx, k) for k, o in enumerate(outs))
    return results[0] if isinstance(out, TensorBase) else results


# ---- in-place writes: PyTorch's version counter --------------------------------------------

_epoch = 0      # in-place writes so far; each node records the count it was made at
_modified = {}  # id(buffer) -> (epoch of its last in-place write, weakref that drops the entry)


def mark_modified(array):
    """Record an in-place write into `array`'s memory (Tensor.add_ and friends call this).

    Nodes made before the write that kept any view of that memory refuse to run backward.
    The cost lands on in-place ops and on backward after one, never on Function.apply: a node
    only stores the write count it was made at.
    """
    global _epoch
    while backend.is_array(array.base):
        array = array.base
    _epoch += 1
    key = id(array)
    entry = _modified.get(key)
    _modified[key] = (_epoch, entry[1] if entry else weakref.ref(array, lambda _, k=key: _modified.pop(k, None)))


def _check_kept(node):
    """Raise if an array `node` kept was written in place after the node was made."""
    for a in node.kept_arrays():
        while backend.is_array(a.base):
            a = a.base
        entry = _modified.get(id(a))
        if entry is not None and entry[0] > node.epoch:
            raise RuntimeError(f"backward: one of the variables needed for gradient computation has been modified "
                               f"by an inplace operation: {node.name} saved an array that was written in place "
                               "(add_, mul_, copy_, ...) after the op ran, so its gradient would be wrong. Use the "
                               "out-of-place op (x = x * 2), or .clone() the tensor before changing it")


# ---- gradients: lazy weight products, summing, fitting -----------------------------------

class ProductSum:
    """A gradient kept unevaluated: sum_k lefts[k].T @ rights[k] (a matmul's weight gradient).

    When one weight multiplies the hidden state at every time step, T of these reach it; the
    walk gathers them and evaluates them as ONE matmul over the stacked rows, as hand-written
    BPTT computes dW_hh, instead of T thin matmuls and T full-size additions.
    """
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
    return g.evaluate() if type(g) is ProductSum else g


def accumulate(current, g, key, owned):
    """current + g, for a second or later gradient reaching the same place (named by `key`).

    The one place gradients are summed. It never writes into an array a rule returned: the
    first gradient is borrowed, the second allocates a buffer that we own (its key goes into
    `owned`), later ones add into that buffer in place. Tensors (create_graph) are added out
    of place. Lazy matmul products are gathered, not evaluated.
    """
    if current is None:
        return g
    if type(current) is ProductSum and type(g) is ProductSum:
        current.lefts += g.lefts
        current.rights += g.rights
        return current
    if type(current) is ProductSum:
        current = current.evaluate()
        owned.add(key)
    g = _value(g)
    if isinstance(current, TensorBase):
        return current + g
    if key in owned:
        current += g
        return current
    owned.add(key)
    out = current + g
    return out if type(out) is type(current) else backend.as_array(out, backend.device_of(current))  # 0-d stays


def fit(g, shape, dtype, array_type, node, i):
    """A rule's gradient for input i made to fit the input: broadcast axes summed (the one place this
    happens), the dtype cast back, the device checked. A lazy product only learns its dtype."""
    if type(g) is ProductSum:
        g.dtype = dtype
        return g
    data = g._data if isinstance(g, TensorBase) else g
    if type(data) is not array_type:
        if array_type is backend.ndarray and not backend.is_array(data) and not isinstance(g, TensorBase):
            g = data = backend.to_host(data)  # a NumPy scalar from a full reduction
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
    """The nodes whose rule must run to reach the targets: producers are decided before consumers."""
    left, ready, order = dict(deps), [n for n, d in deps.items() if d == 0], []
    while ready:  # Kahn's order, consumers first
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

    targets=None: every leaf reached gets its gradient; else only the tensors in `targets`
    (leaves or op outputs), and only the nodes that lead to them run. retain: also fill .grad of
    tensors that called retain_grad(). Returns (gradients, leaves, owned): gradients by key
    (id(leaf), or (node, index) for an op output among the targets), after the leaves' hooks;
    the leaves reached by id; the keys whose buffers the walk allocated (see accumulate).
    """
    make = roots[0]._make
    leaf_targets = output_targets = needed = None
    if targets is not None:
        leaf_targets = {id(t) for t in targets if t._node is None}
        output_targets = {(t._node, t._index) for t in targets if t._node is not None}
    pending, results, leaves, owned = {}, {}, {}, set()
    for root, g in zip(roots, grads):
        if root._node is None:
            leaves[id(root)] = root
            results[id(root)] = accumulate(results.get(id(root)), g, id(root), owned)
        else:
            slots = pending.setdefault(root._node, [None] * root._node.n_outputs)
            slots[root._index] = accumulate(slots[root._index], g, (root._node, root._index), owned)
    deps = _count_consumers(list(pending))
    if targets is not None:
        needed = _needed(deps, leaf_targets, output_targets)
    ready = [node for node in pending if deps[node] == 0]
    with enable_grad() if create_graph else contextlib.nullcontext():
        while ready:
            node = ready.pop()
            grads_in = pending.pop(node, None)
            input_grads = None
            if grads_in is not None:
                if node.hooks:
                    _node_hooks(node, grads_in, make, retain)
                if output_targets:
                    for index, g in enumerate(grads_in):
                        if (node, index) in output_targets and g is not None:
                            results[(node, index)] = _value(g)
                if needed is None or node in needed:
                    input_grads = _run(node, grads_in, create_graph)
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
                        results[k] = accumulate(results.get(k), g, k, owned)
                    continue
                target = edge.node
                if g is not None and (needed is None or target in needed or (target, edge.index) in output_targets):
                    if type(g) is not array_type or g.shape != edge.shape or g.dtype != edge.dtype:
                        g = fit(g, edge.shape, edge.dtype, array_type, node, i)
                    slots = pending.get(target)
                    if slots is None:
                        slots = pending[target] = [None] * target.n_outputs
                    slots[edge.index] = accumulate(slots[edge.index], g, (target, edge.index), owned)
                left = deps[target] - 1
                deps[target] = left
                if left == 0:
                    ready.append(target)
        for k, leaf in leaves.items():
            if leaf._hooks and k in results:
                results[k] = _run_hooks(leaf._hooks, _value(results[k]), make)
                owned.discard(k)
    return results, leaves, owned


def _run(node, grads, create_graph):
    """One node's rule: the in-place and freed-graph checks, then backward on arrays or on Tensors."""
    if node.released:
        raise RuntimeError(f"backward: the graph was already freed by an earlier backward() (reached {node.name} "
                           "again). In a loop over batches that carries a hidden state (truncated BPTT), detach the "
                           "carried state before the next batch: h = h.detach(), or tuple(s.detach() for s in "
                           "state) for an LSTM. To backpropagate through the same graph twice on purpose, pass "
                           "retain_graph=True to the first backward()")
    if _modified and node.epoch != _epoch:
        _check_kept(node)
    if all(g is None for g in grads):
        return None
    if create_graph:
        out = _rule_on_tape(node, grads)
    else:
        if len(grads) > 1 or type(grads[0]) is ProductSum:
            grads = [_value(g) for g in grads]
        if modes.anomaly:
            with backend.ignore_float_errors():
                out = node.backward(*grads)
        else:
            out = node.backward(*grads)
    if type(out) is not tuple:
        out = (out,)
    if len(out) != len(node.parents):
        raise RuntimeError(f"{node.name}.backward returned {len(out)} gradients for {len(node.parents)} inputs")
    if modes.anomaly and "site" in node.__dict__:
        _check_finite(node, out, "backward")
    return out


def _rule_on_tape(node, grads):
    """The node's rule on Tensors, recorded: what it kept of its inputs and outputs is those Tensors."""
    make = next(g for g in grads if g is not None)._make
    grads = [None if g is None else make(_value(g), None, 0) if not isinstance(g, TensorBase) else g for g in grads]
    originals = _kept_on_tape(node, make)
    try:
        out = node.backward(*grads)
    except TypeError as e:
        raise RuntimeError(f"{node.name}.backward could not run on Tensors ({e}). Under create_graph a rule runs on "
                           "Tensors: write it with operators, array methods and other primitives (Op.call), or as "
                           "a PyTorch-style Function, to differentiate it twice") from None
    except FloatingPointError as e:  # an op of the rule, under detect_anomaly
        if "site" not in node.__dict__:
            raise
        raise FloatingPointError(f"detect_anomaly: {node.name} backward produced NaN or inf; the op was created at "
                                 f"{node.site}; input shapes {node.input_shapes} ({e})") from None
    finally:
        node.__dict__.update(originals)
    for k, g in enumerate(out if type(out) is tuple else (out,)):
        if g is not None and not isinstance(g, TensorBase):
            raise RuntimeError(f"{node.name}.backward returned a {type(g).__name__} for input {k} under create_graph; "
                               "it must return Tensors there (write the rule with operators on what it is given)")
    return out


def _kept_on_tape(node, make):
    """Swap the arrays `node` kept that are its inputs or outputs for those Tensors on the tape
    (create_graph); returns the attributes it replaced, to put back."""
    on_tape = {}
    for edge in node.parents:
        if type(edge) is Edge:
            on_tape[edge.id] = (edge.node, edge.index)
        elif type(edge) is LeafEdge:
            on_tape[edge.id] = edge.tensor
    for k, i in enumerate(node.out_ids):
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
    """A node's output hooks (register_hook on a non-leaf), and the gradients kept by retain_grad."""
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


def into_grad(tensor, g, own):
    """Accumulate gradient g into tensor.grad, the one place this happens: arrays in place (the first
    one copied unless `own`: the caller allocated it), Tensors (create_graph) out of place."""
    if type(g) is ProductSum:
        g, own = g.evaluate(), True
    if isinstance(g, TensorBase):
        tensor.grad = g if tensor.grad is None else tensor.grad + g
    elif tensor.grad is None:
        tensor.grad = tensor._make(g if own else g.copy(), None, 0)
    else:
        tensor.grad._data += g
