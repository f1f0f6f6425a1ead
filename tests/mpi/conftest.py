"""Tests that need real MPI ranks: run them with `mpiexec -n 2 python -m pytest -q tests/mpi`.

Every rank runs every test; collectives inside a test pair up across ranks. A failed
assertion on one rank would leave the other waiting in its next collective, so a failure
prints its report at once and aborts every rank (mpiexec then exits non-zero).
"""
import sys

import pytest


def pytest_runtest_logreport(report):
    if report.failed and "mpi4py.MPI" in sys.modules:
        MPI = sys.modules["mpi4py.MPI"]
        if MPI.Is_initialized() and MPI.COMM_WORLD.Get_size() > 1:
            rank = MPI.COMM_WORLD.Get_rank()
            sys.stderr.write(f"\n[rank {rank}] FAILED {report.nodeid} ({report.when}), aborting every rank:\n"
                             f"{report.longreprtext}\n")
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)


@pytest.fixture(scope="session")
def comm():
    from tinygrad_seq import distributed as dist
    return dist.init("mpi")
