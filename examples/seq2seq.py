"""Translate dates written by people into ISO dates: a GRU encoder-decoder, with and without attention.

Many-to-many with different lengths: "3rd of March 2019", "03/03/19", "Sunday, March 3,
2019" or "3 MAR 19" go in, character by character, and "2019-03-03" comes out. A
bidirectional GRU reads the padded source (with `lengths=`). Two decoders learn from the
same batches for the same number of steps:

- plain: the encoder's two final states, merged by a Linear layer, start a GRUCell decoder
  and are fed to it at every step as one fixed context vector;
- attention: nn.AttentionDecoderCell (Luong et al. 2015, additive scores as Bahdanau et al.)
  reads every encoder position at every step, with padded positions masked out.

Both train with teacher forcing (the decoder runs as a layer, nn.Recurrent, over the target
shifted right by one) and decode with the library's greedy_decode and beam_search, which
take any decoder as a step function. The script reports exact-match accuracy on held-out
dates for each model and decoding, plots both learning curves, and draws the attention
weights of a few held-out dates.

Data is generated with `datetime` from a seeded generator: dates from 1950 to 2049 in
sixteen formats (two-digit years 50-99 mean 19xx, 00-49 mean 20xx; slashes are
month/day/year, dots and dashes day.month.year). One date in ten is held out: test
sentences are written from dates the model never saw in training.

    python examples/seq2seq.py                      # both decoders, 300 steps each: ~35 s of CPU time
    python examples/seq2seq.py --steps 1200         # long enough for the plain decoder too
    python examples/seq2seq.py --model attention --attention bilinear --beam-width 10
    python examples/seq2seq.py --quick              # a few seconds, for smoke tests
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
from tinygrad_seq.nn.attention import sequence_mask
from tinygrad_seq.nn.decoding import beam_search, greedy_decode, tile_beams


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


STEPS = 300
QUICK = dict(steps=120, hidden=48, embed=16, batch=64, test_size=200, eval_every=60, lr=1e-2, beam_width=3)

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


# ---- models ------------------------------------------------------------------------------

class Translator(nn.Module):
    """What both models share: character embeddings, the bidirectional GRU encoder, the output layer,
    and decoding through a step function (greedy or beam search). A subclass adds its decoder:
    forward (teacher forcing) and start (the step function and first state of a batch)."""

    def __init__(self, embed, hidden):
        self.src_embed = nn.Embedding(len(SRC) + 1, embed, padding_idx=0)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.tgt_embed = nn.Embedding(len(TGT) + 2, embed)
        self.head = nn.Linear(hidden, len(TGT) + 2)

    def encode(self, x, lengths):
        """x (B, S) ids -> memory (B, S, 2H): both directions at every position, zero past each
        length; and the first decoder state (B, H): both directions' final states merged."""
        memory, h_n = self.encoder(self.src_embed(tg.Tensor(x)), lengths=lengths)
        return memory, self.bridge(tg.cat([h_n[0], h_n[1]], axis=1)).tanh()

    def logits(self, out):
        """Decoder outputs (T, B, H) -> logits (B * T, V), rows in the order of the targets (B, T)."""
        T, B = out.shape[:2]
        return self.head(out.transpose(0, 1).reshape(B * T, -1))

    @tg.no_grad()
    def translate(self, texts, beam_width=1, length_penalty=0.0):
        """ISO strings for `texts`: greedy decoding, or beam search with beam_width > 1."""
        x, lengths = encode_sources(texts)
        step, state = self.start(x, lengths, beam_width)
        if beam_width == 1:
            sequences, _ = greedy_decode(step, state, BOS, EOS, TGT_LEN)
        else:
            best, _ = beam_search(step, state, BOS, EOS, beam_width, TGT_LEN, length_penalty)
            sequences = [hypotheses[0] for hypotheses in best]
        inverse = {i: c for c, i in TGT.items()}
        return ["".join(inverse.get(i, "?") for i in seq if i != EOS) for seq in sequences]


class PlainTranslator(Translator):
    """The encoder's merged final state starts a GRUCell decoder fed [previous char, that context]."""

    def __init__(self, embed, hidden):
        super().__init__(embed, hidden)
        self.cell = nn.GRUCell(embed + hidden, hidden)

    def forward(self, x, lengths, y_in):
        """Teacher forcing: logits (B * 11, V) for every target position at once."""
        _, context = self.encode(x, lengths)
        B, T = y_in.shape
        emb = self.tgt_embed(tg.Tensor(y_in.T))  # (T, B, E)
        inputs = tg.cat([emb, context.unsqueeze(0).expand(T, B, context.shape[1])], axis=2)
        out, _ = nn.Recurrent(self.cell)(inputs, context)  # the cell, run over the whole target
        return self.logits(out)

    def start(self, x, lengths, beam_width):
        _, context = self.encode(x, lengths)
        beams = tile_beams(context, beam_width)  # row b * K + k is beam k of row b

        def step(tokens, h):
            h = self.cell(tg.cat([self.tgt_embed(tokens), beams], axis=1), h)
            return self.head(h).log_softmax(-1), h
        return step, context


class AttentionTranslator(Translator):
    """An attention decoder (nn.AttentionDecoderCell) reads every encoder position at every step."""

    def __init__(self, embed, hidden, attention="additive"):
        super().__init__(embed, hidden)
        scores = {"additive": nn.AdditiveAttention(hidden, 2 * hidden, hidden),
                  "bilinear": nn.BilinearAttention(hidden, 2 * hidden)}[attention]
        self.cell = nn.AttentionDecoderCell(embed, hidden, 2 * hidden, attention=scores)

    def forward(self, x, lengths, y_in):
        memory, h0 = self.encode(x, lengths)
        decoder = self.cell.attending(memory, sequence_mask(lengths, x.shape[1]))
        out, _ = nn.Recurrent(decoder)(self.tgt_embed(tg.Tensor(y_in.T)), decoder.initial_state(len(x), h0))
        return self.logits(out)

    def start(self, x, lengths, beam_width, weights=None):
        """The step function reads the memory tiled for the beams; `weights`, a list, collects each
        step's attention weights (B * K, S)."""
        memory, h0 = self.encode(x, lengths)
        mask = sequence_mask(lengths, x.shape[1])
        decoder = self.cell.attending(tile_beams(memory, beam_width), tile_beams(mask, beam_width))

        def step(tokens, state):
            state = decoder(self.tgt_embed(tokens), state)
            if weights is not None:
                weights.append(state[-1].numpy())
            return self.head(state[0]).log_softmax(-1), state
        return step, decoder.initial_state(len(x), h0)  # B rows: beam_search tiles the state


def evaluate(model, examples, beam_width=1, length_penalty=0.0, batch=500):
    """Exact-match accuracy, predictions and per-example correctness."""
    model.eval()
    predictions = []
    for i in range(0, len(examples), batch):
        predictions += model.translate([src for src, _, _ in examples[i:i + batch]], beam_width, length_penalty)
    model.train()
    correct = np.array([p == iso for p, (_, iso, _) in zip(predictions, examples)])
    return float(correct.mean()), predictions, correct


def train(name, model, args, train_days, test):
    """args.steps Adam steps on batches drawn from args.seed (the same batches for every model);
    returns the loss and held-out accuracy (greedy, 500 dates) histories."""
    rng = np.random.default_rng(args.seed)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    # per step: constant, then a linear decay to lr / 10 over the second half
    schedule = optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 0.1 + 1.8 * (1 - (t + 1) / args.steps)))
    history = {"loss": [], "test_acc": []}
    data = training_batches(train_days, args.batch, rng)
    bar = tqdm(range(1, args.steps + 1), desc=name, unit="step", disable=args.no_progress)
    avg = None
    for step in bar:
        batch = next(data)
        x, lengths = encode_sources([src for src, _, _ in batch])
        y_in, y_out = encode_targets([iso for _, iso, _ in batch])
        loss = F.cross_entropy(model(x, lengths, y_in), tg.Tensor(y_out.reshape(-1)))
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
    return history


# ---- main --------------------------------------------------------------------------------

def plot_training(path, histories):
    plt = load_pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        steps, losses = zip(*history["loss"])
        ax1.plot(steps, losses, lw=0.8, label=name)
        steps, accs = zip(*history["test_acc"])
        ax2.plot(steps, accs, "o-", label=name)
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("cross-entropy per character")
    ax1.set_title("training loss (teacher forcing)")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("exact-match accuracy")
    ax2.set_title("500 held-out dates, greedy decoding")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("GRU encoder-decoders: human-written dates -> ISO 8601")
    return save_figure(fig, path, dpi=120)


def plot_attention(path, model, examples):
    """Heatmaps of the attention weights (output character x source character) of greedy decoding."""
    plt = load_pyplot("the attention plot")
    if plt is None:
        return None
    texts = [src for src, _, _ in examples]
    x, lengths = encode_sources(texts)
    weights = []
    model.eval()
    with tg.no_grad():
        step, state = model.start(x, lengths, 1, weights)
        sequences, _ = greedy_decode(step, state, BOS, EOS, TGT_LEN)
    model.train()
    inverse = {i: c for c, i in TGT.items()}
    fig, axes = plt.subplots(1, len(texts), figsize=(3.6 * len(texts) + 1, 3.8), squeeze=False)
    for k, (ax, text, seq) in enumerate(zip(axes[0], texts, sequences)):
        out = [inverse.get(i, "<end>") for i in seq]
        grid = np.stack([w[k, :len(text)] for w in weights[:len(out)]])
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(text)), [c if c != " " else "\u2423" for c in text], fontsize=7)
        ax.set_yticks(range(len(out)), out, fontsize=7)
        ax.set_xlabel("source character")
        ax.set_ylabel("output character")
        ax.set_title(repr(text), fontsize=8)
    fig.colorbar(image, ax=axes[0, -1], label="attention weight")
    fig.suptitle("attention weights while decoding held-out dates (greedy)")
    return save_figure(fig, path, dpi=120)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=["both", "plain", "attention"], default="both",
                   help="which decoder(s) to train and compare")
    p.add_argument("--attention", choices=["additive", "bilinear"], default="additive",
                   help="the attention score: Bahdanau's additive or Luong's general (bilinear)")
    p.add_argument("--beam-width", type=int, default=5, help="beam search width (1: greedy only)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="GNMT's alpha for beam search")
    p.add_argument("--steps", type=int, default=STEPS, help="training steps (batches) for each model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--embed", type=int, default=32, help="character embedding size")
    p.add_argument("--hidden", type=int, default=128, help="GRU hidden size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (decays to 10%% at the end)")
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    p.add_argument("--test-size", type=int, default=2000, help="held-out examples")
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/seq2seq", help="folder for the plots and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    args = p.parse_args(argv)
    if args.beam_width < 1:
        p.error("--beam-width must be at least 1")
    return args


def report(name, acc, predictions, correct, test):
    """Print one model's held-out examples (one per format, then the first mistakes) and accuracy by format."""
    print(f"\n{name}: held-out examples (greedy decoding), one per format, then the first mistakes:")
    shown = {}  # format -> index of the example shown for it
    for k, ((src, iso, fmt), pred, ok) in enumerate(zip(test, predictions, correct)):
        if fmt not in shown and len(shown) < 6:
            shown[fmt] = k
            print(f"  {src!r:>32} -> {pred}  {'ok' if ok else 'WRONG, expected ' + iso}")
    for k in [k for k in np.flatnonzero(~correct) if k not in shown.values()][:3]:
        print(f"  {test[k][0]!r:>32} -> {predictions[k]}  WRONG, expected {test[k][1]}")
    by_format = {f: [] for f in FORMAT_NAMES}
    for (_, _, fmt), ok in zip(test, correct):
        by_format[fmt].append(ok)
    by_format = {f: float(np.mean(v)) for f, v in by_format.items() if v}
    print("accuracy by format: " + ", ".join(f"{f!r} {a:.0%}" for f, a in by_format.items()))
    return by_format


def main(argv=None):
    args = parse_args(argv)
    out_dir = Path(args.out)
    start = time.perf_counter()
    train_days, test_days = split_dates(np.random.default_rng(12345))
    test = make_examples(test_days, args.test_size, np.random.default_rng(54321))
    print(f"{len(train_days):,} training dates, {len(test_days):,} held-out dates, {len(FORMATS)} formats; "
          f"source vocabulary {len(SRC)}, target vocabulary {len(TGT)}")
    for src, iso, _ in make_examples(train_days, 4, np.random.default_rng(args.seed)):
        print(f"  {src!r:>32} -> {iso}")

    names = ["plain", "attention"] if args.model == "both" else [args.model]
    models, histories, results, seconds = {}, {}, {}, {}
    for name in names:
        tg.manual_seed(args.seed)
        models[name] = PlainTranslator(args.embed, args.hidden) if name == "plain" else \
            AttentionTranslator(args.embed, args.hidden, args.attention)
        print(f"\n{name} model: {sum(p.numel() for p in models[name].parameters()):,} parameters\n{models[name]}")
        began = time.perf_counter()
        histories[name] = train(name, models[name], args, train_days, test)
        seconds[name] = time.perf_counter() - began
        acc, predictions, correct = evaluate(models[name], test)
        char_acc = float(np.mean([sum(a == b for a, b in zip(p, iso)) / len(iso)
                                  for p, (_, iso, _) in zip(predictions, test)]))
        results[name] = {"greedy_acc": acc, "char_acc": char_acc,
                         "by_format": report(name, acc, predictions, correct, test)}
        if args.beam_width > 1:
            results[name]["beam_acc"] = evaluate(models[name], test, args.beam_width, args.length_penalty)[0]

    paths = [plot_training(out_dir / "training.png", histories)]
    if "attention" in models:
        shown = [test[k] for k in range(0, len(test), max(1, len(test) // 4))][:4]
        paths.append(plot_attention(out_dir / "attention.png", models["attention"], shown))
    for path in paths:
        if path is not None:
            print(f"plot: {path}")
    elapsed = time.perf_counter() - start
    print(f"\nheld-out exact-match accuracy on {len(test)} dates never seen in training, after {args.steps} steps "
          f"of {args.batch} examples each ({elapsed:.0f} s in all):")
    for name in names:
        r = results[name]
        print(f"  {name + ' decoder':>18}, greedy: {r['greedy_acc']:6.1%}  (characters right: {r['char_acc']:.1%}; "
              f"trained in {seconds[name]:.0f} s)")
        if "beam_acc" in r:
            print(f"  {name + ' decoder':>18}, beam {args.beam_width}: {r['beam_acc']:6.1%}")
    metrics = {"steps": args.steps, "beam_width": args.beam_width, "attention": args.attention, "seconds": elapsed,
               "models": {name: {**results[name], "seconds": seconds[name],
                                 "loss": [v for _, v in histories[name]["loss"]],
                                 "test_acc_curve": histories[name]["test_acc"]} for name in names}}
    print(f"metrics: {write_metrics(out_dir, metrics)}")
    return metrics


if __name__ == "__main__":
    main()
