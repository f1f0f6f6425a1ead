"""How many threads NumPy's BLAS (OpenBLAS, MKL ...) uses for the engine's matrix multiplies.

    tg.set_num_threads(2)      # for this process, from now on
    tg.get_num_threads()

Thread pools are set through threadpoolctl, which finds the BLAS library NumPy loaded and
calls its own set-threads function, so it works after NumPy has been imported (environment
variables such as OPENBLAS_NUM_THREADS only work before). It changes the process's BLAS, so
other NumPy code in the process follows the same setting, as with torch.set_num_threads.

Importing tinygrad_seq leaves the BLAS thread count as it was: the library never changes the
process's settings unless asked to here.
"""
import threadpoolctl

__all__ = ["set_num_threads", "get_num_threads"]


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
