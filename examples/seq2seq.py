"""Translate dates written by people into ISO dates with a GRU encoder-decoder.

Many-to-many with different lengths: "3rd of March 2019", "03/03/19", "Sunday, March 3,
2019" or "3 MAR 19" go in, character by character, and "2019-03-03" comes out. A
bidirectional GRU reads the padded source (with `lengths=`); its two final states,
merged by a Linear layer, start the decoder and are fed to it at every step as a
context vector. The decoder is one nn.GRUCell: in training it runs as a layer (nn.Recurrent)
over the target shifted right by one (teacher forcing); at test time it steps in a
Python loop, feeding back its own greedy choice. No attention.

Data is generated with `datetime` from a seeded generator: dates from 1950 to 2049 in
sixteen formats (two-digit years 50-99 mean 19xx, 00-49 mean 20xx; slashes are
month/day/year, dots and dashes day.month.year). One date in ten is held out: test
sentences are written from dates the model never saw in training.

    python examples/seq2seq.py                  # under a minute of CPU time
    python examples/seq2seq.py --quick          # a few seconds, for smoke tests
"""
import argparse
import datetime
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


QUICK = dict(steps=120, hidden=48, embed=16, batch=64, test_size=200, eval_every=60, lr=1e-2)

# ---- data --------------------------------------------------------------------------------

FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each format writes a date (d) with a month name (m), abbreviation (a), weekday (w), short weekday (s).
FORMATS = {
    "3rd of March 2019": lambda d, m, a, w, s: f"{ordinal(d.day)} of {m} {d.year}",
    "March 3, 2019": lambda d, m, a, w, s: f"{m} {d.day}, {d.year}",
    "march 3 2019": lambda d, m, a, w, s: f"{m.lower()} {d.day} {d.year}",
    "March 3rd, 2019": lambda d, m, a, w, s: f"{m} {ordinal(d.day)}, {d.year}",
    "Sunday, March 3, 2019": lambda d, m, a, w, s: f"{w}, {m} {d.day}, {d.year}",
    "Sun 3 Mar 2019": lambda d, m, a, w, s: f"{s} {d.day} {a} {d.year}",
    "3 Mar 19": lambda d, m, a, w, s: f"{d.day} {a} {d.year % 100:02d}",
    "3 MARCH 2019": lambda d, m, a, w, s: f"{d.day} {m.upper()} {d.year}",
    "Mar. 3, '19": lambda d, m, a, w, s: f"{a}. {d.day}, '{d.year % 100:02d}",
    "the 3rd of march, 2019": lambda d, m, a, w, s: f"the {ordinal(d.day)} of {m.lower()}, {d.year}",
    "03/03/19": lambda d, m, a, w, s: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
    "3/3/2019": lambda d, m, a, w, s: f"{d.month}/{d.day}/{d.year}",
    "03.03.2019": lambda d, m, a, w, s: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "3-3-2019": lambda d, m, a, w, s: f"{d.day}-{d.month}-{d.year}",
    "2019-3-3": lambda d, m, a, w, s: f"{d.year}-{d.month}-{d.day}",
    "2019/03/03": lambda d, m, a, w, s: f"{d.year}/{d.month:02d}/{d.day:02d}",
}
FORMAT_NAMES = list(FORMATS)


def write_date(date, fmt):
    """The date written in format `fmt` (a key of FORMATS)."""
    m = MONTHS[date.month - 1]
    w = DAYS[date.weekday()]
    return FORMATS[fmt](date, m, m[:3], w, w[:3])


SRC_CHARS = sorted(set("".join(write_date(datetime.date(2000, 1, 1) + datetime.timedelta(k), f)
                               for k in range(400) for f in FORMAT_NAMES)) | set("0123456789"))
SRC = {c: i + 1 for i, c in enumerate(SRC_CHARS)}  # 0 is padding
BOS, EOS = 0, 1
TGT_CHARS = "0123456789-"
TGT = {c: i + 2 for i, c in enumerate(TGT_CHARS)}
TGT_LEN = len("2019-03-03") + 1  # ten characters and EOS


def split_dates(rng, held_out=0.1):
    """Ordinals of the training dates and of the held-out test dates."""
    days = np.arange(FIRST.toordinal(), LAST.toordinal() + 1)
    test = rng.random(len(days)) < held_out
    return days[~test], days[test]


def make_examples(days, n, rng):
    """n (source text, ISO target, format name) triples from random dates in `days`."""
    out = []
    for day, f in zip(rng.choice(days, n), rng.integers(len(FORMAT_NAMES), size=n)):
        date = datetime.date.fromordinal(int(day))
        out.append((write_date(date, FORMAT_NAMES[f]), date.isoformat(), FORMAT_NAMES[f]))
    return out


def encode_sources(texts):
    """Padded (B, T) ids and lengths."""
    lengths = np.array([len(t) for t in texts])
    x = np.zeros((len(texts), lengths.max()), dtype=np.int64)
    for row, t in enumerate(texts):
        x[row, :len(t)] = [SRC[c] for c in t]
    return x, lengths


def encode_targets(isos):
    """Decoder inputs (BOS + target) and outputs (target + EOS), both (B, 11)."""
    y = np.array([[TGT[c] for c in iso] for iso in isos], dtype=np.int64)
    bos = np.full((len(isos), 1), BOS)
    eos = np.full((len(isos), 1), EOS)
    return np.concatenate([bos, y], axis=1), np.concatenate([y, eos], axis=1)


def training_batches(days, batch, rng):
    """Endless batches of fresh examples; each pool of 16 batches is sorted by source length."""
    while True:
        pool = sorted(make_examples(days, 16 * batch, rng), key=lambda e: len(e[0]))
        groups = [pool[i:i + batch] for i in range(0, len(pool), batch)]
        for k in rng.permutation(len(groups)):
            yield groups[k]


# ---- model -------------------------------------------------------------------------------

class DateTranslator(nn.Module):
    """Bidirectional GRU encoder -> context -> GRUCell decoder fed [previous char, context]."""

    def __init__(self, embed, hidden):
        self.src_embed = nn.Embedding(len(SRC) + 1, embed, padding_idx=0)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.tgt_embed = nn.Embedding(len(TGT) + 2, embed)
        self.cell = nn.GRUCell(embed + hidden, hidden)
        self.decoder = nn.Recurrent(self.cell)  # the same cell, run over a whole sequence
        self.head = nn.Linear(hidden, len(TGT) + 2)

    def encode(self, x, lengths):
        """x (B, T) ids -> context (B, H): both directions' final states merged."""
        _, h_n = self.encoder(self.src_embed(tg.Tensor(x)), lengths=lengths)
        return self.bridge(tg.cat([h_n[0], h_n[1]], axis=1)).tanh()

    def forward(self, x, lengths, y_in):
        """Teacher forcing: logits (B * 11, V) for every target position at once."""
        context = self.encode(x, lengths)
        B, T = y_in.shape
        emb = self.tgt_embed(tg.Tensor(y_in.T))  # (T, B, E)
        inputs = tg.cat([emb, context.unsqueeze(0).expand(T, B, context.shape[1])], axis=2)
        out, _ = self.decoder(inputs, context)  # (T, B, H)
        return self.head(out.transpose(0, 1).reshape(B * T, -1))

    @tg.no_grad()
    def translate(self, texts):
        """Greedy decoding: the cell steps in a loop, fed its own most likely character."""
        x, lengths = encode_sources(texts)
        context = self.encode(x, lengths)
        h, prev = context, np.full(len(texts), BOS)
        chars = []
        for _ in range(TGT_LEN):
            h = self.cell(tg.cat([self.tgt_embed(tg.Tensor(prev)), context], axis=1), h)
            prev = self.head(h).numpy().argmax(axis=1)
            chars.append(prev)
        chars = np.stack(chars, axis=1)
        inverse = {i: c for c, i in TGT.items()}
        out = []
        for row in chars:
            s = ""
            for i in row:
                if i == EOS:
                    break
                s += inverse.get(int(i), "?")
            out.append(s)
        return out


def evaluate(model, examples, batch=500):
    model.eval()
    predictions = []
    for i in range(0, len(examples), batch):
        predictions += model.translate([src for src, _, _ in examples[i:i + batch]])
    model.train()
    correct = np.array([p == iso for p, (_, iso, _) in zip(predictions, examples)])
    return float(correct.mean()), predictions, correct


# ---- main --------------------------------------------------------------------------------

def plot(path, history):
    plt = load_pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps, losses = zip(*history["loss"])
    ax1.plot(steps, losses, lw=0.8)
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("cross-entropy per character")
    ax1.set_title("training loss (teacher forcing)")
    steps, accs = zip(*history["test_acc"])
    ax2.plot(steps, accs, "o-", color="tab:red")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("exact-match accuracy")
    ax2.set_title("held-out dates, greedy decoding")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle("GRU encoder-decoder: human-written dates -> ISO 8601")
    return save_figure(fig, path, dpi=120)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1200, help="training steps (batches)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--embed", type=int, default=32, help="character embedding size")
    p.add_argument("--hidden", type=int, default=128, help="GRU hidden size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (decays to 10%% at the end)")
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    p.add_argument("--test-size", type=int, default=2000, help="held-out examples")
    p.add_argument("--eval-every", type=int, default=200, help="steps between held-out evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/seq2seq", help="folder for the plot and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out_dir = Path(args.out)
    start = time.perf_counter()

    train_days, test_days = split_dates(np.random.default_rng(12345))
    test = make_examples(test_days, args.test_size, np.random.default_rng(54321))
    print(f"{len(train_days):,} training dates, {len(test_days):,} held-out dates, {len(FORMATS)} formats; "
          f"source vocabulary {len(SRC)}, target vocabulary {len(TGT)}")
    for src, iso, _ in make_examples(train_days, 4, rng):
        print(f"  {src!r:>32} -> {iso}")

    model = DateTranslator(args.embed, args.hidden)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    # per step: constant, then a linear decay to lr / 10 over the second half
    schedule = optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 0.1 + 1.8 * (1 - (t + 1) / args.steps)))
    print(f"model: {sum(p.numel() for p in params):,} parameters\n{model}")

    history = {"loss": [], "test_acc": []}
    data = training_batches(train_days, args.batch, rng)
    bar = tqdm(range(1, args.steps + 1), desc="training", unit="step", disable=args.no_progress)
    avg = None
    for step in bar:
        batch = next(data)
        x, lengths = encode_sources([src for src, _, _ in batch])
        y_in, y_out = encode_targets([iso for _, iso, _ in batch])
        logits = model(x, lengths, y_in)
        loss = F.cross_entropy(logits, tg.Tensor(y_out.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        schedule.step()
        history["loss"].append((step, loss.item()))
        avg = loss.item() if avg is None else 0.95 * avg + 0.05 * loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            acc, _, _ = evaluate(model, test[:500])
            history["test_acc"].append((step, acc))
            bar.set_postfix(loss=f"{avg:.4f}", acc=f"{acc:.1%}")
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{avg:.4f}")
    bar.close()

    acc, predictions, correct = evaluate(model, test)
    char_acc = float(np.mean([sum(a == b for a, b in zip(p, iso)) / len(iso)
                              for p, (_, iso, _) in zip(predictions, test)]))
    print("\nheld-out examples (greedy decoding), one per format, then the first mistakes:")
    shown = {}  # format -> index of the example shown for it
    for k, ((src, iso, fmt), pred, ok) in enumerate(zip(test, predictions, correct)):
        if fmt not in shown and len(shown) < 8:
            shown[fmt] = k
            print(f"  {src!r:>32} -> {pred}  {'ok' if ok else 'WRONG, expected ' + iso}")
    wrong = [k for k in np.flatnonzero(~correct) if k not in shown.values()][:4]
    for k in wrong:
        print(f"  {test[k][0]!r:>32} -> {predictions[k]}  WRONG, expected {test[k][1]}")
    by_format = {f: [] for f in FORMAT_NAMES}
    for (_, _, fmt), ok in zip(test, correct):
        by_format[fmt].append(ok)
    by_format = {f: float(np.mean(v)) for f, v in by_format.items() if v}
    print("accuracy by format: " + ", ".join(f"{f!r} {a:.0%}" for f, a in by_format.items()))
    path = plot(out_dir / "training.png", history)
    if path is not None:
        print(f"training curves: {path}")
    elapsed = time.perf_counter() - start
    print(f"{args.steps} steps of {args.batch} examples in {elapsed:.0f} s")
    print(f"held-out exact-match accuracy {acc:.1%} on {len(test)} dates never seen in training "
          f"(characters right: {char_acc:.1%})")
    metrics = {"test_acc": acc, "char_acc": char_acc, "by_format": by_format, "seconds": elapsed,
               "loss": [v for _, v in history["loss"]], "test_acc_curve": history["test_acc"]}
    print(f"metrics: {write_metrics(out_dir, metrics)}")
    return metrics


if __name__ == "__main__":
    main()
