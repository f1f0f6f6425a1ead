"""nn.utils: gradient clipping against NumPy (and PyTorch when installed), pad_sequence."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq.nn.utils import clip_grad_norm_, clip_grad_value_, pad_sequence

INF = float("inf")


def with_grads(grads, device="cpu"):
    """Leaves whose .grad holds the given arrays."""
    params = []
    for g in grads:
        p = tg.Tensor(np.zeros_like(g), device=device, requires_grad=True)
        p.grad = tg.Tensor(g, device=device)
        params.append(p)
    return params


def numpy_total_norm(grads, norm_type):
    flat = np.concatenate([np.abs(g).ravel() for g in grads])
    if norm_type == INF:
        return flat.max() if flat.size else 0.0
    return (flat ** norm_type).sum() ** (1.0 / norm_type)


# ---- clip_grad_norm_ ---------------------------------------------------------------------

@given(shapes=st.lists(st.sampled_from([(), (3,), (2, 3), (0,)]), min_size=1, max_size=4),
       scale=st.sampled_from([1e-3, 1.0, 50.0]), max_norm=st.floats(0.01, 20.0),
       norm_type=st.sampled_from([1.0, 2.0, 3.0, 0.5, INF]), seed=st.integers(0, 2**32 - 1))
def test_clip_grad_norm_matches_numpy(shapes, scale, max_norm, norm_type, seed):
    rng = np.random.default_rng(seed)
    grads = [scale * rng.standard_normal(s) for s in shapes]
    params = with_grads(grads)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    expected = numpy_total_norm(grads, norm_type)
    assert isinstance(total, tg.Tensor) and total.shape == () and total.dtype == np.float64
    np.testing.assert_allclose(total.item(), expected, rtol=1e-10)
    coef = min(max_norm / (expected + 1e-6), 1.0)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-10)
    clipped = numpy_total_norm([p.grad.numpy() for p in params], norm_type)
    assert clipped <= max_norm * (1 + 1e-12) or coef == 1.0  # max_norm * total / (total + 1e-6)


def test_clip_grad_norm_below_the_limit_changes_nothing():
    g = np.array([3.0, 4.0], dtype=np.float32)
    (p,) = with_grads([g])
    buffer = p.grad.array
    total = clip_grad_norm_(p, 10.0)  # a single Tensor is accepted
    assert total.item() == 5.0 and total.dtype == np.float32
    assert p.grad.array is buffer  # in place
    np.testing.assert_array_equal(p.grad.numpy(), g)


def test_clip_grad_norm_float32_in_place():
    g = np.array([[3.0, 4.0], [0.0, 12.0]], dtype=np.float32)
    (p,) = with_grads([g])
    buffer = p.grad.array
    total = clip_grad_norm_([p], 1.3)
    assert total.dtype == np.float32 and total.item() == 13.0
    assert p.grad.array is buffer and p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad.numpy(), g * np.float32(1.3 / (13.0 + 1e-6)), rtol=1e-6)


def test_clip_grad_norm_skips_missing_grads_and_handles_none_at_all():
    a, b = with_grads([np.array([6.0, 8.0])])[0], tg.Tensor(np.ones(2), requires_grad=True)
    total = clip_grad_norm_(iter([a, b]), 5.0)  # a generator, as model.parameters() gives
    assert total.item() == 10.0 and b.grad is None
    none = clip_grad_norm_([b], 1.0)
    assert isinstance(none, tg.Tensor) and none.item() == 0.0


def test_clip_grad_norm_nonfinite():
    (p,) = with_grads([np.array([1.0, np.nan])])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad.numpy(), [1.0, np.nan])  # untouched when it raises
    total = clip_grad_norm_([p], 1.0)  # PyTorch's behaviour: the NaN spreads to every gradient
    assert np.isnan(total.item()) and np.isnan(p.grad.numpy()).all()


def test_clip_grad_norm_argument_errors():
    (p,) = with_grads([np.ones(2)])
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        clip_grad_norm_([p], -1.0)
    with pytest.raises(ValueError, match="norm_type must be positive"):
        clip_grad_norm_([p], 1.0, norm_type=0)
    with pytest.raises(TypeError, match="expected Tensors"):
        clip_grad_norm_([np.ones(2)], 1.0)


def test_clip_on_other_devices(device):
    grads = [np.array([3.0, -4.0]), np.array([[12.0]])]
    params = with_grads(grads, device)
    total = clip_grad_norm_(params, 6.5)
    assert total.device == params[0].device
    np.testing.assert_allclose(total.item(), 13.0)
    for p, g in zip(params, grads):
        assert p.grad.device == p.device
        np.testing.assert_allclose(p.grad.numpy(), g * 6.5 / (13.0 + 1e-6))
    clip_grad_value_(params, 1.0)
    np.testing.assert_allclose(params[0].grad.numpy(), [1.0, -1.0])


# ---- clip_grad_value_ --------------------------------------------------------------------

@given(clip=st.floats(0.0, 3.0), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_clip_grad_value_matches_numpy(clip, seed, dtype):
    rng = np.random.default_rng(seed)
    grads = [(2 * rng.standard_normal(s)).astype(dtype) for s in [(4,), (2, 3), ()]]
    params = with_grads(grads) + [tg.Tensor(np.ones(2), requires_grad=True)]
    buffers = [p.grad.array for p in params[:3]]
    assert clip_grad_value_(params, clip) is None
    for p, g, buffer in zip(params, grads, buffers):
        assert p.grad.array is buffer and p.grad.dtype == dtype
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, dtype(-clip), dtype(clip)))
    assert params[3].grad is None


def test_clip_grad_value_errors():
    (p,) = with_grads([np.ones(2)])
    with pytest.raises(ValueError, match="clip_value must be >= 0"):
        clip_grad_value_([p], -0.5)


# ---- pad_sequence ------------------------------------------------------------------------

def numpy_pad(seqs, batch_first, value, side):
    T = max(len(s) for s in seqs)
    out = np.full((len(seqs), T) + seqs[0].shape[1:], value, dtype=seqs[0].dtype)
    for b, s in enumerate(seqs):
        rows = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        out[b, rows] = s
    return out if batch_first else np.swapaxes(out, 0, 1)


@given(lengths=st.lists(st.integers(0, 5), min_size=1, max_size=4), trailing=st.sampled_from([(), (2,), (2, 3)]),
       batch_first=st.booleans(), side=st.sampled_from(["right", "left"]), value=st.sampled_from([0.0, -1.5]),
       seed=st.integers(0, 2**32 - 1))
def test_pad_sequence_values_and_gradients(lengths, trailing, batch_first, side, value, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n,) + trailing) for n in lengths]
    seqs = [tg.Tensor(a, requires_grad=True) for a in arrays]
    out = pad_sequence(seqs, batch_first=batch_first, padding_value=value, padding_side=side)
    expected = numpy_pad(arrays, batch_first, value, side)
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_array_equal(out.numpy(), expected)
    if out.numel() == 0:
        return
    weight = rng.standard_normal(out.shape)
    (out * tg.Tensor(weight)).sum().backward()
    per_batch = weight if batch_first else np.swapaxes(weight, 0, 1)  # (B, T, *)
    T = per_batch.shape[1]
    for b, (s, n) in enumerate(zip(seqs, lengths)):
        rows = slice(0, n) if side == "right" else slice(T - n, T)
        if n:
            np.testing.assert_array_equal(s.grad.numpy(), per_batch[b, rows])


def test_pad_sequence_shapes():
    seqs = [tg.ones(4, 3), tg.ones(2, 3), tg.ones(1, 3)]
    assert pad_sequence(seqs).shape == (4, 3, 3)
    assert pad_sequence(seqs, batch_first=True).shape == (3, 4, 3)
    assert pad_sequence([tg.ones(3)]).shape == (3, 1)
    assert pad_sequence((s for s in seqs), batch_first=True).shape == (3, 4, 3)  # any iterable


def test_pad_sequence_of_token_ids_keeps_the_integer_dtype():
    ids = [tg.Tensor(np.array([5, 6, 7])), tg.Tensor(np.array([8]))]
    out = pad_sequence(ids, batch_first=True, padding_value=-1)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy(), [[5, 6, 7], [8, -1, -1]])
    left = pad_sequence(ids, batch_first=True, padding_side="left")
    np.testing.assert_array_equal(left.numpy(), [[5, 6, 7], [0, 0, 8]])


def test_pad_sequence_on_other_devices(device):
    seqs = [tg.Tensor(np.arange(6.0).reshape(3, 2), device=device, requires_grad=True),
            tg.Tensor(np.ones((1, 2)), device=device, requires_grad=True)]
    out = pad_sequence(seqs, padding_value=9.0)
    assert out.device == seqs[0].device
    np.testing.assert_array_equal(out.numpy()[:, 1], [[1.0, 1.0], [9.0, 9.0], [9.0, 9.0]])
    out.sum().backward()
    np.testing.assert_array_equal(seqs[1].grad.numpy(), np.ones((1, 2)))


@pytest.mark.parametrize("seqs, kwargs, error, message", [
    ([], {}, ValueError, "non-empty list"),
    (tg.ones(3, 2), {}, TypeError, "got a single Tensor"),
    ([np.ones((2, 3))], {}, TypeError, "sequence 0 is a ndarray"),
    ([tg.ones(2, 3), tg.Tensor(1.0)], {}, ValueError, "sequence 1 is 0-d"),
    ([tg.ones(2, 3), tg.ones(2, 4)], {}, ValueError, "sequence 0 has shape (2, 3) and sequence 1 has (2, 4)"),
    ([tg.ones(2, 3), tg.ones(2, 3, dtype="float64")], {}, TypeError, "sequence 0 is float32 and sequence 1 is float64"),
    ([tg.ones(2)], {"padding_side": "middle"}, ValueError, "padding_side must be 'right' or 'left'"),
])
def test_pad_sequence_errors(seqs, kwargs, error, message):
    import re
    with pytest.raises(error, match=re.escape(message)):
        pad_sequence(seqs, **kwargs)


def test_pad_sequence_rejects_mixed_devices():
    message = "sequences must be on one device, sequence 0 is on cpu and sequence 1 on fake:0"
    with pytest.raises(ValueError, match=message):
        pad_sequence([tg.ones(2, 3), tg.ones(1, 3, device="fake")])


# ---- PyTorch, when installed ---------------------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, INF])
def test_clipping_and_padding_match_pytorch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    grads = [5 * rng.standard_normal(s) for s in [(3, 4), (4,), ()]]
    params = with_grads(grads)
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g)
    total = clip_grad_norm_(params, 2.0, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 2.0, norm_type=norm_type)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-12)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    clip_grad_value_(params, 0.1)
    torch.nn.utils.clip_grad_value_(tparams, 0.1)
    for p, t in zip(params, tparams):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
    arrays = [rng.standard_normal((n, 2)) for n in (3, 1, 4)]
    for side in ("right", "left"):
        for batch_first in (False, True):
            ours = pad_sequence([tg.Tensor(a) for a in arrays], batch_first, -2.0, side)
            theirs = torch.nn.utils.rnn.pad_sequence([torch.tensor(a) for a in arrays], batch_first=batch_first,
                                                     padding_value=-2.0, padding_side=side)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
