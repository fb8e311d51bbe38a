"""Fuzzing the pools: every public pooling op of fastconv.functional against the NumPy reference.

Ops: max_pool2d (values, and indices with return_indices=True), max_pool2d_grad (fed the reference's indices,
in any integer dtype and memory layout), avg_pool2d, avg_pool2d_grad, global_avg_pool2d, global_avg_pool2d_grad,
global_max_pool2d (values and indices), global_max_pool2d_grad.

Hypothesis draws, per example: both layouts, float32 or float64, batch 0 to 2, pool sizes 1x1 to 4x4, strides
1 to 4 or the default (the pool size), every padding form ("valid", "same" in any letter case, an int, a pair,
asymmetric nested pairs, each side smaller than the pool), ceil_mode, count_include_pad, every spelling of the
int options, four kinds of values (small integers make ties: the first maximum must win) and, per array, one of
nine memory layouts (_fuzz_support.MEMORY).

Examples per op: 200, or 5,000 with ``--fuzz-long`` (tests/conftest.py). Max-pooling is exact; sums are held
to _fuzz_support's error bound.
"""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import reference  # tests/ is on sys.path (tests/conftest.py)
from _fuzz_support import (DATA_FORMATS, DTYPES, VALUES, Examples, arrays, assert_close, fuzz_settings, in_memory,
                           layouts, nhwc, padding_spelling, pair_spelling, shape_spelling, string_spelling)

MAX_HW_OUT = 6


@st.composite
def pool_cases(draw):
    """A valid pooling call: shapes, options as the user would spell them, and the specs of its arrays."""
    fmt = draw(st.sampled_from(DATA_FORMATS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.sampled_from([1, 2, 1, 0]))
    c = draw(st.integers(1, 5))
    pool = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    default_stride = draw(st.booleans())
    stride = pool if default_stride else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    ceil_mode = draw(st.booleans())
    mode = draw(st.sampled_from(["explicit", "explicit", "same", "valid"]))
    out_hw = (draw(st.integers(1, MAX_HW_OUT)), draw(st.integers(1, MAX_HW_OUT)))
    hw, pads = [], []
    for axis in range(2):
        k, st_ = pool[axis], stride[axis]
        if mode == "same":
            size = draw(st.integers(1, out_hw[axis] * st_))
            out = -(-size // st_)
            total = max((out - 1) * st_ + k - size, 0)
            before, after = total // 2, total - total // 2
            if max(before, after) >= k:  # a window of padding only: fastconv refuses it; use valid sizes then
                mode = "valid"
        if mode != "same":
            before, after = (0, 0) if mode == "valid" else (draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1)))
            size = max(1, (out_hw[axis] - 1) * st_ + k - before - after) + draw(st.integers(0, st_ - 1))
        hw.append(size)
        pads.append((before, after))
    if mode == "valid" and any(p != (0, 0) for p in pads):
        mode = "explicit"  # ("same" fell back on one axis after padding the other)
    padding = string_spelling(draw, mode) if mode in ("same", "valid") else padding_spelling(draw, tuple(pads))
    oh, ow = reference.pool_output_hw(tuple(hw), pool, stride, tuple(pads), ceil_mode)
    x_shape = nhwc((n, hw[0], hw[1], c), fmt)
    opts = dict(pool_size=pair_spelling(draw, pool), stride=None if default_stride else pair_spelling(draw, stride),
                padding=padding, ceil_mode=ceil_mode, data_format=fmt)
    ref_opts = dict(pool_size=pool, stride=stride, padding=tuple(pads), ceil_mode=ceil_mode, data_format=fmt)
    return dict(
        dtype=dtype, fmt=fmt, n=n, c=c, hw=tuple(hw), x_shape=x_shape, x_shape_arg=shape_spelling(draw, x_shape),
        y_shape=nhwc((n, oh, ow, c), fmt), pool=pool, stride=stride, opts=opts, ref_opts=ref_opts,
        count_include_pad=draw(st.booleans()), index_dtype=draw(st.sampled_from([np.int64, np.int32, np.intp])),
        kinds=[draw(st.sampled_from(VALUES)) for _ in range(2)], memory=[draw(layouts()) for _ in range(3)],
        seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


def _inputs(case, *shapes):
    specs = [(shape, case["kinds"][i], case["dtype"], case["memory"][i]) for i, shape in enumerate(shapes)]
    return arrays(case["seed"], specs)


def _overlap(case):
    """The most windows one input cell lies in."""
    return math.prod(math.ceil(k / s) for k, s in zip(case["pool"], case["stride"]))


def _as_given(indices, case):
    """The reference's indices in the drawn integer dtype and memory layout (any but broadcast, which would
    change them: max_pool2d_grad needs each index inside its own window)."""
    kind, axis = case["memory"][2]
    return in_memory(indices.astype(case["index_dtype"]), "c" if kind == "broadcast" else kind, axis)


# ---------------------------------------------------------------------------------------------- max pooling


def test_max_pool2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (x,) = _inputs(case, case["x_shape"])
        want, want_idx = reference.max_pool2d(x, **case["ref_opts"])
        got = fastconv.max_pool2d(x, **case["opts"])
        assert got.dtype == case["dtype"] and got.shape == case["y_shape"], case
        np.testing.assert_array_equal(got, want, err_msg=f"max_pool2d {case}")  # exact: a winner is an input
        got2, idx = fastconv.max_pool2d(x, return_indices=True, **case["opts"])
        np.testing.assert_array_equal(got2, got)
        assert idx.dtype == np.int64 and idx.shape == case["y_shape"], case
        np.testing.assert_array_equal(idx, want_idx, err_msg=f"max_pool2d indices {case}")

    check()
    examples.expect(fuzz_examples, "max_pool2d")


def test_max_pool2d_grad(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        x, gy = _inputs(case, case["x_shape"], case["y_shape"])
        _, idx = reference.max_pool2d(x, **case["ref_opts"])
        want = reference.max_pool2d_grad(gy, idx, case["x_shape"], data_format=case["fmt"])
        magnitude = reference.max_pool2d_grad(np.abs(np.asarray(gy, np.float64)), idx, case["x_shape"],
                                              data_format=case["fmt"])
        got = fastconv.max_pool2d_grad(gy, _as_given(idx, case), case["x_shape_arg"], **case["opts"])
        assert_close(got, want, magnitude, _overlap(case), case["dtype"], f"max_pool2d_grad {case}")

    check()
    examples.expect(fuzz_examples, "max_pool2d_grad")


# ---------------------------------------------------------------------------------------------- average pooling


def test_avg_pool2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (x,) = _inputs(case, case["x_shape"])
        cip = case["count_include_pad"]
        want = reference.avg_pool2d(x, count_include_pad=cip, **case["ref_opts"])
        magnitude = reference.avg_pool2d(np.abs(np.asarray(x, np.float64)), count_include_pad=cip,
                                         **case["ref_opts"])
        got = fastconv.avg_pool2d(x, count_include_pad=cip, **case["opts"])
        assert_close(got, want, magnitude, math.prod(case["pool"]), case["dtype"], f"avg_pool2d {case}")

    check()
    examples.expect(fuzz_examples, "avg_pool2d")


def test_avg_pool2d_grad(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (gy,) = _inputs(case, case["y_shape"])
        cip = case["count_include_pad"]
        want = reference.avg_pool2d_grad(gy, case["x_shape"], count_include_pad=cip, **case["ref_opts"])
        magnitude = reference.avg_pool2d_grad(np.abs(np.asarray(gy, np.float64)), case["x_shape"],
                                              count_include_pad=cip, **case["ref_opts"])
        got = fastconv.avg_pool2d_grad(gy, case["x_shape_arg"], count_include_pad=cip, **case["opts"])
        assert_close(got, want, magnitude, _overlap(case), case["dtype"], f"avg_pool2d_grad {case}")

    check()
    examples.expect(fuzz_examples, "avg_pool2d_grad")


# ---------------------------------------------------------------------------------------------- global pooling


def test_global_avg_pool2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (x,) = _inputs(case, case["x_shape"])
        fmt = case["fmt"]
        want = reference.global_avg_pool2d(x, data_format=fmt)
        magnitude = reference.global_avg_pool2d(np.abs(np.asarray(x, np.float64)), data_format=fmt)
        got = fastconv.global_avg_pool2d(x, data_format=fmt)
        assert_close(got, want, magnitude, math.prod(case["hw"]), case["dtype"], f"global_avg_pool2d {case}")

    check()
    examples.expect(fuzz_examples, "global_avg_pool2d")


def test_global_avg_pool2d_grad(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (gy,) = _inputs(case, (case["n"], case["c"]))
        fmt = case["fmt"]
        want = reference.global_avg_pool2d_grad(gy, case["x_shape"], data_format=fmt)
        magnitude = reference.global_avg_pool2d_grad(np.abs(np.asarray(gy, np.float64)), case["x_shape"],
                                                     data_format=fmt)
        got = fastconv.global_avg_pool2d_grad(gy, case["x_shape_arg"], data_format=fmt)
        assert_close(got, want, magnitude, 1, case["dtype"], f"global_avg_pool2d_grad {case}")

    check()
    examples.expect(fuzz_examples, "global_avg_pool2d_grad")


def test_global_max_pool2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        (x,) = _inputs(case, case["x_shape"])
        fmt = case["fmt"]
        want, want_idx = reference.global_max_pool2d(x, data_format=fmt)
        got = fastconv.global_max_pool2d(x, data_format=fmt)
        assert got.dtype == case["dtype"] and got.shape == (case["n"], case["c"]), case
        np.testing.assert_array_equal(got, want, err_msg=f"global_max_pool2d {case}")
        got2, idx = fastconv.global_max_pool2d(x, data_format=fmt, return_indices=True)
        np.testing.assert_array_equal(got2, got)
        assert idx.dtype == np.int64
        np.testing.assert_array_equal(idx, want_idx, err_msg=f"global_max_pool2d indices {case}")

    check()
    examples.expect(fuzz_examples, "global_max_pool2d")


def test_global_max_pool2d_grad(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        x, gy = _inputs(case, case["x_shape"], (case["n"], case["c"]))
        fmt = case["fmt"]
        _, idx = reference.global_max_pool2d(x, data_format=fmt)
        want = reference.global_max_pool2d_grad(gy, idx, case["x_shape"], data_format=fmt)
        got = fastconv.global_max_pool2d_grad(gy, _as_given(idx, case), case["x_shape_arg"], data_format=fmt)
        assert got.dtype == case["dtype"] and got.flags.c_contiguous, case
        np.testing.assert_array_equal(got, want, err_msg=f"global_max_pool2d_grad {case}")  # exact: a copy

    check()
    examples.expect(fuzz_examples, "global_max_pool2d_grad")
