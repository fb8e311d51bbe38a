"""Shared fixtures for fastconv's tests.

``tests/`` is put on ``sys.path`` so test modules can ``import reference`` (the independent NumPy reference in
tests/reference.py).  Nothing here imports fastconv at import time, so the reference tests run without it.
"""

import os
import sys

# Keras 3 runs its oracle tests on the local PyTorch; the backend must be chosen before keras is imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator per test (tests are reproducible and order-independent)."""
    return np.random.default_rng(12345)


@pytest.fixture
def torch():
    """PyTorch, or skip the test when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def threads(monkeypatch):
    """fastconv, with its thread count restored after the test whatever the test set it to.

    Small-call thread capping is off inside: the tests' small shapes must really run on the threads they ask
    for, or "identical for any thread count" would only ever compare one thread with itself.
    """
    import fastconv
    from fastconv import _threads

    monkeypatch.setattr(_threads, "_FLOPS_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "_BYTES_PER_THREAD", 1)
    old = _threads._requested_threads
    try:
        yield fastconv
    finally:
        fastconv.set_num_threads(old)


@pytest.fixture
def keras():
    """Keras 3 on the PyTorch backend, or skip the test when it (or torch) is not installed."""
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras oracle tests need KERAS_BACKEND=torch; keras uses {keras.backend.backend()!r}")
    return keras


def pytest_addoption(parser):
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="run the hypothesis fuzz tests (tests/fuzz) with 5,000 examples per op instead of 200")


@pytest.fixture
def fuzz_examples(request):
    """Hypothesis examples per op for tests/fuzz: 200 (CI), or 5,000 with --fuzz-long."""
    return 5000 if request.config.getoption("--fuzz-long") else 200
