"""How many threads NumPy's BLAS (OpenBLAS, MKL ...) uses, and how the library's loops pick theirs.

    tg.set_num_threads(2)      # NumPy's BLAS, for this process, from now on
    tg.get_num_threads()       # NumPy's BLAS, now

set_num_threads and get_num_threads act on the BLAS library NumPy loaded, found through
threadpoolctl (which calls the library's own set-threads function, so it works after NumPy
was imported; environment variables such as OPENBLAS_NUM_THREADS only work before). Other
BLAS libraries in the process (PyTorch's, scikit-learn's) are left alone, as
torch.set_num_threads leaves NumPy's.

Importing tinygrad_seq changes nothing. The recurrent layers run each sequence with a thread
count of their own (`loop_threads`), restored when they return: the count given to
set_num_threads if the program gave one, else as many cores as no other task is using at that
moment (the runnable tasks of /proc/loadavg minus this process's own), at least one. On an
idle machine that is every core; next to other busy processes, a BLAS thread that would wait
for a core it cannot get is not started (OpenBLAS's threads wait by spinning, so a second
thread on a busy core makes a small matmul several times slower, not faster).
"""
import concurrent.futures
import contextlib
import os
import sys
import time

import threadpoolctl

__all__ = ["set_num_threads", "get_num_threads", "blas_threads", "loop_threads", "in_row_blocks"]

_chosen = None  # the count given to set_num_threads, which the loops then use too


def _numpy_blas():
    """threadpoolctl's controller of the BLAS library NumPy uses, or None (no threaded BLAS)."""
    global _blas
    if _blas is False:
        numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["numpy"].__file__)))
        pools = [lib for lib in threadpoolctl.ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        ours = [lib for lib in pools if os.path.abspath(lib.filepath).startswith(os.path.join(numpy_dir, "numpy"))]
        _blas = (ours or pools or [None])[0]  # a wheel's BLAS sits in numpy.libs/ (or numpy/.dylibs/)
    return _blas


_blas = False  # not looked up yet


def set_num_threads(n):
    """Use `n` threads in NumPy's BLAS (n >= 1), for the matrix multiplies everywhere in the process."""
    global _chosen
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    blas = _numpy_blas()
    if blas is not None:
        blas.set_num_threads(n)
    _chosen = n


def get_num_threads():
    """The number of threads NumPy's BLAS uses now (1 when it has no threads)."""
    blas = _numpy_blas()
    return 1 if blas is None else blas.num_threads


@contextlib.contextmanager
def blas_threads(n):
    """NumPy's BLAS at `n` threads inside the block (this thread's calls and any other's), as before after."""
    blas = _numpy_blas()
    before = None if blas is None else blas.num_threads
    if before is None or before == n:
        yield
        return
    blas.set_num_threads(n)
    try:
        yield
    finally:
        blas.set_num_threads(before)


def loop_threads():
    """The BLAS threads a recurrent loop runs with: set_num_threads's count if one was set, else the free
    cores (looked at again after a tenth of a second at most: reading /proc costs about 0.1 ms)."""
    global _sample
    if _chosen is not None:
        return _chosen
    now = time.monotonic()
    if now - _sample[0] > 0.1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _sample = now, (max(1, cores - _other_runnable()) if cores > 1 else 1)
    return _sample[1]


_sample = (-1.0, 1)  # (when, free cores) of the last look


def _other_runnable():
    """Tasks of other processes that are running or waiting for a core now (0 where Linux's /proc is absent)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        ours = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as f:
                ours += f.read().rpartition(")")[2].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - ours)


def in_row_blocks(fn, rows):
    """fn(start, stop) over `rows` rows split into one block per loop_threads() thread, run at once on a
    small pool (NumPy releases the GIL inside a ufunc on a large array, so the blocks use the cores
    that a single ufunc would leave idle); fn must only write rows start..stop-1 of its outputs."""
    n = min(loop_threads(), rows)
    if n <= 1:
        fn(0, rows)
        return
    bounds = [rows * k // n for k in range(n + 1)]
    futures = [_pool(n).submit(fn, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    fn(bounds[0], bounds[1])  # this thread takes the first block
    for f in futures:
        f.result()


def _pool(n):
    """A pool of at least n - 1 worker threads, made on first use."""
    global _executor, _workers
    if _workers < n - 1:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="tinygrad_seq")
        _workers = n - 1
    return _executor


_executor, _workers = None, 0
