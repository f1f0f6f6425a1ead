"""The fake GPU really behaves like CuPy: it refuses host arrays, so engine leaks fail on any machine."""
import numpy as np
import pytest

import tinygrad_seq as tg
from fake_device import FakeArray, xp
from tinygrad_seq.engine import backend
from tinygrad_seq.autograd import Function


def fake(values, dtype=np.float64):
    return xp.asarray(np.asarray(values, dtype=dtype))


HOST_MIXES = {
    "array + host": lambda a, h: a + h,
    "host + array": lambda a, h: h + a,
    "array * 0-d host": lambda a, h: a * np.asarray(2.0),
    "array @ host": lambda a, h: a @ h,
    "in-place add of host": lambda a, h: a.__iadd__(h),
    "xp.add": lambda a, h: xp.add(a, h),
    "xp.where": lambda a, h: xp.where(a > 0, a, h),
    "xp.concatenate": lambda a, h: xp.concatenate([a, h]),
    "xp.stack": lambda a, h: xp.stack([a, h]),
    "numpy ufunc": lambda a, h: np.add(a, h),
    "numpy function": lambda a, h: np.concatenate([a, h]),
    "setitem of host values": lambda a, h: a.__setitem__(slice(None), h),
    "method with host argument": lambda a, h: a.dot(h),
}


@pytest.mark.parametrize("mix", list(HOST_MIXES))
def test_mixing_with_host_arrays_raises_type_error(mix):
    a, h = fake([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        HOST_MIXES[mix](a, h)


@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda a: np.add.at(np.zeros(3), [0], a),
                                     lambda a: np.zeros(3) + a])
def test_implicit_conversion_to_numpy_is_refused(convert):
    with pytest.raises(TypeError):
        convert(fake([1.0, 2.0, 3.0]))


def test_the_refusal_message_is_cupys():
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(fake([1.0]))


def test_scalars_mix_freely_and_results_stay_on_the_device():
    a = fake([[1.0, 2.0], [3.0, 4.0]], np.float32)
    results = [a + 1, 2.0 * a, a * np.float32(2), a ** 2, -a, abs(a), a > 1.5, a.sum(), a.sum(axis=0),
               a.max(), a.reshape(4), a.astype(np.float64), a.T, a[0], a[:, 1], a[a > 2], a[np.array([1, 0])],
               xp.exp(a), xp.zeros((2, 2)), xp.broadcast_to(a, (3, 2, 2)), xp.stack([a, a]), a @ a, a.copy()]
    for r in results:
        assert type(r) is FakeArray, r
    assert (a * np.float32(2)).dtype == np.float32  # NumPy scalars and Python floats keep float32
    b = a.copy()
    b += 1.0
    b[0, 0] = 9.0
    b *= fake([[2.0, 2.0], [2.0, 2.0]], np.float32)
    assert type(b) is FakeArray
    np.testing.assert_array_equal(b.get(), [[18.0, 6.0], [8.0, 10.0]])
    np.testing.assert_array_equal(a.get(), [[1.0, 2.0], [3.0, 4.0]])  # untouched
    assert a.sum().item() == 10.0 and float(a.max()) == 4.0 and a.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_asarray_copies_host_data():
    host = np.array([1.0, 2.0])
    a = xp.asarray(host)
    host[0] = 5.0
    np.testing.assert_array_equal(a.get(), [1.0, 2.0])


def test_the_backend_moves_arrays_explicitly():
    t = tg.Tensor([1.0, 2.0], device="fake")
    assert t.device == "fake:0" and type(t.array) is FakeArray
    assert backend.device_of(t.array) == "fake:0"
    host = backend.to_host(t.array)
    assert type(host) is np.ndarray
    back = backend.to_device(host, "fake:0")
    assert type(back) is FakeArray
    np.testing.assert_array_equal(tg.Tensor([3.0]).to("fake").numpy(), [3.0])


class LeakyAdd(Function):
    """A buggy primitive: it adds a host copy of its input to the (device) input."""

    def forward(ctx, x):
        return x + backend.to_host(x)

    def backward(ctx, g):
        return g * 2


class HostGradient(Function):
    """A buggy primitive: its backward returns a host array whatever the input's device."""

    def forward(ctx, x):
        return x * 1

    def backward(ctx, g):
        return backend.to_host(g)


def test_an_engine_leak_passes_on_cpu_and_fails_on_the_fake_device():
    np.testing.assert_array_equal(LeakyAdd.apply(tg.Tensor([1.0, 2.0])).numpy(), [2.0, 4.0])
    with pytest.raises(TypeError):
        LeakyAdd.apply(tg.Tensor([1.0, 2.0], device="fake"))


def test_a_backward_that_returns_a_host_array_is_caught():
    cpu = tg.Tensor([1.0, 2.0], requires_grad=True)
    HostGradient.apply(cpu).sum().backward()
    np.testing.assert_array_equal(cpu.grad.numpy(), [1.0, 1.0])
    x = tg.Tensor([1.0, 2.0], device="fake", requires_grad=True)
    with pytest.raises((TypeError, RuntimeError), match="FakeArray|device"):
        HostGradient.apply(x).sum().backward()


def test_registration_is_idempotent():
    import fake_device
    fake_device.register()
    fake_device.register()
    t = tg.randn(3, device="fake")
    assert t.device == "fake:0"
