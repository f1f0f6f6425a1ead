"""Data-parallel costs: fused vs per-tensor allreduce, and char-LM tokens/s on 1 vs 2 processes.

    python benchmarks/bench_distributed.py            # needs pip install -e ".[distributed]"
    python benchmarks/bench_distributed.py --quick    # fewer repetitions

It starts its own workers with `mpiexec` (the one beside this Python, else on PATH) and prints
two small tables:

1. allreduce time of one step's gradients of a 2-layer LSTM language model (two ranks),
   fused into buckets (average_gradients' default, 25 MiB) vs one allreduce per tensor
   (bucket_bytes=0), for several hidden sizes.
2. char-LM training throughput (tokens/s, forward + backward + averaging + Adam):
   one process pinned to core 0 (`taskset -c 0`) vs two processes each bound to its own core
   (`mpiexec -bind-to core`). Every process has one BLAS/OpenMP thread
   (OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1), so each uses exactly one core.
   "weak": every process trains on `--batch` streams (two processes do twice the work per
   step); "strong": the same global batch split in two.

The machine's load (os.getloadavg) is printed first: on a shared machine the figures are noisy.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ---- workers (run under mpiexec or taskset) ------------------------------------------------

def _setup():
    os.environ.update(THREADS)
    sys.path.insert(0, str(ROOT))
    import tinygrad_seq as tg
    from tinygrad_seq import distributed as dist
    from tinygrad_seq import functional as F
    from tinygrad_seq import nn, optim
    return tg, dist, F, nn, optim


def _model(tg, nn, vocab, hidden, layers=2, embed=32):
    class CharLM(nn.Module):
        def __init__(self):
            self.embed = nn.Embedding(vocab, embed)
            self.lstm = nn.LSTM(embed, hidden, num_layers=layers)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, x, state=None):
            out, state = self.lstm(self.embed(tg.Tensor(x)), state)
            T, B, H = out.shape
            return self.head(out.reshape(T * B, H)), state
    return CharLM()


def worker_allreduce(args):
    tg, dist, F, nn, optim = _setup()
    import numpy as np
    comm = dist.init()
    rows = []
    for hidden in args.hidden:
        params = list(_model(tg, nn, 96, hidden).parameters())
        for p in params:
            p.grad = tg.Tensor(np.ones(p.shape, dtype=np.float32))
        timings = {}
        for name, bucket_bytes in (("fused", dist.DEFAULT_BUCKET_BYTES), ("per-tensor", 0)):
            averager = dist.GradientAverager(params, comm, bucket_bytes)
            for _ in range(3):
                averager()
            samples = []
            for _ in range(args.repeats):
                comm.barrier()
                start = time.perf_counter()
                averager()
                samples.append(time.perf_counter() - start)
            timings[name] = (float(np.min(samples)), float(np.median(samples)))
        total = sum(p.numel() for p in params)
        rows.append((hidden, len(params), total, *timings["fused"], *timings["per-tensor"]))
    if comm.rank == 0:
        for row in rows:
            print("ROW", *row)


def worker_train(args):
    tg, dist, F, nn, optim = _setup()
    import numpy as np
    from pydoc_data.topics import topics
    comm = dist.init()
    text = "".join(topics.values())
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text[:400_000]], dtype=np.int64)
    B = args.batch // comm.size if args.split else args.batch
    length = (len(data) - 1) // (B * comm.size)
    offset = comm.rank * B * length  # each rank its own streams
    x_all = data[offset:offset + B * length].reshape(B, length).T.copy()
    y_all = data[offset + 1:offset + B * length + 1].reshape(B, length).T.copy()
    tg.manual_seed(0)
    model = _model(tg, nn, len(chars), args.train_hidden, layers=1)
    dist.broadcast_parameters(model, comm)
    params = list(model.parameters())
    opt = dist.DistributedOptimizer(optim.Adam(params, lr=1e-3), comm)
    state = None

    def step(k):
        nonlocal state
        i = (k * args.bptt) % (length - args.bptt)
        logits, state = model(x_all[i:i + args.bptt], state)
        loss = F.cross_entropy(logits, tg.Tensor(y_all[i:i + args.bptt].reshape(-1)))
        state = tuple(s.detach() for s in state)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k in range(3):
        step(k)
    comm.barrier()
    start = time.perf_counter()
    for k in range(args.steps):
        step(k)
    comm.barrier()
    elapsed = time.perf_counter() - start
    if comm.rank == 0:
        print("ROW", args.steps * args.bptt * B * comm.size / elapsed, B * comm.size)


# ---- the driver ---------------------------------------------------------------------------------

def _mpiexec():
    candidate = Path(sys.executable).parent / "mpiexec"
    found = str(candidate) if candidate.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit('mpiexec not found: pip install -e ".[distributed]"')
    return found


def _run(cmd):
    env = {**os.environ, **THREADS}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("ROW")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    p.add_argument("--worker", choices=["allreduce", "train"], help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512], help="LSTM sizes for table 1")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--train-hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bptt", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--split", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return {"allreduce": worker_allreduce, "train": worker_train}[args.worker](args)
    if args.quick:
        args.repeats, args.steps = 10, 8
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--repeats", str(args.repeats), "--train-hidden", str(args.train_hidden), "--batch", str(args.batch),
              "--bptt", str(args.bptt), "--steps", str(args.steps)]
    mpi = [_mpiexec(), "-n", "2", "-bind-to", "core"]
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
          f"{os.cpu_count()} cores; every process: {', '.join(f'{k}=1' for k in THREADS)}")

    print("\n1. averaging one step's gradients of a 2-layer LSTM LM (vocab 96, embed 32), 2 ranks, float32")
    print("   times in ms: the fastest of the repeats (least disturbed by other jobs), then the median")
    print(f"{'hidden':>7} {'tensors':>8} {'values':>10} {'fused min/median':>17} {'per-tensor min/median':>22} "
          f"{'speedup (min)':>14}")
    for hidden, tensors, values, fmin, fmed, smin, smed in _run(mpi + me + ["--worker", "allreduce", "--hidden",
                                                                          *map(str, args.hidden)] + common):
        fmin, fmed, smin, smed = (float(v) * 1e3 for v in (fmin, fmed, smin, smed))
        print(f"{hidden:>7} {tensors:>8} {int(values):>10,} {fmin:>8.3f}/{fmed:<8.3f} {smin:>11.3f}/{smed:<10.3f} "
              f"{smin / fmin:>13.1f}x")

    print(f"\n2. char-LM training, 1-layer LSTM hidden {args.train_hidden}, bptt {args.bptt}, Adam, float32")
    pinned = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    (one, b1), = _run(pinned + me + ["--worker", "train"] + common)
    (weak, bw), = _run(mpi + me + ["--worker", "train"] + common)
    (strong, bs), = _run(mpi + me + ["--worker", "train", "--split"] + common)
    print(f"{'run':<44} {'global batch':>12} {'tokens/s':>10} {'vs 1 process':>13}")
    print(f"{'1 process (taskset -c 0)':<44} {b1:>12} {float(one):>10,.0f} {'1.00x':>13}")
    print(f"{'2 processes, batch each (weak scaling)':<44} {bw:>12} {float(weak):>10,.0f} "
          f"{float(weak) / float(one):>12.2f}x")
    print(f"{'2 processes, batch split (strong scaling)':<44} {bs:>12} {float(strong):>10,.0f} "
          f"{float(strong) / float(one):>12.2f}x")
    print(f"\nload average afterwards {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
