"""examples/curvature.py --quick: the sharpness is a real Hessian eigenvalue and it rises under gradient descent."""
import importlib
import json
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_curvature_quick_run_tracks_a_hessian_eigenvalue(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot is optional
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "curvature", raising=False)
    curvature = importlib.import_module("curvature")
    result = curvature.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert f"wrote {tmp_path / 'metrics.json'}" in capsys.readouterr().out  # the paths it wrote are printed
    assert metrics["stability_edge"] == 2.0 and len(metrics["sharpness"]) == 5
    assert metrics["sharpness"][-1] > 1.2 * metrics["sharpness"][0]  # progressive sharpening
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]

    # the estimate is an eigenvalue of the Hessian: compare with the dense Hessian of the same loss
    import tinygrad_seq as tg
    from tinygrad_seq import functional as F
    from tinygrad_seq.autograd.functional import hessian
    tg.manual_seed(1)
    rng = np.random.default_rng(1)
    x, y = curvature.recall_data(8, 3, rng)
    model = curvature.Classifier(2)
    estimate, _ = curvature.sharpness(model, x, y, 60, rng)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = tg.Tensor(np.concatenate([p.numpy().ravel() for p in params]).astype(np.float64))

    def loss_of(theta):
        pieces, start = [], 0
        for shape, n in zip(shapes, sizes):
            pieces.append(theta[start:start + n].reshape(shape).float())
            start += n
        w_ih, w_hh, b_ih, b_hh, w, b = pieces
        out, _ = tg.nn.Recurrent(tg.nn.LSTMCell.sharing(w_ih, w_hh, b_ih, b_hh))(x)
        return F.cross_entropy(F.linear(out[-1], w, b), y)

    H = hessian(loss_of, flat).numpy().astype(np.float64)
    eigenvalues = np.linalg.eigvalsh((H + H.T) / 2)
    np.testing.assert_allclose(estimate, eigenvalues.max(), rtol=2e-2)
