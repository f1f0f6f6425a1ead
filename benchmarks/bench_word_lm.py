"""Time one training step of a word-level LSTM language model: tinygrad_seq vs PyTorch.

The model is the classic PyTorch word_language_model: Embedding(vocab, 128) -> 2-layer
LSTM(128) -> Linear(128, vocab), log_softmax + NLL over bptt x batch = 35 x 20 targets,
vocab 8,000, float32. Two steps are timed for each library:

    head   the non-recurrent part alone: embedding -> decoder -> log_softmax + NLL -> backward
           (the embedding output goes straight to the decoder, embedding size = hidden size)
    step   the whole model: embedding -> LSTM -> decoder -> loss -> backward

Both libraries get identical weights and data and run in this one process, interleaved:
each round times every (library, step) once, in rotating order, and the median over rounds
is reported with the spread (min-max), so machine noise hits them alike. Before each timed
step the harness pauses (--settle) so the other library's spinning threads are idle.

    python benchmarks/bench_word_lm.py                 # both libraries (torch optional)
    python benchmarks/bench_word_lm.py --quick --no-torch
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root, for an uninstalled checkout

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds to pause before each timed step, so the previous step's OpenMP/BLAS "
                        "threads stop spinning (default 0.2 with the torch column, 0 without)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 2
    return args


def make_weights(args):
    """float32 weights in PyTorch's layout and names, and a batch of word ids (T, B) with targets."""
    rng = np.random.default_rng(args.seed)
    V, H = args.vocab, args.hidden
    u = lambda *shape: rng.uniform(-0.1, 0.1, shape).astype(np.float32)  # noqa: E731
    weights = {"encoder.weight": u(V, H), "decoder.weight": u(V, H), "decoder.bias": np.zeros(V, np.float32)}
    for k in range(2):
        for name, shape in (("weight_ih", (4 * H, H)), ("weight_hh", (4 * H, H)), ("bias_ih", (4 * H,)),
                            ("bias_hh", (4 * H,))):
            weights[f"rnn.{name}_l{k}"] = u(*shape)
    words = rng.integers(0, V, (args.bptt + 1, args.batch))
    return weights, words[:-1], words[1:].reshape(-1)


class Ours:
    name = "tinygrad_seq"

    def __init__(self, args, weights, x, y):
        import tinygrad_seq as tg
        from tinygrad_seq import nn
        import tinygrad_seq.nn.functional as F
        self.tg, self.F = tg, F
        self.model = nn.ModuleDict({"encoder": nn.Embedding(args.vocab, args.hidden),
                                    "rnn": nn.LSTM(args.hidden, args.hidden, num_layers=2),
                                    "decoder": nn.Linear(args.hidden, args.vocab)})
        self.model.load_state_dict(weights)
        self.x, self.y = tg.from_numpy(x), tg.from_numpy(y)

    def _loss(self, hidden):
        logits = self.model["decoder"](hidden)
        return self.F.nll_loss(self.F.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=1), self.y)

    def head(self):
        self.model.zero_grad()
        loss = self._loss(self.model["encoder"](self.x))
        loss.backward()
        return loss.item()

    def step(self):
        self.model.zero_grad()
        output, _ = self.model["rnn"](self.model["encoder"](self.x))
        loss = self._loss(output)
        loss.backward()
        return loss.item()


class Torch:
    name = "torch"

    def __init__(self, args, weights, x, y):
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        self.torch, self.F = torch, torch.nn.functional
        self.model = torch.nn.ModuleDict({"encoder": torch.nn.Embedding(args.vocab, args.hidden),
                                          "rnn": torch.nn.LSTM(args.hidden, args.hidden, num_layers=2),
                                          "decoder": torch.nn.Linear(args.hidden, args.vocab)})
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def _loss(self, hidden):
        logits = self.model["decoder"](hidden)
        return self.F.nll_loss(self.F.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=1), self.y)

    def head(self):
        self.model.zero_grad()
        loss = self._loss(self.model["encoder"](self.x))
        loss.backward()
        return loss.item()

    def step(self):
        self.model.zero_grad()
        output, _ = self.model["rnn"](self.model["encoder"](self.x))
        loss = self._loss(output)
        loss.backward()
        return loss.item()


def main(argv=None):
    args = parse_args(argv)
    weights, x, y = make_weights(args)
    impls = [Ours(args, weights, x, y)]
    if not args.no_torch:
        try:
            impls.append(Torch(args, weights, x, y))
        except ImportError as e:
            print(f"torch column skipped ({e})")
    for impl in impls:  # warm up, and check that both compute the same loss
        impl.step(), impl.head()
    losses = {impl.name: (impl.head(), impl.step()) for impl in impls}
    print(f"word LM: vocab {args.vocab}, 2-layer LSTM {args.hidden}, bptt {args.bptt}, batch {args.batch}, "
          f"float32; {args.rounds} rounds; loss (head, step) "
          + ", ".join(f"{k} {a:.5f} {b:.5f}" for k, (a, b) in losses.items()))
    settle = args.settle if args.settle is not None else (0.2 if len(impls) == 2 else 0.0)
    cases = [(impl, part) for impl in impls for part in ("head", "step")]
    times = {(impl.name, part): [] for impl, part in cases}
    for r in range(args.rounds):
        for impl, part in cases[r % len(cases):] + cases[:r % len(cases)]:
            fn = getattr(impl, part)
            time.sleep(settle)
            start = time.perf_counter()
            fn()
            times[impl.name, part].append(time.perf_counter() - start)
    print(f"{'library':<14}{'part':<6}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    for (name, part), ts in times.items():
        print(f"{name:<14}{part:<6}{np.median(ts) * 1e3:>11.2f}{min(ts) * 1e3:>9.2f}{max(ts) * 1e3:>9.2f}")
    if len(impls) == 2:
        for part, what in (("head", "non-recurrent part (embedding, decoder, loss)"), ("step", "whole step")):
            ratio = np.median(times["tinygrad_seq", part]) / np.median(times["torch", part])
            print(f"tinygrad_seq / torch, {what}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
