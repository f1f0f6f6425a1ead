"""Stochastic gradient descent (PyTorch's torch.optim.SGD)."""
from ..engine import backend
from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    g = grad + weight_decay * p;  b = g at the first step, else momentum * b + (1 - dampening) * g;
    g = g + momentum * b if nesterov else b (when momentum != 0);  p -= lr * g
    """
    _flags = ("nesterov", "maximize")
    _state_keys = ("momentum_buffer",)
    _nonnegative = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check(self, group):
        super()._check(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{self._name}: Nesterov momentum requires momentum > 0 and zero dampening "
                             f"(got momentum={group['momentum']}, dampening={group['dampening']})")

    def _update(self, data, grad, state, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grad = grad + weight_decay * data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:  # an array even for 0-d parameters, whose arithmetic gives NumPy scalars
                buf = state["momentum_buffer"] = backend.array_namespace(data).array(grad, copy=True)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        data -= lr * grad


