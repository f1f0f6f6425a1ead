"""Write your own recurrent cell: a Minimal Gated Unit in a few lines of Tensor code.

The Minimal Gated Unit (MGU; Zhou, Wu, Zhang & Zhou, 2016) is a GRU with one gate f that
both resets and updates:

    f  = sigmoid(x W_fx^T + h W_fh^T + b_f)
    n  = tanh(x W_nx^T + (f * h) W_nh^T + b_n)
    h' = (1 - f) * h + f * n

The cell below is an nn.Module with `forward(x_t, state)` and `initial_state(batch_size)`,
and that is all nn.Recurrent needs: it runs the cell over sequences (variable lengths
too), stacks layers, and runs a second copy backwards for a bidirectional layer. No
backward pass is written anywhere: the tape differentiates the forward, which this
script checks against finite differences (gradcheck, float64) for one step and for a
whole stacked bidirectional run. Then the MGU learns recall-the-first-bit
(examples/binary_sequences.py) after N = 20 and 50 distractors. As for the LSTM and GRU
there, the gate bias starts "chrono" (each unit remembers for ~U(1, N) steps at init);
with --no-chrono the gate starts half-open and, at this budget, the MGU stays at chance.

    python examples/custom_cell.py            # about ten seconds on two CPU cores
    python examples/custom_cell.py --quick    # seconds (smoke test)
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
from tinygrad_seq.diagnostics import to_dot
from tinygrad_seq.autograd.gradcheck import gradcheck



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


QUICK = dict(lengths=[4], hidden=8, steps=150, batch=32, eval_size=256)


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



# ---- the cell: 21 lines ------------------------------------------------------------------------

class MGUCell(nn.Module):
    """Minimal Gated Unit: f = sigmoid(.), n = tanh(x W_nx + (f h) W_nh + b_n), h' = (1 - f) h + f n."""

    def __init__(self, input_size, hidden_size, dtype=None):
        self.hidden_size, bound = hidden_size, hidden_size ** -0.5

        def uniform(*shape):  # PyTorch's recurrent init: U(-1/sqrt(H), 1/sqrt(H))
            return nn.Parameter((tg.rand(*shape, dtype=dtype) * 2 - 1) * bound)
        self.weight_ih = uniform(2 * hidden_size, input_size)  # rows: [W_fx; W_nx]
        self.weight_fh = uniform(hidden_size, hidden_size)
        self.weight_nh = uniform(hidden_size, hidden_size)
        self.bias = uniform(2 * hidden_size)  # [b_f; b_n]

    def initial_state(self, batch_size):
        return tg.zeros(batch_size, self.hidden_size, dtype=self.bias.dtype)

    def forward(self, x, h):
        x_f, x_n = (x @ self.weight_ih.T + self.bias).chunk(2, axis=1)
        f = (x_f + h @ self.weight_fh.T).sigmoid()
        n = (x_n + (f * h) @ self.weight_nh.T).tanh()
        return h + f * (n - h)  # = (1 - f) h + f n


# ---- checks ------------------------------------------------------------------------------------

def check_gradients(seed):
    """gradcheck (float64, central differences) of one step, and of a stacked bidirectional run."""
    tg.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cell = MGUCell(3, 4, dtype="float64")
    x = tg.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    h = tg.Tensor(rng.standard_normal((2, 4)) * 0.5, requires_grad=True)
    gradcheck(lambda x, h, *params: cell(x, h), [x, h, *cell.parameters()])
    print("gradcheck of one MGU step (input, state, 4 parameters): ok")

    layers = nn.Recurrent([MGUCell(3, 2, dtype="float64"), MGUCell(4, 2, dtype="float64")],
                          reverse_cell=[MGUCell(3, 2, dtype="float64"), MGUCell(4, 2, dtype="float64")])
    xs = tg.Tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)
    params = list(layers.parameters())
    lengths = [4, 2]
    gradcheck(lambda xs, *p: layers(xs, lengths=lengths)[0], [xs, *params])
    print(f"gradcheck of a 2-layer bidirectional MGU over (T=4, B=2) with lengths {lengths} "
          f"({sum(p.numel() for p in params)} parameters): ok")


def write_tape(path, seed):
    """The tape of one MGU step as Graphviz DOT text (diagnostics.to_dot): every op the cell recorded."""
    tg.manual_seed(seed)
    cell = MGUCell(2, 3)
    h_new = cell(tg.randn(4, 2), tg.randn(4, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    dot = to_dot(h_new, params=cell.named_parameters())
    path.write_text(dot)
    print(f"wrote {path}: the tape of one step, {dot.count('shape=box')} ops on {dot.count('shape=ellipse')} "
          f"parameters (render: dot -Tpng {path} -o {path.with_suffix('.png')})")


def show_layouts(hidden, seed):
    """Shapes of a stacked bidirectional run, and padding behaving like PyTorch's packed sequences."""
    tg.manual_seed(seed)
    T, B, I = 6, 3, 2
    layers = nn.Recurrent([MGUCell(I, hidden), MGUCell(2 * hidden, hidden)],
                          reverse_cell=[MGUCell(I, hidden), MGUCell(2 * hidden, hidden)])
    x = tg.randn(T, B, I)
    lengths = [6, 4, 1]
    output, final = layers(x, lengths=lengths)
    print(f"stacked bidirectional MGU: input {x.shape} -> output {output.shape}, final state: "
          f"{len(final)} layers of (forward, reverse) states of shape {final[-1][0].shape}")
    padded = np.abs(output.numpy()[[4, 5, 1, 2], [1, 1, 2, 2]]).max()
    print(f"  with lengths {lengths}: outputs past each sequence's end are zero (max |output| there: {padded:g})")
    return output.shape


def train(args, progress):
    """The MGU (one layer) on recall-the-first-bit after N distractors; held-out accuracy per N."""
    results = {}
    for k, n in enumerate(args.lengths):
        tg.manual_seed(args.seed * 1000 + k)
        rng = np.random.default_rng(args.seed * 1000 + k)
        cell = MGUCell(2, args.hidden)
        if args.chrono:  # gate f near 0 keeps h: start each unit with a memory of u ~ U(1, T) steps
            bias = cell.bias.numpy().copy()
            bias[:args.hidden] = -np.log(rng.uniform(1.0, max(n, 2.0), args.hidden))
            cell.bias.data = tg.Tensor(bias)
        model = SequenceClassifier(nn.Recurrent(cell), args.hidden)
        t0 = time.perf_counter()
        used, losses = train_classifier(model, n, args.steps, args.batch, args.lr, rng,
                                        desc=f"MGU recall N={n}", progress=progress)
        accuracy = evaluate(model, n, args.eval_size, seed=10_000 + k)
        results[n] = dict(accuracy=accuracy, steps=used, loss=losses)
        tqdm.write(f"MGU, recall after N={n:<3} distractors: held-out accuracy {accuracy:.3f} after {used} steps "
                   f"({time.perf_counter() - t0:.1f} s; loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f})")
    return results


def plot(path, results):
    plt = load_pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for n, r in results.items():
        ax.plot(np.arange(1, len(r["loss"]) + 1), r["loss"], label=f"N={n} (accuracy {r['accuracy']:.2f})")
    ax.axhline(np.log(2), color="grey", ls=":", label="chance (log 2)")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("MGU cell learning recall-the-first-bit")
    ax.legend()
    save_figure(fig, path, dpi=110)
    print(f"wrote {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lengths", type=lambda s: [int(v) for v in s.split(",")], default=[20, 50],
                   help="distractor counts N to train on (comma-separated)")
    p.add_argument("--hidden", type=int, default=16, help="hidden units")
    p.add_argument("--steps", type=int, default=500, help="max Adam steps per N (stops early once solved)")
    p.add_argument("--batch", type=int, default=256, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--no-chrono", dest="chrono", action="store_false",
                   help="keep the uniform init of the gate bias (no long initial memory)")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out sequences")
    p.add_argument("--skip-gradcheck", action="store_true", help="skip the finite-difference checks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/custom_cell", help="folder for the plot, the tape and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if not args.skip_gradcheck:
        check_gradients(args.seed)
    write_tape(Path(args.out) / "mgu_step.dot", args.seed)
    shape = show_layouts(args.hidden, args.seed)
    results = train(args, not args.no_progress)
    seconds = time.perf_counter() - start
    print(f"total time {seconds:.1f} s")
    out = Path(args.out)
    plot(out / "custom_cell.png", results)
    path = write_metrics(out, dict(recall={str(n): r for n, r in results.items()}, output_shape=shape,
                                   seconds=seconds))
    print(f"wrote {path}")
    return dict(results=results, output_shape=shape)


if __name__ == "__main__":
    main()
