"""Smoke tests of the flagship examples: each runs as a script with tiny settings and learns.

Every example is run the way a user runs it, `python examples/NAME.py --quick --out DIR`,
in a subprocess (so BLAS threading and matplotlib's backend are the script's own), and
the metrics it writes to DIR/metrics.json are checked: the loss falls and the held-out
metric beats chance. A second run hides tqdm and matplotlib to check that the examples
degrade to plain loops and skip their plots when the "examples" extra is not installed.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SENTIMENT_DATA = EXAMPLES / "data" / "sentiment-labelled-sentences"  # ships with the repository
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None  # CI installs only the test extra
TIMEOUT = 120  # seconds per run: generous, a quick run takes a few seconds on an idle machine


def run_example(name, *args, hide=(), tmp_path=None, env=None):
    """Run examples/NAME.py with `args`; `hide` lists packages made unimportable; `env` adds variables."""
    env = {**os.environ, **(env or {})}
    paths = [str(ROOT)]
    if hide:
        blocker = tmp_path / "hidden_packages"
        for package in hide:
            (blocker / package).mkdir(parents=True, exist_ok=True)
            (blocker / package / "__init__.py").write_text(f"raise ImportError('{package} hidden by the test')\n")
        paths.insert(0, str(blocker))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], env=env, cwd=tmp_path or ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)


def run_quick(name, tmp_path, *extra, hide=(), env=None):
    out = tmp_path / "out"
    proc = run_example(name, "--quick", "--out", str(out), *extra, hide=hide, tmp_path=tmp_path, env=env)
    assert proc.returncode == 0, f"{name}.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((out / "metrics.json").read_text()), proc, out


ALL_EXAMPLES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", ["char_lm", "sentiment", "seq2seq"])
def test_help(name):
    proc = run_example(name, "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--seed", "--out", "--quick", "--no-progress"):
        assert flag in proc.stdout


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_example_is_self_contained_with_the_same_flags(name):
    """Copy one file and it runs: no imports of sibling examples or shared helpers, no import-time
    settings; and every example takes --out, --quick, --no-progress and --seed and writes metrics.json."""
    import ast
    source = (EXAMPLES / f"{name}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & (set(ALL_EXAMPLES) | {"_common"}), imported
    assert "os.environ[" not in source and "environ.setdefault" not in source and "putenv" not in source
    for flag in ("--out", "--quick", "--no-progress", "--seed"):
        assert f'"{flag}"' in source, flag
    assert "metrics.json" in source


def test_char_lm_learns(tmp_path):
    m, proc, out = run_quick("char_lm", tmp_path)
    first, last = m["train_bpc"][:5], m["train_bpc"][-10:]
    assert sum(last) / len(last) < sum(first) / len(first) - 1.0, m["train_bpc"]
    assert m["val_bpc"] < m["unigram_bpc"] - 0.5  # learned more than character frequencies
    assert m["bigram_bpc"] < m["unigram_bpc"]
    assert "val bpc" in proc.stdout and "sample, temperature" in proc.stdout
    assert f"metrics: {out / 'metrics.json'}" in proc.stdout
    assert not HAS_MATPLOTLIB or (out / "loss.png").stat().st_size > 0


def test_char_lm_trains_a_cell_from_the_zoo(tmp_path):
    """--cell: a stochastic wrapper (zoneout) in two layers, through nn.TBPTT with the documents' resets."""
    m, proc, _ = run_quick("char_lm", tmp_path, "--cell", "zoneout", "--layers", "2", "--steps", "6",
                           "--eval-every", "6", "--sample-len", "5")
    assert m["cell"] == "zoneout" and len(m["train_bpc"]) == 6 and m["val_bpc"] < m["unigram_bpc"] + 1
    assert "Zoneout(p=(0.05, 0.5)" in proc.stdout  # the model printed: the wrapper around each LSTMCell


def test_sentiment_learns(tmp_path):
    m, proc, out = run_quick("sentiment", tmp_path)  # no --data: the copy in examples/data, as in a fresh clone
    assert m["train_loss"][-1] < m["train_loss"][0]
    assert m["test_acc"] > 0.6, m  # chance is 50% (balanced classes)
    assert m["bow_acc"] > 0.6, m
    assert "held-out test accuracy" in proc.stdout
    assert not HAS_MATPLOTLIB or (out / "curves.png").stat().st_size > 0


def test_sentiment_missing_data_explains_where_to_get_it(tmp_path):
    proc = run_example("sentiment", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                       tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "Sentiment Labelled Sentences" in proc.stderr and "--data" in proc.stderr
    assert "TINYGRAD_SEQ_DATA" in proc.stderr


def test_sentiment_finds_its_data_through_the_environment(tmp_path):
    folder = tmp_path / "data_root" / "sentiment-labelled-sentences"
    folder.mkdir(parents=True)
    for source in SENTIMENT_DATA.glob("*_labelled.txt"):  # 200 sentences of each: not the shipped copy
        (folder / source.name).write_text("\n".join(source.read_text().splitlines()[:200]) + "\n")
    proc = run_example("sentiment", "--quick", "--no-progress", "--epochs", "1", "--bow-epochs", "2", "--out",
                       str(tmp_path / "out"), tmp_path=tmp_path, env={"TINYGRAD_SEQ_DATA": str(folder.parent)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("600 sentences"), proc.stdout[:200]


def test_the_sentiment_data_ships_with_its_attribution():
    lines = [line for path in sorted(SENTIMENT_DATA.glob("*_labelled.txt")) for line in path.read_text().splitlines()]
    labels = [line.rsplit("\t", 1)[1] for line in lines]
    assert len(lines) == 3000 and labels.count("1") == labels.count("0") == 1500
    for notice in ("README.md", "LICENSE"):
        text = (SENTIMENT_DATA / notice).read_text()
        assert "CC BY 4.0" in text and "Kotzias" in text and "creativecommons.org/licenses/by/4.0" in text
    assert "Kotzias" in (ROOT / "README.md").read_text()


def test_seq2seq_learns_and_attention_learns_faster(tmp_path):
    # two models train here; one BLAS thread keeps the many small matmuls at ~15 s on a busy 2-core machine,
    # where competing BLAS threads made the run ten times slower (README: Threads)
    m, proc, out = run_quick("seq2seq", tmp_path, env={"OPENBLAS_NUM_THREADS": "1"})
    plain, attention = m["models"]["plain"], m["models"]["attention"]
    for r in (plain, attention):
        first, last = r["loss"][:5], r["loss"][-10:]
        assert sum(last) / len(last) < 0.6 * sum(first) / len(first), r["loss"]
        assert r["char_acc"] > 0.5, r  # chance is about 1 in 11 per character
    assert attention["greedy_acc"] > plain["greedy_acc"] + 0.3, m  # at equal steps (about 0.8 against 0.05)
    assert attention["beam_acc"] > 0.5, m
    assert "held-out exact-match accuracy" in proc.stdout and "attention decoder, beam 3" in proc.stdout
    assert not HAS_MATPLOTLIB or all((out / f).stat().st_size > 0 for f in ("training.png", "attention.png"))


def test_seq2seq_trains_one_model_when_asked(tmp_path):
    m, proc, out = run_quick("seq2seq", tmp_path, "--model", "plain", "--beam-width", "1", "--steps", "3",
                             "--eval-every", "3", "--test-size", "20", "--no-progress")
    assert list(m["models"]) == ["plain"] and "beam_acc" not in m["models"]["plain"]
    assert not (out / "attention.png").exists()


@pytest.mark.parametrize("name", ["char_lm", "sentiment", "seq2seq"])
def test_runs_without_tqdm_and_matplotlib(name, tmp_path):
    extra = {"char_lm": ["--steps", "3", "--eval-every", "3", "--sample-len", "5"],
             "sentiment": ["--epochs", "1", "--bow-epochs", "2"],
             "seq2seq": ["--steps", "3", "--eval-every", "3", "--test-size", "20"]}[name]
    _, proc, out = run_quick(name, tmp_path, *extra, hide=("tqdm", "matplotlib"))
    assert "matplotlib is not installed: skipping the plot" in proc.stdout
    assert not list(out.glob("*.png"))
