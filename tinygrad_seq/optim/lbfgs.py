"""L-BFGS (PyTorch's torch.optim.LBFGS, after minFunc): a closure-driven quasi-Newton method over all
parameters as one flat vector, with an optional strong-Wolfe line search."""
from ..engine import backend
from ..engine.function import enable_grad
from ..tensors import Tensor
from .optimizer import Optimizer, _at_least, _describe

_VECTORS = ("d", "prev_flat_grad")        # state holding one flat vector of all parameters
_HISTORY = ("old_dirs", "old_stps")       # lists of such vectors
_NUMBERS = ("t", "H_diag", "prev_loss")   # numbers (or 0-d arrays)


def _sqrt(x):
    """sqrt of a number: an array scalar (what dot products give) or a Python float."""
    return backend.array_namespace(x).sqrt(x) if hasattr(x, "dtype") else x ** 0.5


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), kept within `bounds`."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = _sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """A step t along d satisfying the strong Wolfe conditions: bracket one, then zoom in on it.
    Returns (f, g, t, evaluations)."""
    xp = backend.array_namespace(d)
    d_norm = xp.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:  # bracketing
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        t_prev, t = t, _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        f_prev, g_prev, gtd_prev = f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:  # zoom
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # a t too near the bracket's ends makes little progress: move it 10% of the bracket inside
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:  # not low enough: the new high end
            bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos] = t, f_new, g_new.copy()
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:  # the old high end becomes the low one
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos] = t, f_new, g_new.copy()
            bracket_gtd[low_pos] = gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class LBFGS(Optimizer):
    """L-BFGS with PyTorch's algorithm, defaults and state (kept on the first parameter).

    step(closure) runs up to max_iter iterations (max_eval closure calls), each moving along the
    two-loop-recursion direction of the last history_size steps: by lr, or by a strong-Wolfe line
    search with line_search_fn="strong_wolfe". The closure re-evaluates the model, calls backward and
    returns the loss; step returns the loss of its first call. One parameter group only, all
    parameters on one device; parameters without a gradient count as zero gradient.
    """
    _ints = ("max_iter", "max_eval", "history_size")
    _names = ("line_search_fn",)
    _state_keys = ("func_evals", "n_iter", "al") + _VECTORS + _HISTORY + _NUMBERS + ("ro",)
    _scalars = {"func_evals": int, "n_iter": int}
    _nonnegative = ("lr", "tolerance_grad", "tolerance_change")

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        self._params = self.param_groups[0]["params"]

    def add_param_group(self, group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): it optimises all "
                             "parameters as one vector")
        super().add_param_group(group)

    def _check(self, group):
        super()._check(group)
        for key in ("max_iter", "max_eval", "history_size"):
            _at_least(self._name, key, group[key], 1)
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"{self._name}: line_search_fn must be None or 'strong_wolfe', "
                             f"got {group['line_search_fn']!r}")

    # ---- the parameters as one flat vector ----------------------------------------------
    def _gather_flat_grad(self):
        xp = backend.array_namespace(self._params[0].array)
        return xp.concatenate([xp.zeros(p.array.size, dtype=p.dtype) if p.grad is None
                               else p.grad.array.reshape(-1).astype(p.dtype, copy=False) for p in self._params])

    def _add_grad(self, step_size, update):
        offset = 0
        for p in self._params:
            data, n = p.array, p.array.size
            data += step_size * update[offset:offset + n].reshape(p.shape)
            offset += n

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        for p, saved in zip(self._params, x):
            p.array[...] = saved
        return loss, flat_grad

    def step(self, closure):
        """Minimise the loss that `closure` computes (see the class docstring); returns its first value."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure that re-evaluates the model, calls backward and returns "
                            "the loss: optimizer.step(closure)")
        devices = {p.device for p in self._params}
        if len(devices) > 1:
            raise ValueError(f"LBFGS: all parameters must be on one device, got {sorted(devices)}")
        closure = enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        xp = backend.array_namespace(self._params[0].array)

        state = self.state.setdefault(self._params[0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if xp.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro, H_diag = state.get("old_dirs"), state.get("old_stps"), state.get("ro"), \
            state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            # the descent direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, H_diag = [], [], [], 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:  # a curvature pair worth keeping
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / y.dot(y)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad  # the two-loop recursion: q = -H g
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q += -al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # the step length
            t = min(1.0, 1.0 / xp.abs(flat_grad).sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:  # not a descent direction any more
                break
            ls_func_evals = 0
            if group["line_search_fn"] is not None:
                x_init = [p.array.copy() for p in self._params]
                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    lambda x, t, d: self._directional_evaluate(closure, x, t, d), x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:  # the last iteration's loss is not needed
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if xp.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no progress

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def _load_value(self, key, value, p, index):
        """LBFGS's state: counts, numbers, flat vectors of all parameters and lists of them."""
        if key in self._scalars or key not in self._state_keys:
            return super()._load_value(key, value, p, index)
        numel = sum(q.array.size for q in self._params)

        def load(v):
            if v is None or isinstance(v, (int, float)):
                return v
            v = v.array if isinstance(v, Tensor) else v
            shape = tuple(getattr(v, "shape", (None,)))
            if shape not in ((), (numel,)) or (shape == () and key in _VECTORS) or not hasattr(v, "dtype"):
                raise ValueError(f"{self._name}.load_state_dict: state {key!r} of parameter {index}: expected "
                                 f"numbers and flat arrays of {numel} elements, got {_describe(v)}")
            return backend.new_array(v, p.dtype, p.device)
        return [load(v) for v in value] if isinstance(value, list) else load(value)
