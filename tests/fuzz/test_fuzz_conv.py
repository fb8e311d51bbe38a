"""Fuzzing the convolutions: every public convolution op of fastconv.functional against the NumPy reference.

Ops: conv2d (each example runs algorithm="direct", "im2col" and "auto", and out= half the time),
conv2d_grad_input and conv2d_grad_weight (all three algorithms each), conv2d_grad_bias, depthwise_conv2d (with
out= half the time), depthwise_conv2d_grad_input, depthwise_conv2d_grad_weight.

Hypothesis draws, per example: both layouts, float32 or float64, batch 0 to 2, plain / grouped / depthwise
channel structure (conv2d's groups, including groups == C with a channel multiplier), kernels 1x1 to 4x4,
strides 1 to 4 (odd ones included), dilation 1 to 3, every padding form ("valid" and "same" in any letter case,
an int, (ph, pw), asymmetric ((top, bottom), (left, right))), every spelling of the int options (Python or NumPy
ints, tuples, lists, arrays), a bias or none, four kinds of values and, per array, one of nine memory layouts
(Fortran order, negative strides, sliced, transposed, broadcast, unaligned, read-only, byte-swapped, plain).

Examples per op: 200, or 5,000 with ``--fuzz-long`` (tests/conftest.py). Error bound: _fuzz_support.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import reference  # tests/ is on sys.path (tests/conftest.py)
from _fuzz_support import (DATA_FORMATS, DTYPES, VALUES, Examples, arrays, assert_close, fuzz_settings, int_spelling,
                           layouts, nhwc, padding_spelling, pair_spelling, shape_spelling, string_spelling)

ALGORITHMS = ("direct", "im2col", "auto")
MAX_HW_OUT = 6  # output rows / columns at most: keeps the reference (and each example) cheap


@st.composite
def conv_cases(draw, depthwise=False):
    """A valid convolution: shapes, options as the user would spell them, and the specs of its arrays."""
    fmt = draw(st.sampled_from(DATA_FORMATS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.sampled_from([1, 2, 1, 0]))
    structure = "depthwise" if depthwise else draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if structure == "plain":
        groups, cg, kg = 1, draw(st.integers(1, 6)), draw(st.integers(1, 6))
    elif structure == "grouped":
        groups, cg, kg = draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    else:  # groups == C, channel multiplier kg
        groups, cg, kg = draw(st.integers(1, 6)), 1, draw(st.integers(1, 3))
    c, k = groups * cg, groups * kg
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    extent = ((r - 1) * dilation[0] + 1, (s - 1) * dilation[1] + 1)
    out_hw = (draw(st.integers(1, MAX_HW_OUT)), draw(st.integers(1, MAX_HW_OUT)))
    mode = draw(st.sampled_from(["explicit", "explicit", "same", "valid"]))
    hw, pads = [], []
    for axis in range(2):
        if mode == "same":  # any input size; "same" pads it to ceil(size / stride) outputs
            size = draw(st.integers(1, out_hw[axis] * stride[axis]))
            out = -(-size // stride[axis])
            total = max((out - 1) * stride[axis] + extent[axis] - size, 0)
            pads.append((total // 2, total - total // 2))
        else:  # any size that gives out_hw outputs with these pads (the last stride - 1 rows may be left over)
            before, after = (0, 0) if mode == "valid" else (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
            low = (out_hw[axis] - 1) * stride[axis] + extent[axis] - before - after
            if low < 1:  # padding alone would give more outputs: no padding for this axis then
                before, after = 0, 0
                low = (out_hw[axis] - 1) * stride[axis] + extent[axis]
            size = low + draw(st.integers(0, stride[axis] - 1))
            pads.append((before, after))
        hw.append(size)
    padding = string_spelling(draw, mode) if mode in ("same", "valid") else padding_spelling(draw, tuple(pads))
    oh, ow = ((hw[0] + sum(pads[0]) - extent[0]) // stride[0] + 1, (hw[1] + sum(pads[1]) - extent[1]) // stride[1] + 1)
    x_shape = nhwc((n, hw[0], hw[1], c), fmt)
    y_shape = nhwc((n, oh, ow, k), fmt)
    if depthwise:
        w_shape = (r, s, c, kg) if fmt == "channels_last" else (k, 1, r, s)
    else:
        w_shape = (r, s, cg, k) if fmt == "channels_last" else (k, cg, r, s)
    opts = dict(stride=pair_spelling(draw, stride), padding=padding, dilation=pair_spelling(draw, dilation),
                data_format=fmt)
    if not depthwise:
        opts["groups"] = int_spelling(draw, groups)
    ref_opts = dict(stride=stride, padding=tuple(pads), dilation=dilation, data_format=fmt)
    if not depthwise:
        ref_opts["groups"] = groups
    return dict(
        dtype=dtype, fmt=fmt, x_shape=x_shape, w_shape=w_shape, y_shape=y_shape, bias=draw(st.booleans()),
        x_shape_arg=shape_spelling(draw, x_shape), w_shape_arg=shape_spelling(draw, w_shape),
        opts=opts, ref_opts=ref_opts, cg=cg, kg=kg, r=r, s=s, n=n, oh=oh, ow=ow, k=k,
        kinds=[draw(st.sampled_from(VALUES)) for _ in range(3)], memory=[draw(layouts()) for _ in range(3)],
        use_out=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


def _inputs(case, *shapes):
    specs = [(shape, case["kinds"][i], case["dtype"], case["memory"][i]) for i, shape in enumerate(shapes)]
    return arrays(case["seed"], specs)


def _abs(*arrays_):
    return [np.abs(np.asarray(a, np.float64)) for a in arrays_]


# ---------------------------------------------------------------------------------------------- conv2d


def test_conv2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        x, w, b = _inputs(case, case["x_shape"], case["w_shape"], (case["k"],))
        b = b if case["bias"] else None
        want = reference.conv2d(x, w, b, **case["ref_opts"])
        ax, aw, ab = _abs(x, w, b if b is not None else np.zeros(case["k"]))
        magnitude = reference.conv2d(ax, aw, ab if b is not None else None, **case["ref_opts"])
        terms = case["cg"] * case["r"] * case["s"] + 1
        for algorithm in ALGORITHMS:
            out = np.full(case["y_shape"], np.nan, case["dtype"]) if case["use_out"] else None
            got = fastconv.conv2d(x, w, b, algorithm=algorithm, out=out, **case["opts"])
            if out is not None:
                assert got is out
            assert_close(got, want, magnitude, terms, case["dtype"], f"conv2d algorithm={algorithm} {case}")

    check()
    examples.expect(fuzz_examples, "conv2d")


def test_conv2d_grad_input(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        gy, w = _inputs(case, case["y_shape"], case["w_shape"])
        want = reference.conv2d_grad_input(gy, w, case["x_shape"], **case["ref_opts"])
        magnitude = reference.conv2d_grad_input(*_abs(gy, w), case["x_shape"], **case["ref_opts"])
        terms = case["kg"] * case["r"] * case["s"]
        for algorithm in ALGORITHMS:
            got = fastconv.conv2d_grad_input(gy, w, case["x_shape_arg"], algorithm=algorithm, **case["opts"])
            assert_close(got, want, magnitude, terms, case["dtype"], f"conv2d_grad_input algorithm={algorithm} {case}")

    check()
    examples.expect(fuzz_examples, "conv2d_grad_input")


def test_conv2d_grad_weight(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        gy, x = _inputs(case, case["y_shape"], case["x_shape"])
        want = reference.conv2d_grad_weight(gy, x, case["w_shape"], **case["ref_opts"])
        magnitude = reference.conv2d_grad_weight(*_abs(gy, x), case["w_shape"], **case["ref_opts"])
        terms = case["n"] * case["oh"] * case["ow"]
        for algorithm in ALGORITHMS:
            got = fastconv.conv2d_grad_weight(gy, x, case["w_shape_arg"], algorithm=algorithm, **case["opts"])
            assert_close(got, want, magnitude, terms, case["dtype"],
                         f"conv2d_grad_weight algorithm={algorithm} {case}")

    check()
    examples.expect(fuzz_examples, "conv2d_grad_weight")


def test_conv2d_grad_bias(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        (gy,) = _inputs(case, case["y_shape"])
        fmt = case["fmt"]
        want = reference.conv2d_grad_bias(gy, data_format=fmt)
        magnitude = reference.conv2d_grad_bias(*_abs(gy), data_format=fmt)
        got = fastconv.conv2d_grad_bias(gy, data_format=fmt)
        assert_close(got, want, magnitude, case["n"] * case["oh"] * case["ow"], case["dtype"],
                     f"conv2d_grad_bias {case}")

    check()
    examples.expect(fuzz_examples, "conv2d_grad_bias")


# ---------------------------------------------------------------------------------------------- depthwise


def test_depthwise_conv2d(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases(depthwise=True))
    @examples
    def check(case):
        x, w, b = _inputs(case, case["x_shape"], case["w_shape"], (case["k"],))
        b = b if case["bias"] else None
        want = reference.depthwise_conv2d(x, w, b, **case["ref_opts"])
        ax, aw, ab = _abs(x, w, b if b is not None else np.zeros(case["k"]))
        magnitude = reference.depthwise_conv2d(ax, aw, ab if b is not None else None, **case["ref_opts"])
        out = np.full(case["y_shape"], np.nan, case["dtype"]) if case["use_out"] else None
        got = fastconv.depthwise_conv2d(x, w, b, out=out, **case["opts"])
        if out is not None:
            assert got is out
        assert_close(got, want, magnitude, case["r"] * case["s"] + 1, case["dtype"], f"depthwise_conv2d {case}")

    check()
    examples.expect(fuzz_examples, "depthwise_conv2d")


def test_depthwise_conv2d_grad_input(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases(depthwise=True))
    @examples
    def check(case):
        gy, w = _inputs(case, case["y_shape"], case["w_shape"])
        want = reference.depthwise_conv2d_grad_input(gy, w, case["x_shape"], **case["ref_opts"])
        magnitude = reference.depthwise_conv2d_grad_input(*_abs(gy, w), case["x_shape"], **case["ref_opts"])
        got = fastconv.depthwise_conv2d_grad_input(gy, w, case["x_shape_arg"], **case["opts"])
        assert_close(got, want, magnitude, case["kg"] * case["r"] * case["s"], case["dtype"],
                     f"depthwise_conv2d_grad_input {case}")

    check()
    examples.expect(fuzz_examples, "depthwise_conv2d_grad_input")


def test_depthwise_conv2d_grad_weight(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases(depthwise=True))
    @examples
    def check(case):
        gy, x = _inputs(case, case["y_shape"], case["x_shape"])
        want = reference.depthwise_conv2d_grad_weight(gy, x, case["w_shape"], **case["ref_opts"])
        magnitude = reference.depthwise_conv2d_grad_weight(*_abs(gy, x), case["w_shape"], **case["ref_opts"])
        got = fastconv.depthwise_conv2d_grad_weight(gy, x, case["w_shape_arg"], **case["opts"])
        assert_close(got, want, magnitude, case["n"] * case["oh"] * case["ow"], case["dtype"],
                     f"depthwise_conv2d_grad_weight {case}")

    check()
    examples.expect(fuzz_examples, "depthwise_conv2d_grad_weight")
