"""Embedding fastconv in NumPy code: views and slices in, out= buffers that are slots of a larger array, and
a thread pool of fastconv calls that gives exactly (bitwise) the serial results.

Of the functional API only ``conv2d`` and ``depthwise_conv2d`` take ``out=``; every function takes views.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv


def _views(rng, shape, dtype=np.float32):
    """The same logical array as strided views of larger buffers: a step-2 slice, reversed rows, Fortran
    order, an NCHW buffer seen through a transpose; each with its contiguous copy."""
    n, h, w, c = shape
    big = rng.standard_normal((n, 2 * h, w + 3, 2 * c)).astype(dtype)
    strided = big[:, ::2, 2:w + 2, ::2]
    reversed_rows = big[:, ::-2, 1:w + 1, :c]
    fortran = np.asfortranarray(strided)
    nchw = np.ascontiguousarray(strided.transpose(0, 3, 1, 2))
    transposed = nchw.transpose(0, 2, 3, 1)
    views = {"strided": strided, "reversed_rows": reversed_rows, "fortran": fortran, "transposed": transposed}
    assert all(not v.flags.c_contiguous for v in views.values())
    return views


# Each case: a call taking one 4-D NHWC array (plus fixed extra operands), as an embedding would make it.
W3 = np.random.default_rng(7).standard_normal((3, 3, 6, 5)).astype(np.float32)
DW = np.random.default_rng(8).standard_normal((3, 3, 6, 2)).astype(np.float32)
CALLS = {
    "conv2d": lambda a: fastconv.conv2d(a, W3, padding="same", stride=2),
    "conv2d_im2col": lambda a: fastconv.conv2d(a, W3, padding=1, algorithm="im2col"),
    "conv2d_channels_first": lambda a: fastconv.conv2d(a.transpose(0, 3, 1, 2), W3.transpose(3, 2, 0, 1),
                                                       padding="same", data_format="channels_first"),
    "conv2d_grad_weight": lambda a: fastconv.conv2d_grad_weight(a[..., :5], a, (3, 3, 6, 5), padding="same"),
    "conv2d_grad_input": lambda a: fastconv.conv2d_grad_input(a[..., :5], W3, a.shape, padding="same"),
    "depthwise_conv2d": lambda a: fastconv.depthwise_conv2d(a, DW, padding="same"),
    "max_pool2d": lambda a: fastconv.max_pool2d(a, 3, stride=2, padding="same", return_indices=True),
    "avg_pool2d": lambda a: fastconv.avg_pool2d(a, 2),
    "global_max_pool2d": lambda a: fastconv.global_max_pool2d(a, return_indices=True),
    "global_avg_pool2d": lambda a: fastconv.global_avg_pool2d(a),
}


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _assert_bitwise_equal(got, expected):
    for g, e in zip(_as_tuple(got), _as_tuple(expected), strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert g.tobytes() == e.tobytes()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_views_and_slices_give_the_contiguous_results(name, rng):
    call = CALLS[name]
    for label, view in _views(rng, (2, 9, 8, 6)).items():
        before = view.copy()
        _assert_bitwise_equal(call(view), call(np.ascontiguousarray(view)))
        np.testing.assert_array_equal(view, before, err_msg=f"{name} wrote into its {label} input")


@pytest.mark.parametrize("fn, weight", [(fastconv.conv2d, W3), (fastconv.depthwise_conv2d, DW)],
                         ids=["conv2d", "depthwise_conv2d"])
def test_out_fills_one_slot_of_a_preallocated_batch(fn, weight, rng):
    """A pipeline writes each result straight into its slot of a larger array (a C-contiguous sub-array)."""
    inputs = [rng.standard_normal((2, 9, 8, 6)).astype(np.float32) for _ in range(3)]
    expected = [fn(x, weight, padding="same") for x in inputs]
    slots = np.full((len(inputs) + 2,) + expected[0].shape, -7.0, dtype=np.float32)
    for i, x in enumerate(inputs):
        slot = slots[i + 1]
        assert fn(x, weight, padding="same", out=slot) is slot
    for i, e in enumerate(expected):
        _assert_bitwise_equal(slots[i + 1], e)
    assert np.all(slots[0] == -7.0) and np.all(slots[-1] == -7.0), "out= wrote outside its slot"


@pytest.mark.parametrize("fn, weight", [(fastconv.conv2d, W3), (fastconv.depthwise_conv2d, DW)],
                         ids=["conv2d", "depthwise_conv2d"])
def test_out_slot_that_is_not_contiguous_is_refused(fn, weight, rng):
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    k = fn(x, weight, padding="same").shape[-1]
    interleaved = np.zeros((2, 9, 8, 2 * k), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        fn(x, weight, padding="same", out=interleaved[..., ::2])
    assert not interleaved.any()


def _task(seed):
    """One unit of a thread-pool workload: several functional calls on its own data, two into out= buffers."""
    rng = np.random.default_rng(seed)
    fmt = "channels_last" if seed % 2 == 0 else "channels_first"
    x = rng.standard_normal((3, 13, 11, 8)).astype(np.float64 if seed % 3 == 0 else np.float32)
    w = rng.standard_normal((3, 3, 8, 12)).astype(x.dtype)
    if fmt == "channels_first":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    y = fastconv.conv2d(x, w, padding="same", data_format=fmt)
    y2 = np.empty_like(y)
    fastconv.conv2d(x, w, padding="same", data_format=fmt, algorithm="im2col", out=y2)
    dw_w = rng.standard_normal((3, 3, 8, 1) if fmt == "channels_last" else (8, 1, 3, 3)).astype(x.dtype)
    dwo = np.empty(x.shape, dtype=x.dtype)
    fastconv.depthwise_conv2d(x, dw_w, padding="same", data_format=fmt, out=dwo)
    pooled, idx = fastconv.max_pool2d(y, 2, data_format=fmt, return_indices=True)
    return [
        y, y2, dwo, pooled, idx,
        fastconv.max_pool2d_grad(pooled, idx, y.shape, pool_size=2, data_format=fmt),
        fastconv.avg_pool2d(y, 3, stride=2, padding="same", data_format=fmt),
        fastconv.conv2d_grad_input(y, w, x.shape, padding="same", data_format=fmt),
        fastconv.conv2d_grad_weight(y, x, w.shape, padding="same", data_format=fmt),
        fastconv.global_avg_pool2d(y, data_format=fmt),
    ]


@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_thread_pool_gives_the_serial_results_bitwise(kernel_threads, threads):
    threads.set_num_threads(kernel_threads)
    seeds = list(range(12))
    serial = [_task(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(_task, seeds + seeds))   # each task twice, interleaved with the others
    for i, got in enumerate(concurrent):
        for g, e in zip(got, serial[i % len(seeds)], strict=True):
            _assert_bitwise_equal(g, e)
