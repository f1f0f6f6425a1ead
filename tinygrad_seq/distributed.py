"""Data-parallel training over processes and machines: MPI (mpi4py), NCCL (CuPy), or a world of one.

Every process (a *rank*) holds a full copy of the model and trains on its own shard of
each batch. Parameters start equal (broadcast from rank 0); after backward, the gradients
are summed across ranks and divided by the global number of items; every rank then takes
the same optimizer step, so the copies stay bit-identical.

    comm = dist.init()                                  # MPI under mpiexec, else a world of one
    dist.broadcast_parameters(model, comm)
    sampler = dist.DistributedSampler(len(data), comm.size, comm.rank, seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in sampler.batches(local_batch_size):
            loss = loss_fn(model(data[batch]), reduction="sum")   # a sum over the local items
            opt.zero_grad()
            loss.backward()
            dist.average_gradients(params, comm, count=len(batch))  # divided by the global count
            opt.step()

A program started without `mpiexec` is a world of one: `init()` returns a
LocalCommunicator whose collectives do nothing, and mpi4py is never imported. Whether the
process was started by a launcher is read from the environment variables that launchers
set (PMI_* for MPICH's hydra, Intel MPI and Slurm, OMPI_* for Open MPI, PMIX_RANK for PMIx),
not by initialising MPI to ask: MPI_Init without a launcher is slow, prints warnings or
fails on some machines (Open MPI's singleton start, HPC login nodes), and would make
mpi4py a dependency of every single-process run. The opposite mistake is caught too: under
a launcher without mpi4py, `init()` raises instead of letting every process believe it is
rank 0 of a world of one (all would train alone and overwrite each other's checkpoints).

Collectives move flat, contiguous arrays by their buffers (no pickling); only small
Python objects (metrics, shapes, NCCL's id) are pickled. Under MPI, `init()` installs an
excepthook: an uncaught exception on any rank prints that rank's traceback and aborts the
whole job (MPI_Abort), so the other ranks never wait forever in a collective.
"""
import os
import sys
import time
import traceback

from .engine import backend
from .engine.function import enable_grad
from .tensors import Tensor

__all__ = ["Communicator", "LocalCommunicator", "MPICommunicator", "NCCLCommunicator", "init", "get_world",
           "is_main_process", "barrier", "broadcast_parameters", "broadcast_optimizer_state",
           "average_gradients", "GradientAverager", "DistributedOptimizer", "DistributedSampler",
           "manual_seed_per_rank", "all_sum", "all_mean", "DEFAULT_BUCKET_BYTES"]

EXTRA_HELP = ('mpi4py is needed to train on several processes: install the extra with '
              '`pip install -e ".[distributed]"` (it brings mpi4py and an MPI, mpich, so `mpiexec` works)')

# Variables that MPI launchers put in the environment of the processes they start.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK",              # MPICH (hydra), Intel MPI, Slurm --mpi=pmi2
                      "OMPI_COMM_WORLD_SIZE",              # Open MPI
                      "PMIX_RANK",                         # PMIx launchers (Open MPI 5, Slurm --mpi=pmix)
                      "MV2_COMM_WORLD_SIZE")               # MVAPICH

ABORT_GRACE_SECONDS = 1.0  # between printing an uncaught exception and aborting every rank
DEFAULT_BUCKET_BYTES = 25 * 2**20  # as PyTorch DDP's bucket_cap_mb=25; Horovod's fusion threshold is 64 MiB


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{EXTRA_HELP} ({type(e).__name__}: {e})") from None
    return MPI


def _mpi_already_running():
    """mpi4py imported and MPI initialised by the program itself (then we join it)."""
    mpi4py = sys.modules.get("mpi4py.MPI")
    return mpi4py is not None and mpi4py.Is_initialized() and not mpi4py.Is_finalized()


# ---- communicators ----------------------------------------------------------------------

class Communicator:
    """The collectives a data-parallel loop needs (ChainerMN's communicator, reduced).

    rank, size: this process's index and the number of processes; local_rank, local_size:
    the same among the processes of this machine (which GPU to use). Array collectives work
    in place on flat contiguous arrays and must be called by every rank in the same order
    with the same shapes and dtypes; object collectives pickle small Python values.
    """
    rank, size, local_rank, local_size = 0, 1, 0, 1
    device = "cpu"  # where this communicator's array collectives run without staging through the host

    def barrier(self):
        """Return once every rank has called barrier()."""
        raise NotImplementedError

    def broadcast(self, array, root=0):
        """Overwrite `array` on every rank with root's `array` (in place); returns it."""
        raise NotImplementedError

    def allreduce(self, array):
        """Replace `array` on every rank by the elementwise sum over ranks (in place); returns it."""
        raise NotImplementedError

    def broadcast_object(self, obj, root=0):
        """root's `obj` on every rank."""
        raise NotImplementedError

    def gather_object(self, obj, root=0):
        """[obj of rank 0, obj of rank 1, ...] on root, None elsewhere."""
        raise NotImplementedError

    def allgather_object(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        raise NotImplementedError

    def abort(self, code=1):
        """End every rank now (after an error on this one)."""
        os._exit(code)

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class LocalCommunicator(Communicator):
    """A world of one: every collective returns its input."""

    def barrier(self):
        pass

    def broadcast(self, array, root=0):
        _check_root(root, 1)
        return array

    def allreduce(self, array):
        return array

    def broadcast_object(self, obj, root=0):
        _check_root(root, 1)
        return obj

    def gather_object(self, obj, root=0):
        _check_root(root, 1)
        return [obj]

    def allgather_object(self, obj):
        return [obj]


def _check_root(root, size):
    if not 0 <= root < size:
        raise ValueError(f"root {root} is not a rank of a world of size {size}")


def _contiguous_flat(array, where):
    if array.ndim != 1 or not array.flags.c_contiguous:
        raise ValueError(f"{where}: expected a flat contiguous array, got shape {array.shape} "
                         f"(contiguous={bool(array.flags.c_contiguous)})")


class MPICommunicator(Communicator):
    """MPI through mpi4py: buffer-based Allreduce / Bcast on NumPy arrays.

    Arrays of another device (CuPy) are staged through a host copy; use NCCLCommunicator to
    keep GPU arrays on the GPU. `mpi_comm` defaults to MPI.COMM_WORLD.
    """

    def __init__(self, mpi_comm=None):
        MPI = self.MPI = _import_mpi()
        self.comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def barrier(self):
        self.comm.Barrier()

    def _staged(self, array, collective):
        if isinstance(array, backend.ndarray):
            collective(array)
            return array
        host = backend.to_host(array)  # another device: through a host copy
        collective(host)
        array[...] = backend.to_device(host, backend.device_of(array))
        return array

    def broadcast(self, array, root=0):
        _check_root(root, self.size)
        _contiguous_flat(array, "broadcast")
        # as bytes: any dtype (bool, float16) travels unchanged
        return self._staged(array, lambda a: self.comm.Bcast(a.view(backend.dtype("uint8")), root=root))

    def allreduce(self, array):
        _contiguous_flat(array, "allreduce")
        return self._staged(array, lambda a: self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM))

    def broadcast_object(self, obj, root=0):
        _check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def gather_object(self, obj, root=0):
        _check_root(root, self.size)
        return self.comm.gather(obj, root=root)

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code=1):
        self.comm.Abort(code)


class NCCLCommunicator(Communicator):
    """NCCL through CuPy for device arrays; MPI for host arrays, objects and the barrier.

    Each rank uses GPU `local_rank` (device string in `.device`); rank 0 creates NCCL's
    unique id and broadcasts it over MPI. Device arrays are reduced on the GPU on the
    current CuPy stream, never copied to the host. `nccl` (default `cupy.cuda.nccl`) and
    `stream` (a callable returning the stream pointer, default CuPy's current stream) are
    parameters so that tests can run this class on a fake device. Not yet run on a real GPU.
    """

    _DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
               "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8", "int8": "NCCL_INT8"}

    def __init__(self, mpi=None, nccl=None, stream=None, device_kind="cuda"):
        self.mpi = MPICommunicator() if mpi is None else mpi
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self.local_rank, self.local_size = self.mpi.local_rank, self.mpi.local_size
        if nccl is None:
            nccl, current_stream = backend.load_nccl(self.local_rank)
            stream = stream or current_stream
        self.nccl, self._stream = nccl, stream or (lambda: 0)
        self.device = f"{device_kind}:{self.local_rank}"
        unique_id = self.mpi.broadcast_object(nccl.get_unique_id() if self.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _nccl_dtype(self, array):
        name = self._DTYPES.get(array.dtype.name)
        if name is None:
            raise TypeError(f"NCCLCommunicator: dtype {array.dtype} is not supported by NCCL here "
                            f"(supported: {', '.join(self._DTYPES)})")
        return getattr(self.nccl, name)

    def barrier(self):
        self.mpi.barrier()

    def broadcast(self, array, root=0):
        if isinstance(array, backend.ndarray):
            return self.mpi.broadcast(array, root)
        _check_root(root, self.size)
        _contiguous_flat(array, "broadcast")
        data = array.view(backend.dtype("uint8"))  # any dtype, as bytes
        self.comm.bcast(data.data.ptr, data.size, self.nccl.NCCL_UINT8, root, self._stream())
        return array

    def allreduce(self, array):
        if isinstance(array, backend.ndarray):
            return self.mpi.allreduce(array)
        _contiguous_flat(array, "allreduce")
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._nccl_dtype(array),
                            self.nccl.NCCL_SUM, self._stream())
        return array

    def broadcast_object(self, obj, root=0):
        return self.mpi.broadcast_object(obj, root)

    def gather_object(self, obj, root=0):
        return self.mpi.gather_object(obj, root)

    def allgather_object(self, obj):
        return self.mpi.allgather_object(obj)

    def abort(self, code=1):
        self.mpi.abort(code)


# ---- the world: one default communicator per process ------------------------------------

_world = None


def init(kind="auto", install_excepthook=True):
    """Create (once) and return this process's communicator.

    kind: "auto" (MPI when started by an MPI launcher or when MPI is already initialised,
    else a world of one), "mpi", "nccl" (GPU arrays over NCCL, host arrays over MPI) or
    "local". With more than one rank, an excepthook is installed that prints an uncaught
    exception's traceback and aborts every rank (MPI_Abort), so no rank hangs.
    """
    global _world
    if kind not in ("auto", "mpi", "nccl", "local"):
        raise ValueError(f"init: kind must be 'auto', 'mpi', 'nccl' or 'local', got {kind!r}")
    if _world is not None:
        if kind not in ("auto", _kind_of(_world)):
            raise RuntimeError(f"init({kind!r}): this process already has a {type(_world).__name__}")
        return _world
    if kind == "auto":
        kind = "mpi" if launched_by_mpi() or _mpi_already_running() else "local"
    comm = {"local": LocalCommunicator, "mpi": MPICommunicator, "nccl": NCCLCommunicator}[kind]()
    if install_excepthook and comm.size > 1:
        install_abort_on_exception(comm)
    _world = comm
    return comm


def _kind_of(comm):
    return {LocalCommunicator: "local", MPICommunicator: "mpi", NCCLCommunicator: "nccl"}.get(type(comm))


def get_world():
    """The communicator of this process (init("auto") on first use)."""
    return _world if _world is not None else init()


def _comm(comm):
    return get_world() if comm is None else comm


def is_main_process(comm=None):
    """True on rank 0: the rank that prints, writes files and saves checkpoints."""
    return _comm(comm).rank == 0


def barrier(comm=None):
    _comm(comm).barrier()


def install_abort_on_exception(comm):
    """sys.excepthook that prints the traceback (naming the rank) and aborts all ranks."""
    previous = sys.excepthook

    def abort_all(kind, value, tb):
        try:
            text = "".join(traceback.format_exception(kind, value, tb))
            sys.stderr.write(f"[rank {comm.rank} of {comm.size}] uncaught exception, aborting every rank:\n{text}")
            sys.stderr.flush()
            sys.stdout.flush()
            # let the launcher forward this output before MPI_Abort tears the job down (hydra may drop
            # output still in flight); the other ranks are blocked in a collective meanwhile
            time.sleep(ABORT_GRACE_SECONDS)
        finally:
            comm.abort(1)
        previous(kind, value, tb)  # only reached if abort returned (it should not)

    sys.excepthook = abort_all
    return abort_all


# ---- parameters and optimizer state ------------------------------------------------------

def _module_tensors(module_or_params):
    """[(name, Tensor)]: a Module's parameters then buffers, or an iterable of Tensors."""
    if hasattr(module_or_params, "named_parameters"):
        return list(module_or_params.named_parameters()) + list(module_or_params.named_buffers())
    if isinstance(module_or_params, Tensor):
        raise TypeError("expected a Module or an iterable of Tensors, got a single Tensor (pass [tensor])")
    return [(str(k), t) for k, t in enumerate(module_or_params)]


def _layout(named):
    return [(name, tuple(t.shape), t.dtype.str) for name, t in named]


def _same_everywhere(comm, value, what):
    """Raise on every rank (not hang) when `value` differs between ranks."""
    values = comm.allgather_object(value)
    for rank, other in enumerate(values):
        if other != values[0]:
            raise ValueError(f"{what} differ between ranks: rank 0 has {_short(values[0])}, "
                             f"rank {rank} has {_short(other)}")


def _short(value):
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


def broadcast_parameters(module_or_params, comm=None, root=0):
    """Copy root's parameters (and a Module's buffers) into every rank's, in place.

    Call it once after building the model (and after loading a checkpoint on root) so that
    every rank starts from the same values. Names, shapes and dtypes are checked first:
    models that differ between ranks raise on every rank instead of corrupting memory.
    """
    comm = _comm(comm)
    named = _module_tensors(module_or_params)
    if comm.size == 1:
        return
    _same_everywhere(comm, _layout(named), "parameter names, shapes or dtypes")
    for _, t in named:
        if t.array.flags.c_contiguous:
            comm.broadcast(t.array.reshape(-1), root)  # a view: received in place
        else:
            flat = backend.array_namespace(t.array).ascontiguousarray(t.array).reshape(-1)
            comm.broadcast(flat, root)
            t.data = flat.reshape(t.shape)


def broadcast_optimizer_state(optimizer, comm=None, root=0):
    """Give every rank root's optimizer state and hyperparameters (to resume training).

    The structure travels as a small pickled object; every state array travels by its
    buffer. Parameters are matched by position, as in load_state_dict.
    """
    comm = _comm(comm)
    if comm.size == 1:
        return
    state = optimizer.state_dict() if comm.rank == root else None
    skeleton = None
    if comm.rank == root:
        skeleton = {"param_groups": state["param_groups"],
                    "state": {i: {k: (("array", v.shape, v.dtype.str) if backend.is_array(v) else ("value", v))
                                  for k, v in entry.items()} for i, entry in state["state"].items()}}
    skeleton = comm.broadcast_object(skeleton, root)
    xp = backend.namespace("cpu")
    received = {}
    for index, entry in skeleton["state"].items():
        received[index] = {}
        for key, (what, *info) in entry.items():
            if what == "value":
                received[index][key] = info[0]
                continue
            shape, dt = info
            array = state["state"][index][key] if comm.rank == root else xp.empty(shape, dtype=dt)
            flat = xp.ascontiguousarray(array).reshape(-1)
            comm.broadcast(flat, root)
            received[index][key] = flat.reshape(shape)
    if comm.rank != root:
        optimizer.load_state_dict({"state": received, "param_groups": skeleton["param_groups"]})


# ---- gradient averaging in fused buckets -------------------------------------------------

def _bucket_dtype(dtype):
    """float16 gradients are summed in float32 (MPI has no half-precision sum)."""
    return backend.float32 if dtype == backend.float16 else dtype


class GradientAverager:
    """Sums gradients across ranks in a few fused flat buffers, then divides.

    Parameters are grouped by (device, dtype) in their given order and packed into flat
    buckets of at most `bucket_bytes` (a larger parameter gets a bucket of its own;
    bucket_bytes=0 gives one allreduce per parameter, the unfused baseline). Every rank
    builds the same buckets from the same parameter list, so the collectives match.

    A parameter whose gradient is None on some ranks counts as a zero gradient there; it
    gets the averaged gradient on every rank. A parameter with no gradient on any rank
    keeps grad None everywhere, as in one process (so the optimizer skips it everywhere).
    """

    def __init__(self, params, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
        if isinstance(params, Tensor):
            raise TypeError("GradientAverager: expected an iterable of Tensors, got a single Tensor")
        seen, self.params = set(), []
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"GradientAverager: expected Tensors, got {type(p).__name__}")
            if id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
        if not int(bucket_bytes) >= 0:
            raise ValueError(f"GradientAverager: bucket_bytes must be >= 0, got {bucket_bytes}")
        self.comm, self.bucket_bytes = _comm(comm), int(bucket_bytes)
        self._layout_checked = False
        self._plans = {}

    def _plan(self, active):
        """Buckets [(device, dtype, [(param, offset, size)], total)] for the active parameters."""
        plan = self._plans.get(active)
        if plan is None:
            groups = {}
            for p, on in zip(self.params, active):
                if on:
                    groups.setdefault((p.device, _bucket_dtype(p.dtype)), []).append(p)
            plan = []
            for (device, dt), members in groups.items():
                limit = max(self.bucket_bytes // dt.itemsize, 1)
                current, total = [], 0
                for p in members:
                    if current and total + p.numel() > limit:
                        plan.append((device, dt, current, total))
                        current, total = [], 0
                    current.append((p, total, p.numel()))
                    total += p.numel()
                if current:
                    plan.append((device, dt, current, total))
            self._plans[active] = plan
        return plan

    def __call__(self, count=None):
        """Average the gradients; returns the global count (the number of ranks when count is None).

        count=None: every rank's loss is a mean over the same number of items; gradients are
        divided by the number of ranks. count=n: this rank's loss is a *sum* over n items
        (tokens, sequences); gradients are divided by the sum of n over ranks, which gives
        exactly the gradient of the mean over the global batch, whatever each rank's n.
        """
        comm = self.comm
        if comm.size == 1 and count is None:
            return 1
        if not self._layout_checked and comm.size > 1:
            _same_everywhere(comm, _layout((str(k), p) for k, p in enumerate(self.params)),
                             "averaged parameters' shapes or dtypes")
            self._layout_checked = True
        host = backend.namespace("cpu")
        # one small float64 allreduce: the item count and, per parameter, how many ranks have a gradient
        meta = host.empty(len(self.params) + 1, dtype=backend.float64)
        meta[0] = 1.0 if count is None else float(count)
        meta[1:] = [p.grad is not None for p in self.params]
        comm.allreduce(meta)
        denominator = float(meta[0])
        if count is not None and denominator <= 0:
            raise ValueError(f"average_gradients: the global count is {denominator}; at least one rank "
                             "must have a positive count")
        active = tuple(bool(n > 0) for n in meta[1:])
        for device, dt, members, total in self._plan(active):
            # a new bucket every step (on the current device of its kind, as tensor creation does)
            bucket = backend.namespace(device).empty(total, dtype=dt)
            for p, offset, size in members:
                target = bucket[offset:offset + size]
                if p.grad is None:
                    target[...] = 0
                else:
                    target[...] = p.grad.array.reshape(-1)
            comm.allreduce(bucket)
            bucket /= denominator
            for p, offset, size in members:
                # each gradient becomes a view of this step's bucket: no copy, no aliasing between steps
                grad = bucket[offset:offset + size].reshape(p.shape)
                p.grad = Tensor._make(grad if grad.dtype == p.dtype else grad.astype(p.dtype), None, 0)
        for p, on in zip(self.params, active):
            if not on:
                p.grad = None
        return denominator if count is not None else comm.size


def average_gradients(params, comm=None, count=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
    """Average `params`' gradients across ranks in fused buckets; see GradientAverager.__call__.

    Returns the global count (sum of `count` over ranks), or the number of ranks when
    count is None. Call it after backward and before clipping and the optimizer step.
    """
    return GradientAverager(params, comm, bucket_bytes)(count)


class DistributedOptimizer:
    """Wraps an optimizer so that step() first averages the gradients across ranks.

    step(count=n) passes n to the averaging (see average_gradients). To clip or inspect the
    averaged gradients before the update, call synchronize(count) first; the following
    step() then does not average again. Everything else (zero_grad, param_groups,
    state_dict, ...) is the wrapped optimizer's.
    """

    def __init__(self, optimizer, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.optimizer = optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.averager = GradientAverager(params, comm, bucket_bytes)
        self.comm = self.averager.comm
        self._synchronized = False

    def synchronize(self, count=None):
        """Average the gradients now; returns the global count."""
        total = self.averager(count)
        self._synchronized = True
        return total

    def step(self, closure=None, count=None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        if not self._synchronized:
            self.averager(count)
        self._synchronized = False
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none=True):
        self._synchronized = False
        self.optimizer.zero_grad(set_to_none)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __repr__(self):
        return f"DistributedOptimizer({self.comm!r},\n{self.optimizer!r})"


# ---- data: sharded indices -----------------------------------------------------------------

class DistributedSampler:
    """This rank's share of a data set's indices, reshuffled every epoch.

    Every rank draws the same permutation (from seed + epoch, not from the rank) and takes
    every num_replicas-th index starting at its rank, so the shards are disjoint. By
    default nothing is added or dropped: every example is used exactly once per epoch, and
    when the length is not divisible the first len % num_replicas ranks get one index
    more. pad=True repeats the first indices to make every shard equally long (PyTorch's
    DistributedSampler with drop_last=False: a few examples are seen twice per epoch);
    drop_last=True instead drops the tail (a few examples are not seen that epoch).

    batches(b) cuts the shard into the same number of batches on every rank (a rank whose
    shard is shorter gets a shorter, possibly empty, last batch), so every rank makes the
    same number of collective calls. Step k's batches over all ranks together are exactly
    positions [k*b*R, (k+1)*b*R) of the epoch's permutation: with count-weighted averaging,
    R ranks with batch b give the same updates as one process with batch b*R.
    """

    def __init__(self, dataset_or_len, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False,
                 pad=False, comm=None):
        n = dataset_or_len if isinstance(dataset_or_len, int) else len(dataset_or_len)
        if num_replicas is None or rank is None:
            world = _comm(comm)
            num_replicas = world.size if num_replicas is None else num_replicas
            rank = world.rank if rank is None else rank
        if n < 0 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: need length >= 0, num_replicas >= 1 and 0 <= rank < "
                             f"num_replicas, got {n}, {num_replicas}, {rank}")
        if pad and drop_last:
            raise ValueError("DistributedSampler: pad=True and drop_last=True exclude each other")
        self.length, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.pad = bool(shuffle), int(seed), bool(drop_last), bool(pad)
        self.epoch = 0
        if drop_last:
            self.total_size = n - n % num_replicas
        elif pad:
            self.total_size = -(-n // num_replicas) * num_replicas
        else:
            self.total_size = n
        self.max_shard = -(-self.total_size // num_replicas)  # the longest shard's length

    def set_epoch(self, epoch):
        """Choose the epoch whose permutation __iter__ and batches() use (call on every rank)."""
        self.epoch = int(epoch)

    def _global_order(self):
        host = backend.namespace("cpu")
        if self.shuffle:
            order = host.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        else:
            order = host.arange(self.length)
        if self.total_size > self.length:  # pad=True: repeat from the start (wrapping for tiny sets)
            order = host.resize(order, self.total_size)
        return order[:self.total_size]

    def indices(self):
        """This rank's indices for the current epoch (a NumPy int64 array)."""
        return self._global_order()[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        rest = self.total_size - self.rank
        return 0 if rest <= 0 else -(-rest // self.num_replicas)

    def batches(self, batch_size):
        """This rank's indices cut into ceil(max_shard / batch_size) arrays (equal on every rank)."""
        if batch_size < 1:
            raise ValueError(f"DistributedSampler.batches: batch_size must be >= 1, got {batch_size}")
        mine = self.indices()
        steps = -(-self.max_shard // batch_size)
        return [mine[k * batch_size:(k + 1) * batch_size] for k in range(steps)]


# ---- randomness and metrics --------------------------------------------------------------------

def manual_seed_per_rank(seed, comm=None):
    """Seed the engine's random streams (dropout) differently on every rank, from one seed.

    Rank 0 uses `seed` itself (a world of one behaves as with manual_seed(seed)); rank r > 0
    uses a seed mixed from (seed, r) by NumPy's SeedSequence. Seed with the same value on
    every rank before building the model (or broadcast the parameters) and call this
    afterwards, so that the initial weights agree and the dropout masks do not.
    Returns the seed this rank uses.
    """
    rank = _comm(comm).rank
    if rank == 0:
        derived = int(seed)
    else:
        host = backend.namespace("cpu")
        derived = int(host.random.SeedSequence([int(seed), rank]).generate_state(1, dtype="uint64")[0] >> 1)
    backend.manual_seed(derived)
    return derived


def all_sum(values, comm=None):
    """Sum a number or a sequence of numbers over ranks, in float64 (one allreduce).

    loss_sum, tokens = dist.all_sum([loss_sum, tokens]) gives every rank the global values;
    the global mean loss is then loss_sum / tokens.
    """
    comm = _comm(comm)
    single = not isinstance(values, (list, tuple))
    host = backend.namespace("cpu")
    buf = host.array([values] if single else list(values), dtype=backend.float64).reshape(-1)
    comm.allreduce(buf)
    return float(buf[0]) if single else [float(v) for v in buf]


def all_mean(values, comm=None):
    """The mean over ranks of a number or a sequence of numbers (each rank weighted equally)."""
    comm = _comm(comm)
    total = all_sum(values, comm)
    return total / comm.size if not isinstance(total, list) else [v / comm.size for v in total]
