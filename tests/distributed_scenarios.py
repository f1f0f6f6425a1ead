"""Data-parallel scenarios, each a function of a communicator, run on several transports.

tests/test_distributed.py runs them on simulated ranks (threads, tests/fake_comm.py) in every
test run; tests/mpi/test_mpi.py runs the same functions on real MPI ranks under
`mpiexec -n 2`. Each returns plain values (NumPy arrays, lists) for the test to check.
"""
import threading

import numpy as np

import tinygrad_seq as tg
from tinygrad_seq import distributed as dist
from tinygrad_seq import functional as F
from tinygrad_seq import nn, optim

DT = tg.float64
# The engine's grad mode (no_grad in nn.init) and random streams are per process, not per
# thread: simulated ranks build their models one at a time. (A no-op lock under MPI.)
BUILD = threading.Lock()


def build(make_model):
    """Call a collective (e.g. broadcast_parameters) before training, so no rank builds while another trains."""
    with BUILD:
        return make_model()


# ---- models and data (the same on every rank: drawn from fixed seeds) --------------------------

class Classifier(nn.Module):
    """LSTM over variable-length sequences, a linear head on the last valid state."""

    def __init__(self):
        self.lstm = nn.LSTM(3, 6, num_layers=2, dtype=DT)
        self.head = nn.Linear(6, 4, dtype=DT)

    def loss(self, x, y, lengths, reduction):
        _, (h, _) = self.lstm(tg.Tensor(x), lengths=lengths)
        return F.cross_entropy(self.head(h[-1]), tg.Tensor(y), reduction=reduction)


class LanguageModel(nn.Module):
    """Embedding -> LSTM -> Linear; padded targets are ignore_index and do not count."""

    def __init__(self, vocab=7):
        self.embed = nn.Embedding(vocab, 4, dtype=DT)
        self.lstm = nn.LSTM(4, 5, dtype=DT)
        self.head = nn.Linear(5, vocab, dtype=DT)

    def loss(self, x, y, lengths, reduction):
        out, _ = self.lstm(self.embed(tg.Tensor(x)), lengths=lengths)
        T, B, H = out.shape
        return F.cross_entropy(self.head(out.reshape(T * B, H)), tg.Tensor(y.reshape(-1)), reduction=reduction)


def classifier_data(n=21, t_max=9):
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, t_max + 1, size=n)
    x = rng.standard_normal((t_max, n, 3))
    y = rng.integers(0, 4, size=n)
    return x, y, lengths


def lm_data(n=21, t_max=10, vocab=7):
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, t_max + 1, size=n)
    x = rng.integers(0, vocab, size=(t_max, n))
    y = rng.integers(0, vocab, size=(t_max, n))
    y[np.arange(t_max)[:, None] >= lengths[None, :]] = -100  # padding: not a token
    return x, y, lengths


def batch_of(data, index, kind):
    """Inputs of the sequences `index`, trimmed to their longest length; and the item count."""
    x, y, lengths = data
    lengths = lengths[index]
    t = int(lengths.max())
    if kind == "classifier":
        return (x[:t, index], y[index], lengths.tolist()), len(index)
    yb = y[:t, index]
    return (x[:t, index], yb, lengths.tolist()), int((yb != -100).sum())


MODELS = {"classifier": (Classifier, classifier_data), "lm": (LanguageModel, lm_data)}
OPTIMIZERS = {"sgd": lambda p: optim.SGD(p, lr=0.3, momentum=0.9),
              "adam": lambda p: optim.Adam(p, lr=0.02)}


def initial_state(kind, seed=0):
    """The starting weights, from a fixed seed (made before any simulated rank starts:
    the engine's random streams are per process, not per thread)."""
    tg.manual_seed(seed)
    return MODELS[kind][0]().state_dict()


def train(comm, kind, opt_name, initial, epochs=2, local_batch=4, weighting="count", wrapper=False, seed=0):
    """Data-parallel training on `comm` from the weights `initial`; returns the final parameters.

    Rank 0 starts from `initial`, the other ranks from other weights, so only
    broadcast_parameters makes them agree. weighting="count": each rank's
    loss is a sum over its items and the gradients are divided by the global count (the
    right way); "mean": each rank's loss is a mean and the per-rank gradients are averaged
    (the mean of per-rank means: wrong when ranks hold different numbers of items).
    """
    make_model, make_data = MODELS[kind]
    model = build(make_model)
    model.load_state_dict(initial if comm.rank == 0 else {k: v + 1.0 for k, v in initial.items()})
    dist.broadcast_parameters(model, comm)
    params = list(model.parameters())
    opt = OPTIMIZERS[opt_name](params)
    if wrapper:
        opt = dist.DistributedOptimizer(opt, comm, bucket_bytes=512)
    data = make_data()
    sampler = dist.DistributedSampler(len(data[2]), comm.size, comm.rank, shuffle=True, seed=seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index in sampler.batches(local_batch):
            opt.zero_grad()
            count = 0
            if len(index):
                inputs, count = batch_of(data, index, kind)
                model.loss(*inputs, reduction="sum" if weighting == "count" else "mean").backward()
            weight = count if weighting == "count" else None
            if wrapper:
                opt.step(count=weight)
            else:
                dist.average_gradients(params, comm, count=weight, bucket_bytes=512)
                opt.step()
    return [p.array.copy() for p in params]


def reference(kind, opt_name, initial, world_size, epochs=2, local_batch=4, seed=0):
    """One process, the whole batch (world_size * local_batch), the loss a mean over items."""
    make_model, make_data = MODELS[kind]
    model = make_model()
    model.load_state_dict(initial)
    params = list(model.parameters())
    opt = OPTIMIZERS[opt_name](params)
    data = make_data()
    sampler = dist.DistributedSampler(len(data[2]), 1, 0, shuffle=True, seed=seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index in sampler.batches(local_batch * world_size):
            opt.zero_grad()
            inputs, _ = batch_of(data, index, kind)
            model.loss(*inputs, reduction="mean").backward()
            opt.step()
    return [p.array.copy() for p in params]


def max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def fingerprints(arrays):
    """The exact bytes of each array (to compare across ranks bit for bit)."""
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


# ---- gradient averaging on mixed parameters ---------------------------------------------------

MIXED = [((3, 4), "float64"), ((5,), "float32"), ((), "float64"), ((2, 3, 2), "float32"), ((7,), "float16"),
         ((4, 4), "float64"), ((1,), "float32")]


def mixed_gradients(rank, size):
    """Per rank: gradients for MIXED, None where this rank (or every rank) has none."""
    rng = np.random.default_rng(100 + rank)
    grads = []
    for k, (shape, dt) in enumerate(MIXED):
        if k == 5 or (k == 1 and rank == 0) or (k == 2 and rank == size - 1 and size > 1):
            grads.append(None)  # 5: nobody; 1: not rank 0; 2: not the last rank
        else:
            grads.append(rng.standard_normal(shape).astype(dt))
    return grads


def average_mixed(comm, bucket_bytes, count=None, device="cpu"):
    """Run average_gradients on MIXED with this rank's gradients; returns the results (host)."""
    params = [tg.Tensor(np.zeros(shape, dtype=dt), requires_grad=True, device=device) for shape, dt in MIXED]
    for p, g in zip(params, mixed_gradients(comm.rank, comm.size)):
        p.grad = None if g is None else tg.Tensor(g, device=device)
    total = dist.average_gradients(params, comm, count=count, bucket_bytes=bucket_bytes)
    return total, [None if p.grad is None else (p.grad.numpy(), p.grad.device) for p in params]


def expected_mixed(size, count_per_rank=None):
    """What averaging MIXED must give, computed per tensor in float64."""
    per_rank = [mixed_gradients(r, size) for r in range(size)]
    denominator = size if count_per_rank is None else sum(count_per_rank)
    out = []
    for k, (shape, dt) in enumerate(MIXED):
        present = [g[k] for g in per_rank if g[k] is not None]
        if not present:
            out.append(None)
        else:
            out.append(sum(g.astype(np.float64) for g in present) / denominator)
    return out


# ---- the sampler across ranks ----------------------------------------------------------------

def sampler_epochs(comm, n, epochs=3, **kwargs):
    """Every rank's indices for each epoch, gathered on every rank: [epoch][rank] -> list."""
    sampler = dist.DistributedSampler(n, comm.size, comm.rank, **kwargs)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append(comm.allgather_object(list(sampler)))
    return out


# ---- broadcasting optimizer state ----------------------------------------------------------------

def resume_from_rank0(comm):
    """Rank 0 trains a little; broadcasting parameters and Adam state makes every rank resume equal."""
    with BUILD:
        tg.manual_seed(comm.rank)  # different weights everywhere
        model = Classifier()
    comm.barrier()  # every rank has built its model before rank 0 records a graph
    params = list(model.parameters())
    opt = optim.Adam(params, lr=0.01, betas=(0.8, 0.9))
    if comm.rank == 0:
        inputs, _ = batch_of(classifier_data(), np.arange(6), "classifier")
        for _ in range(3):
            opt.zero_grad()
            model.loss(*inputs, reduction="mean").backward()
            opt.step()
    dist.broadcast_parameters(model, comm)
    dist.broadcast_optimizer_state(opt, comm)
    state = opt.state_dict()
    flat = [state["param_groups"][0]["betas"], state["param_groups"][0]["lr"]]
    for index in sorted(state["state"]):
        entry = state["state"][index]
        flat += [entry["step"], entry["exp_avg"], entry["exp_avg_sq"]]
    return comm.allgather_object((fingerprints([p.array for p in params]),
                                  [f if not isinstance(f, np.ndarray) else f.tobytes() for f in flat]))
