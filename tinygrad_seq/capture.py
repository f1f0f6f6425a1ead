"""The captured time loop: record one step of a cell's tape, replay it for the rest of the sequence.

Recording. The runner runs the cell's step eagerly for steps 0 and 1, on stand-in leaf
tensors for the step input and the carried state, while Function.apply logs every op it
runs: its class, its options, and each argument resolved to a slot of the step's
environment: the step input, an item of the state, an earlier op's output, a tensor or
array from outside the step (a parameter, a prepared weight), or a constant.

The guard. Replay is only right if every step runs the same program. The two recorded
steps must agree op for op (classes, wiring, options, Python numbers, shapes, dtypes), and
a tensor or array that the step made itself, not through an op, must hold the same values
at both steps (a random mask does not). The step must not read values back to the host
(`.item()`, `.numpy()`, ...: a Python branch on a value), nor register hooks; and grad
mode, `detect_anomaly` and the switches (`capture=False` on a runner, `set_enabled`
globally, `capturable = False` on a cell) must allow it. Otherwise the runner runs its
eager loop, with the random state put back as it was, so results do not change.
`counters` counts captured loops and each reason for falling back.

Replay. Steps 2 to T-1 run the program on raw arrays: per op and step one Function
instance (the op's context), no Tensor and no tape node. The whole loop is one node on
the outer tape (`Loop`), whose inputs are the per-step inputs (T, B, ...), the initial
state and the outside tensors; ops that read only outside values run once, not per step.
The step's ops are compiled into two straight-line Python functions, forward and backward
(`_compile`, once per distinct step structure; the text is `Loop.run.source`), so replay
pays for the ops' own bodies and little else: no per-op loop over slot lists and options.

Backward replay. Loop.backward walks the steps from last to first and, within a step, the
recorded ops in reverse, calling each op's own backward: BPTT is the generic reverse of
the cell's step. A tensor read at every step gets the sum of its per-step gradients; a
matmul's weight gradient stays lazy (autograd.ProductSum), so a weight used at every step
gets its gradient as one matmul over all steps.

Higher-order gradients. With create_graph, Loop.backward_graph runs the recorded program
eagerly on the tape from the node's inputs and differentiates that graph instead.

Checkpointing (Chen et al. 2016; Gruslys et al. 2016). With `checkpoint=k` the forward
keeps only the carried state at every k-th step and no op contexts; backward recomputes
each segment's forward from its checkpoint, then runs the segment's backward: memory for
O(T/k + k) steps instead of T. `checkpoint="sqrt"` takes k = ceil(sqrt(T)).
"""
import collections
import contextlib
import logging
import math

from . import autograd, backend, higher_order
from .autograd import Function, ProductSum, _accumulate, _fit
from ._tensor import Tensor, stack, where

__all__ = ["counters", "disabled", "is_enabled", "set_enabled", "Loop", "check_checkpoint"]

counters = collections.Counter()  # "captured", and "fallback: <reason>" for each reason seen
_log = logging.getLogger(__name__)
_enabled = True


def set_enabled(flag):
    """Switch capture on or off for every runner (each runner also takes capture=False)."""
    global _enabled
    _enabled = bool(flag)


def is_enabled():
    return _enabled


@contextlib.contextmanager
def disabled():
    """Run the block with every recurrent loop eager."""
    previous = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def _rebuild(like, items):
    return tuple(items) if isinstance(like, (tuple, list)) else items[0]


class Fallback(Exception):
    """The step cannot be replayed; the message says why."""


# ---- recording: one step's log resolved into a program ---------------------------------

class _Op:
    """One recorded op: `args` are env slots; outputs go to slots out .. end - 1. grad_args lists
    (argument index, slot, shape, dtype) for the arguments whose gradient is needed."""
    __slots__ = ("cls", "args", "kwargs", "out", "end", "n_out", "parents", "grad_args", "invariant")


class _Program:
    """A step as slots and ops. Slot 0 is the step input, 1..S the state, then outside values,
    constants and op outputs in order of first use."""

    def __init__(self, n_state):
        self.n_state = n_state
        self.shapes = []        # per slot: (shape, dtype) of its array, or None for a Python value
        self.values = []        # per slot: the array or value seen at recording (the step's own for op outputs)
        self.kinds = []         # per slot: "input", "outside", "constant" or "op"
        self.ops = []
        self.outputs = []       # the slots of the new state's items
        self.signature = []     # what must agree between two recorded steps
        self.tensor_slot = {}   # id(Tensor) -> slot, for the step's tensors
        self.array_slot = {}    # id(array) -> slot
        self.keep = []          # keeps recorded objects alive so their ids stay unique
        self.outside = []       # (slot, Tensor) for outside tensors, in slot order
        self.born = set()       # ids of the Tensors made during the step

    def new_slot(self, kind, value):
        self.kinds.append(kind)
        self.values.append(value)
        self.shapes.append((value.shape, value.dtype) if backend.is_array(value) else None)
        if backend.is_array(value):
            self.array_slot.setdefault(id(value), len(self.kinds) - 1)
        return len(self.kinds) - 1

    def resolve(self, arg, wants_grad):
        """The slot that `arg` reads, and whether a gradient flows back through it."""
        if isinstance(arg, Tensor):
            slot = self.tensor_slot.get(id(arg))
            if slot is not None:
                return slot, wants_grad
            slot = None if wants_grad else self.array_slot.get(id(arg.data))
            if slot is not None:  # a detached view of a step value (x.detach(), a mask from a comparison)
                return slot, False
            self.keep.append(arg)
            if id(arg) in self.born:  # made inside the step, not by an op: a constant
                if arg.requires_grad:
                    raise Fallback("the step makes a new tensor that requires grad at every step")
                slot = self.tensor_slot[id(arg)] = self.new_slot("constant", arg.data)
                return slot, False
            slot = self.tensor_slot[id(arg)] = self.new_slot("outside", arg.data)
            self.outside.append((slot, arg))
            return slot, wants_grad
        if backend.is_array(arg):
            slot = self.array_slot.get(id(arg))
            if slot is None:
                self.keep.append(arg)
                slot = self.new_slot("constant", arg)
            return slot, False
        slot = self.new_slot("constant", arg)
        return slot, False


def _components(state):
    """A state's tensors as a list (a Tensor, or a tuple/list of Tensors), or None."""
    items = list(state) if isinstance(state, (tuple, list)) else [state]
    return items if items and all(isinstance(s, Tensor) for s in items) else None


def _record(step, x_t, state):
    """Run step(x_t, state) eagerly, on the tape, while Function.apply logs every op."""
    log = []
    previous, autograd._recorder = autograd._recorder, log
    try:
        new = step(x_t, state)
    finally:
        autograd._recorder = previous
    return log, new


def _program(log, x_t, state, new):
    """The recorded step as a _Program, and its op contexts; Fallback if it cannot be replayed."""
    items, new_items = _components(state), _components(new)
    if new_items is None or len(new_items) != len(items) or \
            isinstance(new, (tuple, list)) != isinstance(state, (tuple, list)):
        raise Fallback("the step returns a state of another structure than it takes")
    program = _Program(len(items))
    for t in [x_t] + items:
        program.tensor_slot[id(t)] = program.new_slot("input", t.data)
    program.keep += [x_t] + items
    contexts = []
    for entry in log:
        if isinstance(entry, Tensor):
            program.born.add(id(entry))
            continue
        if entry is autograd.HOST_READ:
            raise Fallback("the step reads a value to the host (.item(), .numpy(), bool(), ...)")
        if entry is autograd.IN_PLACE:
            raise Fallback("the step writes into a tensor in place")
        ctx, args, kwargs, result = entry
        if ctx.hooks:
            raise Fallback("the step registers a hook or retain_grad on its tensors")
        op = _Op()
        op.cls, op.kwargs, op.parents = type(ctx), kwargs, tuple(p is not None or None for p in ctx.parents)
        resolved = [program.resolve(a, p is not None) for a, p in zip(args, ctx.parents)]
        op.args = [slot for slot, _ in resolved]
        op.grad_args = [(j, slot) + program.shapes[slot] for j, (slot, grad) in enumerate(resolved) if grad]
        outs = result if type(result) is tuple else (result,)
        op.out, op.n_out = len(program.kinds), len(outs)
        op.end = op.out + op.n_out
        for o in outs:
            program.tensor_slot[id(o)] = program.new_slot("op", o.data)
        program.keep.append(result)
        program.ops.append(op)
        contexts.append(ctx)
        program.signature.append((op.cls, tuple(op.args), op.out))
    program.outputs = [program.resolve(t, t.requires_grad)[0] for t in new_items]
    program.keep.append(new)
    _mark_invariant(program)
    return program, contexts


def _mark_invariant(program):
    """Ops that read only outside values and constants give the same result at every step."""
    static = [k in ("outside", "constant") for k in program.kinds]
    for op in program.ops:
        op.invariant = all(static[s] for s in op.args)
        for k in range(op.n_out):
            static[op.out + k] = op.invariant


def _same(a, b):
    """Equal values: arrays by shape, dtype and elements; containers item by item."""
    if a is b:
        return True
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


def _check_same_program(first, second):
    """Raise Fallback unless two recorded steps ran the same program."""
    if first.signature != second.signature or first.kinds != second.kinds or first.outputs != second.outputs:
        raise Fallback("the two recorded steps ran different programs (a Python branch or a changing op)")
    if first.shapes != second.shapes:
        raise Fallback("the shapes or dtypes inside the step change from step to step")
    for a, b in zip(first.ops, second.ops):
        if not _same(a.kwargs, b.kwargs):
            raise Fallback(f"{a.cls.__name__} gets different options at different steps")
    by_slot = dict(second.outside)
    for slot, tensor in first.outside:
        if by_slot[slot] is not tensor:
            raise Fallback("the step reads a different outside tensor at each step (per-step data "
                           "must come in as the step input)")
    for slot, kind in enumerate(first.kinds):
        if kind == "constant" and not _same(first.values[slot], second.values[slot]):
            raise Fallback("the step makes a tensor or array whose values change from step to step "
                           "(random or data-dependent)")


# ---- replay --------------------------------------------------------------------------

def _run_ops(ops, env, contexts, array_type):
    """Run `ops` on the slot list `env`, appending each op's context to `contexts`."""
    append = contexts.append
    for op in ops:
        cls = op.cls
        ctx = cls.__new__(cls)
        ctx.parents = op.parents
        out = ctx.forward(*[env[s] for s in op.args], **op.kwargs)
        if op.n_out == 1:
            env[op.out] = out if type(out) is array_type else backend.as_array(out, backend.device_of(env[0]))
        else:
            env[op.out:op.end] = out
        append(ctx)


class _Run:
    """What Loop needs: the program, the steps recorded eagerly, lengths, checkpointing."""

    def __init__(self, program, recorded, valid, shortest, every, array_type):
        self.program, self.valid, self.shortest, self.every = program, valid, shortest, every
        self.step_ops = [op for op in program.ops if not op.invariant]
        self.invariant_ops = [op for op in program.ops if op.invariant]
        self.recorded = []  # per recorded step: (its own ops, their contexts, new state arrays)
        for step_program, contexts, new in recorded:
            per_step = [(op, ctx) for op, ctx in zip(step_program.ops, contexts) if not op.invariant]
            self.recorded.append(([op for op, _ in per_step], [ctx for _, ctx in per_step],
                                  [t.data for t in _components(new)]))
        static = {op.out + k for op in self.invariant_ops for k in range(op.n_out)}
        static.update(slot for slot, _ in program.outside)
        self.static_slots = sorted(static)  # slots whose per-step gradients are summed over all steps
        self.source, self.forward_step, self.backward_step = _compile(self, array_type)


# ---- the step compiled to Python --------------------------------------------------------

def _compile(run, array_type):
    """Straight-line Python for one replayed step; returns (source, forward, backward).

    forward(x, state, env) runs the step's ops on the input x and the state's arrays (static
    values are read from the slot list env) and returns (contexts, new state arrays).
    backward(contexts, grads) takes the new state's gradients and returns the gradients of
    x, of the state before the step, and of run.static_slots: the same op calls, in the
    same order, with the same checks on what each backward returns, as _backward_ops.

    The source is a factory whose arguments are this run's values (op classes, options,
    shapes, ...), so it is compiled once per distinct step structure and each run gets its
    own closures: they hold no cycle through a globals dict and go with the Loop node.
    """
    program, ops = run.program, run.step_ops
    names = {"A": array_type, "PS": ProductSum, "fit": _fit, "acc": _accumulate, "as_array": backend.as_array,
             "device_of": backend.device_of}
    structure = []  # everything the source depends on, as a cache key
    for i, op in enumerate(ops):
        names[f"C{i}"], names[f"P{i}"], names[f"N{i}"] = op.cls, op.parents, tuple(p is not None for p in op.parents)
        if op.kwargs:
            names[f"K{i}"] = op.kwargs
        for j, slot, shape, dtype in op.grad_args:
            names[f"S{slot}"], names[f"D{slot}"] = shape, dtype
        structure.append((tuple(op.args), op.out, op.n_out, bool(op.kwargs), tuple(g[:2] for g in op.grad_args),
                          op.n_out == 1 and program.shapes[op.out][0] == ()))
    key = (program.n_state, tuple(program.outputs), tuple(run.static_slots), tuple(structure))
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
    """The factory's source: make(**names) returns the step's (forward, backward)."""
    program, ops, S = run.program, run.step_ops, run.program.n_state
    produced = {op.out + k for op in ops for k in range(op.n_out)}
    static = sorted({s for op in ops for s in op.args if s > S and s not in produced} |
                    {s for s in program.outputs if s > S and s not in produced})
    state = "".join(f"v{k}, " for k in range(1, S + 1))
    lines = ["def forward(v0, state, env):", f"    {state} = state",
             *[f"    v{s} = env[{s}]" for s in static]]
    for i, op in enumerate(ops):
        args = ", ".join(f"v{s}" for s in op.args) + (", **K%d" % i if op.kwargs else "")
        outs = ", ".join(f"v{op.out + k}" for k in range(op.n_out))
        lines += [f"    c{i} = C{i}.__new__(C{i}); c{i}.parents = P{i}; c{i}.needs_input_grad = N{i}",
                  f"    {outs}{',' if op.n_out > 1 else ''} = c{i}.forward({args})"]
        if op.n_out == 1 and program.shapes[op.out][0] == ():  # NumPy makes scalars of 0-d results
            lines.append(f"    v{op.out} = v{op.out} if type(v{op.out}) is A else as_array(v{op.out}, device_of(v0))")
    contexts = "".join(f"c{i}, " for i in range(len(ops)))
    lines.append(f"    return ({contexts}), [{', '.join(f'v{s}' for s in program.outputs)}]")

    gets = sorted(produced | {s for op in ops for _, s, _, _ in op.grad_args} | set(program.outputs) |
                  set(range(S + 1)) | set(run.static_slots))
    lines += ["", "def backward(contexts, grads):", f"    {contexts} = contexts" if ops else "",
              f"    {' = '.join(f'g{s}' for s in gets)} = None", "    owned = set()"]
    for k, slot in enumerate(program.outputs):
        lines += [f"    q = grads[{k}]", "    if q is not None:",
                  f"        g{slot} = q if g{slot} is None else acc(g{slot}, q, {slot}, owned)"]
    for i, op in reversed(list(enumerate(ops))):
        if not op.grad_args:
            continue
        outs = [f"g{op.out + k}" for k in range(op.n_out)]
        lines.append(f"    if {' or '.join(f'{g} is not None' for g in outs)}:")
        lines += [f"        if type({g}) is PS: {g} = {g}.evaluate()" for g in outs]
        lines += [f"        r = c{i}.backward({', '.join(outs)})",
                  "        if type(r) is not tuple: r = (r,)"]
        for j, slot, _, _ in op.grad_args:
            lines += [f"        q = r[{j}]", "        if q is not None:",
                      f"            if type(q) is not A or q.shape != S{slot} or q.dtype != D{slot}:",
                      f"                q = fit(q, S{slot}, D{slot}, A, c{i}, {j})",
                      f"            g{slot} = q if g{slot} is None else acc(g{slot}, q, {slot}, owned)"]
    lines.append(f"    return g0, [{', '.join(f'g{k}' for k in range(1, S + 1))}], "
                 f"({''.join(f'g{s}, ' for s in run.static_slots)})")
    return f"def make({', '.join(names)}):\n" + "".join(f"    {line}\n" for line in lines) + \
        "    return forward, backward\n"


def _select(valid_t, new, old):
    """Per batch row: the new state where valid_t, else the old (lengths)."""
    xp = backend.array_namespace(valid_t)
    return [xp.where(valid_t.reshape(valid_t.shape + (1,) * (n.ndim - 1)), n, o) for n, o in zip(new, old)]


class Loop(Function):
    """A cell's recorded step run over a whole sequence, as one node of the tape.

    Inputs: the per-step inputs (T, B, ...), the initial state's arrays, the outside
    tensors' arrays. Outputs: the outputs (T, B, ...) (the state's first item at every
    step) and the final state's arrays.
    """

    def forward(ctx, xs, *arrays, run):
        program, S = run.program, run.program.n_state
        ctx.run, ctx.xs, ctx.arrays, ctx.array_type = run, xs, arrays, type(xs)
        ctx.env = env = list(program.values)
        for (slot, _), array in zip(program.outside, arrays[S:]):
            env[slot] = array
        ctx.invariant_contexts = []
        _run_ops(run.invariant_ops, env, ctx.invariant_contexts, ctx.array_type)
        state = list(arrays[:S])
        T = xs.shape[0]
        out = backend.array_namespace(xs).empty((T,) + state[0].shape, dtype=state[0].dtype)
        ctx.checkpoints, ctx.contexts = {}, [None] * T
        every, recorded, shortest, forward_step = run.every, len(run.recorded), run.shortest, run.forward_step
        for t in range(T):
            if every and t % every == 0:
                ctx.checkpoints[t] = state
            if t < recorded:
                _, contexts, new = run.recorded[t]
            else:
                contexts, new = forward_step(xs[t], state, env)
            state = new if t < shortest else _select(run.valid[t], new, state)
            out[t] = state[0]
            if not every:
                ctx.contexts[t] = contexts
        return (out,) + tuple(state)

    def kept_arrays(ctx):
        """Every array the loop keeps for backward, its steps' contexts and checkpoints included,
        so an in-place write into one (say the final state of a cell whose last op saved its
        output) is refused as it is on the eager tape."""
        yield from autograd._saved_arrays(ctx)
        for contexts in [ctx.invariant_contexts] + [c for c in ctx.contexts if c is not None]:
            for step in contexts:
                yield from autograd._saved_arrays(step)
        for state in ctx.checkpoints.values():
            yield from state

    def backward(ctx, g_out, *g_state):
        run, T = ctx.run, ctx.xs.shape[0]
        program, S = run.program, run.program.n_state
        needs = ctx.needs_input_grad
        dxs = backend.array_namespace(ctx.xs).empty_like(ctx.xs) if needs[0] else None  # every row is written
        g_state = list(g_state)
        summed, owned = [None] * len(program.kinds), set()  # per static slot: its gradient summed over steps
        every = run.every or T
        for start in reversed(range(0, T, every)):
            stop = min(start + every, T)
            if run.every:  # recompute the segment's contexts from its checkpoint
                state, contexts = ctx.checkpoints[start], []
                for t in range(start, stop):
                    step_contexts, new = run.forward_step(ctx.xs[t], state, ctx.env)
                    contexts.append(step_contexts)
                    state = new if t < run.shortest else _select(run.valid[t], new, state)
            else:
                contexts = ctx.contexts[start:stop]
            for t in reversed(range(start, stop)):
                if g_out is not None:
                    g_state[0] = g_out[t] if g_state[0] is None else _accumulate(g_state[0], g_out[t], "out", set())
                g_state = _backward_step(ctx, contexts[t - start], g_state, t, dxs, summed, owned)
            if run.every:  # memory per segment: evaluate the lazy weight gradients now
                for slot in run.static_slots:
                    if type(summed[slot]) is ProductSum:
                        summed[slot] = summed[slot].evaluate()
                        owned.add(slot)
        _backward_ops(run.invariant_ops, ctx.invariant_contexts, summed, owned, ctx.array_type)
        grads = [dxs] + [g if need else None for g, need in zip(g_state, needs[1:1 + S])]
        return tuple(grads + [summed[slot] for slot, _ in program.outside])


    def backward_graph(ctx, g_out, *g_state):
        """For create_graph (higher-order gradients): run the recorded program eagerly, on the
        tape, from the node's inputs as Tensors (the same ops, so the same numbers as the
        replay), and differentiate that graph with grad(create_graph=True)."""
        run, program, S = ctx.run, ctx.run.program, ctx.run.program.n_state
        inputs = [ctx.input_tensor(0, ctx.xs)] + [ctx.input_tensor(1 + i, a) for i, a in enumerate(ctx.arrays)]
        env = list(program.values)
        for (slot, _), tensor in zip(program.outside, inputs[1 + S:]):
            env[slot] = tensor

        def run_ops(ops):
            for op in ops:
                out = op.cls.apply(*[env[s] for s in op.args], **op.kwargs)
                env[op.out:op.end] = out if op.n_out > 1 else (out,)

        run_ops(run.invariant_ops)
        state, outputs = inputs[1:1 + S], []
        for t, x_t in enumerate(inputs[0].unbind(0)):
            env[0], env[1:1 + S] = x_t, state
            run_ops(run.step_ops)
            new = [env[s] for s in program.outputs]
            if t >= run.shortest:
                valid = run.valid[t]
                new = [where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o) for n, o in zip(new, state)]
            state = new
            outputs.append(state[0])
        results = [stack(outputs)] + state
        pairs = [(r, g) for r, g in zip(results, (g_out,) + g_state) if g is not None and r.requires_grad]
        wanted = [i for i, edge in enumerate(ctx.parents) if edge is not None]
        grads = higher_order.grad([r for r, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                  create_graph=True, allow_unused=True) if pairs else [None] * len(wanted)
        result = [None] * len(inputs)
        for i, g in zip(wanted, grads):
            result[i] = g
        return tuple(result)


def _backward_step(ctx, contexts, g_state, t, dxs, summed, owned):
    """Step t's backward: the gradient of the state before it, given that after it."""
    run = ctx.run
    passed = None
    if t >= run.shortest:  # rows past their length kept the old state: their gradient passes through
        passed = [None] * len(g_state)
        valid = run.valid[t]
        for k, g in enumerate(g_state):
            if g is not None:
                g = g.evaluate() if type(g) is ProductSum else g
                mask = valid.reshape(valid.shape + (1,) * (g.ndim - 1))
                zero = g.dtype.type(0)
                xp = backend.array_namespace(g)
                passed[k], g_state[k] = xp.where(mask, zero, g), xp.where(mask, g, zero)
    if t < len(run.recorded):  # recorded steps: their own ops, which may need fewer gradients
        g_x, new_state, g_static = _backward_recorded(run, run.recorded[t][0], contexts, g_state, ctx.array_type)
    else:
        g_x, new_state, g_static = run.backward_step(contexts, g_state)
    if dxs is not None:
        dxs[t] = 0 if g_x is None else g_x.evaluate() if type(g_x) is ProductSum else g_x
    for slot, g in zip(run.static_slots, g_static):
        if g is not None:
            summed[slot] = g if summed[slot] is None else _accumulate(summed[slot], g, slot, owned)
    if passed is not None:
        new_state = [p if g is None else g if p is None else _accumulate(g, p, "passed", set())
                     for g, p in zip(new_state, passed)]
    return new_state


def _backward_recorded(run, ops, contexts, g_state, array_type):
    """A recorded step's backward, op by op: what the compiled backward returns."""
    program = run.program
    genv, owned = [None] * len(program.kinds), set()
    for slot, g in zip(program.outputs, g_state):
        if g is not None:
            genv[slot] = g if genv[slot] is None else _accumulate(genv[slot], g, slot, owned)
    _backward_ops(ops, contexts, genv, owned, array_type)
    return genv[0], genv[1:1 + program.n_state], [genv[slot] for slot in run.static_slots]


def _backward_ops(ops, contexts, genv, owned, array_type):
    """Run `ops`' backward in reverse, reading and summing gradients in the slot list `genv`."""
    for op, ctx in zip(reversed(ops), reversed(contexts)):
        if not op.grad_args:
            continue
        if op.n_out == 1:
            g = genv[op.out]
            if g is None:
                continue
            input_grads = ctx.backward(g.evaluate() if type(g) is ProductSum else g)
        else:
            grads = genv[op.out:op.end]
            if all(g is None for g in grads):
                continue
            input_grads = ctx.backward(*[g.evaluate() if type(g) is ProductSum else g for g in grads])
        if type(input_grads) is not tuple:
            input_grads = (input_grads,)
        for j, slot, shape, dtype in op.grad_args:
            g = input_grads[j]
            if g is None:
                continue
            if type(g) is not array_type or g.shape != shape or g.dtype != dtype:
                g = _fit(g, shape, dtype, array_type, ctx, j)
            current = genv[slot]
            genv[slot] = g if current is None else _accumulate(current, g, slot, owned)


# ---- the runner's entry point ---------------------------------------------------------

def _reason_not_to_capture(cell, capture, T):
    if not capture or not _enabled or getattr(cell, "capturable", True) is False:
        return "switched off"
    if not autograd.is_grad_enabled():
        return "grad mode is off"
    if autograd._detect_anomaly:
        return "detect_anomaly is on"
    if autograd._recorder is not None:
        return "inside a step being recorded"
    if T < 2:
        return "a sequence of one step"
    return None


def run(cell, step, inputs, state, advance, valid, shortest, capture=True, checkpoint=None):
    """Run `step` over inputs (T, B, ...) from `state`; returns (out, final state).

    Captured, `out` is the outputs (T, B, ...), made by one Loop node. Otherwise `out` is
    the list of outputs of the steps already run (eagerly, on the tape, while recording)
    and the state is the one after them: the runner goes on from there, so no step runs
    twice. advance(t, new, old) applies lengths to step t's new state; the reason for
    running eagerly is counted in `counters`.
    """
    T = inputs.shape[0]
    reason = _reason_not_to_capture(cell, capture, T) or (
        None if _components(state) is not None else "the state is not a Tensor or a flat tuple of Tensors")
    outputs = []
    if reason is None:
        recorded = []
        for t in range(2):
            x_t = inputs[t]
            log, new = _record(step, x_t, state)
            recorded.append((log, x_t, state, new))
            state = advance(t, new, state)
            outputs.append(_components(state)[0])
        try:
            loop = _loop(recorded, inputs, valid, shortest, checkpoint)
        except Fallback as e:
            reason = str(e)
        else:
            counters["captured"] += 1
            return loop[0], _rebuild(state, list(loop[1:]))
    if checkpoint is not None and reason != "switched off":
        reason += " (checkpointing needs a captured loop: activations are stored)"
    counters["fallback: " + reason] += 1
    _log.debug("eager time loop: %s", reason)
    return outputs, state


def _loop(recorded, inputs, valid, shortest, checkpoint):
    """The Loop node's outputs for a sequence whose steps 0 and 1 were recorded; or Fallback."""
    (log0, x0, state0, new0), (log1, x1, state1, new1) = recorded
    first, contexts0 = _program(log0, x0, state0, new0)
    second, contexts1 = _program(log1, x1, state1, new1)
    _check_same_program(first, second)
    if [t.requires_grad for t in _components(new1)] != [t.requires_grad for t in _components(state1)]:
        raise Fallback("which items of the state require grad changes from step to step")
    every = _segment(checkpoint, inputs.shape[0])
    steps = [] if every else [(first, contexts0, new0), (second, contexts1, new1)]
    run_ = _Run(second, steps, valid, shortest, every, type(inputs.data))
    outside = [tensor for _, tensor in second.outside]
    return Loop.apply(inputs, *_components(state0), *outside, run=run_)


def check_checkpoint(checkpoint):
    """checkpoint as given (None, "sqrt" or a positive int), or a clear ValueError."""
    if checkpoint is None or checkpoint == "sqrt" or (type(checkpoint) is int and checkpoint >= 1):
        return checkpoint
    raise ValueError(f"checkpoint must be None, 'sqrt' or a positive int (steps per segment), got {checkpoint!r}")


def _segment(checkpoint, T):
    """Steps per checkpointed segment, or None to store every step's activations."""
    if checkpoint is None:
        return None
    return max(1, math.ceil(math.sqrt(T))) if checkpoint == "sqrt" else checkpoint
