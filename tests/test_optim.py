"""Optimizers: every step equals the published update rule, recomputed here in NumPy.

The references below are written from the algorithms in the PyTorch documentation (and
the Adam paper's bias-corrected form), independently of tinygrad_seq/optim.py. They run
in float64; float32 runs are compared with them and must stay float32 throughout.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq as tg
from tinygrad_seq import optim
from tinygrad_seq.engine import backend


def leaf(array):
    return tg.Tensor(np.asarray(array), requires_grad=True)


# ---- NumPy references: one step of each rule, state in a dict ---------------------------

def ref_sgd(p, g, s, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    d = g + weight_decay * p
    if momentum:
        s["buf"] = d.copy() if "buf" not in s else momentum * s["buf"] + (1 - dampening) * d
        d = d + momentum * s["buf"] if nesterov else s["buf"]
    return p - lr * d


def ref_adam(p, g, s, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    t = s["t"] = s.get("t", 0) + 1
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
    v = s["v"]
    if amsgrad:
        v = s["vmax"] = np.maximum(s.get("vmax", 0.0), v)
    m_hat, v_hat = s["m"] / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, s, weight_decay=1e-2, **kw):
    return ref_adam(p, g, s, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(p, g, s, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    g = g + weight_decay * p
    s["sq"] = alpha * s.get("sq", 0.0) + (1 - alpha) * g ** 2
    var = s["sq"]
    if centered:
        s["ga"] = alpha * s.get("ga", 0.0) + (1 - alpha) * g
        var = var - s["ga"] ** 2
    denom = np.sqrt(var) + eps
    if momentum > 0:
        s["buf"] = momentum * s.get("buf", 0.0) + g / denom
        return p - lr * s["buf"]
    return p - lr * (g / denom)  # the implementation's order: a centered variance can be ill-conditioned


def ref_adagrad(p, g, s, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    t = s["t"] = s.get("t", 0) + 1
    g = g + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g ** 2
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


def ref_adadelta(p, g, s, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    g = g + weight_decay * p
    s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g ** 2
    delta = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0.0) + (1 - rho) * delta ** 2
    return p - lr * delta


def ref_adamax(p, g, s, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    t = s["t"] = s.get("t", 0) + 1
    g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g) + eps)
    return p - lr / (1 - b1 ** t) * s["m"] / s["u"]


def ref_nadam(p, g, s, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
              decoupled_weight_decay=False):
    """Dozat's NAdam with PyTorch's momentum schedule mu_t = b1 (1 - 0.96^(t psi) / 2)."""
    b1, b2 = betas
    t = s["t"] = s.get("t", 0) + 1
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    mu = [b1 * (1 - 0.5 * 0.96 ** (k * momentum_decay)) for k in range(1, t + 2)]
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
    denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
    return p - lr * (1 - mu[t - 1]) / (1 - np.prod(mu[:t])) * g / denom \
        - lr * mu[t] / (1 - np.prod(mu[:t + 1])) * s["m"] / denom


def ref_radam(p, g, s, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False):
    """Liu et al.'s rectified Adam: the adaptive step once rho_t > 5, momentum SGD before."""
    b1, b2 = betas
    t = s["t"] = s.get("t", 0) + 1
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
    m_hat = s["m"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho <= 5:
        return p - lr * m_hat
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return p - lr * m_hat * r * np.sqrt(1 - b2 ** t) / (np.sqrt(s["v"]) + eps)


def maximizing(ref):
    """The reference with PyTorch's maximize flag: ascend by stepping on the negated gradient."""
    return lambda p, g, s, maximize=False, **kw: ref(p, -g if maximize else g, s, **kw)


REFERENCES = {cls: maximizing(ref) for cls, ref in [
    (optim.SGD, ref_sgd), (optim.Adam, ref_adam), (optim.AdamW, ref_adamw), (optim.RMSprop, ref_rmsprop),
    (optim.Adagrad, ref_adagrad), (optim.Adadelta, ref_adadelta), (optim.Adamax, ref_adamax),
    (optim.NAdam, ref_nadam), (optim.RAdam, ref_radam)]}

# Every variant of every rule; hypothesis also draws the numbers.
VARIANTS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01)),
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    (optim.RMSprop, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, alpha=0.9, weight_decay=0.1)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    (optim.RMSprop, dict(lr=0.01, centered=True)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.05)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, maximize=True)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-3,
                         maximize=True)),
    (optim.Adadelta, dict()),
    (optim.Adadelta, dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.1, maximize=True)),
    (optim.Adamax, dict(lr=0.01)),
    (optim.Adamax, dict(lr=0.01, betas=(0.7, 0.8), eps=1e-3, weight_decay=0.1, maximize=True)),
    (optim.NAdam, dict(lr=0.01)),
    (optim.NAdam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, momentum_decay=0.05)),
    (optim.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    (optim.RAdam, dict(lr=0.01)),  # rho_t <= 5 for the first 5 steps of betas[1]=0.999, > 5 after
    (optim.RAdam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    (optim.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]
VARIANT_IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for cls, kw in VARIANTS]


def run_both(cls, kwargs, shape, steps, seed, dtype=np.float64):
    """Steps of the optimizer and of the reference on the same gradients; both trajectories."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(steps)]
    p = leaf(p0.astype(dtype))
    opt = cls([p], **kwargs)
    ref, state, ours, theirs = p0, {}, [], []
    for g in grads:
        p.grad = tg.Tensor(g.astype(dtype))
        opt.step()
        ref = REFERENCES[cls](ref, g, state, **kwargs)
        ours.append(p.numpy().copy())
        theirs.append(ref)
    return p, opt, ours, theirs


steps_st = st.integers(1, 4)
shapes_st = st.sampled_from([(), (3,), (2, 3)])
seeds_st = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_steps_follow_the_update_rule(cls, kwargs):
    for seed in range(3):
        _, _, ours, theirs = run_both(cls, kwargs, (4, 3), steps=5, seed=seed)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"step {k + 1}")


@given(lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.25]),
       weight_decay=st.sampled_from([0.0, 0.1]), nesterov=st.booleans(),
       shape=shapes_st, steps=steps_st, seed=seeds_st)
def test_sgd_any_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, shape, steps, seed):
    nesterov = nesterov and momentum > 0 and dampening == 0
    kwargs = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    _, _, ours, theirs = run_both(optim.SGD, kwargs, shape, steps, seed)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@given(cls=st.sampled_from([optim.Adam, optim.AdamW]), lr=st.floats(1e-4, 0.5),
       beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999), eps=st.sampled_from([1e-8, 1e-3]),
       weight_decay=st.sampled_from([0.0, 0.1]), amsgrad=st.booleans(), shape=shapes_st, steps=steps_st,
       seed=seeds_st)
def test_adam_any_hyperparameters(cls, lr, beta1, beta2, eps, weight_decay, amsgrad, shape, steps, seed):
    kwargs = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    _, _, ours, theirs = run_both(cls, kwargs, shape, steps, seed)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


# alpha = 0 or >= 0.01: with a tiny alpha > 0 the centered variance v - avg^2 rounds below zero (sqrt: NaN, in
# PyTorch too), a property of the formula, not of the implementation
@given(lr=st.floats(1e-4, 0.1), alpha=st.just(0.0) | st.floats(0.01, 0.999), eps=st.sampled_from([1e-8, 1e-2]),
       weight_decay=st.sampled_from([0.0, 0.1]), momentum=st.sampled_from([0.0, 0.9]), centered=st.booleans(),
       shape=shapes_st, steps=steps_st, seed=seeds_st)
def test_rmsprop_any_hyperparameters(lr, alpha, eps, weight_decay, momentum, centered, shape, steps, seed):
    kwargs = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
    _, _, ours, theirs = run_both(optim.RMSprop, kwargs, shape, steps, seed)
    # centered with alpha = 0 divides by eps alone (variance exactly 0): compare with an absolute floor
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


@given(cls=st.sampled_from([optim.Adagrad, optim.Adadelta, optim.Adamax, optim.NAdam, optim.RAdam]),
       lr=st.floats(1e-4, 0.5), weight_decay=st.sampled_from([0.0, 0.1]), eps=st.sampled_from([1e-8, 1e-3]),
       maximize=st.booleans(), shape=shapes_st, steps=st.integers(1, 8), seed=seeds_st)
def test_adaptive_family_any_hyperparameters(cls, lr, weight_decay, eps, maximize, shape, steps, seed):
    kwargs = dict(lr=lr, weight_decay=weight_decay, eps=eps, maximize=maximize)
    _, _, ours, theirs = run_both(cls, kwargs, shape, steps, seed)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_float32_stays_float32(cls, kwargs):
    p, opt, ours, theirs = run_both(cls, kwargs, (4, 3), steps=4, seed=7, dtype=np.float32)
    assert p.dtype == np.float32
    for value in opt.state[p].values():
        if backend.is_array(value):
            assert value.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_updates_data_in_place_and_never_touches_the_gradient(cls, kwargs):
    p = leaf(np.linspace(-1.0, 1.0, 6))
    data = p.array  # whoever holds the array (a module sharing p, a view) sees the update
    grad = tg.Tensor(np.linspace(0.5, -0.5, 6))
    before = grad.numpy().copy()
    opt = cls([p], **kwargs)
    for _ in range(3):
        p.grad = grad
        opt.step()
    assert p.array is data
    assert not np.array_equal(data, np.linspace(-1.0, 1.0, 6))
    np.testing.assert_array_equal(grad.numpy(), before)


@pytest.mark.parametrize("cls", list(REFERENCES), ids=lambda cls: cls.__name__)
def test_parameters_without_grad_are_skipped(cls):
    a, b = leaf(np.ones(3)), leaf(np.ones(2))
    opt = cls([a, b], lr=0.1)
    a.grad = tg.Tensor(np.full(3, 0.5))
    opt.step()
    np.testing.assert_array_equal(b.numpy(), np.ones(2))
    assert opt.state.get(b, {}).get("step", 0) == 0  # Adagrad's state exists from the start, as PyTorch's
    assert not np.array_equal(a.numpy(), np.ones(3))
    b.grad = tg.Tensor(np.full(2, 0.5))  # b's first gradient starts b's own state at step 1
    opt.step()
    expected = REFERENCES[cls](np.ones(2), np.full(2, 0.5), {}, lr=0.1)
    np.testing.assert_allclose(b.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_param_groups_have_their_own_hyperparameters():
    a, b, c = leaf(np.ones(3)), leaf(np.ones(2)), leaf(np.ones(4))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.0}], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": c, "weight_decay": 0.2})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.0, 0.9]
    states = [{}, {}, {}]
    settings = [dict(lr=0.1, momentum=0.9), dict(lr=0.5), dict(lr=0.1, momentum=0.9, weight_decay=0.2)]
    refs = [np.ones(3), np.ones(2), np.ones(4)]
    for step in range(3):
        for p in (a, b, c):
            p.grad = tg.Tensor(np.full(p.shape, 0.25 * (step + 1)))
        opt.step()
        refs = [ref_sgd(r, np.full(r.shape, 0.25 * (step + 1)), s, **kw) for r, s, kw in zip(refs, states, settings)]
    for p, r in zip((a, b, c), refs):
        np.testing.assert_allclose(p.numpy(), r, rtol=1e-12)


def test_zero_grad():
    a, b = leaf(np.ones(3)), leaf(np.ones(2))
    opt = optim.Adam([a, b])
    (a.sum() * 2.0 + b.sum()).backward()
    buffer = a.grad.array
    opt.zero_grad(set_to_none=False)
    assert a.grad.array is buffer
    np.testing.assert_array_equal(a.grad.numpy(), np.zeros(3))
    (a.sum() * 2.0).backward()  # accumulates into the zeroed buffer
    np.testing.assert_array_equal(a.grad.numpy(), np.full(3, 2.0))
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_step_with_closure_records_inside_no_grad():
    p = leaf(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with tg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 5.0
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])  # p - 0.5 * 2p
    assert opt.step() is None


def test_trains_a_model_end_to_end():
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.standard_normal((64, 3)))
    w_true = np.array([[1.5], [-2.0], [0.5]])
    y = tg.Tensor(x.numpy() @ w_true)
    w, b = leaf(np.zeros((3, 1))), leaf(np.zeros(1))
    opt = optim.Adam([w, b], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4
    np.testing.assert_allclose(w.numpy(), w_true, atol=1e-2)


# ---- state dicts -------------------------------------------------------------------------

def two_group_optimizer(cls, kwargs, values):
    params = [leaf(v.copy()) for v in values]
    return params, cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], **kwargs)


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((3, 2), (2,), (4,))]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in values] for _ in range(6)]
    params, opt = two_group_optimizer(cls, kwargs, values)

    def step(ps, o, gs):
        for p, g in zip(ps, gs):
            p.grad = tg.Tensor(g)
        o.step()

    for gs in grads[:3]:
        step(params, opt, gs)
    sd = opt.state_dict()
    clones = [leaf(p.numpy().copy()) for p in params]
    other = cls([{"params": clones[:2]}, {"params": clones[2:]}], lr=123.0)  # hyperparameters come from sd
    other.load_state_dict(sd)
    assert [g["lr"] for g in other.param_groups] == [g["lr"] for g in opt.param_groups]
    for gs in grads[3:]:
        step(params, opt, gs)
        step(clones, other, gs)
        for p, q in zip(params, clones):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
            assert q.dtype == np.float32


def test_state_dict_layout_is_pytorchs_and_a_snapshot():
    values = [np.ones((2, 2)), np.ones(3), np.ones(1)]
    params, opt = two_group_optimizer(optim.Adam, dict(amsgrad=True), values)
    for p in params[:2]:
        p.grad = tg.Tensor(np.full(p.shape, 0.1))
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sorted(sd["state"]) == [0, 1]  # parameter 2 has no gradient yet, so no state
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1
    assert all(type(v) is np.ndarray for v in sd["state"][1].values() if not isinstance(v, int))
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1] == dict(lr=0.003, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                         amsgrad=True, maximize=False, decoupled_weight_decay=False, params=[2])
    snapshot = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], snapshot)  # later steps do not reach it
    sd["state"][0]["exp_avg"][...] = 99.0
    assert float(opt.state[params[0]]["exp_avg"].max()) < 1.0  # nor does editing it reach the optimizer


def test_load_state_dict_casts_to_the_parameters_dtype_and_plain_floats():
    p = leaf(np.ones(3, dtype=np.float32))
    opt = optim.Adam([p])
    sd = {"state": {0: {"step": np.array(2), "exp_avg": np.full(3, 0.5), "exp_avg_sq": np.full(3, 0.25)}},
          "param_groups": [{"lr": np.float64(0.01), "betas": [np.float64(0.8), np.float64(0.9)], "eps": 1e-8,
                            "weight_decay": np.float64(0.0), "amsgrad": np.bool_(False), "params": [0]}]}
    opt.load_state_dict(sd)
    group = opt.param_groups[0]
    assert type(group["lr"]) is float and type(group["betas"][0]) is float and group["amsgrad"] is False
    assert group["betas"] == (0.8, 0.9)
    assert opt.state[p]["step"] == 2 and type(opt.state[p]["step"]) is int
    assert opt.state[p]["exp_avg"].dtype == np.float32
    p.grad = tg.Tensor(np.ones(3, dtype=np.float32))
    opt.step()
    assert p.dtype == np.float32 and opt.state[p]["exp_avg"].dtype == np.float32
    assert opt.state[p]["step"] == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd.pop("state"), "expected a dict with keys 'state' and 'param_groups'"),
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), "2 parameter groups"),
    (lambda sd: sd["param_groups"][0]["params"].append(7), "parameter group 0 has 3 parameters"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros(5)), "expected an array of shape (2,)"),
    (lambda sd: sd["state"][0].update(momentum_buffer=np.zeros(2)), "'momentum_buffer' of parameter 0 is not state"),
    (lambda sd: sd["state"].update({9: {"step": 1}}), "state for parameter 9"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "invalid lr -1.0"),
    (lambda sd: sd["param_groups"][0].update(betas=0.9), "'betas' must be a pair of numbers"),
])
def test_load_state_dict_errors_leave_the_optimizer_unchanged(mutate, message):
    a, b = leaf(np.ones(2)), leaf(np.ones(2))
    opt = optim.Adam([a, b], lr=0.01)
    a.grad = b.grad = tg.Tensor(np.ones(2))
    opt.step()
    sd = opt.state_dict()
    mutate(sd)
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError), match=_escape(message)):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


def _escape(text):
    import re
    return re.escape(text)


# ---- construction errors ---------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs, message", [
    (optim.SGD, dict(lr=-0.1), "invalid lr -0.1"),
    (optim.SGD, dict(lr=float("nan")), "invalid lr nan"),
    (optim.SGD, dict(lr=0.1, momentum=-0.5), "invalid momentum"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1), "invalid weight_decay"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov momentum requires momentum > 0 and zero dampening"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (optim.Adam, dict(lr=-1.0), "invalid lr"),
    (optim.Adam, dict(eps=-1e-8), "invalid eps"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "invalid beta parameter at index 0"),
    (optim.Adam, dict(betas=(0.9, -0.1)), "invalid beta parameter at index 1"),
    (optim.AdamW, dict(weight_decay=-0.01), "invalid weight_decay"),
    (optim.RMSprop, dict(alpha=-0.5), "invalid alpha"),
    (optim.RMSprop, dict(eps=-1.0), "invalid eps"),
    (optim.RMSprop, dict(momentum=-0.1), "invalid momentum"),
    (optim.Adagrad, dict(lr_decay=-0.1), "invalid lr_decay"),
    (optim.Adagrad, dict(initial_accumulator_value=-1.0), "invalid initial_accumulator_value"),
    (optim.Adadelta, dict(rho=1.5), "invalid rho 1.5 (expected 0 <= rho <= 1)"),
    (optim.Adamax, dict(betas=(0.9, 1.0)), "invalid beta parameter at index 1"),
    (optim.NAdam, dict(momentum_decay=-1.0), "invalid momentum_decay"),
    (optim.RAdam, dict(eps=-1.0), "invalid eps"),
])
def test_bad_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match=_escape(message)):
        cls([leaf(np.ones(2))], **kwargs)


def test_bad_hyperparameter_types():
    with pytest.raises(TypeError, match="hyperparameter 'lr' must be a number"):
        optim.SGD([leaf(np.ones(2))], lr="fast")
    with pytest.raises(TypeError, match="'betas' must be a pair of numbers"):
        optim.Adam([leaf(np.ones(2))], betas=0.9)
    with pytest.raises(TypeError, match="'amsgrad' must be a bool, got 'yes'"):
        optim.Adam([leaf(np.ones(2))], amsgrad="yes")
    with pytest.raises(ValueError, match="invalid lr"):  # a group's own value is checked too
        optim.SGD([{"params": [leaf(np.ones(2))], "lr": -1.0}], lr=0.1)


def test_bad_parameters():
    p = leaf(np.ones(2))
    with pytest.raises(ValueError, match="cannot optimize a non-leaf tensor"):
        optim.SGD([p * 2.0], lr=0.1)
    with pytest.raises(TypeError, match="got a single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="not a set"):
        optim.Adam([{"params": {p}}])
    with pytest.raises(TypeError, match="can only optimize Tensors, got ndarray"):
        optim.Adam([np.ones(2)])
    with pytest.raises(ValueError, match="appears more than once"):
        optim.Adam([p, p])
    with pytest.raises(ValueError, match="appears more than once"):
        optim.Adam([{"params": [p]}, {"params": [p]}])
    opt = optim.Adam([p])
    with pytest.raises(ValueError, match="appears more than once"):
        opt.add_param_group({"params": [p]})
    p.grad = tg.Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"parameter of shape \(2,\) on cpu has a gradient of shape \(3,\)"):
        opt.step()


def test_repr_lists_the_groups():
    text = repr(optim.RMSprop([leaf(np.ones(2))], centered=True))
    assert text.startswith("RMSprop (\nParameter Group 0\n") and "    centered: True" in text


# ---- devices and PyTorch ---------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_other_devices_match_cpu(cls, kwargs, device):
    """On the fake GPU (and CUDA when present): same numbers, state on the parameter's device."""
    rng = np.random.default_rng(3)
    p0, grads = rng.standard_normal((4, 3)), [rng.standard_normal((4, 3)) for _ in range(3)]
    cpu, dev = leaf(p0), tg.Tensor(p0, device=device, requires_grad=True)
    opts = cls([cpu], **kwargs), cls([dev], **kwargs)
    for g in grads:
        cpu.grad, dev.grad = tg.Tensor(g), tg.Tensor(g, device=device)
        for o in opts:
            o.step()
    assert all(backend.device_of(v) == dev.device for v in opts[1].state[dev].values() if backend.is_array(v))
    np.testing.assert_allclose(dev.numpy(), cpu.numpy(), rtol=1e-10)
    sd = opts[1].state_dict()  # NumPy arrays, whatever the device
    assert all(type(v) is np.ndarray for v in sd["state"].get(0, {}).values() if not isinstance(v, (int, float)))
    back = leaf(p0)
    other = cls([back], **kwargs)
    other.load_state_dict(sd)
    assert all(type(v) is np.ndarray for v in other.state.get(back, {}).values() if not isinstance(v, (int, float)))
    dev.grad.array.fill(1.0)
    opts[1].zero_grad(set_to_none=False)
    np.testing.assert_array_equal(dev.grad.numpy(), np.zeros((4, 3)))


@pytest.fixture
def torch64():
    """torch with float64 as its default dtype, so that its scalar state (NAdam's mu_product) is float64 too."""
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(before)


@pytest.mark.parametrize("cls, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_matches_pytorch(cls, kwargs, torch64):
    torch = torch64
    rng = np.random.default_rng(5)
    p0, grads = rng.standard_normal((5, 4)), [rng.standard_normal((5, 4)) for _ in range(6)]
    ours = leaf(p0)
    theirs = torch.tensor(p0, requires_grad=True)
    opt = cls([ours], **kwargs)
    topt = getattr(torch.optim, cls.__name__)([theirs], **kwargs)
    for g in grads:
        ours.grad, theirs.grad = tg.Tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    tsd, sd = topt.state_dict(), opt.state_dict()
    tstate = {k: v for k, v in tsd["state"].get(0, {}).items() if v is not None}  # plain SGD: buffer None
    assert set(sd["state"].get(0, {})) == set(tstate)
    assert set(sd["param_groups"][0]) <= set(tsd["param_groups"][0])
    for key, value in tstate.items():
        np.testing.assert_allclose(np.asarray(sd["state"][0][key]), value.numpy(), rtol=1e-12, atol=1e-14)
    assert math.isclose(sd["param_groups"][0]["lr"], tsd["param_groups"][0]["lr"])


# ---- frozen parameters -------------------------------------------------------------------

@pytest.mark.parametrize("cls", list(REFERENCES), ids=lambda cls: cls.__name__)
def test_frozen_parameters_are_accepted_and_left_alone(cls):
    """Fine-tuning with frozen embeddings: optimizer(model.parameters()) keeps them (their indices count in
    the state dict, as in PyTorch) and never moves them."""
    tg.manual_seed(0)
    model = tg.nn.Sequential(tg.nn.Embedding(5, 3), tg.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.numpy().copy()
    opt = cls(model.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 3
    for _ in range(2):
        opt.zero_grad()
        model(tg.tensor([[0, 1], [2, 4]])).sum().backward()
        opt.step()
    np.testing.assert_array_equal(model[0].weight.numpy(), frozen)
    assert model[1].weight.grad is not None and model[0].weight.grad is None
    assert opt.state.get(model[0].weight, {}).get("step", 0) == 0
