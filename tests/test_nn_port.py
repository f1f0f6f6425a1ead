"""nn for PyTorch ports: containers, activations, loss modules, import paths, tied weights, errors."""
import math

import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import Tensor, nn


# ---- import paths -------------------------------------------------------------------------

def test_functional_has_one_implementation_at_both_paths():
    F1 = tg.functional
    import tinygrad_seq.nn.functional as F2
    for name in F1.__all__:
        assert getattr(F2, name) is getattr(F1, name), name
    assert nn.functional.cross_entropy is F1.cross_entropy


def test_pad_sequence_at_pytorchs_path_and_clipping_still_in_utils():
    from tinygrad_seq.nn.utils.rnn import pad_sequence
    assert nn.utils.pad_sequence is pad_sequence and nn.utils.rnn.pad_sequence is pad_sequence
    out = pad_sequence([tg.ones(2, 3), tg.ones(1, 3)], batch_first=True)
    assert out.shape == (2, 2, 3) and out.numpy()[1, 1].tolist() == [0.0, 0.0, 0.0]
    assert callable(nn.utils.clip_grad_norm_) and callable(nn.utils.clip_grad_value_)


# ---- containers -------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.heads = nn.ModuleDict({"cls": nn.Linear(4, 3), "reg": nn.Linear(4, 1)})

    def forward(self, x):
        for layer in self.layers:
            x = layer(x).relu()
        return self.heads["cls"](x), self.heads["reg"](x)


def test_module_list_and_dict_names_are_pytorchs():
    names = list(Net().state_dict())
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                     "heads.cls.weight", "heads.cls.bias", "heads.reg.weight", "heads.reg.bias"]
    net = Net()
    assert [n for n, _ in net.named_children()] == ["layers", "heads"]
    assert "(0): Linear(in_features=4" in repr(net) and "(cls): Linear" in repr(net)


def test_module_list_behaves_like_a_list():
    a, b, c = nn.Linear(1, 1), nn.Linear(1, 2), nn.ReLU()
    ml = nn.ModuleList([a])
    ml.append(b)
    ml.extend([c])
    ml.insert(0, nn.Tanh())
    assert len(ml) == 4 and ml[1] is a and ml[-1] is c and list(ml)[2] is b
    assert isinstance(ml[1:3], nn.ModuleList) and list(ml[1:3]) == [a, b]
    ml[0] = nn.Sigmoid()
    del ml[0]
    ml += [nn.Identity()]
    assert [type(m).__name__ for m in ml] == ["Linear", "Linear", "ReLU", "Identity"]
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError, match="expected a Module"):
        ml.append(Tensor([1.0]))


def test_module_dict_behaves_like_a_dict():
    md = nn.ModuleDict([("b", nn.Linear(1, 1)), ("a", nn.ReLU())])
    md["c"] = nn.Linear(2, 2)
    assert list(md) == ["b", "a", "c"] and list(md.keys()) == ["b", "a", "c"] and len(md) == 3
    assert "a" in md and isinstance(md["c"], nn.Linear)
    assert [k for k, _ in md.items()] == ["b", "a", "c"] and len(list(md.values())) == 3
    md.update({"d": nn.Tanh()})
    assert isinstance(md.pop("a"), nn.ReLU) and "a" not in md
    del md["d"]
    assert [n for n, _ in md.named_parameters()] == ["b.weight", "b.bias", "c.weight", "c.bias"]
    with pytest.raises(TypeError, match="keys must be strings"):
        md[1] = nn.ReLU()
    md.clear()
    assert len(md) == 0


def test_sequential_holds_activations_and_slices():
    tg.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2), nn.LogSoftmax(dim=-1))
    x = tg.randn(4, 3)
    out = seq(x)
    assert out.shape == (4, 2)
    np.testing.assert_allclose(np.exp(out.numpy()).sum(-1), 1.0, rtol=1e-5)
    assert isinstance(seq[:2], nn.Sequential) and len(seq[:2]) == 2 and list(seq)[1] is seq[1]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


# ---- activations and losses ---------------------------------------------------------------------

def test_activation_modules_match_numpy():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    t = Tensor(x)
    erf = np.vectorize(math.erf)
    cases = {nn.ReLU(): np.maximum(x, 0), nn.Tanh(): np.tanh(x), nn.Sigmoid(): 1 / (1 + np.exp(-x)),
             nn.GELU(): 0.5 * x * (1 + erf(x / math.sqrt(2))),
             nn.GELU("tanh"): 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
             nn.Softmax(dim=0): np.exp(x) / np.exp(x).sum(0), nn.LogSoftmax(1): x - np.log(np.exp(x).sum(1))[:, None],
             nn.Identity(7, unused=True): x, nn.Flatten(0): x.reshape(-1)}
    for module, expected in cases.items():
        np.testing.assert_allclose(module(t).numpy(), expected, rtol=1e-12, atol=1e-12, err_msg=repr(module))
    assert nn.Flatten()(tg.zeros(2, 3, 4)).shape == (2, 12)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_loss_modules_call_the_functions_with_their_options():
    rng = np.random.default_rng(0)
    logits, target = Tensor(rng.standard_normal((5, 3))), Tensor(np.array([0, 2, -100, 1, 2]))
    weight = np.array([1.0, 2.0, 0.5])
    F = nn.functional
    pairs = [(nn.CrossEntropyLoss(weight=weight, label_smoothing=0.2, reduction="sum")(logits, target),
              F.cross_entropy(logits, target, weight=Tensor(weight), label_smoothing=0.2, reduction="sum")),
             (nn.NLLLoss(weight=weight)(logits.log_softmax(1), target),
              F.nll_loss(logits.log_softmax(1), target, weight=Tensor(weight))),
             (nn.MSELoss(reduction="none")(logits, logits * 2), F.mse_loss(logits, logits * 2, reduction="none")),
             (nn.BCEWithLogitsLoss()(logits, logits.sigmoid()),
              F.binary_cross_entropy_with_logits(logits, logits.sigmoid())),
             (nn.BCEWithLogitsLoss(weight=[[2.0]], pos_weight=weight, reduction="sum")(logits, logits.sigmoid()),
              F.binary_cross_entropy_with_logits(logits, logits.sigmoid(), Tensor([[2.0]]), "sum", Tensor(weight)))]
    for got, expected in pairs:
        np.testing.assert_allclose(got.numpy(), expected.numpy())
    loss = nn.CrossEntropyLoss(weight=weight)
    assert list(loss.state_dict()) == ["weight"] and "weight" not in nn.CrossEntropyLoss().state_dict()
    assert list(nn.BCEWithLogitsLoss(pos_weight=weight).state_dict()) == ["pos_weight"]
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast to the logits' shape \(5, 3\)"):
        F.binary_cross_entropy_with_logits(logits, logits.sigmoid(), pos_weight=Tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


def test_flatten_parameters_is_a_no_op():
    lstm = nn.LSTM(2, 3)
    before = {k: v.copy() for k, v in lstm.state_dict().items()}
    assert lstm.flatten_parameters() is None
    assert all((lstm.state_dict()[k] == v).all() for k, v in before.items())


# ---- tied weights and load_state_dict ---------------------------------------------------------

class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(10, 4)
        self.decoder = nn.Linear(4, 10)
        self.decoder.weight = self.encoder.weight


def test_tied_weights_are_listed_under_every_name_and_round_trip_strictly():
    tg.manual_seed(0)
    model = TiedLM()
    sd = model.state_dict()
    assert list(sd) == ["encoder.weight", "decoder.weight", "decoder.bias"]
    assert len(list(model.parameters())) == 2  # parameters() still lists the shared one once
    other = TiedLM()
    assert other.load_state_dict(sd, strict=True) == ([], [])
    np.testing.assert_array_equal(other.decoder.weight.numpy(), sd["encoder.weight"])
    assert other.decoder.weight is other.encoder.weight
    older = {k: v for k, v in sd.items() if k != "decoder.weight"}  # a checkpoint listing it once
    assert other.load_state_dict(older, strict=True) == ([], [])
    with pytest.raises(ValueError, match=r"missing keys: \['decoder.bias'\]"):
        other.load_state_dict({"encoder.weight": sd["encoder.weight"]})


@pytest.mark.parametrize("value", ["model.npz", b"model.npz", __import__("pathlib").Path("m.npz"), [1, 2]])
def test_load_state_dict_wants_a_mapping(value):
    with pytest.raises(TypeError, match="expected a mapping") as info:
        nn.Linear(2, 2).load_state_dict(value)
    assert ("tg.load(path)" in str(info.value)) == (not isinstance(value, list))


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, x", [
    (nn.Linear(3, 2), tg.zeros(4, 3, dtype=tg.float64)),
    (nn.LayerNorm(3), tg.zeros(4, 3, dtype=tg.float64)),
    (nn.LSTMCell(3, 2), tg.zeros(4, 3, dtype=tg.float64)),
    (nn.GRUCell(3, 2), tg.zeros(4, 3, dtype=tg.int64)),
    (nn.RNNCell(3, 2), tg.zeros(4, 3, dtype=tg.float64)),
    (nn.LSTM(3, 2), tg.zeros(5, 4, 3, dtype=tg.float64)),
])
def test_layers_refuse_inputs_of_another_dtype_naming_layer_dtypes_devices_and_fix(layer, x):
    with pytest.raises(ValueError) as info:
        layer(x)
    message = str(info.value)
    assert message.startswith(type(layer).__name__ + ": input is " + str(x.dtype) + " on cpu")
    assert "float32 on cpu" in message and ".to()" in message


def test_layers_refuse_inputs_on_another_device():
    with pytest.raises(ValueError, match="Linear: input is float32 on fake:0 but the parameters are float32 on cpu"):
        nn.Linear(3, 2)(tg.zeros(1, 3, device="fake"))
    with pytest.raises(TypeError, match="Linear: input must be a Tensor"):
        nn.Linear(3, 2)(np.zeros((1, 3), np.float32))


def test_second_backward_in_a_truncated_bptt_loop_suggests_detach_first():
    tg.manual_seed(0)
    lstm, head = nn.LSTM(2, 3), nn.Linear(3, 1)
    state = None
    for batch in range(2):
        out, state = lstm(tg.randn(4, 2, 2), state)  # the bug: state carried without .detach()
        loss = head(out).sum()
        if batch == 0:
            loss.backward()
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    message = str(info.value)
    assert "already freed" in message and "detach the carried state" in message
    assert message.index("detach") < message.index("retain_graph=True")


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_without_scipy_falls_back_to_libm(monkeypatch, shape, dtype):
    import builtins
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    x = np.linspace(-2, 2, int(np.prod(shape))).reshape(shape).astype(dtype)
    out = tg.engine.backend.erf(x)
    assert type(out) is np.ndarray and out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, np.vectorize(math.erf)(x.astype(np.float64)),
                               rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert nn.GELU()(Tensor(x)).shape == shape
