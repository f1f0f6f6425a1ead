"""nn.Module and the feed-forward layers: PyTorch's state_dict names, loading, traversal order,
modes, dtype/device conversion, repr; Linear, Embedding, LayerNorm, Dropout against NumPy."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recurrent_helpers import const, leaf
from tinygrad_seq import Tensor, manual_seed, nn
from tinygrad_seq.autograd.gradcheck import gradcheck


def names_and_shapes(module):
    return [(name, value.shape) for name, value in module.state_dict().items()]


# ---- state_dict keys: PyTorch's documented names, order and shapes ------------------------

def test_lstm_state_dict_is_pytorchs():
    # torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True): per layer, per direction,
    # weight_ih, weight_hh, bias_ih, bias_hh; gates stacked i, f, g, o -> 4*H rows.
    expected = [
        ("weight_ih_l0", (16, 3)), ("weight_hh_l0", (16, 4)), ("bias_ih_l0", (16,)), ("bias_hh_l0", (16,)),
        ("weight_ih_l0_reverse", (16, 3)), ("weight_hh_l0_reverse", (16, 4)),
        ("bias_ih_l0_reverse", (16,)), ("bias_hh_l0_reverse", (16,)),
        ("weight_ih_l1", (16, 8)), ("weight_hh_l1", (16, 4)), ("bias_ih_l1", (16,)), ("bias_hh_l1", (16,)),
        ("weight_ih_l1_reverse", (16, 8)), ("weight_hh_l1_reverse", (16, 4)),
        ("bias_ih_l1_reverse", (16,)), ("bias_hh_l1_reverse", (16,)),
    ]
    assert names_and_shapes(nn.LSTM(3, 4, num_layers=2, bidirectional=True)) == expected


def test_gru_without_bias_state_dict_is_pytorchs():
    # torch.nn.GRU(5, 2, num_layers=3, bias=False): no bias_* keys, 3*H rows (r, z, n).
    expected = [("weight_ih_l0", (6, 5)), ("weight_hh_l0", (6, 2)),
                ("weight_ih_l1", (6, 2)), ("weight_hh_l1", (6, 2)),
                ("weight_ih_l2", (6, 2)), ("weight_hh_l2", (6, 2))]
    assert names_and_shapes(nn.GRU(5, 2, num_layers=3, bias=False)) == expected


def test_rnn_state_dict_is_pytorchs():
    # torch.nn.RNN(2, 3, num_layers=2, bidirectional=True, bias=False, nonlinearity="relu")
    expected = [("weight_ih_l0", (3, 2)), ("weight_hh_l0", (3, 3)),
                ("weight_ih_l0_reverse", (3, 2)), ("weight_hh_l0_reverse", (3, 3)),
                ("weight_ih_l1", (3, 6)), ("weight_hh_l1", (3, 3)),
                ("weight_ih_l1_reverse", (3, 6)), ("weight_hh_l1_reverse", (3, 3))]
    layer = nn.RNN(2, 3, num_layers=2, bidirectional=True, bias=False, nonlinearity="relu")
    assert names_and_shapes(layer) == expected
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in expected]


def test_feed_forward_state_dicts_are_pytorchs():
    assert names_and_shapes(nn.Linear(3, 4)) == [("weight", (4, 3)), ("bias", (4,))]
    assert names_and_shapes(nn.Linear(3, 4, bias=False)) == [("weight", (4, 3))]
    assert names_and_shapes(nn.Embedding(10, 3)) == [("weight", (10, 3))]
    assert names_and_shapes(nn.LayerNorm((2, 3))) == [("weight", (2, 3)), ("bias", (2, 3))]
    assert names_and_shapes(nn.LayerNorm(3, elementwise_affine=False)) == []
    assert names_and_shapes(nn.Dropout()) == []


class Tagger(nn.Module):
    """An embedding, a bidirectional LSTM and a classifier, as in a sequence-labelling model."""

    def __init__(self):
        self.embed = nn.Embedding(7, 3, padding_idx=0)
        self.rnn = nn.LSTM(3, 2, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.1), nn.Linear(5, 2))

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def test_nested_names_and_sequential_numbering():
    keys = list(Tagger().state_dict())
    assert keys == ["embed.weight",
                    "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                    "rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0_reverse",
                    "rnn.bias_hh_l0_reverse",
                    "head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]
    seq = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 1))
    assert list(seq.state_dict()) == ["0.0.weight", "0.0.bias", "1.weight", "1.bias"]
    assert [name for name, _ in seq.named_modules()] == ["", "0", "0.0", "1"]
    assert len(seq) == 2 and seq[1] is list(seq.children())[1]


def test_sequential_applies_in_order():
    rng = np.random.default_rng(0)
    a, b = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()
    x = const(rng.standard_normal((5, 3)))
    np.testing.assert_array_equal(nn.Sequential(a, b)(x).numpy(), b(a(x)).numpy())


class Ordered(nn.Module):
    def __init__(self):
        self.z = nn.Linear(1, 1)               # definition order, not alphabetical
        self.scale = nn.Parameter([1.0])
        self.blocks = [nn.Linear(1, 2), nn.Linear(2, 1)]
        self.heads = {"b": nn.Linear(1, 1, bias=False), "a": nn.Linear(1, 1, bias=False)}
        self.tied = self.z                     # the same module twice
        self.also_scale = self.scale           # the same parameter twice
        self.note = "not a parameter"


def test_parameter_order_is_definition_order_and_shared_ones_count_once():
    model = Ordered()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["z.weight", "z.bias", "scale", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                     "blocks.1.bias", "heads.b.weight", "heads.a.weight"]
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params}) == 9
    assert [id(p) for p in Ordered.parameters(model)] == [id(p) for p in params]  # deterministic
    assert sum(1 for _ in model.children()) == 5  # z (once), blocks.0, blocks.1, heads.b, heads.a


def test_train_and_eval_reach_every_module():
    model = Tagger()
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model.head.train(False)
    assert model.training and not model.head[1].training and model.rnn.training


def test_eval_switches_dropout_off_inside_a_model():
    manual_seed(0)
    model = Tagger().double()
    tokens = Tensor(np.array([[1, 2], [3, 0], [4, 5]]))
    model.eval()
    first = model(tokens).numpy()
    np.testing.assert_array_equal(model(tokens).numpy(), first)
    model.train()
    manual_seed(1)
    assert np.abs(model(tokens).numpy() - first).max() > 0


# ---- loading ----------------------------------------------------------------------------

def test_load_state_dict_round_trip():
    manual_seed(1)
    source, target = Tagger().double(), Tagger().double()
    tokens = Tensor(np.array([[1, 2], [3, 0], [6, 5]]))
    source.eval(), target.eval()
    assert np.abs(source(tokens).numpy() - target(tokens).numpy()).max() > 0
    identities = [id(p) for p in target.parameters()]
    result = target.load_state_dict(source.state_dict())
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    assert [id(p) for p in target.parameters()] == identities, "loading must be in place"
    np.testing.assert_array_equal(source(tokens).numpy(), target(tokens).numpy())
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_state_dict_and_load_copy():
    layer = nn.Linear(2, 2).double()
    sd = layer.state_dict()
    sd["weight"][...] = 5.0
    assert not (layer.weight.numpy() == 5.0).any(), "state_dict must return copies"
    sd = {"weight": np.ones((2, 2)), "bias": np.zeros(2)}
    layer.load_state_dict(sd)
    sd["weight"][...] = 7.0
    np.testing.assert_array_equal(layer.weight.numpy(), np.ones((2, 2)))


def test_load_casts_to_each_parameters_dtype():
    layer = nn.Linear(2, 2)  # float32
    layer.load_state_dict({"weight": np.arange(4.0).reshape(2, 2), "bias": np.array([1, 2])})
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.bias.numpy(), [1.0, 2.0])
    layer.double().load_state_dict({"weight": np.ones((2, 2), np.float32), "bias": Tensor([3.0, 4.0])})
    assert layer.weight.dtype == np.float64
    np.testing.assert_array_equal(layer.bias.numpy(), [3.0, 4.0])


def test_strict_load_names_every_missing_unexpected_and_misshaped_key():
    layer = nn.LSTM(2, 3, num_layers=2)
    before = layer.state_dict()
    sd = dict(before)
    del sd["bias_hh_l1"], sd["weight_ih_l0"]
    sd["weight_ih_l2"] = np.zeros((12, 3))
    sd["bias_ih_l0_reverse"] = np.zeros(12)
    sd["weight_hh_l1"] = np.zeros((12, 4))
    sd["bias_ih_l0"] = np.zeros(11)
    with pytest.raises(ValueError) as info:
        layer.load_state_dict(sd)
    message = str(info.value)
    for fragment in ("missing keys", "'weight_ih_l0'", "'bias_hh_l1'",
                     "unexpected keys", "'weight_ih_l2'", "'bias_ih_l0_reverse'",
                     "size mismatch for weight_hh_l1", "(12, 4)", "(12, 3)",
                     "size mismatch for bias_ih_l0", "(11,)", "(12,)"):
        assert fragment in message, (fragment, message)
    for name, value in layer.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_non_strict_load_returns_missing_and_unexpected():
    layer = nn.GRU(2, 3)
    sd = {"weight_ih_l0": np.ones((9, 2)), "weight_hh_l0": np.ones((9, 3)), "extra.weight": np.ones(1)}
    missing, unexpected = layer.load_state_dict(sd, strict=False)
    assert missing == ["bias_ih_l0", "bias_hh_l0"] and unexpected == ["extra.weight"]
    np.testing.assert_array_equal(layer.weight_ih_l0.numpy(), np.ones((9, 2)))
    with pytest.raises(ValueError, match=r"size mismatch for weight_hh_l0.*\(9, 2\).*\(9, 3\)"):
        layer.load_state_dict({"weight_hh_l0": np.ones((9, 2))}, strict=False)


def test_load_rejects_values_that_are_not_numeric_arrays():
    layer = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="weight: expected an array, got list"):
        layer.load_state_dict({"weight": [[1.0, 2.0]], "bias": np.zeros(1)})
    with pytest.raises(ValueError, match="bias: dtype <U1 cannot be loaded"):
        layer.load_state_dict({"weight": np.zeros((1, 2)), "bias": np.array(["a"])})


class WithBuffer(nn.Module):
    def __init__(self):
        self.linear = nn.Linear(2, 2)
        self.register_buffer("running_mean", Tensor(np.zeros(2)))


def test_buffers_are_saved_loaded_and_converted_but_not_trained():
    module = WithBuffer()
    assert list(module.state_dict()) == ["running_mean", "linear.weight", "linear.bias"]  # PyTorch's order
    assert len(list(module.parameters())) == 2
    module.load_state_dict({**module.state_dict(), "running_mean": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(module.running_mean.numpy(), [1.0, 2.0])
    module.float()
    assert module.running_mean.dtype == np.float32


# ---- dtype, device, gradients --------------------------------------------------------------

def test_double_float_and_to_keep_parameter_identity():
    model = Tagger()
    params = list(model.parameters())
    x = Tensor(np.array([[1, 2]]))
    model(x).sum().backward()
    assert model.double() is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert model.embed.weight.requires_grad and model.embed.weight.is_leaf
    assert model.to("cpu") is model and model.cpu() is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.device == "cpu" for p in params)
    model.float()
    assert all(p.dtype == np.float32 for p in params)


def test_to_device_moves_in_place(device):
    manual_seed(2)
    model = Tagger().double().eval()
    tokens = np.array([[1, 2], [3, 0], [6, 5]])
    expected = model(Tensor(tokens)).numpy()
    params = list(model.parameters())
    assert model.to(device) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.device.split(":")[0] == device for p in params)
    out = model(Tensor(tokens, device=device))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    out.sum().backward()
    assert all(p.grad.device == p.device for p in params)
    saved = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in saved.values()), "state_dict holds host arrays"
    model.load_state_dict({name: value * 0 for name, value in saved.items()})
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.device.split(":")[0] == device and not p.numpy().any() for p in params), "loaded on the device"
    model.to("cpu")
    assert all(p.device == "cpu" for p in params)


def test_zero_grad():
    layer = nn.Linear(3, 2)
    layer(const(np.ones((1, 3))).float()).sum().backward()
    assert layer.weight.grad is not None
    grad = layer.weight.grad
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is grad and not grad.numpy().any(), "set_to_none=False zeros in place"
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_call_runs_forward_and_base_forward_is_abstract():
    layer = nn.Linear(2, 2)
    x = Tensor(np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(layer(x).numpy(), layer.forward(x).numpy())
    with pytest.raises(NotImplementedError):
        nn.Module()(x)


def test_parameter_is_a_trainable_leaf():
    p = nn.Parameter(np.zeros(3))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf and p.dtype == np.float64
    assert not nn.Parameter([1.0], requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")


# ---- repr --------------------------------------------------------------------------------

def test_repr_is_pytorch_like():
    assert repr(nn.LSTM(10, 20, num_layers=2, bidirectional=True)) == "LSTM(10, 20, num_layers=2, bidirectional=True)"
    assert repr(nn.GRU(3, 4, bias=False, batch_first=True, dropout=0.5)) == \
        "GRU(3, 4, bias=False, batch_first=True, dropout=0.5)"
    assert repr(nn.RNN(3, 4)) == "RNN(3, 4)"
    assert repr(nn.RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4, nonlinearity='relu')"
    assert repr(nn.Linear(3, 4)) == "Linear(in_features=3, out_features=4, bias=True)"
    assert repr(nn.Linear(3, 4, bias=False)) == "Linear(in_features=3, out_features=4, bias=False)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.Embedding(10, 3, padding_idx=-1)) == "Embedding(10, 3, padding_idx=9)"
    assert repr(nn.LayerNorm(5)) == "LayerNorm((5,), eps=1e-05, elementwise_affine=True)"
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"
    assert repr(Tagger()) == (
        "Tagger(\n"
        "  (embed): Embedding(7, 3, padding_idx=0)\n"
        "  (rnn): LSTM(3, 2, bidirectional=True)\n"
        "  (head): Sequential(\n"
        "    (0): Linear(in_features=4, out_features=5, bias=True)\n"
        "    (1): Dropout(p=0.1)\n"
        "    (2): Linear(in_features=5, out_features=2, bias=True)\n"
        "  )\n"
        ")")


# ---- Linear -------------------------------------------------------------------------------

@given(batch=st.lists(st.integers(1, 3), max_size=2), I=st.integers(1, 4), O=st.integers(1, 4),
       bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_linear_matches_numpy(batch, I, O, bias, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(I, O, bias=bias).double()
    w = layer.weight.numpy()
    b = layer.bias.numpy() if bias else np.zeros(O)
    x, g = rng.standard_normal((*batch, I)), rng.standard_normal((*batch, O))
    x_t = leaf(x)
    out = layer(x_t)
    np.testing.assert_allclose(out.numpy(), x @ w.T + b, rtol=1e-12, atol=1e-14)
    (out * const(g)).sum().backward()
    g2, x2 = g.reshape(-1, O), x.reshape(-1, I)
    np.testing.assert_allclose(x_t.grad.numpy(), g @ w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.weight.grad.numpy(), g2.T @ x2, rtol=1e-12, atol=1e-14)
    if bias:
        np.testing.assert_allclose(layer.bias.grad.numpy(), g2.sum(0), rtol=1e-12, atol=1e-14)


def test_linear_gradcheck_and_init_bound():
    manual_seed(0)
    layer = nn.Linear(4, 3)
    assert np.abs(layer.weight.numpy()).max() <= 0.5 and np.abs(layer.bias.numpy()).max() <= 0.5
    layer.double()
    gradcheck(lambda x, *_: layer(x), [leaf(np.random.default_rng(0).standard_normal((2, 4))),
                                       *layer.parameters()])
    with pytest.raises(ValueError, match="expected input features 4"):
        layer(const(np.zeros((2, 5))))


# ---- Embedding ----------------------------------------------------------------------------

@given(padding_idx=st.none() | st.integers(-5, 4), shape=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       seed=st.integers(0, 2**32 - 1))
def test_embedding_matches_numpy(padding_idx, shape, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Embedding(5, 3, padding_idx=padding_idx).double()
    pad = None if padding_idx is None else padding_idx % 5
    if pad is not None:
        assert not layer.weight.numpy()[pad].any(), "the padding row starts at zero"
    layer.load_state_dict({"weight": rng.standard_normal((5, 3))})
    w = layer.weight.numpy()
    idx = rng.integers(0, 5, shape)
    g = rng.standard_normal((*shape, 3))
    out = layer(Tensor(idx))
    np.testing.assert_array_equal(out.numpy(), w[idx])
    (out * const(g)).sum().backward()
    want = np.zeros_like(w)
    np.add.at(want, idx, g)
    if pad is not None:
        want[pad] = 0.0
    np.testing.assert_allclose(layer.weight.grad.numpy(), want, rtol=1e-12, atol=1e-14)


def test_embedding_gradcheck_and_errors():
    layer = nn.Embedding(4, 2).double()
    gradcheck(lambda w: layer(Tensor(np.array([[0, 3, 3], [1, 0, 2]]))), [layer.weight])
    with pytest.raises(ValueError, match=r"indices must be in \[0, 4\)"):
        layer(Tensor(np.array([4])))
    with pytest.raises(TypeError, match="indices must be integers"):
        layer(Tensor(np.array([1.0])))
    with pytest.raises(ValueError, match="padding_idx 4 is out of range for 4 embeddings"):
        nn.Embedding(4, 2, padding_idx=4)


# ---- LayerNorm ------------------------------------------------------------------------------

def layer_norm_numpy(x, w, b, n_axes, eps, g):
    """Forward and the textbook backward: dx = rstd (g - mean(g) - xhat mean(g xhat)), g = G * w."""
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    mean = x.mean(axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    gx = g * w
    dx = rstd * (gx - gx.mean(axes, keepdims=True) - xhat * (gx * xhat).mean(axes, keepdims=True))
    lead = tuple(range(x.ndim - n_axes))
    return xhat * w + b, dx, (g * xhat).sum(lead), g.sum(lead)


@given(lead=st.lists(st.integers(1, 3), max_size=2), norm=st.lists(st.integers(2, 4), min_size=1, max_size=2),
       seed=st.integers(0, 2**32 - 1))
def test_layer_norm_matches_numpy(lead, norm, seed):
    rng = np.random.default_rng(seed)
    layer = nn.LayerNorm(norm[0] if len(norm) == 1 else tuple(norm)).double()
    layer.load_state_dict({"weight": rng.standard_normal(norm), "bias": rng.standard_normal(norm)})
    x, g = 3 * rng.standard_normal((*lead, *norm)) + 1, rng.standard_normal((*lead, *norm))
    x_t = leaf(x)
    out = layer(x_t)
    (out * const(g)).sum().backward()
    want, dx, dw, db = layer_norm_numpy(x, layer.weight.numpy(), layer.bias.numpy(), len(norm), layer.eps, g)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x_t.grad.numpy(), dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dw, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(layer.bias.grad.numpy(), db, rtol=1e-9, atol=1e-11)


def test_layer_norm_gradcheck_defaults_and_errors():
    rng = np.random.default_rng(1)
    layer = nn.LayerNorm(4).double()
    np.testing.assert_array_equal(layer.weight.numpy(), np.ones(4))
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(4))
    layer.load_state_dict({"weight": rng.standard_normal(4), "bias": rng.standard_normal(4)})
    gradcheck(lambda x, *_: layer(x), [leaf(rng.standard_normal((3, 4))), *layer.parameters()])
    plain = nn.LayerNorm(4, elementwise_affine=False).double()
    x = rng.standard_normal((2, 4))
    out = plain(const(x)).numpy()
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1 / (1 + 1e-5 / x.var(-1)), rtol=1e-10)
    with pytest.raises(ValueError, match=r"does not end in \(4,\)"):
        layer(const(np.zeros((2, 3))))


# ---- Dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_matches_its_mask(p):
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((40, 50)) + 3, rng.standard_normal((40, 50))
    drop = nn.Dropout(p)
    x_t = leaf(x)
    manual_seed(5)
    out = drop(x_t)
    (out * const(g)).sum().backward()
    y = out.numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-12)
    np.testing.assert_allclose(x_t.grad.numpy(), np.where(kept, g / (1 - p), 0.0), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.05
    manual_seed(5)
    np.testing.assert_array_equal(drop(const(x)).numpy(), y)  # reproducible with manual_seed
    manual_seed(6)
    assert (drop(const(x)).numpy() != y).any()
    gradcheck(lambda x: (manual_seed(5), drop(x))[1], [leaf(x[:3, :4])])


def test_dropout_modes_and_edges():
    x = const(np.arange(1.0, 7.0).reshape(2, 3))
    drop = nn.Dropout(0.5).eval()
    assert drop(x) is x, "identity in eval mode"
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).numpy(), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
