"""Module and Parameter: parameters found by walking attributes, PyTorch's state_dict names, forward hooks."""
import itertools
from collections import namedtuple
from collections.abc import Mapping

from ..engine import backend
from ..tensors import Tensor
from ..tensors.methods import ToShorthands

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


class RemovableHandle:
    """What register_forward_hook / register_forward_pre_hook return: handle.remove() unregisters
    the hook, and `with module.register_forward_hook(f):` keeps it for the block only."""
    __slots__ = ("_hooks", "id")
    _next_id = itertools.count()

    def __init__(self, hooks):
        self._hooks, self.id = hooks, next(RemovableHandle._next_id)

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


class Module(ToShorthands):
    """Base class of layers and models.

    Parameters, sub-modules and lists/dicts of them assigned as attributes are found by
    walking the attributes in definition order; `register_buffer` adds non-trained state.
    """
    training = True
    _buffer_names = ()
    _non_persistent = frozenset()
    _call_hooks = None  # (pre-hooks, hooks), each {handle id: (hook, with_kwargs)}, once a hook is registered

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, *args, **kwargs):
        if self._call_hooks is None:
            return self.forward(*args, **kwargs)
        return self._forward_with_hooks(args, kwargs)

    # ---- hooks -----------------------------------------------------------------------
    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call hook(module, args) before every forward (hook(module, args, kwargs) with_kwargs=True).

        A return value other than None replaces the positional arguments (a non-tuple is wrapped
        in one); with_kwargs, it must be an (args, kwargs) pair. Returns a RemovableHandle.
        """
        return self._add_hook(0, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call hook(module, args, output) after every forward (hook(module, args, kwargs, output) with
        with_kwargs=True); a return value other than None replaces the output. Returns a RemovableHandle."""
        return self._add_hook(1, hook, prepend, with_kwargs)

    def _add_hook(self, which, hook, prepend, with_kwargs):
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}: a hook must be callable, got {type(hook).__name__}")
        if self._call_hooks is None:
            self._call_hooks = ({}, {})
        hooks = self._call_hooks[which]
        handle = RemovableHandle(hooks)
        if prepend:
            rest = dict(hooks)
            hooks.clear()
            hooks[handle.id] = (hook, with_kwargs)
            hooks.update(rest)
        else:
            hooks[handle.id] = (hook, with_kwargs)
        return handle

    def _forward_with_hooks(self, args, kwargs):
        pre_hooks, hooks = self._call_hooks
        for hook, with_kwargs in list(pre_hooks.values()):
            result = hook(self, args, kwargs) if with_kwargs else hook(self, args)
            if result is None:
                continue
            if not with_kwargs:
                args = result if isinstance(result, tuple) else (result,)
            elif isinstance(result, tuple) and len(result) == 2:
                args, kwargs = result
            else:
                raise RuntimeError(f"{type(self).__name__}: a forward pre-hook with kwargs must return None or "
                                   f"an (args, kwargs) pair, got {type(result).__name__}")
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(hooks.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:
                output = result
        return output

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

    def _children(self, remove_duplicate):
        """named_children(), or every (name, child) pair, a child held twice under both names."""
        if remove_duplicate:
            return self.named_children()
        return ((name, value) for name, value in self._members() if isinstance(value, Module))

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module ("") and every sub-module, a shared one once."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._children(remove_duplicate):
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        return (m for _, m in self.named_modules())

    def apply(self, fn):
        """Call fn(module) on every sub-module (children first) and then on this one; returns self.
        model.apply(init_weights) is PyTorch's way of initialising a whole model."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def get_submodule(self, target):
        """The sub-module named `target` as named_modules() names it ("" is this module)."""
        return self._lookup("submodule", target, self.named_modules(remove_duplicate=False))

    def get_parameter(self, target):
        """The parameter named `target` as named_parameters() names it ("encoder.weight")."""
        return self._lookup("parameter", target, self.named_parameters(remove_duplicate=False))

    def get_buffer(self, target):
        """The buffer named `target` as named_buffers() names it."""
        return self._lookup("buffer", target, self.named_buffers(remove_duplicate=False))

    def _lookup(self, kind, target, named):
        found = dict(named)
        if target not in found:
            raise AttributeError(f"{type(self).__name__} has no {kind} {target!r}; its {kind}s are "
                                 f"{[name for name in found if name][:12]}")
        return found[target]

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

    def register_buffer(self, name, tensor, persistent=True):
        """Keep `tensor` (or None) as non-trained state that moves with the module; saved in the
        state dict unless persistent=False."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_buffer: the name must be a non-empty string without '.', got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: cannot assign a {type(tensor).__name__} to buffer {name!r} "
                            "(a Tensor or None is required)")
        if name in vars(self) and name not in self._buffer_names:
            raise KeyError(f"register_buffer: attribute {name!r} already exists")
        if "_buffer_names" not in vars(self):
            self._buffer_names, self._non_persistent = [], set()
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)
        setattr(self, name, tensor)

    def register_parameter(self, name, param):
        """Set attribute `name` to `param` (a Parameter, or None for an absent one such as a bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: cannot assign a {type(param).__name__} to parameter {name!r} "
                            "(a Parameter or None is required)")
        setattr(self, name, param)

    def add_module(self, name, module):
        """Set attribute `name` to `module` (a Module or None), a child named `name`."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a Module")
        setattr(self, name, module)

    register_module = add_module

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        for name, buffer in self._named_buffers(prefix, recurse, remove_duplicate, persistent_only=False):
            if not remove_duplicate or id(buffer) not in seen:
                seen.add(id(buffer))
                yield name, buffer

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def _named_buffers(self, prefix, recurse, remove_duplicate, persistent_only):
        for name in self._buffer_names:
            if getattr(self, name) is not None and not (persistent_only and name in self._non_persistent):
                yield (f"{prefix}.{name}" if prefix else name), getattr(self, name)
        if not recurse:
            return
        for name, child in self._children(remove_duplicate):
            yield from child._named_buffers(f"{prefix}.{name}" if prefix else name, True, remove_duplicate,
                                            persistent_only)

    def _tensors(self):
        yield from self.named_parameters()
        yield from self.named_buffers()

    def _state_tensors(self, prefix=""):
        """(dotted name, tensor) for the state dict in PyTorch's order: a module's own parameters, its
        persistent buffers, then its children's; a shared tensor under each of its names."""
        for name, value in self._members():
            if isinstance(value, Parameter):
                yield (f"{prefix}.{name}" if prefix else name), value
        yield from self._named_buffers(prefix, False, False, persistent_only=True)
        for name, child in self._children(remove_duplicate=False):
            yield from child._state_tensors(f"{prefix}.{name}" if prefix else name)

    # ---- state -----------------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array copy} of parameters and persistent buffers, with PyTorch's key names
        in PyTorch's order (module by module: its parameters, its buffers, then its children's; a tied
        parameter under every name it has, as PyTorch lists it, all its names sharing one copy as
        PyTorch's share one storage, so tg.save stores it once)."""
        copies, out = {}, {}
        for name, t in self._state_tensors():
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
        own = dict(self._state_tensors())
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

    def to(self, device=None, dtype=None, non_blocking=False):
        """Move (in place) every parameter and buffer to `device` and/or floating `dtype`; also
        to(dtype) and to(tensor), as in PyTorch (non_blocking is accepted: copies are synchronous)."""
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype
        elif device is not None and not isinstance(device, str):
            device, dtype = None, device
        return self._convert(None if device is None else backend.parse_device(device),
                             None if dtype is None else backend.dtype(dtype))

    def requires_grad_(self, requires_grad=True):
        """Switch gradient recording on or off for every parameter (freeze with requires_grad_(False))."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

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
