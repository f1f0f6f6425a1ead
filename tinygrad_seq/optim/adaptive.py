"""The adaptive optimizers, each PyTorch's update sequence on raw arrays (its default single-tensor
path): Adagrad, Adadelta, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam. Every one takes maximize=
(the gradient is negated first, by the base class) and weight_decay (L2: g += weight_decay * p;
"decoupled": p *= 1 - lr * weight_decay, for AdamW and with decoupled_weight_decay=True).
"""
from ..engine import backend
from .optimizer import Optimizer, _buffer, _lerp_, _range


def _decay(data, grad, lr, weight_decay, decoupled):
    """Weight decay: decoupled (AdamW's), the parameter shrunk in place by lr * weight_decay; else L2, added
    to the gradient. Returns the gradient to use."""
    if weight_decay == 0:
        return grad
    if decoupled:
        data *= 1 - lr * weight_decay
        return grad
    return grad + weight_decay * data


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): s += g^2;  p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps).

    Like PyTorch's, its state (step 0, sum = initial_accumulator_value) exists from the start.
    """
    _flags = ("maximize",)
    _state_keys = ("step", "sum")
    _nonnegative = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, maximize=maximize))

    def add_param_group(self, group):
        super().add_param_group(group)
        group = self.param_groups[-1]
        for p in group["params"]:
            total = backend.namespace(p.device).full(p.shape, group["initial_accumulator_value"], dtype=p.dtype)
            self.state[p] = {"step": 0, "sum": total}

    def _update(self, data, grad, state, group):
        step = state["step"] = state["step"] + 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * data
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        total = state["sum"]
        total += grad * grad
        std = backend.array_namespace(data).sqrt(total)
        std += group["eps"]
        data -= clr * grad / std


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012): v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g;
    u = rho u + (1 - rho) d^2;  p -= lr * d."""
    _flags = ("maximize",)
    _state_keys = ("step", "square_avg", "acc_delta")
    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _check(self, group):
        super()._check(group)
        _range(self._name, "rho", group["rho"], 0.0, 1.0)

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        rho, eps = group["rho"], group["eps"]
        state["step"] = state.get("step", 0) + 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * data
        square_avg, acc_delta = _buffer(state, "square_avg", data), _buffer(state, "acc_delta", data)
        square_avg *= rho
        square_avg += (1 - rho) * grad * grad
        delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * grad
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        data -= group["lr"] * delta


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, optional AMSGrad and L2 weight decay.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  (AMSGrad: v = max(v_max, v))
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    decoupled_weight_decay=True is AdamW.
    """
    _flags = ("amsgrad", "maximize", "decoupled_weight_decay")
    _pairs = ("betas",)
    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        step = state["step"] = state.get("step", 0) + 1
        grad = _decay(data, grad, lr, weight_decay, group["decoupled_weight_decay"])
        exp_avg, exp_avg_sq = _buffer(state, "exp_avg", data), _buffer(state, "exp_avg_sq", data)
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * (grad * grad)
        if group["amsgrad"]:
            max_exp_avg_sq = _buffer(state, "max_exp_avg_sq", data)
            xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            exp_avg_sq = max_exp_avg_sq
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        denom = xp.sqrt(exp_avg_sq) / bias_correction2 ** 0.5
        denom += eps
        data -= (lr / bias_correction1) * (exp_avg / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay first."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (Hinton) with optional momentum and centering, eps outside the square root.

    s = alpha s + (1 - alpha) g^2;  centered: a = alpha a + (1 - alpha) g, s~ = s - a^2;
    d = sqrt(s~) + eps;  momentum: b = momentum b + g / d, p -= lr b;  else p -= lr g / d
    """
    _flags = ("centered", "maximize")
    _state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")
    _nonnegative = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, alpha, momentum, weight_decay = group["lr"], group["alpha"], group["momentum"], group["weight_decay"]
        state["step"] = state.get("step", 0) + 1
        if weight_decay != 0:
            grad = grad + weight_decay * data
        square_avg = _buffer(state, "square_avg", data)
        square_avg *= alpha
        square_avg += (1 - alpha) * (grad * grad)
        if group["centered"]:
            grad_avg = _buffer(state, "grad_avg", data)
            grad_avg *= alpha
            grad_avg += (1 - alpha) * grad
            # s - a^2 >= 0 in exact arithmetic; clamp the rounding error that PyTorch turns into NaN
            avg = xp.sqrt(xp.maximum(square_avg - grad_avg * grad_avg, 0))
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if momentum > 0:
            buf = _buffer(state, "momentum_buffer", data)
            buf *= momentum
            buf += grad / avg
            data -= lr * buf
        else:
            data -= lr * (grad / avg)



class Adamax(Optimizer):
    """Adamax (Kingma & Ba, section 7): Adam with the infinity norm.

    m = b1 m + (1 - b1) g;  u = max(b2 u, |g| + eps);  p -= lr / (1 - b1^t) * m / u
    """
    _flags = ("maximize",)
    _pairs = ("betas",)
    _state_keys = ("step", "exp_avg", "exp_inf")
    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        beta1, beta2 = group["betas"]
        step = state["step"] = state.get("step", 0) + 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * data
        exp_avg, exp_inf = _buffer(state, "exp_avg", data), _buffer(state, "exp_inf", data)
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_inf *= beta2
        xp.maximum(exp_inf, xp.abs(grad) + group["eps"], out=exp_inf)
        data -= group["lr"] / (1 - beta1 ** step) * exp_avg / exp_inf


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat 2016), with PyTorch's momentum schedule:

    mu_t = b1 (1 - 0.96^(t momentum_decay) / 2);  m and v as in Adam;  d = sqrt(v / (1 - b2^t)) + eps;
    p -= lr (1 - mu_t) / (1 - prod mu_1..t) * g / d + lr mu_(t+1) / (1 - prod mu_1..t+1) * m / d
    """
    _flags = ("decoupled_weight_decay", "maximize")
    _pairs = ("betas",)
    _state_keys = ("step", "mu_product", "exp_avg", "exp_avg_sq")
    _scalars = {"step": int, "mu_product": float}
    _nonnegative = ("lr", "eps", "weight_decay", "momentum_decay")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        step = state["step"] = state.get("step", 0) + 1
        bias_correction2 = 1 - beta2 ** step
        grad = _decay(data, grad, lr, weight_decay, group["decoupled_weight_decay"])
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * group["momentum_decay"])))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * group["momentum_decay"])))
        mu_product = state["mu_product"] = state.get("mu_product", 1.0) * mu
        exp_avg, exp_avg_sq = _buffer(state, "exp_avg", data), _buffer(state, "exp_avg_sq", data)
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        denom = xp.sqrt(exp_avg_sq / bias_correction2)
        denom += group["eps"]
        data += (-lr * (1.0 - mu) / (1.0 - mu_product)) * grad / denom
        data += ((-lr * mu_next) / (1.0 - mu_product * mu_next)) * exp_avg / denom


class RAdam(Optimizer):
    """Rectified Adam (Liu et al. 2019): Adam whose adaptive step is switched on, rectified, once the
    variance of its estimate is tractable (rho_t > 5); before that, momentum SGD on the bias-corrected m."""
    _flags = ("decoupled_weight_decay", "maximize")
    _pairs = ("betas",)
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def _update(self, data, grad, state, group):
        xp = backend.array_namespace(data)
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        step = state["step"] = state.get("step", 0) + 1
        grad = _decay(data, grad, lr, weight_decay, group["decoupled_weight_decay"])
        exp_avg, exp_avg_sq = _buffer(state, "exp_avg", data), _buffer(state, "exp_avg_sq", data)
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        corrected = exp_avg / bias_correction1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive_lr = bias_correction2 ** 0.5 / (xp.sqrt(exp_avg_sq) + group["eps"])
            data -= corrected * lr * adaptive_lr * rect
        else:
            data -= corrected * lr
