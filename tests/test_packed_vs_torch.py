"""Packed sequences and LSTM proj_size against PyTorch (float64, weights copied by state_dict): the packed
fields, outputs, final states and gradients, and the BPTT oracle's projection. Skipped without torch."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.nn.utils import rnn as torch_rnn  # noqa: E402

from bptt_oracle import layer_forward_backward  # noqa: E402
from recurrent_helpers import assert_close, leaf  # noqa: E402
from tinygrad_seq import Tensor, nn  # noqa: E402
from tinygrad_seq.nn.utils import rnn  # noqa: E402

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
OURS = {"lstm": nn.LSTM, "gru": nn.GRU}


def twins(kind, I, H, rng, **options):
    """A float64 PyTorch layer with U(-1, 1) weights and ours loaded from its state_dict."""
    theirs = TORCH[kind](I, H, dtype=torch.float64, **options)
    theirs.load_state_dict({n: torch.from_numpy(rng.uniform(-1, 1, tuple(p.shape)))
                            for n, p in theirs.named_parameters()})
    ours = OURS[kind](I, H, **options).double()
    assert ours.load_state_dict({n: v.numpy() for n, v in theirs.state_dict().items()}) == ([], [])
    return theirs, ours


def run(library, layer, x, lengths, hx, batch_first, enforce_sorted, weights):
    """pack -> layer -> (packed output fields, padded output, final states), then backward of a weighted sum of
    the packed output data and the final states; returns NumPy arrays and the gradients."""
    if library == "torch":
        make, pack, pad = (lambda a: torch.tensor(a, requires_grad=True)), torch_rnn.pack_padded_sequence, \
            torch_rnn.pad_packed_sequence
        numpy = (lambda t: t.detach().numpy())
    else:
        make, pack, pad, numpy = leaf, rnn.pack_padded_sequence, rnn.pad_packed_sequence, (lambda t: t.numpy())
    x_t, hx_t = make(x), [make(h) for h in hx]
    packed = pack(x_t, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, final = layer(packed, tuple(hx_t) if len(hx_t) == 2 else hx_t[0])
    finals = list(final) if isinstance(final, tuple) else [final]
    loss = (out.data * make(weights[0])).sum()
    for f, w in zip(finals, weights[1:]):
        loss = loss + (f * make(w)).sum()
    loss.backward()
    fields = [numpy(f) if f is not None else None for f in packed] + [numpy(f) for f in out[1:] if f is not None]
    results = {"fields": fields, "output": numpy(out.data), "padded": numpy(pad(out, batch_first=batch_first)[0]),
               "x": numpy(x_t.grad)}
    results.update({f"final {k}": numpy(f) for k, f in enumerate(finals)})
    results.update({f"gradient of hx {k}": numpy(h.grad) for k, h in enumerate(hx_t)})
    results.update({name: numpy(p.grad) for name, p in layer.named_parameters()})
    return results


@pytest.mark.parametrize("kind, proj_size", [("lstm", 0), ("gru", 0), ("lstm", 2)])
@given(seed=st.integers(0, 2**16), batch_first=st.booleans(), enforce_sorted=st.booleans(),
       lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_packed_two_layer_bidirectional_layers_match_pytorch(kind, proj_size, seed, batch_first, enforce_sorted,
                                                             lengths):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    rng = np.random.default_rng(seed)
    T, B, I, H = max(lengths), len(lengths), 3, 4
    options = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    theirs, ours = twins(kind, I, H, rng, **options, **({"proj_size": proj_size} if proj_size else {}))
    P = proj_size or H
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    hx = [rng.standard_normal((4, B, P))] + ([rng.standard_normal((4, B, H))] if kind == "lstm" else [])
    weights = [rng.standard_normal((sum(lengths), 2 * P))] + [rng.standard_normal(h.shape) for h in hx]
    want = run("torch", theirs, x, torch.tensor(lengths), hx, batch_first, enforce_sorted, weights)
    got = run("ours", ours, x, lengths, hx, batch_first, enforce_sorted, weights)
    assert len(got["fields"]) == len(want["fields"])
    for a, b in zip(got["fields"], want["fields"]):  # data, batch_sizes, sorted/unsorted indices, twice
        assert (a is None) == (b is None) and (a is None or (a.dtype == b.dtype and np.array_equal(a, b)))
    assert set(got) == set(want)
    for name in set(want) - {"fields"}:
        assert_close(got[name], want[name], name, rtol=1e-10)


def test_projection_state_dicts_load_both_ways():
    theirs = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    ours = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2).double()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert list(ours.state_dict()) == [n for names in theirs._all_weights for n in names]
    result = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    want, (h_n, c_n) = theirs(torch.from_numpy(x))
    got, (h, c) = ours(Tensor(x))
    for a, b, what in ((got, want, "output"), (h, h_n, "h_n"), (c, c_n, "c_n")):
        assert_close(a.numpy(), b.detach().numpy(), what, rtol=1e-10)


def test_the_oracles_projection_matches_pytorch():
    """The NumPy BPTT oracle with weight_hr (what test_lstm_projection trusts) against PyTorch."""
    rng = np.random.default_rng(4)
    theirs, _ = twins("lstm", 3, 4, rng, num_layers=2, bidirectional=True, proj_size=3)
    lengths = [4, 2, 3]
    x, h0, c0 = rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 4))
    go, gh, gc = rng.standard_normal((4, 3, 6)), rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 4))
    x_t, h0_t, c0_t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    out, (h_n, c_n) = theirs(torch_rnn.pack_padded_sequence(x_t, torch.tensor(lengths), enforce_sorted=False),
                             (h0_t, c0_t))
    out = torch_rnn.pad_packed_sequence(out, total_length=4)[0]
    ((out * torch.from_numpy(go)).sum() + (h_n * torch.from_numpy(gh)).sum() + (c_n * torch.from_numpy(gc)).sum()
     ).backward()
    params = {n: p.detach().numpy() for n, p in theirs.named_parameters()}
    want_out, want_h, want_c, grads = layer_forward_backward("lstm", x, params, h0=h0, c0=c0, lengths=lengths,
                                                             num_layers=2, bidirectional=True, grad_output=go,
                                                             grad_h_n=gh, grad_c_n=gc)
    for a, b, what in ((want_out, out, "output"), (want_h, h_n, "h_n"), (want_c, c_n, "c_n")):
        assert_close(a, b.detach().numpy(), what, rtol=1e-10)
    for name, p in theirs.named_parameters():
        assert_close(grads[name], p.grad.numpy(), f"gradient of {name}", rtol=1e-10)
    for name, t in (("x", x_t), ("h0", h0_t), ("c0", c0_t)):
        assert_close(grads[name], t.grad.numpy(), f"gradient of {name}", rtol=1e-10)
