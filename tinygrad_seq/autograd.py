"""The tape: Function nodes, grad-mode switches and the backward walk.

A Function instance is both the op's context (what forward saved for backward) and the
node of the graph. It keeps its inputs' edges (`parents`), never its outputs, so the graph
holds no reference cycles. backward() walks the nodes in topological order with Kahn's
algorithm (dependency counts, no recursion), sums each node's incoming gradients, and
frees what a node saved as soon as its backward has run.
"""
import contextlib
import functools
import gc
import inspect
import os
import traceback
import weakref

from . import backend

Tensor = None  # set by _tensor.py (_tensor.py imports this module first)

_grad_enabled = True
_detect_anomaly = False
_epoch = 0      # in-place writes so far; each node records the count it was made at
_modified = {}  # id(buffer) -> (epoch of its last in-place write, weakref that drops the entry)
_recorder = None  # a list while capture.py records a time step: every op, every new Tensor, host reads
HOST_READ = "host read"  # what Tensor.numpy() logs there: the step reads a value back to the host
IN_PLACE = "in-place write"  # what an in-place Tensor op logs there


def is_grad_enabled():
    """Whether new ops are recorded on the tape."""
    return _grad_enabled


class _GradMode:
    """Base of no_grad / enable_grad: a context manager and a decorator (reusable and reentrant)."""
    enabled = True

    def __enter__(self):
        global _grad_enabled
        self.__dict__.setdefault("_previous", []).append(_grad_enabled)
        _grad_enabled = self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous.pop()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Context manager / decorator: ops inside record nothing and produce no grad_fn."""
    enabled = False


class enable_grad(_GradMode):
    """Context manager / decorator: turn recording back on inside a no_grad block."""
    enabled = True


class inference_mode(_GradMode):
    """PyTorch's inference_mode(mode=True): here the same as no_grad() (there are no inference tensors)."""
    def __init__(self, mode=True):
        self.enabled = not mode


class set_grad_enabled:
    """set_grad_enabled(mode): switch recording on or off now; used with `with`, the old mode comes back at exit."""
    def __init__(self, mode):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous


class detect_anomaly(_GradMode):
    """Context manager / decorator: raise as soon as an op's forward or backward makes NaN or inf.

    The error names the op, the file and line of user code that created it, and the input
    shapes. Slow (it checks every array and records where every op was made): for debugging.
    """
    def __enter__(self):
        global _detect_anomaly
        self.__dict__.setdefault("_previous", []).append(_detect_anomaly)
        _detect_anomaly = True

    def __exit__(self, *exc):
        global _detect_anomaly
        _detect_anomaly = self._previous.pop()


_library_files = (os.path.dirname(os.path.abspath(__file__)), os.path.abspath(contextlib.__file__))


def _user_site():
    """'file:line' of the innermost stack frame outside tinygrad_seq (and its context managers)."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_library_files):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def _check_finite(node_name, site, arrays, shapes, stage):
    for k, a in enumerate(arrays):
        if a is None:
            continue
        a = a if backend.is_array(a) else backend.as_array(a)  # NumPy scalars from 0-d results
        if backend.is_floating(a.dtype) and not bool(backend.array_namespace(a).isfinite(a).all()):
            raise FloatingPointError(f"detect_anomaly: {node_name} {stage} produced NaN or inf "
                                     f"(output {k}); the op was created at {site}; input shapes {shapes}")


class Edge:
    """Where the gradient of an op's input goes: output `index` of the node that made it."""
    __slots__ = ("node", "index", "shape", "dtype")

    def __init__(self, node, index, shape, dtype):
        self.node, self.index, self.shape, self.dtype = node, index, shape, dtype


class LeafEdge:
    """Where the gradient of an op's input goes when that input is a leaf: into `tensor.grad`."""
    __slots__ = ("tensor", "shape", "dtype")

    def __init__(self, tensor, shape, dtype):
        self.tensor, self.shape, self.dtype = tensor, shape, dtype


class _NeedsInputGrad:
    """`ctx.needs_input_grad`: one bool per input, does it want a gradient? Worked out from
    `parents`, unless the node holds its own value: a non-data descriptor, so the captured
    loop sets it once per replayed op instead of each backward working it out again."""

    def __get__(self, ctx, owner=None):
        return self if ctx is None else tuple([p is not None for p in ctx.parents])


class Function:
    """A differentiable primitive: subclass it and write `forward` and `backward`, in one of two styles.

    tinygrad style (plain methods; what ops.py uses): `ctx` is the instance.
    forward(ctx, *arrays, **kwargs) gets raw backend arrays (and any non-Tensor
    arguments as they are) and returns an array or a tuple of arrays; it stores on `ctx`
    whatever backward needs (`ctx.save_for_backward(*arrays)` or plain attributes).
    backward(ctx, *grads) gets one gradient array per output (None for outputs that got
    no gradient) and returns one gradient per input (an array or None), in input order.

    PyTorch style (both @staticmethod): forward(ctx, *args) gets Tensors and returns
    Tensors, saving them with `ctx.save_for_backward(*tensors)`; backward(ctx, *grads)
    gets Tensors and returns a Tensor or None per forward argument, written with Tensor
    ops (recorded under create_graph, so no backward_graph is needed). The style is read
    from whether `forward` is a staticmethod.

    Either way `ctx.needs_input_grad[i]` tells whether input i wants a gradient. Call the
    op with `MyFunction.apply(*args, **kwargs)`.

    To be differentiable twice (backward(create_graph=True), grad(..., create_graph=True)), a
    tinygrad-style Function also writes backward_graph(ctx, *grads): the same rule on Tensors
    (None for outputs without a gradient), built from Tensor ops, returning Tensors. It gets the
    op's inputs and outputs back on the tape with `ctx.input_tensor(i, saved_array)` and
    `ctx.output_tensor(k, saved_array)`.
    """
    __slots__ = ("parents", "array_type", "n_outputs", "hooks", "released", "epoch", "__dict__")

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

    def save_for_backward(self, *arrays):
        self.saved_arrays = arrays

    def kept_arrays(self):
        """The arrays this node keeps for backward, which the in-place check looks at: what it
        holds as attributes (or in tuples of them)."""
        return _saved_arrays(self)

    def input_tensor(self, i, array):
        """Input i, whose data forward saw as `array`, as a Tensor on the tape (for backward_graph).

        A leaf that requires grad is that leaf; an op's output is that output again (so
        second derivatives flow back through it); an input without a gradient is a constant.
        Python scalars pass through unchanged.
        """
        edge = self.parents[i]
        if not backend.is_array(array) and (edge is not None or hasattr(array, "dtype")):
            array = backend.as_array(array)  # a NumPy scalar from a 0-d op result (on the host)
        if type(edge) is Edge:
            return Tensor._make(array, edge.node, edge.index)
        if type(edge) is LeafEdge:
            return edge.tensor
        return Tensor._make(array, None, 0) if backend.is_array(array) else array

    def output_tensor(self, k, array):
        """Output k (its data `array`) as a Tensor made by this node (for backward_graph)."""
        return Tensor._make(array if backend.is_array(array) else backend.as_array(array), self, k)

    @property
    def saved_tensors(self):
        """What save_for_backward stored (arrays, in this style)."""
        return self.saved_arrays

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}Backward>"

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        arrays, parents, array_type, record = [], [], None, False
        for a in args:
            if isinstance(a, Tensor):
                data = a._data
                if array_type is None:
                    array_type = type(data)
                elif type(data) is not array_type or array_type is not _host_array:
                    _check_devices(cls, args)
                arrays.append(data)
                if a._requires_grad:
                    record = True
                    node = a._node
                    parents.append(Edge(node, a._index, data.shape, data.dtype) if node is not None
                                   else LeafEdge(a, data.shape, data.dtype))
                else:
                    parents.append(None)
            else:
                arrays.append(a)
                parents.append(None)
        record = record and _grad_enabled
        ctx.parents = parents if record else (None,) * len(parents)
        try:
            if _detect_anomaly:
                with backend.ignore_float_errors():
                    out = ctx.forward(*arrays, **kwargs)
            else:
                out = ctx.forward(*arrays, **kwargs)
        except (ValueError, TypeError, IndexError) as e:
            raise _op_error(cls.__name__.lower(), e, args, kwargs) from None
        if _detect_anomaly:
            ctx.site = _user_site()
            ctx.input_shapes = [tuple(a.shape) for a in arrays if backend.is_array(a)]
            _check_finite(cls.__name__, ctx.site, out if type(out) is tuple else (out,), ctx.input_shapes, "forward")
        if type(out) is not tuple:
            if type(out) is not array_type and not backend.is_array(out):  # NumPy scalars from 0-d results
                out = _as_output(cls, out, args)
            if record:
                ctx.array_type, ctx.hooks, ctx.released, ctx.n_outputs, ctx.epoch = array_type, None, False, 1, _epoch
            result = Tensor._make(out, ctx if record else None, 0)
        else:
            outs = [o if type(o) is array_type or backend.is_array(o) else _as_output(cls, o, args) for o in out]
            if record:
                ctx.array_type, ctx.hooks, ctx.released, ctx.n_outputs, ctx.epoch = \
                    array_type, None, False, len(outs), _epoch
            result = tuple(Tensor._make(o, ctx if record else None, i) for i, o in enumerate(outs))
        if _recorder is not None:
            ctx.hooks = None
            _recorder.append((ctx, args, kwargs, result))
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


_host_array = backend.ndarray


def _as_output(cls, value, args):
    """A forward result that is not an array: a NumPy scalar becomes a 0-d array; anything else is a mistake."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") and not isinstance(value, Tensor):
        return backend.as_array(value, _device(args))
    raise TypeError(f"{cls.__name__}.forward returned a {type(value).__name__}; a plain-method forward works on "
                    "arrays and must return arrays (write forward and backward as @staticmethod for the "
                    "PyTorch style, Tensors in and out)")


class _TorchStyleNode:
    """The tape node (and ctx) of a PyTorch-style Function: runs its Tensor backward for either walk."""
    __slots__ = ()

    def save_for_backward(self, *tensors):
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{self.name}: save_for_backward takes Tensors (or None), got {type(t).__name__}; "
                                "keep other values as attributes of ctx")
        self._saved = tensors

    @property
    def saved_tensors(self):
        """The saved Tensors; under create_graph a saved output is this node's output again, on the tape."""
        if "_saved" not in self.__dict__:
            raise RuntimeError(f"{self.name}: no saved tensors (save_for_backward was not called, or the graph "
                               "was freed by backward(); pass retain_graph=True to keep it)")
        if not self.__dict__.get("_on_tape"):
            return self._saved
        outputs = self._saved_outputs
        return tuple(self.output_tensor(outputs[i], t._data) if i in outputs else t for i, t in enumerate(self._saved))

    def mark_non_differentiable(self, *tensors):
        """Outputs listed here get no gradient (e.g. indices returned beside values)."""
        self._non_differentiable = tuple(id(t) for t in tensors)

    def backward(self, *grads):
        """The ordinary walk: gradient arrays in and out, the user's backward run without recording."""
        grads = [None if g is None else Tensor._make(g, None, 0) for g in grads]
        with no_grad():
            return tuple(None if g is None else g._data for g in self._run_backward(grads))

    def backward_graph(self, *grads):
        """The create_graph walk: the user's backward recorded on the tape, so it is differentiated again."""
        self._on_tape = True
        try:
            with enable_grad():
                return self._run_backward(list(grads))
        finally:
            self._on_tape = False

    def _run_backward(self, grads):
        """Zeros for outputs that got no gradient (as PyTorch), the user's backward, its result checked."""
        fn, name = self._function, self.name
        grads = [g if g is not None else Tensor._make(backend.namespace(device).zeros(shape, dtype), None, 0)
                 for g, (shape, dtype, device) in zip(grads, self._outputs)]
        result = fn.backward(self, *grads)
        result = result if type(result) is tuple else (result,)
        if len(result) != len(self.parents):
            raise RuntimeError(f"{name}.backward returned {len(result)} gradients, expected {len(self.parents)} "
                               "(one per forward argument, None for those without a gradient)")
        out = []
        for k, (g, need, is_tensor) in enumerate(zip(result, self.needs_input_grad, self._tensor_inputs)):
            if g is not None and not is_tensor:
                raise RuntimeError(f"{name}.backward returned a gradient for argument {k}, which is not a Tensor; "
                                   "return None there")
            if g is not None and not isinstance(g, Tensor):
                raise TypeError(f"{name}.backward returned a {type(g).__name__} for argument {k}; return a Tensor "
                                "(or None)")
            out.append(g if need else None)
        return tuple(out)


def _apply_torch_style(cls, *args, **kwargs):
    """Function.apply for PyTorch-style Functions: forward runs on Tensors without recording."""
    ctx = cls._Node.__new__(cls._Node)
    parents, record, first = [], False, None
    for a in args:
        if isinstance(a, Tensor):
            if first is None:
                first = a
            elif a.device != first.device:
                _check_devices(cls, args)
            if a._requires_grad:
                record = True
                node = a._node
                parents.append(Edge(node, a._index, a.shape, a.dtype) if node is not None
                               else LeafEdge(a, a.shape, a.dtype))
                continue
        parents.append(None)
    record = record and _grad_enabled
    ctx.parents = parents if record else [None] * len(parents)
    ctx._tensor_inputs = tuple(isinstance(a, Tensor) for a in args)
    ctx._non_differentiable = ()
    with no_grad():
        out = cls.forward(ctx, *args, **kwargs)
    outs = (out,) if isinstance(out, Tensor) else out
    if not isinstance(outs, tuple) or not outs or not all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"{cls.__name__}.forward (a @staticmethod, PyTorch style) must return a Tensor or a "
                        f"tuple of Tensors, got {type(out).__name__}")
    if not record:
        return out
    ctx.array_type, ctx.hooks, ctx.released = type(first._data), None, False
    ctx.n_outputs, ctx.epoch = len(outs), _epoch
    ctx._outputs = [(o.shape, o.dtype, o.device) for o in outs]
    ctx._saved_outputs = {i: k for i, t in enumerate(ctx.__dict__.get("_saved", ())) for k, o in enumerate(outs)
                          if t is o}  # saved tensor i is output k: under create_graph it is re-attached to the node
    results = tuple(Tensor._make(o._data, None if id(o) in ctx._non_differentiable or not backend.is_floating(o.dtype)
                                 else ctx, k) for k, o in enumerate(outs))
    return results[0] if isinstance(out, Tensor) else results


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


def _reduce_to(grad, shape, dtype, array_type, node, i):
    """Sum a broadcast gradient back to its input's shape; the one place this happens."""
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


def _fit(grad, shape, dtype, array_type, node, i):
    """A backward rule's gradient for input i made to fit it (_reduce_to); a lazy weight gradient
    (ProductSum) only learns its dtype: it is evaluated once every product for the input has arrived."""
    if type(grad) is ProductSum:
        grad.dtype = dtype
        return grad
    return _reduce_to(grad, shape, dtype, array_type, node, i)


def _run_hooks(hooks, grad):
    for hook in hooks:
        result = hook(Tensor._make(grad, None, 0))
        if result is not None:
            grad = result._data if isinstance(result, Tensor) else result
    return grad


def mark_modified(array):
    """Record an in-place write into `array`'s memory (Tensor.add_ and friends call this).

    Nodes made before the write that saved any view of that memory refuse to run backward
    (PyTorch's version counter). Cost lands on in-place ops and on backward after one, never
    on Function.apply: a node only stores the write count it was made at.
    """
    global _epoch
    while backend.is_array(array.base):
        array = array.base
    _epoch += 1
    key = id(array)
    entry = _modified.get(key)
    _modified[key] = (_epoch, entry[1] if entry else weakref.ref(array, lambda _, k=key: _modified.pop(k, None)))


def _saved_arrays(node):
    for value in node.__dict__.values():
        for v in value if type(value) is tuple else (value,):
            v = v._data if isinstance(v, Tensor) else v
            if backend.is_array(v):
                yield v


def _check_saved(node):
    """Raise if an array `node` saved was written in place after the node was made."""
    made = getattr(node, "epoch", 0)
    for a in node.kept_arrays():
        while backend.is_array(a.base):
            a = a.base
        entry = _modified.get(id(a))
        if entry is not None and entry[0] > made:
            raise RuntimeError(f"backward: one of the variables needed for gradient computation has been modified "
                               f"by an inplace operation: {node.name} saved an array that was written in place "
                               "(add_, mul_, copy_, ...) after the op ran, so its gradient would be wrong. Use the "
                               "out-of-place op (x = x * 2), or .clone() the tensor before changing it")


@contextlib.contextmanager
def pause_gc():
    """Pause Python's cyclic garbage collector: the tape makes no reference cycles, and
    collections that walk a growing graph of thousands of nodes cost time for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ProductSum:
    """A gradient kept unevaluated: sum_k lefts[k].T @ rights[k] (a matmul's weight gradient).

    When one weight multiplies the hidden state at every time step, T of these reach it. The
    walk gathers them and evaluates them as ONE matmul over the stacked rows, as hand-written
    BPTT computes dW_hh, instead of T thin matmuls and T full-size additions.
    """
    __slots__ = ("lefts", "rights", "dtype")

    def __init__(self, left, right):
        self.lefts, self.rights, self.dtype = [left], [right], None

    def absorb(self, other):
        self.lefts += other.lefts
        self.rights += other.rights

    def evaluate(self):
        left, right = self.lefts, self.rights
        if len(left) == 1:
            out = left[0].T @ right[0]
        else:
            xp = backend.array_namespace(left[0])
            out = xp.concatenate(left).T @ xp.concatenate(right)
        return out if self.dtype is None or out.dtype == self.dtype else out.astype(self.dtype)


def _evaluated(grads):
    return [g.evaluate() if type(g) is ProductSum else g for g in grads]


def _plus(a, b):
    """a + b as a new array (NumPy turns the sum of two 0-d arrays into a scalar: keep an array)."""
    out = a + b
    return out if type(out) is type(a) else backend.as_array(out, backend.device_of(a))


def _accumulate(current, g, key, owned):
    """current + g, for a second or later gradient reaching the same place (named by `key`).

    The one place gradients are summed. It never writes into an array a backward step
    returned: the first gradient is borrowed, the second allocates a buffer that we own
    (its key goes into the set `owned`), later ones add into that buffer in place. Lazy
    matmul products (ProductSum) are gathered, not evaluated.
    """
    if type(current) is ProductSum:
        if type(g) is ProductSum:
            current.absorb(g)
            return current
        current = current.evaluate()
        owned.add(key)
    elif type(g) is ProductSum:
        g = g.evaluate()
    if key in owned:
        current += g
        return current
    owned.add(key)
    return _plus(current, g)


def backward(root, grad, retain_graph=False):
    """Backpropagate `grad` (an array shaped like root) through the tape into leaf .grad."""
    if root._node is None:
        leaves, sums, owned = {id(root): root}, {id(root): grad}, set()
    else:
        with pause_gc():
            leaves, sums, owned = _walk(root._node, root._index, grad, retain_graph)
    for k, leaf in leaves.items():
        g, own = sums[k], k in owned
        if type(g) is ProductSum:
            g, own = g.evaluate(), True
        if leaf._hooks:
            g, own = _run_hooks(leaf._hooks, g), False
        if leaf.grad is None:
            leaf.grad = Tensor._make(g if own else g.copy(), None, 0)
        else:
            leaf.grad._data += g


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


def _walk(start, index, grad, retain_graph):
    """Kahn's algorithm: a node runs once every consumer has sent it its gradient.

    pending[node] holds the summed gradient of each of the node's outputs, leaf_grads[id(leaf)]
    that of each leaf reached; `owned` names the sums whose buffers we allocated (see
    _accumulate). Returns the leaves reached, their gradients and `owned`, by id(leaf).
    """
    deps = _count_consumers([start])
    pending, owned, leaves, leaf_grads = {start: [None] * start.n_outputs}, set(), {}, {}
    pending[start][index] = grad
    ready = [start]
    while ready:
        node = ready.pop()
        grads = pending.pop(node)
        if type(grads[0]) is ProductSum or len(grads) > 1:
            grads = _evaluated(grads)
        if node.released:
            raise RuntimeError(f"backward: the graph was already freed by an earlier backward() (reached "
                               f"{node.name} again). In a loop over batches that carries a hidden state "
                               "(truncated BPTT), detach the carried state before the next batch: "
                               "h = h.detach(), or tuple(s.detach() for s in state) for an LSTM. To "
                               "backpropagate through the same graph twice on purpose, pass "
                               "retain_graph=True to the first backward()")
        if _modified and getattr(node, "epoch", 0) != _epoch:
            _check_saved(node)
        if node.hooks:
            _node_hooks(node, grads)
        parents = node.parents
        if any(g is not None for g in grads):
            if _detect_anomaly:
                with backend.ignore_float_errors():
                    input_grads = node.backward(*grads)
            else:
                input_grads = node.backward(*grads)
            if type(input_grads) is not tuple:
                input_grads = (input_grads,)
            if len(input_grads) != len(parents):
                raise RuntimeError(f"{node.name}.backward returned {len(input_grads)} gradients for "
                                   f"{len(parents)} inputs")
        else:
            input_grads = (None,) * len(parents)
        if _detect_anomaly and "site" in node.__dict__:
            _check_finite(node.name, node.site, input_grads, node.input_shapes, "backward")
        array_type = node.array_type
        if not retain_graph:
            node.__dict__.clear()
            node.released = True
        for i, edge in enumerate(parents):
            if edge is None:
                continue
            g = input_grads[i]
            if g is not None:
                if type(g) is not array_type or g.shape != edge.shape or g.dtype != edge.dtype:
                    g = _fit(g, edge.shape, edge.dtype, array_type, node, i)
                if type(edge) is LeafEdge:
                    k = id(edge.tensor)
                    current = leaf_grads.get(k)
                    leaves[k] = edge.tensor
                    leaf_grads[k] = g if current is None else _accumulate(current, g, k, owned)
                    continue
                slots = pending.get(edge.node)
                if slots is None:
                    slots = pending[edge.node] = [None] * edge.node.n_outputs
                current = slots[edge.index]
                slots[edge.index] = g if current is None else _accumulate(current, g, (edge.node, edge.index), owned)
            elif type(edge) is LeafEdge:
                continue
            target = edge.node
            left = deps[target] - 1
            deps[target] = left
            if left == 0:
                if target not in pending:  # no gradient reached it; walk on to keep counts right
                    pending[target] = [None] * target.n_outputs
                ready.append(target)
    return leaves, leaf_grads, owned


def _node_hooks(node, grads):
    """Run a node's output hooks and keep retained gradients (retain_grad)."""
    for index, (hooks, retained) in node.hooks.items():
        if grads[index] is not None:
            grads[index] = _run_hooks(hooks, grads[index])
            tensor = retained() if retained is not None else None
            if tensor is None:
                continue
            if tensor.grad is None:
                tensor.grad = Tensor._make(grads[index].copy(), None, 0)
            else:  # accumulate over backward calls, as leaves do (and PyTorch's retain_grad)
                tensor.grad._data += grads[index]
