"""Small calls of every public kernel, for the thread, fork and memory tests (importable by worker processes, so
no pytest here).

:func:`workload` runs each operation once on data drawn from ``seed`` and returns every result: forward
convolution by both algorithms, in both layouts, with strides, dilation, groups and padding; the three
convolution gradients; depthwise convolution and its gradients; max pooling with indices and its gradient;
average and global pooling and their gradients.
"""
import numpy as np

import fastconv


# (input, output channels): "small" measures per-call costs; "parallel" is just big enough that fastconv gives
# every operation two OpenMP threads (it runs calls under ~4 MFLOP, or pools under 512 KiB, on one thread).
SIZES = {"small": ((1, 5, 5, 4), 6), "parallel": ((2, 64, 64, 16), 8)}


def _data(seed, dtype, size):
    rng = np.random.default_rng(seed)
    shape, k = SIZES[size]
    c = shape[-1]
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((3, 3, c, k)).astype(dtype)
    wg = rng.standard_normal((3, 3, c // 2, k)).astype(dtype)  # groups=2
    wd = rng.standard_normal((3, 3, c, 2)).astype(dtype)  # depthwise, multiplier 2
    b = rng.standard_normal(k).astype(dtype)
    return x, w, wg, wd, b


def operations(seed=0, dtype=np.float32, size="parallel"):
    """``{name: zero-argument callable}``, one per public operation, on fixed data of ``SIZES[size]``."""
    f = fastconv
    x, w, wg, wd, b = _data(seed, dtype, size)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w_oihw = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    y = f.conv2d(x, w, b, padding="same")
    y_strided = f.conv2d(x, w, stride=2, padding="same")
    yd = f.depthwise_conv2d(x, wd, padding="same")
    pooled, idx = f.max_pool2d(x, 3, stride=2, padding="same", return_indices=True)
    avg = f.avg_pool2d(x, 2)
    gmax, gidx = f.global_max_pool2d(x, return_indices=True)
    return {
        "conv2d_direct": lambda: f.conv2d(x, w, b, padding="same", algorithm="direct"),
        "conv2d_im2col": lambda: f.conv2d(x, w, b, padding="same", algorithm="im2col"),
        "conv2d_nchw": lambda: f.conv2d(x_nchw, w_oihw, b, padding=1, data_format="channels_first"),
        "conv2d_strided_dilated": lambda: f.conv2d(x, w, stride=2, dilation=2, padding="same"),
        "conv2d_groups": lambda: f.conv2d(x, wg, groups=2),
        "conv2d_grad_input": lambda: f.conv2d_grad_input(y_strided, w, x.shape, stride=2, padding="same"),
        "conv2d_grad_input_direct": lambda: f.conv2d_grad_input(y, w, x.shape, padding="same", algorithm="direct"),
        "conv2d_grad_weight": lambda: f.conv2d_grad_weight(y, x, w.shape, padding="same"),
        "conv2d_grad_weight_direct": lambda: f.conv2d_grad_weight(y, x, w.shape, padding="same", algorithm="direct"),
        "conv2d_grad_bias": lambda: f.conv2d_grad_bias(y),
        "depthwise_conv2d": lambda: f.depthwise_conv2d(x, wd, padding="same"),
        "depthwise_conv2d_grad_input": lambda: f.depthwise_conv2d_grad_input(yd, wd, x.shape, padding="same"),
        "depthwise_conv2d_grad_weight": lambda: f.depthwise_conv2d_grad_weight(yd, x, wd.shape, padding="same"),
        "max_pool2d": lambda: f.max_pool2d(x, 3, stride=2, padding="same", return_indices=True),
        "max_pool2d_grad": lambda: f.max_pool2d_grad(pooled, idx, x.shape, pool_size=3, stride=2, padding="same"),
        "avg_pool2d": lambda: f.avg_pool2d(x, 2),
        "avg_pool2d_grad": lambda: f.avg_pool2d_grad(avg, x.shape, pool_size=2),
        "global_avg_pool2d": lambda: f.global_avg_pool2d(x),
        "global_avg_pool2d_grad": lambda: f.global_avg_pool2d_grad(f.global_avg_pool2d(x), x.shape),
        "global_max_pool2d": lambda: f.global_max_pool2d(x, return_indices=True),
        "global_max_pool2d_grad": lambda: f.global_max_pool2d_grad(gmax, gidx, x.shape),
    }


def _arrays(result):
    return list(result) if isinstance(result, tuple) else [result]


def workload(seed, dtype=np.float32):
    """Every operation's results (a flat list of arrays) on the "parallel"-sized data of ``seed``."""
    results = []
    for call in operations(seed, dtype).values():
        results.extend(_arrays(call()))
    return results


def workload_float64(seed):
    return workload(seed, np.float64)
