"""LBFGS: its direction against the BFGS inverse Hessian built in NumPy from its own curvature pairs,
its first step, convergence on a quadratic, state dicts, and lock-step with PyTorch on Rosenbrock."""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import optim


def rosenbrock(x, y):
    """The 3-variable Rosenbrock function of (x[0], x[1], y): two parameters, one a 0-d tensor."""
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[1]) ** 2 + 100 * (y - x[1] ** 2) ** 2


def make(start=(-1.2, 1.0, 0.5), dtype=np.float64):
    return [tg.Tensor(np.array(start[:2], dtype=dtype), requires_grad=True),
            tg.Tensor(np.array(start[2], dtype=dtype), requires_grad=True)]


def closure_for(opt, params, f=rosenbrock, calls=None):
    def closure():
        opt.zero_grad()
        loss = f(*params)
        loss.backward()
        if calls is not None:
            calls.append(1)
        return loss
    return closure


def flat(params):
    return np.concatenate([p.numpy().ravel() for p in params])


def test_first_iteration_is_scaled_steepest_descent():
    params, calls = make(), []
    opt = optim.LBFGS(params, lr=0.5, max_iter=1)
    params_before = flat(params)
    loss = opt.step(closure_for(opt, params, calls=calls))
    g = opt.state[params[0]]["prev_flat_grad"]
    np.testing.assert_allclose(flat(params), params_before - min(1.0, 1.0 / np.abs(g).sum()) * 0.5 * g, rtol=1e-14)
    assert len(calls) == 1 and opt.state[params[0]]["func_evals"] == 1  # the last iteration is not re-evaluated
    assert loss.item() == pytest.approx(rosenbrock(*make()).item())


def bfgs_inverse_hessian(h_diag, steps, grad_changes):
    """H from H0 = h_diag I by the BFGS update H <- (I - r s y^T) H (I - r y s^T) + r s s^T, oldest pair first."""
    n = steps[0].size if steps else 1
    h = h_diag * np.eye(n)
    for s, y in zip(steps, grad_changes):
        r = 1.0 / (y @ s)
        left = np.eye(n) - r * np.outer(s, y)
        h = left @ h @ left.T + r * np.outer(s, s)
    return h


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_direction_is_the_bfgs_inverse_hessian_times_the_gradient(line_search_fn):
    params = make()
    opt = optim.LBFGS(params, lr=0.1 if line_search_fn is None else 1.0, max_iter=1, history_size=3,
                      line_search_fn=line_search_fn)
    closure = closure_for(opt, params)
    for step in range(8):  # past history_size pairs, so the oldest are dropped
        opt.step(closure)
        state = opt.state[params[0]]
        if step == 0:
            continue
        assert len(state["old_dirs"]) == min(step, 3)
        h = bfgs_inverse_hessian(float(state["H_diag"]), state["old_stps"], state["old_dirs"])
        np.testing.assert_allclose(state["d"], -h @ state["prev_flat_grad"], rtol=1e-9, atol=1e-12)
        s, y = state["old_stps"][-1], state["old_dirs"][-1]
        np.testing.assert_allclose(h @ y, s, rtol=1e-9, atol=1e-12)  # the secant condition


def test_strong_wolfe_solves_a_quadratic():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((6, 6))
    a, b = m @ m.T + 6 * np.eye(6), rng.standard_normal(6)
    x = tg.Tensor(np.zeros(6), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                      tolerance_change=1e-14)
    opt.step(closure_for(opt, [x], lambda x: 0.5 * (x @ tg.Tensor(a) @ x) - (tg.Tensor(b) * x).sum()))
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-6)


def test_parameters_without_a_gradient_stay_and_float32_stays_float32():
    params = make(dtype=np.float32)
    frozen = tg.Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    opt = optim.LBFGS(params + [frozen], line_search_fn="strong_wolfe")
    for _ in range(3):
        opt.step(closure_for(opt, params))
    np.testing.assert_array_equal(frozen.numpy(), np.ones(2))
    assert all(p.dtype == np.float32 for p in params)
    assert opt.state[params[0]]["d"].dtype == np.float32
    assert rosenbrock(*params).item() < 1e-3


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_state_dict_round_trip_continues_identically(line_search_fn):
    params = make()
    opt = optim.LBFGS(params, lr=0.1, max_iter=3, line_search_fn=line_search_fn)
    for _ in range(2):
        opt.step(closure_for(opt, params))
    sd = opt.state_dict()
    state = sd["state"][0]
    assert set(state) == {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                          "prev_flat_grad", "prev_loss", "al"}
    assert all(type(v) is np.ndarray for v in state["old_dirs"] + [state["d"]])
    clones = [tg.Tensor(p.numpy().copy(), requires_grad=True) for p in params]
    other = optim.LBFGS(clones, lr=123.0)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.1 and other.param_groups[0]["line_search_fn"] == line_search_fn
    for _ in range(2):
        opt.step(closure_for(opt, params))
        other.step(closure_for(other, clones))
        np.testing.assert_array_equal(flat(params), flat(clones))
    state["d"] = np.zeros(5)
    with pytest.raises(ValueError, match="state 'd' of parameter 0: expected numbers and flat arrays of 3"):
        other.load_state_dict(sd)


def test_errors():
    params = make()
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        optim.LBFGS([{"params": params[:1]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="line_search_fn must be None or 'strong_wolfe'"):
        optim.LBFGS(params, line_search_fn="backtracking")
    with pytest.raises(TypeError, match="'max_iter' must be an integer"):
        optim.LBFGS(params, max_iter=2.5)
    opt = optim.LBFGS(params)
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        opt.add_param_group({"params": [tg.Tensor(np.ones(2), requires_grad=True)]})
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step(None)


@pytest.mark.parametrize("line_search_fn, lr, max_iter", [(None, 0.05, 5), ("strong_wolfe", 1.0, 20)])
def test_matches_pytorch_on_rosenbrock(line_search_fn, lr, max_iter):
    """Same iterates and state; Rosenbrock's loss and gradient round differently in the two libraries
    (the last bits of x ** 2), which 20 iterations of a search amplify to about 1e-11."""
    torch = pytest.importorskip("torch")
    ours = make()
    theirs = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in ours]
    opt = optim.LBFGS(ours, lr=lr, max_iter=max_iter, history_size=4, line_search_fn=line_search_fn)
    topt = torch.optim.LBFGS(theirs, lr=lr, max_iter=max_iter, history_size=4, line_search_fn=line_search_fn)
    for _ in range(4):
        loss = opt.step(closure_for(opt, ours))
        tloss = topt.step(closure_for(topt, theirs))
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-9, abs=1e-12)
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-11)
    state, tstate = opt.state_dict()["state"][0], topt.state_dict()["state"][0]
    assert set(state) == set(tstate)
    for key in ("func_evals", "n_iter"):
        assert state[key] == tstate[key]
    for key in ("d", "prev_flat_grad", "t", "H_diag", "prev_loss"):
        np.testing.assert_allclose(np.asarray(state[key]), np.asarray(tstate[key]), rtol=1e-6, atol=1e-11)
    for key in ("old_dirs", "old_stps", "ro"):
        np.testing.assert_allclose(np.array(state[key]), np.array([np.asarray(v) for v in tstate[key]]), rtol=1e-6,
                                   atol=1e-11)
    if line_search_fn == "strong_wolfe":
        assert rosenbrock(*ours).item() < 1e-8


def test_other_devices_match_cpu(device):
    cpu, dev = make(), [tg.Tensor(p.numpy(), device=device, requires_grad=True) for p in make()]
    opts = [optim.LBFGS(ps, history_size=3, line_search_fn="strong_wolfe") for ps in (cpu, dev)]
    for _ in range(2):
        for opt, ps in zip(opts, (cpu, dev)):
            opt.step(closure_for(opt, ps))
    np.testing.assert_allclose(flat(dev), flat(cpu), rtol=1e-10)
    assert tg.engine.backend.device_of(opts[1].state[dev[0]]["d"]) == dev[0].device
