"""How many threads NumPy's BLAS (OpenBLAS, MKL ...) uses for the engine's matrix multiplies.

    tg.set_num_threads(2)      # for this process, from now on
    tg.get_num_threads()

Thread pools are set through threadpoolctl, which finds the BLAS library NumPy loaded and
calls its own set-threads function, so it works after NumPy has been imported (environment
variables such as OPENBLAS_NUM_THREADS only work before). It changes the process's BLAS, so
other NumPy code in the process follows the same setting, as with torch.set_num_threads.

The default, applied when tinygrad_seq is imported, is one thread. The engine's matmuls are
small or medium (a recurrent step multiplies a (B, H) state by an (H, 4H) weight), and on a
2-core machine shared with other work, OpenBLAS's threads wait for each other: measured with
benchmarks/bench_threads.py at load average 4, two threads made the README's LSTM 3.6x slower,
a (T=100, B=64, 128->256) LSTM training step 4.6x slower and even a (512->1024) one 2.6x slower.
On an idle machine a second thread can only pay off where matmuls dominate the time (hidden
sizes of 512 and more); measure before raising it. If any of
TINYGRAD_SEQ_NUM_THREADS, OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS is set, the
user has chosen: TINYGRAD_SEQ_NUM_THREADS is applied, the others are left to the BLAS library.
"""
import os

import threadpoolctl

__all__ = ["set_num_threads", "get_num_threads"]

# Environment variables that mean "the user already chose": the default is not applied then.
USER_SETTINGS = ("TINYGRAD_SEQ_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_pools():
    return [pool for pool in threadpoolctl.threadpool_info() if pool.get("user_api") == "blas"]


def set_num_threads(n):
    """Use `n` BLAS threads for the matrix multiplies (n >= 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """The number of threads NumPy's BLAS uses now (1 when no threaded BLAS is loaded)."""
    return max((pool["num_threads"] for pool in _blas_pools()), default=1)


DEFAULT_THREADS = 1


def apply_default():
    """Set the import-time default (see the module docstring); returns the thread count in force."""
    chosen = os.environ.get("TINYGRAD_SEQ_NUM_THREADS")
    if chosen:
        try:
            set_num_threads(int(chosen))
        except ValueError:
            raise ValueError(f"TINYGRAD_SEQ_NUM_THREADS must be a positive integer, got {chosen!r}") from None
    elif not any(os.environ.get(name) for name in USER_SETTINGS):
        set_num_threads(DEFAULT_THREADS)
    return get_num_threads()
