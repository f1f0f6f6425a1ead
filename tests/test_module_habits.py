"""The Module habits PyTorch programs rely on: apply, forward hooks, requires_grad_, lookups by name,
non-persistent buffers, add_module / register_parameter, shared modules listed once."""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import nn


def model():
    tg.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2))


def test_apply_visits_children_first_then_self():
    seen = []
    m = model()
    assert m.apply(lambda module: seen.append(type(module).__name__)) is m
    assert seen == ["Linear", "Linear", "Tanh", "Sequential", "Linear", "Sequential"]


def test_apply_order_is_pytorchs():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()),
                                 torch.nn.Linear(4, 2))
    names, tnames = [], []
    model().apply(lambda m: names.append(type(m).__name__))
    theirs.apply(lambda m: tnames.append(type(m).__name__))
    assert names == tnames


def test_apply_initialises_a_whole_model():
    def init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)
    m = model().apply(init_weights)
    assert all(np.all(p.numpy() == (0.5 if name.endswith("weight") else 0.0)) for name, p in m.named_parameters())


def test_forward_hooks_see_and_replace_inputs_and_outputs():
    layer, calls = nn.Linear(3, 2), []
    x = tg.randn(4, 3)
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    post = layer.register_forward_hook(lambda m, args, out: calls.append((m, args[0], out)))
    out = layer(x)
    module, seen_input, seen_output = calls[0]
    assert module is layer and np.all(seen_input.numpy() == 0) and seen_output is out
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(layer.bias.numpy(), (4, 2)))
    pre.remove()
    replaced = layer.register_forward_hook(lambda m, args, out: out * 2)
    np.testing.assert_allclose(layer(x).numpy(), 2 * (x.numpy() @ layer.weight.numpy().T + layer.bias.numpy()),
                               rtol=1e-6)
    post.remove()
    replaced.remove()
    pre.remove()  # removing twice is harmless
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ layer.weight.numpy().T + layer.bias.numpy(), rtol=1e-6)
    assert len(calls) == 2


def test_hook_order_prepend_context_manager_and_kwargs():
    class Scale(nn.Module):
        def forward(self, x, factor=1.0):
            return x * factor

    m, order = Scale(), []
    m.register_forward_hook(lambda *a: order.append("second"))
    m.register_forward_hook(lambda *a: order.append("first"), prepend=True)
    with m.register_forward_hook(lambda *a: order.append("inside")):
        m(tg.ones(1))
    m(tg.ones(1))
    assert order == ["first", "second", "inside", "first", "second"]
    m.register_forward_pre_hook(lambda mod, args, kwargs: (args, {**kwargs, "factor": 3.0}), with_kwargs=True)
    seen = []
    m.register_forward_hook(lambda mod, args, kwargs, out: seen.append(dict(kwargs)), with_kwargs=True)
    assert m(tg.ones(1), factor=2.0).item() == 3.0 and seen == [{"factor": 3.0}]
    m.register_forward_pre_hook(lambda mod, args: tg.full((1,), 5.0))  # a non-tuple result becomes the one argument
    assert m(tg.ones(1)).item() == 15.0
    bad = nn.Identity()
    bad.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"must return None or an \(args, kwargs\) pair"):
        bad(tg.ones(1))


def test_no_hook_no_cost_and_hooks_on_children_run_inside_the_parent():
    m = model()
    assert all("_call_hooks" not in vars(sub) for sub in m.modules())  # __call__ checks one class attribute
    shapes = []
    handles = [sub.register_forward_hook(lambda mod, args, out: shapes.append(out.shape))
               for sub in m.modules() if isinstance(sub, nn.Linear)]
    m(tg.randn(5, 3))
    assert shapes == [(5, 4), (5, 4), (5, 2)]
    assert [name for name, _ in m.named_parameters()] == [name for name, _ in model().named_parameters()]
    for h in handles:
        h.remove()


def test_requires_grad_freezes_and_unfreezes():
    m = model()
    assert m[1].requires_grad_(False) is m[1]
    assert [p.requires_grad for p in m.parameters()] == [True, True, False, False, True, True]
    m(tg.randn(2, 3)).sum().backward()
    assert m[1][0].weight.grad is None and m[0].weight.grad is not None
    assert all(p.requires_grad for p in m.requires_grad_().parameters())


def test_lookups_by_name():
    m = model()
    m[1].register_buffer("scale", tg.ones(4))
    assert m.get_submodule("1.0") is m[1][0] and m.get_submodule("") is m
    assert m.get_parameter("2.bias") is m[2].bias and m.get_buffer("1.scale") is m[1].scale
    with pytest.raises(AttributeError, match="Sequential has no submodule '3'"):
        m.get_submodule("3")
    with pytest.raises(AttributeError, match=r"has no parameter '0.scale'; its parameters are \['0.weight'"):
        m.get_parameter("0.scale")


class WithBuffers(nn.Module):
    def __init__(self):
        self.linear = nn.Linear(2, 2)
        self.register_buffer("mean", tg.zeros(2))
        self.register_buffer("cache", tg.ones(2), persistent=False)


def test_non_persistent_buffers_move_but_are_not_saved():
    m = WithBuffers()
    assert [name for name, _ in m.named_buffers()] == ["mean", "cache"]
    assert list(m.state_dict()) == ["mean", "linear.weight", "linear.bias"]  # PyTorch's order: own state first
    m.double()
    assert m.cache.dtype == np.float64
    fresh = WithBuffers()
    assert fresh.load_state_dict(m.state_dict()) == ([], [])
    m.register_buffer("cache", m.cache)  # registering again makes it persistent
    assert "cache" in m.state_dict()


def test_buffer_and_parameter_registration_errors():
    m = WithBuffers()
    with pytest.raises(KeyError, match="attribute 'linear' already exists"):
        m.register_buffer("linear", tg.zeros(1))
    with pytest.raises(KeyError, match="without '.'"):
        m.register_buffer("a.b", tg.zeros(1))
    with pytest.raises(TypeError, match="cannot assign a ndarray to buffer 'x'"):
        m.register_buffer("x", np.zeros(1))
    with pytest.raises(TypeError, match="cannot assign a Tensor to parameter 'w'"):
        m.register_parameter("w", tg.zeros(1))
    with pytest.raises(TypeError, match="is not a Module"):
        m.add_module("sub", tg.zeros(1))


def test_add_module_register_parameter_and_shared_modules():
    m, shared = nn.Module(), nn.Linear(2, 2)
    for k in range(2):
        m.add_module(f"layer{k}", shared)
    m.register_parameter("scale", nn.Parameter(tg.ones(1)))
    m.register_parameter("offset", None)
    assert [name for name, _ in m.named_modules()] == ["", "layer0"]
    assert [name for name, _ in m.named_modules(remove_duplicate=False)] == ["", "layer0", "layer1"]
    assert list(m.state_dict()) == ["scale", "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]


def test_state_dict_order_is_pytorchs():
    """Module by module: its parameters, its buffers, then its children's (so zipping two state dicts works)."""
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), WithBuffers())
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Module())
    theirs[2].linear = torch.nn.Linear(2, 2)
    theirs[2].register_buffer("mean", torch.zeros(2))
    assert list(ours.state_dict()) == list(theirs.state_dict())
