"""Weights in and out: .safetensors both ways, PyTorch .pt state dicts read without torch and
without running pickle code, tied weights stored once, and tg.load telling formats apart.

The hostile .pt files below would create a marker file if anything in them ran; each is refused
and the marker is checked afterwards. Tests comparing with files written by `torch` and the
`safetensors` package skip when those are not installed.
"""
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as tg
from tinygrad_seq import nn
from tinygrad_seq.io import safetensors as st_io

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool", ">f4"]


def same_bits(a, b):
    return a.dtype == b.dtype.newbyteorder("=") and a.shape == b.shape and a.tobytes() == b.astype(a.dtype).tobytes()


class TiedLM(nn.Module):
    """Embedding -> LSTM -> GRU -> Linear whose weight is the embedding's (the tied LM)."""

    def __init__(self, vocab=11, size=4):
        super().__init__()
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(2 * size, size)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight


# ---- .safetensors ---------------------------------------------------------------------------

@given(state=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "__metadata__"),
                             hnp.arrays(st.sampled_from(DTYPES).map(np.dtype),
                                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
                             max_size=4))
def test_safetensors_round_trip_is_exact_and_ordered(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    tg.save(state, path)  # the suffix picks the format
    out = tg.load(path)
    assert list(out) == list(state)
    for key, array in state.items():
        assert type(out[key]) is np.ndarray and same_bits(out[key], array), key


def test_safetensors_layout_and_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    st_io.save_file({"b": tg.ones(2, 3), "a": np.arange(3, dtype=np.int16)}, path, metadata={"epoch": "3"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0 and len(raw) == 8 + n + 24 + 6
    assert header == {"__metadata__": {"epoch": "3"},
                      "b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                      "a": {"dtype": "I16", "shape": [3], "data_offsets": [24, 30]}}
    with pytest.raises(TypeError, match="only arrays"):
        st_io.save_file({"nested": {"w": np.ones(2)}}, tmp_path / "x.safetensors")


def _safetensors_bytes(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
HOSTILE_HEADERS = {
    "length past the end": struct.pack("<Q", 1 << 40) + b"{}",
    "header too large": struct.pack("<Q", 200_000_000) + b"{" + b" " * 16,
    "not JSON": struct.pack("<Q", 3) + b"{x}",
    "JSON list": _safetensors_bytes([1, 2]),
    "duplicate name": struct.pack("<Q", 2 * len(json.dumps({"w": F32x2})) - 1)
    + (json.dumps({"w": F32x2})[:-1] + "," + json.dumps({"w": F32x2})[1:]).encode() + bytes(8),
    "unknown dtype": _safetensors_bytes({"w": {**F32x2, "dtype": "F8_E4M3"}}, bytes(8)),
    "negative shape": _safetensors_bytes({"w": {**F32x2, "shape": [-2]}}, bytes(8)),
    "float shape": _safetensors_bytes({"w": {**F32x2, "shape": [2.0]}}, bytes(8)),
    "bool offsets": _safetensors_bytes({"w": {**F32x2, "data_offsets": [False, 8]}}, bytes(8)),
    "size mismatch": _safetensors_bytes({"w": {**F32x2, "shape": [3]}}, bytes(8)),
    "huge shape": _safetensors_bytes({"w": {"dtype": "U8", "shape": [1 << 40], "data_offsets": [0, 1 << 40]}}),
    "gap": _safetensors_bytes({"w": {**F32x2, "data_offsets": [4, 12]}}, bytes(12)),
    "overlap": _safetensors_bytes({"a": F32x2, "b": {**F32x2, "data_offsets": [4, 12]}}, bytes(12)),
    "bytes past the data": _safetensors_bytes({"w": F32x2}, bytes(9)),
    "truncated data": _safetensors_bytes({"w": F32x2}, bytes(7)),
    "extra entry key": _safetensors_bytes({"w": {**F32x2, "grad": 1}}, bytes(8)),
    "metadata not strings": _safetensors_bytes({"__metadata__": {"epoch": 3}, "w": F32x2}, bytes(8)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_safetensors_are_refused(tmp_path, case):
    path = tmp_path / "w.safetensors"
    path.write_bytes(HOSTILE_HEADERS[case])
    with pytest.raises(ValueError, match=f"load: {str(path)!s} is not a valid .safetensors file: "):
        st_io.load_file(path)


def test_safetensors_with_the_package_both_ways(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    state = {"w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
             "ids": np.arange(5), "mask": np.array([True, False]), "h": np.ones(3, np.float16)}
    sn.save_file(state, tmp_path / "theirs.safetensors", metadata={"k": "v"})
    ours = tg.load(tmp_path / "theirs.safetensors")
    assert all(same_bits(ours[k], v) for k, v in state.items())
    st_io.save_file(state, tmp_path / "ours.safetensors", metadata={"k": "v"})
    theirs = sn.load_file(tmp_path / "ours.safetensors")
    assert all(same_bits(theirs[k], v) for k, v in state.items())


# ---- tied weights: stored once, restored shared ---------------------------------------------

def test_tied_weights_are_stored_once(tmp_path):
    model = TiedLM()
    state = model.state_dict()
    assert state["encoder.weight"] is state["decoder.weight"]  # like PyTorch's shared storage
    tg.save(state, tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        assert len(archive.namelist()) == len(state)  # one member less than names, plus the manifest
    loaded = tg.load(tmp_path / "m.npz")
    assert loaded["encoder.weight"] is loaded["decoder.weight"]
    tg.save(state, tmp_path / "m.safetensors")
    header = json.loads((tmp_path / "m.safetensors").read_bytes()[8:][:struct.unpack(
        "<Q", (tmp_path / "m.safetensors").read_bytes()[:8])[0]])
    assert "decoder.weight" not in header and header["__metadata__"] == {"decoder.weight": "encoder.weight"}
    loaded = tg.load(tmp_path / "m.safetensors")
    assert loaded["encoder.weight"] is loaded["decoder.weight"] and sorted(loaded) == sorted(state)
    fresh = TiedLM()
    fresh.load_state_dict(loaded, strict=True)
    assert fresh.decoder.weight is fresh.encoder.weight
    np.testing.assert_array_equal(fresh.decoder.weight.numpy(), state["encoder.weight"])


# ---- PyTorch .pt files, read without torch's code ---------------------------------------------

def _pt_archive(path, pickled, storages=(), byteorder=b"little"):
    """A torch.save-shaped zip: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", byteorder)
        for key, data in storages:
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", b"3\n")


def _system(command):  # what a hostile pickle asks for: os.system, found by name
    return os.system, (command,)


class Hostile:
    def __init__(self, reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "nested in a tensor's hooks"])
def test_hostile_pt_is_refused_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "marker"
    if payload == "os.system":
        evil = Hostile((os.system, (f"touch {marker}",)))
    elif payload == "builtins.exec":
        evil = Hostile((exec, (f"open({str(marker)!r}, 'w').close()",)))
    else:
        evil = [Hostile((os.system, (f"touch {marker}",)))]
    path = tmp_path / "evil.pt"
    _pt_archive(path, pickle.dumps({"weight": evil}, protocol=2))
    with pytest.raises(ValueError, match="is a PyTorch .pt file that cannot be read here: .* refers to "
                                         "(posix|nt|builtins|__builtin__)\\.(system|exec).* nothing in the file is executed"):
        tg.load(path)
    assert not marker.exists()
    pickle.loads(zipfile.ZipFile(path).read("archive/data.pkl"))  # control: unpickling would have run it
    assert marker.exists()


def _tensor_pickle(offset, size, stride, numel, kind="FloatStorage"):
    """data.pkl of {"w": tensor} with the given geometry, written opcode by opcode as torch does."""
    def tup(xs):
        return b"(" + b"".join(b"K" + bytes([x]) for x in xs) + b"t"
    return (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w"
            b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n" + kind.encode()
            + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK" + bytes([numel]) + b"tQK" + bytes([offset])
            + tup(size) + tup(stride) + b"\x89ccollections\nOrderedDict\n)RtRu.")


def test_pt_geometry_is_checked_against_the_storage(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes()
    path = tmp_path / "w.pt"
    _pt_archive(path, _tensor_pickle(1, (2, 2), (1, 2), 6), [("0", data)])  # a strided view inside
    np.testing.assert_array_equal(tg.load(path)["w"].numpy(), [[1, 3], [2, 4]])
    for offset, size, stride, numel, stored, reason in [
            (3, (2, 2), (2, 1), 6, data, "reaches element 6 of a storage of 6"),
            (0, (2, 2), (2, 1), 6, data[:20], "declares 6 FloatStorage elements .* holds 20 bytes"),
            (0, (2,), (1, 1), 6, data, "invalid geometry"),
            (0, (200, 200), (0, 0), 6, data, "would copy more bytes than its storages hold")]:
        _pt_archive(path, _tensor_pickle(offset, size, stride, numel), [("0", stored)])
        with pytest.raises(ValueError, match=reason):
            tg.load(path)
    _pt_archive(path, _tensor_pickle(0, (6,), (1,), 6).replace(b"cpu", b"mps"), [("0", data)])
    with pytest.raises(RuntimeError, match="saved on 'mps', which is not available here .* map_location='cpu'"):
        tg.load(path)
    np.testing.assert_array_equal(tg.load(path, map_location="cpu")["w"].numpy(), np.arange(6))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:  # a zip bomb could declare any size
        archive.writestr("archive/data.pkl", _tensor_pickle(0, (6,), (1,), 6))
        archive.writestr("archive/data/0", data)
    with pytest.raises(ValueError, match="is compressed"):
        tg.load(path)


def test_pt_formats_that_are_not_state_dicts_say_what_they_are(tmp_path):
    path = tmp_path / "m.pt"
    legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + pickle.dumps({"w": 1}, protocol=2)
    path.write_bytes(legacy)
    with pytest.raises(ValueError, match="legacy format .* re-save it"):
        tg.load(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/constants.pkl", b"")
        archive.writestr("m/data.pkl", pickle.dumps({}))
    with pytest.raises(ValueError, match="TorchScript archive"):
        tg.load(path)


def test_pt_files_written_here_round_trip(tmp_path):
    model = TiedLM()
    state = {"model": model.state_dict(), "step": np.int64(7), "lr": 0.5, "big": 2 ** 80, "name": "ünï",
             "raw": b"\x00\xff", "betas": (0.9, 0.999), "ids": [1, None, True], "grad": tg.ones(2, requires_grad=True),
             "mask": np.array([True, False]), "half": np.ones(3, np.float16), "empty": {}}
    tg.save(state, tmp_path / "m.pt")
    with open(tmp_path / "again.pt", "wb") as f:  # a file opened on a .pt path: the same format
        tg.save(state, f)
    assert (tmp_path / "m.pt").read_bytes() == (tmp_path / "again.pt").read_bytes()
    out = tg.load(tmp_path / "m.pt")
    weights = out["model"]
    assert list(weights) == list(state["model"]) and type(weights["rnn.weight_hh_l1"]) is tg.Tensor
    assert np.shares_memory(weights["encoder.weight"].array, weights["decoder.weight"].array)  # one storage
    for key, value in state["model"].items():
        assert same_bits(weights[key].numpy(), value), key
    assert out["step"] == 7 and type(out["step"]) is int and out["big"] == 2 ** 80 and out["name"] == "ünï"
    assert out["raw"] == b"\x00\xff" and out["betas"] == (0.9, 0.999) and out["ids"] == [1, None, True]
    assert out["grad"].requires_grad and out["mask"].numpy().dtype == np.bool_ and out["empty"] == {}
    assert out["half"].dtype == np.float16
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:  # the tied weight is stored once
        assert sum(n.startswith("archive/data/") for n in archive.namelist()) == len(state["model"]) - 1 + 3
    with pytest.raises(TypeError, match="uint16, .* PyTorch files cannot hold"):
        tg.save({"w": np.ones(2, np.uint16)}, tmp_path / "u.pt")


def test_save_refuses_objects_and_suggests_their_state_dict(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"tg.save\(model.state_dict\(\), path\).* model.load_state_dict"):
        tg.save(model, tmp_path / "m.npz")
    with pytest.raises(TypeError, match=r"tg.save\(obj.state_dict\(\), path\)"):
        tg.save({"opt": tg.optim.SGD(model.parameters(), lr=0.1)}, tmp_path / "m.npz")


def test_load_accepts_torchs_keywords(tmp_path):
    tg.save({"w": np.ones(2)}, tmp_path / "m.npz")
    for weights_only in (True, False, None):
        np.testing.assert_array_equal(tg.load(tmp_path / "m.npz", map_location="cpu", weights_only=weights_only)["w"],
                                      np.ones(2))
    with pytest.raises(TypeError, match="weights_only must be a bool"):
        tg.load(tmp_path / "m.npz", weights_only="yes")


# ---- with torch installed: files written by PyTorch, and files PyTorch reads -----------------

def _torch_twin(torch):
    class TorchTiedLM(torch.nn.Module):
        def __init__(self, vocab=11, size=4):
            super().__init__()
            self.encoder = torch.nn.Embedding(vocab, size)
            self.rnn = torch.nn.LSTM(size, size, num_layers=2, bidirectional=True)
            self.gru = torch.nn.GRU(2 * size, size)
            self.decoder = torch.nn.Linear(size, vocab)
            self.decoder.weight = self.encoder.weight
    return TorchTiedLM()


def test_pytorch_state_dicts_load_here_and_ours_load_there(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = _torch_twin(torch)
    torch.save(theirs.state_dict(), tmp_path / "m.pt")
    loaded = tg.load(tmp_path / "m.pt", weights_only=True)
    assert list(loaded) == list(theirs.state_dict()) and type(loaded["rnn.weight_ih_l0"]) is tg.Tensor
    assert np.shares_memory(loaded["encoder.weight"].array, loaded["decoder.weight"].array)
    ours = TiedLM()
    ours.load_state_dict(loaded, strict=True)
    tokens = np.random.default_rng(0).integers(0, 11, size=(5, 3))
    with torch.no_grad():
        out, _ = theirs.gru(theirs.rnn(theirs.encoder(torch.tensor(tokens)))[0])
        expected = theirs.decoder(out).numpy()
    out, _ = ours.gru(ours.rnn(ours.encoder(tg.tensor(tokens)))[0])
    np.testing.assert_allclose(ours.decoder(out).numpy(), expected, rtol=1e-5, atol=1e-6)

    tg.save(ours.state_dict(), tmp_path / "ours.pt")  # and back: ours into PyTorch, with torch alone
    back = _torch_twin(torch)
    back.load_state_dict(torch.load(tmp_path / "ours.pt", weights_only=True), strict=True)
    assert back.decoder.weight.data_ptr() == back.encoder.weight.data_ptr()
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)

    safetensors_torch = pytest.importorskip("safetensors.torch")  # and with the safetensors package
    tg.save(ours.state_dict(), tmp_path / "ours.safetensors")
    back = _torch_twin(torch)
    safetensors_torch.load_model(back, tmp_path / "ours.safetensors", strict=True)
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)
    safetensors_torch.save_model(theirs, tmp_path / "theirs.safetensors")  # PyTorch's tied convention
    TiedLM().load_state_dict(tg.load(tmp_path / "theirs.safetensors"), strict=True)


def test_pytorch_dtypes_views_byte_order_and_optimizer_state(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    values = {"t": base.t(), "row": base[1], "bf16": torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16),
              "half": base.half(), "ids": torch.arange(4), "i8": torch.tensor([-3], dtype=torch.int8),
              "mask": base > 5, "empty": torch.zeros(0, 3), "p": torch.nn.Parameter(torch.ones(2)),
              "scalar": torch.tensor(2.5)}
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = torch.optim.Adam(params, lr=0.1)
    params[0].sum().backward()
    opt.step()
    path = tmp_path / "mixed.pt"
    torch.save({"values": values, "optimizer": opt.state_dict(), "epoch": 3, "name": "lm", "bytes": b"\x00\xff"},
               path)
    loaded = tg.load(path)
    for key, value in values.items():
        expected = value.detach().float().numpy() if key == "bf16" else value.detach().numpy()
        got = loaded["values"][key]
        assert got.numpy().dtype == expected.dtype and np.array_equal(got.numpy(), expected), key
    assert loaded["values"]["p"].requires_grad and not loaded["values"]["t"].requires_grad
    state = loaded["optimizer"]
    assert state["param_groups"][0]["lr"] == 0.1 and state["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list(state["state"]) == [0] and np.allclose(state["state"][0]["exp_avg"].numpy(), 0.1)
    assert loaded["epoch"] == 3 and loaded["name"] == "lm" and loaded["bytes"] == b"\x00\xff"

    path = tmp_path / "big.pt"  # float64 views, rewritten in big-endian byte order
    torch.save({"t": base.t(), "row": base[1]}, path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    for name in members:
        if "/data/" in name:
            members[name] = np.frombuffer(members[name], "<f8").astype(">f8").tobytes()
        elif name.endswith("/byteorder"):
            members[name] = b"big"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    loaded = tg.load(path)
    assert loaded["t"].dtype == np.float64 and np.array_equal(loaded["t"].numpy(), base.t().numpy())
    assert np.array_equal(loaded["row"].numpy(), base[1].numpy())


def test_nn_modules_gives_pytorchs_paths():
    from tinygrad_seq.nn.modules.rnn import LSTM
    assert LSTM is nn.LSTM and tg.nn.modules.sparse.Embedding is nn.Embedding
    torch = pytest.importorskip("torch")
    import importlib
    for name in ("activation", "container", "dropout", "flatten", "linear", "loss", "module", "normalization",
                 "rnn", "sparse", "batchnorm", "distance"):
        theirs = importlib.import_module(f"torch.nn.modules.{name}")
        ours = getattr(tg.nn.modules, name, None)
        for cls in getattr(theirs, "__all__", []):
            if hasattr(nn, cls):  # everything nn has that PyTorch keeps in this file is there too
                assert ours is not None and getattr(ours, cls, None) is getattr(nn, cls), f"nn.modules.{name}.{cls}"
