"""A PyTorch state_dict converted to NumPy loads into our layers and gives PyTorch's outputs
and gradients (and ours loads back into PyTorch). Skipped where torch is not installed (CI)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from recurrent_helpers import CELLS, LAYERS, assert_close, layer_configs, leaf, run_layer  # noqa: E402
from tinygrad_seq import Tensor, nn  # noqa: E402

TORCH_LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


def to_numpy(state_dict):
    return {name: value.detach().cpu().numpy().copy() for name, value in state_dict.items()}


def torch_layer(kind, nonlinearity, I, H, num_layers, bidirectional, bias, batch_first, rng, dtype=torch.float64):
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    module = TORCH_LAYERS[kind](I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                                batch_first=batch_first, dtype=dtype, **extra)
    module.load_state_dict({n: torch.from_numpy(rng.uniform(-1, 1, p.shape)).to(dtype)
                            for n, p in module.named_parameters()})
    return module


def torch_run(module, kind, x, h0, c0, lengths, go, gh, gc):
    """Time-major NumPy in, time-major NumPy out; packing when lengths are given."""
    T = x.shape[0]
    x_t = torch.tensor(x.transpose(1, 0, 2) if module.batch_first else x, requires_grad=True)
    h0_t, c0_t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    inputs = x_t if lengths is None else pack_padded_sequence(x_t, torch.tensor(lengths),
                                                              batch_first=module.batch_first, enforce_sorted=False)
    out, state = module(inputs, (h0_t, c0_t) if kind == "lstm" else h0_t)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    if module.batch_first:
        out = out.transpose(0, 1)
    h_n, c_n = state if kind == "lstm" else (state, None)
    loss = (out * torch.from_numpy(go)).sum() + (h_n * torch.from_numpy(gh)).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.from_numpy(gc)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    grads["x"] = x_t.grad.numpy().transpose(1, 0, 2) if module.batch_first else x_t.grad.numpy()
    grads["h0"] = h0_t.grad.numpy()
    if c_n is not None:
        grads["c0"] = c0_t.grad.numpy()
    return out.detach().numpy(), h_n.detach().numpy(), None if c_n is None else c_n.detach().numpy(), grads


@given(config=layer_configs(), seed=st.integers(0, 2**32 - 1))
def test_torch_weights_give_torchs_outputs_and_gradients(config, seed):
    kind, nonlinearity, T, B, I, H = (config[k] for k in ("kind", "nonlinearity", "T", "B", "I", "H"))
    L, bidirectional, bias, batch_first, lengths = (config[k] for k in
                                                    ("num_layers", "bidirectional", "bias", "batch_first", "lengths"))
    rng = np.random.default_rng(seed)
    module = torch_layer(kind, nonlinearity, I, H, L, bidirectional, bias, batch_first, rng)
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    ours = LAYERS[kind](I, H, num_layers=L, bidirectional=bidirectional, bias=bias, batch_first=batch_first,
                        **extra).double()
    assert ours.load_state_dict(to_numpy(module.state_dict())) == ([], [])
    D = 2 if bidirectional else 1
    shape = (L * D, B, H)
    x, h0, c0 = rng.standard_normal((T, B, I)), rng.standard_normal(shape), rng.standard_normal(shape)
    go, gh, gc = rng.standard_normal((T, B, D * H)), rng.standard_normal(shape), rng.standard_normal(shape)
    lstm = kind == "lstm"
    want = torch_run(module, kind, x, h0, c0, lengths, go, gh, gc)
    got = run_layer(ours, kind, x, h0, c0 if lstm else None, lengths, go, gh, gc if lstm else None)
    for what, a, b in zip(("output", "h_n", "c_n"), got[:3], want[:3]):
        if b is not None:
            assert_close(a, b, what, rtol=1e-10)
    assert set(got[3]) == set(want[3])
    for name, value in want[3].items():
        assert_close(got[3][name], value, f"gradient of {name}", rtol=1e-10)


@pytest.mark.parametrize("kind, nonlinearity", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
def test_float32_torch_weights_agree_in_float32(kind, nonlinearity):
    rng = np.random.default_rng(0)
    module = torch_layer(kind, nonlinearity, 3, 4, 2, True, True, False, rng, dtype=torch.float32)
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    ours = LAYERS[kind](3, 4, num_layers=2, bidirectional=True, **extra)
    ours.load_state_dict(to_numpy(module.state_dict()))
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    want, _ = module(torch.from_numpy(x))
    got, _ = ours(Tensor(x))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers, bidirectional, bias", [(1, False, True), (2, True, True), (3, True, False)])
def test_state_dicts_have_torchs_keys_and_load_both_ways(kind, num_layers, bidirectional, bias):
    module = TORCH_LAYERS[kind](3, 4, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                                dtype=torch.float64)
    ours = LAYERS[kind](3, 4, num_layers=num_layers, bidirectional=bidirectional, bias=bias).double()
    theirs = to_numpy(module.state_dict())
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.items()]
    result = module.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    x = np.random.default_rng(1).standard_normal((4, 2, 3))
    want, _ = module(torch.from_numpy(x))
    got, _ = ours(Tensor(x))
    assert_close(got.numpy(), want.detach().numpy(), "output", rtol=1e-10)


@pytest.mark.parametrize("kind, nonlinearity", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_cells_load_and_agree(kind, nonlinearity, bias):
    rng = np.random.default_rng(2)
    extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    module = TORCH_CELLS[kind](3, 4, bias=bias, dtype=torch.float64, **extra)
    ours = CELLS[kind](3, 4, bias=bias, **extra).double()
    ours.load_state_dict(to_numpy(module.state_dict()))
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    xo, ho, co = leaf(x), leaf(h), leaf(c)
    want = module(xt, (ht, ct) if kind == "lstm" else ht)
    got = ours(xo, (ho, co) if kind == "lstm" else ho)
    want, got = (want if kind == "lstm" else (want,)), (got if kind == "lstm" else (got,))
    sum(w.sum() * (k + 1) for k, w in enumerate(want)).backward()
    sum(g.sum() * (k + 1) for k, g in enumerate(got)).backward()
    for w, g in zip(want, got):
        assert_close(g.numpy(), w.detach().numpy(), "new state", rtol=1e-10)
    assert_close(xo.grad.numpy(), xt.grad.numpy(), "gradient of x", rtol=1e-10)
    assert_close(ho.grad.numpy(), ht.grad.numpy(), "gradient of h", rtol=1e-10)
    for name, p in module.named_parameters():
        assert_close(getattr(ours, name).grad.numpy(), p.grad.numpy(), f"gradient of {name}", rtol=1e-10)


def test_feed_forward_layers_load_torch_weights():
    rng = np.random.default_rng(3)
    pairs = [(torch.nn.Linear(3, 4, dtype=torch.float64), nn.Linear(3, 4).double(), rng.standard_normal((2, 3))),
             (torch.nn.LayerNorm((2, 3), dtype=torch.float64), nn.LayerNorm((2, 3)).double(),
              rng.standard_normal((4, 2, 3))),
             (torch.nn.Embedding(6, 2, padding_idx=1, dtype=torch.float64), nn.Embedding(6, 2, padding_idx=1).double(),
              np.array([[0, 1, 5], [1, 2, 2]]))]
    for module, ours, x in pairs:
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))
        ours.load_state_dict(to_numpy(module.state_dict()))
        floating = x.dtype.kind == "f"
        xt = torch.tensor(x, requires_grad=floating)
        xo = leaf(x) if floating else Tensor(x)
        want, got = module(xt), ours(xo)
        g = rng.standard_normal(tuple(want.shape))
        (want * torch.from_numpy(g)).sum().backward()
        (got * Tensor(g)).sum().backward()
        assert_close(got.numpy(), want.detach().numpy(), type(ours).__name__, rtol=1e-10)
        for name, p in module.named_parameters():
            assert_close(getattr(ours, name).grad.numpy(), p.grad.numpy(), f"gradient of {name}", rtol=1e-10)
        if floating:
            assert_close(xo.grad.numpy(), xt.grad.numpy(), "gradient of the input", rtol=1e-10)
