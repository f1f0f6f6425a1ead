"""tg.set_num_threads / get_num_threads, and an import that leaves the process's BLAS threads alone."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tinygrad_seq as tg
from tinygrad_seq import threads

ROOT = Path(__file__).resolve().parents[1]
CHOICES = ("TINYGRAD_SEQ_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_after_import(**env):
    """get_num_threads() in a fresh interpreter that imports tinygrad_seq with `env` set."""
    clean = {k: v for k, v in os.environ.items() if k not in CHOICES}
    clean["PYTHONPATH"] = str(ROOT)
    code = "import os, tinygrad_seq as tg; print(tg.get_num_threads(), 'OPENBLAS_NUM_THREADS' in os.environ)"
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    threads, env_set = proc.stdout.split()
    return int(threads), env_set == "True"


# OpenBLAS caps its thread count at the number of cores when it starts
needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")


@pytest.fixture
def restore_threads(monkeypatch):
    before = tg.get_num_threads()
    monkeypatch.setattr(threads, "_chosen", threads._chosen)  # set_num_threads's choice ends with the test
    yield
    tg.set_num_threads(before)


@needs_two_cores
def test_set_and_get(restore_threads):
    tg.set_num_threads(2)
    assert tg.get_num_threads() == 2
    tg.set_num_threads(1)
    assert tg.get_num_threads() == 1


def test_bad_thread_counts():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="expected a positive integer"):
            tg.set_num_threads(bad)


def test_import_leaves_the_blas_threads_as_they_were():
    clean = {k: v for k, v in os.environ.items() if k not in CHOICES}
    code = ("import threadpoolctl\n"
            "def counts(): return [p['num_threads'] for p in threadpoolctl.threadpool_info()]\n"
            "import numpy\nbefore = counts()\nimport tinygrad_seq\nprint(before == counts(), before)")
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("True"), proc.stdout


@needs_two_cores
def test_the_users_environment_is_left_to_the_blas_library():
    assert threads_after_import(OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2") == (2, True)
    assert threads_after_import(OPENBLAS_NUM_THREADS="1") == (1, True)


def test_the_threads_are_numpys_blas_not_another_librarys():
    import numpy
    blas = threads._numpy_blas()
    if blas is None:
        pytest.skip("NumPy has no threaded BLAS here")
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    if not os.path.abspath(blas.filepath).startswith(os.path.join(site, "numpy")):
        pytest.skip("NumPy uses a BLAS installed outside its wheel")
    assert tg.get_num_threads() == blas.num_threads


@needs_two_cores
def test_blas_threads_is_scoped(restore_threads):
    tg.set_num_threads(2)
    with threads.blas_threads(1):
        assert tg.get_num_threads() == 1
    assert tg.get_num_threads() == 2


def test_loop_threads_follow_set_num_threads_or_the_free_cores(restore_threads, monkeypatch):
    cores = threads._cores()
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(threads, "_sample", (-1.0, 1, 99))
    assert 1 <= threads.loop_threads() <= cores
    monkeypatch.setattr(threads, "_sample", (-1.0, 1, 99))
    monkeypatch.setattr(threads, "_other_runnable", lambda: 0)
    assert threads.loop_threads() == cores
    monkeypatch.setattr(threads, "_sample", (-1.0, 1, 0))
    monkeypatch.setattr(threads, "_other_runnable", lambda: cores + 3)
    assert threads.loop_threads() == cores  # one busy look is a blip
    monkeypatch.setattr(threads, "_sample", (-1.0,) + threads._sample[1:])
    assert threads.loop_threads() == 1  # busy at two looks running
    tg.set_num_threads(1)
    assert threads.loop_threads() == 1


def as_if_other_tasks(monkeypatch, count):
    """The library's own policy (no set_num_threads), on a machine where `count` other tasks are running."""
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(threads, "_sample", (-1.0, 1, 99))
    monkeypatch.setattr(threads, "_other_runnable", lambda: count)


@needs_two_cores
def test_a_loop_on_a_busy_machine_uses_the_free_cores_then_restores(restore_threads, monkeypatch):
    tg.set_num_threads(2)
    as_if_other_tasks(monkeypatch, threads._cores() - 1)
    with threads.limited():
        assert tg.get_num_threads() == 1
    assert tg.get_num_threads() == 2
    as_if_other_tasks(monkeypatch, 0)
    with threads.limited():  # idle: the BLAS is left as it is
        assert tg.get_num_threads() == 2


@needs_two_cores
def test_on_a_busy_machine_matmuls_and_backward_passes_use_the_free_cores(restore_threads, monkeypatch):
    tg.set_num_threads(2)
    as_if_other_tasks(monkeypatch, threads._cores() - 1)
    entered, real = [], threads.blas_threads
    monkeypatch.setattr(threads, "blas_threads", lambda n: (entered.append(n), real(n))[1])
    a, b = tg.randn(3, 4, requires_grad=True), tg.randn(4, 5)
    y = a @ b
    assert entered == [1] and tg.get_num_threads() == 2  # the product ran at 1 thread, then restored
    during = []
    y.register_hook(lambda g: during.append(tg.get_num_threads()))
    y.sum().backward()
    assert during == [1] and tg.get_num_threads() == 2
    (g,) = tg.autograd.grad((a @ b).sum(), [a])
    assert tg.get_num_threads() == 2 and g.shape == a.shape

    entered.clear()  # idle: nothing is switched
    as_if_other_tasks(monkeypatch, 0)
    (a @ b).sum().backward()
    assert entered == [] and tg.get_num_threads() == 2


def test_a_captured_loop_leaves_the_blas_threads_as_they_were(restore_threads):
    before = tg.get_num_threads()
    lstm = tg.nn.LSTM(3, 4)
    out, _ = lstm(tg.randn(6, 2, 3))
    out.sum().backward()
    assert tg.get_num_threads() == before
