"""Fixtures for the Dask and scikit-learn integration tests: tiny models and images, and a real local cluster.

The cluster (a scheduler and two single-threaded worker processes on 127.0.0.1) starts once per test module that
asks for it: it takes a few seconds.
"""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def client():
    """A ``distributed.Client`` on a fresh ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def tiny_convnet(seed=0, classes=3):
    """Conv 4 - pool - flatten - Dense softmax on 16x16x1 images (fixed initial weights)."""
    import fastconv
    from fastconv.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D

    with fastconv.utils.seeded_global_generator(np.random.default_rng(seed)):
        return fastconv.Sequential([Input((16, 16, 1)), Conv2D(4, 3, activation="relu"), MaxPooling2D(2),
                                    Flatten(), Dense(classes, activation="softmax")])


def tiny_conv_base(seed=1):
    """The convolutional base of :func:`tiny_convnet`: (16, 16, 1) -> (7, 7, 4)."""
    import fastconv
    from fastconv.layers import Conv2D, Input, MaxPooling2D

    with fastconv.utils.seeded_global_generator(np.random.default_rng(seed)):
        return fastconv.Sequential([Input((16, 16, 1)), Conv2D(4, 3, activation="relu"), MaxPooling2D(2)])


@pytest.fixture
def model():
    return tiny_convnet()


@pytest.fixture
def conv_base():
    return tiny_conv_base()


@pytest.fixture(scope="module")
def images():
    """2,000 images of 16x16x1, float32."""
    return np.random.default_rng(7).standard_normal((2000, 16, 16, 1)).astype(np.float32)
