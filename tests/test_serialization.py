"""save / load: bit-exact round trips, NumPy interoperability, and hostile files refused.

Every hostile file here raises ValueError("load: <path> is not a valid tinygrad_seq .npz
file: ...") and runs nothing: the pickles below would create a marker file if they were
ever unpickled (a control in each test shows that NumPy with allow_pickle=True does run them).
"""
import io
import json
import os
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq.io import checkpoint as serialization

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool", "complex64", ">f8", ">i4"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("serialization")


def same_bits(a, b):
    return type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def invalid(path):
    """pytest.raises for load's error on `path`."""
    return pytest.raises(ValueError, match=f"load: {str(path)!s} is not a valid tinygrad_seq .npz file: ")


# ---- round trips ------------------------------------------------------------------------

arrays_st = hnp.arrays(dtype=st.sampled_from(DTYPES).map(np.dtype),
                       shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
keys_st = st.text(min_size=1, max_size=12).filter(lambda k: "\x00" not in k)


@given(state=st.dictionaries(keys_st, arrays_st, max_size=4))
def test_round_trip_is_bit_exact(workdir, state):
    path = workdir / "state.npz"
    serialization.save(state, path)
    loaded = serialization.load(path)
    assert list(loaded) == list(state)  # and in the same order
    for key, array in state.items():
        assert same_bits(array, loaded[key]), key


def test_tensors_scalars_and_layouts(workdir):
    w = tg.Tensor(np.arange(6.0).reshape(2, 3), dtype="float32", requires_grad=True)
    (w * w).sum().backward()
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    state = {"w": w, "w64": w.double().detach(), "ids": tg.arange(5), "half": np.float16(1.5), "epoch": 7,
             "lr": 0.1, "flag": True, "fortran": np.asfortranarray(base), "strided": base[::2, ::3],
             "transposed": base.T, "empty": np.zeros((0, 3), dtype=np.int64),
             "nan": np.array([np.nan, -0.0, np.inf], dtype=np.float32), "np64": np.float64(0.25), "i8": np.int8(-3)}
    path = workdir / "mixed.npz"
    serialization.save(state, path)
    out = serialization.load(path)
    assert list(out) == list(state)
    # Tensors come back as Tensors (requires_grad kept, no gradient), arrays as NumPy arrays
    assert type(out["w"]) is tg.Tensor and out["w"].requires_grad and out["w"].grad is None
    assert same_bits(w.numpy(), out["w"].numpy()) and out["w"].dtype == np.float32
    assert out["w64"].dtype == np.float64 and not out["w64"].requires_grad and out["ids"].dtype == np.int64
    # Python numbers stay Python numbers; NumPy scalars keep their dtype
    assert out["epoch"] == 7 and type(out["epoch"]) is int and out["lr"] == 0.1 and out["flag"] is True
    assert type(out["half"]) is np.float16 and out["half"] == 1.5
    assert type(out["np64"]) is np.float64 and type(out["i8"]) is np.int8 and out["i8"] == -3
    for key in ("fortran", "strided", "transposed", "empty", "nan"):
        np.testing.assert_array_equal(out[key], state[key])
        assert out[key].dtype == state[key].dtype and out[key].shape == state[key].shape
    assert same_bits(state["nan"], out["nan"])
    assert all(a.flags.writeable for a in out.values() if isinstance(a, np.ndarray))


def test_nested_structures_round_trip(workdir):
    state = {"model": {"lstm.weight_ih_l0": np.ones((4, 2), np.float32)},
             "optimizer": {"state": {0: {"step": 3, "exp_avg": np.full(2, 0.5)}, 10: {}},
                           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": False, "params": [0, 10],
                                             "name": None}]},
             "history": [1.5, float("nan"), float("inf"), -0.0, 2 ** 80, "text ünï", [], (), {}],
             "tuple": (np.arange(3), (1, (2, [3]))), "a/b": {"a": np.zeros(1)}, "": "empty key"}
    path = workdir / "nested.npz"
    serialization.save(state, path)
    out = serialization.load(path)
    assert out["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert list(out["optimizer"]["state"]) == [0, 10]  # integer keys stay integers, in order
    assert same_bits(state["optimizer"]["state"][0]["exp_avg"], out["optimizer"]["state"][0]["exp_avg"])
    hist = out["history"]
    assert hist[0] == 1.5 and np.isnan(hist[1]) and hist[2] == float("inf") and str(hist[3]) == "-0.0"
    assert hist[4] == 2 ** 80 and hist[5] == "text ünï" and hist[6:] == [[], (), {}]
    assert type(out["tuple"]) is tuple and out["tuple"][1] == (1, (2, [3]))
    assert same_bits(np.arange(3), out["tuple"][0]) and out[""] == "empty key"
    with np.load(path, allow_pickle=False) as archive:  # numpy reads the arrays (names are key paths)
        assert same_bits(np.ones((4, 2), np.float32), archive["model/lstm.weight_ih_l0"])


def test_scalars_lists_and_none_at_the_top_level(workdir):
    for obj in (None, 3, "x", [np.ones(2), None], (True,)):
        serialization.save(obj, workdir / "top.npz")
        out = serialization.load(workdir / "top.npz")
        assert type(out) is type(obj) and (out == obj if not isinstance(obj, list) else out[1] is None)


def test_file_objects(workdir):
    state = {"w": np.arange(4.0), "meta": {"epoch": 2}}
    buffer = io.BytesIO()
    serialization.save(state, buffer)
    buffer.seek(0)
    out = serialization.load(buffer)
    assert same_bits(state["w"], out["w"]) and out["meta"] == {"epoch": 2}
    with open(workdir / "via_file.npz", "wb") as fh:
        serialization.save(state, fh)
    with open(workdir / "via_file.npz", "rb") as fh:
        assert serialization.load(fh)["meta"] == {"epoch": 2}

    class Unseekable(io.RawIOBase):  # a pipe or a socket: load reads it whole first
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.data.readinto(b)

        def seekable(self):
            return False
    assert same_bits(state["w"], serialization.load(Unseekable(buffer.getvalue()))["w"])
    with pytest.raises(ValueError, match="load: <file object> is not a valid"):
        serialization.load(io.BytesIO(b"not a zip"))


def test_module_and_optimizer_state_through_a_checkpoint(workdir):
    from tinygrad_seq import nn, optim
    tg.manual_seed(0)
    model = nn.LSTM(3, 4)
    opt = optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    model(tg.randn(5, 2, 3))[0].sum().backward()
    opt.step()
    serialization.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, workdir / "ckpt.npz")
    checkpoint = serialization.load(workdir / "ckpt.npz")
    tg.manual_seed(1)
    fresh = nn.LSTM(3, 4)
    fresh_opt = optim.Adam(fresh.parameters(), lr=0.5)
    fresh.load_state_dict(checkpoint["model"])
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    assert fresh_opt.param_groups[0]["lr"] == 0.01 and fresh_opt.param_groups[0]["betas"] == (0.9, 0.999)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert same_bits(a, b), name
    saved, loaded = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index in saved:
        assert saved[index]["step"] == loaded[index]["step"]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert same_bits(saved[index][key], loaded[index][key])


def test_map_location(workdir, device):
    t = tg.Tensor([1.0, 2.0], device=device, requires_grad=True)
    serialization.save({"t": t, "a": t.array, "host": np.ones(2)}, workdir / "devices.npz")
    back = serialization.load(workdir / "devices.npz")  # each to where it came from
    assert back["t"].device == t.device and back["t"].requires_grad
    assert tg.engine.backend.device_of(back["a"]) == t.device and type(back["host"]) is np.ndarray
    on_cpu = serialization.load(workdir / "devices.npz", map_location="cpu")
    assert on_cpu["t"].device == "cpu" and type(on_cpu["a"]) is np.ndarray
    moved = serialization.load(workdir / "devices.npz", map_location=device)
    assert moved["t"].device == t.device and tg.engine.backend.device_of(moved["host"]) == t.device
    with pytest.raises(TypeError, match="map_location must be a device such as"):
        serialization.load(workdir / "devices.npz", map_location={"cuda:0": "cpu"})
    with pytest.raises(ValueError, match="unknown device"):
        serialization.load(workdir / "devices.npz", map_location="tpu")


def test_device_tensors_are_saved_from_the_host_copy(workdir, device):
    w = tg.Tensor(np.linspace(-1, 1, 5), device=device)
    path = workdir / "device.npz"
    serialization.save({"w": w, "raw": w.array}, path)
    out = serialization.load(path, map_location="cpu")
    assert same_bits(w.numpy(), out["w"].numpy()) and same_bits(w.numpy(), out["raw"])


def test_keys_that_numpy_savez_cannot_take(workdir):
    state = {"file": np.ones(1), "allow_pickle": np.ones(2), "arr_0": np.ones(3), "rnn.weight_ih_l0": np.ones(4),
             "a/b": np.ones(5), "ünï cødé": np.ones(6), "w.npy": np.ones(7)}
    path = workdir / "keys.npz"
    serialization.save(state, path)
    out = serialization.load(path)
    assert list(out) == list(state)
    assert all(same_bits(state[k], out[k]) for k in state)


def test_interoperates_with_numpy(workdir):
    state = {"a": np.arange(4, dtype=np.int32), "b": np.ones((2, 2), dtype=np.float16)}
    ours = workdir / "ours.npz"
    serialization.save(state, ours)
    with np.load(ours, allow_pickle=False) as archive:
        assert all(same_bits(state[k], archive[k]) for k in state)
    for writer in (np.savez, np.savez_compressed):
        theirs = workdir / f"{writer.__name__}.npz"
        writer(theirs, **state)
        out = serialization.load(theirs)
        assert all(same_bits(state[k], out[k]) for k in state)


def test_the_same_state_gives_the_same_bytes(workdir):
    state = {"w": np.arange(3.0)}
    serialization.save(state, workdir / "one.npz")
    serialization.save(state, workdir / "two.npz")
    assert (workdir / "one.npz").read_bytes() == (workdir / "two.npz").read_bytes()


def test_writes_exactly_the_given_path_and_accepts_str(workdir):
    path = str(workdir / "no_suffix")
    serialization.save({"x": np.ones(2)}, path)
    assert os.path.exists(path) and not os.path.exists(path + ".npz")
    assert same_bits(np.ones(2), serialization.load(path)["x"])


@pytest.mark.parametrize("state, error, message", [
    ({1.5: np.ones(2)}, TypeError, r"keys must be strings or integers, got 1.5 at the top level"),
    ({"opt": {True: np.ones(2)}}, TypeError, r"keys must be strings or integers, got True at key path \['opt'\]"),
    ({"w": {1, 2}}, TypeError, r"cannot save a set at key path \['w'\]"),
    ({"w": [1, object()]}, TypeError, r"cannot save a object at key path \['w'\]\[1\]"),
    ({"w": np.array([object()])}, TypeError, "has dtype object"),
    ({"w": np.array(["text"])}, TypeError, "has dtype <U4"),
    ({"f": lambda t: t}, TypeError, "cannot save a function"),
])
def test_save_rejects_what_it_cannot_store_without_writing(workdir, state, error, message):
    path = workdir / "rejected.npz"
    if path.exists():
        path.unlink()
    with pytest.raises(error, match=message):
        serialization.save({**{"first": np.ones(1)}, **state}, path)
    assert not path.exists()


def test_missing_file_is_a_file_not_found_error(workdir):
    with pytest.raises(FileNotFoundError):
        serialization.load(workdir / "does_not_exist.npz")


# ---- hostile and broken files -------------------------------------------------------------

def _touch(path):
    with open(path, "w") as f:
        f.write("pwned")


class Payload:
    """Unpickling this creates a file: the canary for 'executes nothing'."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _touch, (self.marker,)


def npy_bytes(header, payload=b""):
    """A .npy member with a hand-written header (version 1.0)."""
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def write_zip(path, members):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which one test wants
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)


def test_object_array_with_a_pickle_payload(workdir):
    marker = workdir / "marker_object_array"
    path = workdir / "object_array.npz"
    np.savez(path, weights=np.array([Payload(marker)], dtype=object))  # numpy pickles object arrays
    with invalid(path) as info:
        serialization.load(path)
    assert "dtype object" in str(info.value)
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as archive:  # control: the payload is live
        archive["weights"]
    assert marker.exists()


def test_raw_pickle_file(workdir):
    marker = workdir / "marker_raw_pickle"
    path = workdir / "model.npz"
    path.write_bytes(pickle.dumps({"w": Payload(marker)}))
    with pytest.raises(ValueError, match="is a pickle .* not read here because unpickling can run code"):
        serialization.load(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # control
    assert marker.exists()


def test_object_header_inside_a_zip(workdir):
    marker = workdir / "marker_object_header"
    path = workdir / "object_header.npz"
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    write_zip(path, [("w.npy", npy_bytes(header, pickle.dumps([Payload(marker)])))])
    with invalid(path):
        serialization.load(path)
    assert not marker.exists()


def test_structured_dtype_with_an_object_field(workdir):
    path = workdir / "structured.npz"
    header = "{'descr': [('a', '<f8'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }"
    write_zip(path, [("w.npy", npy_bytes(header, b"\x00" * 16))])
    with invalid(path):
        serialization.load(path)


def test_code_in_the_header_is_not_evaluated(workdir):
    marker = workdir / "marker_header_code"
    path = workdir / "header_code.npz"
    code = f"__import__('builtins').open({str(marker)!r}, 'w').name"
    header = f"{{'descr': {code}, 'fortran_order': False, 'shape': (1,), }}"
    write_zip(path, [("w.npy", npy_bytes(header, b"\x00" * 8))])
    with invalid(path):
        serialization.load(path)
    assert not marker.exists()


def test_a_plain_npy_file_is_not_an_npz(workdir):
    path = workdir / "plain.npy"
    np.save(path, np.ones(3))
    with invalid(path):
        serialization.load(path)


@pytest.mark.parametrize("name, data, reason", [
    ("notes.txt", b"hello", "member 'notes.txt' is not a .npy array"),
    ("w.npy", b"hello", "bad magic string"),
    ("w.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (10**12,), }"), "invalid .npy header"),
    ("w.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }"), "negative shape (-1,)"),
    ("w.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", b"\x00" * 16),
     "declares shape (1000000000000,) of float64 (8000000000000 bytes) but holds 16 bytes"),
    ("w.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", b"\x00" * 8),
     "declares shape (4,) of float32 (16 bytes) but holds 8 bytes"),
    ("w.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 8),
     "declares shape (1,) of float32 (4 bytes) but holds 8 bytes"),
    ("w.npy", npy_bytes("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 12),
     "only boolean and numeric arrays"),
    ("w.npy", npy_bytes("not a dict"), "invalid .npy header"),
])
def test_malformed_members(workdir, name, data, reason):
    path = workdir / "malformed.npz"
    write_zip(path, [(name, data)])
    with invalid(path) as info:
        serialization.load(path)
    assert reason in str(info.value)


def test_duplicate_members(workdir):
    path = workdir / "duplicate.npz"
    member = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 8)
    write_zip(path, [("w.npy", member), ("w.npy", member)])
    with invalid(path) as info:
        serialization.load(path)
    assert "appears more than once" in str(info.value)


def _valid_file_bytes(workdir):
    path = workdir / "valid.npz"
    serialization.save({"w": np.arange(32, dtype=np.float64), "b": np.ones(3, dtype=np.float32)}, path)
    return path.read_bytes()


def test_every_truncation_is_refused(workdir):
    data = _valid_file_bytes(workdir)
    path = workdir / "truncated.npz"
    # every 5th length, and every length in the central directory at the end (writing the file dominates)
    for cut in sorted(set(range(0, len(data), 5)) | set(range(len(data) - 150, len(data)))):
        path.write_bytes(data[:cut])
        with invalid(path):
            serialization.load(path)


def test_corrupted_array_data_fails_the_checksum(workdir):
    data = bytearray(_valid_file_bytes(workdir))
    at = bytes(data).index(np.arange(32, dtype=np.float64).tobytes()) + 100
    data[at] ^= 0xFF
    path = workdir / "corrupted.npz"
    path.write_bytes(bytes(data))
    with invalid(path) as info:
        serialization.load(path)
    assert "CRC" in str(info.value)


@given(data=st.binary(max_size=2048).filter(lambda b: b"PK" not in b))
def test_random_bytes(workdir, data):
    path = workdir / "random.bin"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"load: {str(path)!s} is (not a valid|a pickle|a PyTorch file)"):
        serialization.load(path)


def test_zip_of_a_zip_and_an_empty_archive(workdir):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("w.npy", b"x")
    path = workdir / "nested.npz"
    write_zip(path, [("inner.zip", inner.getvalue())])
    with invalid(path):
        serialization.load(path)
    empty = workdir / "empty.npz"
    serialization.save({}, empty)
    assert serialization.load(empty) == {}


# ---- hostile manifests: plain JSON, checked node by node -----------------------------------

ONE = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 8)


def manifest(root, **extra):
    return json.dumps({"format": "tinygrad_seq.checkpoint", "version": 1, "root": root, **extra}).encode()


@pytest.mark.parametrize("text, reason", [
    (b"\xff\xfe", "manifest is not JSON"),
    (b"{'format': 1}", "manifest is not JSON"),
    (b"[" * 100000 + b"]" * 100000, "manifest is"),  # not JSON, or nested too deeply: never a crash
    (json.dumps({"root": None}).encode(), "not a tinygrad_seq checkpoint manifest"),
    (manifest(None, extra=1), "not a tinygrad_seq checkpoint manifest"),
    (json.dumps({"format": "tinygrad_seq.checkpoint", "version": 99, "root": None}).encode(), "version 99"),
    (manifest({"array": "missing"}), "refers to an array member 'missing' that the archive does not hold"),
    (manifest({"array": ["w"]}), "refers to an array member"),
    (manifest({"pickle": "w"}), "manifest node has keys ['pickle']"),
    (manifest({"array": "w", "tensor": "w"}), "manifest node has keys"),
    (manifest({"array": "w", "code": "__import__('os')"}), "manifest node has keys"),
    (manifest([1, 2]), "bare list"),
    (manifest({"dict": [["a", 1], ["a", 2]]}), "has the key 'a' twice"),
    (manifest({"dict": [[1.5, 1]]}), "string or integer key"),
    (manifest({"dict": {"a": 1}}), "dict node holds a dict"),
    (manifest({"scalar": "w"}), "scalar member 'w' has shape (1,)"),
    (manifest({"tensor": "w", "requires_grad": "yes"}), "requires_grad that is not a bool"),
    (manifest({"array": "w", "device": "tpu:0"}), "names an unknown device 'tpu:0'"),
    (manifest({"array": "w", "device": 3}), "device that is not a string"),
    (manifest({"dict": [["x", {"list": [{"list": [{"array": "nope"}]}]}]]}), "does not hold"),
])
def test_hostile_manifests_are_refused(workdir, text, reason):
    path = workdir / "hostile_manifest.npz"
    write_zip(path, [("w.npy", ONE), ("__tinygrad_seq__.json", text)])
    with invalid(path) as info:
        serialization.load(path)
    assert reason in str(info.value)


def test_manifest_beside_a_pickle_runs_nothing(workdir):
    marker = workdir / "marker_manifest_pickle"
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    path = workdir / "manifest_pickle.npz"
    write_zip(path, [("w.npy", npy_bytes(header, pickle.dumps([Payload(marker)]))),
                     ("__tinygrad_seq__.json", manifest({"array": "w"}))])
    with invalid(path):
        serialization.load(path)
    assert not marker.exists()


def test_a_huge_declared_manifest_is_refused_before_reading(workdir, monkeypatch):
    monkeypatch.setattr(serialization, "MAX_MANIFEST_BYTES", 100)
    path = workdir / "huge_manifest.npz"
    write_zip(path, [("__tinygrad_seq__.json", manifest({"list": [0] * 200}))])
    with invalid(path) as info:
        serialization.load(path)
    assert "manifest declares" in str(info.value)
