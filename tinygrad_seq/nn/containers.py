"""Containers: Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict, with PyTorch's names for
their members (0, 1, ... or keys)."""
from ..tensors import Tensor
from .module import Module, Parameter


def _module(owner, value):
    if not isinstance(value, Module):
        raise TypeError(f"{owner}: expected a Module, got {type(value).__name__}")
    return value


class Sequential(Module):
    """Apply modules in order: Sequential(a, b, c)(x) == c(b(a(x))); children are named 0, 1, 2, ..."""

    def __init__(self, *modules):
        self.layers = [_module("Sequential", m) for m in modules]

    def _members(self):
        for i, m in enumerate(self.layers):
            yield str(i), m

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x

    def __getitem__(self, i):
        return Sequential(*self.layers[i]) if isinstance(i, slice) else self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def append(self, module):
        self.layers.append(_module("Sequential", module))
        return self


class _ListOf(Module):
    """What ModuleList and ParameterList share: a list whose members are named 0, 1, ... as in PyTorch,
    each checked (and wrapped) by the class's `_member`."""

    def __init__(self, values=None):
        self._list = []
        if values is not None:
            self.extend(values)

    def _members(self):
        for i, m in enumerate(self._list):
            yield str(i), m

    def __getitem__(self, i):
        return type(self)(self._list[i]) if isinstance(i, slice) else self._list[i]

    def __setitem__(self, i, value):
        self._list[i] = self._member(value)

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value):
        self._list.append(self._member(value))
        return self

    def extend(self, values):
        self._list.extend(self._member(v) for v in values)
        return self


class _DictOf(Module):
    """What ModuleDict and ParameterDict share: an ordered dict whose members are named by their (string)
    keys, as in PyTorch, each checked (and wrapped) by the class's `_member`."""

    def __init__(self, values=None):
        self._dict = {}
        if values is not None:
            self.update(values)

    def _members(self):
        yield from self._dict.items()

    def __getitem__(self, key):
        return self._dict[key]

    def __setitem__(self, key, value):
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__}: keys must be strings, got {type(key).__name__}")
        self._dict[key] = self._member(value)

    def __delitem__(self, key):
        del self._dict[key]

    def __contains__(self, key):
        return key in self._dict

    def __len__(self):
        return len(self._dict)

    def __iter__(self):
        return iter(self._dict)

    def keys(self):
        return self._dict.keys()

    def values(self):
        return self._dict.values()

    def items(self):
        return self._dict.items()

    def pop(self, key):
        return self._dict.pop(key)

    def clear(self):
        self._dict.clear()

    def update(self, values):
        """Add (key, value) pairs from a mapping or an iterable of pairs."""
        for key, value in (values.items() if hasattr(values, "items") else values):
            self[key] = value


class ModuleList(_ListOf):
    """A list of modules whose parameters the owner finds, named `name.0`, `name.1`, ... as in PyTorch."""

    def _member(self, value):
        return _module(type(self).__name__, value)

    def __delitem__(self, i):
        del self._list[i]

    def insert(self, index, module):
        self._list.insert(index, self._member(module))


class ModuleDict(_DictOf):
    """An ordered dict of modules (string keys) whose parameters are named `name.key.*`, as in PyTorch."""

    def _member(self, value):
        return _module(type(self).__name__, value)


def _parameter(owner, value):
    """A Parameter as is; another Tensor becomes a Parameter (a copy that requires grad), as PyTorch wraps it."""
    if isinstance(value, Parameter):
        return value
    if isinstance(value, Tensor):
        return Parameter(value)
    raise TypeError(f"{owner}: expected a Parameter or Tensor, got {type(value).__name__}")


def _describe(name, p):
    size = "x".join(str(n) for n in p.shape)
    device = f" (device {p.device})" if p.device != "cpu" else ""
    return f"  ({name}): Parameter containing: [{p.dtype} of size {size}{device}]"


class ParameterList(_ListOf):
    """A list of parameters whose owner finds them, named `name.0`, `name.1`, ... as in PyTorch."""

    def _member(self, value):
        return _parameter(type(self).__name__, value)

    def __repr__(self):
        return "\n".join(["ParameterList("] + [_describe(i, p) for i, p in enumerate(self._list)] + [")"])


class ParameterDict(_DictOf):
    """An ordered dict of parameters (string keys) named `name.key`, as in PyTorch."""

    def _member(self, value):
        return _parameter(type(self).__name__, value)

    def get(self, key, default=None):
        return self._dict.get(key, default)

    def __repr__(self):
        return "\n".join(["ParameterDict("] + [_describe(k, p) for k, p in self._dict.items()] + [")"])
