"""Everyday layers and initialisers: BatchNorm1d, Dropout1d/2d, Embedding.from_pretrained,
ParameterList/ParameterDict, Unflatten and nn.init, against NumPy oracles (always) and PyTorch (optional)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq import nn
from tinygrad_seq.nn.normalization import batch_norm


def t64(a, grad=False):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---- BatchNorm1d --------------------------------------------------------------------------

def ref_batch_norm(x, stats, w, b, momentum, eps, batches_seen):
    """Training step on x (N, C) or (N, C, L): the output and the new running statistics (in `stats`)."""
    axes = (0,) if x.ndim == 2 else (0, 2)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    factor = 1.0 / batches_seen if momentum is None else momentum
    stats["mean"] = (1 - factor) * stats["mean"] + factor * mean
    stats["var"] = (1 - factor) * stats["var"] + factor * var * n / (n - 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)


@given(length=st.sampled_from([None, 1, 4]), momentum=st.sampled_from([0.1, 0.5, None]), seed=st.integers(0, 99))
def test_batch_norm_trains_and_evaluates_as_the_oracle(length, momentum, seed):
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm1d(3, momentum=momentum, eps=1e-3).double()
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    bn.load_state_dict({**bn.state_dict(), "weight": w, "bias": b})
    stats = {"mean": np.zeros(3), "var": np.ones(3)}
    for k in range(3):
        x = rng.standard_normal((5, 3) if length is None else (5, 3, length)) * 2 + 1
        np.testing.assert_allclose(bn(t64(x)).numpy(), ref_batch_norm(x, stats, w, b, momentum, 1e-3, k + 1),
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), stats["mean"], rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), stats["var"], rtol=1e-12)
    assert bn.num_batches_tracked.item() == 3 and bn.num_batches_tracked.dtype == np.int64
    bn.eval()
    shape = (1, -1) + (1,) * (x.ndim - 2)
    expected = (x - stats["mean"].reshape(shape)) / np.sqrt(stats["var"].reshape(shape) + 1e-3) * w.reshape(shape) \
        + b.reshape(shape)
    np.testing.assert_allclose(bn(t64(x)).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert bn.num_batches_tracked.item() == 3


def test_batch_norm_gradients():
    rng = np.random.default_rng(0)
    x, w, b = t64(rng.standard_normal((4, 3, 2)), True), t64(rng.uniform(0.5, 2, 3), True), t64(rng.standard_normal(3),
                                                                                                 True)
    assert tg.gradcheck(lambda x, w, b: batch_norm(x, None, None, w, b, training=True), [x, w, b])
    rm, rv = t64(rng.standard_normal(3)), t64(rng.uniform(0.5, 2, 3))
    assert tg.gradcheck(lambda x, w, b: batch_norm(x, rm, rv, w, b, training=False), [x, w, b])


def test_batch_norm_options_and_errors():
    plain = nn.BatchNorm1d(2, affine=False, track_running_stats=False)
    assert list(plain.state_dict()) == [] and plain.running_mean is None and plain.weight is None
    x = tg.Tensor([[1.0, 5.0], [3.0, 9.0]])
    np.testing.assert_allclose(plain.eval()(x).numpy(), [[-1, -1], [1, 1]], rtol=1e-4)  # batch statistics in eval too
    bn = nn.BatchNorm1d(2)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert repr(bn) == "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(tg.ones(1, 2))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn(tg.ones(2, 2, 2, 2))
    with pytest.raises(ValueError, match="expected 2 channels"):
        bn(tg.ones(4, 3))
    bn(tg.randn(4, 2))
    bn.reset_running_stats()
    assert bn.num_batches_tracked.item() == 0 and bn.running_var.tolist() == [1.0, 1.0]
    assert nn.BatchNorm1d(2, bias=False).bias is None


@pytest.mark.parametrize("momentum, track", [(0.1, True), (None, True), (0.3, False)])
def test_batch_norm_matches_pytorch(momentum, track):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    ours = nn.BatchNorm1d(3, momentum=momentum, track_running_stats=track).double()
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum, track_running_stats=track).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.uniform(0.5, 2, 3)))
        theirs.bias.copy_(torch.tensor(rng.standard_normal(3)))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for mode in ("train", "train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        x = rng.standard_normal((6, 3, 4))
        xo, xt = t64(x, True), torch.tensor(x, requires_grad=True)
        out, tout = ours(xo), theirs(xt)
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        g = rng.standard_normal(out.shape)
        out.backward(tg.Tensor(g))
        tout.backward(torch.tensor(g))
        np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        ours.zero_grad(), theirs.zero_grad()
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(tsd)
    for key in sd:
        np.testing.assert_allclose(sd[key], tsd[key].numpy(), rtol=1e-12)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=True)


# ---- channel dropout -----------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape", [(nn.Dropout1d, (6, 5, 7)), (nn.Dropout1d, (5, 7)), (nn.Dropout2d, (4, 5, 3, 2))])
def test_channel_dropout_keeps_or_zeroes_whole_channels(layer, shape):
    tg.manual_seed(0)
    drop = layer(p=0.4)
    x = tg.Tensor(np.random.default_rng(0).uniform(1, 2, shape), requires_grad=True)
    out = drop(x)
    ratio = (out / x).numpy().reshape(shape[:-1] + (-1,) if len(shape) < 4 else shape[:2] + (-1,))
    assert np.all((ratio == 0) | np.isclose(ratio, 1 / 0.6)) and np.allclose(ratio, ratio[..., :1])  # one value per channel
    assert 0 < np.mean(ratio == 0) < 1
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), (out / x).numpy(), rtol=1e-6)
    assert drop.eval()(x) is x and layer(0.0)(x) is x
    np.testing.assert_array_equal(layer(1.0)(x).numpy(), np.zeros(shape))


def test_channel_dropout_shape_rules():
    with pytest.raises(RuntimeError, match="dropout1d: expected 2D or 3D input, but received a 4D input"):
        nn.Dropout1d()(tg.ones(2, 2, 2, 2))
    with pytest.warns(UserWarning, match="Received a 3D input to dropout2d"):
        nn.Dropout2d()(tg.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        nn.Dropout2d(1.5)
    assert repr(nn.Dropout1d(0.2)) == "Dropout1d(p=0.2)"


# ---- Embedding.from_pretrained, ParameterList / ParameterDict, Unflatten -------------------

def test_embedding_from_pretrained():
    table = np.arange(12.0).reshape(4, 3)
    frozen = nn.Embedding.from_pretrained(tg.Tensor(table))
    assert not frozen.weight.requires_grad and frozen.weight.dtype == np.float64
    np.testing.assert_array_equal(frozen(tg.tensor([3, 0])).numpy(), table[[3, 0]])
    tuned = nn.Embedding.from_pretrained(table, freeze=False, padding_idx=1)
    np.testing.assert_array_equal(tuned.weight.numpy()[1], table[1])  # the padding row is kept as given
    tuned(tg.tensor([1, 2, 1])).sum().backward()
    np.testing.assert_array_equal(tuned.weight.grad.numpy()[[1, 2]], [[0, 0, 0], [1, 1, 1]])
    table[0, 0] = 99.0
    assert tuned.weight.numpy()[0, 0] == 0.0  # a copy
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        nn.Embedding.from_pretrained(tg.ones(3))


class Holder(nn.Module):
    def __init__(self):
        self.params = nn.ParameterList([tg.ones(2), nn.Parameter(tg.zeros(3))])
        self.table = nn.ParameterDict({"scale": tg.ones(1)})


def test_parameter_containers_are_named_as_pytorch():
    m = Holder()
    m.params.append(tg.full((2,), 3.0))
    m.table["shift"] = nn.Parameter(tg.zeros(1))
    assert list(m.state_dict()) == ["params.0", "params.1", "params.2", "table.scale", "table.shift"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert len(m.params) == 3 and "scale" in m.table and list(m.table) == ["scale", "shift"]
    assert len(list(tg.optim.SGD(m.parameters(), lr=0.1).param_groups[0]["params"])) == 5
    assert repr(m.params).splitlines()[1] == "  (0): Parameter containing: [float32 of size 2]"
    with pytest.raises(TypeError, match="ParameterList: expected a Parameter or Tensor, got int"):
        m.params.append(3)
    torch = pytest.importorskip("torch")

    class TorchHolder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(2)) for _ in range(3)])
            self.table = torch.nn.ParameterDict({"scale": torch.ones(1), "shift": torch.zeros(1)})
    assert list(TorchHolder().state_dict()) == list(m.state_dict())


def test_unflatten():
    x = tg.arange(24.0).reshape(2, 12)
    assert nn.Unflatten(1, (3, 4))(x).shape == (2, 3, 4) and nn.Unflatten(-1, (2, -1, 3))(x).shape == (2, 2, 2, 3)
    assert nn.Unflatten(0, (1, 2))(x).shape == (1, 2, 12)
    np.testing.assert_array_equal(nn.Flatten()(nn.Unflatten(1, (3, 4))(x)).numpy(), x.numpy())
    with pytest.raises(ValueError, match=r"sizes \[5, -1\] do not multiply up to the size of dim 1 \(12\)"):
        nn.Unflatten(1, (5, -1))(x)
    with pytest.raises(ValueError, match="do not multiply up"):
        nn.Unflatten(1, (3, 3))(x)
    assert repr(nn.Unflatten(1, (3, 4))) == "Unflatten(dim=1, unflattened_size=(3, 4))"


# ---- nn.init -------------------------------------------------------------------------------

def test_gains_and_fans_are_pytorchs():
    init = nn.init
    assert init.calculate_gain("tanh") == 5 / 3 and init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01 ** 2))
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04) and init.calculate_gain("selu") == 0.75
    assert init.calculate_gain("linear") == init.calculate_gain("sigmoid") == 1
    assert init._calculate_fan_in_and_fan_out(tg.zeros(5, 3)) == (3, 5)
    assert init._calculate_fan_in_and_fan_out(tg.zeros(5, 3, 2, 2)) == (12, 20)
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(tg.zeros(3))
    with pytest.raises(ValueError, match="mode 'fan_avg' not supported"):
        init.kaiming_normal_(tg.zeros(3, 3), mode="fan_avg")
    torch = pytest.importorskip("torch")
    for name, param in [("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.3), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-15)


@pytest.mark.parametrize("fill, bound_or_std, uniform", [
    (lambda w: nn.init.xavier_uniform_(w, gain=2.0), 2.0 * math.sqrt(6 / (400 + 300)), True),
    (lambda w: nn.init.xavier_normal_(w), math.sqrt(2 / (400 + 300)), False),
    (lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)), 1 / math.sqrt(400), True),  # nn.Linear's default
    (lambda w: nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"), math.sqrt(6 / 300), True),
    (lambda w: nn.init.kaiming_normal_(w, nonlinearity="tanh"), 5 / 3 / math.sqrt(400), False),
    (lambda w: nn.init.normal_(w, 1.0, 0.5), 0.5, False),
])
def test_random_initialisers_have_pytorchs_scale(fill, bound_or_std, uniform):
    w = nn.Parameter(tg.zeros(300, 400))
    data = w.array
    assert fill(w) is w and w.array is data and w.is_leaf and w.grad_fn is None  # in place, off the tape
    values = w.numpy().astype(np.float64)
    if uniform:
        assert values.min() >= -bound_or_std and values.max() <= bound_or_std
        assert abs(values.max() - bound_or_std) < 1e-3 * bound_or_std
    else:
        assert values.std() == pytest.approx(bound_or_std, rel=0.01)


def test_deterministic_initialisers():
    w = tg.zeros(3, 4, requires_grad=True)
    np.testing.assert_array_equal(nn.init.eye_(w).numpy(), np.eye(3, 4))
    np.testing.assert_array_equal(nn.init.constant_(w, 0.25).numpy(), np.full((3, 4), 0.25))
    assert nn.init.ones_(w).numpy().sum() == 12 and nn.init.zeros_(w).numpy().sum() == 0
    with pytest.raises(ValueError, match="only tensors with 2 dimensions"):
        nn.init.eye_(tg.zeros(2, 2, 2))


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 4)])
def test_orthogonal(shape):
    w = nn.init.orthogonal_(tg.zeros(*shape, dtype=tg.float64), gain=2.0)
    flat = w.numpy().reshape(shape[0], -1)
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_trunc_normal():
    w = nn.init.trunc_normal_(tg.zeros(200, 500, dtype=tg.float64), mean=0.5, std=2.0, a=-1.0, b=3.0)
    values = w.numpy()
    assert values.min() >= -1.0 and values.max() <= 3.0
    lo, hi = (-1.0 - 0.5) / 2.0, (3.0 - 0.5) / 2.0  # the truncated normal's mean: mu + s (phi(lo) - phi(hi)) / Z
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mass = (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2))) / 2
    assert values.mean() == pytest.approx(0.5 + 2.0 * (pdf(lo) - pdf(hi)) / mass, abs=0.01)
    with pytest.warns(UserWarning, match="mean is more than 2 std from"):
        nn.init.trunc_normal_(tg.zeros(10), mean=-5.0, a=-2.0, b=2.0)
    with pytest.raises(ValueError, match="holds only"):
        nn.init.trunc_normal_(tg.zeros(10), mean=0.0, std=1.0, a=0.0, b=1e-10)


def test_initialisers_take_a_generator(device):
    draws = [nn.init.kaiming_uniform_(tg.zeros(4, 5, device=device), generator=tg.Generator(device).manual_seed(1))
             for _ in range(2)]
    np.testing.assert_array_equal(draws[0].numpy(), draws[1].numpy())
    assert draws[0].device == tg.zeros(1, device=device).device
