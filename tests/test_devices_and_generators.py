"""Devices as objects (tg.device, tg.cuda, tg.accelerator) and random streams of their own
(tg.Generator with the random functions, random_split and the samplers)."""
import copy
import pickle

import numpy as np
import pytest

import tinygrad_seq as tg
from devices import HAS_CUDA
from tinygrad_seq.data import DataLoader, RandomSampler, Subset, TensorDataset, random_split


# ---- tg.device -----------------------------------------------------------------------------

def test_a_device_is_the_string_it_prints():
    dev = tg.device("cuda", 1)
    assert dev == "cuda:1" and dev == tg.device("cuda:1") and str(dev) == "cuda:1" and f"{dev}" == "cuda:1"
    assert (dev.type, dev.index) == ("cuda", 1)
    assert repr(dev) == "device(type='cuda', index=1)" and repr(tg.device("cpu")) == "device(type='cpu')"
    assert tg.device("cpu").index is None and tg.device("cuda") != "cuda:0"  # as torch.device("cuda")
    assert {"cuda:1": 5}[dev] == 5 and {dev: 5}["cuda:1"] == 5
    assert tg.device(dev) is dev and tg.device(type="cuda", index=1) is dev
    assert pickle.loads(pickle.dumps(dev)) == dev and copy.deepcopy(dev).index == 1
    assert isinstance(dev, tg.device) and isinstance(dev, str)


@pytest.mark.parametrize("args, error, message", [
    (("tpu",), RuntimeError, "Expected one of cpu, cuda"),
    (("cuda:x",), RuntimeError, "Invalid device string: 'cuda:x'"),
    (("cuda:0", 1), ValueError, "already has an index"),
    (("cuda", -1), ValueError, "index must be a non-negative integer"),
    ((3.0,), TypeError, "expected a string such as 'cpu'"),
])
def test_bad_devices(args, error, message):
    with pytest.raises(error, match=message):
        tg.device(*args)


def test_tensors_report_device_objects_and_take_them_everywhere(device, tmp_path):
    dev = tg.device(device)
    x = tg.ones(2, device=dev)
    placed = "cpu" if device == "cpu" else f"{device}:0"
    assert isinstance(x.device, tg.device) and x.device == placed and x.device.type == dev.type
    assert x.device.index == (None if device == "cpu" else 0) and tg.device(x.device) is x.device
    assert tg.Tensor([1.0], device=dev).device == x.device and tg.randn(2, device=dev).device == x.device
    cpu = tg.device("cpu")
    assert x.to(cpu).device == "cpu" and x.to(cpu).device is tg.ones(1).device
    layer = tg.nn.Linear(2, 3).to(dev)
    assert layer.weight.device == x.device
    tg.save({"w": layer.weight}, tmp_path / "w.npz")
    assert tg.load(tmp_path / "w.npz", map_location=cpu)["w"].device == "cpu"


def test_module_to_takes_a_dtype_or_a_tensor_as_pytorch():
    layer = tg.nn.Linear(2, 3)
    assert layer.to(tg.float64).weight.dtype == np.float64
    assert layer.to(tg.ones(1)).weight.dtype == np.float32
    assert layer.half().weight.dtype == np.float16


def test_cuda_and_accelerator_answer_from_cupy():
    assert tg.cuda.is_available() is HAS_CUDA and tg.accelerator.is_available() is HAS_CUDA
    assert (tg.cuda.device_count() > 0) is HAS_CUDA and tg.accelerator.device_count() == tg.cuda.device_count()
    assert tg.accelerator.current_accelerator() == (tg.device("cuda") if HAS_CUDA else None)
    dev = tg.device("cuda" if tg.cuda.is_available() else "cpu")  # the usual first lines of a program
    assert tg.zeros(1, device=dev).device.type == dev.type
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match=r"CuPy is needed .* tg.cuda.is_available\(\)"):
            tg.zeros(1, device="cuda")
        with pytest.raises(RuntimeError, match="CuPy is needed"):
            tg.cuda.current_device()


# ---- tg.Generator --------------------------------------------------------------------------

def test_generators_are_reproducible_and_apart_from_the_global_stream():
    assert tg.Generator().initial_seed() == 67280421310721  # as a fresh torch.Generator()
    assert np.array_equal(tg.randn(3, generator=tg.Generator()).numpy(), tg.randn(3, generator=tg.Generator()).numpy())
    tg.manual_seed(0)
    expected = tg.rand(4).numpy()
    tg.manual_seed(0)
    g = tg.Generator().manual_seed(7)
    first = [tg.rand(2, generator=g), tg.randint(0, 10, (5,), generator=g), tg.randperm(6, generator=g)]
    assert np.array_equal(tg.rand(4).numpy(), expected)  # the global stream did not move
    g.manual_seed(7)
    again = [tg.rand(2, generator=g), tg.randint(0, 10, (5,), generator=g), tg.randperm(6, generator=g)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, again))
    state = g.get_state()
    drawn = tg.randn(3, generator=g).numpy()
    assert np.array_equal(tg.randn(3, generator=g.set_state(state)).numpy(), drawn)
    assert g.manual_seed(-1).initial_seed() == 2**64 - 1
    seed = g.seed()
    assert isinstance(seed, int) and g.initial_seed() == seed


def test_randint_and_randperm():
    g = tg.Generator().manual_seed(1)
    x = tg.randint(3, 9, (200,), generator=g)
    assert x.dtype == np.int64 and x.shape == (200,) and set(x.tolist()) == set(range(3, 9))
    assert tg.randint(5, (2, 3)).shape == (2, 3) and tg.randint(high=5, size=(4,)).max().item() < 5
    assert tg.randint(0, 2, (3,), dtype=tg.float64).dtype == np.float64
    assert sorted(tg.randperm(50, generator=g).tolist()) == list(range(50)) and tg.randperm(0).shape == (0,)
    with pytest.raises(RuntimeError, match="expected low < high"):
        tg.randint(3, 3, (2,))
    with pytest.raises(TypeError, match=r"randint\(high, size\)"):
        tg.randint(4)


def test_a_generator_draws_on_its_own_device(device):
    g = tg.Generator(device=device)
    assert g.device.type == device
    assert tg.randn(3, generator=g, device=device).device == g.device
    assert sorted(tg.randperm(8, generator=g, device=device).tolist()) == list(range(8))
    if device != "cpu":
        with pytest.raises(RuntimeError, match="the generator is on cpu but the result goes to"):
            tg.randn(2, generator=tg.Generator(), device=device)
    with pytest.raises(TypeError, match="generator must be a tg.Generator"):
        tg.rand(2, generator=np.random.default_rng(0))


# ---- random_split and samplers -------------------------------------------------------------

def test_random_split_with_lengths_or_fractions():
    data = TensorDataset(tg.arange(10))
    parts = random_split(data, [3, 7], generator=tg.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [3, 7] and all(isinstance(p, Subset) for p in parts)
    values = sorted(int(p[i][0].item()) for p in parts for i in range(len(p)))
    assert values == list(range(10))
    again = random_split(data, [3, 7], generator=tg.Generator().manual_seed(0))
    assert parts[0].indices == again[0].indices
    # fractions: floor(n * f) each, then the remainder one by one from the first split (PyTorch's rounding)
    assert [len(p) for p in random_split(data, [0.33, 0.33, 0.34])] == [4, 3, 3]
    assert [len(p) for p in random_split(range(11), [0.5, 0.5])] == [6, 5]
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(range(3), [0.9, 0.1])
    with pytest.raises(ValueError, match="sum to 9, not to the length of the dataset"):
        random_split(data, [3, 6])
    with pytest.raises(ValueError, match="fraction at index 0 is not between 0 and 1"):
        random_split(data, [-0.5, 1.5])


def test_random_split_lengths_match_pytorch():
    torch = pytest.importorskip("torch")
    for n, fractions in [(10, [0.33, 0.33, 0.34]), (7, [0.1, 0.2, 0.7]), (101, [0.8, 0.1, 0.1])]:
        ours = [len(p) for p in random_split(range(n), fractions)]
        assert ours == [len(p) for p in torch.utils.data.random_split(range(n), fractions)]


def test_samplers_and_loaders_take_a_generator():
    data = TensorDataset(tg.arange(12))
    orders = [list(RandomSampler(data, generator=tg.Generator().manual_seed(3))) for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(12))
    sampler = RandomSampler(data, generator=tg.Generator().manual_seed(3))
    assert list(sampler) == orders[0] and list(sampler) != orders[0]  # the next epoch draws on
    drawn = list(RandomSampler(data, replacement=True, num_samples=30, generator=tg.Generator()))
    assert len(drawn) == 30 and set(drawn) <= set(range(12))
    longer = list(RandomSampler(data, num_samples=20))
    assert len(longer) == 20 and sorted(longer[:12]) == list(range(12))
    loaders = [DataLoader(data, batch_size=5, shuffle=True, generator=tg.Generator().manual_seed(9)) for _ in range(2)]
    assert [b[0].tolist() for b in loaders[0]] == [b[0].tolist() for b in loaders[1]]
    with pytest.raises(ValueError, match="pass seed or generator, not both"):
        RandomSampler(data, seed=1, generator=tg.Generator())
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        RandomSampler(data, num_samples=0)
    with pytest.raises(ValueError, match="only applies with shuffle=True"):
        DataLoader(data, generator=tg.Generator())
    with pytest.raises(RuntimeError, match="the generator is on fake:0"):
        RandomSampler(data, generator=tg.Generator(device="fake"))
