"""tinygrad_seq.distributed without a cluster: the world of one, simulated ranks, a fake NCCL.

The data-parallel scenarios (tests/distributed_scenarios.py) run here on ranks simulated by
threads (tests/fake_comm.py); tests/mpi/test_mpi.py runs the same scenarios on real MPI
ranks (`mpiexec -n 2 python -m pytest tests/mpi`, as .ci/run does). The last test here
starts `mpiexec` itself to check that an exception on one rank ends every rank.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distributed_scenarios as sc
import tinygrad_seq as tg
from fake_comm import FakeNccl, RankAborted, ThreadWorld
from tinygrad_seq import distributed as dist
from tinygrad_seq import functional as F

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_world(monkeypatch):
    """No launcher variables, no communicator yet; restored afterwards."""
    for name in dist.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(dist, "_world", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


# ---- a world of one ----------------------------------------------------------------------------

def test_world_of_one_needs_no_mpi4py(fresh_world, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now raises ImportError
    comm = dist.init()
    assert isinstance(comm, dist.LocalCommunicator) and (comm.rank, comm.size, comm.local_rank) == (0, 1, 0)
    assert dist.get_world() is comm and dist.is_main_process()
    a = np.arange(4.0)
    assert comm.allreduce(a) is a and comm.broadcast(a) is a and np.array_equal(a, np.arange(4.0))
    assert comm.allgather_object("x") == ["x"] and comm.gather_object(3) == [3] and comm.broadcast_object(5) == 5
    assert dist.all_sum([2.0, 3]) == [2.0, 3.0] and dist.all_mean(4.0) == 4.0
    dist.barrier()


def test_world_of_one_training_is_unchanged(fresh_world):
    p = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (p * p).sum().backward()
    grad = p.grad
    assert dist.average_gradients([p]) == 1 and p.grad is grad  # count=None: nothing to do
    assert dist.average_gradients([p], count=4) == 4.0  # a summed loss: divided by the count
    np.testing.assert_array_equal(p.grad.numpy(), [0.5, 1.0])
    dist.broadcast_parameters([p])
    np.testing.assert_array_equal(p.numpy(), [1.0, 2.0])


def test_launcher_without_mpi4py_names_the_extra(fresh_world, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[distributed\]"'):
        dist.init()
    assert dist._world is None


@pytest.mark.parametrize("name", dist.LAUNCHER_VARIABLES)
def test_launcher_detection(name):
    assert dist.launched_by_mpi({name: "1"}) and not dist.launched_by_mpi({"PATH": "/bin", "RANK": "0"})


def test_init_checks_its_argument(fresh_world):
    with pytest.raises(ValueError, match="'auto', 'mpi', 'nccl' or 'local'"):
        dist.init("gloo")
    dist.init("local")
    with pytest.raises(RuntimeError, match="already has a LocalCommunicator"):
        dist.init("mpi")


# ---- the sampler -------------------------------------------------------------------------------

def shards(n, replicas, epoch=0, **kwargs):
    samplers = [dist.DistributedSampler(n, replicas, r, **kwargs) for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    return samplers, [list(s) for s in samplers]


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_sampler_covers_every_example_exactly_once_per_epoch(replicas):
    for n in list(range(0, 12)) + [97, 100]:
        samplers, parts = shards(n, replicas, epoch=3, seed=5)
        assert sorted(i for part in parts for i in part) == list(range(n))  # disjoint and complete
        assert [len(s) for s in samplers] == [len(p) for p in parts]
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sampler_same_order_on_every_rank_new_order_each_epoch():
    n, replicas = 50, 3
    orders = []
    for epoch in range(3):
        _, parts = shards(n, replicas, epoch=epoch, seed=7)
        merged = [None] * n
        for r, part in enumerate(parts):
            merged[r::replicas] = part  # each rank holds every replicas-th position of one permutation
        orders.append(merged)
        again = [list(s) for s in shards(n, replicas, epoch=epoch, seed=7)[0]]
        assert again == parts  # the order depends on (seed, epoch) only
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert shards(n, replicas, seed=8)[1] != shards(n, replicas, seed=7)[1]
    assert shards(n, 2, shuffle=False)[1] == [list(range(0, n, 2)), list(range(1, n, 2))]


def test_sampler_padding_and_drop_last_give_equal_shards():
    _, padded = shards(10, 4, pad=True)
    assert [len(p) for p in padded] == [3, 3, 3, 3] and set().union(*map(set, padded)) == set(range(10))
    assert len(sum(padded, [])) == 12  # two examples are seen twice, as in PyTorch's default
    _, dropped = shards(10, 4, drop_last=True)
    assert [len(p) for p in dropped] == [2, 2, 2, 2] and len(set(sum(dropped, []))) == 8
    _, tiny = shards(2, 4, pad=True)  # fewer examples than ranks: wraps around
    assert [len(p) for p in tiny] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="exclude each other"):
        dist.DistributedSampler(10, 2, 0, pad=True, drop_last=True)
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        dist.DistributedSampler(10, 2, 2)


@pytest.mark.parametrize("n,replicas,batch", [(21, 2, 4), (7, 2, 3), (3, 4, 2), (40, 3, 5)])
def test_sampler_batches_align_across_ranks(n, replicas, batch):
    samplers, _ = shards(n, replicas, epoch=1, seed=2)
    per_rank = [s.batches(batch) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1  # the same number of steps on every rank
    order = dist.DistributedSampler(n, 1, 0, seed=2)
    order.set_epoch(1)
    single = order.batches(batch * replicas)  # one process with the whole batch
    assert len(single) == len(per_rank[0])
    for k, whole in enumerate(single):
        assert sorted(np.concatenate([b[k] for b in per_rank]).tolist()) == sorted(whole.tolist())


# ---- training on simulated ranks ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["classifier", "lm"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_two_ranks_with_half_batches_equal_one_process(kind, opt_name):
    initial = sc.initial_state(kind)
    expected = sc.reference(kind, opt_name, initial, world_size=2)
    results = ThreadWorld(2).run(lambda comm: sc.train(comm, kind, opt_name, initial))
    for params in results:
        assert sc.max_difference(params, expected) <= 1e-12
    assert sc.fingerprints(results[0]) == sc.fingerprints(results[1])  # bit-identical across ranks
    assert sc.max_difference(expected, [initial[k] for k in initial]) > 1e-3  # it did train


def test_three_ranks_and_the_optimizer_wrapper():
    initial = sc.initial_state("lm")
    expected = sc.reference("lm", "adam", initial, world_size=3)
    results = ThreadWorld(3).run(lambda comm: sc.train(comm, "lm", "adam", initial, wrapper=True))
    for params in results:
        assert sc.max_difference(params, expected) <= 1e-12
        assert sc.fingerprints(params) == sc.fingerprints(results[0])


def test_mean_of_per_rank_means_is_not_the_global_mean():
    """The control: averaging per-rank mean losses is wrong when ranks hold different numbers of tokens."""
    initial = sc.initial_state("lm")
    expected = sc.reference("lm", "sgd", initial, world_size=2)
    results = ThreadWorld(2).run(lambda comm: sc.train(comm, "lm", "sgd", initial, weighting="mean"))
    assert sc.max_difference(results[0], expected) > 1e-4


# ---- fused averaging ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("counted", [False, True])
def test_fused_allreduce_equals_per_tensor(size, counted):
    counts = [r + 1 for r in range(size)] if counted else None
    runs = {}
    for bucket_bytes in (dist.DEFAULT_BUCKET_BYTES, 0, 40):
        world = ThreadWorld(size)
        out = world.run(lambda comm: sc.average_mixed(comm, bucket_bytes, None if counts is None
                                                      else counts[comm.rank]))
        runs[bucket_bytes] = out
        calls = [len(c.array_calls) for c in world.comms]
        assert len(set(calls)) == 1  # every rank made the same collectives
        # one metadata allreduce, then: two buckets (float64; float32 with float16) / one per tensor /
        # at 40 bytes, float64 [12] [1] and float32 [5] [12] [7 + 1]
        assert calls[0] == {dist.DEFAULT_BUCKET_BYTES: 3, 0: 7, 40: 6}[bucket_bytes]
    expected = sc.expected_mixed(size, counts)
    for bucket_bytes, out in runs.items():
        for total, grads in out:
            assert total == (sum(counts) if counted else size)
            for k, (got, want) in enumerate(zip(grads, expected)):
                assert (got is None) == (want is None), k  # no gradient anywhere: still None
                if want is not None:
                    array, device = got
                    assert array.dtype == np.dtype(sc.MIXED[k][1]) and array.shape == sc.MIXED[k][0]
                    tol = {"float64": 1e-15, "float32": 1e-6, "float16": 2e-3}[sc.MIXED[k][1]]
                    np.testing.assert_allclose(array, want, rtol=tol, atol=tol)
                    assert device == "cpu"
            fused = [None if g is None else g[0].tobytes() for g in grads]
            per_tensor = [None if g is None else g[0].tobytes() for g in runs[0][0][1]]
            assert fused == per_tensor  # bit for bit, whatever the bucketing


def test_averaging_refuses_models_that_differ_between_ranks():
    def run(comm):
        p = tg.Tensor(np.zeros(3 + comm.rank), requires_grad=True)
        p.grad = tg.Tensor(np.ones(3 + comm.rank))
        with pytest.raises(ValueError, match="differ between ranks"):
            dist.average_gradients([p], comm)
        with pytest.raises(ValueError, match="differ between ranks"):
            dist.broadcast_parameters([p], comm)
    ThreadWorld(2).run(run)


def test_broadcast_parameters_buffers_and_optimizer_state():
    results = ThreadWorld(2).run(sc.resume_from_rank0)
    assert results[0] == results[1]
    (weights0, state0), (weights1, state1) = results[0]
    assert weights0 == weights1 and state0 == state1 and len(state0) > 2


def test_metrics_and_objects_across_ranks():
    def run(comm):
        return (dist.all_sum([comm.rank, 1.0], comm), dist.all_mean(float(comm.rank), comm),
                comm.gather_object(comm.rank * 10), dist.is_main_process(comm))
    out = ThreadWorld(3).run(run)
    assert [o[0] for o in out] == [[3.0, 3.0]] * 3 and [o[1] for o in out] == [1.0] * 3
    assert [o[2] for o in out] == [[0, 10, 20], None, None] and [o[3] for o in out] == [True, False, False]


# ---- NCCL, on the fake device ------------------------------------------------------------------

def nccl_world(size):
    world, nccl = ThreadWorld(size), FakeNccl()
    comms = {}

    def make(comm):
        comms[comm.rank] = dist.NCCLCommunicator(mpi=comm, nccl=nccl, stream=lambda: 0, device_kind="fake")
        return comms[comm.rank]
    world.run(make)
    return world, nccl, comms


def test_nccl_averages_device_gradients_without_host_copies():
    counts = [5, 2]
    world, nccl, comms = nccl_world(2)
    out = world.run(lambda comm: sc.average_mixed(comms[comm.rank], 64, counts[comm.rank], device="fake:0"))
    expected = sc.expected_mixed(2, counts)
    for total, grads in out:
        assert total == 7
        for k, (got, want) in enumerate(zip(grads, expected)):
            assert (got is None) == (want is None)
            if want is not None:
                tol = {"float64": 1e-15, "float32": 1e-6, "float16": 2e-3}[sc.MIXED[k][1]]
                np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol)
                assert got[1] == "fake:0"
    # over MPI: the unique id (an object) and the small host metadata buffer only
    assert [c.array_calls for c in world.comms] == [[("allreduce", "float64", len(sc.MIXED) + 1)]] * 2
    for rank in (0, 1):  # over NCCL: every bucket, on the device
        assert [(n, d) for op, r, n, d, _ in nccl.calls if op == "allReduce" and r == rank] == _expected_nccl_buckets()


def _expected_nccl_buckets():
    """The buckets of MIXED at 64 bytes: float64 [12 + 1 | ...], float32 (float16 joins it) in 16-float cuts."""
    averager = dist.GradientAverager([tg.Tensor(np.zeros(s, dtype=d), requires_grad=True) for s, d in sc.MIXED],
                                     dist.LocalCommunicator(), 64)
    active = tuple(k != 5 for k in range(len(sc.MIXED)))
    return [(total, dt.name) for _, dt, _, total in averager._plan(active)]


def test_nccl_broadcasts_parameters_on_the_device():
    world, nccl, comms = nccl_world(2)

    def run(comm):
        with sc.BUILD:
            tg.manual_seed(0)
            model = sc.Classifier().to("fake")
        if comm.rank == 1:
            for p in model.parameters():
                p.array[...] *= 2.0
        dist.broadcast_parameters(model, comms[comm.rank])
        return [p.numpy() for p in model.parameters()], [p.device for p in model.parameters()]
    (w0, d0), (w1, d1) = world.run(run)
    assert sc.fingerprints(w0) == sc.fingerprints(w1) and set(d0) == set(d1) == {"fake:0"}
    assert all(op == "bcast" for op, *_ in nccl.calls) and len(nccl.calls) == 2 * len(w0)


def test_nccl_refuses_unsupported_dtypes():
    world, nccl, comms = nccl_world(1)
    with pytest.raises(TypeError, match="not supported by NCCL"):
        comms[0].allreduce(tg.Tensor(np.zeros(3, dtype=np.uint16), device="fake").array)


# ---- randomness ----------------------------------------------------------------------------------

class _Rank(dist.LocalCommunicator):
    def __init__(self, rank):
        self.rank, self.size = rank, 4


def test_per_rank_seeds_differ_and_rank_zero_keeps_the_seed():
    seeds = [dist.manual_seed_per_rank(3, _Rank(r)) for r in range(4)]
    assert seeds[0] == 3 and len(set(seeds)) == 4
    assert seeds == [dist.manual_seed_per_rank(3, _Rank(r)) for r in range(4)]
    masks = []
    for r in range(2):
        dist.manual_seed_per_rank(3, _Rank(r))
        masks.append(F.dropout(tg.ones(100), 0.5).numpy())
    assert not np.array_equal(masks[0], masks[1])
    tg.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(tg.ones(100), 0.5).numpy(), masks[0])


# ---- failure: one rank's exception ends every rank --------------------------------------------

def test_excepthook_prints_the_traceback_and_aborts(monkeypatch, capsys):
    world = ThreadWorld(2)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(dist, "ABORT_GRACE_SECONDS", 0.0)
    hook = dist.install_abort_on_exception(world.comms[1])
    try:
        raise KeyError("lost")
    except KeyError:
        with pytest.raises(RankAborted):
            hook(*sys.exc_info())
    assert world.aborted_by == (1, 1)
    err = capsys.readouterr().err
    assert "[rank 1 of 2]" in err and "Traceback" in err and "KeyError: 'lost'" in err


def _mpiexec():
    candidate = Path(sys.executable).parent / "mpiexec"  # the venv's, from the mpich wheel
    return str(candidate) if candidate.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
                               reason='needs mpi4py and mpiexec: pip install -e ".[distributed]"')


@needs_mpi
def test_an_exception_on_one_rank_ends_every_rank(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import numpy as np\n"
        "from tinygrad_seq import distributed as dist\n"
        "comm = dist.init()\n"
        "assert comm.size == 2\n"
        "if comm.rank == 1:\n"
        "    raise ValueError('deliberate failure on rank 1')\n"
        "comm.allreduce(np.ones(3))  # rank 0 would wait here forever\n"
        "print('rank 0 finished')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for name in dist.LAUNCHER_VARIABLES:  # when this suite itself runs under mpiexec
        env.pop(name, None)
    start = time.monotonic()
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert output, f"mpiexec exited with {proc.returncode} and printed nothing"
    assert "Traceback" in output and "ValueError: deliberate failure on rank 1" in output, output
    assert "[rank 1 of 2]" in output and "rank 0 finished" not in output, output
    assert elapsed < 30, f"took {elapsed:.1f} s"
