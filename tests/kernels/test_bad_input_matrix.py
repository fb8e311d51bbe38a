"""The bad-input matrix: every input the functional API rejects, and the exact error it gets.

``TABLE`` below is the single source of the table in docs/bad_input.md: ``python tests/make_bad_input_doc.py``
writes it there, and ``test_the_docs_show_this_table`` fails when the two differ. Each row names the functions
it applies to, the arguments it changes in their valid base calls (``BASE``, also shown in the docs), and the
exception and exact message every one of those functions must raise; ``test_row`` runs each row on each of its
functions. ``test_every_argument_has_a_row`` checks that every argument of every public function is rejected
by at least one row.

Messages that depend on the machine's memory are produced against a pretended 64 GiB machine
(``_validation.memory_limit`` patched), so the table is the same everywhere.
"""
import inspect
import os
import re
from collections import namedtuple

import numpy as np
import pytest

import fastconv
from fastconv import _validation, functional

Section = namedtuple("Section", "title note rows")
Row = namedtuple("Row", "functions bad error message")

PRETENDED_MEMORY = 64 << 30
SizeError = _validation.SizeError

# ---------------------------------------------------------------------------------------------- base calls


def Z(*shape, dtype="float64"):
    """Zeros of this shape (and dtype)."""
    return np.zeros(shape, dtype)


def I(*shape):  # noqa: E743  (the name reads well in the table: indices)
    """int64 zeros of this shape (pooling indices)."""
    return np.zeros(shape, np.int64)


def RO(*shape):
    """Read-only float64 zeros."""
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


def NC(*shape):
    """A non-contiguous float64 view: every other element of a buffer twice as wide."""
    return np.zeros(shape[:-1] + (2 * shape[-1],))[..., ::2]


def INDEX_AT(value, *shape):
    """int64 zeros with ``value`` at the first position."""
    a = np.zeros(shape, np.int64)
    a.reshape(-1)[0] = value
    return a


NAMESPACE = dict(Z=Z, I=I, RO=RO, NC=NC, INDEX_AT=INDEX_AT, np=np)

BASE = {  # the valid call each row breaks: source text, evaluated with NAMESPACE
    "conv2d": "x=Z(1, 6, 6, 4), weight=Z(3, 3, 4, 6)",
    "conv2d_grad_input": "grad_output=Z(1, 4, 4, 6), weight=Z(3, 3, 4, 6), input_shape=(1, 6, 6, 4)",
    "conv2d_grad_weight": "grad_output=Z(1, 4, 4, 6), x=Z(1, 6, 6, 4), weight_shape=(3, 3, 4, 6)",
    "conv2d_grad_bias": "grad_output=Z(1, 4, 4, 6)",
    "depthwise_conv2d": "x=Z(1, 6, 6, 4), weight=Z(3, 3, 4, 2)",
    "depthwise_conv2d_grad_input": "grad_output=Z(1, 4, 4, 8), weight=Z(3, 3, 4, 2), input_shape=(1, 6, 6, 4)",
    "depthwise_conv2d_grad_weight": "grad_output=Z(1, 4, 4, 8), x=Z(1, 6, 6, 4), weight_shape=(3, 3, 4, 2)",
    "max_pool2d": "x=Z(1, 6, 6, 3)",
    "max_pool2d_grad": "grad_output=Z(1, 3, 3, 3), indices=I(1, 3, 3, 3), input_shape=(1, 6, 6, 3)",
    "avg_pool2d": "x=Z(1, 6, 6, 3)",
    "avg_pool2d_grad": "grad_output=Z(1, 3, 3, 3), input_shape=(1, 6, 6, 3)",
    "global_avg_pool2d": "x=Z(1, 6, 6, 3)",
    "global_avg_pool2d_grad": "grad_output=Z(1, 3), input_shape=(1, 6, 6, 3)",
    "global_max_pool2d": "x=Z(1, 6, 6, 3)",
    "global_max_pool2d_grad": "grad_output=Z(1, 3), indices=I(1, 3), input_shape=(1, 6, 6, 3)",
    "set_num_threads": "n=1",
}
FUNCTIONS = tuple(BASE)

X_TAKERS = ("conv2d", "conv2d_grad_weight", "depthwise_conv2d", "depthwise_conv2d_grad_weight", "max_pool2d",
            "avg_pool2d", "global_avg_pool2d", "global_max_pool2d")
WEIGHT_TAKERS = ("conv2d", "conv2d_grad_input", "depthwise_conv2d", "depthwise_conv2d_grad_input")
GRAD4 = ("conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias", "depthwise_conv2d_grad_input",
         "depthwise_conv2d_grad_weight", "max_pool2d_grad", "avg_pool2d_grad")
GRAD2 = ("global_avg_pool2d_grad", "global_max_pool2d_grad")
INPUT_SHAPE = ("conv2d_grad_input", "depthwise_conv2d_grad_input", "max_pool2d_grad", "avg_pool2d_grad",
               "global_avg_pool2d_grad", "global_max_pool2d_grad")
WEIGHT_SHAPE = ("conv2d_grad_weight", "depthwise_conv2d_grad_weight")
CONV = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")
DEPTHWISE = ("depthwise_conv2d", "depthwise_conv2d_grad_input", "depthwise_conv2d_grad_weight")
POOL = ("max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad")
WINDOWED = CONV + DEPTHWISE + POOL
LAYOUTS = tuple(f for f in FUNCTIONS if f != "set_num_threads")

# ---------------------------------------------------------------------------------------------- the table

TABLE = [
    Section("Arrays", "Array arguments: anything NumPy can turn into a real array of the right number of dimensions.", [
        Row(X_TAKERS, "x=[[1, 2], [3]]", TypeError,
            "x must be an array; received x of type list"),
        Row(X_TAKERS, "x=Z(1, 6, 6, 4, dtype='complex128')", TypeError,
            "x must be a real array of float32, float64, float16, int or bool; received x with dtype=complex128"),
        Row(X_TAKERS, "x=np.full((1, 6, 6, 4), 'a')", TypeError,
            "x must be a real array of float32, float64, float16, int or bool; received x with dtype=<U1"),
        Row(X_TAKERS, "x=Z(1, 6, 6, 4, dtype=object)", TypeError,
            "x must be a real array of float32, float64, float16, int or bool; received x with dtype=object"),
        Row(X_TAKERS, "x=Z(1, 6, 6, 4, dtype='datetime64[s]')", TypeError,
            "x must be a real array of float32, float64, float16, int or bool; received x with dtype=datetime64[s]"),
        Row(X_TAKERS, "x=Z(6, 6, 4)", ValueError,
            "x must be 4-D; received x with shape (6, 6, 4)"),
        Row(X_TAKERS, "x=Z(1, 1, 6, 6, 4)", ValueError,
            "x must be 4-D; received x with shape (1, 1, 6, 6, 4)"),
        Row(X_TAKERS, "x=2.0", ValueError,
            "x must be 4-D; received x with shape ()"),
        Row(WEIGHT_TAKERS, "weight=Z(3, 3, 4, dtype='complex64')", TypeError,
            "weight must be a real array of float32, float64, float16, int or bool; received weight with "
            "dtype=complex64"),
        Row(WEIGHT_TAKERS, "weight=Z(3, 3, 4)", ValueError,
            "weight must be 4-D; received weight with shape (3, 3, 4)"),
        Row(GRAD4 + GRAD2, "grad_output='a'", TypeError,
            "grad_output must be a real array of float32, float64, float16, int or bool; received grad_output with "
            "dtype=<U1"),
        Row(GRAD4, "grad_output=Z(4, 4, 6)", ValueError,
            "grad_output must be 4-D; received grad_output with shape (4, 4, 6)"),
        Row(GRAD2, "grad_output=Z(1, 1, 3)", ValueError,
            "grad_output must be 2-D; received grad_output with shape (1, 1, 3)"),
        Row(("conv2d",), "bias=Z(6, dtype=object)", TypeError,
            "bias must be a real array of float32, float64, float16, int or bool; received bias with dtype=object"),
        Row(("conv2d",), "bias=Z(1, 6)", ValueError,
            "bias must be 1-D; received bias with shape (1, 6)"),
        Row(("conv2d",), "bias=Z(5)", ValueError,
            "bias must have shape (6,), one value per output channel; received bias with shape (5,)"),
        Row(("depthwise_conv2d",), "bias=Z(4)", ValueError,
            "bias must have shape (8,), one value per output channel; received bias with shape (4,)"),
    ]),
    Section("Shapes", "Shape arguments (`input_shape`, `weight_shape`) are 4 non-negative ints in the data's layout; "
            "the arrays must agree with each other and with the options.", [
        Row(INPUT_SHAPE, "input_shape=6", TypeError,
            "input_shape must be a tuple of 4 ints; received input_shape=6"),
        Row(INPUT_SHAPE, "input_shape=None", TypeError,
            "input_shape must be a tuple of 4 ints; received input_shape=None"),
        Row(INPUT_SHAPE, "input_shape=(6, 6, 4)", ValueError,
            "input_shape must be a tuple of 4 ints; received input_shape=(6, 6, 4)"),
        Row(INPUT_SHAPE, "input_shape=(1, 6.0, 6, 4)", TypeError,
            "input_shape must hold ints; received input_shape=(1, 6.0, 6, 4)"),
        Row(INPUT_SHAPE, "input_shape=(1, -6, 6, 4)", ValueError,
            "input_shape must not have negative sizes; received input_shape=(1, -6, 6, 4)"),
        Row(WEIGHT_SHAPE, "weight_shape=[3, 3, 4]", ValueError,
            "weight_shape must be a tuple of 4 ints; received weight_shape=[3, 3, 4]"),
        Row(WEIGHT_SHAPE, "weight_shape=(3, 3, True, 6)", TypeError,
            "weight_shape must hold ints; received weight_shape=(3, 3, True, 6)"),
        Row(("conv2d",), "weight=Z(3, 3, 5, 6)", ValueError,
            "weight expects 5 input channels (5 per group x groups=1) but x has 4; received x with shape (1, 6, 6, "
            "4) and weight with shape (3, 3, 5, 6) (channels_last)"),
        Row(("conv2d",), "weight=Z(3, 3, 4, 0)", ValueError,
            "weight must have no zero-sized axis; received weight with shape (3, 3, 4, 0)"),
        Row(("conv2d",), "x=Z(1, 6, 6, 0), weight=Z(3, 3, 1, 6)", ValueError,
            "x must have at least one channel; received x with shape (1, 6, 6, 0) (channels_last)"),
        Row(("conv2d",), "x=Z(1, 2, 2, 4)", ValueError,
            "the output would be empty: a 3x3 (dilated) kernel does not fit the 2x2 input padded by ((0, 0), (0, "
            "0)); received x with shape (1, 2, 2, 4), weight with shape (3, 3, 4, 6), padding='valid'"),
        Row(("conv2d",), "data_format='channels_first'", ValueError,
            "weight expects 3 input channels (3 per group x groups=1) but x has 6; received x with shape (1, 6, 6, "
            "4) and weight with shape (3, 3, 4, 6) (channels_first)"),
        Row(("conv2d_grad_input",), "input_shape=(1, 7, 7, 4)", ValueError,
            "grad_output must have shape (1, 5, 5, 6), the output shape of the convolution of input_shape=(1, 7, 7, "
            "4); received grad_output with shape (1, 4, 4, 6)"),
        Row(("conv2d_grad_input",), "grad_output=Z(1, 4, 4, 5)", ValueError,
            "grad_output must have shape (1, 4, 4, 6), the output shape of the convolution of input_shape=(1, 6, 6, "
            "4); received grad_output with shape (1, 4, 4, 5)"),
        Row(("conv2d_grad_input",), "stride=2", ValueError,
            "grad_output must have shape (1, 2, 2, 6), the output shape of the convolution of input_shape=(1, 6, 6, "
            "4); received grad_output with shape (1, 4, 4, 6)"),
        Row(("conv2d_grad_weight",), "weight_shape=(3, 3, 4, 5)", ValueError,
            "grad_output must have shape (1, 4, 4, 5), the output shape of the convolution of x with shape (1, 6, 6, "
            "4); received grad_output with shape (1, 4, 4, 6)"),
        Row(("conv2d_grad_weight",), "x=Z(2, 6, 6, 4)", ValueError,
            "grad_output must have shape (2, 4, 4, 6), the output shape of the convolution of x with shape (2, 6, 6, "
            "4); received grad_output with shape (1, 4, 4, 6)"),
        Row(("depthwise_conv2d",), "weight=Z(3, 3, 3, 2)", ValueError,
            "weight must have shape (R, S, C, M) with C = 4, the channels of x; received weight with shape (3, 3, 3, "
            "2)"),
        Row(("depthwise_conv2d",), "x=Z(1, 4, 6, 6), weight=Z(8, 2, 3, 3), data_format='channels_first'", ValueError,
            "weight must have shape (C*M, 1, R, S) with C = 4, the channels of x; received weight with shape (8, 2, "
            "3, 3)"),
        Row(("depthwise_conv2d",), "x=Z(1, 6, 6, 0), weight=Z(3, 3, 0, 2)", ValueError,
            "x must have at least one channel; received x with shape (1, 6, 6, 0) (channels_last)"),
        Row(("depthwise_conv2d_grad_input",), "grad_output=Z(1, 4, 4, 6)", ValueError,
            "grad_output must have shape (1, 4, 4, 8), the output shape of the depthwise convolution of "
            "input_shape=(1, 6, 6, 4); received grad_output with shape (1, 4, 4, 6)"),
        Row(("depthwise_conv2d_grad_weight",), "weight_shape=(3, 3, 4, 0)", ValueError,
            "weight_shape must have no zero-sized axis; received weight_shape with shape (3, 3, 4, 0)"),
        Row(("max_pool2d",), "x=Z(1, 1, 6, 3)", ValueError,
            "the output would be empty: pool_size=(2, 2) does not fit the 1x6 input padded by ((0, 0), (0, 0)); "
            "received x with shape (1, 1, 6, 3)"),
        Row(("max_pool2d_grad",), "input_shape=(1, 8, 8, 3)", ValueError,
            "grad_output must have shape (1, 4, 4, 3), the pooled shape of input_shape=(1, 8, 8, 3); received "
            "grad_output with shape (1, 3, 3, 3)"),
        Row(("avg_pool2d_grad",), "grad_output=Z(1, 3, 3, 4)", ValueError,
            "grad_output must have shape (1, 3, 3, 3), the pooled shape of input_shape=(1, 6, 6, 3); received "
            "grad_output with shape (1, 3, 3, 4)"),
        Row(("global_avg_pool2d", "global_max_pool2d"), "x=Z(1, 0, 6, 3)", ValueError,
            "x must have a non-empty (H, W) plane to pool over; received x with shape (1, 0, 6, 3) (channels_last)"),
        Row(("global_avg_pool2d_grad",), "input_shape=(1, 6, 0, 3)", ValueError,
            "input_shape must have a non-empty (H, W) plane to pool over; received input_shape with shape (1, 6, 0, "
            "3) (channels_last)"),
        Row(GRAD2, "grad_output=Z(1, 4)", ValueError,
            "grad_output must have shape (1, 3), one value per (image, channel) of input_shape=(1, 6, 6, 3); "
            "received grad_output with shape (1, 4)"),
    ]),
    Section("Options", "Options are Python (or NumPy) ints, pairs of them, strings and bools as documented in "
            "docs/functional.md; bools are not ints.", [
        Row(WINDOWED, "stride=0", ValueError,
            "stride must be at least 1; received stride=0"),
        Row(WINDOWED, "stride=(1, -2)", ValueError,
            "stride must be at least 1; received stride=(1, -2)"),
        Row(WINDOWED, "stride=(1, 1, 1)", ValueError,
            "stride must be an int or a pair of ints; received stride=(1, 1, 1)"),
        Row(WINDOWED, "stride=1.5", TypeError,
            "stride must be an int or a pair of ints; received stride=1.5"),
        Row(WINDOWED, "stride=(1, 2.0)", TypeError,
            "stride must hold ints; received stride=(1, 2.0)"),
        Row(WINDOWED, "stride=True", TypeError,
            "stride must be an int or a pair of ints; received stride=True"),
        Row(WINDOWED, "stride='1'", TypeError,
            "stride must be an int or a pair of ints; received stride='1'"),
        Row(CONV + DEPTHWISE, "dilation=0", ValueError,
            "dilation must be at least 1; received dilation=0"),
        Row(CONV + DEPTHWISE, "dilation=(2,)", ValueError,
            "dilation must be an int or a pair of ints; received dilation=(2,)"),
        Row(CONV + DEPTHWISE, "dilation=None", TypeError,
            "dilation must be an int or a pair of ints; received dilation=None"),
        Row(WINDOWED, "padding='sme'", ValueError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding='sme'"),
        Row(WINDOWED, "padding=-1", ValueError,
            "padding must not be negative; received padding=-1"),
        Row(WINDOWED, "padding=((0, 0), (0, -2))", ValueError,
            "padding must not be negative; received padding=((0, 0), (0, -2))"),
        Row(WINDOWED, "padding=(1, 1, 1)", ValueError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding=(1, 1, 1)"),
        Row(WINDOWED, "padding=((1, 1), (1,))", ValueError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding=((1, 1), (1,))"),
        Row(WINDOWED, "padding=1.5", TypeError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding=1.5"),
        Row(WINDOWED, "padding=False", TypeError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding=False"),
        Row(WINDOWED, "padding=None", TypeError,
            "padding must be \"valid\", \"same\", an int, (ph, pw) or ((top, bottom), (left, right)); received "
            "padding=None"),
        Row(CONV, "groups=0", ValueError,
            "groups must be at least 1; received groups=0"),
        Row(CONV, "groups=2.0", TypeError,
            "groups must be an int; received groups=2.0"),
        Row(("conv2d",), "groups=3, weight=Z(3, 3, 1, 6)", ValueError,
            "groups must divide the 4 input channels; received groups=3"),
        Row(("conv2d",), "groups=2, weight=Z(3, 3, 2, 5)", ValueError,
            "groups must divide the 5 output channels; received groups=2"),
        Row(CONV, "algorithm='fft'", ValueError,
            "algorithm must be \"auto\", \"direct\" or \"im2col\"; received algorithm='fft'"),
        Row(CONV, "algorithm=None", TypeError,
            "algorithm must be the string \"auto\", \"direct\" or \"im2col\"; received algorithm=None"),
        Row(POOL, "pool_size=0", ValueError,
            "pool_size must be at least 1; received pool_size=0"),
        Row(POOL, "pool_size=(2, 2, 2)", ValueError,
            "pool_size must be an int or a pair of ints; received pool_size=(2, 2, 2)"),
        Row(POOL, "pool_size=2.5", TypeError,
            "pool_size must be an int or a pair of ints; received pool_size=2.5"),
        Row(POOL, "pool_size=None", TypeError,
            "pool_size must be an int or a pair of ints; received pool_size=None"),
        Row(POOL, "padding=2", ValueError,
            "padding must be smaller than pool_size=(2, 2) on every side so that each window holds an input cell; "
            "received padding=2"),
        Row(POOL, "padding=((0, 2), (0, 0))", ValueError,
            "padding must be smaller than pool_size=(2, 2) on every side so that each window holds an input cell; "
            "received padding=((0, 2), (0, 0))"),
        Row(("max_pool2d", "avg_pool2d"), "pool_size=7", ValueError,
            "the output would be empty: pool_size=(7, 7) does not fit the 6x6 input padded by ((0, 0), (0, 0)); "
            "received x with shape (1, 6, 6, 3)"),
        Row(POOL, "ceil_mode=1", TypeError,
            "ceil_mode must be a bool; received ceil_mode=1"),
        Row(POOL, "ceil_mode='yes'", TypeError,
            "ceil_mode must be a bool; received ceil_mode='yes'"),
        Row(("avg_pool2d", "avg_pool2d_grad"), "count_include_pad=None", TypeError,
            "count_include_pad must be a bool; received count_include_pad=None"),
        Row(("max_pool2d", "global_max_pool2d"), "return_indices=0", TypeError,
            "return_indices must be a bool; received return_indices=0"),
        Row(("max_pool2d", "max_pool2d_grad"), "index_format='byte'", ValueError,
            "index_format must be \"flat\" or \"window\"; received index_format='byte'"),
        Row(("max_pool2d", "max_pool2d_grad"), "index_format=1", TypeError,
            "index_format must be the string \"flat\" or \"window\"; received index_format=1"),
        Row(LAYOUTS, "data_format='NHWC'", ValueError,
            "data_format must be \"channels_last\" or \"channels_first\"; received data_format='NHWC'"),
        Row(LAYOUTS, "data_format=None", TypeError,
            "data_format must be the string \"channels_last\" or \"channels_first\"; received data_format=None"),
        Row(("set_num_threads",), "n=0", ValueError,
            "n must be at least 1; received n=0"),
        Row(("set_num_threads",), "n=1.5", TypeError,
            "n must be an int; received n=1.5"),
        Row(("set_num_threads",), "n=True", TypeError,
            "n must be an int; received n=True"),
    ]),
    Section("out=", "`out` (conv2d, depthwise_conv2d and max_pool2d_grad) must be a writable, aligned, C-contiguous ndarray of exactly "
            "the output's shape and dtype that shares no memory with an input.", [
        Row(("conv2d", "depthwise_conv2d", "max_pool2d_grad"), "out=[0.0]", TypeError,
            "out must be a numpy.ndarray; received out of type list"),
        Row(("conv2d",), "out=Z(1, 4, 4, 5)", ValueError,
            "out must have shape (1, 4, 4, 6); received out with shape (1, 4, 4, 5)"),
        Row(("conv2d",), "out=Z(1, 4, 4, 6, dtype='float32')", TypeError,
            "out must have dtype float64; received out with dtype=float32"),
        Row(("conv2d",), "out=RO(1, 4, 4, 6)", ValueError,
            "out must be writable; received a read-only out"),
        Row(("conv2d",), "out=NC(1, 4, 4, 6)", ValueError,
            "out must be C-contiguous and aligned; received out with strides (1536, 384, 96, 16)"),
        Row(("conv2d",), "x=B[:144].reshape(1, 6, 6, 4), out=B[48:144].reshape(1, 4, 4, 6)", ValueError,
            "out must not overlap the input x; received an out that shares memory with x"),
        Row(("conv2d",), "weight=B[:216].reshape(3, 3, 4, 6), out=B[:96].reshape(1, 4, 4, 6)", ValueError,
            "out must not overlap the input weight; received an out that shares memory with weight"),
        Row(("conv2d",), "bias=B[90:96], out=B[:96].reshape(1, 4, 4, 6)", ValueError,
            "out must not overlap the input bias; received an out that shares memory with bias"),
        Row(("depthwise_conv2d",), "out=Z(1, 4, 4, 4)", ValueError,
            "out must have shape (1, 4, 4, 8); received out with shape (1, 4, 4, 4)"),
        Row(("max_pool2d_grad",), "out=Z(1, 6, 6, 2)", ValueError,
            "out must have shape (1, 6, 6, 3); received out with shape (1, 6, 6, 2)"),
        Row(("max_pool2d_grad",), "grad_output=B[:27].reshape(1, 3, 3, 3), out=B[:108].reshape(1, 6, 6, 3)",
            ValueError, "out must not overlap the input grad_output; received an out that shares memory with "
            "grad_output"),
    ]),
    Section("Indices", "`indices` (max_pool2d_grad, global_max_pool2d_grad) are integers of grad_output's shape, each "
            "a flat position `h * W + w` inside its (H, W) plane; with `index_format='window'` (max_pool2d_grad), uint8 "
            "positions `dy * pool_w + dx` inside each window, each naming a cell inside the input.", [
        Row(("max_pool2d_grad",), "indices=Z(1, 3, 3, 3)", TypeError,
            "indices must be an integer array; received indices with dtype=float64"),
        Row(("global_max_pool2d_grad",), "indices=Z(1, 3, dtype='float32')", TypeError,
            "indices must be an integer array; received indices with dtype=float32"),
        Row(("max_pool2d_grad",), "index_format='window'", TypeError,
            "indices must be uint8 with index_format=\"window\" (max_pool2d's window positions); received indices "
            "with dtype=int64"),
        Row(("max_pool2d_grad",), "index_format='window', indices=np.full((1, 3, 3, 3), 4, np.uint8)", ValueError,
            "indices must name, for each grad_output cell, a cell of its own 2x2 window inside the input "
            "(max_pool2d's index_format=\"window\" positions); received values up to 4"),
        Row(("max_pool2d_grad",), "indices=I(1, 3, 3, 2)", ValueError,
            "indices must have the shape of grad_output (1, 3, 3, 3); received indices with shape (1, 3, 3, 2)"),
        Row(("max_pool2d_grad",), "indices=INDEX_AT(36, 1, 3, 3, 3)", ValueError,
            "indices must lie in [0, 36) (flat positions in a 6x6 plane); received indices from 0 to 36"),
        Row(("max_pool2d_grad",), "indices=INDEX_AT(-1, 1, 3, 3, 3)", ValueError,
            "indices must lie in [0, 36) (flat positions in a 6x6 plane); received indices from -1 to 0"),
        Row(("global_max_pool2d_grad",), "indices=INDEX_AT(36, 1, 3)", ValueError,
            "indices must lie in [0, 36) (flat positions in a 6x6 plane); received indices from 0 to 36"),
        Row(("global_max_pool2d_grad",), "indices=I(3, 1)", ValueError,
            "indices must have the shape of grad_output (1, 3); received indices with shape (3, 1)"),
    ]),
    Section("Sizes", "Sizes that do not fit raise `SizeError` (`fastconv._validation.SizeError`, a ValueError that "
            "is also a MemoryError) before anything is allocated (see \"Sizes\" below). Messages about memory are "
            "shown for a 64 GiB machine.", [
        Row(("conv2d",), "stride=2 ** 61", SizeError,
            "the stride along the rows is 2305843009213693952, more than 2**60 = 1152921504606846976, the largest "
            "size the kernels' 64-bit index arithmetic allows; received stride=2305843009213693952"),
        Row(("conv2d",), "padding=2 ** 60", SizeError,
            "the padded input's number of rows is 2305843009213693958, more than 2**60 = 1152921504606846976, the "
            "largest size the kernels' 64-bit index arithmetic allows; received x with shape (1, 6, 6, 4) and "
            "padding=1152921504606846976"),
        Row(("conv2d",), "dilation=2 ** 60", SizeError,
            "the dilated kernel extent along the rows is 2305843009213693953, more than 2**60 = 1152921504606846976, "
            "the largest size the kernels' 64-bit index arithmetic allows; received dilation=1152921504606846976 and "
            "weight with shape (3, 3, 4, 6)"),
        Row(("max_pool2d",), "pool_size=2 ** 61", SizeError,
            "the pooling window extent along the rows is 2305843009213693952, more than 2**60 = 1152921504606846976, "
            "the largest size the kernels' 64-bit index arithmetic allows; received pool_size=2305843009213693952"),
        Row(("avg_pool2d",), "pool_size=2 ** 31, padding=2 ** 31 - 1", SizeError,
            "the pooling window's number of cells is 4611686018427387904, more than 2**60 = 1152921504606846976, the "
            "largest size the kernels' 64-bit index arithmetic allows; received pool_size=2147483648"),
        Row(("conv2d",), "padding=10 ** 6", SizeError,
            "conv2d's output would have shape (1, 2000004, 2000004, 6) and need 174.6 TiB as float64, more than the "
            "64.0 GiB of memory on this machine; received x with shape (1, 6, 6, 4), weight with shape (3, 3, 4, 6), "
            "stride=1, padding=1000000, dilation=1"),
        Row(("max_pool2d",), "pool_size=10 ** 6, stride=1, padding=10 ** 6 - 1", SizeError,
            "max_pool2d's output would have shape (1, 1000005, 1000005, 3) and need 21.8 TiB as float64, more than "
            "the 64.0 GiB of memory on this machine; received x with shape (1, 6, 6, 3), pool_size=1000000, "
            "stride=1, padding=999999"),
        Row(("conv2d_grad_input",), "grad_output=Z(1, 1, 1, 6), input_shape=(1, 2 ** 40, 2 ** 40, 4), stride=2 ** 40",
            SizeError,
            "conv2d_grad_input's result would have shape (1, 1099511627776, 1099511627776, 4): "
            "4835703278458516698824704 float64 elements (38685626227668133590597632 bytes), more than a 64-bit size "
            "can hold; received input_shape=(1, 1099511627776, 1099511627776, 4)"),
        Row(("global_max_pool2d_grad",), "input_shape=(1, 10 ** 5, 10 ** 5, 3)", SizeError,
            "global_max_pool2d_grad's result would have shape (1, 100000, 100000, 3) and need 223.5 GiB as float64, "
            "more than the 64.0 GiB of memory on this machine; received input_shape=(1, 100000, 100000, 3)"),
        Row(("conv2d",), "x=np.broadcast_to(1.0, (1, 2 ** 20, 2 ** 20, 4)), stride=2 ** 20", SizeError,
            "a C-contiguous copy of an input would have shape (1, 1048576, 1048576, 4) and need 32.0 TiB as float64, "
            "more than the 64.0 GiB of memory on this machine; received an array of shape (1, 1048576, 1048576, 4), "
            "dtype float64 and strides (0, 0, 0, 0)"),
        Row(("conv2d",), "x=np.broadcast_to(np.float32(0), (1, 1, 46341, 46341)), weight=Z(1, 1, 1, 1), "
                         "data_format='channels_first', algorithm='im2col'", ValueError,
            "algorithm=\"im2col\" hands BLAS 32-bit sizes (at most 2147483647), too small for this convolution "
            "(input (1, 1, 46341, 46341), output (1, 1, 46341, 46341), kernel 1x1); use algorithm=\"direct\" or "
            "\"auto\"; received algorithm='im2col'"),
    ]),
]

# ---------------------------------------------------------------------------------------------- running a row


def _arguments(function, bad):
    """The base call's keyword arguments with a row's changes. ``B`` in a row is one fresh 512-element float64
    buffer (for arguments that overlap)."""
    kwargs = eval(f"dict({BASE[function]})", dict(NAMESPACE))  # noqa: S307  (our own table)
    kwargs.update(eval(f"dict({bad})", dict(NAMESPACE, B=np.zeros(512))))  # noqa: S307
    return kwargs


def _function(name):
    return getattr(fastconv, name)


def _cases():
    for section in TABLE:
        for row in section.rows:
            for function in row.functions:
                yield pytest.param(row, function, id=f"{function}({row.bad})")


@pytest.fixture(autouse=True)
def _pretended_memory(monkeypatch, threads):
    """A 64 GiB machine (messages that name the memory are the same everywhere); the thread count restored."""
    monkeypatch.setattr(_validation, "memory_limit", lambda: PRETENDED_MEMORY)


@pytest.mark.parametrize("row, function", list(_cases()))
def test_row(row, function):
    with pytest.raises(row.error) as info:
        _function(function)(**_arguments(function, row.bad))
    assert type(info.value) is row.error, f"{type(info.value).__name__}, expected {row.error.__name__}"
    assert str(info.value) == row.message


@pytest.mark.parametrize("function", FUNCTIONS)
def test_base_calls_are_valid(function):
    """The calls every row breaks must succeed, or the rows would test nothing."""
    _function(function)(**_arguments(function, ""))


def test_every_argument_has_a_row():
    """Every argument of every public function is rejected somewhere in the table, and every public function of
    fastconv.functional has a base call."""
    assert set(functional.__all__) <= set(FUNCTIONS)
    covered = {(f, name) for section in TABLE for row in section.rows for f in row.functions
               for name in re.findall(r"(?:^|, )(\w+)=", row.bad)}
    missing = [(f, p) for f in FUNCTIONS for p in inspect.signature(_function(f)).parameters if (f, p) not in covered]
    assert not missing, f"arguments no row rejects: {missing}"


# ---------------------------------------------------------------------------------------------- the docs

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "docs", "bad_input.md")
BEGIN = "<!-- the table: generated from tests/kernels/test_bad_input_matrix.py by tests/make_bad_input_doc.py -->"
END = "<!-- end of the generated table -->"


def _cell(text):
    return "`" + text.replace("|", "\\|") + "`"


def _functions_cell(functions):
    return "every function but set_num_threads" if tuple(functions) == LAYOUTS else ", ".join(functions)


def render_table():
    """The Markdown the docs hold between BEGIN and END: the base calls, then one table per section."""
    lines = ["### The valid calls", "",
             "Each row changes these calls (`Z(*shape)`: float64 zeros, `I(*shape)`: int64 zeros, `RO`: read-only, "
             "`NC`: a non-contiguous view, `INDEX_AT(v, *shape)`: int64 zeros with `v` first, `B`: one float64 "
             "buffer of 512 elements).", "", "| Function | Valid call |", "|---|---|"]
    lines += [f"| {name} | {_cell(f'{name}({call})')} |" for name, call in BASE.items()]
    lines.append("")
    for section in TABLE:
        lines += [f"### {section.title}", "", section.note, "", "| Functions | Bad input | Error | Message |",
                  "|---|---|---|---|"]
        for row in section.rows:
            lines.append(f"| {_functions_cell(row.functions)} | {_cell(row.bad)} | {row.error.__name__} | "
                         f"{_cell(row.message)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def doc_with_table(text):
    """``text`` (the doc) with its table replaced by render_table()."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{render_table()}\n\n{END}{tail}"


def test_the_docs_show_this_table():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    assert BEGIN in text and END in text, f"{DOC} lacks the table markers"
    assert text == doc_with_table(text), "docs/bad_input.md is out of date: run python tests/make_bad_input_doc.py"
