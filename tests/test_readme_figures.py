"""The README states the figures the examples measured: every example's row of the example table
and the Quickstart's last line are what tools/readme_figures.py writes from examples/results/*.json."""
import copy
import difflib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "tools" / "readme_figures.py")
readme_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_figures)


def test_the_readme_states_the_committed_figures():
    text = readme_figures.README.read_text()
    expected = readme_figures.render(text, readme_figures.load_results())
    diff = "\n".join(difflib.unified_diff(text.splitlines(), expected.splitlines(), "README.md", "from the results",
                                          lineterm="", n=0))
    assert expected == text, f"the README's figures differ from examples/results; run " \
                             f"python tools/readme_figures.py (or --run NAME to re-measure):\n{diff}"


def test_every_example_has_committed_results_and_a_row():
    assert set(readme_figures.EXAMPLES) == {p.stem for p in (ROOT / "examples").glob("*.py")}
    assert {p.stem for p in readme_figures.RESULTS.glob("*.json")} == set(readme_figures.EXAMPLES)


def test_a_changed_figure_or_command_is_caught():
    text, results = readme_figures.README.read_text(), readme_figures.load_results()
    changed = copy.deepcopy(results)
    changed["char_lm"]["runs"]["default"]["figures"]["val_bpc"] += 0.1
    rewritten = readme_figures.render(text, changed)
    assert rewritten != text and rewritten.count("val bpc") == text.count("val bpc")
    changed["char_lm"]["runs"]["default"]["command"] += " --steps 10"
    with pytest.raises(ValueError, match="no run of `python examples/char_lm.py`"):
        readme_figures.render(text, changed)
    with pytest.raises(ValueError, match="0 places for seq2seq's 'table row'"):
        readme_figures.render(text.replace("| `seq2seq.py`", "| `seq2seq2.py`"), results)
