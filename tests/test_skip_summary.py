"""The end of a test run counts skipped tests by reason, a line per reason, instead of a line per test."""
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SKIPPING = '''
import pytest

@pytest.mark.parametrize("k", range(5))
def test_needs_a_gpu(k):
    pytest.skip("needs CuPy and a CUDA GPU")

def test_needs_mpi():
    pytest.skip("needs mpiexec")

def test_runs():
    pass
'''


def run_pytest(tmp_path, *options):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", *options,
                           str(tmp_path)], cwd=tmp_path, env={"PYTHONPATH": str(TESTS), "PATH": ""},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_skips_are_counted_by_reason(tmp_path):
    out = run_pytest(tmp_path)
    assert "6 skipped, by reason (-rs lists each test)" in out
    lines = out.splitlines()
    start = next(k for k, line in enumerate(lines) if "by reason" in line)
    assert lines[start + 1:start + 3] == ["     5  needs CuPy and a CUDA GPU", "     1  needs mpiexec"]
    assert "SKIPPED [" not in out


def test_rs_still_lists_every_skipped_test(tmp_path):
    out = run_pytest(tmp_path, "-rs")
    assert "SKIPPED [5]" in out and "by reason" not in out
