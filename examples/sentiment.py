"""Sentiment classification with a bidirectional LSTM over padded batches.

Many-to-one: a sentence goes in, one label (negative / positive) comes out. Words are
embedded (Embedding with padding_idx=0), a bidirectional LSTM reads each padded batch
with `lengths=` so every sequence stops at its own last word, and the final hidden
states of both directions, concatenated, go through a Linear layer to two classes.

The data is the UCI "Sentiment Labelled Sentences" set (3,000 review sentences from
Amazon, IMDB and Yelp). It is split, stratified and with a fixed seed, into 80% for
training (of which a tenth is a validation set that picks the best epoch) and 20% held
out for the test. The script reports held-out accuracy beside a bag-of-words logistic
regression trained with the same framework, and plots the training curves.

    python examples/sentiment.py                      # the copy in examples/data; well under a minute
    python examples/sentiment.py --data path/to/sentiment-labelled-sentences
    TINYGRAD_SEQ_DATA=path/to/data python examples/sentiment.py   # data/sentiment-labelled-sentences

Batches come from tinygrad_seq.data: a BucketBatchSampler groups sentences of similar
length (a new shuffle each epoch) and PadCollate pads them and returns their lengths.
"""
import argparse
import json
import os
import re
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
from tinygrad_seq.data import BucketBatchSampler, DataLoader, PadCollate

# Where the data set is looked for unless --data says: $TINYGRAD_SEQ_DATA/sentiment-labelled-sentences, else
# the copy that ships beside this script, data/sentiment-labelled-sentences (CC BY 4.0: see its README.md).
DATA_ENV = "TINYGRAD_SEQ_DATA"
DATA_NAME = "sentiment-labelled-sentences"


def default_data_dir():
    root = os.environ.get(DATA_ENV)
    return Path(root) / DATA_NAME if root else Path(__file__).resolve().parent / "data" / DATA_NAME

FILES = ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt")
SPLIT_SEED = 20150810  # the train/test split is fixed, whatever --seed says
PAD, UNK = 0, 1

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


QUICK = dict(epochs=3, embed=32, hidden=32, lr=1e-2, bow_epochs=30)


# ---- data --------------------------------------------------------------------------------

def load_sentences(folder):
    """(sentences, labels) from the three files of the data set, or exit saying where to get it."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        sys.exit(f"sentiment.py: cannot find {', '.join(missing)} in {folder}.\n"
                 "Download the UCI Machine Learning Repository data set \"Sentiment Labelled Sentences\"\n"
                 "(https://archive.ics.uci.edu/dataset/331/sentiment+labelled+sentences), unpack it and\n"
                 f"pass its folder with --data DIR, or set {DATA_ENV}=ROOT with the unpacked folder at\n"
                 f"ROOT/{DATA_NAME} (it holds amazon_cells_labelled.txt, imdb_labelled.txt and\n"
                 "yelp_labelled.txt).")
    sentences, labels = [], []
    for name in FILES:
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                text, label = line.rsplit("\t", 1)
                sentences.append(text)
                labels.append(int(label))
    return sentences, np.array(labels, dtype=np.int64)


def tokenize(sentence):
    """Lower-case words (letters, digits and apostrophes)."""
    return re.findall(r"[a-z0-9']+", sentence.lower())


def stratified_split(labels, fraction, rng):
    """Indices (rest, held) with `fraction` of every class held out."""
    rest, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * fraction))
        held.extend(idx[:n])
        rest.extend(idx[n:])
    return rng.permutation(rest), rng.permutation(held)


def build_vocab(token_lists, min_count):
    """word -> id for words seen at least min_count times (0 is padding, 1 unknown)."""
    counts = {}
    for tokens in token_lists:
        for w in tokens:
            counts[w] = counts.get(w, 0) + 1
    words = sorted(w for w, n in counts.items() if n >= min_count)
    return {w: i + 2 for i, w in enumerate(words)}


def encode(tokens, vocab, max_len):
    ids = [vocab.get(w, UNK) for w in tokens[:max_len]]
    return ids or [UNK]  # an empty sentence still has one step


def examples(seqs, labels):
    """A list of (word ids, label) pairs: a list is a dataset (it has __getitem__ and __len__)."""
    return [(np.array(ids, dtype=np.int64), int(label)) for ids, label in zip(seqs, labels)]


def loader(seqs, labels, batch_size, seed=None):
    """Batches (x (B, T) padded word ids, lengths (B,), labels (B,)) of Tensors.

    With a seed: shuffled each epoch, sentences of similar length batched together (within
    pools of 20 batches), so that padding is small but the order random.
    """
    if seed is None:
        sampler = BucketBatchSampler([len(s) for s in seqs], batch_size, shuffle=False)
    else:
        sampler = BucketBatchSampler([len(s) for s in seqs], batch_size, pool_batches=20, seed=seed)
    return DataLoader(examples(seqs, labels), batch_sampler=sampler, collate_fn=PadCollate(batch_first=True,
                                                                                            padding_value=PAD))


# ---- models ------------------------------------------------------------------------------

# --cell: nn.LSTM, or nn.Recurrent over one of these cells per direction (input size, hidden size -> cell)
CELLS = {
    "layernorm": lambda i, h: nn.LayerNormLSTMCell(i, h),  # Ba et al. 2016
    "peephole": lambda i, h: nn.PeepholeLSTMCell(i, h),  # Gers et al. 2002
    "variational": lambda i, h: nn.VariationalDropout(nn.LSTMCell(i, h), dropout=0.25, recurrent_dropout=0.25),
    "zoneout": lambda i, h: nn.Zoneout(nn.LSTMCell(i, h), (0.05, 0.5)),  # rates for (h, c)
}


class BiLSTMClassifier(nn.Module):
    """Embedding(padding_idx=0) -> bidirectional LSTM -> [h_forward, h_backward] -> Linear(2)."""

    def __init__(self, vocab_size, embed, hidden, dropout, cell="lstm"):
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        if cell == "lstm":
            self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        else:
            self.lstm = nn.Recurrent(CELLS[cell](embed, hidden), CELLS[cell](embed, hidden), batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, x, lengths):
        """x: (B, T) word ids, lengths: (B,) -> logits (B, 2)."""
        _, final = self.lstm(self.drop(self.embed(x)), lengths=lengths)
        h = final[0] if isinstance(self.lstm, nn.LSTM) else [state[0] for state in final]  # (forward, backward)
        return self.head(self.drop(tg.cat([h[0], h[1]], axis=1)))


def bag_of_words(seqs, vocab_size):
    """Binary (N, V) word-presence vectors (padding and unknown columns left at zero)."""
    out = np.zeros((len(seqs), vocab_size), dtype=np.float32)
    for row, ids in enumerate(seqs):
        out[row, ids] = 1.0
    out[:, :2] = 0.0
    return out


def accuracy(logits, labels):
    return float((logits.numpy().argmax(axis=1) == labels).mean())


def train_bow(train, val, test, vocab_size, args):
    """Logistic regression (Linear + cross_entropy) on binary bag-of-words vectors, full batch."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = [(tg.Tensor(bag_of_words(s, vocab_size)), y)
                                                for s, y in (train, val, test)]
    model = nn.Linear(vocab_size, 2)
    opt = optim.Adam(model.parameters(), lr=args.bow_lr, weight_decay=args.bow_weight_decay)
    best = (-1.0, None)
    for _ in tqdm(range(args.bow_epochs), desc="bag of words", unit="epoch", leave=False, disable=args.no_progress):
        loss = F.cross_entropy(model(x_tr), tg.Tensor(y_tr))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with tg.no_grad():
            val_acc = accuracy(model(x_va), y_va)
        if val_acc > best[0]:
            best = (val_acc, model.state_dict())
    model.load_state_dict(best[1])
    with tg.no_grad():
        return accuracy(model(x_te), y_te)


# ---- training ----------------------------------------------------------------------------

@tg.no_grad()
def evaluate(model, seqs, labels, batch_size=256):
    model.eval()
    total_loss, correct = 0.0, 0
    for x, lengths, y in loader(seqs, labels, batch_size):
        logits = model(x, lengths)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
    model.train()
    return total_loss / len(seqs), correct / len(seqs)


def plot(path, history, bow_acc, test_acc):
    plt = load_pyplot()
    if plt is None:
        return None
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history["train_loss"], "o-", label="train")
    ax1.plot(epochs, history["val_loss"], "o-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_title("loss")
    ax2.plot(epochs, history["train_acc"], "o-", label="train")
    ax2.plot(epochs, history["val_acc"], "o-", label="validation")
    ax2.axhline(test_acc, color="tab:red", ls="--", label=f"BiLSTM held-out test ({test_acc:.1%})")
    ax2.axhline(bow_acc, color="gray", ls=":", label=f"bag-of-words test ({bow_acc:.1%})")
    ax2.axhline(0.5, color="black", lw=0.5)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_title("accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("BiLSTM sentiment classifier, Sentiment Labelled Sentences")
    return save_figure(fig, path, dpi=120)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(default_data_dir()),
                   help=f"folder with the three *_labelled.txt files (default: ${DATA_ENV}/{DATA_NAME}, "
                        f"else data/{DATA_NAME} beside this script)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--embed", type=int, default=64, help="word embedding size")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size per direction")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout on embeddings and on the final states")
    p.add_argument("--cell", choices=["lstm"] + list(CELLS), default="lstm",
                   help="nn.LSTM, or nn.Recurrent over LayerNormLSTMCell, PeepholeLSTMCell, or an LSTMCell with "
                        "VariationalDropout (inputs 0.25, h 0.25) or Zoneout (h 0.05, c 0.5)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam (L2) weight decay")
    p.add_argument("--clip", type=float, default=5.0, help="max gradient norm")
    p.add_argument("--min-count", type=int, default=2, help="rarer training words become <unk>")
    p.add_argument("--max-len", type=int, default=80, help="words kept per sentence")
    p.add_argument("--bow-epochs", type=int, default=150, help="full-batch steps of the bag-of-words baseline")
    p.add_argument("--bow-lr", type=float, default=1e-2)
    p.add_argument("--bow-weight-decay", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/sentiment", help="folder for the plot and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # --quick changes the defaults; flags given explicitly still win
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tg.manual_seed(args.seed)
    out_dir = Path(args.out)
    start = time.perf_counter()

    sentences, labels = load_sentences(args.data)
    tokens = [tokenize(s) for s in sentences]
    split_rng = np.random.default_rng(SPLIT_SEED)
    rest, test_idx = stratified_split(labels, 0.2, split_rng)
    rest_pos, val_pos = stratified_split(labels[rest], 0.1, split_rng)
    train_idx, val_idx = rest[rest_pos], rest[val_pos]
    vocab = build_vocab([tokens[k] for k in train_idx], args.min_count)
    vocab_size = len(vocab) + 2
    encoded = [encode(t, vocab, args.max_len) for t in tokens]
    split = {name: ([encoded[k] for k in idx], labels[idx])
             for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    print(f"{len(sentences)} sentences: {len(train_idx)} train, {len(val_idx)} validation, "
          f"{len(test_idx)} test; vocabulary {vocab_size} (from the training split)")

    bow_acc = train_bow(split["train"], split["val"], split["test"], vocab_size, args)
    print(f"bag-of-words logistic regression: held-out test accuracy {bow_acc:.1%}")

    model = BiLSTMClassifier(vocab_size, args.embed, args.hidden, args.dropout, args.cell)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    print(f"model: {sum(p.numel() for p in params):,} parameters\n{model}")
    history = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    best = (-1.0, 0, None)
    train_batches = loader(*split["train"], args.batch, seed=args.seed)  # a new order every epoch
    for epoch in range(1, args.epochs + 1):
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(train_batches, desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False,
                   disable=args.no_progress)
        for x, lengths, y in bar:
            logits = model(x, lengths)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            total_loss += loss.item() * y.shape[0]
            correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
            seen += y.shape[0]
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.1%}")
        bar.close()
        val_loss, val_acc = evaluate(model, *split["val"])
        for key, value in (("train_loss", total_loss / seen), ("train_acc", correct / seen),
                           ("val_loss", val_loss), ("val_acc", val_acc)):
            history[key].append(value)
        if val_acc > best[0]:
            best = (val_acc, epoch, model.state_dict())
        tqdm.write(f"epoch {epoch:2d}: train loss {total_loss / seen:.3f} acc {correct / seen:.1%} | "
                   f"validation loss {val_loss:.3f} acc {val_acc:.1%}")

    model.load_state_dict(best[2])  # the epoch with the best validation accuracy
    _, test_acc = evaluate(model, *split["test"])
    path = plot(out_dir / "curves.png", history, bow_acc, test_acc)
    if path is not None:
        print(f"training curves: {path}")
    elapsed = time.perf_counter() - start
    print(f"finished in {elapsed:.0f} s; best validation accuracy {best[0]:.1%} at epoch {best[1]}")
    print(f"held-out test accuracy: BiLSTM {test_acc:.1%}, bag-of-words logistic regression {bow_acc:.1%} "
          f"({len(test_idx)} sentences, chance 50%)")
    metrics = {"test_acc": test_acc, "bow_acc": bow_acc, "best_epoch": best[1], "seconds": elapsed, **history}
    print(f"metrics: {write_metrics(out_dir, metrics)}")
    return metrics


if __name__ == "__main__":
    main()
