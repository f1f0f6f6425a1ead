"""Packed sequences (nn.utils.rnn): PyTorch's layout, round trips, gradients, errors, and recurrent
layers run on a PackedSequence giving exactly what the same layer gives with `lengths=`."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from recurrent_helpers import assert_close, leaf, make_layer, randomize
from tinygrad_seq import Tensor, nn
from tinygrad_seq.autograd.gradcheck import gradcheck
from tinygrad_seq.nn.utils.rnn import (PackedSequence, invert_permutation, pack_padded_sequence, pack_sequence,
                                       pad_packed_sequence, pad_sequence, unpack_sequence, unpad_sequence)


def reference_pack(x, lengths):
    """NumPy, from the definition: sort by decreasing length (stably), then at each step t the rows of the
    sequences longer than t. x is time-major (T, B, *)."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    rows = [x[t, b] for t in range(max(lengths)) for b in order if lengths[b] > t]
    batch_sizes = [sum(n > t for n in lengths) for t in range(max(lengths))]
    return np.stack(rows), batch_sizes, order


@st.composite
def batches(draw):
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    features = draw(st.sampled_from([(), (2,), (2, 3)]))
    return T, lengths, features, draw(st.booleans())


@given(batch=batches(), seed=st.integers(0, 2**16))
def test_pack_has_pytorchs_layout_and_pad_undoes_it(batch, seed):
    T, lengths, features, batch_first = batch
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, len(lengths)) + features)
    packed = pack_padded_sequence(Tensor(x.swapaxes(0, 1) if batch_first else x), lengths, batch_first=batch_first,
                                  enforce_sorted=False)
    data, batch_sizes, order = reference_pack(x, lengths)
    assert isinstance(packed, PackedSequence) and packed.data.shape == data.shape
    np.testing.assert_array_equal(packed.data.numpy(), data)
    assert packed.batch_sizes.tolist() == batch_sizes and packed.batch_sizes.dtype == np.int64
    assert packed.batch_sizes.device == "cpu"
    assert packed.sorted_indices.tolist() == order and packed.sorted_indices.dtype == np.int64
    assert [order[i] for i in packed.unsorted_indices.tolist()] == list(range(len(lengths)))

    padded, got_lengths = pad_packed_sequence(packed, batch_first=batch_first, padding_value=-7.0, total_length=T + 1)
    want = np.full((T + 1,) + x.shape[1:], -7.0)
    for b, n in enumerate(lengths):
        want[:n, b] = x[:n, b]
    np.testing.assert_array_equal(padded.numpy(), want.swapaxes(0, 1) if batch_first else want)
    assert got_lengths.tolist() == lengths and got_lengths.dtype == np.int64 and got_lengths.device == "cpu"


@given(batch=batches(), seed=st.integers(0, 2**16))
def test_round_trips_through_lists_of_sequences(batch, seed):
    T, lengths, features, batch_first = batch
    rng = np.random.default_rng(seed)
    sequences = [Tensor(rng.standard_normal((n,) + features)) for n in lengths]
    for enforce_sorted, given_ in ((False, sequences), (True, sorted(sequences, key=lambda s: -s.shape[0]))):
        back = unpack_sequence(pack_sequence(given_, enforce_sorted=enforce_sorted))
        assert [s.numpy().tolist() for s in back] == [s.numpy().tolist() for s in given_]
    padded = pad_sequence(sequences, batch_first=batch_first)
    back = unpad_sequence(padded, Tensor(lengths), batch_first=batch_first)
    assert [s.numpy().tolist() for s in back] == [s.numpy().tolist() for s in sequences]


def test_sorted_input_packs_alike_with_or_without_enforce_sorted():
    x = Tensor(np.arange(24.0).reshape(4, 3, 2))
    sorted_ = pack_padded_sequence(x, [4, 2, 2])
    assert sorted_.sorted_indices is None and sorted_.unsorted_indices is None
    unsorted = pack_padded_sequence(x, [4, 2, 2], enforce_sorted=False)
    assert unsorted.sorted_indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(sorted_.data.numpy(), unsorted.data.numpy())
    permuted = pack_padded_sequence(x[:, [1, 0, 2]], [2, 4, 2], enforce_sorted=False)
    np.testing.assert_array_equal(permuted.data.numpy(), sorted_.data.numpy())  # ties keep their order
    assert permuted.sorted_indices.tolist() == [1, 0, 2]
    assert invert_permutation(Tensor([2, 0, 1])).tolist() == [1, 2, 0] and invert_permutation(None) is None


def test_packing_and_padding_are_differentiable():
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal((4, 3, 2)))
    lengths = [2, 4, 1]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    g = rng.standard_normal(packed.data.shape)
    (packed.data * Tensor(g)).sum().backward()
    want = np.zeros(x.shape)
    for row, (t, b) in enumerate((t, b) for t in range(4) for b in (1, 0, 2) if lengths[b] > t):
        want[t, b] = g[row]
    np.testing.assert_array_equal(x.grad.numpy(), want)  # padding gets exactly zero

    def round_trip(x):
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(PackedSequence(p.data.tanh(), *p[1:]), batch_first=True, padding_value=3.0)[0]
    gradcheck(round_trip, [leaf(rng.standard_normal((3, 4, 2)))])


@pytest.mark.parametrize("call, error, message", [
    (lambda x: pack_padded_sequence(x, [2, 3, 1]), ValueError,
     "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
     "`enforce_sorted=False`"),
    (lambda x: pack_padded_sequence(x, [3, 0, 1], enforce_sorted=False), ValueError,
     "Length of all samples has to be greater than 0"),
    (lambda x: pack_padded_sequence(x, [5, 2, 1]), ValueError, r"lengths \[5, 2, 1\] run past the input's 4"),
    (lambda x: pack_padded_sequence(x, [3, 2]), ValueError,
     r"Expected `len\(lengths\)` to be equal to batch_size, but got 2 \(batch_size=3\)"),
    (lambda x: pack_padded_sequence(x, Tensor([3, 2, 1], device="fake"), enforce_sorted=False), ValueError,
     "'lengths' argument should be a 1D CPU int64 tensor, but got 1D fake:0 int64 tensor"),
    (lambda x: pack_padded_sequence(x, [3.5, 2, 1]), TypeError, "'lengths' must hold integers"),
    (lambda x: pack_padded_sequence(x[:0], []), ValueError, "Cannot pack empty tensors"),
    (lambda x: pad_packed_sequence(pack_padded_sequence(x, [3, 2, 1]), total_length=2), ValueError,
     "Expected total_length to be at least the length of the longest sequence in input, but got total_length=2 "
     "and max sequence length being 3"),
    (lambda x: pad_packed_sequence(x), TypeError, "expected a PackedSequence, got Tensor"),
    (lambda x: PackedSequence(x, Tensor([3, 2], device="fake")), ValueError, "batch_sizes should always be on CPU"),
    (lambda x: nn.GRU(2, 3)(pack_padded_sequence(x, [3, 2, 1]), lengths=[3, 2, 1]), ValueError,
     "a PackedSequence carries its own lengths"),
])
def test_errors_say_what_pytorchs_say(call, error, message):
    with pytest.raises(error, match=message):
        call(Tensor(np.zeros((4, 3, 2), dtype=np.float32)))


def test_conversions_convert_data_and_move_the_indices_with_it():
    packed = pack_padded_sequence(Tensor(np.ones((3, 2, 2))), [1, 3], enforce_sorted=False)
    assert packed.to("cpu") is packed and packed.double() is packed
    single = packed.float()
    assert single.data.dtype == np.float32 and single.batch_sizes is packed.batch_sizes
    moved = packed.to("fake")
    assert moved.data.device == moved.sorted_indices.device == moved.unsorted_indices.device == "fake:0"
    assert moved.batch_sizes.device == "cpu" and not moved.is_cuda
    back, lengths = pad_packed_sequence(moved)
    assert back.device == "fake:0" and lengths.tolist() == [1, 3]


def run_both(module, x, lengths, hx, batch_first, enforce_sorted, recurrent=False):
    """module on a PackedSequence and with lengths=; returns both runs' (output, final state, gradients)."""
    results = []
    for packed in (True, False):
        module.zero_grad()
        x_t = leaf(x)
        state = None if hx is None else tuple(leaf(h) for h in hx)
        state = state if state is None or len(state) > 1 else state[0]
        if packed:
            seq = pack_padded_sequence(x_t, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
            out, final = module(seq, state)
            assert isinstance(out, PackedSequence) and out.batch_sizes is seq.batch_sizes
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
        else:
            out, final = module(x_t, state, lengths=lengths)
        items = [out] + [t for item in (final if isinstance(final, (tuple, list)) else [final])
                         for t in (item if isinstance(item, (tuple, list)) else [item])]
        rng = np.random.default_rng(0)
        sum((t * Tensor(rng.standard_normal(t.shape))).sum() for t in items).backward()
        grads = [x_t.grad] + ([] if state is None else [s.grad for s in (state if isinstance(state, tuple) else
                                                                         (state,))])
        grads += [p.grad for p in module.parameters()]
        results.append([t.numpy().copy() for t in items + grads])
    return results


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "projected lstm"])
@pytest.mark.parametrize("enforce_sorted, batch_first, with_hx", [(False, False, True), (False, True, False),
                                                                   (True, False, True)])
def test_layers_on_a_packed_sequence_equal_the_lengths_path(kind, enforce_sorted, batch_first, with_hx):
    """pack -> 2-layer bidirectional layer -> unpack == the layer with lengths= (outputs, final states in
    the original batch order, gradients of the input, the initial state and every weight)."""
    rng = np.random.default_rng(1)
    T, B, I, H, P = 5, 4, 3, 4, 2
    lengths = [5, 3, 3, 1] if enforce_sorted else [3, 5, 1, 3]
    options = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    if kind == "projected lstm":
        layer = randomize(nn.LSTM(I, H, proj_size=P, **options).double(), rng)
        hx = [rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))]
    else:
        layer = make_layer(kind, "tanh", I, H, rng, **options)
        hx = [rng.standard_normal((4, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    packed, padded = run_both(layer, x, lengths, hx if with_hx else None, batch_first, enforce_sorted)
    for k, (a, b) in enumerate(zip(packed, padded)):
        assert_close(a, b, f"item {k}", rtol=1e-12)


def test_recurrent_on_a_packed_sequence_equals_the_lengths_path():
    rng = np.random.default_rng(2)
    cells = [randomize(nn.GRUCell(3, 4).double(), rng), randomize(nn.GRUCell(8, 4).double(), rng)]
    reverse = [randomize(nn.GRUCell(3, 4).double(), rng), randomize(nn.GRUCell(8, 4).double(), rng)]
    layer = nn.Recurrent(cells, reverse_cell=reverse)
    hx = [rng.standard_normal((3, 4)) for _ in range(4)]
    x = rng.standard_normal((5, 3, 3))
    results = []
    for packed in (True, False):
        layer.zero_grad()
        x_t, h = leaf(x), [leaf(a) for a in hx]
        state = [(h[0], h[1]), (h[2], h[3])]
        if packed:
            out, final = layer(pack_padded_sequence(x_t, [2, 5, 4], enforce_sorted=False), state)
            out = pad_packed_sequence(out)[0]
        else:
            out, final = layer(x_t, state, lengths=[2, 5, 4])
        items = [out] + [t for pair in final for t in pair]
        sum((t * (k + 1.0)).sum() for k, t in enumerate(items)).backward()
        results.append([t.numpy().copy() for t in items + [x_t.grad] + [a.grad for a in h] +
                        [p.grad for p in layer.parameters()]])
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, f"item {k}", rtol=1e-12)


def test_readme_style_classifier_runs_on_packed_input():
    """Embedding -> pack -> LSTM -> h_n, the everyday PyTorch pattern, in float32."""
    tg.manual_seed(0)
    embed, lstm = nn.Embedding(10, 4), nn.LSTM(4, 6, batch_first=True)
    ids = Tensor(np.array([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]))
    packed = pack_padded_sequence(embed(ids), Tensor([3, 2, 4]), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    padded, lengths = pad_packed_sequence(out, batch_first=True)
    assert padded.shape == (3, 4, 6) and lengths.tolist() == [3, 2, 4] and h_n.dtype == np.float32
    for b, n in enumerate([3, 2, 4]):
        np.testing.assert_array_equal(padded.numpy()[b, n - 1], h_n.numpy()[0, b])
        assert not padded.numpy()[b, n:].any()


def test_packed_layers_run_on_every_device(device):
    """Packing, the layer and padding on the fake CuPy-like device (no host array reaches device math)."""
    rng = np.random.default_rng(3)
    layer = randomize(nn.LSTM(2, 4, num_layers=2, bidirectional=True, proj_size=3).double(), rng)
    x = rng.standard_normal((4, 3, 2))
    results = []
    for where in ("cpu", device):
        layer.to(where).zero_grad()
        x_t = Tensor(x, device=where, requires_grad=True)
        out, (h_n, c_n) = layer(pack_padded_sequence(x_t, [2, 4, 1], enforce_sorted=False))
        padded, _ = pad_packed_sequence(out)
        assert padded.device == h_n.device == out.sorted_indices.device == x_t.device
        (padded.sum() + h_n.sum() + c_n.sum()).backward()
        results.append([t.numpy().copy() for t in (padded, h_n, c_n, x_t.grad, layer.weight_hr_l1_reverse.grad)])
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, f"item {k}", rtol=1e-12)
