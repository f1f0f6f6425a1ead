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
import time
from pathlib import Path

# _common first: it limits BLAS threads before NumPy loads and makes tinygrad_seq importable
from _common import load_pyplot, make_parser, parse_with_quick, save_figure, seeded_rng, tqdm
import numpy as np
import tinygrad_seq as tg
from tinygrad_seq import nn
from tinygrad_seq.diagnostics import to_dot
from tinygrad_seq.gradcheck import gradcheck

from binary_sequences import SequenceClassifier, evaluate, train_classifier  # the sibling lab, for its task

QUICK = dict(lengths=[4], hidden=8, steps=150, batch=32, eval_size=256)


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
    rng = seeded_rng(seed)
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
        rng = seeded_rng(args.seed * 1000 + k)
        cell = MGUCell(2, args.hidden)
        if args.chrono:  # gate f near 0 keeps h: start each unit with a memory of u ~ U(1, T) steps
            bias = cell.bias.numpy().copy()
            bias[:args.hidden] = -np.log(rng.uniform(1.0, max(n, 2.0), args.hidden))
            cell.bias.data = tg.Tensor(bias).data
        model = SequenceClassifier(nn.Recurrent(cell), args.hidden)
        t0 = time.perf_counter()
        used, losses = train_classifier(model, "recall", n, args.steps, args.batch, args.lr, rng,
                                        desc=f"MGU recall N={n}", progress=progress)
        accuracy = evaluate(model, "recall", n, args.eval_size, seed=10_000 + k)
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
    p = make_parser(__doc__)
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
    p.add_argument("--out", default="out/custom_cell", help="folder for the plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parse_with_quick(p, argv, QUICK)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if not args.skip_gradcheck:
        check_gradients(args.seed)
    write_tape(Path(args.out) / "mgu_step.dot", args.seed)
    shape = show_layouts(args.hidden, args.seed)
    results = train(args, not args.no_progress)
    print(f"total time {time.perf_counter() - start:.1f} s")
    plot(Path(args.out) / "custom_cell.png", results)
    return dict(results=results, output_shape=shape)


if __name__ == "__main__":
    main()
