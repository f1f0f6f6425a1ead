"""Derivatives of whole functions: PyTorch's torch.autograd.functional, on grad().

vjp, jvp, vhp, hvp, jacobian and hessian take `func` (Tensors in, a Tensor or a tuple of
Tensors out) and `inputs` (a Tensor or a tuple of Tensors), with PyTorch's signatures and
return conventions: a tuple of inputs gives tuples of results, a single Tensor gives a
single result. The inputs are used detached (so func's graph starts at them) unless
create_graph=True and they require grad, in which case the results stay connected to
the graph the inputs came from and can be differentiated again.

jvp uses the double-vjp trick (a forward-mode product from two reverse passes: the vjp
u -> J^T u is linear in u, and its own vjp with v is J v). jacobian takes one reverse
pass per output element; hessian is the Jacobian of the gradient. Both are meant for
small inputs. With strict=True an output that does not depend on an input raises; by
default its derivative is zeros, as in PyTorch. Import it as PyTorch's:
`from tinygrad_seq.autograd.functional import hvp`.
"""
from ..engine.function import enable_grad
from ..tensors import Tensor, ones_like, stack, zeros_like
from .grad import grad

__all__ = ["vjp", "jvp", "vhp", "hvp", "jacobian", "hessian"]


def _as_tuple(values, what, fn):
    if isinstance(values, Tensor):
        return False, (values,)
    if isinstance(values, (tuple, list)) and all(isinstance(v, Tensor) for v in values):
        return True, tuple(values)
    raise TypeError(f"{fn}: {what} must be a Tensor or a tuple of Tensors, got {type(values).__name__}")


def _prepare(inputs, create_graph, fn):
    """The inputs func will see: themselves (create_graph and on a graph), else detached copies requiring grad."""
    is_tuple, xs = _as_tuple(inputs, "inputs", fn)
    out = []
    for x in xs:
        if create_graph and x.requires_grad:
            out.append(x)
        else:
            d = x.detach()
            d.requires_grad = True
            out.append(d)
    return is_tuple, tuple(out)


def _call(func, xs, fn):
    with enable_grad():
        return _as_tuple(func(*xs), "the outputs of func", fn)


def _vectors(v, like, what, fn):
    """v checked against `like` (one Tensor per item, same shapes); None only for single-element items."""
    if v is None:
        if any(t.numel() != 1 for t in like):
            raise RuntimeError(f"{fn}: v can be omitted only when every {what} has one element")
        return tuple(ones_like(t) for t in like)
    _, vs = _as_tuple(v, "v", fn)
    if len(vs) != len(like) or any(a.shape != b.shape for a, b in zip(vs, like)):
        raise ValueError(f"{fn}: v has shapes {[tuple(a.shape) for a in vs]}, the {what}s have "
                         f"{[tuple(b.shape) for b in like]}")
    return vs


def _grads(outputs, xs, vs, create_graph, strict, fn, retain_graph=None):
    """grad() over the outputs that are on the tape, zeros (or an error, if strict) for unused inputs."""
    pairs = [(o, v) for o, v in zip(outputs, vs) if o.requires_grad]
    if pairs:
        with enable_grad():
            gs = grad([o for o, _ in pairs], list(xs), [v for _, v in pairs], retain_graph=retain_graph,
                      create_graph=create_graph, allow_unused=True)
    else:
        gs = (None,) * len(xs)
    out = []
    for i, (x, g) in enumerate(zip(xs, gs)):
        if g is None:
            if strict:
                raise RuntimeError(f"{fn}: the output of func is independent of input {i} (shape {x.shape}); "
                                   "strict=False gives zeros")
            g = zeros_like(x)
        out.append(g if create_graph else g.detach())
    return tuple(out)


def _result(values, is_tuple):
    return tuple(values) if is_tuple else values[0]


def _outputs(outs, is_tuple, create_graph):
    return _result([o if create_graph else o.detach() for o in outs], is_tuple)


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product at `inputs`."""
    in_tuple, xs = _prepare(inputs, create_graph, "vjp")
    out_tuple, outs = _call(func, xs, "vjp")
    vs = _vectors(v, outs, "output", "vjp")
    return _outputs(outs, out_tuple, create_graph), _result(_grads(outs, xs, vs, create_graph, strict, "vjp"), in_tuple)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product, by the double-vjp trick."""
    in_tuple, xs = _prepare(inputs, create_graph, "jvp")
    vs = _vectors(v, xs, "input", "jvp")
    out_tuple, outs = _call(func, xs, "jvp")
    dummies = []
    for o in outs:
        u = zeros_like(o)
        u.requires_grad = True
        dummies.append(u)
    with enable_grad():
        # u -> J^T u, recorded on the tape; it is linear in u, so its vjp with v is J v
        transposed = _grads(outs, xs, dummies, True, strict, "jvp")
        pairs = [(g, v) for g, v in zip(transposed, vs) if g.requires_grad]
        if pairs:
            products = grad([g for g, _ in pairs], dummies, [v for _, v in pairs],
                            create_graph=create_graph, allow_unused=True)
        else:
            products = (None,) * len(dummies)
    result = [zeros_like(o) if p is None else (p if create_graph else p.detach()) for o, p in zip(outs, products)]
    return _outputs(outs, out_tuple, create_graph), _result(result, out_tuple)


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H) for a scalar func: the gradient of <grad func, v>."""
    in_tuple, xs = _prepare(inputs, create_graph, "vhp")
    out_tuple, outs = _call(func, xs, "vhp")
    if len(outs) != 1 or outs[0].numel() != 1:
        raise RuntimeError(f"vhp: func must return a single Tensor with one element, got shapes "
                           f"{[tuple(o.shape) for o in outs]}")
    vs = _vectors(v, xs, "input", "vhp")
    with enable_grad():
        first = _grads(outs, xs, _vectors(None, outs, "output", "vhp"), True, strict, "vhp")
        second = _grads(first, xs, vs, create_graph, strict, "vhp")
    return _outputs(outs, False, create_graph), _result(second, in_tuple)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v) for a scalar func. The Hessian of a twice differentiable function is
    symmetric, so H v = (v^T H)^T: computed as vhp, by two reverse passes."""
    out, product = vhp(func, inputs, v, create_graph, strict)
    return out, product


def _jacobian_rows(outs, xs, create_graph, strict, fn):
    """Per output, per input: d out / d x of shape out.shape + x.shape (one reverse pass per output element)."""
    result = []
    for k, o in enumerate(outs):
        rows = [[] for _ in xs]
        basis = zeros_like(o).array.reshape(-1)
        for j in range(basis.shape[0]):
            e = basis.copy()
            e[j] = 1
            gs = _grads((o,), xs, (Tensor._make(e.reshape(o.shape), None, 0),), create_graph, strict, fn,
                        retain_graph=True)
            for i, g in enumerate(gs):
                rows[i].append(g)
        result.append(tuple(stack(r).reshape(o.shape + x.shape) if r else zeros_like(x).reshape(o.shape + x.shape)
                            for r, x in zip(rows, xs)))
    return result


def jacobian(func, inputs, create_graph=False, strict=False):
    """d func / d inputs: for one output and one input a Tensor of shape out.shape + in.shape;
    tuples as in PyTorch (per output, per input) when func returns or inputs is a tuple."""
    in_tuple, xs = _prepare(inputs, create_graph, "jacobian")
    out_tuple, outs = _call(func, xs, "jacobian")
    per_output = [tuple(g if create_graph else g.detach() for g in row)
                  for row in _jacobian_rows(outs, xs, create_graph, strict, "jacobian")]
    return _result([_result(row, in_tuple) for row in per_output], out_tuple)


def hessian(func, inputs, create_graph=False, strict=False):
    """The Hessian of a scalar func: in.shape + in.shape for one input, a tuple of tuples for several."""
    in_tuple, xs = _prepare(inputs, create_graph, "hessian")

    def gradient(*ys):
        out_tuple, outs = _call(func, ys, "hessian")
        if len(outs) != 1 or outs[0].numel() != 1:
            raise RuntimeError(f"hessian: func must return a single Tensor with one element, got shapes "
                               f"{[tuple(o.shape) for o in outs]}")
        gs = _grads(outs, ys, _vectors(None, outs, "output", "hessian"), True, strict, "hessian")
        return gs if in_tuple else gs[0]

    return jacobian(gradient, xs if in_tuple else xs[0], create_graph=create_graph, strict=strict)
