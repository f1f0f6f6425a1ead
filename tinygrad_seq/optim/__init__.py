"""Optimizers with PyTorch's update rules: SGD, Adam, AdamW, RMSprop (learning-rate
schedules are in `optim.lr_scheduler`).

An optimizer holds `param_groups` (a list of dicts: "params" plus that group's
hyperparameters) and per-parameter `state` (a dict keyed by the parameter). `step()`
reads each parameter's `.grad`, skips parameters whose grad is None, and updates
`p.array` in place, so modules that share a parameter object stay in sync. Gradient arrays
are only read. State arrays live on the parameter's device in the parameter's dtype, and
hyperparameters are kept as Python floats, so float32 stays float32.
"""
from collections.abc import Mapping

from ..engine import backend
from ..engine.function import enable_grad
from ..tensors import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]


class Optimizer:
    """Base class: parameter groups, zero_grad, step, state_dict / load_state_dict.

    Subclasses give `defaults`, check a group's hyperparameters in `_check(group)` and
    update one parameter in `_update(data, grad, state, group)` on raw arrays.
    """
    _flags = ()       # hyperparameters that are booleans
    _pairs = ()       # hyperparameters that are pairs of floats (Adam's betas)
    _state_keys = ()  # the per-parameter state a state dict may hold (besides "step")

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{self._name}: params must be an iterable of Tensors or of dicts, got a single "
                            "Tensor (pass [tensor] or model.parameters())")
        if callable(getattr(params, "named_parameters", None)):
            raise TypeError(f"{self._name}: params must be an iterable of Tensors or of dicts, got the "
                            f"{type(params).__name__} module itself (pass model.parameters())")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self):
        return type(self).__name__

    def add_param_group(self, group):
        """Add a dict with "params" and optional hyperparameters (missing ones come from defaults)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' entry, got {group!r}")
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: parameters must be in an ordered collection (list, tuple, "
                            "generator), not a set, so that their order is deterministic")
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{self._name}: optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"{self._name}: optimizer got a tensor that does not require grad "
                                 f"(shape {p.shape}); create parameters with requires_grad=True "
                                 "or pass model.parameters()")
            if not p.is_leaf:
                raise ValueError(f"{self._name}: cannot optimize a non-leaf tensor (made by {p.grad_fn!r}); "
                                 "optimize the leaf it was computed from")
            if id(p) in seen:
                raise ValueError(f"{self._name}: a parameter appears more than once (in one group or "
                                 "in several); each parameter must be given once")
            seen.add(id(p))
        settings = {key: self._hyper(key, value) for key, value in {**self.defaults, **group}.items()
                    if key != "params"}
        self._check(settings)
        self.param_groups.append({"params": params, **settings})

    def _hyper(self, key, value):
        """A hyperparameter as a plain Python value (NumPy scalars would promote float32 math)."""
        if key not in self.defaults:
            return value  # a user's own entry, kept as given
        kind = "a bool" if key in self._flags else "a pair of numbers" if key in self._pairs else "a number"
        try:
            if key in self._flags:
                if value not in (True, False):
                    raise TypeError
                return bool(value)
            if key in self._pairs:
                first, second = value
                return (float(first), float(second))
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self._name}: hyperparameter {key!r} must be {kind}, got {value!r}") from None

    def _check(self, group):
        raise NotImplementedError

    def _update(self, data, grad, state, group):
        raise NotImplementedError

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (set it to None, or fill it with zeros in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.array.fill(0)

    def step(self, closure=None):
        """Update every parameter that has a gradient; `closure` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.array if isinstance(p.grad, Tensor) else p.grad
                if grad.shape != p.array.shape or backend.device_of(grad) != backend.device_of(p.array):
                    raise ValueError(f"{self._name}: parameter of shape {p.shape} on {p.device} has a gradient "
                                     f"of shape {grad.shape} on {backend.device_of(grad)}")
                if grad.dtype != p.array.dtype:
                    grad = grad.astype(p.array.dtype)
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {}
                self._update(p.array, grad, state, group)
        return loss

    # ---- state dicts -------------------------------------------------------------------
    def state_dict(self):
        """A snapshot in PyTorch's layout, with parameters replaced by their index:

        {"state": {index: {"step": int, name: NumPy array, ...}},
         "param_groups": [{hyperparameters..., "params": [index, ...]}, ...]}
        """
        groups, state, index = [], {}, 0
        for group in self.param_groups:
            saved = {key: value for key, value in group.items() if key != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            for p in group["params"]:
                entry = self.state.get(p)
                if entry:
                    state[index] = {key: backend.to_host(value).copy() if backend.is_array(value) else value
                                    for key, value in entry.items()}
                index += 1
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (parameters matched by position, as in PyTorch).

        Hyperparameters come from the state dict; state arrays are copied to each parameter's
        device and dtype. On any error the optimizer is left unchanged.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{self._name}.load_state_dict: expected a dict with keys 'state' and "
                             f"'param_groups' (from state_dict()), got {_describe(state_dict)}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{self._name}.load_state_dict: the state dict has {len(saved_groups)} parameter "
                             f"groups, this optimizer has {len(self.param_groups)}")
        by_index, groups = {}, []
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, Mapping):
                raise ValueError(f"{self._name}.load_state_dict: parameter group {k} is a "
                                 f"{type(saved).__name__}, expected a dict")
            indices = list(saved.get("params", ()))
            if len(indices) != len(group["params"]):
                raise ValueError(f"{self._name}.load_state_dict: parameter group {k} has {len(indices)} "
                                 f"parameters in the state dict and {len(group['params'])} in this optimizer")
            by_index.update(zip((int(i) for i in indices), group["params"]))
            settings = {key: self._hyper(key, value) for key, value in {**group, **saved}.items()
                        if key != "params"}
            self._check(settings)
            groups.append({"params": group["params"], **settings})
        state = {}
        for index, entry in state_dict["state"].items():
            p = by_index.get(int(index))
            if p is None:
                raise ValueError(f"{self._name}.load_state_dict: state for parameter {index}, "
                                 "which is in no parameter group")
            state[p] = {key: self._load_value(key, value, p, index) for key, value in entry.items()}
        self.param_groups, self.state = groups, state

    def _load_value(self, key, value, p, index):
        where = f"{self._name}.load_state_dict: state {key!r} of parameter {index}"
        if key == "step" and "step" in self._state_keys:
            return int(value.item() if hasattr(value, "item") else value)
        if key not in self._state_keys:
            raise ValueError(f"{where} is not state of {self._name} (expected {', '.join(self._state_keys)})")
        value = value.array if isinstance(value, Tensor) else value
        if not backend.is_array(value) or value.shape != p.shape:
            raise ValueError(f"{where}: expected an array of shape {p.shape}, got {_describe(value)}")
        return backend.new_array(value, p.dtype, p.device)

    def __repr__(self):
        lines = [f"{self._name} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines + [")"])


def _describe(value):
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {shape}" if shape is not None else repr(value)[:80]


def _buffer(state, key, data):
    """state[key], created as zeros like `data` (same device and dtype) on first use."""
    buf = state.get(key)
    if buf is None:
        buf = state[key] = backend.array_namespace(data).zeros_like(data)
    return buf


def _at_least(name, key, value, low=0.0):
    if not value >= low:
        raise ValueError(f"{name}: invalid {key} {value!r} (expected {key} >= {low:g})")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    g = grad + weight_decay * p;  b = g at the first step, else momentum * b + (1 - dampening) * g;
    g = g + momentum * b if nesterov else b (when momentum != 0);  p -= lr * g
    """
    _flags = ("nesterov",)
    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check(self, group):
        for key in ("lr", "momentum", "weight_decay"):
            _at_least(self._name, key, group[key])
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


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, optional AMSGrad and L2 weight decay.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  (AMSGrad: v = max(v_max, v))
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    _flags = ("amsgrad",)
    _pairs = ("betas",)
    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _check(self, group):
        for key in ("lr", "eps", "weight_decay"):
            _at_least(self._name, key, group[key])
        for k, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{self._name}: invalid beta parameter at index {k}: {beta!r} "
                                 "(expected 0 <= beta < 1)")

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        step = state["step"] = state.get("step", 0) + 1
        if weight_decay != 0:
            if self._decoupled:
                data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * data
        exp_avg, exp_avg_sq = _buffer(state, "exp_avg", data), _buffer(state, "exp_avg_sq", data)
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * (grad * grad)
        if group["amsgrad"]:
            max_exp_avg_sq = _buffer(state, "max_exp_avg_sq", data)
            xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            exp_avg_sq = max_exp_avg_sq
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        denom = xp.sqrt(exp_avg_sq) / bias_correction2 ** 0.5
        denom += eps
        data -= (lr / bias_correction1) * (exp_avg / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay first."""
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton) with optional momentum and centering, eps outside the square root.

    s = alpha s + (1 - alpha) g^2;  centered: a = alpha a + (1 - alpha) g, s~ = s - a^2;
    d = sqrt(s~) + eps;  momentum: b = momentum b + g / d, p -= lr b;  else p -= lr g / d
    """
    _flags = ("centered",)
    _state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _check(self, group):
        for key in ("lr", "alpha", "eps", "weight_decay", "momentum"):
            _at_least(self._name, key, group[key])

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, alpha, momentum, weight_decay = group["lr"], group["alpha"], group["momentum"], group["weight_decay"]
        state["step"] = state.get("step", 0) + 1
        if weight_decay != 0:
            grad = grad + weight_decay * data
        square_avg = _buffer(state, "square_avg", data)
        square_avg *= alpha
        square_avg += (1 - alpha) * (grad * grad)
        if group["centered"]:
            grad_avg = _buffer(state, "grad_avg", data)
            grad_avg *= alpha
            grad_avg += (1 - alpha) * grad
            # s - a^2 >= 0 in exact arithmetic; clamp the rounding error that PyTorch turns into NaN
            avg = xp.sqrt(xp.maximum(square_avg - grad_avg * grad_avg, 0))
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if momentum > 0:
            buf = _buffer(state, "momentum_buffer", data)
            buf *= momentum
            buf += grad / avg
            data -= lr * buf
        else:
            data -= lr * (grad / avg)


from . import lr_scheduler  # noqa: E402  (after the optimizers: schedulers only read param_groups)
