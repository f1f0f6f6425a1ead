"""Grad mode, detect_anomaly and the capture switch are per thread, as PyTorch's modes are: one
thread's no_grad inference, anomaly checks or eager loops never change another thread's training."""
import threading

import numpy as np

import tinygrad_seq as tg
from tinygrad_seq import capture, nn


def _run_together(*jobs, rounds=150):
    """Run each job(round) `rounds` times in its own thread, all at once; re-raise the first failure."""
    errors, start = [], threading.Barrier(len(jobs))

    def worker(job):
        try:
            start.wait()
            for k in range(rounds):
                job(k)
        except BaseException as e:  # noqa: B902 -- reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_training_and_no_grad_inference_in_two_threads_at_once():
    tg.manual_seed(0)
    lstm, head = nn.LSTM(3, 8), nn.Linear(8, 1)
    x, y = tg.randn(5, 4, 3), tg.randn(4, 1)
    trained = []

    def train(k):
        out, _ = lstm(x)
        loss = ((head(out[-1]) - y) ** 2).mean()
        assert loss.requires_grad and tg.is_grad_enabled(), f"round {k}: training lost grad mode"
        for p in list(lstm.parameters()) + list(head.parameters()):
            p.grad = None
        loss.backward()
        trained.append(lstm.weight_hh_l0.grad is not None)

    def infer(k):
        for mode in (tg.no_grad(), tg.inference_mode(), tg.set_grad_enabled(False)):
            with mode:
                out, _ = lstm(x)
                assert not out.requires_grad and not tg.is_grad_enabled(), f"round {k}: inference recorded"
        assert tg.is_grad_enabled()

    _run_together(train, infer)
    assert len(trained) == 150 and all(trained)
    assert tg.is_grad_enabled()


def test_a_shared_no_grad_object_and_decorator_restore_each_threads_own_mode():
    shared = tg.no_grad()

    @tg.no_grad()
    def decorated():
        assert not tg.is_grad_enabled()

    def job(k):
        with shared:
            assert not tg.is_grad_enabled()
            with tg.enable_grad():
                assert tg.is_grad_enabled()
            decorated()
            assert not tg.is_grad_enabled()
        assert tg.is_grad_enabled(), f"round {k}: grad mode left off"

    _run_together(job, job, job)
    assert tg.is_grad_enabled()


def test_anomaly_checks_and_the_capture_switch_stay_in_their_thread():
    tg.manual_seed(1)
    cell = nn.GRU(2, 4)
    x = tg.randn(6, 3, 2)
    captured_loops = []

    def captured(k):
        out, _ = cell(x)
        captured_loops.append(type(out.grad_fn).__name__)
        with np.errstate(all="ignore"):
            tg.Tensor([0.0], requires_grad=True).log()  # -inf, and no anomaly check in this thread

    def eager_with_anomaly(k):
        with tg.detect_anomaly(), capture.disabled():
            out, _ = cell(x)
            assert type(out.grad_fn).__name__ != "Loop"
            try:
                tg.Tensor([0.0], requires_grad=True).log()
            except FloatingPointError:
                pass
            else:
                raise AssertionError(f"round {k}: detect_anomaly did not check this thread's op")

    _run_together(captured, eager_with_anomaly, rounds=40)
    assert captured_loops == ["Loop"] * 40
    assert capture.is_enabled()
