"""Binary sequences: where a plain RNN forgets and gated cells (LSTM, GRU) remember.

The classic lab. Every sequence is a string of random bits, one bit per time step
(one-hot, input size 2), and a linear readout of the last hidden state classifies it:

* recall:  b_0, then N distractor bits; the target is b_0. The network must latch one
  bit and hold it while N more bits stream in. The gradient that teaches it to do so has
  to travel N steps back in time, and in a plain tanh RNN it shrinks geometrically on
  the way (see examples/vanishing_gradients.py): by N = 20 it fails on some seeds and at
  N = 50 on most, where the gated cells, whose memory is an additive path with a learnable
  forget (LSTM) or update (GRU) gate, solve it on all or nearly all (the README's table
  counts them over 13 seeds: this run's 3 and 10 more).
* parity:  the target is the XOR of all L bits. Every bit matters and no subset of them
  says anything about the answer, so the loss is flat until the network stumbles onto
  the structure: a plateau that grows quickly with L for every cell. Gating is not what
  is missing here; at L = 4 and this budget all three stay at chance.

Gated cells are initialised with "chrono" gate biases (Tallec & Ollivier, ICLR 2018):
each unit's forget (LSTM) or update (GRU) gate starts with a memory time scale drawn
from 1 .. T, the knob a plain RNN does not have. `--init default` keeps PyTorch's init,
under which the gates start half-open (memory decays by about half per step): then, at
this budget, the gated cells lose their edge: on the 3 seeds of `--init default --tasks
recall` both fail at N = 50 and the LSTM already at N = 20, where the RNN, by luck, solves
one seed of three at N = 50.

Each cell of the table is `--seeds` independent runs (fresh initialisation and data):
the mean held-out accuracy, how many runs solved the task (>= 95%), and the median
number of training steps. A plain RNN does occasionally find the latch at long N: Adam
rescales even a vanishing gradient, so a lucky start can get there. Training stops early
once the last 25 batches are all but perfect (>= 99%); accuracy is measured on fresh
held-out sequences.

    python examples/binary_sequences.py            # about a minute on two idle CPU cores
    python examples/binary_sequences.py --quick    # seconds (smoke test)
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


QUICK = dict(recall_lengths="2,4", parity_lengths="2", steps=150, parity_steps=150, batch=32, eval_size=256, seeds=1)


# ---- data ------------------------------------------------------------------------------------

def make_batch(task, length, batch, rng):
    """x (T, B, 2) one-hot bits and targets (B,) for one task.

    recall: T = length + 1 (the bit to recall, then `length` distractors), target b_0.
    parity: T = length, target = XOR of all bits.
    """
    if task == "recall":
        bits = rng.integers(0, 2, (length + 1, batch))
        target = bits[0]
    elif task == "parity":
        bits = rng.integers(0, 2, (length, batch))
        target = bits.sum(axis=0) % 2
    else:
        raise ValueError(f"unknown task {task!r} (expected 'recall' or 'parity')")
    x = np.eye(2, dtype=np.float32)[bits]
    return tg.Tensor(x), tg.Tensor(target.astype(np.int64))


# ---- model -----------------------------------------------------------------------------------

class SequenceClassifier(nn.Module):
    """A recurrent layer (or nn.Recurrent around a custom cell) and a linear readout of its last output."""

    def __init__(self, recurrent, hidden, classes=2):
        self.recurrent = recurrent
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        output, _ = self.recurrent(x)
        return self.head(output[-1])


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


# ---- training --------------------------------------------------------------------------------

def accuracy(logits, target):
    return float((logits.numpy().argmax(axis=1) == target.numpy()).mean())


def train_classifier(model, task, length, steps, batch, lr, rng, desc="", solved=0.99, window=25, progress=True):
    """Adam on fresh random batches until `steps` or until the last `window` batches average >= `solved`.

    Returns (steps taken, training losses).
    """
    opt = optim.Adam(list(model.parameters()), lr=lr)
    recent, losses = [], []
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not progress)
    step = 0
    for step in bar:
        x, y = make_batch(task, length, batch, rng)
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


def evaluate(model, task, length, size, seed):
    """Accuracy on `size` fresh sequences (a fixed seed, so every model sees the same ones)."""
    x, y = make_batch(task, length, size, np.random.default_rng(seed))
    with tg.no_grad():
        return accuracy(model(x), y)


# ---- report ----------------------------------------------------------------------------------

SOLVED = 0.95


def solved(entry):
    return sum(a >= SOLVED for a in entry["accuracy"])


def print_table(results, models, seeds):
    print()
    print(f"held-out accuracy, mean over {seeds} seed{'s' * (seeds > 1)} [seeds solved: accuracy >= {SOLVED}] "
          "(median training steps); chance = 0.50")
    header = f"{'task':<8}{'length':>7}" + "".join(f"{m:>20}" for m in models)
    print(header)
    print("-" * len(header))
    for (task, length), row in results.items():
        name = f"N={length}" if task == "recall" else f"L={length}"
        cells = "".join(f"{np.mean(row[m]['accuracy']):>8.2f} [{solved(row[m])}/{seeds}] "
                        f"({int(np.median(row[m]['steps'])):>4d})" for m in models)
        print(f"{task:<8}{name:>7}{cells}")


def plot(path, results, models):
    plt = load_pyplot()
    if plt is None:
        return None
    tasks = list(dict.fromkeys(task for task, _ in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        lengths = [n for t, n in results if t == task]
        for m in models:
            means = [np.mean(results[(task, n)][m]["accuracy"]) for n in lengths]
            line, = ax.plot(lengths, means, "o-", label=m)
            for n in lengths:  # every seed as a faint dot
                accs = results[(task, n)][m]["accuracy"]
                ax.plot([n] * len(accs), accs, ".", color=line.get_color(), alpha=0.35)
        ax.axhline(0.5, color="grey", ls=":", label="chance")
        ax.set_xticks(lengths)
        ax.set_ylim(0.4, 1.02)
        ax.set_xlabel("distractors N" if task == "recall" else "bits L")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("recall the first bit" if task == "recall" else "parity of all bits")
        ax.legend()
    save_figure(fig, path, dpi=110)
    print(f"wrote {path}")
    return path


# ---- main ------------------------------------------------------------------------------------

def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", default="recall,parity", help="comma-separated: recall, parity")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: RNN, LSTM, GRU")
    p.add_argument("--recall-lengths", default="5,20,50", help="distractor counts N for recall")
    p.add_argument("--parity-lengths", default="2,3,4", help="sequence lengths L for parity")
    p.add_argument("--steps", type=int, default=500, help="max training steps per recall run")
    p.add_argument("--parity-steps", type=int, default=600, help="max training steps per parity run")
    p.add_argument("--hidden", type=int, default=16, help="hidden units")
    p.add_argument("--batch", type=int, default=256, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--init", choices=("chrono", "default"), default="chrono",
                   help="gate-bias initialisation of LSTM/GRU (chrono: memory time scales up to T)")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out sequences per evaluation")
    p.add_argument("--seeds", type=int, default=3, help="independent runs per cell of the table")
    p.add_argument("--seed", type=int, default=0, help="first seed (runs use seed, seed + 1, ...)")
    p.add_argument("--out", default="out/binary_sequences", help="folder for the plot and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    models = [m.strip().upper() for m in args.models.split(",") if m.strip()]
    if any(m not in MODELS for m in models):
        raise SystemExit(f"--models: choose from {', '.join(MODELS)}")
    runs = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        lengths = int_list(args.recall_lengths if task == "recall" else args.parity_lengths)
        steps = args.steps if task == "recall" else args.parity_steps
        runs += [(task, n, steps) for n in lengths]
    print(f"{len(runs) * len(models) * args.seeds} runs ({args.seeds} seeds each): {', '.join(models)} on "
          + ", ".join(f"{t} {'N' if t == 'recall' else 'L'}={n}" for t, n, _ in runs))
    results, start = {}, time.perf_counter()
    for k, (task, n, steps) in enumerate(runs):
        row = results.setdefault((task, n), {})
        for j, kind in enumerate(models):
            entry = row[kind] = dict(accuracy=[], steps=[], loss=[], seconds=0.0)
            for s in range(args.seeds):
                seed = (args.seed + s) * 1000 + 10 * k + j
                tg.manual_seed(seed)
                rng = np.random.default_rng(seed)
                T = n + 1 if task == "recall" else n
                model = make_model(kind, args.hidden, T, args.init, rng)
                t0 = time.perf_counter()
                used, losses = train_classifier(model, task, n, steps, args.batch, args.lr, rng,
                                                desc=f"{task} {n} {kind} seed {s}", progress=not args.no_progress)
                acc = evaluate(model, task, n, args.eval_size, seed=10_000 + k)
                entry["accuracy"].append(acc)
                entry["steps"].append(used)
                entry["loss"].append(losses)
                entry["seconds"] += time.perf_counter() - t0
            tqdm.write(f"{task:>6} {'N' if task == 'recall' else 'L'}={n:<3} {kind:<5} accuracy "
                       + " ".join(f"{a:.2f}" for a in entry["accuracy"])
                       + f"  steps {' '.join(str(u) for u in entry['steps'])}  ({entry['seconds']:.1f} s)")
    print_table(results, models, args.seeds)
    recall = [n for t, n in results if t == "recall"]
    if recall and "RNN" in models:
        longest = max(recall)
        row = results[("recall", longest)]
        print(f"\nrecall after N={longest} distractors, seeds solved: "
              + ", ".join(f"{m} {solved(row[m])}/{args.seeds}" for m in models))
    seconds = time.perf_counter() - start
    print(f"total time {seconds:.1f} s")
    out = Path(args.out)
    plot(out / "binary_sequences.png", results, models)
    for row in results.values():
        for entry in row.values():
            entry["solved"] = solved(entry)
    path = write_metrics(out, dict(results={f"{task} {n}": row for (task, n), row in results.items()},
                                   seeds=args.seeds, first_seed=args.seed, solved_at=SOLVED, seconds=seconds))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
