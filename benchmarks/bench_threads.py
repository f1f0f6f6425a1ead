"""How many BLAS threads should tinygrad_seq use? Time recurrent workloads at 1..N threads,
on the machine as it is and with busy-loop processes competing for every core.

Workloads: the README's 20-line LSTM (200 steps of T=30, B=64, hidden 32: small matmuls,
mostly per-op overhead), and one training step of an LSTM at bench_recurrent's sizes: small
(T=50, B=16, 32 -> 64), medium (T=100, B=64, 128 -> 256), large (T=100, B=64, 512 -> 1024:
matrix multiplies) and long (T=1000, B=8, 16 -> 64). Thread counts are switched with
tg.set_num_threads inside one process, interleaved round by round; the median is reported.
"default" is the library's own policy, as a program that never calls set_num_threads gets it.

    python benchmarks/bench_threads.py                 # idle, then loaded (one busy loop per core)
    python benchmarks/bench_threads.py --rounds 5 --workloads readme,medium
    ../shared/tools/with-load -- python benchmarks/bench_threads.py --load 0   # BLAS jobs as the load

The busy loops are child processes that stop themselves after --load-seconds at most and are
terminated (by their pid) as soon as the loaded measurement ends. `uptime`'s load average is
printed with each table: on a shared machine, say what else was running.
"""
import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

import tinygrad_seq as tg  # noqa: E402
from tinygrad_seq import functional as F  # noqa: E402
from tinygrad_seq import nn, optim  # noqa: E402


def readme_lstm():
    """The README's 'Training an LSTM in 20 lines', 200 steps."""
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 64, 1)).astype(np.float32)
    y = (x.sum(axis=(0, 2)) > 0).astype(np.int64)
    lstm, head = nn.LSTM(1, 32), nn.Linear(32, 2)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-2)
    for _ in range(200):
        output, (h_n, _) = lstm(tg.Tensor(x))
        loss = F.cross_entropy(head(h_n[-1]), tg.Tensor(y))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, max_norm=1.0)
        opt.step()


def lstm_step(T, B, I, H):
    tg.manual_seed(0)
    lstm = nn.LSTM(I, H)
    opt = optim.SGD(lstm.parameters(), lr=1e-3)
    x = tg.randn(T, B, I)

    def step():
        output, _ = lstm(x)
        opt.zero_grad()
        (output * output).mean().backward()
        opt.step()
    return step


WORKLOADS = {"readme": lambda: readme_lstm, "small": lambda: lstm_step(50, 16, 32, 64),
             "medium": lambda: lstm_step(100, 64, 128, 256), "large": lambda: lstm_step(100, 64, 512, 1024),
             "long": lambda: lstm_step(1000, 8, 16, 64)}
START_THREADS = tg.get_num_threads()  # NumPy's BLAS as the process found it


def use_threads(n):
    """n BLAS threads through tg.set_num_threads, or "default": what a program that never calls it gets
    (NumPy's BLAS as it started, and the library's own thread policy, tinygrad_seq/threads.py)."""
    if n == "default":
        tg.threads._chosen = None  # the library's state before any set_num_threads call
        threadpoolctl.threadpool_limits(START_THREADS, user_api="blas")  # BLAS back to its starting count
    else:
        tg.set_num_threads(n)


def busy(deadline):
    while time.time() < deadline:
        pass


def measure(names, threads, rounds):
    fns = {name: WORKLOADS[name]() for name in names}
    times = {(name, n): [] for name in names for n in threads}
    for name, fn in fns.items():  # warm up once at each setting
        for n in threads:
            use_threads(n)
            fn()
    for r in range(rounds):
        for name, fn in fns.items():
            for n in threads[r % len(threads):] + threads[:r % len(threads)]:  # rotate the order
                use_threads(n)
                start = time.perf_counter()
                fn()
                times[(name, n)].append(time.perf_counter() - start)
    return {key: statistics.median(v) for key, v in times.items()}


def report(title, names, threads, result):
    print(f"\n{title}  [{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}]")
    print("| workload | " + " | ".join(f"{n} (ms)" if n == "default" else f"{n} thread{'s' * (n > 1)} (ms)"
                                      for n in threads) + " |")
    print("|---" * (len(threads) + 1) + "|")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{1000 * result[(name, n)]:.1f}" for n in threads) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="readme,medium,large")
    p.add_argument("--threads", default=None,
                   help='comma list of counts and "default" (default: default,1..cpu count)')
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load", type=int, default=os.cpu_count(), help="busy-loop processes for the loaded run (0: none)")
    p.add_argument("--load-seconds", type=float, default=300, help="upper bound on the busy loops' life")
    args = p.parse_args(argv)
    names = args.workloads.split(",")
    threads = [n if n == "default" else int(n) for n in args.threads.split(",")] if args.threads \
        else ["default"] + list(range(1, os.cpu_count() + 1))
    print(f"default threads: {tg.get_num_threads()}; cpu count {os.cpu_count()}; numpy {np.__version__}")
    report("as the machine is", names, threads, measure(names, threads, args.rounds))
    if args.load:
        deadline = time.time() + args.load_seconds
        workers = [multiprocessing.Process(target=busy, args=(deadline,), daemon=True) for _ in range(args.load)]
        for w in workers:
            w.start()
        try:
            time.sleep(1)
            result = measure(names, threads, args.rounds)
            report(f"with {args.load} busy-loop processes", names, threads, result)
        finally:
            for w in workers:
                w.terminate()
                w.join()


if __name__ == "__main__":
    main()
