"""A training run checkpointed halfway and resumed in a fresh process state ends bit for bit
where the uninterrupted run ends: model, optimizer, LR scheduler, data order and dropout
masks all continue exactly (tg.get_rng_state / set_rng_state carry the random streams)."""
import numpy as np
import pytest

import tinygrad_seq as tg
from tinygrad_seq import functional as F
from tinygrad_seq import nn, optim
from tinygrad_seq.data import DataLoader, TensorDataset
from tinygrad_seq.optim.lr_scheduler import OneCycleLR

EPOCHS, BATCHES = 4, 4


class Tagger(nn.Module):
    def __init__(self):
        self.embed = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 8, num_layers=2, dropout=0.3)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens):
        output, _ = self.lstm(self.embed(tokens.T))
        return self.head(self.drop(output[-1]))


def data():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, size=(BATCHES * 8, 7))
    return TensorDataset(tokens, (tokens.sum(axis=1) % 2).astype(np.int64))


def setup(init_seed):
    tg.manual_seed(init_seed)
    model = Tagger()
    opt = optim.Adam(model.parameters(), lr=0.01)
    scheduler = OneCycleLR(opt, max_lr=0.05, total_steps=EPOCHS * BATCHES)
    loader = DataLoader(data(), batch_size=8, shuffle=True)  # order drawn from the library's RNG
    return model, opt, scheduler, loader


def train(model, opt, scheduler, loader, epochs):
    model.train()
    for _ in range(epochs):
        for tokens, labels in loader:
            loss = F.cross_entropy(model(tokens), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            scheduler.step()


def test_resume_is_bit_identical(tmp_path):
    model, opt, scheduler, loader = setup(0)
    train(model, opt, scheduler, loader, EPOCHS)
    uninterrupted = model.state_dict()

    model, opt, scheduler, loader = setup(0)
    train(model, opt, scheduler, loader, EPOCHS // 2)
    tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": tg.get_rng_state(), "epoch": EPOCHS // 2}, tmp_path / "checkpoint.npz")
    tg.manual_seed(123)  # the interrupted process's randomness goes elsewhere ...
    tg.randn(100)

    model, opt, scheduler, loader = setup(7)  # ... and a fresh model starts from other weights
    checkpoint = tg.load(tmp_path / "checkpoint.npz")
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    tg.set_rng_state(checkpoint["rng"])
    train(model, opt, scheduler, loader, EPOCHS - checkpoint["epoch"])

    resumed = model.state_dict()
    assert list(resumed) == list(uninterrupted)
    for name, value in uninterrupted.items():
        assert value.tobytes() == resumed[name].tobytes(), name
    assert scheduler.last_epoch == EPOCHS * BATCHES


def test_without_the_rng_state_the_resumed_run_differs(tmp_path):
    """The control: the test above would catch a missing piece of state."""
    model, opt, scheduler, loader = setup(0)
    train(model, opt, scheduler, loader, EPOCHS)
    uninterrupted = model.state_dict()
    model, opt, scheduler, loader = setup(0)
    train(model, opt, scheduler, loader, EPOCHS // 2)
    saved = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}
    model, opt, scheduler, loader = setup(7)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    train(model, opt, scheduler, loader, EPOCHS // 2)
    assert any(v.tobytes() != model.state_dict()[k].tobytes() for k, v in uninterrupted.items())


def test_rng_state_on_every_device(device):
    tg.manual_seed(3)
    tg.randn(5, device=device), tg.rand(2)  # streams of two devices in use
    state = tg.get_rng_state()
    assert state["seed"] == 3 and set(state["devices"]) == {"cpu", tg.randn(1, device=device).device}
    state = tg.get_rng_state()
    first = (tg.randn(4, device=device).numpy(), tg.rand(3).numpy())
    tg.set_rng_state(state)
    second = (tg.randn(4, device=device).numpy(), tg.rand(3).numpy())
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, second))


def test_streams_not_yet_used_are_created_from_the_seed_after_a_restore():
    tg.manual_seed(4)
    state = tg.get_rng_state()
    assert state == {"seed": 4, "devices": {}}
    expected = tg.randn(3).numpy()
    tg.manual_seed(9)
    tg.set_rng_state(state)
    assert tg.randn(3).numpy().tobytes() == expected.tobytes()


@pytest.mark.parametrize("state, message", [
    ({"seed": 1}, "expected the dict that get_rng_state"),
    ([1, 2], "got list"),
    ({"seed": "x", "devices": {}}, "'seed' must be an integer or None"),
    ({"seed": 1, "devices": {"cpu": {"bit_generator": "PCG64"}}}, "invalid state for device cpu"),
    ({"seed": 1, "devices": {"tpu": {}}}, "unknown device"),
])
def test_set_rng_state_errors_leave_the_streams_unchanged(state, message):
    tg.manual_seed(2)
    tg.randn(1)
    before = tg.get_rng_state()
    with pytest.raises(ValueError, match=message):
        tg.set_rng_state(state)
    assert tg.get_rng_state() == before
