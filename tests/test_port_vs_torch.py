"""The PyTorch-named API gives PyTorch's answers. Skipped where torch is not installed (CI)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import tinygrad_seq as tg  # noqa: E402
from tinygrad_seq import Tensor, nn  # noqa: E402
import tinygrad_seq.nn.functional as F  # noqa: E402


def pair(a, requires_grad=True):
    return Tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), c=st.integers(2, 5), spatial=st.sampled_from([(), (3,)]),
       weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.1, 0.7]),
       ignore_index=st.sampled_from([-100, 1]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_and_nll_match_torch(seed, n, c, spatial, weighted, smoothing, ignore_index, reduction):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + spatial) * 3
    target = rng.integers(0, c, (n,) + spatial)
    target.flat[0] = 0  # keep one target that counts (mean over nothing is NaN in both)
    weight = rng.uniform(0.5, 2, c) if weighted else None
    ours, theirs = pair(x)
    kw = dict(ignore_index=ignore_index, reduction=reduction)
    a = F.cross_entropy(ours, Tensor(target), None if weight is None else Tensor(weight), label_smoothing=smoothing,
                        **kw)
    b = torch.nn.functional.cross_entropy(theirs, torch.tensor(target), None if weight is None else
                                          torch.tensor(weight), label_smoothing=smoothing, **kw)
    g = rng.standard_normal(b.shape)
    a.backward(Tensor(g))
    b.backward(torch.tensor(g))
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    lp = F.nll_loss(ours.log_softmax(1), Tensor(target), None if weight is None else Tensor(weight), **kw)
    lq = torch.nn.functional.nll_loss(theirs.log_softmax(1), torch.tensor(target),
                                      None if weight is None else torch.tensor(weight), **kw)
    np.testing.assert_allclose(lp.numpy(), lq.detach().numpy(), rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**16), k=st.integers(0, 4), largest=st.booleans(), dim=st.integers(-2, 1))
def test_tensor_methods_match_torch(seed, k, largest, dim):
    rng = np.random.default_rng(seed)
    x = rng.permutation(20).reshape(4, 5).astype(np.float64)
    ours, theirs = pair(x)
    v, i = ours.topk(k, dim=dim, largest=largest)
    w, j = theirs.topk(k, dim=dim, largest=largest)
    np.testing.assert_array_equal(v.numpy(), w.detach().numpy())
    np.testing.assert_array_equal(i.numpy(), j.numpy())
    for name in ("max", "min"):
        (a, ai), (b, bi) = getattr(ours, name)(dim, keepdim=True), getattr(theirs, name)(dim, keepdim=True)
        np.testing.assert_array_equal(a.numpy(), b.detach().numpy())
        np.testing.assert_array_equal(ai.numpy(), bi.numpy())
    np.testing.assert_array_equal(ours.argmax().numpy(), theirs.argmax().numpy())
    np.testing.assert_array_equal(ours.argmin(dim).numpy(), theirs.argmin(dim).numpy())
    np.testing.assert_array_equal(ours.narrow(dim, 1, 2).numpy(), theirs.narrow(dim, 1, 2).detach().numpy())
    mask = x > 10
    np.testing.assert_array_equal(ours.masked_fill(Tensor(mask), -1.0).numpy(),
                                  theirs.masked_fill(torch.tensor(mask), -1.0).detach().numpy())
    assert ours.size() == tuple(theirs.size()) and ours.size(dim) == theirs.size(dim)
    assert ours.dim() == theirs.dim() and ours.numel() == theirs.numel()


def test_in_place_arithmetic_matches_torch():
    x = np.linspace(-2, 2, 6)
    ours, theirs = Tensor(x), torch.tensor(x)
    for t in (ours, theirs):
        t.add_(t, alpha=0.5).sub_(1.0, alpha=2).mul_(3).div_(2).clamp_(-2, 1.5)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    x = np.linspace(-5, 5, 41)
    ours, theirs = pair(x)
    a, b = F.gelu(ours, approximate=approximate), torch.nn.functional.gelu(theirs, approximate=approximate)
    a.sum().backward()
    b.sum().backward()
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_pytorch_style_function_ports_unchanged():
    def define(base, staticmethod_):
        class Exp(base):
            @staticmethod_
            def forward(ctx, x):
                result = x.exp()
                ctx.save_for_backward(result)
                return result

            @staticmethod_
            def backward(ctx, grad_output):
                result, = ctx.saved_tensors
                return grad_output * result
        return Exp

    x = np.array([0.5, -1.0, 2.0])
    ours, theirs = pair(x)
    define(tg.Function, staticmethod).apply(ours).sum().backward()
    define(torch.autograd.Function, staticmethod).apply(theirs).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


def test_tied_state_dict_from_torch_loads_strictly():
    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)])
            self.heads = torch.nn.ModuleDict({"out": torch.nn.Linear(4, 10)})
            self.heads["out"].weight = self.encoder.weight

        def forward(self, x):
            h = self.encoder(x)
            for layer in self.layers:
                h = layer(h)
            return self.heads["out"](h)

    class OursTied(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(10, 4)
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)])
            self.heads = nn.ModuleDict({"out": nn.Linear(4, 10)})
            self.heads["out"].weight = self.encoder.weight

        forward = TorchTied.forward

    theirs, ours = TorchTied().double(), OursTied().double()
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert list(sd) == list(ours.state_dict())
    ours.load_state_dict(sd, strict=True)
    idx = np.array([[1, 2, 3], [4, 5, 9]])
    np.testing.assert_allclose(ours(Tensor(idx)).numpy(), theirs(torch.tensor(idx)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weighted_binary_cross_entropy_matches_torch(reduction):
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((4, 3)) * 3, (rng.random((4, 3)) < 0.5).astype(float)
    weight, pos_weight = rng.random((4, 1)) + 0.5, rng.random(3) * 3
    ours_x = Tensor(x, dtype="float64", requires_grad=True)
    ours = nn.BCEWithLogitsLoss(weight=weight, pos_weight=pos_weight, reduction=reduction).double()(
        ours_x, Tensor(t, dtype="float64"))
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(weight), pos_weight=torch.tensor(pos_weight),
                                        reduction=reduction)(theirs_x, torch.tensor(t))
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-12, atol=1e-15)
