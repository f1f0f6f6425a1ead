"""The Optimizer base class: parameter groups, per-parameter state, step, zero_grad and PyTorch's
state-dict layout (the optimizers themselves are in sgd.py, adaptive.py and lbfgs.py).

An optimizer holds `param_groups` (a list of dicts: "params" plus that group's
hyperparameters) and per-parameter `state` (a dict keyed by the parameter). `step()`
reads each parameter's `.grad`, skips parameters whose grad is None (those that do not
require grad, frozen ones included, as in PyTorch), and updates `p.array` in place, so
modules that share a parameter object stay in sync. Gradient arrays are only read. State
arrays live on the parameter's device in the parameter's dtype, and hyperparameters are kept
as Python numbers, so float32 stays float32.
"""
from collections.abc import Mapping

from ..engine import backend
from ..engine.function import enable_grad
from ..tensors import Tensor


class Optimizer:
    """Base class: parameter groups, zero_grad, step, state_dict / load_state_dict.

    Subclasses give `defaults`, name the hyperparameters that must be >= 0 in `_nonnegative`
    (betas are checked wherever a group has them), add any other rule by extending
    `_check(group)`, and update one parameter in `_update(data, grad, state, group)` on raw arrays (with
    maximize=True, `grad` is already negated).
    """
    _flags = ()       # hyperparameters that are booleans
    _pairs = ()       # hyperparameters that are pairs of floats (Adam's betas)
    _ints = ()        # hyperparameters that are integers (LBFGS's max_iter)
    _names = ()       # hyperparameters that are a string or None (LBFGS's line_search_fn)
    _state_keys = ()  # the per-parameter state a state dict may hold
    _nonnegative = ()  # hyperparameters that must be >= 0, in every group
    _scalars = {"step": int}  # state entries that are Python numbers (the rest are arrays like the parameter)

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
        kind = "a bool" if key in self._flags else "a pair of numbers" if key in self._pairs else \
            "an integer" if key in self._ints else "a string or None" if key in self._names else "a number"
        try:
            if key in self._flags:
                if value not in (True, False):
                    raise TypeError
                return bool(value)
            if key in self._pairs:
                first, second = value
                return (float(first), float(second))
            if key in self._ints:
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                return int(value)
            if key in self._names:
                if value is not None and not isinstance(value, str):
                    raise TypeError
                return value
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self._name}: hyperparameter {key!r} must be {kind}, got {value!r}") from None

    def _check(self, group):
        """Check a group's hyperparameters: _nonnegative ones >= 0, betas in [0, 1); a subclass adds its own rules."""
        for key in self._nonnegative:
            _at_least(self._name, key, group[key])
        if "betas" in group:
            _check_betas(self._name, group["betas"])

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
                if group.get("maximize"):
                    grad = -grad
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
                    state[index] = {key: _snapshot(value) for key, value in entry.items()}
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
        if key in self._scalars and key in self._state_keys:
            return self._scalars[key](value.item() if hasattr(value, "item") else value)
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


def _snapshot(value):
    """A state entry as a state dict holds it: arrays as NumPy copies (lists of them too), numbers as they are."""
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    return backend.to_host(value).copy() if backend.is_array(value) else value


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


def _range(name, key, value, low, high, high_open=False):
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f"{name}: invalid {key} {value!r} (expected {low:g} <= {key} {'<' if high_open else '<='} "
                         f"{high:g})")


def _check_betas(name, betas):
    for k, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: invalid beta parameter at index {k}: {beta!r} (expected 0 <= beta < 1)")


def _lerp_(start, end, weight):
    """start += weight * (end - start), in place, written from the nearer end as torch.lerp_ is."""
    if weight < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)

