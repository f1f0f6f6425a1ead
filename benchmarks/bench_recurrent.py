"""Time one training step of recurrent layers: tinygrad_seq (eager and captured loop) vs the
NumPy floor vs JAX vs PyTorch; a custom cell; checkpointing.

One step = forward over a (T, B, I) sequence, loss = sum(output * G_out) for a fixed
random G_out, zero_grad, backward to every parameter and the input. All implementations
get identical float32 weights and data and are timed side by side in one run,
interleaved (each round runs every implementation once, in rotating order), and the
median over rounds is reported, so machine noise hits them alike. PyTorch and JAX each
run in a worker process (their thread pools and NumPy's OpenBLAS threads fight over the
cores when they share one), timed inside that process.

Sections: the main table (floor, tinygrad_seq eager = capture=False, tinygrad_seq
captured = the default, jax = jit + lax.scan, torch); a custom cell (the README's minimal
gated unit through nn.Recurrent, eager vs captured); checkpointing (LSTM, checkpoint="sqrt"
vs stored activations: time and tracemalloc peak memory); LSTM T-scaling.

    python benchmarks/bench_recurrent.py                      # everything
    python benchmarks/bench_recurrent.py --quick --sizes small,long --kinds lstm
    python benchmarks/bench_recurrent.py --check              # gradients first, then time

See benchmarks/README.md for the columns and the caveats.
"""

import argparse
import collections
import os
import sys
import time

SIZES = {  # name: (T, B, input_size, hidden_size)
    "small": (50, 16, 32, 64),
    "medium": (100, 64, 128, 256),
    "large": (100, 64, 512, 1024),
    "long": (1000, 8, 16, 64),
}
SCALING = ((250, 8, 16, 64), (2000, 8, 16, 64))   # LSTM time per step, short vs long
CUSTOM_SIZES = ("small", "long")                  # the minimal gated unit, eager vs captured
CHECKPOINT_SIZES = (("long", SIZES["long"]), ("longer", (4000, 8, 16, 64)))
KINDS = ("lstm", "gru", "rnn")
IMPLS = ("floor", "eager", "captured", "jax", "torch")
WORKER_LIBS = ("jax", "torch")                    # columns that run in a worker process
CHECK_TINY = (6, 3, 5, 4)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES),
                   help="comma list of %s or TxBxIxH (default: all four)" % "/".join(SIZES))
    p.add_argument("--kinds", default=",".join(KINDS), help="comma list of lstm,gru,rnn")
    p.add_argument("--repeats", type=int, default=5,
                   help="minimum timed rounds per case (default 5)")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="keep adding rounds until the timed steps of a case add up to this "
                        "many seconds (default 0.5)")
    p.add_argument("--max-rounds", type=int, default=21,
                   help="stop adding rounds for --min-time here (default 21)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds to pause before each timed step so the previous step's "
                        "BLAS/OpenMP threads stop spinning (default 0.2 with the torch "
                        "column, 0 without)")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="statistic over rounds (default median; min is the steadier "
                        "estimate on a machine shared with other jobs)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 rounds, no minimum time")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX column")
    p.add_argument("--no-eager", action="store_true",
                   help="skip the tinygrad_seq eager (capture=False) column and the custom "
                        "cell's eager runs (the custom cell section is then left out)")
    p.add_argument("--no-tinygrad", action="store_true",
                   help="skip every tinygrad_seq column (eager, captured, custom cell, "
                        "checkpointing)")
    p.add_argument("--no-custom", action="store_true", help="skip the custom cell section")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="skip the checkpointing section")
    p.add_argument("--no-scaling", action="store_true", help="skip the LSTM T-scaling check")
    p.add_argument("--check", action="store_true",
                   help="check gradients (floor vs torch in float64 and float32; tinygrad_seq "
                        "eager, captured and checkpointed, and jax, vs the float64 floor; "
                        "the custom cell captured vs eager) before timing; exit 1 on a "
                        "mismatch")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS / torch / JAX threads (default: all cores)")
    p.add_argument("--keep-heap", action="store_true",
                   help="tell glibc malloc never to trim or mmap (mallopt), so big arrays are "
                        "not page-faulted in again on every step; affects all columns")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time = 2, 0.0
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for k in args.kinds:
        if k not in KINDS:
            p.error("unknown kind %r (expected one of %s)" % (k, ", ".join(KINDS)))
    sizes = []
    for s in (s.strip() for s in args.sizes.split(",") if s.strip()):
        if s in SIZES:
            sizes.append((s, SIZES[s]))
            continue
        try:
            dims = tuple(int(v) for v in s.lower().split("x"))
        except ValueError:
            dims = ()
        if len(dims) != 4 or min(dims) < 1:
            p.error("unknown size %r (expected %s or TxBxIxH)" % (s, ", ".join(SIZES)))
        sizes.append((s, dims))
    args.sizes = sizes
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    # must happen before NumPy (and its BLAS) is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import gc          # noqa: E402
import platform    # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))    # the repo root, for an uninstalled checkout
import numpy_floor  # noqa: E402


# ---------------------------------------------------------------- optional libraries

def load_worker(args, lib):
    """Start the worker process of the torch or jax column (see Worker); (None, note) if
    it is switched off or its library does not import."""
    if getattr(args, "no_" + lib):
        return None, "skipped (--no-%s)" % lib
    worker = Worker(lib, args.threads or available_cores(), args.keep_heap)
    note = worker.start()
    if note:
        return None, note
    return worker, None


def load_tinygrad(args):
    if args.no_tinygrad:
        return None, "skipped (--no-tinygrad)"
    try:
        import tinygrad_seq as tg
        import tinygrad_seq.capture
        tg.nn.LSTM, tg.nn.GRU, tg.nn.RNN, tg.nn.Recurrent, tg.Tensor  # noqa: B018  the names we call
        tg.capture.counters  # noqa: B018
    except Exception as e:
        return None, "not available (%s: %s)" % (type(e).__name__, e)
    # this benchmark's documented default, all cores, for the floor and the engine alike
    tg.set_num_threads(args.threads or available_cores())
    return tg, None


def keep_heap():
    """mallopt(M_TRIM_THRESHOLD, huge) and mallopt(M_MMAP_THRESHOLD, max): glibc only."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok_trim = libc.mallopt(-1, 2 ** 30)          # M_TRIM_THRESHOLD
        ok_mmap = libc.mallopt(-3, 32 * 2 ** 20)     # M_MMAP_THRESHOLD (glibc max on 64-bit)
        return "glibc heap kept (trim off, mmap threshold 32 MiB)" if ok_trim and ok_mmap \
            else "mallopt refused"
    except (OSError, AttributeError) as e:
        return "not glibc (%s)" % e


# ---------------------------------------------------------------- machine description

def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_description():
    try:
        from threadpoolctl import threadpool_info
        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return "; ".join("%s %s (%s, %s threads)" % (
                i.get("internal_api"), i.get("version"), i.get("architecture"),
                i.get("num_threads")) for i in libs)
    except Exception:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return "%s %s" % (blas.get("name"), blas.get("version"))
    except Exception:
        return "unknown"


def machine_lines(args, workers, notes, heap_note):
    lines = [
        "machine: %s, %d cores available (os.cpu_count %s), Python %s" % (
            cpu_model(), available_cores(), os.cpu_count(), platform.python_version()),
        "numpy %s, BLAS: %s" % (np.__version__, blas_description()),
    ]
    env = ["%s=%s" % (k, v) for k, v in sorted(os.environ.items())
           if k.startswith(("OPENBLAS_", "OMP_NUM", "MKL_NUM", "MALLOC_"))]
    lines.append("env: %s" % (" ".join(env) or "(no OPENBLAS_/OMP_/MKL_/MALLOC_ settings)"))
    for lib in WORKER_LIBS:
        if workers.get(lib) is not None:
            lines.append("%s (in a worker process)" % workers[lib].description)
        else:
            lines.append("%s: %s" % (lib, notes[lib]))
    lines.append("timing: %s of >= %d interleaved rounds (>= %.1f s of steps, <= %d rounds), "
                 "%.2f s pause before each timed step" % (
                     args.stat, args.repeats, args.min_time, args.max_rounds, args.settle))
    if notes.get("tinygrad_seq"):
        lines.append("tinygrad_seq: %s" % notes["tinygrad_seq"])
    if heap_note:
        lines.append("malloc: %s" % heap_note)
    return lines


class OtherLoad:
    """Average number of cores busy with OTHER processes between start() and stop(): all
    busy jiffies in /proc/stat minus this process's and the worker processes'. Linux only;
    None elsewhere. A row taken while the machine was busy says so."""

    def __init__(self, pids):
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4]          # all but idle and iowait

    def _own(self):
        total = 0
        for pid in self.pids:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime + stime
        return total

    def start(self):
        try:
            self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._own()
        except (OSError, ValueError, IndexError):
            self.t0 = None

    def stop(self):
        if self.t0 is None:
            return None
        try:
            busy, own = self._busy() - self.b0, self._own() - self.o0
        except (OSError, ValueError, IndexError):
            return None
        return max(0.0, (busy - own) / self.tick / (time.perf_counter() - self.t0))


# ---------------------------------------------------------------- problem and runners

def make_problem(kind, dims, seed, dtype=np.float32):
    T, B, I, H = dims
    rng = np.random.default_rng(seed)
    params = numpy_floor.init_params(kind, I, H, rng, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    G = rng.standard_normal((T, B, H)).astype(dtype)
    return params, x, G


class FloorRunner:
    name = "floor"

    def __init__(self, kind, params, x, G):
        self.kind, self.params, self.x, self.G = kind, params, x, G

    def step(self):
        return numpy_floor.train_step(self.kind, self.x, self.G, self.params)

    def grads(self):
        loss, grads = self.step()
        return float(loss), grads


def _torch_module(torch, kind, params, x):
    I, H = x.shape[2], params["weight_hh_l0"].shape[1]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    mod = cls(I, H).to(torch.float64 if x.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, value in params.items():
            getattr(mod, name).copy_(torch.from_numpy(value))
    return mod


class TorchCases:
    """The torch column, inside its worker: PyTorch's fused nn.LSTM / GRU / RNN on the CPU."""

    def __init__(self, threads):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.description = "torch %s, %d threads" % (torch.__version__, torch.get_num_threads())

    def setup(self, kind, params, x, G):
        return _torch_module(self.torch, kind, params, x), x, self.torch.from_numpy(G)

    def _run(self, case):
        mod, x_np, G = case
        xt = self.torch.from_numpy(x_np).requires_grad_()
        out, _ = mod(xt)
        loss = (out * G).sum()
        mod.zero_grad(set_to_none=True)
        loss.backward()
        return mod, xt, loss

    def step(self, case):
        t0 = time.perf_counter()
        self._run(case)
        return time.perf_counter() - t0

    def grads(self, case):
        mod, xt, loss = self._run(case)
        g = {n: p.grad.numpy().copy() for n, p in mod.named_parameters()}
        g["x"] = xt.grad.numpy().copy()
        return float(loss.item()), g


def _worker_main(conn, lib, threads, heap):
    """Runs in its own process: PyTorch's OpenMP threads, XLA's thread pools and NumPy's
    OpenBLAS threads spin-wait after each call and steal each other's cores when they
    share a process. `lib` is "torch" (TorchCases) or "jax" (jax_models.JaxCases)."""
    if heap:
        keep_heap()
    try:
        if lib == "torch":
            cases_of = TorchCases(threads)
        else:
            import jax_models
            cases_of = jax_models.JaxCases(threads)
    except Exception as e:  # ImportError, or a broken install
        conn.send(("error", "not available (%s: %s)" % (type(e).__name__, e)))
        return
    conn.send(("ok", cases_of.description))
    cases = {}
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            return
        try:
            if msg[0] == "setup":
                _, key, kind, params, x, G = msg
                cases[key] = cases_of.setup(kind, params, x, G)
                conn.send(("ok", None))
            elif msg[0] == "drop":
                cases.pop(msg[1], None)
                conn.send(("ok", None))
            elif msg[0] == "step":
                conn.send(("ok", cases_of.step(cases[msg[1]])))
            else:                                   # "grads"
                conn.send(("ok", cases_of.grads(cases[msg[1]])))
        except Exception as e:
            conn.send(("error", "%s: %s" % (type(e).__name__, e)))


class Worker:
    """The torch or jax column, in a child process driven over a pipe; step times are
    measured inside the child, so the pipe's latency is not counted."""

    def __init__(self, lib, threads, heap):
        self.lib, self.threads, self.heap = lib, threads, heap
        self.description = None
        self.conn = self.proc = None
        self.cases = 0

    def start(self):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main,
                                args=(child, self.lib, self.threads, self.heap), daemon=True)
        self.proc.start()
        child.close()
        try:
            status, payload = self.conn.recv()
        except EOFError:
            status, payload = "error", "worker process died while importing %s" % self.lib
        if status != "ok":
            self.proc.join()
            return payload
        self.description = payload
        return None

    def call(self, *msg):
        self.conn.send(msg)
        status, payload = self.conn.recv()
        if status != "ok":
            raise RuntimeError("%s worker: %s" % (self.lib, payload))
        return payload

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(("quit",))
            self.proc.join(timeout=10)


class WorkerRunner:
    """One case (kind, weights, data) set up in a worker; the worker times the step."""

    def __init__(self, worker, kind, params, x, G):
        self.name = worker.lib
        self.worker = worker
        worker.cases += 1
        self.key = worker.cases
        worker.call("setup", self.key, kind, params, x, G)   # jax: compiles here, untimed

    def step(self):
        return self.worker.call("step", self.key)

    def grads(self):
        return self.worker.call("grads", self.key)

    def close(self):
        self.worker.call("drop", self.key)


class TinygradRunner:
    """tg.nn.LSTM / GRU / RNN; capture=False is the eager column, the default the captured
    one; checkpoint is passed to the layer (the checkpointing section)."""

    def __init__(self, tg, kind, params, x, G, capture=True, checkpoint=None, name=None):
        self.tg = tg
        self.name = name or ("captured" if capture else "eager")
        self.capture = capture
        I, H = x.shape[2], params["weight_hh_l0"].shape[1]
        options = dict(capture=capture, checkpoint=checkpoint)
        if kind == "lstm":
            self.layer = tg.nn.LSTM(I, H, **options)
        elif kind == "gru":
            self.layer = tg.nn.GRU(I, H, **options)
        else:
            self.layer = tg.nn.RNN(I, H, nonlinearity="tanh", **options)
        self.layer.load_state_dict({k: v.copy() for k, v in params.items()})
        self.x_np = x
        self.G = tg.Tensor(G)
        self.xt = None

    def step(self):
        self.xt = self.tg.Tensor(self.x_np, requires_grad=True)
        out, _state = self.layer(self.xt)
        loss = (out * self.G).sum()
        self.layer.zero_grad()
        loss.backward()
        return loss

    def grads(self):
        loss = self.step()
        g = {}
        for name, p in self.layer.named_parameters():
            g[name.rsplit(".", 1)[-1]] = np.array(p.grad.numpy(), copy=True)
        g["x"] = np.array(self.xt.grad.numpy(), copy=True)
        return float(loss.item()), g

    def capture_problem(self):
        """Run one (untimed) step and read capture.counters: None if the loop ran as this
        runner should (captured: one more "captured" and no fallback; eager: no capture),
        else what happened."""
        counters = self.tg.capture.counters
        before = collections.Counter(counters)
        self.step()
        diff = counters - before
        fallbacks = ["%s (x%d)" % (k[len("fallback: "):], v) for k, v in diff.items()
                     if k.startswith("fallback: ")]
        if self.capture:
            if diff["captured"] < 1 or fallbacks:
                return "did not capture: captured +%d, fallback: %s" % (
                    diff["captured"], "; ".join(fallbacks) or "none")
        elif diff["captured"]:
            return "captured although capture=False"
        return None


# ---- the custom cell: the README's minimal gated unit, copied verbatim

def minimal_gated_unit_class(tg):
    nn = tg.nn

    class MinimalGatedUnit(nn.Module):
        """f = sigmoid(W_f [x, h] + b_f);  h' = (1 - f) h + f tanh(W_h [x, f h] + b_h)."""
        def __init__(self, input_size, hidden_size):
            self.hidden_size = hidden_size
            self.gate = nn.Linear(input_size + hidden_size, hidden_size)
            self.candidate = nn.Linear(input_size + hidden_size, hidden_size)

        def initial_state(self, batch_size):
            return tg.zeros(batch_size, self.hidden_size)

        def forward(self, x, h):
            f = self.gate(tg.cat([x, h], axis=1)).sigmoid()
            candidate = self.candidate(tg.cat([x, f * h], axis=1)).tanh()
            return (1 - f) * h + f * candidate

    return MinimalGatedUnit


def make_custom_problem(dims, seed, dtype=np.float32):
    """Weights (PyTorch-style uniform init) and data for the minimal gated unit."""
    T, B, I, H = dims
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(I + H)
    params = {name: rng.uniform(-k, k, shape).astype(dtype) for name, shape in (
        ("gate.weight", (H, I + H)), ("gate.bias", (H,)),
        ("candidate.weight", (H, I + H)), ("candidate.bias", (H,)))}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    G = rng.standard_normal((T, B, H)).astype(dtype)
    return params, x, G


class CustomCellRunner(TinygradRunner):
    """nn.Recurrent(MinimalGatedUnit(I, H)) (captured) or with capture=False (eager)."""

    def __init__(self, tg, params, x, G, capture=True):
        self.tg = tg
        self.name = "captured" if capture else "eager"
        self.capture = capture
        I, H = x.shape[2], params["gate.bias"].shape[0]
        self.cell = minimal_gated_unit_class(tg)(I, H)
        self.cell.load_state_dict({k: v.copy() for k, v in params.items()})
        self.layer = tg.nn.Recurrent(self.cell, capture=capture)
        self.x_np = x
        self.G = tg.Tensor(G)
        self.xt = None

    def grads(self):
        loss = self.step()
        g = {name: np.array(p.grad.numpy(), copy=True)
             for name, p in self.cell.named_parameters()}
        g["x"] = np.array(self.xt.grad.numpy(), copy=True)
        return float(loss.item()), g


def make_runners(kind, dims, seed, libs, args, notes):
    """floor, tinygrad_seq eager and captured, jax and torch runners of one case, sharing
    weights and data (the columns that are switched off or did not load are left out)."""
    params, x, G = make_problem(kind, dims, seed)
    runners = {"floor": FloorRunner(kind, params, x, G)}
    tg = libs.get("tinygrad_seq")
    if tg is not None:
        for capture in ((False, True) if not args.no_eager else (True,)):
            name = "captured" if capture else "eager"
            try:
                runners[name] = TinygradRunner(tg, kind, params, x, G, capture=capture)
            except Exception as e:
                notes.append("%s %s %s: setup failed (%s: %s)" % (
                    name, kind, dims, type(e).__name__, e))
    for lib in WORKER_LIBS:
        if libs.get(lib) is not None:
            try:
                runners[lib] = WorkerRunner(libs[lib], kind, params, x, G)
            except Exception as e:
                notes.append("%s %s %s: setup failed (%s)" % (lib, kind, dims, e))
    return {name: runners[name] for name in IMPLS if name in runners}


def verify_capture(runners, notes, label):
    """Once per row, outside the timing: does each tinygrad_seq runner capture (or not) as
    it should? Returns the names of those that did not; a note says what happened."""
    wrong = set()
    for name, r in runners.items():
        if isinstance(r, TinygradRunner):
            try:
                problem = r.capture_problem()
            except Exception as e:
                problem = "step failed (%s: %s)" % (type(e).__name__, e)
            if problem:
                wrong.add(name)
                notes.append("%s %s: %s" % (name, label, problem))
    return wrong


def close_runners(runners):
    for r in runners.values():
        if hasattr(r, "close"):
            r.close()


def timed_step(runner):
    """Seconds for one step; the worker processes report their own time."""
    if isinstance(runner, WorkerRunner):
        return runner.step()
    t0 = time.perf_counter()
    runner.step()
    return time.perf_counter() - t0


def peak_step_bytes(runner):
    """Peak bytes allocated during one training step (tracemalloc: NumPy reports its array
    buffers to it, and the tape's Python objects count too). One untraced step first; what
    existed before the traced step (model, data, the previous step's gradients) is not
    counted. Untimed: tracemalloc slows every allocation down."""
    import tracemalloc
    runner.step()
    gc.collect()
    tracemalloc.start()
    try:
        runner.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


# ---------------------------------------------------------------- timing

def time_interleaved(runners, args, notes, label):
    """Median seconds per step of each runner: one warm-up step each, then rounds that
    run every runner once, in rotating order, until there are --repeats rounds and the
    timed steps add up to --min-time (at most --max-rounds)."""
    live = dict(runners)
    for name, r in list(live.items()):
        try:
            r.step()
        except Exception as e:
            notes.append("%s %s: step failed (%s: %s)" % (name, label, type(e).__name__, e))
            del live[name]
    samples = {name: [] for name in live}
    order = list(live)
    spent = 0.0
    rounds = 0
    while live and (rounds < args.repeats
                    or (spent < args.min_time and rounds < args.max_rounds)):
        k = rounds % len(order)
        for name in order[k:] + order[:k]:
            gc.collect()
            if args.settle:
                time.sleep(args.settle)
            dt = timed_step(live[name])
            samples[name].append(dt)
            spent += dt
        rounds += 1
    stat = np.median if args.stat == "median" else np.min
    return {name: float(stat(s)) for name, s in samples.items()}, rounds


# ---------------------------------------------------------------- correctness

def rel_err(a, b):
    """max |a - b| / max |b|, per gradient."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def worst(grads, ref):
    errs = {k: rel_err(grads[k], ref[k]) if k in grads else float("inf") for k in ref}
    name = max(errs, key=errs.get)
    return errs[name], name


def worker_grads(worker, kind, params, x, G):
    runner = WorkerRunner(worker, kind, params, x, G)
    try:
        return runner.grads()
    finally:
        runner.close()


def run_checks(args, libs):
    """Gradients of every implementation against the float64 floor (and the floor itself
    against float64 torch), and the custom cell's captured loop against its eager loop.
    Returns the number of failures."""
    tg, torch, jax = libs.get("tinygrad_seq"), libs.get("torch"), libs.get("jax")
    print("## Gradient checks\n")
    print("relative error = max|g - ref| / max|ref| over the worst of dW_ih, dW_hh, db_ih, "
          "db_hh, dx; ref = the float64 floor (custom cell: ref = its eager loop)\n")
    print("| kind | size | check | rel. error (worst grad) | limit | ok |")
    print("|---|---|---|---|---|---|")
    failures = 0

    def row(kind, size, what, err, grad, limit):
        nonlocal failures
        ok = err <= limit
        failures += not ok
        print("| %s | %s | %s | %.1e (%s) | %.0e | %s |" % (
            kind, size, what, err, grad, limit, "yes" if ok else "**NO**"), flush=True)

    def failed(kind, size, what, e):
        nonlocal failures
        failures += 1
        print("| %s | %s | %s | failed: %s: %s | | **NO** |" % (
            kind, size, what, type(e).__name__, e), flush=True)

    def tinygrad_row(kind, size, what, make, ref, limit):
        try:
            runner = make()
            problem = runner.capture_problem()
            _, g = runner.grads()
        except Exception as e:
            failed(kind, size, what, e)
            return None
        if problem:
            what += " (%s)" % problem
        row(kind, size, what, *worst(g, ref), limit)
        return g

    for kind in args.kinds:
        # float64 at a tiny size: the floor must agree with torch to rounding.
        p64, x64, G64 = make_problem(kind, CHECK_TINY, args.seed, np.float64)
        loss64, ref64 = FloorRunner(kind, p64, x64, G64).grads()
        bad = [k for k, v in ref64.items() if v.dtype != np.float64]
        if bad:
            failures += 1
            print("| %s | tiny | floor float64 dtype | %s not float64 | | **NO** |" % (kind, bad))
        if torch is not None:
            _, gt = worker_grads(torch, kind, p64, x64, G64)
            row(kind, "x".join(map(str, CHECK_TINY)), "floor vs torch, float64",
                *worst(ref64, gt), 1e-10)
        for size, dims in args.sizes:
            p32, x32, G32 = make_problem(kind, dims, args.seed)
            p64 = {k: v.astype(np.float64) for k, v in p32.items()}
            _, ref = FloorRunner(kind, p64, x32.astype(np.float64),
                                 G32.astype(np.float64)).grads()
            _, g32 = FloorRunner(kind, p32, x32, G32).grads()
            bad = [k for k, v in g32.items() if v.dtype != np.float32]
            if bad:
                failures += 1
                print("| %s | %s | floor float32 dtype | %s promoted | | **NO** |" % (
                    kind, size, bad))
            floor_err = worst(g32, ref)
            row(kind, size, "floor float32", *floor_err, 1e-3)
            if torch is not None:
                _, gt = worker_grads(torch, kind, p64, x32.astype(np.float64),
                                     G32.astype(np.float64))
                row(kind, size, "floor float64 vs torch float64", *worst(ref, gt), 1e-10)
                _, gt32 = worker_grads(torch, kind, p32, x32, G32)
                row(kind, size, "torch float32", *worst(gt32, ref), 1e-3)
            if jax is not None:
                try:
                    _, gj = worker_grads(jax, kind, p32, x32, G32)
                except Exception as e:
                    failed(kind, size, "jax float32", e)
                else:
                    row(kind, size, "jax float32", *worst(gj, ref), 1e-3)
            if tg is not None:
                # float32 tolerance: no worse than 1e-3, nor 10x the float32 floor's error
                limit = max(1e-4, min(1e-3, 10 * floor_err[0]))
                variants = [("captured", dict(capture=True)),
                            ("captured checkpoint=sqrt", dict(capture=True, checkpoint="sqrt"))]
                if not args.no_eager:
                    variants.insert(0, ("eager", dict(capture=False)))
                for label, options in variants:
                    tinygrad_row(kind, size, "tinygrad_seq %s float32" % label,
                                 lambda: TinygradRunner(tg, kind, p32, x32, G32, **options),
                                 ref, limit)
    if tg is not None and not args.no_custom and not args.no_eager:
        # the custom cell has no floor: its captured loop against its own eager loop
        for size in CUSTOM_SIZES[:1]:
            cp, cx, cG = make_custom_problem(SIZES[size], args.seed)
            try:
                _, ref = CustomCellRunner(tg, cp, cx, cG, capture=False).grads()
            except Exception as e:
                failed("minimal gated unit", size, "eager float32", e)
                continue
            tinygrad_row("minimal gated unit", size, "captured vs eager, float32",
                         lambda: CustomCellRunner(tg, cp, cx, cG, capture=True), ref, 1e-4)
    print()
    return failures


# ---------------------------------------------------------------- report

def fmt_ms(seconds):
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return "%.1f" % ms if ms >= 10 else "%.2f" % ms


def fmt_ratio(a, b):
    return "—" if a is None or not b else "%.2f" % (a / b)


def fmt_mb(nbytes):
    return "—" if nbytes is None else "%.1f" % (nbytes / 1e6)


def main(args):
    heap_note = keep_heap() if args.keep_heap else None
    workers, notes = {}, {}
    try:
        for lib in WORKER_LIBS:
            workers[lib], notes[lib] = load_worker(args, lib)
        return report(args, workers, notes, heap_note)
    finally:
        for w in workers.values():
            if w is not None:
                w.close()


def report(args, workers, load_notes, heap_note):
    if args.settle is None:
        args.settle = 0.2 if any(w is not None for w in workers.values()) else 0.0
    tg, load_notes["tinygrad_seq"] = load_tinygrad(args)
    libs = dict(workers, tinygrad_seq=tg)
    for lib in ("tinygrad_seq",) + WORKER_LIBS:
        if load_notes.get(lib):
            print("note: %s column %s" % (lib, load_notes[lib]))
    print()
    print("# Recurrent layers: one training step (forward + loss + backward), float32\n")
    for line in machine_lines(args, workers, load_notes, heap_note):
        print("- " + line)
    print()

    if args.check:
        failures = run_checks(args, libs)
        if failures:
            print("%d gradient check(s) failed; not timing." % failures)
            return 1

    notes = []
    pids = [os.getpid()] + [w.proc.pid for w in workers.values() if w is not None]
    load = OtherLoad(pids)
    fmt_load = lambda other: "—" if other is None else "%.1f" % other  # noqa: E731

    print("## Step time (%s over interleaved rounds, ms)\n" % args.stat)
    print("eager = tinygrad_seq with capture=False (op by op), captured = tinygrad_seq's "
          "default (one recorded step replayed); ratios are to the floor\n")
    print("| kind | size (T, B, I, H) | floor ms | eager ms | captured ms | jax ms | torch ms "
          "| eager / floor | captured / floor | jax / floor | torch / floor | rounds "
          "| other load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for size, dims in args.sizes:
            label = "%s %s" % (kind, size)
            runners = make_runners(kind, dims, args.seed, libs, args, notes)
            wrong = verify_capture(runners, notes, label)
            load.start()
            try:
                med, rounds = time_interleaved(runners, args, notes, label)
            finally:
                close_runners(runners)
            other = load.stop()
            f = med.get("floor")
            cells = [fmt_ms(med.get(n)) + (" (!)" if n in wrong else "") for n in IMPLS]
            ratios = [fmt_ratio(med.get(n), f) for n in IMPLS[1:]]
            print("| %s | %s %s | %s | %s | %d | %s |" % (
                kind, size, dims, " | ".join(cells), " | ".join(ratios), rounds,
                fmt_load(other)), flush=True)
            del runners
    print()

    if tg is not None and not args.no_custom and not args.no_eager:
        print("## Custom cell: the README's minimal gated unit through nn.Recurrent "
              "(%s over interleaved rounds, ms)\n" % args.stat)
        print("no floor: there is no hand-written NumPy version of this cell; "
              "eager = nn.Recurrent(cell, capture=False), captured = nn.Recurrent(cell)\n")
        print("| cell | size (T, B, I, H) | eager ms | captured ms | eager / captured "
              "| rounds | other load |")
        print("|---|---|---|---|---|---|---|")
        for size in CUSTOM_SIZES:
            dims = SIZES[size]
            label = "minimal gated unit %s" % size
            cp, cx, cG = make_custom_problem(dims, args.seed)
            runners = {"eager": CustomCellRunner(tg, cp, cx, cG, capture=False),
                       "captured": CustomCellRunner(tg, cp, cx, cG, capture=True)}
            wrong = verify_capture(runners, notes, label)
            load.start()
            med, rounds = time_interleaved(runners, args, notes, label)
            other = load.stop()
            e, c = med.get("eager"), med.get("captured")
            print("| minimal gated unit | %s %s | %s | %s%s | %s | %d | %s |" % (
                size, dims, fmt_ms(e), fmt_ms(c), " (!)" if "captured" in wrong else "",
                fmt_ratio(e, c), rounds, fmt_load(other)), flush=True)
            del runners
        print()

    if tg is not None and not args.no_checkpoint:
        print("## Checkpointing: LSTM, checkpoint=\"sqrt\" vs stored activations (captured)\n")
        print("time: %s over interleaved rounds; peak: tracemalloc peak of one training step "
              "in a separate untimed run, not counting the model and data allocated before "
              "(MB = 10^6 bytes)\n" % args.stat)
        print("| size (T, B, I, H) | stored ms | checkpoint ms | checkpoint / stored time "
              "| stored peak MB | checkpoint peak MB | checkpoint / stored memory | rounds "
              "| other load |")
        print("|---|---|---|---|---|---|---|---|---|")
        variants = (("stored", None), ("checkpoint", "sqrt"))
        for size, dims in CHECKPOINT_SIZES:
            label = "lstm checkpointing %s" % size
            params, x, G = make_problem("lstm", dims, args.seed)

            def make(name, checkpoint):
                return TinygradRunner(tg, "lstm", params, x, G, capture=True,
                                      checkpoint=checkpoint, name=name)

            runners = {name: make(name, ck) for name, ck in variants}
            wrong = verify_capture(runners, notes, label)
            load.start()
            med, rounds = time_interleaved(runners, args, notes, label)
            other = load.stop()
            del runners
            peak = {}
            for name, ck in variants:
                gc.collect()
                try:
                    peak[name] = peak_step_bytes(make(name, ck))
                except Exception as e:
                    notes.append("%s %s: memory run failed (%s: %s)" % (
                        name, label, type(e).__name__, e))
            s_t, c_t = med.get("stored"), med.get("checkpoint")
            s_m, c_m = peak.get("stored"), peak.get("checkpoint")
            mark = lambda n: " (!)" if n in wrong else ""  # noqa: E731
            print("| %s %s | %s%s | %s%s | %s | %s | %s | %s | %d | %s |" % (
                size, dims, fmt_ms(s_t), mark("stored"), fmt_ms(c_t), mark("checkpoint"),
                fmt_ratio(c_t, s_t), fmt_mb(s_m), fmt_mb(c_m), fmt_ratio(c_m, s_m), rounds,
                fmt_load(other)), flush=True)
        print()

    if not args.no_scaling:
        print("## T-scaling: LSTM time per time step (µs), B=8, I=16, H=64\n")
        per_step = {}
        load.start()
        for dims in SCALING:
            label = "lstm scaling T=%d" % dims[0]
            runners = make_runners("lstm", dims, args.seed, libs, args, notes)
            verify_capture(runners, notes, label)
            try:
                med, _ = time_interleaved(runners, args, notes, label)
            finally:
                close_runners(runners)
            per_step[dims[0]] = {k: v / dims[0] for k, v in med.items()}
            del runners
        other = load.stop()
        (t_short, _, _, _), (t_long, _, _, _) = SCALING
        print("| implementation | T=%d µs/step | T=%d µs/step | ratio T=%d / T=%d |" % (
            t_short, t_long, t_long, t_short))
        print("|---|---|---|---|")
        for name in IMPLS:
            a, b = per_step[t_short].get(name), per_step[t_long].get(name)
            if a is None or b is None:
                continue
            print("| %s | %.1f | %.1f | %.2f |" % (name, a * 1e6, b * 1e6, b / a))
        if other is not None:
            print("\nother load during the T-scaling runs: %.1f cores" % other)
        print()

    if notes:
        print("## Notes\n")
        print("(!) in a table: that runner did not loop as intended (see below)\n")
        for n in notes:
            print("- " + n)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
