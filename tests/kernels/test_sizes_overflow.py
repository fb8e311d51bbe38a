"""Sizes that do not fit: every public op refuses, before allocating anything or running a kernel, a call whose
arrays would overflow 64-bit sizes, exceed this machine's memory, or push the kernels' index arithmetic past int64.

The refusal is ``fastconv._validation.SizeError``, a ValueError (bad arguments) that is also a MemoryError (so
code written for NumPy's allocation failures catches it), with a message naming the argument and its value.
The limits (docs/bad_input.md, "Sizes"):

- an array fastconv allocates (an output, a gradient of ``input_shape`` / ``weight_shape``, a contiguous copy of
  a view) must have a byte size that fits in int64 and fits the machine's memory (``memory_limit()``);
- strides, window extents (dilated kernels, pool sizes) and padded input sizes are at most 2**60, and a pooling
  window at most 2**60 cells, so that the kernels' sums of a few of them stay inside int64;
- ``algorithm="im2col"`` needs BLAS's 32-bit sizes; "auto" then picks the direct kernels.

Just inside the limits the kernels must still be right: strides and paddings of 2**58 on a 4x4 image give the
exact answer (checked by hand), and so does a 2**30 x 2**30 average-pooling window.
"""
import re
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv import _validation, functional
from fastconv._problem import conv_problem

SizeError = _validation.SizeError
LIMIT = 2 ** 60
F32 = np.float32


def _raises_size_error(match):
    return pytest.raises(SizeError, match=match)


def _allocates_nothing_big(call):
    """Run ``call`` (which must raise SizeError) and return the peak traced memory (NumPy reports its buffers to
    tracemalloc): a refusal before allocation stays far below the sizes involved."""
    tracemalloc.start()
    try:
        with pytest.raises(SizeError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes were allocated before refusing"
    return info.value


# ---------------------------------------------------------------------------------------------- the error type


def test_size_error_is_a_value_error_and_a_memory_error():
    assert issubclass(SizeError, ValueError) and issubclass(SizeError, MemoryError)
    with pytest.raises(MemoryError):
        fastconv.conv2d_grad_input(np.ones((1, 1, 1, 1), F32), np.ones((1, 1, 1, 1), F32), (1, 2 ** 40, 2 ** 40, 1),
                                   stride=2 ** 40)


# ---------------------------------------------------------------------------------------------- counts beyond int64

HUGE_SHAPE = (1, 2 ** 40, 2 ** 40, 1)   # 2**80 elements: no 64-bit size holds it
HUGE_STRIDE = 2 ** 40                   # so that the output (and grad_output) stays 1x1
G11 = np.ones((1, 1, 1, 1), F32)


@pytest.mark.parametrize("call, name", [
    pytest.param(lambda: fastconv.conv2d_grad_input(G11, G11, HUGE_SHAPE, stride=HUGE_STRIDE),
                 "conv2d_grad_input", id="conv2d_grad_input"),
    pytest.param(lambda: fastconv.conv2d_grad_input(G11, G11, (1, 1, 2 ** 40, 2 ** 40), stride=HUGE_STRIDE,
                                                    data_format="channels_first"),
                 "conv2d_grad_input", id="conv2d_grad_input-channels_first"),
    pytest.param(lambda: fastconv.depthwise_conv2d_grad_input(G11, G11, HUGE_SHAPE, stride=HUGE_STRIDE),
                 "depthwise_conv2d_grad_input", id="depthwise_conv2d_grad_input"),
    pytest.param(lambda: fastconv.max_pool2d_grad(G11, np.zeros((1, 1, 1, 1), np.int64), HUGE_SHAPE,
                                                  pool_size=2 ** 30, stride=HUGE_STRIDE),
                 "max_pool2d_grad", id="max_pool2d_grad"),
    pytest.param(lambda: fastconv.avg_pool2d_grad(G11, HUGE_SHAPE, pool_size=2 ** 30, stride=HUGE_STRIDE),
                 "avg_pool2d_grad", id="avg_pool2d_grad"),
    pytest.param(lambda: fastconv.global_avg_pool2d_grad(np.ones((1, 1), F32), HUGE_SHAPE),
                 "global_avg_pool2d_grad", id="global_avg_pool2d_grad"),
    pytest.param(lambda: fastconv.global_max_pool2d_grad(np.ones((1, 1), F32), np.zeros((1, 1), np.int64),
                                                         HUGE_SHAPE),
                 "global_max_pool2d_grad", id="global_max_pool2d_grad"),
])
def test_input_shape_overflowing_int64_is_refused(call, name):
    error = _allocates_nothing_big(call)
    message = str(error)
    assert message.startswith(f"{name}'s result would have shape")
    assert "more than a 64-bit size can hold" in message
    assert re.search(r"received input_shape=\(1, 1099511627776, 1099511627776, 1\)$|"
                     r"received input_shape=\(1, 1, 1099511627776, 1099511627776\)$", message), message


def test_zero_batch_does_not_hide_an_overflowing_plane():
    """(0, 2**40, 2**40, 1) holds no element, but its plane (2**80 cells) would still overflow the index
    arithmetic: refused too."""
    with _raises_size_error(r"global_max_pool2d_grad's result .* more than a 64-bit size can hold"):
        fastconv.global_max_pool2d_grad(np.ones((0, 1), F32), np.zeros((0, 1), np.int64), (0, 2 ** 40, 2 ** 40, 1))


@pytest.mark.parametrize("op", ["conv2d_grad_weight", "depthwise_conv2d_grad_weight"])
def test_weight_shape_overflowing_int64_is_refused(op):
    """2**60 output channels computed in float64 (2**63 bytes); grad_output is a zero-stride int8 view of that
    many (int input computes in float64)."""
    x = np.ones((1, 1, 1, 1), F32)
    shape = (1, 1, 1, 2 ** 60)
    go = np.broadcast_to(np.int8(1), (1, 1, 1, 2 ** 60))
    with _raises_size_error(rf"{op}'s result would have shape \(1, 1, 1, 1152921504606846976\): "
                            r"1152921504606846976 float64 elements \(9223372036854775808 bytes\), more than a 64-bit "
                            r"size can hold; received weight_shape=\(1, 1, 1, 1152921504606846976\)$"):
        getattr(fastconv, op)(go, x, shape)


# ---------------------------------------------------------------------------------------------- larger than memory

TEN_TB = 10 * 10 ** 12


def test_conv2d_output_of_10_terabytes_is_refused_before_allocating():
    """A 1x1 image padded so that the output needs 10 TB (float32): no allocation is attempted."""
    pad = int(((TEN_TB / 4) ** 0.5 - 1) / 2) + 1
    assert (2 * pad + 1) ** 2 * 4 >= TEN_TB
    x = np.ones((1, 1, 1, 1), F32)
    error = _allocates_nothing_big(lambda: fastconv.conv2d(x, x, padding=pad))
    assert str(error).startswith(f"conv2d's output would have shape (1, {2 * pad + 1}, {2 * pad + 1}, 1) and need")
    assert "TiB as float32, more than the" in str(error) and "of memory on this machine" in str(error)
    assert str(error).endswith(f"received x with shape (1, 1, 1, 1), weight with shape (1, 1, 1, 1), stride=1, "
                               f"padding={pad}, dilation=1")


@pytest.mark.parametrize("call, what", [
    pytest.param(lambda: fastconv.conv2d_grad_input(G11, G11, (1, 10 ** 6, 10 ** 6, 1), stride=10 ** 6),
                 "conv2d_grad_input's result", id="conv2d_grad_input"),
    pytest.param(lambda: fastconv.conv2d_grad_weight(np.broadcast_to(F32(1), (1, 1, 1, 2500)), G11,
                                                     (10 ** 6 + 1, 10 ** 6 + 1, 1, 2500), padding=10 ** 6 // 2),
                 "conv2d_grad_weight's result", id="conv2d_grad_weight"),
    pytest.param(lambda: fastconv.max_pool2d(G11, 10 ** 6, stride=1, padding=10 ** 6 - 1),
                 "max_pool2d's output", id="max_pool2d"),
    pytest.param(lambda: fastconv.avg_pool2d(G11, 10 ** 6, stride=1, padding=10 ** 6 - 1),
                 "avg_pool2d's output", id="avg_pool2d"),
    pytest.param(lambda: fastconv.depthwise_conv2d(G11, G11, padding=10 ** 6),
                 "depthwise_conv2d's output", id="depthwise_conv2d"),
    pytest.param(lambda: fastconv.depthwise_conv2d_grad_input(G11, G11, (1, 10 ** 6, 10 ** 6, 1), stride=10 ** 6),
                 "depthwise_conv2d_grad_input's result", id="depthwise_conv2d_grad_input"),
])
def test_arrays_larger_than_memory_are_refused(call, what, monkeypatch):
    """The same rule for every op, against a pretended 1 TiB machine (so the test is the same anywhere)."""
    monkeypatch.setattr(_validation, "memory_limit", lambda: 1 << 40)
    error = _allocates_nothing_big(call)
    assert str(error).startswith(f"{what} would have shape"), str(error)
    assert "more than the 1.0 TiB of memory on this machine; received" in str(error)


def test_memory_limit_is_exact(monkeypatch):
    """An output of exactly memory_limit() bytes is allowed; one element more is refused."""
    x = np.ones((1, 16, 16, 1), F32)  # conv2d output (1, 16, 16, 1): 1024 bytes
    w = np.ones((1, 1, 1, 1), F32)
    monkeypatch.setattr(_validation, "memory_limit", lambda: 1024)
    assert fastconv.conv2d(x, w).shape == (1, 16, 16, 1)
    with _raises_size_error(r"conv2d's output would have shape \(1, 17, 16, 1\) and need 1088 bytes as float32, "
                            r"more than the 1024 bytes of memory on this machine; received x with shape "
                            r"\(1, 17, 16, 1\)"):
        fastconv.conv2d(np.ones((1, 17, 16, 1), F32), w)


def test_a_view_too_large_to_copy_is_refused():
    """A zero-stride view of 2**46 elements is fine as an argument, but fastconv would copy it (C-contiguous)
    first: refused before the copy."""
    x = np.broadcast_to(F32(1), (1, 2 ** 21, 2 ** 21, 16))
    w = np.ones((1, 1, 16, 1), F32)
    with _raises_size_error(r"a C-contiguous copy of an input would have shape \(1, 2097152, 2097152, 16\) and need "
                            r"256.0 TiB as float32, .*received an array of shape \(1, 2097152, 2097152, 16\), "
                            r"dtype float32 and strides \(0, 0, 0, 0\)$"):
        fastconv.conv2d(x, w, stride=2 ** 21)


def test_memory_limit_is_the_machine_memory_or_lower():
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < _validation.memory_limit() <= physical


# ---------------------------------------------------------------------------------------------- index arithmetic

X44 = np.arange(1, 17, dtype=np.float64).reshape(1, 4, 4, 1)
W1 = np.full((1, 1, 1, 1), 2.0)


@pytest.mark.parametrize("kwargs, what, received", [
    pytest.param(dict(stride=LIMIT + 1), "the stride along the rows", f"stride={LIMIT + 1}", id="stride"),
    pytest.param(dict(stride=(1, 2 ** 64)), "the stride along the columns", f"stride=(1, {2 ** 64})",
                 id="stride-64-bit"),
    pytest.param(dict(padding=2 ** 62), "the padded input's number of rows",
                 f"x with shape (1, 4, 4, 1) and padding={2 ** 62}", id="padding"),
    pytest.param(dict(padding=((0, 0), (LIMIT, 0))), "the padded input's number of columns",
                 f"x with shape (1, 4, 4, 1) and padding=((0, 0), ({LIMIT}, 0))", id="padding-left"),
])
def test_conv2d_geometry_beyond_the_index_limit(kwargs, what, received):
    with _raises_size_error(re.escape(what) + r" is \d+, more than 2\*\*60 = 1152921504606846976, the largest size "
                            r"the kernels' 64-bit index arithmetic allows; received " + re.escape(received) + "$"):
        fastconv.conv2d(X44, W1, **kwargs)


def test_dilated_kernel_beyond_the_index_limit():
    with _raises_size_error(r"the dilated kernel extent along the rows is 1152921504606846977, more than 2\*\*60 .*"
                            r"received dilation=576460752303423488 and weight with shape \(3, 1, 1, 1\)$"):
        fastconv.conv2d(X44, np.ones((3, 1, 1, 1)), dilation=2 ** 59, padding="same")


@pytest.mark.parametrize("kwargs, what, received", [
    pytest.param(dict(pool_size=LIMIT + 1), "the pooling window extent along the rows", f"pool_size={LIMIT + 1}",
                 id="pool_size"),
    pytest.param(dict(pool_size=2 ** 31, padding=2 ** 31 - 1), "the pooling window's number of cells",
                 f"pool_size={2 ** 31}", id="window-cells"),
    pytest.param(dict(pool_size=2, stride=(2, LIMIT + 1)), "the stride along the columns",
                 f"stride=(2, {LIMIT + 1})", id="stride"),
])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_geometry_beyond_the_index_limit(op, kwargs, what, received):
    with _raises_size_error(re.escape(what) + r" is \d+, more than 2\*\*60 .*received " + re.escape(received) + "$"):
        getattr(fastconv, op)(X44, **kwargs)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv_just_inside_the_index_limit_is_exact(algorithm, data_format):
    """Stride and padding 2**58 on a 4x4 image: output rows and columns start at -2**58, 0 and 2**58, so only the
    centre output reads an input cell, x[0, 0]. (With 2**62 the direct kernel used to overflow and return 0.)"""
    big = 2 ** 58
    cf = data_format == "channels_first"
    x = X44.transpose(0, 3, 1, 2) if cf else X44
    y = fastconv.conv2d(x, W1, stride=big, padding=big, data_format=data_format, algorithm=algorithm)
    want = np.zeros((3, 3))
    want[1, 1] = 2.0  # x[0, 0] * w
    np.testing.assert_array_equal(y[0, 0] if cf else y[0, :, :, 0], want)
    go = np.arange(1.0, 10.0).reshape(1, 1, 3, 3) if cf else np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    gx = fastconv.conv2d_grad_input(go, W1, x.shape, stride=big, padding=big, data_format=data_format,
                                    algorithm=algorithm)
    want = np.zeros((4, 4))
    want[0, 0] = 10.0  # go[1, 1] * w
    np.testing.assert_array_equal(gx[0, 0] if cf else gx[0, :, :, 0], want)
    gw = fastconv.conv2d_grad_weight(go, x, (1, 1, 1, 1), stride=big, padding=big, data_format=data_format,
                                     algorithm=algorithm)
    assert gw.ravel().tolist() == [5.0]  # go[1, 1] * x[0, 0]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("multiplier", [1, 4])
def test_depthwise_just_inside_the_index_limit_is_exact(data_format, multiplier):
    """The same with depthwise_conv2d: its kernels would malloc scratch in proportion to the stride (and crashed
    the process); fastconv runs such problems on conv2d's direct kernels instead."""
    big = 2 ** 58
    cf = data_format == "channels_first"
    x = X44.transpose(0, 3, 1, 2) if cf else X44
    w = np.full((multiplier, 1, 1, 1) if cf else (1, 1, 1, multiplier), 2.0)
    y = fastconv.depthwise_conv2d(x, w, stride=big, padding=big, data_format=data_format)
    plane = y[0, 0] if cf else y[0, :, :, 0]
    assert plane[1, 1] == 2.0 and np.count_nonzero(plane) == 1
    go = np.ones(y.shape)
    gx = fastconv.depthwise_conv2d_grad_input(go, w, x.shape, stride=big, padding=big, data_format=data_format)
    plane = gx[0, 0] if cf else gx[0, :, :, 0]
    assert plane[0, 0] == 2.0 * multiplier and np.count_nonzero(plane) == 1
    gw = fastconv.depthwise_conv2d_grad_weight(go, x, w.shape, stride=big, padding=big, data_format=data_format)
    assert gw.ravel().tolist() == [1.0] * multiplier  # go[1, 1] * x[0, 0]


@pytest.mark.parametrize("dilation", [2 ** 20, 2 ** 40])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_depthwise_with_a_huge_dilation(dilation, data_format):
    """A 3x3 kernel dilated 2**40 with "same" padding: each output sees only the centre tap."""
    cf = data_format == "channels_first"
    x = np.arange(1.0, 26.0).reshape((1, 1, 5, 5) if cf else (1, 5, 5, 1))
    w = np.arange(1.0, 10.0).reshape((1, 1, 3, 3) if cf else (3, 3, 1, 1))
    y = fastconv.depthwise_conv2d(x, w, dilation=dilation, padding="same", data_format=data_format)
    np.testing.assert_array_equal(y, x * 5.0)  # the centre weight
    gx = fastconv.depthwise_conv2d_grad_input(np.ones_like(x), w, x.shape, dilation=dilation, padding="same",
                                              data_format=data_format)
    np.testing.assert_array_equal(gx, np.full(x.shape, 5.0))
    gw = fastconv.depthwise_conv2d_grad_weight(np.ones_like(x), x, w.shape, dilation=dilation, padding="same",
                                               data_format=data_format)
    want = np.zeros((3, 3))
    want[1, 1] = x.sum()
    np.testing.assert_array_equal(gw.reshape(3, 3), want)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_pools_just_inside_the_index_limit_are_exact(data_format):
    """A 2**30 x 2**30 window (2**60 cells, the limit) over a 1x1 image padded by 2**30 - 1 on every side: max is
    the pixel; with count_include_pad the divisor is 2**60 exactly (it used to overflow to 0 and give inf)."""
    big = 2 ** 30
    x = np.full((1, 1, 1, 1), 3.0)
    opts = dict(pool_size=big, padding=big - 1, data_format=data_format)
    out, idx = fastconv.max_pool2d(x, return_indices=True, **opts)
    assert out.ravel().tolist() == [3.0] and idx.ravel().tolist() == [0]
    assert fastconv.max_pool2d_grad(np.full((1, 1, 1, 1), 7.0), idx, x.shape, **opts).ravel().tolist() == [7.0]
    assert fastconv.avg_pool2d(x, count_include_pad=True, **opts).ravel().tolist() == [3.0 * 2.0 ** -60]
    assert fastconv.avg_pool2d(x, **opts).ravel().tolist() == [3.0]
    grad = fastconv.avg_pool2d_grad(np.ones((1, 1, 1, 1)), x.shape, count_include_pad=True, **opts)
    assert grad.ravel().tolist() == [2.0 ** -60]


def test_max_pool2d_grad_with_a_huge_window_is_fast():
    """The backward pass gathers from the windows over each real input cell, never visiting padding (a 2**57-row
    window once made a padding-visiting pass run for ever)."""
    x = np.arange(1.0, 7.0).reshape(1, 2, 3, 1)
    opts = dict(pool_size=(2 ** 57, 2), padding=((2 ** 57 - 2, 0), (0, 1)))  # window rows: -(2**57 - 2) to 1
    out, idx = fastconv.max_pool2d(x, return_indices=True, **opts)  # one row of windows: columns 0-1, 2
    assert out.ravel().tolist() == [5.0, 6.0] and idx.ravel().tolist() == [4, 5]
    grad = fastconv.max_pool2d_grad(np.ones_like(out), idx, x.shape, **opts)
    assert grad[0, :, :, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]


# ---------------------------------------------------------------------------------------------- BLAS's 32-bit sizes


def test_explicit_im2col_refuses_sizes_blas_cannot_take():
    """A channels_first plane of 46341**2 > 2**31 - 1 pixels: im2col would hand BLAS a leading dimension that
    does not fit its 32-bit int. (The input is a zero-stride view: no memory.)"""
    x = np.broadcast_to(F32(1), (1, 1, 46341, 46341))
    w = np.ones((1, 1, 1, 1), F32)
    with pytest.raises(ValueError, match=r'algorithm="im2col" hands BLAS 32-bit sizes \(at most 2147483647\), too '
                                         r"small for this convolution .*received algorithm='im2col'$"):
        fastconv.conv2d(x, w, data_format="channels_first", algorithm="im2col")
    with pytest.raises(ValueError, match="received algorithm='im2col'$"):
        fastconv.conv2d_grad_weight(x, x, (1, 1, 1, 1), data_format="channels_first", algorithm="im2col")


def test_auto_never_hands_blas_sizes_it_cannot_take():
    """_settle_algorithm: im2col where BLAS can take the sizes, else direct; the same problem channels_last
    (no plane-sized leading dimension) keeps im2col."""
    cf = conv_problem((1, 1, 46341, 46341), (1, 1, 1, 1), stride=1, padding="valid", dilation=1, groups=1,
                      channels_last=False)
    cl = conv_problem((1, 46341, 46341, 1), (1, 1, 1, 1), stride=1, padding="valid", dilation=1, groups=1,
                      channels_last=True)
    assert not functional._im2col_fits(cf) and functional._im2col_fits(cl)
    assert functional._settle_algorithm("im2col", "auto", cf, []) == "direct"
    assert functional._settle_algorithm("im2col", "auto", cl, []) == "im2col"
    # a NaN does not send a problem to im2col when BLAS cannot take it
    assert functional._settle_algorithm("direct", "auto", cf, [np.array([np.nan])]) == "direct"
    assert functional._settle_algorithm("direct", "auto", cl, [np.array([np.nan])]) == "im2col"
