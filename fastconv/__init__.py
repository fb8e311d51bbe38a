"""fastconv: fast CPU convolution and max-pooling kernels (Cython + OpenMP) with a NumPy functional API.

>>> import numpy as np, fastconv
>>> x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)   # NHWC
>>> w = np.random.default_rng(1).standard_normal((3, 3, 3, 16)).astype(np.float32)    # HWIO
>>> fastconv.max_pool2d(fastconv.conv2d(x, w, padding="same"), 2).shape
(2, 16, 16, 16)

The Keras-style layer and model API sits on top (``fastconv.Sequential``, ``fastconv.layers``,
``fastconv.load_model``); ``fastconv demo`` trains a small MNIST convnet with it.
"""
from fastconv._config import show_config
from fastconv._include import get_include
from fastconv._memory import block_cache_info, set_block_cache_limit
from fastconv._threads import get_num_threads, set_num_threads
from fastconv._version import __version__
from fastconv.functional import (
    conv2d,
    conv2d_grad_bias,
    conv2d_grad_input,
    conv2d_grad_weight,
    max_pool2d,
    max_pool2d_grad,
)
from fastconv.functional import (
    avg_pool2d,
    avg_pool2d_grad,
    global_avg_pool2d,
    global_avg_pool2d_grad,
    global_max_pool2d,
    global_max_pool2d_grad,
)
from fastconv.functional import depthwise_conv2d, depthwise_conv2d_grad_input, depthwise_conv2d_grad_weight
# The Keras-style API (pure Python over the functional API; optional dependencies load inside functions).
from fastconv import activations, callbacks, initializers, layers, losses, metrics, optimizers, utils
from fastconv.models import Model, Sequential, load_model
from fastconv.formats.onnx_import import load_onnx

__all__ = [
    "__version__",
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_grad_bias",
    "depthwise_conv2d",
    "depthwise_conv2d_grad_input",
    "depthwise_conv2d_grad_weight",
    "max_pool2d",
    "max_pool2d_grad",
    "avg_pool2d",
    "avg_pool2d_grad",
    "global_avg_pool2d",
    "global_avg_pool2d_grad",
    "global_max_pool2d",
    "global_max_pool2d_grad",
    "set_num_threads",
    "get_num_threads",
    "show_config",
    "get_include",
    "set_block_cache_limit",
    "block_cache_info",
    "Model",
    "Sequential",
    "load_model",
    "load_onnx",
    "layers",
    "models",
    "losses",
    "metrics",
    "optimizers",
    "callbacks",
    "activations",
    "initializers",
    "utils",
    "applications",
    "visualize",
]

# Imported on first use: they pull in urllib/ssl and matplotlib-facing code that ``import fastconv`` must not pay.
_LAZY_SUBPACKAGES = ("applications", "visualize", "formats")


def __getattr__(name):
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module(f"fastconv.{name}")
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")
