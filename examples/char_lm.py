"""Character-level LSTM language model on the documentation text shipped with CPython.

Many-to-many: at every position the model predicts the next character. The text is
`pydoc_data.topics` (the help() pages of the language reference, 79 documents one after
the other), split into a training part (first 90%) and a validation part (the rest).
Training uses truncated backpropagation through time: the training text is cut into B
parallel streams, each step takes the next `--bptt` characters of every stream, and
nn.TBPTT carries the LSTM state from one chunk to the next, detached, so gradients stop at
the chunk boundary. Where a help page begins, inside a chunk, that stream's state starts
afresh (the `resets` of nn.run_with_resets), so no page is read in the context of the
previous one.

The script reports validation bits per character beside two baselines it computes on
the same split (add-one smoothed unigram and bigram models), saves a loss curve, and
prints samples at a few temperatures.

    python examples/char_lm.py                  # about a minute of CPU time (1,000 steps)
    python examples/char_lm.py --quick          # a few seconds, for smoke tests
    python examples/char_lm.py --cell zoneout   # another LSTM from the cell zoo (see --help)
    mpiexec -n 2 python examples/char_lm.py     # data-parallel: each process takes half the streams
"""
import argparse
import json
import math
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
from tinygrad_seq import distributed as dist
from tinygrad_seq import nn, optim

LN2 = math.log(2.0)

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


QUICK = dict(steps=60, hidden=64, embed=16, batch=32, bptt=32, eval_every=20, sample_len=80, lr=1e-2)


# ---- data --------------------------------------------------------------------------------

def load_documents():
    """The English documentation text inside every CPython: its help() pages, one string each."""
    from pydoc_data.topics import topics
    return list(topics.values())


def document_starts(documents):
    """Booleans over the joined text: True at the first character of each document."""
    starts = np.zeros(sum(len(d) for d in documents), dtype=bool)
    starts[np.cumsum([0] + [len(d) for d in documents[:-1]])] = True
    return starts


def encode(text, val_fraction):
    """Character vocabulary (over the whole text) and the train/validation index arrays."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text], dtype=np.int64)
    split = int(len(data) * (1 - val_fraction))
    return chars, data[:split], data[split:]


def ngram_baselines(train, val, vocab_size):
    """Bits per character of add-one smoothed unigram and bigram models fitted on `train`."""
    uni = np.bincount(train, minlength=vocab_size) + 1.0
    uni_bpc = -np.log2(uni[val] / uni.sum()).mean()
    bi = np.ones((vocab_size, vocab_size))
    np.add.at(bi, (train[:-1], train[1:]), 1.0)
    bi /= bi.sum(axis=1, keepdims=True)
    first = -np.log2(uni[val[0]] / uni.sum())  # the first character has no predecessor
    bi_bpc = (first - np.log2(bi[val[:-1], val[1:]]).sum()) / len(val)
    return float(uni_bpc), float(bi_bpc)


def streams(data, starts, batch):
    """Inputs, next-character targets and document starts (resets) as (L, batch) arrays: column b is one
    contiguous stream."""
    length = (len(data) - 1) // batch
    x = data[:batch * length].reshape(batch, length).T
    y = data[1:batch * length + 1].reshape(batch, length).T
    resets = starts[:batch * length].reshape(batch, length).T
    return np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(resets)


# ---- model -------------------------------------------------------------------------------

# --cell: nn.LSTM, or nn.Recurrent over one of these cells per layer (input size -> cell)
CELLS = {
    "layernorm": lambda i, h: nn.LayerNormLSTMCell(i, h),  # Ba et al. 2016
    "peephole": lambda i, h: nn.PeepholeLSTMCell(i, h),  # Gers et al. 2002
    "zoneout": lambda i, h: nn.Zoneout(nn.LSTMCell(i, h), (0.05, 0.5)),  # (h, c): Krueger et al.'s char-level rates
    "variational": lambda i, h: nn.VariationalDropout(nn.LSTMCell(i, h), dropout=0.1, recurrent_dropout=0.25),
}


class CharLM(nn.Module):
    """Embedding -> LSTM (or a cell from the zoo) -> Linear over the vocabulary."""

    def __init__(self, vocab_size, embed, hidden, layers=1, cell="lstm"):
        self.embed = nn.Embedding(vocab_size, embed)
        if cell == "lstm":
            self.lstm = nn.LSTM(embed, hidden, num_layers=layers)
        else:
            self.lstm = nn.Recurrent([CELLS[cell](embed if k == 0 else hidden, hidden) for k in range(layers)])
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None, resets=None):
        """x: (T, B) integer array -> logits (T*B, V) and the final state; row b's state starts afresh
        before step t where resets[t, b]."""
        out, state = nn.run_with_resets(self.lstm, self.embed(tg.Tensor(x)), state, resets)
        T, B, H = out.shape
        return self.head(out.reshape(T * B, H)), state


@tg.no_grad()
def evaluate(model, data, starts, batch=32, bptt=256):
    """Mean bits per character of the model over `data`, read as `batch` streams."""
    model.eval()
    x, y, resets = streams(data, starts, batch)
    runner, total = nn.TBPTT(model), 0.0
    for i in range(0, len(x), bptt):
        logits = runner(x[i:i + bptt], resets[i:i + bptt])
        total += F.cross_entropy(logits, tg.Tensor(y[i:i + bptt].reshape(-1)), reduction="sum").item()
    model.train()
    return total / y.size / LN2


@tg.no_grad()
def sample(model, chars, prefix, temperature=1.0, length=200, rng=None):
    """Continue `prefix` by drawing characters from softmax(logits / temperature)."""
    rng = np.random.default_rng() if rng is None else rng
    index = {c: i for i, c in enumerate(chars)}
    model.eval()
    logits, state = model(np.array([[index[c]] for c in prefix]))
    out = []
    for _ in range(length):
        z = logits.numpy()[-1].astype(np.float64) / max(temperature, 1e-6)
        p = np.exp(z - z.max())
        nxt = int(rng.choice(len(chars), p=p / p.sum()))
        out.append(chars[nxt])
        logits, state = model(np.array([[nxt]]), state)
    model.train()
    return prefix + "".join(out)


# ---- plotting ----------------------------------------------------------------------------

def plot(path, history, unigram, bigram):
    plt = load_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps, train = zip(*history["train"])
    ax.plot(steps, train, color="tab:blue", alpha=0.35, lw=0.8, label="train (per chunk)")
    ax.plot(steps, smooth(train), color="tab:blue", label="train (smoothed)")
    v_steps, val = zip(*history["val"])
    ax.plot(v_steps, val, "o-", color="tab:red", label="validation")
    ax.axhline(unigram, color="gray", ls=":", label=f"unigram baseline ({unigram:.2f})")
    ax.axhline(bigram, color="gray", ls="--", label=f"bigram baseline ({bigram:.2f})")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_ylim(0, max(unigram + 0.5, min(max(train), 7.0)))
    ax.set_title("Character-level LSTM on pydoc_data.topics")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)


def smooth(values, beta=0.9):
    """Exponential moving average, for a readable training curve."""
    out, avg = [], None
    for v in values:
        avg = v if avg is None else beta * avg + (1 - beta) * v
        out.append(avg)
    return out


# ---- main --------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1000, help="training steps (one chunk of every stream each)")
    p.add_argument("--batch", type=int, default=64, help="parallel streams B")
    p.add_argument("--bptt", type=int, default=64, help="chunk length: time steps per truncated BPTT window")
    p.add_argument("--embed", type=int, default=32, help="character embedding size")
    p.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    p.add_argument("--layers", type=int, default=1, help="stacked LSTM layers")
    p.add_argument("--cell", choices=["lstm"] + list(CELLS), default="lstm",
                   help="nn.LSTM, or nn.Recurrent over LayerNormLSTMCell, PeepholeLSTMCell, or an LSTMCell "
                        "with Zoneout (h 0.05, c 0.5) or VariationalDropout (inputs 0.1, h 0.25)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (cosine-decayed to 10%%)")
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation runs")
    p.add_argument("--sample-len", type=int, default=300, help="characters per printed sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/char_lm", help="folder for the plot and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    comm = dist.init()  # [distributed] MPI under mpiexec, else a world of one
    main_rank = dist.is_main_process(comm)  # [distributed] only rank 0 prints and writes files
    if args.batch % comm.size:
        raise SystemExit(f"--batch {args.batch} must be divisible by the number of processes ({comm.size})")
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out_dir = Path(args.out)
    start = time.perf_counter()

    documents = load_documents()
    chars, train, val = encode("".join(documents), args.val_fraction)
    starts = document_starts(documents)
    train_starts, val_starts = starts[:len(train)], starts[len(train):]
    unigram, bigram = ngram_baselines(train, val, len(chars))
    if main_rank:
        print(f"text: {len(documents)} documents, {len(train):,} training and {len(val):,} validation characters, "
              f"vocabulary {len(chars)}")
        print(f"baselines on the validation text: unigram {unigram:.3f} bpc, bigram {bigram:.3f} bpc")

    model = CharLM(len(chars), args.embed, args.hidden, args.layers, args.cell)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 10)  # per step
    dist.broadcast_parameters(model, comm)  # [distributed] every rank starts from rank 0's weights
    if main_rank:
        print(f"model: {sum(p.numel() for p in params):,} parameters\n{model}")

    x_all, y_all, r_all = streams(train, train_starts, args.batch)
    x_all, y_all, r_all = (a[:, comm.rank::comm.size] for a in (x_all, y_all, r_all))  # [distributed] this rank's
    chunks = len(x_all) // args.bptt
    history = {"train": [], "val": []}
    runner, avg = nn.TBPTT(model), None  # carries the state from chunk to chunk, detached
    bar = tqdm(range(1, args.steps + 1), desc="training", unit="step", disable=args.no_progress or not main_rank)
    for step in bar:
        k = (step - 1) % chunks
        if k == 0:
            runner.reset()  # a new pass over the text: start the streams from zero state
        i = k * args.bptt
        x, y, resets = x_all[i:i + args.bptt], y_all[i:i + args.bptt], r_all[i:i + args.bptt]

        logits = runner(x, resets)  # truncated BPTT: the state comes in from the last chunk, cut from its graph
        loss = F.cross_entropy(logits, tg.Tensor(y.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        dist.average_gradients(params, comm)  # [distributed] equal shards: the mean over ranks is the global mean
        nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        schedule.step()

        bpc = loss.item() / LN2
        history["train"].append((step, bpc))
        avg = bpc if avg is None else 0.95 * avg + 0.05 * bpc
        if main_rank and (step % args.eval_every == 0 or step == args.steps):
            history["val"].append((step, evaluate(model, val, val_starts)))
            bar.set_postfix(train_bpc=f"{avg:.3f}", val_bpc=f"{history['val'][-1][1]:.3f}")
        elif step % 10 == 0:
            bar.set_postfix(train_bpc=f"{avg:.3f}")
    bar.close()
    if not main_rank:  # [distributed] the other ranks are done: rank 0 samples, plots and writes
        return None
    val_bpc = history["val"][-1][1]

    print()
    for temperature in (0.5, 0.8, 1.0):
        text = sample(model, chars, "The ", temperature, args.sample_len, rng)
        print(f"--- sample, temperature {temperature} ---\n{text}\n")
    path = plot(out_dir / "loss.png", history, unigram, bigram)
    if path is not None:
        print(f"loss curve: {path}")
    elapsed = time.perf_counter() - start
    print(f"{args.steps} steps of {args.batch}x{args.bptt} characters in {elapsed:.0f} s")
    verdict = "beats" if val_bpc < bigram else "does NOT beat"
    print(f"val bpc {val_bpc:.3f} (unigram {unigram:.3f}, bigram {bigram:.3f}): the LSTM {verdict} the bigram")
    metrics = {"cell": args.cell, "val_bpc": val_bpc, "unigram_bpc": unigram, "bigram_bpc": bigram, "seconds": elapsed,
               "train_bpc": [b for _, b in history["train"]], "val_curve": history["val"]}
    print(f"metrics: {write_metrics(out_dir, metrics)}")
    return metrics


if __name__ == "__main__":
    main()
