"""The curvature of an LSTM's loss during training, by Hessian-vector products on the tape.

A small LSTM classifier learns to recall the first bit of a sequence of random bits,
trained by plain full-batch gradient descent with learning rate lr. Every few steps the
largest eigenvalue of the Hessian of the training loss (the "sharpness") is estimated by
power iteration on Hessian-vector products: the gradient g = dL/dθ is computed once with
create_graph=True, then each product H v = d<g, v>/dθ is one more backward through that
recorded graph (tinygrad_seq.grad).

For gradient descent on a quadratic, a step with lr > 2/λ_max diverges along the top
eigenvector, so 2/lr is the stability edge. On neural network losses, full-batch GD
typically sharpens until λ_max reaches about 2/lr and then hovers around it while the loss
goes down non-monotonically, the "edge of stability" (Cohen et al., 2021). With the
defaults the sharpness climbs from about 0.7 to 2/lr = 2 and oscillates around it, then
the model solves the task and the curvature collapses (a cross-entropy's Hessian shrinks as
the margins grow). The plot shows λ_max against the step beside 2/lr, and the loss.

    python examples/curvature.py             # about 12 s on two CPU cores
    python examples/curvature.py --quick     # a few seconds (smoke test)

Writes OUT/curvature.png (with matplotlib) and OUT/metrics.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import tinygrad_seq as tg
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq import nn

QUICK = dict(examples=64, length=5, hidden=8, steps=80, every=20, power_iterations=8)


def recall_data(n, length, rng):
    """x (T, n, 2): one-hot random bits; y (n,): the first bit, to be recalled after `length - 1` more."""
    bits = rng.integers(0, 2, size=(length, n))
    return tg.Tensor(np.eye(2, dtype=np.float32)[bits]), tg.Tensor(bits[0])


class Classifier(nn.Module):
    def __init__(self, hidden):
        self.lstm = nn.LSTM(2, hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        output, _ = self.lstm(x)
        return self.head(output[-1])


def sharpness(model, x, y, iterations, rng):
    """(The largest eigenvalue of the Hessian of the loss at the current parameters, the loss).

    Power iteration on Hessian-vector products converges to the eigenvalue of largest
    *magnitude*; when that one is negative (a saddle direction), a second run on H - mu I, with
    mu that negative eigenvalue, finds the top of the spectrum: lambda_max = mu + the largest
    eigenvalue of H - mu I (all of whose eigenvalues are >= 0).
    """
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    grads = tg.grad(loss, params, create_graph=True)  # on the tape: differentiable again

    def hvp(v):  # H v: one more backward through the recorded gradient
        dot = sum((g * tg.Tensor(u)).sum() for g, u in zip(grads, v))
        return [h.numpy() for h in tg.grad(dot, params, retain_graph=True)]

    def power_iteration(shift):
        v = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        eigenvalue = 0.0
        for _ in range(iterations):
            norm = np.sqrt(sum(float((u * u).sum()) for u in v))
            v = [u / norm for u in v]
            hv = [h - shift * u for h, u in zip(hvp(v), v)]
            eigenvalue = sum(float((u * h).sum()) for u, h in zip(v, hv))  # Rayleigh quotient, ||v|| = 1
            v = hv
        return eigenvalue + shift

    top = power_iteration(0.0)
    if top < 0:
        top = power_iteration(top)
    return top, loss.item()


def train(args):
    rng = np.random.default_rng(args.seed)
    tg.manual_seed(args.seed)
    x, y = recall_data(args.examples, args.length, rng)
    model = Classifier(args.hidden)
    params = list(model.parameters())
    history = dict(step=[], sharpness=[], loss=[], loss_step=[], accuracy=[])
    for step in range(args.steps + 1):
        if step % args.every == 0:
            history["step"].append(step)
            eigenvalue, current = sharpness(model, x, y, args.power_iterations, rng)
            history["sharpness"].append(eigenvalue)
            if not args.no_progress:
                print(f"step {step:4d}  loss {current:.4f}  lambda_max {eigenvalue:8.3f}  (2/lr = {2 / args.lr:.3f})")
        if step == args.steps:
            break
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        for p in params:
            p.grad = None
        loss.backward()
        with tg.no_grad():
            for p in params:  # plain gradient descent: the step the 2/lr edge is about
                p.data.add_(p.grad, alpha=-args.lr)
        history["loss"].append(loss.item())
        history["loss_step"].append(step)
        history["accuracy"].append(float((logits.numpy().argmax(1) == y.numpy()).mean()))
    return history


def plot(path, history, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install -e '.[examples]')")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(history["step"], history["sharpness"], "o-", label=r"$\lambda_{max}$ of the Hessian")
    left.axhline(2 / args.lr, color="grey", ls="--", label=f"2 / lr = {2 / args.lr:g}")
    left.set_xlabel("gradient descent step")
    left.set_ylabel(r"$\lambda_{max}$ (largest Hessian eigenvalue)")
    left.set_title("sharpness (power iteration on Hessian-vector products)")
    left.legend(fontsize=8)
    right.plot(history["loss_step"], history["loss"])
    right.set_yscale("log")
    right.set_xlabel("gradient descent step")
    right.set_ylabel("cross-entropy (log scale)")
    right.set_title("training loss (full batch)")
    fig.suptitle(f"LSTM(2, {args.hidden}) on recall over T = {args.length}, {args.examples} sequences, "
                 f"lr = {args.lr:g}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--examples", type=int, default=256, help="training sequences (one full batch)")
    p.add_argument("--length", type=int, default=5, help="sequence length T")
    p.add_argument("--hidden", type=int, default=16, help="LSTM hidden units")
    p.add_argument("--lr", type=float, default=1.0, help="gradient descent learning rate")
    p.add_argument("--steps", type=int, default=300, help="gradient descent steps")
    p.add_argument("--every", type=int, default=10, help="estimate the sharpness every this many steps")
    p.add_argument("--power-iterations", type=int, default=20, help="Hessian-vector products per estimate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/curvature", help="folder for the plot and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="print nothing while training")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    known, _ = p.parse_known_args(argv)
    if known.quick:
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    history = train(args)
    peak = max(history["sharpness"])
    print(f"\nlambda_max: {history['sharpness'][0]:.3f} at step 0, peak {peak:.3f}, "
          f"{history['sharpness'][-1]:.3f} at step {history['step'][-1]}; 2/lr = {2 / args.lr:.3f}")
    print(f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}, accuracy {history['accuracy'][-1]:.2f}; "
          f"{time.perf_counter() - start:.1f} s")
    out = Path(args.out)
    metrics = dict(sharpness=history["sharpness"], sharpness_steps=history["step"], stability_edge=2 / args.lr,
                   first_loss=history["loss"][0], final_loss=history["loss"][-1],
                   final_accuracy=history["accuracy"][-1], peak_sharpness=peak)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"wrote {out / 'metrics.json'}")
    plot(out / "curvature.png", history, args)
    return dict(history=history, metrics=metrics)


if __name__ == "__main__":
    main()
