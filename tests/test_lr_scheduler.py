"""Learning-rate schedulers: the lr sequence over many steps equals the schedule's formula,
written out independently here from PyTorch's documentation (and equals PyTorch's own
schedulers when torch is installed); state dicts resume a schedule exactly.
"""
import math

import pytest

import tinygrad_seq as tg
from tinygrad_seq import nn, optim
from tinygrad_seq.optim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, LambdaLR, MultiStepLR, OneCycleLR,
                                             ReduceLROnPlateau, StepLR)

STEPS = 120


def two_groups(cls=optim.SGD, **kwargs):
    """An optimizer with two parameter groups of different lrs (0.1 and 0.02)."""
    a, b = tg.zeros(3, requires_grad=True), tg.zeros(2, requires_grad=True)
    return cls([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.1, **kwargs)


def lr_sequence(scheduler, steps=STEPS):
    """[lrs of epoch 0, lrs of epoch 1, ...] as the optimizer's groups hold them."""
    seq = [[g["lr"] for g in scheduler.optimizer.param_groups]]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        seq.append([g["lr"] for g in scheduler.optimizer.param_groups])
        assert scheduler.get_last_lr() == seq[-1]
    return seq


def expected(formula, bases=(0.1, 0.02), steps=STEPS):
    return [[formula(base, t) for base in bases] for t in range(steps + 1)]


def assert_close(got, want, rel=1e-10):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=rel, abs=1e-15), f"epoch {t}: {g} != {w}"


def cosine(base, t, T=17, eta=0.001):
    return eta + (base - eta) * (1 + math.cos(math.pi * t / T)) / 2


CASES = {
    "step": (lambda o: StepLR(o, step_size=7, gamma=0.5), lambda base, t: base * 0.5 ** (t // 7)),
    "multistep": (lambda o: MultiStepLR(o, milestones=[50, 10, 30, 30], gamma=0.3),
                  lambda base, t: base * 0.3 ** sum(m <= t for m in (10, 30, 30, 50))),
    "exponential": (lambda o: ExponentialLR(o, gamma=0.97), lambda base, t: base * 0.97 ** t),
    # well past T_max: PyTorch's cosine goes back up (no restart)
    "cosine": (lambda o: CosineAnnealingLR(o, T_max=17, eta_min=0.001), cosine),
    "lambda": (lambda o: LambdaLR(o, lambda t: 1 / (1 + 0.1 * t)), lambda base, t: base / (1 + 0.1 * t)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lr_sequence_follows_the_formula(name):
    make, formula = CASES[name]
    scheduler = make(two_groups())
    assert scheduler.last_epoch == 0 and scheduler.base_lrs == [0.1, 0.02]
    assert_close(lr_sequence(scheduler), expected(formula))
    assert scheduler.last_epoch == STEPS


def test_lambda_lr_one_function_per_group():
    opt = two_groups()
    scheduler = LambdaLR(opt, [lambda t: 0.9 ** t, lambda t: t + 1])
    assert_close(lr_sequence(scheduler, 20), [[0.1 * 0.9 ** t, 0.02 * (t + 1)] for t in range(21)])


def one_cycle(t, total, max_lr, pct=0.3, div=25.0, final_div=1e4):
    """PyTorch's OneCycleLR, two phases, cosine annealing, written from its documentation."""
    initial, low = max_lr / div, max_lr / div / final_div
    up_end = pct * total - 1
    if t <= up_end:
        return low_to_high(initial, max_lr, t / up_end)
    return low_to_high(max_lr, low, (t - up_end) / (total - 1 - up_end))


def low_to_high(start, end, pct):
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_one_cycle_follows_the_formula_and_cycles_momentum(cls):
    total = 100
    opt = two_groups(cls)
    scheduler = OneCycleLR(opt, max_lr=[1.0, 0.5], total_steps=total)
    seq = lr_sequence(scheduler, total - 1)
    assert_close(seq, [[one_cycle(t, total, 1.0), one_cycle(t, total, 0.5)] for t in range(total)])
    assert seq[0][0] == pytest.approx(1.0 / 25) and seq[-1][0] == pytest.approx(1.0 / 25 / 1e4)
    assert max(s[0] for s in seq) == pytest.approx(1.0, rel=1e-3)
    # momentum moves the other way: 0.95 at the start and end, 0.85 at the peak
    momentum = opt.param_groups[0]["betas"][0] if cls is optim.Adam else opt.param_groups[0]["momentum"]
    assert momentum == pytest.approx(0.95)
    with pytest.raises(ValueError, match="tried to step 101 times"):
        scheduler.step(), scheduler.step()


def test_one_cycle_three_phase_linear_and_epochs():
    opt = two_groups(optim.SGD)
    scheduler = OneCycleLR(opt, max_lr=0.4, epochs=5, steps_per_epoch=8, three_phase=True,
                           anneal_strategy="linear", cycle_momentum=False)
    assert scheduler.total_steps == 40
    seq = [s[0] for s in lr_sequence(scheduler, 39)]
    initial, peak = 0.4 / 25, 0.4
    ends = (0.3 * 40 - 1, 2 * 0.3 * 40 - 2, 39)
    for t, lr in enumerate(seq):
        if t <= ends[0]:
            want = initial + (peak - initial) * t / ends[0]
        elif t <= ends[1]:
            want = peak + (initial - peak) * (t - ends[0]) / (ends[1] - ends[0])
        else:
            want = initial + (initial / 1e4 - initial) * (t - ends[1]) / (ends[2] - ends[1])
        assert lr == pytest.approx(want, rel=1e-10), t
    assert "momentum" in opt.param_groups[0] and opt.param_groups[0]["momentum"] == 0.0  # untouched


def plateau_reference(metrics, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, lr):
    """ReduceLROnPlateau as PyTorch's documentation describes it."""
    best, bad, cool, out = (math.inf if mode == "min" else -math.inf), 0, 0, []
    for m in metrics:
        if mode == "min":
            better = m < (best * (1 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            better = m > (best * (1 + threshold) if threshold_mode == "rel" else best + threshold)
        best, bad = (m, 0) if better else (best, bad + 1)
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > 1e-8:
                lr = new
            cool, bad = cooldown, 0
        out.append(lr)
    return out


@pytest.mark.parametrize("mode,threshold_mode,threshold,cooldown", [("min", "rel", 1e-2, 0), ("min", "abs", 0.05, 2),
                                                                    ("max", "rel", 1e-3, 1), ("max", "abs", 0.0, 0)])
def test_reduce_on_plateau(mode, threshold_mode, threshold, cooldown):
    import random
    rng = random.Random(1)
    sign = 1 if mode == "min" else -1
    metrics = [sign * (1 / (1 + 0.2 * t) + 0.05 * rng.random()) for t in range(80)]  # improving, then noise
    opt = two_groups()
    scheduler = ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=3, threshold=threshold,
                                  threshold_mode=threshold_mode, cooldown=cooldown, min_lr=[1e-3, 0.0])
    got = []
    for m in metrics:
        scheduler.step(tg.Tensor(m) if len(got) % 2 else m)
        got.append(scheduler.get_last_lr())
    args = (mode, 0.5, 3, threshold, threshold_mode, cooldown)
    want0 = plateau_reference(metrics, *args, 1e-3, 0.1)
    want1 = plateau_reference(metrics, *args, 0.0, 0.02)
    assert [g[0] for g in got] == pytest.approx(want0) and [g[1] for g in got] == pytest.approx(want1)
    assert len(set(want0)) > 2, "the test should see several cuts"
    assert min(want0) >= 1e-3


@pytest.mark.parametrize("name", sorted(CASES) + ["one_cycle", "plateau"])
def test_state_dict_resumes_the_schedule(name, tmp_path):
    def make(opt):
        if name == "one_cycle":
            return OneCycleLR(opt, max_lr=0.3, total_steps=60)
        if name == "plateau":
            return ReduceLROnPlateau(opt, patience=2)
        return CASES[name][0](opt)

    def advance(scheduler, n, start):
        for t in range(start, start + n):
            scheduler.optimizer.step()
            scheduler.step(1.0 + (t % 5 == 0)) if name == "plateau" else scheduler.step()

    full = make(two_groups())
    advance(full, 50, 0)
    first_opt = two_groups()
    first = make(first_opt)
    advance(first, 25, 0)
    tg.save({"scheduler": first.state_dict(), "optimizer": first_opt.state_dict()}, tmp_path / "ckpt.npz")
    checkpoint = tg.load(tmp_path / "ckpt.npz")
    resumed_opt = two_groups()
    resumed = make(resumed_opt)
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    advance(resumed, 25, 25)
    assert resumed.last_epoch == full.last_epoch
    assert resumed.get_last_lr() == full.get_last_lr()
    assert [g["lr"] for g in resumed_opt.param_groups] == full.get_last_lr()


def test_users_may_set_lrs_in_param_groups_and_chainable_schedules_respect_it():
    opt = two_groups()
    for group in opt.param_groups:  # the PyTorch idiom
        group["lr"] = 0.5
    scheduler = ExponentialLR(opt, gamma=0.5)
    assert scheduler.base_lrs == [0.5, 0.5]
    scheduler.step()
    opt.param_groups[1]["lr"] = 1.0
    scheduler.step()
    assert scheduler.get_last_lr() == [0.125, 0.5]


def test_the_optimizer_uses_the_scheduled_lr():
    w = tg.Tensor([1.0], requires_grad=True)
    opt = optim.SGD([w], lr=1.0)
    scheduler = StepLR(opt, step_size=1, gamma=0.5)
    for expected_w in (0.0, -0.5, -0.75):
        w.grad = tg.Tensor([1.0])
        opt.step()
        scheduler.step()
        assert w.numpy()[0] == expected_w


def test_both_import_spellings_and_errors():
    assert optim.lr_scheduler.StepLR is StepLR
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"model.parameters\(\)"):
        optim.Adam(model)
    with pytest.raises(TypeError, match="expected an optimizer"):
        StepLR(model, step_size=2)
    opt = two_groups()
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="expected 2 values of max_lr"):
        OneCycleLR(opt, max_lr=[0.1], total_steps=10)
    with pytest.raises(ValueError, match="give total_steps"):
        OneCycleLR(opt, max_lr=0.1, epochs=3)
    with pytest.raises(ValueError, match="factor must be < 1.0"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(two_groups(), step_size=2, last_epoch=5)
    no_closed_form = type("NoClosedForm", (StepLR,), {"_closed_form": None})(two_groups(), step_size=2)
    with pytest.raises(TypeError, match="closed form"):
        no_closed_form.step(5)
    with pytest.raises(ValueError, match="unexpected keys"):
        StepLR(two_groups(), step_size=2).load_state_dict({"T_max": 3})


def test_jumping_to_an_epoch_uses_the_closed_form():
    scheduler = CosineAnnealingLR(two_groups(), T_max=10)
    scheduler.step(7)
    assert scheduler.last_epoch == 7
    assert scheduler.get_last_lr() == pytest.approx([cosine(0.1, 7, 10, 0.0), cosine(0.02, 7, 10, 0.0)])


# ---- against PyTorch, when it is installed ---------------------------------------------------

TORCH_CASES = {
    "step": ("StepLR", dict(step_size=7, gamma=0.5)),
    "multistep": ("MultiStepLR", dict(milestones=[10, 30, 30, 50], gamma=0.3)),
    "exponential": ("ExponentialLR", dict(gamma=0.97)),
    "cosine": ("CosineAnnealingLR", dict(T_max=17, eta_min=0.001)),
    "one_cycle": ("OneCycleLR", dict(max_lr=[1.0, 0.5], total_steps=STEPS + 1)),
    "one_cycle_3": ("OneCycleLR", dict(max_lr=0.3, total_steps=STEPS + 1, three_phase=True, pct_start=0.25)),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_matches_pytorch(name, opt_name):
    torch = pytest.importorskip("torch")
    cls_name, kwargs = TORCH_CASES[name]
    tparams = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    topt = getattr(torch.optim, opt_name)([{"params": [tparams[0]]}, {"params": [tparams[1]], "lr": 0.02}], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, cls_name)(topt, **kwargs)
    ours = getattr(optim.lr_scheduler, cls_name)(two_groups(getattr(optim, opt_name)), **kwargs)
    for t in range(STEPS):
        assert ours.get_last_lr() == tsched.get_last_lr(), t  # bit for bit
        if name.startswith("one_cycle"):
            key = "betas" if opt_name == "Adam" else "momentum"
            assert [tuple(g[key]) if key == "betas" else g[key] for g in ours.optimizer.param_groups] == \
                [tuple(g[key]) if key == "betas" else g[key] for g in topt.param_groups], t
        topt.step(), tsched.step(), ours.optimizer.step(), ours.step()


def test_reduce_on_plateau_matches_pytorch():
    torch = pytest.importorskip("torch")
    kwargs = dict(mode="max", factor=0.3, patience=2, threshold=0.01, cooldown=1, min_lr=1e-4)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    ours = ReduceLROnPlateau(optim.SGD([tg.zeros(1, requires_grad=True)], lr=0.1), **kwargs)
    for t in range(60):
        metric = 1 - 1 / (1 + t % 13)
        tsched.step(metric), ours.step(metric)
        assert ours.get_last_lr() == tsched.get_last_lr(), t
