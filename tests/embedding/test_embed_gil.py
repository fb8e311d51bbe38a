"""The functional API releases the GIL while its kernels run.

Detection without timing assertions on fastconv's speed: a pure-Python thread spins and records every stall
(a gap between two of its loop iterations). A call that holds the GIL stalls it for the whole call; a call that
releases it lets it run throughout, so its longest stall is a small part of the call. A negative control shows
the probe does catch a call that holds the GIL.
"""
import math
import threading
import time

import numpy as np
import pytest

import fastconv

# A call must last long enough that scheduler noise is small against it.
MIN_CALL_SECONDS = 0.1
STALL = 1e-3


class _Spinner(threading.Thread):
    """Pure-Python loop that records (start, end) of every gap between its iterations longer than STALL."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stalls = []
        self.running = True

    def run(self):
        stalls = self.stalls
        last = time.perf_counter()
        while self.running:
            now = time.perf_counter()
            if now - last > STALL:
                stalls.append((last, now))
            last = now


def _longest_stall_fraction(call):
    """The longest stall of a spinning Python thread during call(), as a fraction of the call's duration."""
    spinner = _Spinner()
    spinner.start()
    time.sleep(0.01)   # let it start spinning
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    spinner.running = False
    spinner.join()     # the spinner records a stall that ended with the call when it next runs
    overlaps = [min(end, t1) - max(start, t0) for start, end in spinner.stalls if end > t0 and start < t1]
    return max(overlaps, default=0.0) / (t1 - t0)


def _sized(make):
    """make(batch) -> call; the batch at which one call takes about MIN_CALL_SECONDS on this machine."""
    call = make(1)
    call()             # warm up: first calls import lazily (BLAS), which must not be what we time
    t0 = time.perf_counter()
    call()
    elapsed = time.perf_counter() - t0
    return make(max(1, min(64, math.ceil(1.5 * MIN_CALL_SECONDS / max(elapsed, 1e-6)))))


def _conv(algorithm):
    def make(batch):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 48, 48, 64)).astype(np.float32)
        w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
        return lambda: fastconv.conv2d(x, w, padding="same", algorithm=algorithm)
    return make


def _conv_grad_input(batch):
    rng = np.random.default_rng(1)
    g = rng.standard_normal((batch, 24, 24, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    return lambda: fastconv.conv2d_grad_input(g, w, (batch, 48, 48, 64), stride=2, padding="same")


def _conv_grad_weight(batch):
    rng = np.random.default_rng(2)
    g = rng.standard_normal((batch, 48, 48, 64)).astype(np.float32)
    x = rng.standard_normal((batch, 48, 48, 64)).astype(np.float32)
    return lambda: fastconv.conv2d_grad_weight(g, x, (3, 3, 64, 64), padding="same")


def _depthwise(batch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, 64, 64, 64)).astype(np.float32)
    w = rng.standard_normal((7, 7, 64, 1)).astype(np.float32)
    return lambda: fastconv.depthwise_conv2d(x, w, padding="same")


def _max_pool(batch):
    x = np.random.default_rng(4).standard_normal((batch, 96, 96, 32)).astype(np.float32)
    return lambda: fastconv.max_pool2d(x, 9, stride=1, padding="same", return_indices=True)


def _avg_pool(batch):
    x = np.random.default_rng(5).standard_normal((batch, 96, 96, 32)).astype(np.float32)
    return lambda: fastconv.avg_pool2d(x, 9, stride=1, padding="same")


CASES = {
    "conv2d_direct": _conv("direct"),
    "conv2d_im2col": _conv("im2col"),
    "conv2d_grad_input": _conv_grad_input,
    "conv2d_grad_weight": _conv_grad_weight,
    "depthwise_conv2d": _depthwise,
    "max_pool2d": _max_pool,
    "avg_pool2d": _avg_pool,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_call_lets_python_threads_run(name, threads):
    threads.set_num_threads(1)   # leave a core to the spinning thread on a small machine
    call = _sized(CASES[name])
    # A call holding the GIL stalls the spinner for ~100% of it, every time; retries only absorb a busy machine.
    fractions = []
    for _ in range(3):
        fractions.append(_longest_stall_fraction(call))
        if fractions[-1] < 0.5:
            break
    assert fractions[-1] < 0.5, f"{name} kept a Python thread stalled for {fractions} of the call"


def test_probe_catches_a_call_that_holds_the_gil():
    # Sorting a list of floats runs in C from start to end without releasing the GIL.
    data = list(np.random.default_rng(6).standard_normal(200_000))
    call = _sized(lambda copies: lambda: sorted(data * copies))
    assert _longest_stall_fraction(call) > 0.8
