"""How many threads NumPy's BLAS (OpenBLAS, MKL ...) uses, and how the library's loops pick theirs.

    tg.set_num_threads(2)      # NumPy's BLAS, for this process, from now on
    tg.get_num_threads()       # NumPy's BLAS, now

set_num_threads and get_num_threads act on the BLAS library NumPy loaded, found through
threadpoolctl (which calls the library's own set-threads function, so it works after NumPy
was imported; environment variables such as OPENBLAS_NUM_THREADS only work before). Other
BLAS libraries in the process (PyTorch's, scikit-learn's) are left alone, as
torch.set_num_threads leaves NumPy's.

Importing tinygrad_seq changes nothing. While other tasks are using the cores, the library's own
matrix multiplies run on the cores no other task is using at that moment (the runnable tasks of
/proc/loadavg minus this process's own, at least one), and NumPy's BLAS is restored after each:
every backward pass and every captured loop is one such block (`limited`), and a matmul run
outside one checks for itself (`limit_now`). On an idle machine, or once the program has called
set_num_threads, the BLAS is left as it is. OpenBLAS's threads wait by spinning, so a second
thread on a core another process is using makes a small matmul several times slower, not
faster. The wide log-softmax splits its rows over as many threads (`in_row_blocks`).
"""
import concurrent.futures
import contextlib
import os
import sys
import time

import threadpoolctl

__all__ = ["set_num_threads", "get_num_threads", "blas_threads", "loop_threads", "limit_now", "limited",
           "in_row_blocks"]

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
    """How many threads the library's own parallel work uses: set_num_threads's count if the program set one,
    else the cores no other task is using now (looked at again after a tenth of a second at most)."""
    global _sample
    if _chosen is not None:
        return _chosen
    now = time.monotonic()
    if now - _sample[0] > 0.1:
        other = _other_runnable()
        _sample = now, max(1, _ncores - min(other, _sample[2])), other  # busy at two looks running: not a blip
    return _sample[1]


_sample = (-1.0, 1, 0)  # (when, free cores, other tasks) of the last look


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_ncores = _cores()  # the cores this process may run on


def limit_now():
    """The thread count a library matmul should give NumPy's BLAS now: loop_threads() while other tasks use
    cores, or None to leave the BLAS alone (an idle machine, a count the program set, or inside `limited`)."""
    if _chosen is not None or _inside:
        return None
    n = loop_threads()
    return None if n >= _ncores else n


@contextlib.contextmanager
def limited():
    """A block of the library's work (a backward pass, a captured loop): NumPy's BLAS at loop_threads()
    threads while other tasks use cores, restored after; the matmuls inside do not check again."""
    global _inside
    n = limit_now()
    if n is None:
        yield
        return
    _inside += 1
    try:
        with blas_threads(n):
            yield
    finally:
        _inside -= 1


_inside = 0  # limited blocks open now (in any thread: the BLAS setting is the process's)


def _other_runnable():
    """Tasks of other processes that are running or waiting for a core now (0 where Linux's /proc is absent)."""
    try:  # our BLAS threads start and stop all the time: one running at the look before or after the load is
        ours = _running_here()  # read may be counted in it (counting ours once made an idle machine look busy)
        running = int(_read("/proc/loadavg").split()[3].split(b"/")[0])
        ours = max(ours, _running_here())
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - ours)


def _running_here():
    """This process's threads that are running or waiting for a core now."""
    return sum(_read(f"/proc/self/task/{task}/stat").rpartition(b")")[2].split()[0] == b"R"
               for task in os.listdir("/proc/self/task"))


def _read(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


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
