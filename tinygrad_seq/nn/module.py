"""Module and Parameter: parameters found by walking attributes, PyTorch's state_dict names."""
from collections import namedtuple
from collections.abc import Mapping

from ..engine import backend
from ..tensors import Tensor

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


def check_input(layer, x, weight):
    """Refuse an input whose dtype or device differs from the layer's parameters, naming both and the fix."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(layer).__name__}: input must be a Tensor, got {type(x).__name__}")
    if weight is not None and (x.dtype != weight.dtype or x.device != weight.device):
        raise ValueError(f"{type(layer).__name__}: input is {x.dtype} on {x.device} but the parameters are "
                         f"{weight.dtype} on {weight.device}; convert one with .to() (x.to(dtype=...) or "
                         "layer.to(...))")


class Parameter(Tensor):
    """A leaf Tensor that a Module trains: requires_grad=True unless told otherwise."""
    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None, device=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models.

    Parameters, sub-modules and lists/dicts of them assigned as attributes are found by
    walking the attributes in definition order; `register_buffer` adds non-trained state.
    """
    training = True
    _buffer_names = ()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal -------------------------------------------------------------------
    def _members(self):
        """(name, value) for every Parameter and Module held directly or in lists/dicts."""
        def walk(name, value):
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    yield from walk(f"{name}.{i}", v)
            elif isinstance(value, dict):
                for k, v in value.items():
                    yield from walk(f"{name}.{k}", v)
        for name, value in vars(self).items():
            yield from walk(name, value)

    def named_children(self):
        seen = set()
        for name, value in self._members():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs in definition order; a shared one once unless remove_duplicate=False."""
        seen = set()
        for name, value in self._members():
            full = f"{prefix}.{name}" if prefix else name
            items = [(full, value)] if isinstance(value, Parameter) else \
                (value.named_parameters(full, remove_duplicate=remove_duplicate) if recurse else [])
            for n, p in items:
                if not remove_duplicate or id(p) not in seen:
                    seen.add(id(p))
                    yield n, p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def register_buffer(self, name, tensor):
        """Keep `tensor` as non-trained state that moves with the module and is saved."""
        if "_buffer_names" not in vars(self):
            self._buffer_names = []
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        setattr(self, name, tensor)

    def named_buffers(self, prefix="", remove_duplicate=True):
        for name in self._buffer_names:
            if getattr(self, name) is not None:
                yield (f"{prefix}.{name}" if prefix else name), getattr(self, name)
        children = self.named_children() if remove_duplicate else \
            ((n, m) for n, m in self._members() if isinstance(m, Module))
        for name, child in children:
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def _tensors(self, remove_duplicate=True):
        yield from self.named_parameters(remove_duplicate=remove_duplicate)
        yield from self.named_buffers(remove_duplicate=remove_duplicate)

    # ---- state -----------------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array copy} of parameters and buffers, PyTorch's key names (a tied
        parameter under every name it has, as PyTorch lists it, all its names sharing one copy
        as PyTorch's share one storage, so tg.save stores it once)."""
        copies, out = {}, {}
        for name, t in self._tensors(remove_duplicate=False):
            if id(t) not in copies:
                copies[id(t)] = backend.to_host(t.array).copy()
            out[name] = copies[id(t)]
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters in place (cast to each parameter's dtype).

        strict=True raises on missing or unexpected keys; shape mismatches always raise. A tied
        parameter is loaded from any of its names (PyTorch's state dicts list them all).
        Returns (missing_keys, unexpected_keys).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}"
                            + ("; read the file first: model.load_state_dict(tg.load(path))"
                               if isinstance(state_dict, (str, bytes)) or hasattr(state_dict, "__fspath__") else ""))
        own = dict(self._tensors(remove_duplicate=False))
        present = {id(t) for k, t in own.items() if k in state_dict}
        missing = [k for k, t in own.items() if id(t) not in present]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.array if isinstance(value, Tensor) else value
            if not backend.is_array(value):
                problems.append(f"{name}: expected an array, got {type(value).__name__}")
                continue
            if value.dtype.kind not in "fiu":
                problems.append(f"{name}: dtype {value.dtype} cannot be loaded into a {target.dtype} parameter")
            elif tuple(value.shape) != target.shape:
                problems.append(f"size mismatch for {name}: the file has shape {tuple(value.shape)}, "
                                f"the module has {target.shape}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        for name, target in own.items():
            if name in state_dict:
                value = state_dict[name]
                value = value.array if isinstance(value, Tensor) else value
                target._data = backend.new_array(value, target.dtype, target.device)
        return LoadResult(missing, unexpected)

    # ---- modes, devices, dtypes ------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _convert(self, device=None, dtype=None):
        def convert(data):
            if device is not None:
                data = backend.to_device(data, device)
            return data.astype(dtype) if dtype is not None and backend.is_floating(data.dtype) else data
        for _, t in self._tensors():
            t._data = convert(t.array)
            if t.grad is not None:
                t.grad._data = convert(t.grad.array)
        return self

    def to(self, device=None, dtype=None):
        """Move (in place) every parameter and buffer to `device` and/or floating `dtype`."""
        return self._convert(None if device is None else backend.parse_device(device),
                             None if dtype is None else backend.dtype(dtype))

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def double(self):
        return self.to(dtype=backend.float64)

    def float(self):
        return self.to(dtype=backend.float32)

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (set it to None, or fill it with zeros in place)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.array.fill(0)

    # ---- repr ------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + "\n" + "\n".join(lines) + "\n)"
