"""The captured time loop: record two steps of a cell on the tape, replay the rest as one node.

Recording. The runner (nn/recurrent.py) runs steps 0 and 1 eagerly, on the tape, through
`Recorder.record`, which watches them through the engine's one seam (`function.observed`):
every op applied, with its arguments, and every host read or in-place write. Each step's log
becomes a `_Program`: slots (0 the step input, 1..S the state items, then the other values the
step reads and the ops' outputs, in order of first use) and ops wired to slots.

The guard. Replay is only right if every step runs the same program: the two recorded steps
must agree op for op (classes, wiring, options, Python numbers, shapes, dtypes); a tensor the
step reads that is not the step input, the state or an op output must be the same tensor at
both steps (a parameter), or, if not, hold the same values and not require grad (a constant
the step makes, like tg.zeros). The step must not read values back to the host (`.item()`, a
Python branch on a value), write in place, or register hooks; grad mode, `detect_anomaly` and
the switches (`capture=False`, `set_enabled`/`disabled()` per thread, `capturable = False` on a
cell) must allow it. Otherwise the runner goes on eagerly from step 2 (no step runs twice).
`counters` counts captured loops and each reason for falling back.

Replay. Steps 2..T-1 are one `Loop` node on the tape, whose inputs are their per-step inputs,
the outputs of steps 0 and 1, the state after step 1 and the outside tensors (parameters, and
the results of step 1's ops that read only outside values: those run once, on the tape). The
step's ops run on raw arrays through ONE executor: the step compiled into two straight-line
Python functions, forward and backward (`_source` documents their names; `Loop.run.source`
prints them), which call each op's own forward and derivative rule. So BPTT is the generic
reverse of the cell's step. A matmul's weight gradient stays lazy (function.ProductSum), so a
weight read at every step gets its gradient as one matmul over all steps.

Higher-order gradients. Under create_graph the Loop's rule applies the same recorded ops on
the tape from its inputs and differentiates them with the engine's walk.

Checkpointing (Chen et al. 2016; Gruslys et al. 2016). With `checkpoint=k` the forward keeps
only the carried state at every k-th step and no op contexts; backward recomputes each
segment's forward from its checkpoint, then runs the segment's backward: memory for O(T/k + k)
steps instead of T. `checkpoint="sqrt"` takes k = ceil(sqrt(T)).
"""
import collections
import contextlib
import inspect
import logging
import math
import os
import sys
import threading
import warnings

from . import threads
from .engine import backend, ops
from .engine.function import Function, ProductSum, TensorBase, accumulate, fit, modes, observed, walk
from .engine.tensor import Tensor

__all__ = ["counters", "disabled", "is_enabled", "set_enabled", "Loop", "check_checkpoint", "FallbackWarning"]

counters = collections.Counter()  # "captured", and "fallback: <reason>" for each reason seen
_log = logging.getLogger(__name__)


class _Switch(threading.local):
    enabled = True


_switch = _Switch()


def set_enabled(flag):
    """Switch capture on or off for every runner in this thread (each runner also takes capture=False)."""
    _switch.enabled = bool(flag)


def is_enabled():
    return _switch.enabled


@contextlib.contextmanager
def disabled():
    """Run the block with every recurrent loop eager (in this thread)."""
    previous = _switch.enabled
    _switch.enabled = False
    try:
        yield
    finally:
        _switch.enabled = previous


class Fallback(Exception):
    """The step cannot be replayed; the message says why and what to change."""


class FallbackWarning(UserWarning):
    """A loop the user's step keeps from being captured; Python shows it once per cause and call site."""


def check_checkpoint(checkpoint):
    """checkpoint as given (None, "sqrt" or a positive int), or a clear ValueError."""
    if checkpoint is None or checkpoint == "sqrt" or (type(checkpoint) is int and checkpoint >= 1):
        return checkpoint
    raise ValueError(f"checkpoint must be None, 'sqrt' or a positive int (steps per segment), got {checkpoint!r}")


def _items(state):
    """A state's tensors as a tuple: a Tensor is a state of one item."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _rebuild(like, items):
    return tuple(items) if isinstance(like, (tuple, list)) else items[0]


# ---- recording ---------------------------------------------------------------------------

def recorder(cell, capture, T, checkpoint):
    """A Recorder for a loop of T steps, or None when it runs eagerly (the reason is counted)."""
    reason = None
    if not capture or not _switch.enabled or getattr(cell, "capturable", True) is False:
        reason = "switched off"
    elif not modes.grad:
        reason = "grad mode is off"
    elif modes.observer is not None:  # a step being recorded, or detect_anomaly
        reason = modes.observer.reason
    elif T < 3:
        reason = "a sequence of fewer than three steps"
    if reason is None:
        return Recorder(checkpoint)
    _fell_back(reason, checkpoint)
    return None


def _fell_back(reason, checkpoint):
    if checkpoint is not None and reason != "switched off":
        reason += " (checkpointing needs a captured loop: activations are stored)"
    counters["fallback: " + reason] += 1
    _log.debug("eager time loop: %s", reason)


class Recorder:
    """Watches steps 0 and 1 of one loop (`record`), then runs the rest as one node (`replay`).

    It is the observer the engine tells about each op (`op`) and about what cannot be replayed
    (`refuse`), for the steps run inside `record`.
    """
    reason = "inside a step being recorded"  # what an observer started inside a step makes it refuse

    def __init__(self, checkpoint):
        self.checkpoint, self.steps, self.log, self.refused, self.made = checkpoint, [], None, None, set()

    def op(self, ctx, args, kwargs, result):
        self.log.append((ctx, args, kwargs, result))
        self.made.update(map(id, result if type(result) is tuple else (result,)))

    def refuse(self, reason):
        self.refused = self.refused or reason

    def read(self, tensor):
        if id(tensor) in self.made:
            self.refuse("the step reads the array of a tensor it computes, outside the ops (.array, .data, "
                        "Tensor(t)); compute with tensor ops (comparisons, tg.where) instead")

    def rule(self, node, grads):
        pass

    def record(self, step, x_t, state, constants):
        """step(x_t, state, *constants), eagerly on the tape, with every op it runs logged."""
        items = _items(state)
        if len({id(s) for s in items}) < len(items) or len(self.steps) == 0:  # distinct state tensors, none of
            items = tuple(ops.Reshape.apply(s, shape=s.shape) for s in items)  # them also read from outside
            state = _rebuild(state, items)
        self.log, self.refused = [], None
        self.made = {id(t) for t in (x_t,) + items}
        with observed(self):
            new = step(x_t, state, *constants)
        self.steps.append((self.log, self.refused, x_t, state, new))
        return new

    def replay(self, rest, state, outputs, valid, shortest):
        """Steps 2..T-1 (per-step inputs `rest`) as one Loop node: (all outputs (T, B, ...), final
        state); or None when the guard refuses (the reason is counted)."""
        try:
            run = _Run(*self.steps, valid, shortest, _segment(self.checkpoint, rest.shape[0]), type(rest.array))
        except Fallback as e:
            _fell_back(str(e), self.checkpoint)
            warnings.warn(f"recurrent loop runs eagerly (slower): {e}", FallbackWarning, stacklevel=_callers_level())
            return None
        counters["captured"] += 1
        results = Loop.apply(rest, *outputs, *_items(state), *run.outside_tensors, run=run)
        return results[0], _rebuild(state, results[1:])


def _callers_level():
    """warnings.warn's stacklevel, from the function that calls this, of the first frame outside the package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _segment(checkpoint, T):
    """Steps per checkpointed segment, or None to store every step's activations."""
    if checkpoint is None:
        return None
    return max(1, math.ceil(math.sqrt(T))) if checkpoint == "sqrt" else checkpoint


class _Op:
    """One recorded op: `args` are slots; outputs go to slots out .. out + n_out - 1. grad_args lists
    (argument index, slot) for the arguments that want a gradient; needs is ctx.needs_input_grad."""
    __slots__ = ("cls", "args", "kwargs", "out", "n_out", "grad_args", "needs", "invariant")


class _Program:
    """One recorded step as slots and ops. Slot 0 is the step input, 1..S the state items, then the
    other values the step reads and the ops' outputs, in order of first use. kinds[slot] is "input",
    "op" (an op's output), "free" (a tensor read from elsewhere) or "constant" (any other value)."""

    def __init__(self, log, refused, x_t, state, new):
        if refused:
            raise Fallback(refused)
        items, new_items = _items(state), _items(new)
        if len(new_items) != len(items) or isinstance(new, (tuple, list)) != isinstance(state, (tuple, list)) or \
                not all(isinstance(t, Tensor) for t in new_items):
            raise Fallback("the step returns a state of another structure than it takes; return a tuple of as many "
                           "tensors as the state it is given")
        self.n_state, self.values, self.kinds, self.ops, self.tensor_slot, self.array_slot = len(items), [], [], [], {}, {}
        self.contexts = []  # each op's context (what it keeps for backward)
        for t in (x_t,) + items:
            self.tensor_slot[id(t)] = self._new("input", t)
        for ctx, args, kwargs, result in log:
            if getattr(ctx, "hooks", None):  # (a node off the tape has none)
                raise Fallback("the step registers a hook or retain_grad on its tensors; register hooks on the layer's "
                               "outputs instead")
            if not ctx.forward_on_arrays:
                raise Fallback(f"the step uses {ctx.name}, a PyTorch-style Function (its forward runs on Tensors); "
                               "write its forward and backward on arrays (README: writing a primitive)")
            self.contexts.append(ctx)
            op = _Op()
            op.cls, op.kwargs, op.needs = type(ctx), kwargs, ctx.needs_input_grad
            op.args = [self._slot(a, ctx.parents[j] is not None) for j, a in enumerate(args)]
            op.grad_args = [(j, s) for j, s in enumerate(op.args) if ctx.parents[j] is not None]
            outs = result if type(result) is tuple else (result,)
            op.out, op.n_out = len(self.values), len(outs)
            for o in outs:
                self.tensor_slot[id(o)] = self._new("op", o)
            self.ops.append(op)
        self.outputs = [self._slot(t, t.requires_grad) for t in new_items]
        self.state_grads = [t.requires_grad for t in items], [t.requires_grad for t in new_items]
        self.shapes = [_shape(v) for v in self.values]

    def _new(self, kind, value):
        self.kinds.append(kind)
        self.values.append(value)
        data = value._data if isinstance(value, Tensor) else value
        if backend.is_array(data):
            self.array_slot.setdefault(id(data), len(self.values) - 1)
        return len(self.values) - 1

    def _slot(self, arg, wants_grad):
        """The slot that `arg` reads."""
        if isinstance(arg, Tensor):
            slot = self.tensor_slot.get(id(arg))
            if slot is None and not wants_grad:  # a detached view of a step value (x.detach(), a comparison)
                slot = self.array_slot.get(id(arg._data))
            if slot is None:
                slot = self.tensor_slot[id(arg)] = self._new("free", arg)
            return slot
        slot = self.array_slot.get(id(arg)) if backend.is_array(arg) else None  # a step value's array, passed raw
        return slot if slot is not None and self.kinds[slot] in ("input", "op") else self._new("constant", arg)

    def signature(self):
        """What must agree between the two recorded steps, besides the values of free tensors and constants
        (which inputs want a gradient may differ: step 0's state may not require grad; step 1's is replayed)."""
        return self.kinds, [(op.cls, op.args, op.out, op.n_out) for op in self.ops], self.outputs, self.shapes


def _shape(value):
    data = value._data if isinstance(value, Tensor) else value
    return (data.shape, data.dtype, backend.device_of(data)) if backend.is_array(data) else None


def _arrays_differ(a, b):
    """Whether two recorded values hold arrays (also inside tuples, lists, dicts) that are not the same
    objects: an array made at each step may come from the step's data, whatever its values at two steps."""
    if backend.is_array(a) or backend.is_array(b):
        return a is not b
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return any(_arrays_differ(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return any(_arrays_differ(a[k], b.get(k)) for k in a)
    return False


def _same(a, b):
    """Equal values: arrays by shape, dtype and elements; containers item by item."""
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and _same(a.array, b.array)
    if backend.is_array(a) or backend.is_array(b):
        return (backend.is_array(a) and backend.is_array(b) and a.shape == b.shape and a.dtype == b.dtype
                and backend.device_of(a) == backend.device_of(b) and bool((a == b).all()))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, slice) and isinstance(b, slice):
        return _same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    return type(a) is type(b) and a == b


# ---- the run: the recorded program, checked and compiled -----------------------------------

class _Run:
    """What the Loop replays: step 1's program without the ops that read only outside values, its
    static slots (outside tensors and constants), and the step compiled to Python (`source`)."""

    def __init__(self, first, second, valid, shortest, every, array_type):
        p0, p1 = _Program(*first), _Program(*second)
        if p0.signature() != p1.signature():
            raise Fallback("the two recorded steps ran different programs (a Python branch or a changing op) "
                           "or different shapes; make every step run the same ops (tg.where instead of a Python if)")
        if p1.state_grads[0] != p1.state_grads[1]:
            raise Fallback("which items of the state require grad changes from step to step; give the initial "
                           "state the same requires_grad as the state the step returns")
        for a, b in zip(p0.ops, p1.ops):
            if _arrays_differ(a.kwargs, b.kwargs):
                raise Fallback(f"{a.cls.__name__} gets an array option made at each step (an index or mask computed "
                               "from the step's data outside the ops?); compute it with tensor ops, or make it once "
                               "outside the step")
            if not _same(a.kwargs, b.kwargs):
                raise Fallback(f"{a.cls.__name__} gets different options at different steps; pass what changes per "
                               "step in the step input")
        self.n_state, self.outputs, self.valid, self.shortest, self.every = p1.n_state, p1.outputs, valid, shortest, every
        kinds, static = list(p1.kinds), [k in ("free", "constant") for k in p1.kinds]
        for slot, kind in enumerate(p1.kinds):
            a, b = p0.values[slot], p1.values[slot]
            if kind == "constant" and _arrays_differ(a, b):
                raise Fallback("the step passes an op an array it makes at each step (an index or mask computed "
                               "from its data outside the ops?); compute it with tensor ops, or make it once "
                               "outside the step")
            if kind == "constant" and not _same(a, b):
                raise Fallback("the step uses a number or array whose values change from step to step (a step "
                               "counter, random or data-dependent); pass per-step values in the step input and draw random "
                               "masks once per sequence (in prepare_sequence)")
            if kind == "free" and a is not b:
                if a.requires_grad or b.requires_grad or not _same(a, b):
                    raise Fallback("the step reads a tensor whose values change from step to step, made inside "
                                   "the step (random or data-dependent) or a different outside tensor at each step; "
                                   "pass per-step data in the step input and draw random masks once per sequence "
                                   "(in prepare_sequence)")
                kinds[slot] = "constant"
        self.step_ops = []
        for op in p1.ops:  # ops that read only static values ran once, at step 1: their results are outside values
            op.invariant = all(static[s] for s in op.args)
            for k in range(op.out, op.out + op.n_out):
                static[k], kinds[k] = op.invariant, ("free" if op.invariant else kinds[k])
            if not op.invariant:
                self.step_ops.append(op)
        self.outside = [s for s, k in enumerate(kinds) if k == "free"]  # slots read from the Loop's inputs
        self.outside_tensors = [p1.values[s] for s in self.outside]
        self.statics = [None] * len(kinds)  # constants here; Loop.forward puts the outside arrays in
        for s, k in enumerate(kinds):
            if k == "constant":
                self.statics[s] = p1.values[s].array if isinstance(p1.values[s], Tensor) else p1.values[s]
        self.shapes = p1.shapes
        # Buffers: an op that can write into `out=` writes a result no context keeps (a temporary) into one
        # buffer reused at every step, and the step's output into the loop's output array. (Such an op's
        # result is a new array: a kept array shares its memory only if it is that array or a view.)
        writers = {op.out: op for op in self.step_ops if op.n_out == 1 and _writes_out(op.cls)}
        kept = [a for ctx in p1.contexts for a in ctx.kept_arrays()]
        kept_ids, views = {id(a) for a in kept}, [a for a in kept if a.base is not None]
        xp = backend.array_namespace(p1.values[0]._data)
        self.scratch = [s for s in writers if s not in self.outputs and id(p1.values[s]._data) not in kept_ids and
                        not any(xp.may_share_memory(p1.values[s]._data, view) for view in views)]
        self.direct = self.outputs[0] if self.outputs[0] in writers else None
        self.source, self.forward_step, self.backward_step = _compile(self, array_type)

    def buffers(self, xp):
        """One step's temporaries, by slot (None where an op allocates its result)."""
        buffers = [None] * len(self.shapes)
        for s in self.scratch:
            shape, dtype, _ = self.shapes[s]
            buffers[s] = xp.empty(shape, dtype=dtype)
        return buffers


def _writes_out(cls):
    """Whether the primitive's forward takes out= (NumPy's convention: write the result there)."""
    known = _out_param.get(cls)
    if known is None:
        known = _out_param[cls] = "out" in inspect.signature(cls.forward).parameters
    return known


_out_param = {}


def _compile(run, array_type):
    """Straight-line Python for one replayed step; returns (source, forward, backward) (see _source).

    The source is a factory whose arguments are this run's values (op classes, options, shapes,
    ...), so it is compiled once per distinct step structure and each run gets its own closures:
    they hold no cycle through a globals dict and go with the Loop node.
    """
    names = {"A": array_type, "PS": ProductSum, "fit": fit, "add": accumulate, "as_array": backend.as_array,
             "device_of": backend.device_of}
    structure = []  # everything the source depends on, as a cache key
    for i, op in enumerate(run.step_ops):
        names[f"C{i}"], names[f"N{i}"] = op.cls, op.needs
        if op.kwargs:
            names[f"K{i}"] = op.kwargs
        for _, slot in op.grad_args:
            names[f"S{slot}"], names[f"D{slot}"] = run.shapes[slot][:2]
        structure.append((tuple(op.args), op.out, op.n_out, bool(op.kwargs), tuple(op.grad_args),
                          op.n_out == 1 and run.shapes[op.out][0] == ()))
    key = (run.n_state, tuple(run.outputs), tuple(run.outside), tuple(structure), tuple(run.scratch), run.direct)
    compiled = _compiled.get(key)
    if compiled is None:
        source = _source(run, names)
        namespace = {}
        exec(compile(source, "<captured step>", "exec"), namespace)
        if len(_compiled) >= 128:
            del _compiled[next(iter(_compiled))]
        compiled = _compiled[key] = source, namespace["make"]
    source, make = compiled
    return (source,) + make(**names)


_compiled = {}  # step structure -> (source, factory), for the 128 structures compiled last


def _source(run, names):
    """The factory's source: make(**names) returns the step's (forward, backward).

    forward(x, state, statics, buffers, into) runs the step's ops on the input x and the state's
    arrays and returns (contexts, new state arrays): an op whose result is a temporary (no context
    keeps it; run.scratch) writes it into buffers[slot], reused at every step, and the op that makes
    the new state's first item writes it into `into` (a row of the loop's output, or None to
    allocate). backward(contexts, grads) takes the new state's
    gradients and returns those of x, of the state before the step and of the outside slots.
    Names in the generated code: v{s} is the array in slot s (v0 the input, v1..vS the state,
    others read from `statics`, the outside values and constants by slot); g{s} its gradient;
    c{i} the context (Function instance) of op i, C{i} its class, N{i} its needs_input_grad,
    K{i} its keyword options; S{s}, D{s} the shape and dtype slot s's gradient must have; A the
    array type; PS the lazy matmul product (function.ProductSum);
    q is a gradient in transit and r an op's returned gradients; fit and add are function.fit and
    function.accumulate, the walk's own.
    """
    ops_, S = run.step_ops, run.n_state
    produced = {op.out + k for op in ops_ for k in range(op.n_out)}
    read = sorted({s for op in ops_ for s in op.args if s > S and s not in produced} |
                  {s for s in run.outputs if s > S and s not in produced})
    lines = ["def forward(v0, state, statics, buffers, into):",
             f"    {''.join(f'v{k}, ' for k in range(1, S + 1))}= state", *[f"    v{s} = statics[{s}]" for s in read]]
    scratch = set(run.scratch)
    for i, op in enumerate(ops_):
        args = ", ".join(f"v{s}" for s in op.args) + (f", **K{i}" if op.kwargs else "")
        args += f", out=buffers[{op.out}]" if op.out in scratch else ", out=into" if op.out == run.direct else ""
        outs = "".join(f"v{op.out + k}, " for k in range(op.n_out)) if op.n_out > 1 else f"v{op.out}"
        lines += [f"    c{i} = C{i}.__new__(C{i}); c{i}.needs_input_grad = N{i}", f"    {outs} = c{i}.forward({args})"]
        if op.n_out == 1 and run.shapes[op.out][0] == ():  # NumPy makes scalars of 0-d results
            lines.append(f"    v{op.out} = v{op.out} if type(v{op.out}) is A else as_array(v{op.out}, device_of(v0))")
    contexts = "".join(f"c{i}, " for i in range(len(ops_)))
    lines.append(f"    return ({contexts}), [{', '.join(f'v{s}' for s in run.outputs)}]")
    grads = sorted(produced | {s for op in ops_ for _, s in op.grad_args} | set(run.outputs) | set(range(S + 1)) |
                   set(run.outside))
    lines += ["", "def backward(contexts, grads):", f"    {contexts} = contexts" if ops_ else "",
              f"    {' = '.join(f'g{s}' for s in grads)} = None", "    owned = set()"]
    for k, slot in enumerate(run.outputs):
        lines += [f"    q = grads[{k}]", "    if q is not None:",
                  f"        g{slot} = q if g{slot} is None else add(g{slot}, q, {slot}, owned)"]
    lazy = {op.args[j] for op in ops_ for j in getattr(op.cls, "lazy_grads", ())}  # slots a rule may give a ProductSum
    for i, op in reversed(list(enumerate(ops_))):
        if not op.grad_args:
            continue
        outs = [f"g{op.out + k}" for k in range(op.n_out)]
        lines.append(f"    if {' or '.join(f'{g} is not None' for g in outs)}:")
        lines += [f"        if type(g{s}) is PS: g{s} = g{s}.evaluate()" for s in range(op.out, op.out + op.n_out)
                  if s in lazy]
        lines += [f"        r = c{i}.backward({', '.join(outs)})", "        if type(r) is not tuple: r = (r,)"]
        for j, slot in op.grad_args:
            lines += [f"        q = r[{j}]", "        if q is not None:",
                      f"            if type(q) is not A or q.shape != S{slot} or q.dtype != D{slot}:",
                      f"                q = fit(q, S{slot}, D{slot}, A, c{i}, {j})",
                      f"            g{slot} = q if g{slot} is None else add(g{slot}, q, {slot}, owned)"]
    lines.append(f"    return g0, [{', '.join(f'g{k}' for k in range(1, S + 1))}], "
                 f"({''.join(f'g{s}, ' for s in run.outside)})")
    return "def make(" + ", ".join(names) + "):\n" + "".join(f"    {line}\n" for line in lines) + \
        "    return forward, backward\n"


# ---- the loop as one node ------------------------------------------------------------------

def _select(valid_t, new, old):
    """Per batch row: the new state where valid_t, else the old (lengths)."""
    xp = backend.array_namespace(valid_t)
    return [xp.where(valid_t.reshape(valid_t.shape + (1,) * (n.ndim - 1)), n, o) for n, o in zip(new, old)]


class Loop(Function):
    """Steps 2..T-1 of a captured sequence, as one node of the tape.

    Inputs: the per-step inputs of those steps (T-2, B, ...), the outputs of steps 0 and 1,
    the state after step 1, the outside tensors. Outputs: every step's output (T, B, ...) (the
    state's first item) and the final state.
    """

    def forward(ctx, rest, *arrays, run):
        S = run.n_state
        ctx.run, ctx.rest, ctx.arrays = run, rest, arrays
        ctx.statics = statics = list(run.statics)
        for slot, array in zip(run.outside, arrays[2 + S:]):
            statics[slot] = array
        state, forward_step, every, shortest = list(arrays[2:2 + S]), run.forward_step, run.every, run.shortest
        out = backend.array_namespace(rest).empty((rest.shape[0] + 2,) + state[0].shape, dtype=state[0].dtype)
        out[0], out[1] = arrays[0], arrays[1]
        ctx.contexts, ctx.checkpoints = [None] * rest.shape[0], {}
        buffers = run.buffers(backend.array_namespace(rest))
        with threads.limited():
            for i in range(rest.shape[0]):
                if every and i % every == 0:
                    ctx.checkpoints[i] = state
                into = out[i + 2] if i + 2 < shortest else None  # (past a length the new state is selected)
                contexts, new = forward_step(rest[i], state, statics, buffers, into)
                state = new if into is not None else _select(run.valid[i + 2], new, state)
                if state[0] is not into:
                    out[i + 2] = state[0]
                if not every:
                    ctx.contexts[i] = contexts
        return (out,) + tuple(state)

    def kept_arrays(ctx):
        """Every array the loop keeps for backward, its steps' contexts and checkpoints included, so an
        in-place write into one is refused as it is on the eager tape."""
        yield from Function.kept_arrays(ctx)
        for contexts in ctx.contexts:
            for step in contexts or ():
                yield from step.kept_arrays()
        for state in ctx.checkpoints.values():
            yield from state

    def backward(ctx, g_out, *g_state):
        if isinstance(g_out, TensorBase) or any(isinstance(g, TensorBase) for g in g_state):
            return _on_tape(ctx, (g_out,) + g_state)
        run, n = ctx.run, ctx.rest.shape[0]
        S, needs = run.n_state, ctx.needs_input_grad
        dxs = backend.array_namespace(ctx.rest).empty_like(ctx.rest) if needs[0] else None  # every row is written
        g_state, summed, owned = list(g_state), [None] * len(run.outside), set()
        with threads.limited():
            g_state = _backward_steps(ctx, g_out, g_state, dxs, summed, owned)
        firsts = [None if g_out is None or not needs[1 + k] else g_out[k] for k in range(2)]
        states = [None if g is None or not need else (g.evaluate() if type(g) is ProductSum else g)
                  for g, need in zip(g_state, needs[3:3 + S])]
        return tuple([dxs] + firsts + states + [g if need else None for g, need in zip(summed, needs[3 + S:])])


def _backward_steps(ctx, g_out, g_state, dxs, summed, owned):
    """Every step's backward, last to first, segment by segment (a segment's contexts are recomputed
    from its checkpoint when checkpointing); returns the gradient of the state after step 1."""
    run, n = ctx.run, ctx.rest.shape[0]
    every = run.every or n
    buffers = run.buffers(backend.array_namespace(ctx.rest)) if run.every else None
    for start in reversed(range(0, n, every)):
        stop = min(start + every, n)
        contexts = ctx.contexts[start:stop]
        if run.every:  # recompute the segment's contexts from its checkpoint
            state, contexts = ctx.checkpoints[start], []
            for i in range(start, stop):
                step_contexts, new = run.forward_step(ctx.rest[i], state, ctx.statics, buffers, None)
                contexts.append(step_contexts)
                state = new if i + 2 < run.shortest else _select(run.valid[i + 2], new, state)
        for i in reversed(range(start, stop)):
            if g_out is not None:
                g_state[0] = g_out[i + 2] if g_state[0] is None else accumulate(g_state[0], g_out[i + 2], "out", set())
            g_state = _backward_step(ctx, contexts[i - start], g_state, i, dxs, summed, owned)
        if run.every:  # memory per segment: evaluate the lazy weight gradients now
            for k, g in enumerate(summed):
                if type(g) is ProductSum:
                    summed[k] = g.evaluate()
                    owned.add(k)
    return g_state


def _backward_step(ctx, contexts, g_state, i, dxs, summed, owned):
    """Step i + 2's backward: the gradient of the state before it, given that after it."""
    run, passed = ctx.run, None
    if i + 2 >= run.shortest:  # rows past their length kept the old state: their gradient passes through
        passed, valid = [None] * len(g_state), run.valid[i + 2]
        for k, g in enumerate(g_state):
            if g is not None:
                g = g.evaluate() if type(g) is ProductSum else g
                mask, zero, xp = valid.reshape(valid.shape + (1,) * (g.ndim - 1)), g.dtype.type(0), \
                    backend.array_namespace(g)
                passed[k], g_state[k] = xp.where(mask, zero, g), xp.where(mask, g, zero)
    g_x, new_state, g_outside = run.backward_step(contexts, g_state)
    if dxs is not None:
        dxs[i] = 0 if g_x is None else g_x.evaluate() if type(g_x) is ProductSum else g_x
    for k, g in enumerate(g_outside):
        if g is not None:
            summed[k] = g if summed[k] is None else accumulate(summed[k], g, k, owned)
    if passed is not None:
        new_state = [p if g is None else g if p is None else accumulate(g, p, "passed", set())
                     for g, p in zip(new_state, passed)]
    return new_state


def _on_tape(ctx, grads):
    """The Loop's rule under create_graph: its recorded ops applied on the tape from the node's
    inputs (each behind a view, so that the walk gives partial derivatives), then differentiated by
    the walk, so that the gradients are themselves on the tape."""
    run, S = ctx.run, ctx.run.n_state
    make = next(g for g in grads if g is not None)._make
    inputs = [ops.Reshape.apply(t, shape=t.shape) if isinstance(t, TensorBase) and t.requires_grad else
              t if isinstance(t, TensorBase) else make(t, None, 0) for t in (ctx.rest,) + tuple(ctx.arrays)]
    env = list(run.statics)
    for slot, tensor in zip(run.outside, inputs[3 + S:]):
        env[slot] = tensor
    state, outputs = inputs[3:3 + S], list(inputs[1:3])
    for i, x_t in enumerate(ops.Unbind.apply(inputs[0], axis=0)):
        env[0], env[1:1 + S] = x_t, state
        for op in run.step_ops:
            out = op.cls.apply(*[env[s] for s in op.args], **op.kwargs)
            env[op.out:op.out + op.n_out] = out if op.n_out > 1 else (out,)
        new = [env[s] for s in run.outputs]
        if i + 2 >= run.shortest:
            valid = run.valid[i + 2]
            new = [ops.Where.apply(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o) for n, o in zip(new, state)]
        state = new
        outputs.append(state[0])
    pairs = [(r, g) for r, g in zip([ops.Stack.apply(*outputs, axis=0)] + state, grads)
             if g is not None and r.requires_grad]
    wanted = [t for t, edge in zip(inputs, ctx.parents) if edge is not None]
    found, _, _ = walk([r for r, _ in pairs], [g for _, g in pairs], create_graph=True, retain_graph=True,
                       targets=wanted, retain=False) if pairs else ({}, None, None)
    return tuple(found.get((t._node, t._index)) if edge is not None else None for t, edge in zip(inputs, ctx.parents))
