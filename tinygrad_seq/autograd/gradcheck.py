"""gradcheck / gradgradcheck: the tape's first and second derivatives against central finite
differences, in float64."""
import random

from ..engine import backend
from ..engine.function import enable_grad, no_grad
from ..tensors import Tensor
from .grad import grad


class GradcheckError(AssertionError):
    """The tape's gradient and the finite-difference gradient disagree."""


def _weighted_sum(fn, inputs, weights):
    """sum_k <w_k, fn(*inputs)_k>: one scalar in which every output element counts."""
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    total = 0.0
    for o, w in zip(outs, weights):
        if w is not None:
            total = (o * w).sum() + total
    return total


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Check the tape's gradient of fn against central finite differences.

    fn takes `inputs` and returns a Tensor or a tuple of Tensors; the check differentiates
    sum_k <w_k, output_k> with fixed random weights w_k. Every input that requires grad must
    be float64. Returns True, or raises GradcheckError naming the input, the worst element,
    both values and their difference (returns False instead if raise_exception=False).
    """
    inputs = list(inputs)
    checked = [k for k, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for k in checked:
        if inputs[k].dtype != backend.float64:
            raise TypeError(f"gradcheck: input {k} is {inputs[k].dtype}; finite differences need float64")
    with no_grad():
        out = fn(*inputs)
    stream = random.Random(0)
    weights = [Tensor([stream.uniform(0.5, 1.5) for _ in range(o.numel())], dtype=backend.float64,
                      device=o.device).reshape(o.shape)
               if isinstance(o, Tensor) and backend.is_floating(o.dtype) else None
               for o in (out if isinstance(out, (tuple, list)) else (out,))]
    for k in checked:
        inputs[k].grad = None
    loss = _weighted_sum(fn, inputs, weights)
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        raise ValueError("gradcheck: fn's outputs do not depend on any input that requires grad")
    loss.backward()
    for k in checked:
        x = inputs[k]
        original = x.array
        base = backend.to_host(original).astype(backend.float64).reshape(-1)
        analytic = backend.to_host(x.grad.array).reshape(-1) if x.grad is not None else base * 0
        numeric = base * 0
        with no_grad():
            for j in range(base.size):
                for sign in (1, -1):
                    moved = base.copy()
                    moved[j] += sign * eps
                    x.data = backend.to_device(moved.reshape(original.shape), x.device)
                    numeric[j] += sign * _weighted_sum(fn, inputs, weights).item() / (2 * eps)
        x.data = original
        excess = abs(analytic - numeric) - (atol + rtol * abs(numeric))
        if base.size and excess.max() > 0:
            j = int(excess.argmax())
            message = (f"gradcheck: input {k} (shape {x.shape}): at element {_unravel(j, x.shape)} the tape gives "
                       f"{analytic[j]:.10g}, finite differences give {numeric[j]:.10g} "
                       f"(difference {abs(analytic[j] - numeric[j]):.3g}; atol={atol}, rtol={rtol})")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True


def _unravel(flat_index, shape):
    """The multi-index of a flat C-order index."""
    index = []
    for n in reversed(shape):
        flat_index, r = divmod(flat_index, n)
        index.append(r)
    return tuple(reversed(index))


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Check second derivatives: gradcheck of the tape's vector-Jacobian product of fn.

    The checked function is (inputs, v) -> grad(fn(inputs), inputs, v, create_graph=True):
    its derivatives with respect to the inputs are fn's second derivatives (the backward
    rules run on Tensors), those with respect to v check that
    the recorded gradient is the right linear function of v. v (grad_outputs) is a random
    float64 direction per floating output, seeded by `seed`, as PyTorch draws it; pass your
    own to fix it. Inputs that require grad must be float64. Returns True or raises
    GradcheckError (False if raise_exception=False).
    """
    inputs = list(inputs)
    checked = [k for k, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck: no input requires grad")
    with no_grad():
        out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    floating = [k for k, o in enumerate(outs) if isinstance(o, Tensor) and backend.is_floating(o.dtype)]
    if grad_outputs is None:
        stream = random.Random(seed)
        grad_outputs = [Tensor([stream.gauss(0.0, 1.0) for _ in range(outs[k].numel())], dtype=backend.float64,
                               device=outs[k].device).reshape(outs[k].shape) for k in floating]
    else:
        grad_outputs = list(grad_outputs if isinstance(grad_outputs, (tuple, list)) else (grad_outputs,))
        if len(grad_outputs) != len(floating):
            raise ValueError(f"gradgradcheck: {len(grad_outputs)} grad_outputs for {len(floating)} floating outputs")
    vs = []
    for v in grad_outputs:
        v = v.detach()
        v.requires_grad = True
        vs.append(v)
    n = len(inputs)

    def first_derivatives(*args):
        xs, v = args[:n], args[n:]
        with enable_grad():  # gradcheck evaluates the finite differences under no_grad
            out = fn(*xs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            pairs = [(outs[k], v[j]) for j, k in enumerate(floating) if outs[k].requires_grad]
            if not pairs:
                raise ValueError("gradgradcheck: fn's outputs do not depend on any input that requires grad")
            gs = grad([o for o, _ in pairs], [xs[k] for k in checked], [w for _, w in pairs],
                      create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first_derivatives, inputs + vs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception)
