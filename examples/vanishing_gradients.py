"""Vanishing and exploding gradients, measured on the tape.

Part 1, vanishing. A batch of recall-the-first-bit sequences (examples/binary_sequences.py)
of length T goes through an RNN, an LSTM and a GRU; the loss reads only the last output.
`diagnostics.gradient_flow` returns ||dL/dh_t||, the total gradient reaching the hidden
state at every step t, and the plot shows it relative to the last step, on a log scale:

* at initialisation (PyTorch's init), every cell loses the gradient geometrically going
  back in time. For the tanh RNN, dL/dh_t = dL/dh_{t+1} diag(1 - h_{t+1}^2) W_hh gives
  the bound ||dL/dh_t|| <= (gamma ||W_hh||_2)^(T-1-t) ||dL/dh_{T-1}||, gamma = max tanh';
  at PyTorch's init ||W_hh||_2 is about 1 and the bound says little, while the measured
  decay follows the spectral radius rho(W_hh) (dotted), about 0.6 per step. Gated cells
  with PyTorch's init start half-open (forget gate ~ 1/2) and lose it too; with chrono
  gate biases (dashed) they start with long memory.
* after training on the task, the gated cells have learned to keep their memory path
  open and orders of magnitude more of the gradient reaches t = 0; the RNN has not (and could
  not: a tanh latch that holds a bit is a contracting attractor, which is exactly what
  makes gradients vanish; Bengio, Simard & Frasconi, 1994).

Part 2, exploding. An RNN whose W_hh is an orthogonal matrix times `--rho` (spectral
radius 3 by default) is trained with plain SGD on the same task, once as it is and once
with `nn.utils.clip_grad_norm_(params, max_norm)`. The gradient norm reaches tens to
hundreds; without clipping one step of SGD moves the weights by lr * ||g|| and throws
the model off the cliff, with clipping every update has norm <= lr * max_norm and the
model learns.

Part 3, the Jacobian view (jacobian_view below). The gradient reaching step k is the last
step's gradient times the product of the step Jacobians dS_t/dS_{t-1} (S the cell's whole
state: h, or (h, c) for the LSTM), each computed from the tape by
`diagnostics.state_jacobians`. The largest singular value of dS_{T-1}/dS_k bounds the share
of any gradient that gets n = T-1-k steps back; its slope on the log scale is the leading
Lyapunov exponent of the trajectory (QR method, `diagnostics.lyapunov_exponents`):
below 0 the dynamics contract and gradients vanish, near 0 the cell keeps its memory.

    python examples/vanishing_gradients.py            # well under a minute on two CPU cores
    python examples/vanishing_gradients.py --quick    # seconds (smoke test)
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import tinygrad_seq as tg
except ImportError:  # run from a source checkout without `pip install -e .`: use the checkout's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq import nn, optim
from tinygrad_seq.diagnostics import (gradient_flow, jacobian_product_singular_values, lyapunov_exponents,
                                      state_jacobians)
from tinygrad_seq.nn.utils import clip_grad_norm_


MODELS = ("RNN", "LSTM", "GRU")

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional (pip install -e ".[examples]"): plain loops without bars
    class tqdm:
        def __init__(self, iterable=None, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

        write = staticmethod(print)


def load_pyplot(skipping="the plot"):
    """matplotlib.pyplot on the file-only Agg backend, or None (saying so) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {skipping} (pip install -e '.[examples]')")
        return None
    return plt


def save_figure(fig, path, dpi):
    """Lay out `fig`, write it to `path` (creating the folder), close it; returns `path`."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_metrics(out_dir, metrics):
    """out_dir/metrics.json (creating the folder); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=1, default=lambda v: v.tolist()))  # NumPy values as lists
    return path


QUICK = dict(length=12, hidden=8, batch=64, train_steps=200, explode_length=12, explode_steps=40)


# ---- the recall task (as in examples/binary_sequences.py) -----------------------------------------

def make_recall_batch(length, batch, rng):
    """x (T, B, 2) one-hot bits, T = length + 1, and targets (B,): the first bit, to recall after `length` more."""
    bits = rng.integers(0, 2, (length + 1, batch))
    return tg.Tensor(np.eye(2, dtype=np.float32)[bits]), tg.Tensor(bits[0].astype(np.int64))


class SequenceClassifier(nn.Module):
    """A recurrent layer (or nn.Recurrent around a custom cell) and a linear readout of its last output."""

    def __init__(self, recurrent, hidden, classes=2):
        self.recurrent = recurrent
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        output, _ = self.recurrent(x)
        return self.head(output[-1])


def accuracy(logits, target):
    return float((logits.numpy().argmax(axis=1) == target.numpy()).mean())


def train_classifier(model, length, steps, batch, lr, rng, desc="", solved=0.99, window=25, progress=True):
    """Adam on fresh recall batches until `steps`, or until the last `window` batches average >= `solved`.

    Returns (steps taken, training losses).
    """
    opt = optim.Adam(list(model.parameters()), lr=lr)
    recent, losses = [], []
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not progress)
    step = 0
    for step in bar:
        x, y = make_recall_batch(length, batch, rng)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        recent = (recent + [accuracy(logits, y)])[-window:]
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{np.mean(recent):.2f}")
        if len(recent) == window and np.mean(recent) >= solved:
            break
    bar.close()
    return step + 1, losses


def evaluate(model, length, size, seed):
    """Accuracy on `size` fresh sequences (a fixed seed, so every model sees the same ones)."""
    x, y = make_recall_batch(length, size, np.random.default_rng(seed))
    with tg.no_grad():
        return accuracy(model(x), y)


def chrono_init_(layer, max_len, rng):
    """Chrono initialisation of an LSTM's or GRU's gate biases (Tallec & Ollivier, 2018).

    LSTM: forget bias b_f = log(u), input bias b_i = -b_f, u ~ U(1, max_len - 1) per unit,
    so the forget gate sigmoid(b_f) = u / (1 + u) keeps memory for about u steps.
    GRU: the same for the update gate z (h' = (1 - z) n + z h, so z near 1 keeps h).
    Biases of layer 0 only; the recurrent-side biases of those gates are zeroed.
    """
    H = layer.hidden_size
    u = rng.uniform(1.0, max(max_len - 1.0, 2.0), H)
    b_ih, b_hh = layer.bias_ih_l0.numpy().copy(), layer.bias_hh_l0.numpy().copy()
    if isinstance(layer, nn.LSTM):  # gates i, f, g, o
        b_ih[0:H], b_hh[0:H] = -np.log(u), 0.0
        b_ih[H:2 * H], b_hh[H:2 * H] = np.log(u), 0.0
    elif isinstance(layer, nn.GRU):  # gates r, z, n
        b_ih[H:2 * H], b_hh[H:2 * H] = np.log(u), 0.0
    layer.load_state_dict({**layer.state_dict(), "bias_ih_l0": b_ih, "bias_hh_l0": b_hh})


def make_model(kind, hidden, max_len, init, rng):
    layer = getattr(nn, kind)(2, hidden)
    if init == "chrono" and kind in ("LSTM", "GRU"):
        chrono_init_(layer, max_len, rng)
    return SequenceClassifier(layer, hidden)



# ---- part 1: gradient flow -------------------------------------------------------------------

def flow_of(model, x, y):
    """||dL/dh_t|| for t = 0 .. T-1, L = cross-entropy of the readout of the last output."""
    return gradient_flow(model.recurrent, lambda output, final: F.cross_entropy(model.head(output[-1]), y), x)


def rnn_rates(rnn, x):
    """What the textbook says about a one-layer tanh RNN's gradient flow on the batch x.

    dL/dh_t = dL/dh_{t+1} diag(1 - h_{t+1}^2) W_hh, so with gamma = max tanh' (<= 1) and
    lambda = ||W_hh||_2, ||dL/dh_t|| <= (gamma * lambda)^(T-1-t) ||dL/dh_{T-1}||: a guarantee
    of vanishing when gamma * lambda < 1. The rate actually seen is closer to the spectral
    radius rho(W_hh) (times the typical tanh'), since the product of T Jacobians grows like
    the largest eigenvalue's power, not the largest singular value's.
    """
    with tg.no_grad():
        h = rnn(x)[0].numpy().astype(np.float64)  # (T, B, H): h_0 .. h_{T-1}
    w = rnn.weight_hh_l0.numpy().astype(np.float64)
    return dict(gamma=float((1 - h[1:] ** 2).max()), weight_norm=float(np.linalg.norm(w, 2)),
                spectral_radius=float(np.abs(np.linalg.eigvals(w)).max()))


def measure_flows(args, progress, trained=None):
    """Gradient flow of each cell at init (default and chrono) and after training on recall
    (the trained models go into the dict `trained`, by kind, when given)."""
    T = args.length
    x, y = make_recall_batch(T - 1, args.batch, np.random.default_rng(args.seed + 99))
    flows, trained_acc, rates = {}, {}, None
    for j, kind in enumerate(MODELS):
        tg.manual_seed(args.seed * 100 + j)
        rng = np.random.default_rng(args.seed * 100 + j)
        model = make_model(kind, args.hidden, T, "default", rng)
        flows[("init", kind)] = flow_of(model, x, y)
        if kind == "RNN":
            rates = rnn_rates(model.recurrent, x)
        else:
            chrono_init_(model.recurrent, T, rng)
            flows[("chrono", kind)] = flow_of(model, x, y)
            if args.train_init == "default":
                model = make_model(kind, args.hidden, T, "default", rng)
        used, _ = train_classifier(model, T - 1, args.train_steps, args.batch, args.lr, rng,
                                   desc=f"train {kind}", progress=progress)
        trained_acc[kind] = evaluate(model, T - 1, 1000, seed=args.seed + 7)
        if trained is not None:
            trained[kind] = model
        flows[("trained", kind)] = flow_of(model, x, y)
        tqdm.write(f"trained {kind:<4} on recall over T={T}: held-out accuracy {trained_acc[kind]:.2f} "
                   f"after {used} steps")
    return flows, trained_acc, rates


def print_flows(flows, T):
    print(f"\n||dL/dh_t|| with the loss on the last output (T = {T}); ratio = first step / last step")
    print(f"{'':<16}{'t = T-1':>12}{'t = 0':>12}{'ratio':>12}{'per step':>10}")
    for (stage, kind), f in flows.items():
        ratio = f[0] / f[-1] if f[-1] > 0 else float("nan")
        per_step = ratio ** (1.0 / (T - 1)) if ratio > 0 else 0.0
        print(f"{stage + ' ' + kind:<16}{f[-1]:>12.3e}{f[0]:>12.3e}{ratio:>12.3e}{per_step:>10.3f}")


# ---- part 3: the Jacobian view -----------------------------------------------------------------

def jacobian_view(args, trained):
    """For each cell at initialisation (PyTorch's init) and trained: the largest singular value of
    dS_{T-1}/dS_{T-1-n} for n = 1 .. T (geometric mean over the batch) and the leading Lyapunov
    exponent (mean over the batch), from the Jacobians of one step computed on the tape."""
    T = args.length
    x, _ = make_recall_batch(T - 1, args.jacobian_batch, np.random.default_rng(args.seed + 99))
    view = {}
    for j, kind in enumerate(MODELS):
        tg.manual_seed(args.seed * 100 + j)
        at_init = make_model(kind, args.hidden, T, "default", np.random.default_rng(args.seed * 100 + j))
        for stage, model in (("init", at_init), ("trained", trained[kind])):
            J = state_jacobians(model.recurrent, x)  # (T, B, S, S)
            top = jacobian_product_singular_values(J)[:, :, 0]  # (T, B): lag n = 1 .. T
            exponent = lyapunov_exponents(J, k=1, warmup=T // 5)[:, 0]
            view[(stage, kind)] = dict(top_singular_value=np.exp(np.log(np.maximum(top, 1e-300)).mean(axis=1)).tolist(),
                                       lyapunov=float(exponent.mean()), state_size=int(J.shape[-1]))
    return view


def print_jacobian_view(view, T):
    print(f"\nlargest singular value of dS_(T-1)/dS_(T-1-n) (S = h; (h, c) for the LSTM), T = {T}, "
          "and the leading Lyapunov exponent lambda_1 (per step)")
    print(f"{'':<16}{'n = 1':>10}{f'n = {T // 2}':>10}{f'n = {T}':>10}{'lambda_1':>10}{'e^lambda_1':>12}")
    for (stage, kind), v in view.items():
        s = v["top_singular_value"]
        print(f"{stage + ' ' + kind:<16}{s[0]:>10.3g}{s[T // 2 - 1]:>10.3g}{s[-1]:>10.3g}"
              f"{v['lyapunov']:>10.3f}{np.exp(v['lyapunov']):>12.3f}")


def plot_jacobian_view(plt, path, view, T):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = dict(RNN="C0", LSTM="C1", GRU="C2")
    n = np.arange(1, T + 1)
    for (stage, kind), v in view.items():
        ax.semilogy(n, v["top_singular_value"], color=colors[kind], ls="--" if stage == "init" else "-",
                    label=f"{kind} {stage}: $\\lambda_1$ = {v['lyapunov']:.2f}")
    ax.set_xlabel("n = T - 1 - k (steps back)")
    ax.set_ylabel(r"$\sigma_{max}(\partial S_{T-1} / \partial S_k)$")
    ax.set_title("the Jacobian view: dashed at initialisation, solid after training")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    save_figure(fig, path, dpi=110)
    print(f"wrote {path}")


# ---- part 2: exploding gradients ----------------------------------------------------------------

def exploding_run(args, clip, progress):
    """Train an RNN with W_hh = rho * orthogonal by SGD; per step: loss, gradient norm, update norm."""
    tg.manual_seed(args.seed + 1)
    rng = np.random.default_rng(args.seed + 1)
    H, T = args.hidden_explode, args.explode_length
    rnn = nn.RNN(2, H)
    q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    rnn.load_state_dict({**rnn.state_dict(), "weight_hh_l0": (args.rho * q).astype(np.float32)})
    head = nn.Linear(H, 2)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = optim.SGD(params, lr=args.explode_lr)
    history = dict(loss=[], grad_norm=[], update_norm=[])
    bar = tqdm(range(args.explode_steps), desc="clipped" if clip else "unclipped", leave=False, disable=not progress)
    for _ in bar:
        x, y = make_recall_batch(T - 1, args.batch, rng)
        output, _ = rnn(x)
        loss = F.cross_entropy(head(output[-1]), y)
        opt.zero_grad()
        loss.backward()
        # the norm before clipping, in float64 on the host (it may be too large for float32 squares)
        grad_norm = float(np.sqrt(sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in params)))
        if clip:
            clip_grad_norm_(params, args.max_norm)
        before = [p.numpy().copy() for p in params]
        opt.step()
        update = float(np.sqrt(sum(((p.numpy() - b).astype(np.float64) ** 2).sum() for p, b in zip(params, before))))
        history["loss"].append(loss.item())
        history["grad_norm"].append(grad_norm)
        history["update_norm"].append(update)
    bar.close()
    return history


# ---- plots ---------------------------------------------------------------------------------------

def plot_flows(plt, path, flows, rates, T, trained_acc):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(RNN="C0", LSTM="C1", GRU="C2")
    t = np.arange(T)
    for ax, stage, title in ((axes[0], "init", "at initialisation"),
                             (axes[1], "trained", "after training on recall")):
        for kind in MODELS:
            f = np.asarray(flows[(stage, kind)])
            label = kind if stage == "init" else f"{kind} (accuracy {trained_acc[kind]:.2f})"
            ax.semilogy(t, f / f[-1], color=colors[kind], label=label)
            if stage == "init" and ("chrono", kind) in flows:
                c = np.asarray(flows[("chrono", kind)])
                ax.semilogy(t, c / c[-1], color=colors[kind], ls="--", label=f"{kind}, chrono init")
        if stage == "init":
            ax.semilogy(t, rates["spectral_radius"] ** (T - 1.0 - t), color=colors["RNN"], ls=":",
                        label=r"$\rho(W_{hh})^{T-1-t}$ of the RNN")
        ax.set_xlabel("time step t")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(r"$\|dL/dh_t\| \;/\; \|dL/dh_{T-1}\|$")
    axes[0].set_ylim(bottom=max(1e-30, axes[0].get_ylim()[0]))
    fig.suptitle(f"gradient reaching h_t, loss on the last output only (T = {T})")
    save_figure(fig, path, dpi=110)
    print(f"wrote {path}")


def plot_exploding(plt, path, runs, args):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, history in runs.items():
        steps = np.arange(1, len(history["loss"]) + 1)
        axes[0].plot(steps, history["loss"], label=name)
        axes[1].semilogy(steps, history["grad_norm"], label=name)
        axes[2].semilogy(steps, history["update_norm"], label=name)
    axes[2].axhline(args.explode_lr * args.max_norm, color="grey", ls=":", label="lr * max_norm")
    for ax, title, ylabel in zip(axes, ("training loss", "gradient norm (before clipping)", "update norm"),
                                 ("cross-entropy", r"$\|g\|$ (log scale)", r"$\|\Delta\theta\|$ (log scale)")):
        ax.set_title(title)
        ax.set_xlabel("SGD step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"RNN with spectral radius {args.rho:g}, T = {args.explode_length}, lr = {args.explode_lr:g}")
    save_figure(fig, path, dpi=110)
    print(f"wrote {path}")


# ---- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--length", type=int, default=50, help="sequence length T for the gradient-flow part")
    p.add_argument("--hidden", type=int, default=16, help="hidden units (gradient-flow part)")
    p.add_argument("--batch", type=int, default=128, help="sequences per batch")
    p.add_argument("--train-steps", type=int, default=400, help="max Adam steps when training each cell")
    p.add_argument("--train-init", choices=("chrono", "default"), default="chrono",
                   help="gate-bias init of the gated cells that get trained")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (gradient-flow part)")
    p.add_argument("--rho", type=float, default=3.0, help="spectral radius of W_hh in the exploding part")
    p.add_argument("--hidden-explode", type=int, default=32, help="hidden units (exploding part)")
    p.add_argument("--explode-length", type=int, default=20, help="sequence length T (exploding part)")
    p.add_argument("--explode-steps", type=int, default=150, help="SGD steps (exploding part)")
    p.add_argument("--explode-lr", type=float, default=0.2, help="SGD learning rate (exploding part)")
    p.add_argument("--max-norm", type=float, default=1.0, help="clip_grad_norm_ threshold")
    p.add_argument("--jacobian-batch", type=int, default=16, help="sequences for the Jacobian view")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/vanishing_gradients", help="folder for the plots and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    progress = not args.no_progress
    start = time.perf_counter()
    trained = {}
    flows, trained_acc, rates = measure_flows(args, progress, trained)
    print_flows(flows, args.length)
    view = jacobian_view(args, trained)
    print_jacobian_view(view, args.length)
    r, n = rates, args.length - 1
    print(f"RNN at init: gamma = max tanh' = {r['gamma']:.3f}, lambda = ||W_hh||_2 = {r['weight_norm']:.3f}: "
          f"the bound (gamma lambda)^{n} = {(r['gamma'] * r['weight_norm']) ** n:.2e}"
          f"{' guarantees nothing' if r['gamma'] * r['weight_norm'] >= 1 else ''}; the spectral radius "
          f"rho(W_hh) = {r['spectral_radius']:.3f} predicts {r['spectral_radius'] ** n:.2e}; "
          f"measured {flows[('init', 'RNN')][0] / flows[('init', 'RNN')][-1]:.2e}\n")

    runs = {name: exploding_run(args, clip, progress) for name, clip in (("no clipping", False),
                                                                        (f"clip_grad_norm_({args.max_norm:g})", True))}
    print(f"\nexploding: RNN with W_hh = {args.rho:g} x orthogonal, T = {args.explode_length}, "
          f"SGD lr {args.explode_lr:g}")
    print(f"{'':<24}{'max ||g||':>12}{'max ||Δθ||':>12}{'first loss':>12}{'last 10 loss':>14}")
    for name, h in runs.items():
        print(f"{name:<24}{max(h['grad_norm']):>12.3g}{max(h['update_norm']):>12.3g}"
              f"{h['loss'][0]:>12.3f}{np.mean(h['loss'][-10:]):>14.3f}")
    print(f"(with clipping every update is at most lr * max_norm = {args.explode_lr * args.max_norm:g})")
    seconds = time.perf_counter() - start
    print(f"total time {seconds:.1f} s")

    out = Path(args.out)
    plt = load_pyplot("the plots")
    if plt is not None:
        plot_flows(plt, out / "gradient_flow.png", flows, rates, args.length, trained_acc)
        plot_exploding(plt, out / "exploding_gradients.png", runs, args)
        plot_jacobian_view(plt, out / "jacobian_view.png", view, args.length)
    path = write_metrics(out, dict(flows={" ".join(key): flow for key, flow in flows.items()},
                                   trained_accuracy=trained_acc, rnn_rates=rates, exploding=runs,
                                   jacobian_view={" ".join(key): value for key, value in view.items()},
                                   seconds=seconds))
    print(f"wrote {path}")
    return dict(flows=flows, trained_accuracy=trained_acc, rnn_rates=rates, exploding=runs, jacobian_view=view)


if __name__ == "__main__":
    main()
