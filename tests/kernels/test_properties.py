"""Property tests: fastconv against the plain NumPy reference (tests/reference.py) on random valid cases.

Hypothesis draws small shapes (N <= 2, H, W <= 10, C, K <= 6) and every option the functional API has
(stride, all padding forms including "same" and asymmetric explicit padding, dilation, groups including
depthwise, both data formats, every algorithm, float32 and float64) and compares each result with the
reference, which always computes in float64.

Only valid combinations are drawn (output size >= 1, pool padding < pool size), so every example must succeed.

Profiles: "ci" (200 examples per test, the default) and "dev" (30), chosen with the environment variable
``FASTCONV_HYPOTHESIS_PROFILE``. Both have no deadline (the first call of a kernel may be slow).
"""
import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import reference  # tests/ is put on sys.path by tests/conftest.py

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=200, **_COMMON)
settings.register_profile("dev", max_examples=30, **_COMMON)
PROFILE = os.environ.get("FASTCONV_HYPOTHESIS_PROFILE", "ci")
# Applied per test (not with settings.load_profile) so that other test modules keep their own settings.
given_settings = settings.get_profile(PROFILE)

DTYPES = (np.float32, np.float64)
ALGORITHMS = ("direct", "im2col", "auto")
DATA_FORMATS = ("channels_last", "channels_first")

MAX_N, MAX_HW, MAX_C = 2, 10, 6


# --------------------------------------------------------------------------------------------
# tolerances


def assert_close(got, want, dtype, terms, what):
    """``got`` (computed in ``dtype``) against the float64 reference ``want``; ``terms`` is the longest sum."""
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    terms = max(int(terms), 1)
    if np.dtype(dtype) == np.float32:
        rtol, atol = 2e-5, 2e-6 * terms
    else:
        rtol, atol = 1e-11, 1e-13 * terms
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol, err_msg=what)


# --------------------------------------------------------------------------------------------
# strategies


def _int_or_pair(draw, lo, hi):
    """An int or a (rows, cols) pair; returns (argument, (rows, cols))."""
    if draw(st.booleans()):
        v = draw(st.integers(lo, hi))
        return v, (v, v)
    a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return (a, b), (a, b)


def _padding(draw, max_each):
    """Any explicit padding form or "valid"/"same"; ``max_each`` is (max rows side, max cols side)."""
    mh, mw = max_each
    kind = draw(st.sampled_from(["valid", "same", "int", "pair", "nested"]))
    if kind in ("valid", "same"):
        return kind
    if kind == "int":
        return draw(st.integers(0, min(mh, mw)))
    if kind == "pair":
        return (draw(st.integers(0, mh)), draw(st.integers(0, mw)))
    return ((draw(st.integers(0, mh)), draw(st.integers(0, mh))),
            (draw(st.integers(0, mw)), draw(st.integers(0, mw))))


def _min_extent(k_eff, before, after):
    """Smallest input size n >= 1 with n + before + after >= k_eff."""
    return max(1, k_eff - before - after)


def _arrays(seed, dtype, *shapes, ties=False):
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        if ties:
            a = rng.integers(-2, 3, size=shape).astype(np.float64)
        else:
            a = rng.uniform(-1.0, 1.0, size=shape)
        out.append(a.astype(dtype))
    return out


MEMORY = ("c", "fortran", "negative", "strided")


def _in_memory(a, kind):
    """The same values as ``a`` in another memory layout (the API takes any ndarray, views included)."""
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "negative":  # a view with negative strides on every axis
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if kind == "strided":  # every other element of a larger buffer
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


def _m(a, case):
    return _in_memory(a, case["memory"])


def _layout(shape_nhwc, data_format):
    n, h, w, c = shape_nhwc
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)


def _weight_layout(r, s, cg, k, data_format):
    return (r, s, cg, k) if data_format == "channels_last" else (k, cg, r, s)


@st.composite
def conv_cases(draw):
    data_format = draw(st.sampled_from(DATA_FORMATS))
    dtype = draw(st.sampled_from(DTYPES))
    algorithm = draw(st.sampled_from(ALGORITHMS))
    n = draw(st.integers(1, MAX_N))
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if kind == "plain":
        groups, cg, kg = 1, draw(st.integers(1, MAX_C)), draw(st.integers(1, MAX_C))
    elif kind == "grouped":
        groups = draw(st.integers(2, 3))
        cg = draw(st.integers(1, MAX_C // groups))
        kg = draw(st.integers(1, MAX_C // groups))
    else:  # depthwise: groups == C, channel multiplier K // C
        groups = draw(st.integers(1, MAX_C))
        cg, kg = 1, draw(st.integers(1, MAX_C // groups))
    c, k = groups * cg, groups * kg
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_arg, (sh, sw) = _int_or_pair(draw, 1, 3)
    dilation_arg, (dh, dw) = _int_or_pair(draw, 1, 3)
    reh, rew = dh * (r - 1) + 1, dw * (s - 1) + 1
    padding = _padding(draw, (3, 3))
    if isinstance(padding, str):
        pads = ((0, 0), (0, 0))
    else:
        pads = reference.resolve_padding(padding, (1, 1), (1, 1))
    (pt, pb), (pl, pr) = pads
    if padding != "same" and (_min_extent(reh, pt, pb) > MAX_HW or _min_extent(rew, pl, pr) > MAX_HW):
        padding = "same"  # the dilated kernel does not fit the largest image: let "same" pad it
    if padding == "same":
        h, w = draw(st.integers(1, MAX_HW)), draw(st.integers(1, MAX_HW))
    else:
        h = draw(st.integers(_min_extent(reh, pt, pb), MAX_HW))
        w = draw(st.integers(_min_extent(rew, pl, pr), MAX_HW))
    use_bias = draw(st.booleans())
    memory = draw(st.sampled_from(MEMORY))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return dict(
        n=n, h=h, w=w, c=c, k=k, r=r, s=s, cg=cg, groups=groups,
        stride=stride_arg, dilation=dilation_arg, padding=padding,
        data_format=data_format, dtype=dtype, algorithm=algorithm, use_bias=use_bias, memory=memory, seed=seed,
    )


def _conv_setup(case):
    fmt = case["data_format"]
    x_shape = _layout((case["n"], case["h"], case["w"], case["c"]), fmt)
    w_shape = _weight_layout(case["r"], case["s"], case["cg"], case["k"], fmt)
    opts = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], data_format=fmt)
    oh, ow = reference.conv_output_hw((case["h"], case["w"]), (case["r"], case["s"]), case["stride"],
                                      case["padding"], case["dilation"])
    assert oh >= 1 and ow >= 1, "the strategy drew an invalid case"
    y_shape = _layout((case["n"], oh, ow, case["k"]), fmt)
    return x_shape, w_shape, y_shape, opts, (oh, ow)


# --------------------------------------------------------------------------------------------
# convolution


@given_settings
@given(case=conv_cases())
def test_conv2d_matches_reference(case):
    x_shape, w_shape, y_shape, opts, (oh, ow) = _conv_setup(case)
    dtype = case["dtype"]
    x, w, b = _arrays(case["seed"], dtype, x_shape, w_shape, (case["k"],))
    bias = b if case["use_bias"] else None
    got = fastconv.conv2d(_m(x, case), _m(w, case), bias, algorithm=case["algorithm"], **opts)
    want = reference.conv2d(x, w, bias, **opts)
    assert_close(got, want, dtype, case["cg"] * case["r"] * case["s"] + 1, f"conv2d {case}")


@given_settings
@given(case=conv_cases())
def test_conv2d_out_matches_reference(case):
    """The same through out=: the buffer is returned and holds the result."""
    x_shape, w_shape, y_shape, opts, _ = _conv_setup(case)
    dtype = case["dtype"]
    x, w, b = _arrays(case["seed"], dtype, x_shape, w_shape, (case["k"],))
    bias = b if case["use_bias"] else None
    buf = np.full(y_shape, np.nan, dtype=dtype)
    got = fastconv.conv2d(_m(x, case), _m(w, case), bias, algorithm=case["algorithm"], out=buf, **opts)
    assert got is buf
    want = reference.conv2d(x, w, bias, **opts)
    assert_close(buf, want, dtype, case["cg"] * case["r"] * case["s"] + 1, f"conv2d out= {case}")


@given_settings
@given(case=conv_cases())
def test_conv2d_grad_input_matches_reference(case):
    x_shape, w_shape, y_shape, opts, _ = _conv_setup(case)
    dtype = case["dtype"]
    gy, w = _arrays(case["seed"], dtype, y_shape, w_shape)
    got = fastconv.conv2d_grad_input(_m(gy, case), _m(w, case), x_shape, algorithm=case["algorithm"], **opts)
    want = reference.conv2d_grad_input(gy, w, x_shape, **opts)
    kg = case["k"] // case["groups"]
    assert_close(got, want, dtype, kg * case["r"] * case["s"], f"conv2d_grad_input {case}")


@given_settings
@given(case=conv_cases())
def test_conv2d_grad_weight_matches_reference(case):
    x_shape, w_shape, y_shape, opts, (oh, ow) = _conv_setup(case)
    dtype = case["dtype"]
    gy, x = _arrays(case["seed"], dtype, y_shape, x_shape)
    got = fastconv.conv2d_grad_weight(_m(gy, case), _m(x, case), w_shape, algorithm=case["algorithm"], **opts)
    want = reference.conv2d_grad_weight(gy, x, w_shape, **opts)
    assert_close(got, want, dtype, case["n"] * oh * ow, f"conv2d_grad_weight {case}")


@given_settings
@given(case=conv_cases())
def test_conv2d_grad_bias_matches_reference(case):
    _, _, y_shape, opts, (oh, ow) = _conv_setup(case)
    dtype = case["dtype"]
    (gy,) = _arrays(case["seed"], dtype, y_shape)
    got = fastconv.conv2d_grad_bias(_m(gy, case), data_format=case["data_format"])
    want = reference.conv2d_grad_bias(gy, data_format=case["data_format"])
    assert_close(got, want, dtype, case["n"] * oh * ow, f"conv2d_grad_bias {case}")


@given_settings
@given(case=conv_cases())
def test_conv2d_algorithms_agree(case):
    """direct and im2col give the same result up to float rounding (spec, "Algorithms")."""
    x_shape, w_shape, _, opts, _ = _conv_setup(case)
    dtype = case["dtype"]
    x, w = _arrays(case["seed"], dtype, x_shape, w_shape)
    a = fastconv.conv2d(_m(x, case), w, algorithm="direct", **opts)
    b = fastconv.conv2d(x, w, algorithm="im2col", **opts)
    assert_close(a, b.astype(np.float64), dtype, 2 * case["cg"] * case["r"] * case["s"], f"direct vs im2col {case}")


# --------------------------------------------------------------------------------------------
# max pooling


@st.composite
def pool_cases(draw):
    data_format = draw(st.sampled_from(DATA_FORMATS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, MAX_N))
    c = draw(st.integers(1, MAX_C))
    pool_arg, (kh, kw) = _int_or_pair(draw, 1, 4)
    if draw(st.booleans()):
        stride_arg, (sh, sw) = None, (kh, kw)
    else:
        stride_arg, (sh, sw) = _int_or_pair(draw, 1, 4)
    padding = _padding(draw, (kh - 1, kw - 1))  # each side < pool size
    ceil_mode = draw(st.booleans())
    if isinstance(padding, str):
        (pt, pb), (pl, pr) = ((0, 0), (0, 0))
    else:
        (pt, pb), (pl, pr) = reference.resolve_padding(padding, (1, 1), (1, 1))
    if padding == "same":
        h, w = draw(st.integers(1, MAX_HW)), draw(st.integers(1, MAX_HW))
    else:
        h = draw(st.integers(_min_extent(kh, pt, pb), MAX_HW))
        w = draw(st.integers(_min_extent(kw, pl, pr), MAX_HW))
    ties = draw(st.booleans())
    memory = draw(st.sampled_from(MEMORY))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return dict(n=n, c=c, h=h, w=w, pool_size=pool_arg, stride=stride_arg, padding=padding,
                ceil_mode=ceil_mode, data_format=data_format, dtype=dtype, ties=ties, memory=memory, seed=seed,
                kh=kh, kw=kw, sh=sh, sw=sw)


def _pool_setup(case):
    fmt = case["data_format"]
    x_shape = _layout((case["n"], case["h"], case["w"], case["c"]), fmt)
    opts = dict(pool_size=case["pool_size"], stride=case["stride"], padding=case["padding"],
                ceil_mode=case["ceil_mode"], data_format=fmt)
    oh, ow = reference.pool_output_hw((case["h"], case["w"]), case["pool_size"], case["stride"],
                                      case["padding"], case["ceil_mode"])
    assert oh >= 1 and ow >= 1, "the strategy drew an invalid case"
    y_shape = _layout((case["n"], oh, ow, case["c"]), fmt)
    return x_shape, y_shape, opts


@given_settings
@given(case=pool_cases())
def test_max_pool2d_matches_reference(case):
    x_shape, y_shape, opts = _pool_setup(case)
    dtype = case["dtype"]
    (x,) = _arrays(case["seed"], dtype, x_shape, ties=case["ties"])
    want, want_idx = reference.max_pool2d(x, **opts)

    got = fastconv.max_pool2d(_m(x, case), **opts)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.dtype(dtype) and got.shape == y_shape
    # max is exact: the winner is one of the inputs
    np.testing.assert_array_equal(got.astype(np.float64), want, err_msg=f"max_pool2d {case}")

    got2, idx = fastconv.max_pool2d(_m(x, case), return_indices=True, **opts)
    np.testing.assert_array_equal(got2, got)
    assert idx.dtype == np.int64 and idx.shape == y_shape
    np.testing.assert_array_equal(idx, want_idx, err_msg=f"max_pool2d indices {case}")


@given_settings
@given(case=pool_cases())
def test_max_pool2d_indices_point_at_the_max(case):
    """indices hold h * W + w of the winning cell within its (H, W) plane, in either layout."""
    x_shape, y_shape, opts = _pool_setup(case)
    (x,) = _arrays(case["seed"], case["dtype"], x_shape, ties=case["ties"])
    out, idx = fastconv.max_pool2d(_m(x, case), return_indices=True, **opts)
    h, w = case["h"], case["w"]
    assert idx.min() >= 0 and idx.max() < h * w
    if case["data_format"] == "channels_last":
        planes = x.transpose(0, 3, 1, 2).reshape(case["n"], case["c"], h * w)
        i = idx.transpose(0, 3, 1, 2).reshape(case["n"], case["c"], -1)
        o = out.transpose(0, 3, 1, 2).reshape(case["n"], case["c"], -1)
    else:
        planes = x.reshape(case["n"], case["c"], h * w)
        i = idx.reshape(case["n"], case["c"], -1)
        o = out.reshape(case["n"], case["c"], -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, i, axis=2), o)


@given_settings
@given(case=pool_cases())
def test_max_pool2d_grad_matches_reference(case):
    x_shape, y_shape, opts = _pool_setup(case)
    dtype = case["dtype"]
    x, gy = _arrays(case["seed"], dtype, x_shape, y_shape, ties=case["ties"])
    _, idx = reference.max_pool2d(x, **opts)
    got = fastconv.max_pool2d_grad(_m(gy, case), _m(idx, case), x_shape, **opts)
    want = reference.max_pool2d_grad(gy, idx, x_shape, data_format=case["data_format"])
    # one input cell wins at most ceil(kh / sh) * ceil(kw / sw) windows
    terms = math.ceil(case["kh"] / case["sh"]) * math.ceil(case["kw"] / case["sw"])
    assert_close(got, want, dtype, terms, f"max_pool2d_grad {case}")


@given_settings
@given(case=pool_cases())
def test_max_pool2d_grad_of_own_indices(case):
    """The pair used by a layer: fastconv's own indices fed back to max_pool2d_grad."""
    x_shape, y_shape, opts = _pool_setup(case)
    dtype = case["dtype"]
    x, gy = _arrays(case["seed"], dtype, x_shape, y_shape)
    _, idx = fastconv.max_pool2d(x, return_indices=True, **opts)
    got = fastconv.max_pool2d_grad(gy, idx, x_shape, **opts)
    want = reference.max_pool2d_grad(gy, idx, x_shape, data_format=case["data_format"])
    terms = math.ceil(case["kh"] / case["sh"]) * math.ceil(case["kw"] / case["sw"])
    assert_close(got, want, dtype, terms, f"max_pool2d_grad (own indices) {case}")
