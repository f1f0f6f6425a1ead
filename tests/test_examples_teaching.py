"""The teaching examples run, learn, and degrade gracefully without their optional extras.

Each example is imported from examples/ and its main() run in --quick mode (seconds).
CI installs only the test extra, so matplotlib and tqdm are usually absent; here they are
blocked explicitly (an import of a module set to None in sys.modules raises ImportError),
so the fallbacks are exercised whether or not they happen to be installed.
"""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIBLINGS = ("binary_sequences", "vanishing_gradients", "custom_cell")


def load(name, monkeypatch, block=("matplotlib", "tqdm")):
    """Import examples/<name>.py afresh with the modules in `block` made unimportable."""
    for module in block:
        monkeypatch.setitem(sys.modules, module, None)
    for module in SIBLINGS:  # re-import, so each example sees this test's blocked modules
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(name)


def run(module, tmp_path, *extra):
    return module.main(["--quick", "--no-progress", "--out", str(tmp_path), *extra])


@pytest.mark.parametrize("name", SIBLINGS)
def test_help_describes_the_quick_mode(name, monkeypatch, capsys):
    module = load(name, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "--seed" in text and "--out" in text


def test_binary_sequences_learns_short_recall_and_notes_missing_extras(monkeypatch, tmp_path, capsys):
    module = load("binary_sequences", monkeypatch)
    results = run(module, tmp_path)
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and [f.name for f in tmp_path.iterdir()] == ["metrics.json"]
    assert f"wrote {tmp_path / 'metrics.json'}" in out
    assert "held-out accuracy" in out  # the table
    for kind in ("RNN", "LSTM", "GRU"):
        assert results[("recall", 2)][kind]["accuracy"] == [pytest.approx(1.0, abs=0.05)]
        losses = results[("recall", 2)][kind]["loss"][0]
        assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])  # the loss falls
    assert all(results[("parity", 2)][k]["accuracy"][0] > 0.75 for k in ("RNN", "LSTM", "GRU"))


def test_binary_sequences_is_seeded(monkeypatch, tmp_path):
    module = load("binary_sequences", monkeypatch)
    argv = ["--tasks", "recall", "--recall-lengths", "3", "--models", "rnn", "--steps", "20"]
    first = run(module, tmp_path, *argv)
    second = run(module, tmp_path, *argv)
    assert first[("recall", 3)]["RNN"]["loss"] == second[("recall", 3)]["RNN"]["loss"]


def test_binary_sequences_data_and_chrono_init(monkeypatch):
    module = load("binary_sequences", monkeypatch)
    rng = np.random.default_rng(0)
    x, y = module.make_batch("recall", 5, 64, rng)
    bits = x.numpy().argmax(axis=2)
    assert x.shape == (6, 64, 2) and np.array_equal(y.numpy(), bits[0])
    x, y = module.make_batch("parity", 4, 64, rng)
    assert x.shape == (4, 64, 2) and np.array_equal(y.numpy(), x.numpy().argmax(axis=2).sum(axis=0) % 2)
    model = module.make_model("LSTM", 8, 30, "chrono", rng)
    forget_bias = model.recurrent.bias_ih_l0.numpy()[8:16] + model.recurrent.bias_hh_l0.numpy()[8:16]
    assert forget_bias.min() >= 0 and forget_bias.max() <= np.log(29) + 1e-6


def test_vanishing_gradients_shows_decay_and_bounded_clipped_updates(monkeypatch, tmp_path, capsys):
    module = load("vanishing_gradients", monkeypatch)
    result = run(module, tmp_path)
    flows = result["flows"]
    for kind in ("RNN", "LSTM", "GRU"):
        f = flows[("init", kind)]
        assert len(f) == 12 and f[0] < 1e-2 * f[-1]  # vanishing at init, loss on the last output
    def kept(stage, kind):  # the share of the last step's gradient that reaches t = 0
        return flows[(stage, kind)][0] / flows[(stage, kind)][-1]
    for kind in ("LSTM", "GRU"):  # chrono gate biases keep more of the gradient
        assert kept("chrono", kind) > 2 * kept("init", kind)
    assert result["trained_accuracy"]["GRU"] > 0.9
    clipped = result["exploding"]["clip_grad_norm_(1)"]
    unclipped = result["exploding"]["no clipping"]
    bound = 0.2 * 1.0  # lr * max_norm
    assert max(clipped["update_norm"]) <= bound * (1 + 1e-4)
    assert max(unclipped["update_norm"]) > 5 * bound and max(unclipped["grad_norm"]) > 5
    assert np.mean(clipped["loss"][-5:]) < np.mean(clipped["loss"][:5])  # clipped SGD learns
    view = result["jacobian_view"]  # part 3: from the tape's per-step Jacobians
    for kind in ("RNN", "LSTM", "GRU"):
        assert len(view[("init", kind)]["top_singular_value"]) == 12 and view[("init", kind)]["lyapunov"] < 0
    assert view[("trained", "GRU")]["lyapunov"] > view[("init", "GRU")]["lyapunov"] + 0.2  # memory kept
    assert view[("init", "LSTM")]["state_size"] == 16 and view[("init", "GRU")]["state_size"] == 8  # (h, c) vs h
    assert "matplotlib is not installed" in capsys.readouterr().out


def test_custom_cell_gradchecks_runs_bidirectional_and_learns(monkeypatch, tmp_path, capsys):
    module = load("custom_cell", monkeypatch)
    result = run(module, tmp_path)
    out = capsys.readouterr().out
    assert "gradcheck of one MGU step" in out and "bidirectional MGU" in out
    assert result["output_shape"] == (6, 3, 16)  # 2 directions x hidden 8
    dot = (tmp_path / "mgu_step.dot").read_text()  # the tape of one step, from diagnostics.to_dot
    assert dot.startswith("digraph") and "weight_fh" in dot and "Sigmoid" in dot and "Tanh" in dot
    r = result["results"][4]
    assert r["accuracy"] > 0.9 and np.mean(r["loss"][-10:]) < 0.5 * r["loss"][0]
    lines = Path(module.__file__).read_text().splitlines()
    first = next(k for k, line in enumerate(lines) if line.startswith("class MGUCell"))
    last = next(k for k, line in enumerate(lines) if k > first and "return h + f * (n - h)" in line)
    assert last - first + 1 < 30  # the cell is short


def test_plots_are_written_when_matplotlib_is_there(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    module = load("custom_cell", monkeypatch, block=("tqdm",))
    run(module, tmp_path, "--skip-gradcheck")
    png = tmp_path / "custom_cell.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_plotted_axis_is_labelled(monkeypatch, tmp_path):
    """Every plot of the teaching examples, drawn from small made-up results: each axis says what it shows
    (a panel that shares its y axis with a labelled one may leave its own blank)."""
    pytest.importorskip("matplotlib")
    import argparse
    from matplotlib.figure import Figure
    unlabelled = []

    def record(fig, path, **kwargs):  # instead of rendering a PNG: check the labels
        for ax in fig.axes:
            shared = ax.get_shared_y_axes().get_siblings(ax)
            if not ax.get_xlabel() or not any(a.get_ylabel() for a in shared):
                unlabelled.append(f"{Path(path).name}: {ax.get_title()!r}")
        record.saved.append(Path(path).name)
    record.saved = []
    monkeypatch.setattr(Figure, "savefig", record)
    monkeypatch.setattr(Figure, "tight_layout", lambda fig, **kwargs: None)  # measuring text is what takes time
    curve = list(np.exp(-np.arange(6.0)))
    models = ("RNN", "LSTM", "GRU")

    vanishing = load("vanishing_gradients", monkeypatch, block=("tqdm",))
    plt = vanishing.load_pyplot()
    flows = {(stage, kind): curve for stage in ("init", "chrono", "trained") for kind in models}
    vanishing.plot_flows(plt, tmp_path / "flows.png", flows, dict(spectral_radius=0.6), 6, dict.fromkeys(models, 1.0))
    runs = {name: dict(loss=curve, grad_norm=curve, update_norm=curve) for name in ("no clipping", "clipped")}
    vanishing.plot_exploding(plt, tmp_path / "exploding.png", runs,
                             argparse.Namespace(explode_lr=0.2, max_norm=1.0, rho=3.0, explode_length=6))
    view = {(stage, kind): dict(top_singular_value=curve, lyapunov=-0.5) for stage in ("init", "trained")
            for kind in models}
    vanishing.plot_jacobian_view(plt, tmp_path / "jacobian.png", view, 6)
    binary = load("binary_sequences", monkeypatch, block=("tqdm",))
    binary.plot(tmp_path / "binary.png", {(task, n): {m: dict(accuracy=[1.0, 0.5]) for m in models}
                                          for task in ("recall", "parity") for n in (2, 4)}, models)
    custom = load("custom_cell", monkeypatch, block=("tqdm",))
    custom.plot(tmp_path / "custom.png", {4: dict(loss=curve, accuracy=1.0)})
    monkeypatch.delitem(sys.modules, "curvature", raising=False)
    curvature = importlib.import_module("curvature")
    curvature.plot(tmp_path / "curvature.png", dict(step=[0, 5], sharpness=[0.5, 2.0], loss_step=list(range(6)),
                                                     loss=curve), argparse.Namespace(lr=1.0, hidden=4, length=5,
                                                                                     examples=8))
    assert len(record.saved) == 6 and unlabelled == []
