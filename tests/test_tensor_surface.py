"""PyTorch's wider surface beyond what the op table (test_ops.py) differentiates: tests of values and
their dtypes, sorting order, in-place operators, the tg.<name> function forms, constructors, defaults,
random fills, activation and loss modules, errors, and ops inside a captured time step.
(Gradients of every differentiable op are in test_ops.py; formulas against PyTorch in
test_surface_vs_torch.py.)"""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import capture, nn
from tinygrad_seq import functional as F
from tinygrad_seq.engine.backend import parse_device
from tinygrad_seq.tensors.functions import METHOD_FORMS

RNG = np.random.default_rng(0)
X = np.round(RNG.uniform(-3, 3, (3, 4)), 1)  # ties among rounded values; NaN and inf below
SPECIAL = np.array([1.5, np.nan, np.inf, -np.inf, 0.0, -2.0])
MASKS = (RNG.random((3, 4)) < 0.5, RNG.random((3, 4)) < 0.5)


# ---- tests of values: boolean results, no gradient, on every device ----------------------------

VALUE_TESTS = [  # (name, tinygrad_seq call, NumPy call, inputs)
    ("eq", lambda a, b: a.eq(b), np.equal, (X, X.T[:3, :1])),
    ("ne", lambda a, b: a.ne(b), np.not_equal, (X, X[:1])),
    ("lt", lambda a, b: a.lt(b), np.less, (X, X[::-1])),
    ("le", lambda a, b: a.le(b), np.less_equal, (X, X[::-1])),
    ("gt", lambda a, b: a.gt(b), np.greater, (X, X[::-1])),
    ("ge", lambda a, b: a.ge(b), np.greater_equal, (X, X[::-1])),
    ("isclose", lambda a, b: a.isclose(b, atol=0.15), lambda a, b: np.isclose(a, b, atol=0.15), (X, X + 0.1)),
    ("logical_and", lambda a, b: a.logical_and(b), np.logical_and, (X, X[::-1])),
    ("logical_or", lambda a, b: a.logical_or(b), np.logical_or, MASKS),
    ("logical_xor", lambda a, b: a.logical_xor(b), np.logical_xor, MASKS),
    ("logical_not", lambda a: a.logical_not(), np.logical_not, (X,)),
    ("and", lambda a, b: a & b, np.bitwise_and, MASKS),
    ("or", lambda a, b: a | b, np.bitwise_or, MASKS),
    ("xor", lambda a, b: a ^ b, np.bitwise_xor, MASKS),
    ("invert", lambda a: ~a, np.invert, MASKS[:1]),
    ("isnan", lambda a: a.isnan(), np.isnan, (SPECIAL,)),
    ("isinf", lambda a: a.isinf(), np.isinf, (SPECIAL,)),
    ("isfinite", lambda a: a.isfinite(), np.isfinite, (SPECIAL,)),
    ("isposinf", lambda a: a.isposinf(), np.isposinf, (SPECIAL,)),
    ("isneginf", lambda a: a.isneginf(), np.isneginf, (SPECIAL,)),
    ("all", lambda a: a.all(1), lambda a: a.all(1), MASKS[:1]),
    ("any", lambda a: a.any(dim=0, keepdim=True), lambda a: a.any(0, keepdims=True), MASKS[:1]),
    ("all_elements", lambda a: a.all(), np.all, (X,)),
    ("count_nonzero", lambda a: a.count_nonzero(0), lambda a: np.count_nonzero(a, 0), (X,)),
    ("floor_divide", lambda a, b: a // b, np.floor_divide, (X, X[::-1] + 3.5)),
    ("remainder", lambda a, b: a % b, np.remainder, (X, X[::-1] + 3.5)),
    ("nan_to_num_defaults", lambda a: a.nan_to_num(), np.nan_to_num, (SPECIAL.astype(np.float32),)),
    ("argsort", lambda a: a.argsort(1), lambda a: np.argsort(a, 1, kind="stable"), (X,)),
    ("nonzero", lambda a: a.nonzero(), np.argwhere, (X,)),
    ("unique", lambda a: a.unique(return_counts=True), lambda a: np.unique(a, return_counts=True), (X,)),
    ("integer_floor_divide", lambda a: a // 4, lambda a: a // 4, (np.arange(-6, 6),)),
]


@pytest.mark.parametrize("name, run, ref, inputs", VALUE_TESTS, ids=[t[0] for t in VALUE_TESTS])
def test_tests_of_values_match_numpy_and_have_no_gradient(name, run, ref, inputs, device):
    tensors = [tg.Tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in inputs]
    outs, expected = run(*tensors), ref(*inputs)
    for out, e in zip(outs if isinstance(outs, tuple) else (outs,), expected if isinstance(expected, tuple) else
                      (expected,)):
        e = np.asarray(e)
        assert out.device == parse_device(device) and out.shape == e.shape, name
        assert out.dtype == (np.int64 if e.dtype.kind in "iu" and out.dtype.kind in "iu" else e.dtype), name
        assert not out.requires_grad or out.dtype.kind == "f", name
        np.testing.assert_array_equal(out.numpy(), e, err_msg=name)


def test_sort_is_stable_in_both_directions_and_puts_nan_last_ascending():
    x = tg.Tensor([2.0, 1.0, 2.0, np.nan, 1.0, 3.0])
    values, indices = x.sort()
    assert indices.tolist() == [1, 4, 0, 2, 5, 3] and np.isnan(values.numpy()[-1])
    values, indices = x.sort(descending=True)
    assert indices.tolist() == [3, 5, 0, 2, 1, 4]  # NaN first, equal values in their original order
    assert x.argsort(0, descending=True).tolist() == indices.tolist()
    assert tg.tensor(5.0).sort().indices.shape == () and tg.tensor([True, False]).argsort().tolist() == [1, 0]


def test_integer_and_boolean_inputs_get_pytorch_result_dtypes():
    ints, flags = tg.tensor([1, 2, 3], dtype=tg.int32), tg.tensor([True, False, True])
    assert ints.sin().dtype == tg.float32 and ints.log1p().dtype == tg.float32 and ints.rsqrt().dtype == tg.float32
    assert ints.floor().dtype == tg.int32 and ints.round().tolist() == [1, 2, 3] and ints.sign().tolist() == [1, 1, 1]
    assert ints.cumsum(0).dtype == tg.int64 and flags.cumsum(0).tolist() == [1, 1, 2]
    assert flags.prod().dtype == tg.int64 and ints.cumprod(0).tolist() == [1, 2, 6]
    assert ints.square().dtype == tg.int32 and tg.tensor([7, -7]).div(2, rounding_mode="trunc").tolist() == [3, -3]
    assert tg.tensor([7, -7]).div(2, rounding_mode="floor").tolist() == [3, -4]
    assert tg.tensor([0.5, 1.5, 2.5, -0.5]).round().tolist() == [0.0, 2.0, 2.0, -0.0]  # half to even
    assert tg.tensor([1.2345]).round(decimals=2).tolist() == [pytest.approx(1.23)]


def test_an_integer_tensor_of_one_element_is_an_index():
    words = ["a", "b", "c"]
    picked = tg.multinomial(tg.tensor([0.0, 0.0, 1.0]), 1)[0]  # as the word-LM's generate.py uses it
    assert words[picked] == "c" and words[tg.tensor([[1]])] == "b" and list(range(tg.tensor(2))) == [0, 1]
    for bad in (tg.tensor(1.0), tg.tensor([1, 2])):
        with pytest.raises(TypeError, match="only integer tensors of a single element"):
            words[bad]


def test_rounding_ops_pass_a_zero_gradient_like_pytorch():
    x = tg.tensor([1.3, -0.7], requires_grad=True)
    y = x.floor() + x.round() + x.sign() + x.trunc() + x.ceil()
    assert y.requires_grad
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]


# ---- in-place operators -------------------------------------------------------------------

def test_augmented_assignment_is_in_place_and_views_see_it():
    a = tg.zeros(2, 3)
    alias, row = a, a[0]
    a += 1
    a *= tg.tensor([1.0, 2.0, 3.0])
    a -= 0.5
    a /= 2
    assert a is alias
    np.testing.assert_allclose(row.numpy(), [0.25, 0.75, 1.25])  # the view shares the memory
    mask = tg.tensor([True, False])
    mask &= tg.tensor([True, True])
    mask |= tg.tensor([False, True])
    assert mask.tolist() == [True, True]
    with pytest.raises(TypeError, match="add_"):
        t = tg.tensor([1, 2])
        t += 0.5  # a float result cannot go into an integer tensor


def test_augmented_assignment_on_a_leaf_that_requires_grad_raises_and_works_under_no_grad():
    p = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        p += 1
    (p * p).sum().backward()
    with tg.no_grad():
        p -= 0.1 * p.grad  # the manual SGD step updates the parameter itself
    np.testing.assert_allclose(p.numpy(), [0.8, 1.6])
    p.data -= p.grad  # through .data too
    np.testing.assert_allclose(p.numpy(), [-1.2, -2.4])


def test_augmented_assignment_inside_a_graph_is_differentiated():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h += x * x
    h *= 3
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * (2 + 2 * x.numpy()))


# ---- function forms, constructors, defaults -------------------------------------------------

FORMS = [("tanh", ()), ("sum", (1,)), ("softmax", (-1,)), ("sort", (0,)), ("cumsum", (1,)), ("eq", (0.5,)),
         ("isnan", ()), ("clamp", (-0.5, 0.5)), ("transpose", (0, 1)), ("var", (1,)), ("norm", (1,)),
         ("matmul", (np.ones((4, 2)),)), ("max", (1,)), ("tril", ()), ("repeat_interleave", (2, 0))]


def test_the_function_forms_are_the_methods():
    assert len(set(METHOD_FORMS)) == len(METHOD_FORMS) and all(callable(getattr(tg, n)) for n in METHOD_FORMS)
    x = tg.tensor(X)
    for name, args in FORMS:
        args = [tg.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        out, expected = getattr(tg, name)(x, *args), getattr(x, name)(*args)
        for o, e in zip(out if isinstance(out, tuple) else (out,), expected if isinstance(expected, tuple) else
                        (expected,)):
            np.testing.assert_array_equal(o.numpy(), e.numpy(), err_msg=name)
    assert getattr(tg, "exp").__doc__.startswith("tg.exp(input") and tg.is_tensor(x) and not tg.is_tensor(X)
    assert tg.numel(x) == 12 and tg.pow(2, tg.tensor([3.0])).item() == 8 and tg.pow(x, 2).shape == x.shape
    v, m = tg.var_mean(x, 1)
    np.testing.assert_allclose(m.numpy(), X.mean(1), rtol=1e-6)
    a, b = tg.broadcast_tensors(tg.ones(3, 1), tg.zeros(4))
    assert a.shape == b.shape == (3, 4)
    with pytest.raises(TypeError, match="tanh.*must be a Tensor, not list"):
        tg.tanh([1.0])
    assert "abs" not in tg.__all__ and "tanh" in tg.__all__  # `import *` shadows no builtin


def test_constructors_and_legacy_typed_constructors():
    assert tg.empty(2, 3).shape == (2, 3) and tg.empty((4,), dtype=tg.int64).dtype == tg.int64
    t = tg.ones(2, 2, dtype=tg.float64)
    assert tg.empty_like(t).dtype == tg.float64 and tg.full_like(t, 7).tolist() == [[7, 7], [7, 7]]
    assert tg.rand_like(t).dtype == tg.randn_like(t).dtype == tg.float64
    tg.manual_seed(0)
    r = tg.randint(3, 7, (50,))
    assert r.dtype == tg.int64 and r.numpy().min() >= 3 and r.numpy().max() < 7 and tg.randint(5, (2,)).shape == (2,)
    assert sorted(tg.randperm(6).tolist()) == list(range(6))
    np.testing.assert_allclose(tg.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5))
    assert tg.eye(2, 3).tolist() == [[1, 0, 0], [0, 1, 0]]
    shared = np.zeros(3, dtype=np.float32)
    tg.as_tensor(shared)[0] = 5
    assert shared[0] == 5 and tg.as_tensor(t) is t and tg.as_tensor([1, 2]).dtype == tg.int64
    assert tg.FloatTensor(2, 3).shape == (2, 3) and tg.FloatTensor().shape == (0,)
    assert tg.LongTensor([1.7, 2]).tolist() == [1, 2] and tg.ByteTensor([1]).dtype == tg.uint8
    assert isinstance(tg.ones(2), tg.FloatTensor) and not isinstance(tg.ones(2), tg.LongTensor)
    assert tg.ones(2).type(tg.LongTensor).dtype == tg.int64 and tg.DoubleTensor(t).array is t.array
    with pytest.raises(TypeError, match="LongTensor: expected a CPU tensor of int64"):
        tg.LongTensor(t)
    with pytest.raises(ValueError, match="legacy constructor makes CPU tensors"):
        tg.FloatTensor(2, device="fake")


def test_default_dtype_and_default_device():
    assert tg.get_default_dtype() == tg.float32
    try:
        tg.set_default_dtype(tg.float64)
        assert tg.zeros(2).dtype == tg.tensor([1.5]).dtype == nn.Linear(2, 2).weight.dtype == tg.float64
        with pytest.raises(TypeError, match="floating-point"):
            tg.set_default_dtype(tg.int64)
    finally:
        tg.set_default_dtype(tg.float32)
    try:
        tg.set_default_device("fake")
        assert tg.zeros(2).device == tg.tensor(np.ones(2)).device == nn.Linear(2, 2).weight.device == "fake:0"
        assert tg.tensor(tg.ones(2, device="cpu")).device == "cpu" and tg.from_numpy(np.ones(2)).device == "cpu"
    finally:
        tg.set_default_device(None)
    assert tg.zeros(2).device == "cpu"


# ---- random fills and sampling --------------------------------------------------------------

def test_random_fills_draw_what_nn_init_draws_and_sampling_follows_the_weights(device):
    a, b = tg.empty(3, 4, device=device), tg.empty(3, 4, device=device)
    tg.manual_seed(3)
    a.uniform_(-0.5, 0.5)
    tg.manual_seed(3)
    nn.init.uniform_(b, -0.5, 0.5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.normal_(2.0, 0.1).numpy().mean() == pytest.approx(2.0, abs=0.2)
    assert set(np.unique(a.bernoulli_(0.5).numpy())) <= {0.0, 1.0}
    assert set(np.unique(tg.full((50,), 0.5, device=device).bernoulli().numpy())) == {0.0, 1.0}
    weights = tg.tensor([[0.0, 1.0, 3.0], [5.0, 0.0, 0.0]], device=device)
    draws = weights.multinomial(4000, replacement=True).numpy()
    assert (draws[1] == 0).all() and not (draws[0] == 0).any()
    assert (draws[0] == 2).mean() == pytest.approx(0.75, abs=0.03)
    picks = tg.tensor([1.0, 0.0, 2.0, 4.0], device=device).multinomial(3).numpy()
    assert sorted(picks) == [0, 2, 3]  # without replacement: the three with weight
    with pytest.raises(ValueError, match="without replacement"):
        weights.multinomial(4)
    with pytest.raises(TypeError, match="uniform_: expected a floating-point tensor"):
        tg.zeros(2, dtype=tg.int64).uniform_()


# ---- modules, inplace=, errors ------------------------------------------------------------

def test_activation_and_loss_modules_call_their_functions():
    x, t = tg.tensor(X), tg.tensor(X[::-1].copy())
    pairs = [(nn.LeakyReLU(0.2), lambda v: F.leaky_relu(v, 0.2)), (nn.ELU(0.5), lambda v: F.elu(v, 0.5)),
             (nn.CELU(2.0), lambda v: F.celu(v, 2.0)), (nn.SELU(), F.selu), (nn.SiLU(), F.silu), (nn.Mish(), F.mish),
             (nn.Softplus(2, 1), lambda v: F.softplus(v, 2, 1)), (nn.Softsign(), F.softsign),
             (nn.Hardtanh(-2, 2), lambda v: F.hardtanh(v, -2, 2)), (nn.ReLU6(), F.relu6),
             (nn.Hardsigmoid(), F.hardsigmoid), (nn.Hardswish(), F.hardswish), (nn.LogSigmoid(), F.logsigmoid),
             (nn.Tanhshrink(), F.tanhshrink), (nn.Softmin(1), lambda v: F.softmin(v, 1)), (nn.GLU(1), F.glu)]
    for module, fn in pairs:
        np.testing.assert_array_equal(module(x).numpy(), fn(x).numpy(), err_msg=repr(module))
    losses = [(nn.L1Loss("sum"), lambda a, b: F.l1_loss(a, b, "sum")),
              (nn.SmoothL1Loss(beta=0.5), lambda a, b: F.smooth_l1_loss(a, b, beta=0.5)),
              (nn.HuberLoss(delta=2.0), lambda a, b: F.huber_loss(a, b, delta=2.0)),
              (nn.KLDivLoss("batchmean"), lambda a, b: F.kl_div(a, b.abs(), "batchmean")),
              (nn.CosineSimilarity(0), lambda a, b: F.cosine_similarity(a, b, 0)),
              (nn.PairwiseDistance(1.0), lambda a, b: F.pairwise_distance(a, b, 1.0))]
    for module, fn in losses:
        b = t.abs() if isinstance(module, nn.KLDivLoss) else t
        np.testing.assert_array_equal(module(x, b).numpy(), fn(x, b).numpy(), err_msg=repr(module))
    p = tg.tensor(np.linspace(0.1, 0.9, 12).reshape(3, 4))
    bce = nn.BCELoss(weight=tg.ones(4) * 2)
    assert "weight" in bce.state_dict() and bce(p, p).item() == pytest.approx(2 * F.binary_cross_entropy(p, p).item())
    prelu = nn.PReLU(3, init=0.1)
    assert list(prelu.state_dict()) == ["weight"] and prelu.weight.tolist() == pytest.approx([0.1] * 3)
    assert repr(nn.LeakyReLU(0.2, inplace=True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"


def test_inplace_activations_write_into_their_input():
    x = tg.tensor([-1.0, 2.0])
    assert nn.ReLU(inplace=True)(x) is x and x.tolist() == [0.0, 2.0]
    h = tg.tensor([-1.0, 2.0], requires_grad=True) * 1  # a non-leaf: rebound to the result on the tape
    F.leaky_relu(h, 0.5, inplace=True).sum().backward()
    leaf = tg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor"):
        F.elu(leaf, inplace=True)


ERRORS = [
    (lambda: F.glu(tg.ones(3)), ValueError, "glu: the size of dim -1 must be even"),
    (lambda: F.pad(tg.ones(3), (1,)), ValueError, "pad: expected an even number"),
    (lambda: F.pad(tg.ones(3), (3, 0), "reflect"), ValueError, "do not fit axis 0 of size 3"),
    (lambda: F.pad(tg.ones(3), (1, 1), "mirror"), ValueError, "mode must be"),
    (lambda: F.binary_cross_entropy(tg.tensor([1.5]), tg.tensor([1.0])), ValueError, "probability in \\[0, 1\\]"),
    (lambda: F.l1_loss(tg.ones(2), tg.ones(3)), ValueError, "l1_loss: input shape"),
    (lambda: tg.ones(2, dtype=tg.int64).var(), TypeError, "var: expected a floating-point"),
    (lambda: tg.ones(2).norm("nuc"), ValueError, "norm: p must be"),
    (lambda: tg.ones(2, 2, 2).mm(tg.ones(2, 2)), ValueError, "mm: expected tensors with 2 and 2 dimensions"),
    (lambda: tg.ones(2, 2, 2).bmm(tg.ones(3, 2, 2)), ValueError, "bmm: batch sizes differ"),
    (lambda: tg.ones(2).tril(), ValueError, "tril: expected a tensor with at least 2"),
    (lambda: tg.ones(2, 3).repeat(2), ValueError, "repeat: expected at least 2"),
    (lambda: tg.ones(3).repeat_interleave(tg.tensor([1, 2])), ValueError, "expected 3 non-negative"),
    (lambda: tg.ones(3).index_select(0, tg.tensor([[0]])), ValueError, "index_select: index must be a 1-D"),
    (lambda: tg.ones(2, 2).scatter(0, tg.tensor([[2, 0]]), 1.0), ValueError, "scatter: index values must be in"),
    (lambda: tg.ones(2, 2).masked_select(tg.ones(3, dtype=tg.bool)), ValueError, "do not broadcast"),
    (lambda: tg.ones(2) & tg.ones(2), TypeError, "bitwise_and"),
    (lambda: tg.ones(2).unique(dim=0), ValueError, "unique: dim= is not supported"),
    (lambda: tg.tensor([1.0, -1.0]).multinomial(1), ValueError, "non-negative"),
]


@pytest.mark.parametrize("call, kind, message", ERRORS, ids=[e[2][:30] for e in ERRORS])
def test_bad_input_raises_a_clear_error(call, kind, message):
    with pytest.raises(kind, match=message):
        call()


# ---- ops inside a captured time step ------------------------------------------------------

class SignedCell(nn.Module):
    """A step whose result depends on tests of its input's values (abs, where, masked_fill, sign, isnan)."""

    def initial_state(self, batch):
        return tg.zeros(batch, 1, dtype=tg.float64)

    def forward(self, x, h):
        negative = x < 0
        kept = tg.where(negative & ~x.isnan(), -2 * x, x).masked_fill(x > 1.5, 0.0)
        return h + kept + x.abs() * x.sign() + F.leaky_relu(x, 0.5)


def test_tests_of_values_inside_a_captured_step_are_replayed_not_baked_in():
    x = np.ones((7, 2, 1))
    x[4:, 0] = -1.0  # steps 0 and 1 (recorded) see the same signs; later steps differ
    x[5:, 1] = 2.0
    before = capture.counters["captured"]
    captured, _ = nn.Recurrent(SignedCell())(tg.tensor(x, requires_grad=True))
    assert capture.counters["captured"] == before + 1
    with capture.disabled():
        eager, _ = nn.Recurrent(SignedCell())(tg.tensor(x, requires_grad=True))
    np.testing.assert_array_equal(captured.numpy(), eager.numpy())
