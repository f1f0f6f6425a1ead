"""In-process stand-ins for MPI and NCCL, so the distributed code runs in every test run.

ThreadWorld(n).run(fn) calls fn(comm) on n threads, each with a ThreadCommunicator of
rank 0..n-1 that behaves like MPICommunicator: collectives block until every rank has
joined, sums are taken in rank order (so every rank gets bit-identical results, as MPI
gives), and a rank that aborts breaks every pending collective instead of leaving the
others waiting. A collective that is not joined within `timeout` raises, so a mismatched
sequence of collectives fails a test instead of hanging it.

FakeNccl mimics `cupy.cuda.nccl`: get_unique_id(), NcclCommunicator(n, id, rank) with
allReduce and bcast on raw device pointers (here, the addresses of fake-device arrays),
so NCCLCommunicator's pointer, count and dtype handling is what gets tested.
"""
import ctypes
import os
import threading

import numpy


class RankAborted(RuntimeError):
    """Raised in a rank whose collective was broken by another rank's abort."""


class _Rendezvous:
    """n parties exchange one value each; every party gets the list in rank order."""

    def __init__(self, size, timeout):
        self.size, self.timeout = size, timeout
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size

    def exchange(self, rank, value):
        self.slots[rank] = value
        self._wait()
        values = list(self.slots)
        self._wait()  # nobody overwrites a slot before everyone has read
        return values

    def _wait(self):
        try:
            self.barrier.wait(timeout=self.timeout)
        except threading.BrokenBarrierError:
            raise RankAborted("a collective was broken: another rank aborted or never joined") from None


class ThreadWorld:
    def __init__(self, size, timeout=60.0):
        self.size, self.timeout = size, timeout
        self.rendezvous = _Rendezvous(size, timeout)
        self.aborted_by = None
        self.comms = [ThreadCommunicator(self, rank) for rank in range(size)]

    def run(self, fn):
        """[fn(comm) for each rank], run concurrently; re-raises the first rank's exception."""
        results, errors = [None] * self.size, [None] * self.size

        def target(rank):
            try:
                results[rank] = fn(self.comms[rank])
            except BaseException as e:  # noqa: BLE001 (re-raised below, in the test's thread)
                errors[rank] = e
                self.rendezvous.barrier.abort()  # like MPI_Abort: nobody waits for this rank

        threads = [threading.Thread(target=target, args=(rank,), daemon=True) for rank in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timeout * 2)
            if t.is_alive():
                raise TimeoutError("a simulated rank is still running: collectives hang")
        primary = [e for e in errors if e is not None and not isinstance(e, RankAborted)]
        if primary or any(errors):
            raise (primary or [e for e in errors if e is not None])[0]
        return results


class ThreadCommunicator:
    """The Communicator interface of tinygrad_seq.distributed, between threads."""

    device = "cpu"

    def __init__(self, world, rank):
        self.world, self.rank, self.size = world, rank, world.size
        self.local_rank, self.local_size = rank, world.size
        self.array_calls = []  # ("allreduce" | "broadcast", dtype name, size): what travelled "over MPI"

    def _exchange(self, value):
        return self.world.rendezvous.exchange(self.rank, value)

    def barrier(self):
        self._exchange(None)

    def broadcast(self, array, root=0):
        _flat(array)
        self.array_calls.append(("broadcast", array.dtype.name, int(array.size)))
        values = self._exchange(array.copy() if self.rank == root else None)
        if self.rank != root:
            source = values[root]
            if source.shape != array.shape or source.dtype != array.dtype:
                raise ValueError(f"broadcast: root sent {source.shape} {source.dtype}, "
                                 f"rank {self.rank} expects {array.shape} {array.dtype}")
            array[...] = source
        return array

    def allreduce(self, array):
        _flat(array)
        self.array_calls.append(("allreduce", array.dtype.name, int(array.size)))
        values = self._exchange(array.copy())
        if any(v.shape != array.shape or v.dtype != array.dtype for v in values):
            raise ValueError(f"allreduce: mismatched buffers {[(v.shape, v.dtype.name) for v in values]}")
        total = values[0].copy()
        for v in values[1:]:  # rank order: the same rounding on every rank
            total += v
        array[...] = total
        return array

    def broadcast_object(self, obj, root=0):
        return self._exchange(obj)[root]

    def gather_object(self, obj, root=0):
        values = self._exchange(obj)
        return values if self.rank == root else None

    def allgather_object(self, obj):
        return self._exchange(obj)

    def abort(self, code=1):
        self.world.aborted_by = (self.rank, code)
        self.world.rendezvous.barrier.abort()
        raise RankAborted(f"rank {self.rank} aborted with code {code}")


def _flat(array):
    if array.ndim != 1 or not array.flags.c_contiguous:
        raise ValueError(f"expected a flat contiguous buffer, got shape {array.shape}")


# ---- NCCL ------------------------------------------------------------------------------------

class FakeNccl:
    """The part of cupy.cuda.nccl that NCCLCommunicator uses, working on raw pointers."""

    NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32, NCCL_INT64, NCCL_UINT64 = 0, 1, 2, 3, 4, 5
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
    DTYPES = {0: "int8", 1: "uint8", 2: "int32", 3: "uint32", 4: "int64", 5: "uint64",
              6: "float16", 7: "float32", 8: "float64"}

    def __init__(self, timeout=60.0):
        self.timeout = timeout
        self._cliques, self._lock = {}, threading.Lock()
        self.calls = []  # (op, rank, count, dtype name, stream)

    def get_unique_id(self):
        return tuple(os.urandom(128))  # cupy returns a tuple of 128 ints

    def NcclCommunicator(self, ndev, comm_id, rank):  # noqa: N802 (cupy's name)
        with self._lock:
            clique = self._cliques.setdefault(tuple(comm_id), _Rendezvous(ndev, self.timeout))
        if clique.size != ndev or not 0 <= rank < ndev:
            raise ValueError(f"NcclCommunicator: bad ndev {ndev} or rank {rank}")
        return _FakeNcclComm(self, clique, rank)


def _memory(ptr, count, dtype):
    """`count` elements of `dtype` at address `ptr`, as a writable NumPy view."""
    dtype = numpy.dtype(dtype)
    if count == 0:
        return numpy.empty(0, dtype=dtype)
    return numpy.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype=dtype)


class _FakeNcclComm:
    def __init__(self, nccl, clique, rank):
        self.nccl, self.clique, self.rank = nccl, clique, rank

    def _check(self, ptr, count, datatype, stream):
        if not isinstance(ptr, int) or not isinstance(count, int) or not isinstance(stream, int):
            raise TypeError(f"NCCL takes integer pointers, counts and streams, got {ptr!r}, {count!r}, {stream!r}")
        if datatype not in FakeNccl.DTYPES:
            raise ValueError(f"unknown NCCL datatype {datatype!r}")
        return FakeNccl.DTYPES[datatype]

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        dtype = self._check(sendbuf, count, datatype, stream)
        if op != FakeNccl.NCCL_SUM:
            raise NotImplementedError("the fake implements NCCL_SUM only")
        self.nccl.calls.append(("allReduce", self.rank, count, dtype, stream))
        values = self.clique.exchange(self.rank, (_memory(sendbuf, count, dtype).copy(), dtype))
        if any(len(v) != count or d != dtype for v, d in values):
            raise ValueError(f"allReduce: ranks passed different counts or dtypes: "
                             f"{[(len(v), d) for v, d in values]}")
        total = values[0][0].copy()
        for v, _ in values[1:]:
            total += v
        _memory(recvbuf, count, dtype)[...] = total

    def bcast(self, buff, count, datatype, root, stream):
        dtype = self._check(buff, count, datatype, stream)
        self.nccl.calls.append(("bcast", self.rank, count, dtype, stream))
        values = self.clique.exchange(self.rank, _memory(buff, count, dtype).copy() if self.rank == root else None)
        if self.rank != root:
            _memory(buff, count, dtype)[...] = values[root]
