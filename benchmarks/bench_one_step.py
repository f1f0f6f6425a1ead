"""Time a one-token call of nn.GRU / nn.LSTM against the matching nn.GRUCell / nn.LSTMCell call.

A decoder fed token by token (PyTorch's translation tutorial) calls the layer with a sequence of
one step: x (1, B, I) and hx (1, B, H). The cell does the same step on x (B, I) and (B, H).
Both get the same weights and data, with the parameters requiring grad (so each call records
its ops), and run in one process in interleaved rounds; the median time per call over the
rounds is reported with the ratio layer / cell and its spread (min-max over rounds).

    python benchmarks/bench_one_step.py                    # B = 1, H = 256, 1 BLAS thread
    python benchmarks/bench_one_step.py --batch 16 --hidden 512 --threads 2
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root, for an uninstalled checkout

import tinygrad_seq as tg  # noqa: E402
from tinygrad_seq import nn  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256, help="hidden size, also the input size")
    p.add_argument("--threads", type=int, default=1, help="NumPy's BLAS threads (tg.set_num_threads)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=300, help="calls per round and per side")
    return p.parse_args(argv)


def pair(kind, B, H):
    """(layer call, cell call) on the same weights and data."""
    layer, cell = getattr(nn, kind)(H, H), getattr(nn, kind + "Cell")(H, H)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).array[...] = getattr(layer, name + "_l0").array
    x, h, c = tg.randn(1, B, H), tg.randn(1, B, H), tg.randn(1, B, H)
    x_t, h_t, c_t = x[0], h[0], c[0]  # the cell's own shapes, made once
    if kind == "LSTM":
        return (lambda: layer(x, (h, c))), (lambda: cell(x_t, (h_t, c_t)))
    return (lambda: layer(x, h)), (lambda: cell(x_t, h_t))


def main(argv=None):
    args = parse_args(argv)
    tg.set_num_threads(args.threads)
    tg.manual_seed(0)
    print(f"one-token calls: B = {args.batch}, H = {args.hidden}, {args.threads} BLAS thread(s), "
          f"{args.rounds} rounds of {args.calls} calls; microseconds per call (median over rounds)")
    print("kind  layer us  cell us  layer / cell (min-max)")
    for kind in ("GRU", "LSTM"):
        calls = dict(zip(("layer", "cell"), pair(kind, args.batch, args.hidden)))
        for call in calls.values():
            for _ in range(50):
                call()
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    call()
                times[name].append((time.perf_counter() - start) / args.calls * 1e6)
        ratios = [a / b for a, b in zip(times["layer"], times["cell"])]
        print(f"{kind:<5} {statistics.median(times['layer']):8.1f} {statistics.median(times['cell']):8.1f}  "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
