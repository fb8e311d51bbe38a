"""The bad-input matrix of fastconv's functional API (docs/functional.md, "Errors").

Every public function validates all of its arguments before any kernel runs and raises
``ValueError`` for a bad value or ``TypeError`` for a bad type, with a message that names the
argument and contains the value received. Each case below is one bad argument on top of an
otherwise valid call.

A case is ``(overrides, exception, names, values)``: ``overrides`` replaces arguments of the valid
base call, the message must contain one of ``names`` as a whole word and one of ``values``
(plain substrings). Where the fault lies between two arguments (a channel mismatch, say) every
argument that could fairly be blamed is listed.
"""
import re

import numpy as np
import pytest

import fastconv

F64 = np.float64
F32 = np.float32


# --------------------------------------------------------------------------------------------
# helpers


def _pattern(names, values):
    """A regex that needs one of ``names`` (whole word) and one of ``values`` (substring)."""
    if isinstance(names, str):
        names = (names,)
    if isinstance(values, str):
        values = (values,)
    name_alt = "|".join(re.escape(n) for n in names)
    pat = r"(?s)(?=.*(?<![\w.])(?:" + name_alt + r")(?!\w))"
    if values:
        pat += r"(?=.*(?:" + "|".join(re.escape(v) for v in values) + r"))"
    return pat


def _shape_values(shape):
    """Ways a message may show an array's shape or number of dimensions."""
    nd = len(shape)
    return (
        repr(tuple(shape)),
        f"ndim={nd}",
        f"ndim {nd}",
        f"ndim: {nd}",
        f"{nd}-d",
        f"{nd}d",
        f"{nd}D",
        f"{nd} dim",
    )


def _call(fn, positional, base, overrides):
    kwargs = dict(base)
    kwargs.update(overrides)
    args = [kwargs.pop(name) for name in positional]
    return fn(*args, **kwargs)


def _check(fn, positional, base, overrides, exc, names, values):
    with pytest.raises(exc, match=_pattern(names, values)):
        _call(fn, positional, base, overrides)


def _case(overrides, exc, names, values, id):
    return pytest.param(overrides, exc, names, values, id=id)


def _zeros(shape, dtype=F64):
    return np.zeros(shape, dtype=dtype)


def _readonly(shape, dtype=F64):
    a = np.zeros(shape, dtype=dtype)
    a.flags.writeable = False
    return a


def _noncontig(shape, dtype=F64):
    big = np.zeros(tuple(shape[:-1]) + (2 * shape[-1],), dtype=dtype)
    return big[..., ::2]


# Shared bad options, reused by every conv function. Keys are the argument names.
def _conv_option_cases():
    return [
        # stride
        _case({"stride": 0}, ValueError, "stride", "0", "stride=0"),
        _case({"stride": -2}, ValueError, "stride", "-2", "stride=-2"),
        _case({"stride": (1, 0)}, ValueError, "stride", "(1, 0)", "stride=(1,0)"),
        _case({"stride": (1, 1, 1)}, ValueError, "stride", "(1, 1, 1)", "stride-len3"),
        _case({"stride": (1,)}, ValueError, "stride", "(1,)", "stride-len1"),
        _case({"stride": 1.5}, TypeError, "stride", "1.5", "stride-float"),
        _case({"stride": "1"}, TypeError, "stride", "'1'", "stride-str"),
        _case({"stride": None}, TypeError, "stride", "None", "stride-None"),
        _case({"stride": (1, 2.0)}, TypeError, "stride", "(1, 2.0)", "stride-pair-float"),
        # dilation
        _case({"dilation": 0}, ValueError, "dilation", "0", "dilation=0"),
        _case({"dilation": (0, 1)}, ValueError, "dilation", "(0, 1)", "dilation=(0,1)"),
        _case({"dilation": (1, 1, 1)}, ValueError, "dilation", "(1, 1, 1)", "dilation-len3"),
        _case({"dilation": 2.0}, TypeError, "dilation", "2.0", "dilation-float"),
        _case({"dilation": "2"}, TypeError, "dilation", "'2'", "dilation-str"),
        # padding
        _case({"padding": "sme"}, ValueError, "padding", "'sme'", "padding='sme'"),
        _case({"padding": "SAME_"}, ValueError, "padding", "'SAME_'", "padding='SAME_'"),
        _case({"padding": -1}, ValueError, "padding", "-1", "padding=-1"),
        _case({"padding": (1, -1)}, ValueError, "padding", "(1, -1)", "padding=(1,-1)"),
        _case({"padding": ((0, 0), (0, -2))}, ValueError, "padding", "((0, 0), (0, -2))",
              "padding-nested-negative"),
        _case({"padding": (1, 1, 1)}, ValueError, "padding", "(1, 1, 1)", "padding-len3"),
        _case({"padding": ((1, 1), (1,))}, ValueError, "padding", "((1, 1), (1,))",
              "padding-nested-len1"),
        _case({"padding": 1.5}, TypeError, "padding", "1.5", "padding-float"),
        _case({"padding": None}, TypeError, "padding", "None", "padding-None"),
        # groups
        _case({"groups": 0}, ValueError, "groups", "0", "groups=0"),
        _case({"groups": -1}, ValueError, "groups", "-1", "groups=-1"),
        _case({"groups": 1.0}, TypeError, "groups", "1.0", "groups-float"),
        _case({"groups": "1"}, TypeError, "groups", "'1'", "groups-str"),
        _case({"groups": None}, TypeError, "groups", "None", "groups-None"),
        # data_format and algorithm
        _case({"data_format": "channels_middle"}, ValueError, "data_format", "'channels_middle'",
              "data_format-unknown"),
        _case({"data_format": "NHWC"}, ValueError, "data_format", "'NHWC'", "data_format=NHWC"),
        _case({"data_format": None}, TypeError, "data_format", "None", "data_format-None"),
        _case({"algorithm": "fft"}, ValueError, "algorithm", "'fft'", "algorithm='fft'"),
        _case({"algorithm": "Direct "}, ValueError, "algorithm", "'Direct '", "algorithm-typo"),
        _case({"algorithm": 1}, TypeError, "algorithm", "1", "algorithm-int"),
    ]


def _bad_dtype_cases(argname, shape):
    """complex, object and string arrays of an otherwise valid shape: TypeError."""
    return [
        _case({argname: np.zeros(shape, np.complex128)}, TypeError, argname, "complex",
              f"{argname}-complex128"),
        _case({argname: np.zeros(shape, np.complex64)}, TypeError, argname, "complex",
              f"{argname}-complex64"),
        _case({argname: np.zeros(shape, object)}, TypeError, argname, ("object", "'O'", "dtype('O')"),
              f"{argname}-object"),
        _case({argname: np.full(shape, "a")}, TypeError, argname, ("<U1", "str", "U1"),
              f"{argname}-str"),
        _case({argname: np.zeros(shape, "S1")}, TypeError, argname, ("S1", "bytes"),
              f"{argname}-bytes"),
        _case({argname: np.zeros(shape, "datetime64[s]")}, TypeError, argname, "datetime64",
              f"{argname}-datetime64"),
    ]


# --------------------------------------------------------------------------------------------
# conv2d
#
# base: x (1, 6, 6, 4), weight 3x3, C=4 -> K=6, channels_last, output (1, 4, 4, 6)

CONV_POS = ("x", "weight")
CONV_BASE = dict(x=_zeros((1, 6, 6, 4)), weight=_zeros((3, 3, 4, 6)), bias=_zeros((6,)))
CONV_OUT_SHAPE = (1, 4, 4, 6)


def _conv2d_cases():
    cases = [
        # wrong ndim
        _case({"x": _zeros((6, 6, 4))}, ValueError, "x", _shape_values((6, 6, 4)), "x-ndim3"),
        _case({"x": _zeros((1, 1, 6, 6, 4))}, ValueError, "x", _shape_values((1, 1, 6, 6, 4)), "x-ndim5"),
        _case({"x": np.float64(1.0)}, (ValueError, TypeError), "x", ("()", "ndim=0", "0-d", "0d", "0 dim",
                                                                    "float"), "x-scalar"),
        _case({"weight": _zeros((3, 3, 4))}, ValueError, "weight", _shape_values((3, 3, 4)), "weight-ndim3"),
        _case({"weight": _zeros((1, 3, 3, 4, 6))}, ValueError, "weight", _shape_values((1, 3, 3, 4, 6)),
              "weight-ndim5"),
        _case({"bias": _zeros((1, 6))}, ValueError, "bias", _shape_values((1, 6)), "bias-ndim2"),
        _case({"bias": np.float64(0.0)}, (ValueError, TypeError), "bias", ("()", "ndim=0", "0-d", "0d",
                                                                          "0 dim", "float"), "bias-scalar"),
        _case({"bias": _zeros((5,))}, ValueError, "bias", ("(5,)", "5"), "bias-len5"),
        # channel mismatch between x (C=4) and weight (C/groups=5)
        _case({"weight": _zeros((3, 3, 5, 6))}, ValueError, ("x", "weight"), ("5", "(3, 3, 5, 6)"),
              "channel-mismatch"),
        # groups=3 does not divide C=4 (weight C/groups=1 would need C=3)
        _case({"groups": 3, "weight": _zeros((3, 3, 1, 6))}, ValueError, ("groups", "x", "weight"), "3",
              "groups-not-dividing-C"),
        # groups=3 divides C=6 (weight C/groups=2) but not K=4
        _case({"x": _zeros((1, 6, 6, 6)), "weight": _zeros((3, 3, 2, 4)), "bias": _zeros((4,)), "groups": 3},
              ValueError, ("groups", "weight"), ("3", "4"), "groups-not-dividing-K"),
        # output size below 1: 3x3 kernel on a 2x2 image, and dilation 3 (k_eff 7) on 6x6
        _case({"x": _zeros((1, 2, 2, 4))}, ValueError,
              ("x", "weight", "padding", "output", "kernel", "input"), ("0", "2", "3", "(1, 2, 2, 4)"),
              "output-size-0"),
        _case({"x": _zeros((1, 2, 6, 4))}, ValueError,
              ("x", "weight", "padding", "output", "kernel", "input"), ("0", "2", "3", "(1, 2, 6, 4)"),
              "output-rows-0"),
        _case({"dilation": 3}, ValueError, ("x", "weight", "dilation", "padding", "output", "kernel", "input"),
              ("0", "7", "6", "3"), "output-size-negative-dilation"),
        _case({"x": _zeros((1, 1, 1, 4)), "padding": ((0, 1), (1, 0))}, ValueError,
              ("x", "weight", "padding", "output", "kernel", "input"), ("0", "1", "2", "3"),
              "output-size-0-asymmetric-padding"),
        # out=
        _case({"out": _zeros((1, 4, 4, 5))}, ValueError, "out", "(1, 4, 4, 5)", "out-shape"),
        _case({"out": _zeros((1, 4, 4, 6, 1))}, ValueError, "out", "(1, 4, 4, 6, 1)", "out-ndim"),
        _case({"out": _zeros(CONV_OUT_SHAPE, F32)}, TypeError, "out", "float32", "out-dtype-f32"),
        _case({"out": _zeros(CONV_OUT_SHAPE, np.int64)}, TypeError, "out", "int64", "out-dtype-int"),
        _case({"out": _readonly(CONV_OUT_SHAPE)}, ValueError, "out", ("writ", "read"), "out-readonly"),
        _case({"out": _noncontig(CONV_OUT_SHAPE)}, ValueError, "out", ("contiguous",), "out-noncontiguous"),
        _case({"out": np.asfortranarray(_zeros(CONV_OUT_SHAPE))}, ValueError, "out", ("contiguous",),
              "out-fortran"),
        _case({"out": np.zeros(CONV_OUT_SHAPE).tolist()}, TypeError, "out", "list", "out-list"),
        _case({"out": 0.0}, TypeError, "out", "float", "out-float"),
    ]
    # out overlapping x / weight / bias (1x1 kernels so that the shapes can line up)
    buf = _zeros(1 * 1 * 1 * 4 + 16)
    x_ov = buf[:4].reshape(1, 1, 1, 4)
    w_1x1 = _zeros((1, 1, 4, 4))
    cases.append(_case({"x": x_ov, "weight": w_1x1, "bias": _zeros((4,)), "out": x_ov}, ValueError, "out",
                       ("x", "overlap", "share", "memory", "alias"), "out-is-x"))
    big = _zeros(64)
    x_view = big[:32].reshape(1, 2, 4, 4)
    out_view = big[8:40].reshape(1, 2, 4, 4)  # overlaps x, neither is a view of the other's start
    cases.append(_case({"x": x_view, "weight": w_1x1, "bias": _zeros((4,)), "out": out_view}, ValueError, "out",
                       ("x", "overlap", "share", "memory", "alias"), "out-overlaps-x"))
    wbuf = _zeros(16)
    cases.append(_case({"x": _zeros((1, 1, 1, 4)), "weight": wbuf.reshape(1, 1, 4, 4), "bias": _zeros((4,)),
                        "out": wbuf[:4].reshape(1, 1, 1, 4)}, ValueError, "out",
                       ("weight", "overlap", "share", "memory", "alias"), "out-overlaps-weight"))
    bbuf = _zeros(4)
    cases.append(_case({"x": _zeros((1, 1, 1, 4)), "weight": w_1x1, "bias": bbuf,
                        "out": bbuf.reshape(1, 1, 1, 4)}, ValueError, "out",
                       ("bias", "overlap", "share", "memory", "alias"), "out-overlaps-bias"))
    cases += _bad_dtype_cases("x", (1, 6, 6, 4))
    cases += _bad_dtype_cases("weight", (3, 3, 4, 6))
    cases += _bad_dtype_cases("bias", (6,))
    # channels_first: the same channel rules in the other layout
    cf = {"data_format": "channels_first", "x": _zeros((1, 4, 6, 6)), "weight": _zeros((6, 4, 3, 3))}
    cases += [
        _case(dict(cf, weight=_zeros((6, 5, 3, 3))), ValueError, ("x", "weight"), ("5", "(6, 5, 3, 3)"),
              "cf-channel-mismatch"),
        _case(dict(cf, x=_zeros((1, 4, 6))), ValueError, "x", _shape_values((1, 4, 6)), "cf-x-ndim3"),
        _case(dict(cf, bias=_zeros((4,))), ValueError, "bias", ("(4,)", "4"), "cf-bias-len"),
        _case(dict(cf, x=_zeros((1, 4, 2, 2))), ValueError,
              ("x", "weight", "padding", "output", "kernel", "input"), ("0", "2", "3", "(1, 4, 2, 2)"),
              "cf-output-size-0"),
        # channels_last weight used with channels_first data: C/groups reads as 3 != 4
        _case(dict(cf, weight=_zeros((3, 3, 4, 6))), ValueError, ("x", "weight"), ("3", "(3, 3, 4, 6)"),
              "cf-weight-in-hwio"),
        _case(dict(cf, out=_zeros(CONV_OUT_SHAPE)), ValueError, "out", "(1, 4, 4, 6)", "cf-out-shape-nhwc"),
    ]
    cases += _conv_option_cases()
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _conv2d_cases())
def test_conv2d_bad_input(overrides, exc, names, values):
    _check(fastconv.conv2d, CONV_POS, CONV_BASE, overrides, exc, names, values)


def test_conv2d_base_call_is_valid():
    """The valid call every case above breaks: it must work, or the matrix tests nothing."""
    out = _call(fastconv.conv2d, CONV_POS, CONV_BASE, {})
    assert out.shape == CONV_OUT_SHAPE
    out = _call(fastconv.conv2d, CONV_POS, CONV_BASE,
                {"data_format": "channels_first", "x": _zeros((1, 4, 6, 6)), "weight": _zeros((6, 4, 3, 3))})
    assert out.shape == (1, 6, 4, 4)
    # the out= base used by the out= cases
    buf = _zeros(CONV_OUT_SHAPE)
    assert _call(fastconv.conv2d, CONV_POS, CONV_BASE, {"out": buf}) is buf


# --------------------------------------------------------------------------------------------
# conv2d_grad_input
#
# base: grad_output (1, 4, 4, 6) of a 3x3 conv of x (1, 6, 6, 4)

GI_POS = ("grad_output", "weight", "input_shape")
GI_BASE = dict(grad_output=_zeros((1, 4, 4, 6)), weight=_zeros((3, 3, 4, 6)), input_shape=(1, 6, 6, 4))


def _grad_input_cases():
    cases = [
        _case({"grad_output": _zeros((4, 4, 6))}, ValueError, "grad_output", _shape_values((4, 4, 6)),
              "grad_output-ndim3"),
        _case({"grad_output": _zeros((1, 1, 4, 4, 6))}, ValueError, "grad_output",
              _shape_values((1, 1, 4, 4, 6)), "grad_output-ndim5"),
        _case({"weight": _zeros((3, 3, 4))}, ValueError, "weight", _shape_values((3, 3, 4)), "weight-ndim3"),
        _case({"input_shape": (6, 6, 4)}, ValueError, "input_shape", "(6, 6, 4)", "input_shape-len3"),
        _case({"input_shape": (1, 1, 6, 6, 4)}, ValueError, "input_shape", "(1, 1, 6, 6, 4)",
              "input_shape-len5"),
        _case({"input_shape": 6}, TypeError, "input_shape", "6", "input_shape-int"),
        _case({"input_shape": None}, TypeError, "input_shape", "None", "input_shape-None"),
        _case({"input_shape": (1, 6.0, 6, 4)}, TypeError, "input_shape", "(1, 6.0, 6, 4)",
              "input_shape-float-entry"),
        _case({"input_shape": (1, -6, 6, 4)}, ValueError, "input_shape", "(1, -6, 6, 4)",
              "input_shape-negative"),
        # inconsistent with grad_output: a 7x7 input gives a 5x5 output, not 4x4
        _case({"input_shape": (1, 7, 7, 4)}, ValueError, ("input_shape", "grad_output"),
              ("(1, 7, 7, 4)", "(1, 4, 4, 6)"), "input_shape-spatial-mismatch"),
        _case({"input_shape": (1, 6, 7, 4)}, ValueError, ("input_shape", "grad_output"),
              ("(1, 6, 7, 4)", "(1, 4, 4, 6)"), "input_shape-cols-mismatch"),
        _case({"input_shape": (2, 6, 6, 4)}, ValueError, ("input_shape", "grad_output"),
              ("(2, 6, 6, 4)", "(1, 4, 4, 6)"), "input_shape-batch-mismatch"),
        _case({"input_shape": (1, 6, 6, 5)}, ValueError, ("input_shape", "weight"),
              ("(1, 6, 6, 5)", "5"), "input_shape-channel-mismatch"),
        _case({"grad_output": _zeros((1, 4, 4, 5))}, ValueError, ("grad_output", "weight"),
              ("(1, 4, 4, 5)", "5"), "grad_output-channel-mismatch"),
        # stride 2 makes the given 4x4 grad_output wrong for a 6x6 input (expects 2x2)
        _case({"stride": 2}, ValueError, ("input_shape", "grad_output"),
              ("(1, 6, 6, 4)", "(1, 4, 4, 6)"), "stride-makes-grad_output-wrong"),
        _case({"padding": "same"}, ValueError, ("input_shape", "grad_output"),
              ("(1, 6, 6, 4)", "(1, 4, 4, 6)"), "same-makes-grad_output-wrong"),
        # groups not dividing
        _case({"groups": 3, "weight": _zeros((3, 3, 1, 6))}, ValueError,
              ("groups", "input_shape", "weight"), "3", "groups-not-dividing-C"),
        _case({"grad_output": _zeros((1, 4, 4, 4)), "weight": _zeros((3, 3, 2, 4)), "input_shape": (1, 6, 6, 6),
               "groups": 3}, ValueError, ("groups", "weight"), ("3", "4"), "groups-not-dividing-K"),
        # kernel larger than the input
        _case({"input_shape": (1, 2, 2, 4), "grad_output": _zeros((1, 1, 1, 6))}, ValueError,
              ("input_shape", "weight", "padding", "output", "kernel", "input"), ("0", "2", "3"),
              "output-size-0"),
        # channels_first
        _case({"data_format": "channels_first", "grad_output": _zeros((1, 6, 4, 4)),
               "weight": _zeros((6, 4, 3, 3)), "input_shape": (1, 6, 6, 4)}, ValueError,
              ("input_shape", "weight", "grad_output"), ("(1, 6, 6, 4)", "6"), "cf-input_shape-in-nhwc"),
        _case({"data_format": "channels_first", "grad_output": _zeros((1, 6, 4, 4)),
               "weight": _zeros((6, 4, 3, 3)), "input_shape": (1, 4, 7, 7)}, ValueError,
              ("input_shape", "grad_output"), ("(1, 4, 7, 7)", "(1, 6, 4, 4)"), "cf-input_shape-mismatch"),
    ]
    cases += _bad_dtype_cases("grad_output", (1, 4, 4, 6))
    cases += _bad_dtype_cases("weight", (3, 3, 4, 6))
    cases += _conv_option_cases()
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _grad_input_cases())
def test_conv2d_grad_input_bad_input(overrides, exc, names, values):
    _check(fastconv.conv2d_grad_input, GI_POS, GI_BASE, overrides, exc, names, values)


def test_conv2d_grad_input_base_call_is_valid():
    gi = _call(fastconv.conv2d_grad_input, GI_POS, GI_BASE, {})
    assert gi.shape == (1, 6, 6, 4)


# --------------------------------------------------------------------------------------------
# conv2d_grad_weight

GW_POS = ("grad_output", "x", "weight_shape")
GW_BASE = dict(grad_output=_zeros((1, 4, 4, 6)), x=_zeros((1, 6, 6, 4)), weight_shape=(3, 3, 4, 6))


def _grad_weight_cases():
    cases = [
        _case({"grad_output": _zeros((4, 4, 6))}, ValueError, "grad_output", _shape_values((4, 4, 6)),
              "grad_output-ndim3"),
        _case({"x": _zeros((6, 6, 4))}, ValueError, "x", _shape_values((6, 6, 4)), "x-ndim3"),
        _case({"x": _zeros((1, 1, 6, 6, 4))}, ValueError, "x", _shape_values((1, 1, 6, 6, 4)), "x-ndim5"),
        _case({"weight_shape": (3, 3, 4)}, ValueError, "weight_shape", "(3, 3, 4)", "weight_shape-len3"),
        _case({"weight_shape": 3}, TypeError, "weight_shape", "3", "weight_shape-int"),
        _case({"weight_shape": None}, TypeError, "weight_shape", "None", "weight_shape-None"),
        _case({"weight_shape": (3, 3.0, 4, 6)}, TypeError, "weight_shape", "(3, 3.0, 4, 6)",
              "weight_shape-float-entry"),
        _case({"weight_shape": (3, 3, 4, -6)}, ValueError, "weight_shape", "(3, 3, 4, -6)",
              "weight_shape-negative"),
        _case({"weight_shape": (3, 3, 4, 0)}, ValueError, ("weight_shape", "grad_output"), "(3, 3, 4, 0)",
              "weight_shape-zero"),
        # a 2x2 kernel on 6x6 gives 5x5, not grad_output's 4x4
        _case({"weight_shape": (2, 2, 4, 6)}, ValueError, ("weight_shape", "grad_output"),
              ("(2, 2, 4, 6)", "(1, 4, 4, 6)"), "weight_shape-kernel-mismatch"),
        _case({"weight_shape": (3, 3, 5, 6)}, ValueError, ("weight_shape", "x"), ("(3, 3, 5, 6)", "5"),
              "weight_shape-channel-mismatch"),
        _case({"weight_shape": (3, 3, 4, 5)}, ValueError, ("weight_shape", "grad_output"),
              ("(3, 3, 4, 5)", "5"), "weight_shape-K-mismatch"),
        _case({"x": _zeros((2, 6, 6, 4))}, ValueError, ("x", "grad_output"), ("(2, 6, 6, 4)", "(1, 4, 4, 6)"),
              "x-batch-mismatch"),
        _case({"x": _zeros((1, 7, 7, 4))}, ValueError, ("x", "grad_output"), ("(1, 7, 7, 4)", "(1, 4, 4, 6)"),
              "x-spatial-mismatch"),
        _case({"dilation": 2}, ValueError, ("x", "grad_output", "weight_shape"),
              ("(1, 6, 6, 4)", "(1, 4, 4, 6)"), "dilation-makes-grad_output-wrong"),
        _case({"groups": 3, "weight_shape": (3, 3, 1, 6)}, ValueError, ("groups", "x", "weight_shape"), "3",
              "groups-not-dividing-C"),
        _case({"grad_output": _zeros((1, 4, 4, 4)), "x": _zeros((1, 6, 6, 6)), "weight_shape": (3, 3, 2, 4),
               "groups": 3}, ValueError, ("groups", "weight_shape"), ("3", "4"), "groups-not-dividing-K"),
        _case({"x": _zeros((1, 2, 2, 4)), "grad_output": _zeros((1, 1, 1, 6))}, ValueError,
              ("x", "weight_shape", "padding", "output", "kernel", "input"), ("0", "2", "3"), "output-size-0"),
        _case({"data_format": "channels_first", "grad_output": _zeros((1, 6, 4, 4)), "x": _zeros((1, 4, 6, 6)),
               "weight_shape": (3, 3, 4, 6)}, ValueError, ("weight_shape", "x", "grad_output"),
              ("(3, 3, 4, 6)", "3"), "cf-weight_shape-in-hwio"),
    ]
    cases += _bad_dtype_cases("grad_output", (1, 4, 4, 6))
    cases += _bad_dtype_cases("x", (1, 6, 6, 4))
    cases += _conv_option_cases()
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _grad_weight_cases())
def test_conv2d_grad_weight_bad_input(overrides, exc, names, values):
    _check(fastconv.conv2d_grad_weight, GW_POS, GW_BASE, overrides, exc, names, values)


def test_conv2d_grad_weight_base_call_is_valid():
    gw = _call(fastconv.conv2d_grad_weight, GW_POS, GW_BASE, {})
    assert gw.shape == (3, 3, 4, 6)


# --------------------------------------------------------------------------------------------
# conv2d_grad_bias

GB_POS = ("grad_output",)
GB_BASE = dict(grad_output=_zeros((1, 4, 4, 6)))


def _grad_bias_cases():
    cases = [
        _case({"grad_output": _zeros((4, 4, 6))}, ValueError, "grad_output", _shape_values((4, 4, 6)),
              "grad_output-ndim3"),
        _case({"grad_output": _zeros((6,))}, ValueError, "grad_output", _shape_values((6,)),
              "grad_output-ndim1"),
        _case({"grad_output": _zeros((1, 1, 4, 4, 6))}, ValueError, "grad_output",
              _shape_values((1, 1, 4, 4, 6)), "grad_output-ndim5"),
        _case({"data_format": "channels_middle"}, ValueError, "data_format", "'channels_middle'",
              "data_format-unknown"),
        _case({"data_format": None}, TypeError, "data_format", "None", "data_format-None"),
    ]
    cases += _bad_dtype_cases("grad_output", (1, 4, 4, 6))
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _grad_bias_cases())
def test_conv2d_grad_bias_bad_input(overrides, exc, names, values):
    _check(fastconv.conv2d_grad_bias, GB_POS, GB_BASE, overrides, exc, names, values)


def test_conv2d_grad_bias_base_call_is_valid():
    assert _call(fastconv.conv2d_grad_bias, GB_POS, GB_BASE, {}).shape == (6,)


# --------------------------------------------------------------------------------------------
# max_pool2d
#
# base: x (1, 6, 6, 3), pool 2 -> (1, 3, 3, 3)

POOL_POS = ("x",)
POOL_BASE = dict(x=_zeros((1, 6, 6, 3)))


def _pool_option_cases():
    """Bad pooling options shared by max_pool2d and max_pool2d_grad (base pool_size 2)."""
    return [
        _case({"pool_size": 0}, ValueError, "pool_size", "0", "pool_size=0"),
        _case({"pool_size": -2}, ValueError, "pool_size", "-2", "pool_size=-2"),
        _case({"pool_size": (2, 0)}, ValueError, "pool_size", "(2, 0)", "pool_size=(2,0)"),
        _case({"pool_size": (2, 2, 2)}, ValueError, "pool_size", "(2, 2, 2)", "pool_size-len3"),
        _case({"pool_size": 2.5}, TypeError, "pool_size", "2.5", "pool_size-float"),
        _case({"pool_size": "2"}, TypeError, "pool_size", "'2'", "pool_size-str"),
        _case({"pool_size": None}, TypeError, "pool_size", "None", "pool_size-None"),
        _case({"stride": 0}, ValueError, "stride", "0", "stride=0"),
        _case({"stride": (2, -1)}, ValueError, "stride", "(2, -1)", "stride=(2,-1)"),
        _case({"stride": (2, 2, 2)}, ValueError, "stride", "(2, 2, 2)", "stride-len3"),
        _case({"stride": 1.5}, TypeError, "stride", "1.5", "stride-float"),
        _case({"stride": "2"}, TypeError, "stride", "'2'", "stride-str"),
        _case({"padding": "sme"}, ValueError, "padding", "'sme'", "padding='sme'"),
        _case({"padding": -1}, ValueError, "padding", "-1", "padding=-1"),
        _case({"padding": ((0, 0), (-1, 0))}, ValueError, "padding", "((0, 0), (-1, 0))",
              "padding-nested-negative"),
        _case({"padding": (1, 1, 1)}, ValueError, "padding", "(1, 1, 1)", "padding-len3"),
        _case({"padding": 0.5}, TypeError, "padding", "0.5", "padding-float"),
        # padding must be smaller than the pool size, on each side
        _case({"padding": 2}, ValueError, ("padding", "pool_size"), "2", "padding-equals-pool"),
        _case({"padding": 3}, ValueError, ("padding", "pool_size"), "3", "padding-exceeds-pool"),
        _case({"padding": (0, 2)}, ValueError, ("padding", "pool_size"), "(0, 2)", "padding-cols-equals-pool"),
        _case({"padding": ((0, 2), (0, 0))}, ValueError, ("padding", "pool_size"), "((0, 2), (0, 0))",
              "padding-bottom-equals-pool"),
        _case({"pool_size": (3, 1), "padding": (1, 1)}, ValueError, ("padding", "pool_size"), "(1, 1)",
              "padding-cols-vs-pool-1"),
        # ceil_mode
        _case({"ceil_mode": 1}, TypeError, "ceil_mode", "1", "ceil_mode-int"),
        _case({"ceil_mode": 0}, TypeError, "ceil_mode", "0", "ceil_mode-int0"),
        _case({"ceil_mode": "yes"}, TypeError, "ceil_mode", "'yes'", "ceil_mode-str"),
        _case({"ceil_mode": None}, TypeError, "ceil_mode", "None", "ceil_mode-None"),
        # data_format
        _case({"data_format": "channels_middle"}, ValueError, "data_format", "'channels_middle'",
              "data_format-unknown"),
        _case({"data_format": "NCHW"}, ValueError, "data_format", "'NCHW'", "data_format=NCHW"),
        _case({"data_format": 0}, TypeError, "data_format", "0", "data_format-int"),
    ]


def _max_pool_cases():
    cases = [
        _case({"x": _zeros((6, 6, 3))}, ValueError, "x", _shape_values((6, 6, 3)), "x-ndim3"),
        _case({"x": _zeros((1, 1, 6, 6, 3))}, ValueError, "x", _shape_values((1, 1, 6, 6, 3)), "x-ndim5"),
        # output size below 1: a 2x2 pool on 1x1 / 1x6
        _case({"x": _zeros((1, 1, 1, 3))}, ValueError, ("x", "pool_size", "padding", "output", "input"),
              ("0", "1", "2"), "output-size-0"),
        _case({"x": _zeros((1, 1, 6, 3))}, ValueError, ("x", "pool_size", "padding", "output", "input"),
              ("0", "1", "2"), "output-rows-0"),
        _case({"x": _zeros((1, 6, 6, 3)), "pool_size": 7}, ValueError,
              ("x", "pool_size", "padding", "output", "input"), ("0", "6", "7"), "pool-bigger-than-x"),
        _case({"x": _zeros((1, 6, 3, 3)), "pool_size": 4, "data_format": "channels_first"}, ValueError,
              ("x", "pool_size", "padding", "output", "input"), ("0", "3", "4"), "cf-output-size-0"),
    ]
    cases += _bad_dtype_cases("x", (1, 6, 6, 3))
    cases += _pool_option_cases()
    cases.append(_case({"return_indices": "yes"}, TypeError, "return_indices", "'yes'", "return_indices-str"))
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _max_pool_cases())
def test_max_pool2d_bad_input(overrides, exc, names, values):
    _check(fastconv.max_pool2d, POOL_POS, POOL_BASE, overrides, exc, names, values)


def test_max_pool2d_base_call_is_valid():
    assert _call(fastconv.max_pool2d, POOL_POS, POOL_BASE, {}).shape == (1, 3, 3, 3)
    # the largest legal padding, for contrast with the padding >= pool_size cases
    assert _call(fastconv.max_pool2d, POOL_POS, POOL_BASE, {"padding": 1}).shape == (1, 4, 4, 3)
    out, idx = _call(fastconv.max_pool2d, POOL_POS, POOL_BASE, {"return_indices": True})
    assert idx.shape == out.shape and idx.dtype == np.int64


# --------------------------------------------------------------------------------------------
# max_pool2d_grad

MPG_POS = ("grad_output", "indices", "input_shape")
MPG_BASE = dict(
    grad_output=_zeros((1, 3, 3, 3)),
    indices=np.zeros((1, 3, 3, 3), np.int64),
    input_shape=(1, 6, 6, 3),
)


def _indices_with(value, pos=(0, 1, 1, 0)):
    idx = np.zeros((1, 3, 3, 3), np.int64)
    idx[pos] = value
    return idx


def _max_pool_grad_cases():
    cases = [
        _case({"grad_output": _zeros((3, 3, 3))}, ValueError, "grad_output", _shape_values((3, 3, 3)),
              "grad_output-ndim3"),
        # indices: wrong shape, wrong dtype, out of range
        _case({"indices": np.zeros((1, 3, 3, 2), np.int64)}, ValueError, "indices", "(1, 3, 3, 2)",
              "indices-shape"),
        _case({"indices": np.zeros((3, 3, 3), np.int64)}, ValueError, "indices", "(3, 3, 3)", "indices-ndim3"),
        _case({"indices": np.zeros((1, 3, 3, 3), np.float64)}, TypeError, "indices", "float64",
              "indices-float64"),
        _case({"indices": np.zeros((1, 3, 3, 3), np.complex128)}, TypeError, "indices", "complex",
              "indices-complex"),
        _case({"indices": np.zeros((1, 3, 3, 3), object)}, TypeError, "indices", ("object", "'O'"),
              "indices-object"),
        _case({"indices": _indices_with(36)}, ValueError, "indices", "36", "indices-too-big"),
        _case({"indices": _indices_with(10 ** 12)}, ValueError, "indices", str(10 ** 12), "indices-huge"),
        _case({"indices": _indices_with(-1)}, ValueError, "indices", "-1", "indices-negative"),
        # input_shape
        _case({"input_shape": (6, 6, 3)}, ValueError, "input_shape", "(6, 6, 3)", "input_shape-len3"),
        _case({"input_shape": 6}, TypeError, "input_shape", "6", "input_shape-int"),
        _case({"input_shape": (1, 6.0, 6, 3)}, TypeError, "input_shape", "(1, 6.0, 6, 3)",
              "input_shape-float-entry"),
        _case({"input_shape": (1, 8, 8, 3)}, ValueError, ("input_shape", "grad_output"),
              ("(1, 8, 8, 3)", "(1, 3, 3, 3)"), "input_shape-spatial-mismatch"),
        _case({"input_shape": (1, 6, 6, 4)}, ValueError, ("input_shape", "grad_output"),
              ("(1, 6, 6, 4)", "(1, 3, 3, 3)"), "input_shape-channel-mismatch"),
        _case({"input_shape": (2, 6, 6, 3)}, ValueError, ("input_shape", "grad_output"),
              ("(2, 6, 6, 3)", "(1, 3, 3, 3)"), "input_shape-batch-mismatch"),
        _case({"input_shape": (1, 1, 1, 3)}, ValueError,
              ("input_shape", "grad_output", "pool_size", "padding", "output", "input"), ("0", "1", "2"),
              "output-size-0"),
        # options that change the expected grad_output shape
        _case({"pool_size": 3}, ValueError, ("input_shape", "grad_output", "indices"),
              ("(1, 6, 6, 3)", "(1, 3, 3, 3)"), "pool_size-makes-grad_output-wrong"),
        _case({"stride": 1}, ValueError, ("input_shape", "grad_output", "indices"),
              ("(1, 6, 6, 3)", "(1, 3, 3, 3)"), "stride-makes-grad_output-wrong"),
        _case({"padding": 1}, ValueError, ("input_shape", "grad_output", "indices"),
              ("(1, 6, 6, 3)", "(1, 3, 3, 3)"), "padding-makes-grad_output-wrong"),
        # channels_first: index range is the (H, W) plane, whichever axis order
        _case({"data_format": "channels_first", "input_shape": (1, 3, 6, 6), "indices": _indices_with(36)},
              ValueError, "indices", "36", "cf-indices-too-big"),
    ]
    cases += _bad_dtype_cases("grad_output", (1, 3, 3, 3))
    cases += _pool_option_cases()
    return cases


@pytest.mark.parametrize("overrides, exc, names, values", _max_pool_grad_cases())
def test_max_pool2d_grad_bad_input(overrides, exc, names, values):
    _check(fastconv.max_pool2d_grad, MPG_POS, MPG_BASE, overrides, exc, names, values)


def test_max_pool2d_grad_base_call_is_valid():
    g = _call(fastconv.max_pool2d_grad, MPG_POS, MPG_BASE, {})
    assert g.shape == (1, 6, 6, 3)
    g = _call(fastconv.max_pool2d_grad, MPG_POS, MPG_BASE,
              {"data_format": "channels_first", "input_shape": (1, 3, 6, 6), "indices": _indices_with(35)})
    assert g.shape == (1, 3, 6, 6)


# --------------------------------------------------------------------------------------------
# set_num_threads


@pytest.mark.parametrize(
    "n, exc, values",
    [
        pytest.param(0, ValueError, "0", id="zero"),
        pytest.param(-3, ValueError, "-3", id="negative"),
        pytest.param(1.5, TypeError, "1.5", id="float"),
        pytest.param("2", TypeError, "'2'", id="str"),
    ],
)
def test_set_num_threads_bad_input(n, exc, values):
    before = fastconv.get_num_threads()
    with pytest.raises(exc, match=_pattern(("n", "num_threads", "threads"), values)):
        fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before


# --------------------------------------------------------------------------------------------
# errors are raised before any kernel runs


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"padding": "sme"}, id="bad-padding"),
        pytest.param({"bias": _zeros((5,))}, id="bad-bias"),
        pytest.param({"algorithm": "fft"}, id="bad-algorithm"),
        pytest.param({"stride": 0}, id="bad-stride"),
        pytest.param({"x": np.zeros((1, 6, 6, 4), np.complex128)}, id="bad-x-dtype"),
        pytest.param({"weight": np.zeros((3, 3, 5, 6))}, id="channel-mismatch"),
    ],
)
def test_conv2d_error_leaves_out_untouched(overrides):
    rng = np.random.default_rng(0)
    base = dict(
        x=rng.standard_normal((1, 6, 6, 4)),
        weight=rng.standard_normal((3, 3, 4, 6)),
        bias=rng.standard_normal(6),
    )
    out = np.full(CONV_OUT_SHAPE, 7.25)
    inputs = {k: v.copy() for k, v in base.items()}
    with pytest.raises((ValueError, TypeError)):
        _call(fastconv.conv2d, CONV_POS, base, dict(overrides, out=out))
    assert np.all(out == 7.25), "conv2d wrote into out= before raising"
    for k, v in inputs.items():
        np.testing.assert_array_equal(base[k], v, err_msg=f"conv2d modified {k}")


def test_conv2d_bad_out_is_left_untouched():
    """An out= of the right shape but the wrong dtype is refused, not half-written."""
    out = np.full(CONV_OUT_SHAPE, 7.25, dtype=F32)
    with pytest.raises(TypeError):
        _call(fastconv.conv2d, CONV_POS, CONV_BASE, {"out": out})
    assert np.all(out == 7.25)
    out_nc = _noncontig(CONV_OUT_SHAPE)
    out_nc[...] = 7.25
    with pytest.raises(ValueError):
        _call(fastconv.conv2d, CONV_POS, CONV_BASE, {"out": out_nc})
    assert np.all(out_nc == 7.25)
    assert np.all(out_nc.base[..., 1::2] == 0.0)


def test_max_pool2d_grad_error_leaves_inputs_untouched():
    go = np.arange(27, dtype=F64).reshape(1, 3, 3, 3)
    idx = _indices_with(36)
    go0, idx0 = go.copy(), idx.copy()
    with pytest.raises(ValueError):
        fastconv.max_pool2d_grad(go, idx, (1, 6, 6, 3))
    np.testing.assert_array_equal(go, go0)
    np.testing.assert_array_equal(idx, idx0)
