"""Every ```python block of README.md runs as it stands, in a fresh interpreter, and prints something.

A block that cannot run here (it needs a GPU, or mpiexec) is marked on the line just before its
fence with an HTML comment, invisible on GitHub:  <!-- readme-test: skip (needs a GPU) -->
Keep such blocks rare: an unmarked block that fails is a failing test.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```python\n(.*?)^```$", re.M | re.S)
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+)\)\s*-->")


def blocks():
    text = (ROOT / "README.md").read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text[:match.start(2)].count("\n")
        marker = SKIP.match(match.group(1) or "")
        found.append(pytest.param(match.group(2), marker.group(1) if marker else None, id=f"line{line}"))
    return found


def test_the_readme_has_python_blocks():
    assert len(blocks()) >= 4


@pytest.mark.parametrize("code, skip_reason", blocks())
def test_readme_block_runs_and_prints(code, skip_reason, tmp_path):
    if skip_reason:
        pytest.skip(f"marked in README.md: {skip_reason}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"README block printed nothing:\n{code}"


def test_the_skip_marker_is_recognised():
    text = "<!-- readme-test: skip (needs a GPU) -->\n```python\nprint(1)\n```\n"
    match = BLOCK.search(text)
    assert match and SKIP.match(match.group(1)).group(1) == "needs a GPU" and match.group(2) == "print(1)\n"
