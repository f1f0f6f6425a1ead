"""The wider surface against PyTorch itself, forward and gradients in float64, where a formula has a
subtle point: variance corrections, norm orders, kl_div's reductions, the smooth L1 and Huber
thresholds, pad modes, normalize, gelu's tanh form, running sums and products with zeros, sort's
stability and gradient, repeat_interleave. Skipped without torch."""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RNG = np.random.default_rng(0)
X = RNG.uniform(-3, 3, (3, 4))
T = RNG.uniform(-3, 3, (3, 4))
P = RNG.uniform(0.05, 0.95, (3, 4))
Q = RNG.dirichlet(np.ones(4), 3)
LOGP = np.log(RNG.dirichlet(np.ones(4), 3))
Z = np.where(RNG.random((3, 4)) < 0.3, 0.0, X)  # zeros for running products
TIES = np.round(X)  # equal values for stable sorting
X3, X4 = RNG.standard_normal((2, 3, 5)), RNG.standard_normal((1, 2, 4, 5))

CASES = [  # (id, tinygrad_seq call, torch call, inputs); the calls get one Tensor per input
    ("var_default", lambda a: a.var(1), lambda a: a.var(1), (X,)),
    ("var_correction_2", lambda a: a.var((0, 1), correction=2), lambda a: a.var((0, 1), correction=2), (X,)),
    ("std_biased_keepdim", lambda a: a.std(0, unbiased=False, keepdim=True),
     lambda a: a.std(0, unbiased=False, keepdim=True), (X,)),
    ("std_all", lambda a: a.std(), lambda a: a.std(), (X,)),
    *[(f"norm_{p}", lambda a, p=p: a.norm(p, dim=1), lambda a, p=p: a.norm(p, dim=1), (X,))
      for p in ["fro", 1, 2, 3, 0.5, float("inf"), -float("inf")]],
    ("norm_at_origin", lambda a: a.norm(), lambda a: a.norm(), (np.zeros((2, 2)),)),
    *[(f"kl_div_{r}", lambda a, b, r=r: F.kl_div(a, b, r), lambda a, b, r=r: TF.kl_div(a, b, reduction=r),
       (LOGP, Q)) for r in ["sum", "none", "batchmean"]],
    ("kl_div_log_target", lambda a, b: F.kl_div(a, b, "batchmean", True),
     lambda a, b: TF.kl_div(a, b, reduction="batchmean", log_target=True), (LOGP, np.log(Q))),
    *[(f"smooth_l1_beta_{beta}", lambda a, b, beta=beta: F.smooth_l1_loss(a, b, beta=beta),
       lambda a, b, beta=beta: TF.smooth_l1_loss(a, b, beta=beta), (X, T)) for beta in [0.0, 0.7, 2.0]],
    *[(f"huber_delta_{delta}", lambda a, b, delta=delta: F.huber_loss(a, b, "sum", delta),
       lambda a, b, delta=delta: TF.huber_loss(a, b, reduction="sum", delta=delta), (X, T)) for delta in [0.5, 1.3]],
    ("l1_loss", lambda a, b: F.l1_loss(a, b), lambda a, b: TF.l1_loss(a, b), (X, X * np.array([1, 0, 1, 1]))),
    ("binary_cross_entropy", lambda a, b: F.binary_cross_entropy(a, b), lambda a, b: TF.binary_cross_entropy(a, b),
     (P, Q)),
    ("margin_ranking", lambda a, b: F.margin_ranking_loss(a, b, tg.tensor(np.sign(T)), 0.3),
     lambda a, b: TF.margin_ranking_loss(a, b, torch.tensor(np.sign(T)), 0.3), (X, T)),
    *[(f"pad_{mode}", lambda a, mode=mode: F.pad(a, (2, 1), mode), lambda a, mode=mode: TF.pad(a, (2, 1), mode), (X3,))
      for mode in ["constant", "reflect", "replicate", "circular"]],
    *[(f"pad_2d_{mode}", lambda a, mode=mode: F.pad(a, (2, 1, 1, 3), mode),
       lambda a, mode=mode: TF.pad(a, (2, 1, 1, 3), mode), (X4,)) for mode in ["reflect", "replicate", "circular"]],
    ("pad_crop_value", lambda a: F.pad(a, (-1, 2, 1, -1), value=3.5), lambda a: TF.pad(a, (-1, 2, 1, -1), value=3.5),
     (X,)),
    ("normalize", lambda a: F.normalize(a, dim=1), lambda a: TF.normalize(a, dim=1), (X,)),
    ("normalize_p1_eps", lambda a: F.normalize(a, 1, 0, eps=0.5), lambda a: TF.normalize(a, 1, 0, eps=0.5),
     (X * 0.01,)),
    ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b), lambda a, b: TF.cosine_similarity(a, b), (X, T)),
    ("pairwise_distance_p3", lambda a, b: F.pairwise_distance(a, b, 3), lambda a, b: TF.pairwise_distance(a, b, 3),
     (X, T)),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh"), (X,)),
    *[(name, getattr(F, name), getattr(TF, name), (X,)) for name in
      ["leaky_relu", "elu", "celu", "selu", "silu", "mish", "softplus", "softsign", "hardtanh", "relu6", "hardswish",
       "logsigmoid", "tanhshrink"]],
    ("softplus_beta_threshold", lambda a: F.softplus(a, 2, 3), lambda a: TF.softplus(a, 2, 3), (X,)),
    ("glu", lambda a: F.glu(a, 1), lambda a: TF.glu(a, 1), (X,)),
    ("layer_norm", lambda a, w, b: F.layer_norm(a, 4, w, b), lambda a, w, b: TF.layer_norm(a, (4,), w, b),
     (X, X[0], T[0])),
    ("prelu", lambda a, w: F.prelu(a, w), lambda a, w: TF.prelu(a, w), (X3, X[0, :3])),
    ("cumsum", lambda a: a.cumsum(1), lambda a: a.cumsum(1), (X,)),
    ("cumprod_with_zeros", lambda a: a.cumprod(1), lambda a: a.cumprod(1), (Z,)),
    ("prod_with_zeros", lambda a: a.prod(0), lambda a: a.prod(0), (Z,)),
    ("sort_stable", lambda a: a.sort(1).values, lambda a: a.sort(dim=1, stable=True).values, (TIES,)),
    ("sort_descending", lambda a: a.sort(0, descending=True).values,
     lambda a: a.sort(dim=0, descending=True, stable=True).values, (TIES,)),
    ("repeat_interleave", lambda a: a.repeat_interleave(2, 1), lambda a: a.repeat_interleave(2, 1), (X,)),
    ("repeat_interleave_counts", lambda a: a.repeat_interleave(tg.tensor([1, 0, 2]), 0),
     lambda a: a.repeat_interleave(torch.tensor([1, 0, 2]), dim=0), (X,)),
    ("repeat", lambda a: a.repeat(2, 1, 3), lambda a: a.repeat(2, 1, 3), (X,)),
    ("roll", lambda a: a.roll((1, -2), (0, 1)), lambda a: a.roll((1, -2), (0, 1)), (X,)),
    ("scatter_add", lambda a, s: a.scatter_add(0, tg.tensor([[0, 2, 1, 0], [0, 0, 2, 2]]), s),
     lambda a, s: a.scatter_add(0, torch.tensor([[0, 2, 1, 0], [0, 0, 2, 2]]), s), (X, T[:2])),
    ("diagonal", lambda a: a.diagonal(-1, 2, 0), lambda a: a.diagonal(-1, 2, 0), (X3,)),
    ("atan_sinh_cosh_tan", lambda a: a.atan() + a.sinh() + a.cosh() + (a * 0.4).tan(),
     lambda a: a.atan() + a.sinh() + a.cosh() + (a * 0.4).tan(), (X,)),
    ("nan_to_num", lambda a: a.nan_to_num(), lambda a: a.nan_to_num(), (np.array([1.0, np.nan, np.inf, -np.inf]),)),
]


@pytest.mark.parametrize("name, ours, theirs, inputs", CASES, ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_pytorch(name, ours, theirs, inputs):
    a = [tg.tensor(v, requires_grad=True) for v in inputs]
    b = [torch.tensor(v, requires_grad=True) for v in inputs]
    out, expected = ours(*a), theirs(*b)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = RNG.standard_normal(expected.shape)
    out.backward(tg.tensor(g))
    expected.backward(torch.tensor(g))
    for k, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"input {k}")


def test_hardsigmoid_matches_pytorch_up_to_its_float32_slope():
    """PyTorch's hardsigmoid backward multiplies by 1/6 rounded to float32, even in float64."""
    x, y = tg.tensor(X, requires_grad=True), torch.tensor(X, requires_grad=True)
    F.hardsigmoid(x).sum().backward()
    TF.hardsigmoid(y).sum().backward()
    np.testing.assert_allclose(F.hardsigmoid(x).detach().numpy(), TF.hardsigmoid(y).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-7)


def test_sort_indices_and_unique_match_pytorch():
    ours = tg.tensor(TIES).sort(1, descending=True)
    theirs = torch.tensor(TIES).sort(dim=1, descending=True, stable=True)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    np.testing.assert_array_equal(tg.tensor(TIES).argsort(0).numpy(), torch.tensor(TIES).argsort(dim=0, stable=True))
    for mine, reference in zip(tg.tensor(TIES).unique(return_inverse=True, return_counts=True),
                               torch.tensor(TIES).unique(return_inverse=True, return_counts=True)):
        np.testing.assert_array_equal(mine.numpy(), reference.numpy())
    np.testing.assert_array_equal(tg.repeat_interleave(tg.tensor([1, 2, 0, 3])).numpy(),
                                  torch.repeat_interleave(torch.tensor([1, 2, 0, 3])).numpy())


def test_kl_div_at_a_target_of_zero_contributes_nothing():
    """0 log 0 = 0, as PyTorch's xlogy; the target's gradient there is 0 here, NaN in PyTorch."""
    q0 = np.where(np.arange(4) == 1, 0.0, Q)
    a, b = tg.tensor(LOGP, requires_grad=True), tg.tensor(q0, requires_grad=True)
    x, y = torch.tensor(LOGP, requires_grad=True), torch.tensor(q0, requires_grad=True)
    out, expected = F.kl_div(a, b, "sum"), TF.kl_div(x, y, reduction="sum")
    assert out.item() == pytest.approx(expected.item(), rel=1e-12)
    out.backward()
    expected.backward()
    np.testing.assert_allclose(a.grad.numpy(), x.grad.numpy(), rtol=1e-12)
    assert (b.grad.numpy()[:, 1] == 0).all() and np.isnan(y.grad.numpy()[:, 1]).all()
    np.testing.assert_allclose(b.grad.numpy()[:, [0, 2, 3]], y.grad.numpy()[:, [0, 2, 3]], rtol=1e-12)
