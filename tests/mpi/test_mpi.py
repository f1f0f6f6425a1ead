"""The data-parallel scenarios on real MPI ranks (run under `mpiexec -n 2`; skipped otherwise).

Each test runs on every rank; the checks that compare ranks gather their values first, so
every rank asserts the same thing.
"""
import numpy as np
import pytest

from tinygrad_seq import distributed as dist

if not dist.launched_by_mpi():
    pytest.skip('MPI tests: run them with `mpiexec -n 2 python -m pytest -q tests/mpi` '
                '(needs pip install -e ".[distributed]")', allow_module_level=True)

import distributed_scenarios as sc  # noqa: E402


@pytest.fixture(autouse=True)
def two_or_more(comm):
    if comm.size < 2:
        pytest.skip("needs at least 2 ranks (mpiexec -n 2)")


def test_the_world(comm):
    assert isinstance(comm, dist.MPICommunicator) and dist.get_world() is comm
    assert comm.allgather_object(comm.rank) == list(range(comm.size))
    assert comm.local_size == comm.size and 0 <= comm.local_rank < comm.local_size  # one machine here
    assert dist.all_sum([1.0, comm.rank]) == [comm.size, comm.size * (comm.size - 1) / 2]
    comm.barrier()


@pytest.mark.parametrize("kind", ["classifier", "lm"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_ranks_with_shards_equal_one_process_with_the_whole_batch(comm, kind, opt_name):
    initial = sc.initial_state(kind)
    params = sc.train(comm, kind, opt_name, initial, wrapper=opt_name == "adam")
    expected = sc.reference(kind, opt_name, initial, world_size=comm.size)
    assert sc.max_difference(params, expected) <= 1e-12
    prints = comm.allgather_object(sc.fingerprints(params))
    assert all(p == prints[0] for p in prints)  # bit-identical on every rank


def test_mean_of_per_rank_means_differs(comm):
    initial = sc.initial_state("lm")
    params = sc.train(comm, "lm", "sgd", initial, weighting="mean")
    assert sc.max_difference(params, sc.reference("lm", "sgd", initial, world_size=comm.size)) > 1e-4


@pytest.mark.parametrize("counted", [False, True])
def test_fused_allreduce_equals_per_tensor(comm, counted):
    counts = [3 * r + 1 for r in range(comm.size)] if counted else None
    count = None if counts is None else counts[comm.rank]
    fused_total, fused = sc.average_mixed(comm, dist.DEFAULT_BUCKET_BYTES, count)
    single_total, single = sc.average_mixed(comm, 0, count)
    assert fused_total == single_total == (sum(counts) if counted else comm.size)
    assert [None if g is None else g[0].tobytes() for g in fused] == \
        [None if g is None else g[0].tobytes() for g in single]
    for k, (got, want) in enumerate(zip(fused, sc.expected_mixed(comm.size, counts))):
        assert (got is None) == (want is None)
        if want is not None:
            tol = {"float64": 1e-15, "float32": 1e-6, "float16": 2e-3}[sc.MIXED[k][1]]
            np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol)


def test_sampler_shards(comm):
    n = 23
    epochs = sc.sampler_epochs(comm, n, epochs=3, seed=4)
    for shards in epochs:
        merged = sorted(i for shard in shards for i in shard)
        assert merged == list(range(n))  # disjoint, every example once
    orders = [[i for shard in shards for i in shard] for shards in epochs]
    assert orders[0] != orders[1] and orders[1] != orders[2]
    again = sc.sampler_epochs(comm, n, epochs=3, seed=4)
    assert again == epochs


def test_broadcast_parameters_and_optimizer_state(comm):
    gathered = sc.resume_from_rank0(comm)
    assert all(g == gathered[0] for g in gathered)


def test_broadcast_any_dtype(comm):
    for dtype in ("float16", "bool", "int64", "float32"):
        a = (np.arange(5) + comm.rank).astype(dtype)
        comm.broadcast(a, root=comm.size - 1)
        np.testing.assert_array_equal(a, (np.arange(5) + comm.size - 1).astype(dtype))
