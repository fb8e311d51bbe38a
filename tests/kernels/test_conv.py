"""fastconv's convolution kernels (forward, grad_input, grad_weight, grad_bias) against tests/reference.py.

Tolerances are elementwise and scale-aware: ``|got - exp| <= rel * bound`` where ``bound`` is the same operation
applied to the absolute values of the inputs (a bound on the magnitude of the summed terms), with ``rel`` a
small multiple of the dtype's epsilon (2e-5 for float32, 1e-12 for float64).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv
import reference as ref

DF = ref.DATA_FORMATS
ALGOS = ("direct", "im2col", "auto")
DTYPES = (np.float32, np.float64)

# (N, H, W, C, K, (R, S), stride, padding, dilation, groups)
CASES = [
    (2, 7, 6, 3, 4, (3, 3), 1, "valid", 1, 1),
    (2, 5, 5, 4, 6, (1, 1), 1, "valid", 1, 1),
    (2, 9, 8, 3, 5, (3, 3), 2, "valid", 1, 1),
    (1, 10, 11, 2, 3, (3, 2), (2, 3), "valid", 1, 1),
    (2, 7, 7, 3, 4, (3, 3), 1, "same", 1, 1),
    (1, 6, 7, 2, 3, (4, 2), 1, "same", 1, 1),              # even kernel: odd "same" total, extra after
    (2, 8, 9, 3, 4, (3, 3), 2, "same", 1, 1),              # stride 2 "same": H total 1 (0, 1), W total 2
    (1, 10, 11, 2, 4, (3, 3), (2, 3), "same", 2, 1),       # "same" + stride + dilation, odd totals (1, 2)
    (1, 12, 12, 3, 5, (5, 5), 3, "same", 1, 1),            # stride 3 "same": total 2 per axis
    (2, 6, 6, 3, 4, (3, 3), 1, 1, 1, 1),
    (1, 6, 7, 2, 3, (3, 3), 2, (2, 1), 1, 1),
    (2, 7, 6, 3, 4, (3, 3), 1, ((0, 2), (1, 0)), 1, 1),
    (1, 11, 10, 2, 3, (3, 2), (2, 1), ((1, 2), (2, 0)), (2, 3), 1),
    (2, 9, 9, 3, 4, (3, 3), 1, "valid", 2, 1),
    (2, 6, 7, 4, 6, (3, 3), 1, 1, 1, 2),
    (1, 8, 8, 8, 8, (3, 3), 2, "same", 1, 4),
    (2, 7, 7, 4, 4, (3, 3), 1, "same", 1, 4),              # depthwise
    (2, 7, 6, 3, 6, (3, 3), 1, 1, 1, 3),                   # depthwise, multiplier 2
    (1, 10, 9, 2, 6, (3, 3), 2, "same", 2, 2),             # depthwise, multiplier 3, stride, dilation
    (1, 9, 9, 8, 8, (5, 5), 1, "same", 1, 8),              # depthwise 5x5
    (2, 5, 4, 3, 2, (5, 4), 1, "valid", 1, 1),             # kernel = input: 1x1 output
    (1, 10, 10, 3, 5, (1, 3), 3, "valid", 1, 1),           # stride > kernel
    (3, 5, 5, 5, 7, (2, 2), 1, "valid", 1, 1),
    (2, 12, 12, 8, 16, (3, 3), 1, "same", 1, 1),           # more channels than a register block
    (1, 1, 9, 3, 4, (1, 3), 1, "same", 1, 1),              # H = 1
    (1, 3, 3, 2, 3, (3, 3), 1, 2, 1, 1),                   # padding 2 around a 3x3 input
]


def case_id(c):
    N, H, W, C, K, RS, s, p, d, g = c
    return f"N{N}-{H}x{W}-C{C}K{K}-k{RS[0]}x{RS[1]}-s{s}-p{p}-d{d}-g{g}".replace(" ", "")


def make(rng, case, data_format, dtype=np.float64):
    """x, w, b in data_format and dtype, plus the keyword arguments shared by fastconv and the reference."""
    N, H, W, C, K, (R, S), stride, padding, dilation, groups = case
    x = ref.from_channels_first(rng.standard_normal((N, C, H, W)), data_format).astype(dtype)
    w = ref.weight_from_oihw(rng.standard_normal((K, C // groups, R, S)), data_format).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, data_format=data_format)
    return x, w, b, kw


def out_shape(x, w, kw):
    """Output shape without the batch axis, in kw's data_format (from the reference's size rules)."""
    if kw["data_format"] == "channels_last":
        (H, W), (R, S), K = x.shape[1:3], w.shape[:2], w.shape[3]
    else:
        (H, W), (R, S), K = x.shape[2:], w.shape[2:], w.shape[0]
    OH, OW = ref.conv_output_hw((H, W), (R, S), kw["stride"], kw["padding"], kw["dilation"])
    return (OH, OW, K) if kw["data_format"] == "channels_last" else (K, OH, OW)


def assert_close(got, exp, bound, dtype):
    """Elementwise ``|got - exp| <= rel * bound`` with dtype checks; bound = |terms| summed (see module doc)."""
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == dtype, (got.dtype, dtype)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    rel = 2e-5 if dtype == np.float32 else 1e-12
    err = np.abs(got.astype(np.float64) - exp)
    lim = rel * (bound + 1e-6)
    bad = ~(err <= lim)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / lim, 0)), err.shape)
        raise AssertionError(
            f"{bad.sum()} of {err.size} elements off (dtype {dtype}); worst at {i}: got {got[i]!r}, "
            f"expected {exp[i]!r}, |err| {err[i]:.3g} > limit {lim[i]:.3g}; max |err| overall {err.max():.3g}")


def ref_forward(x, w, b, kw):
    exp = ref.conv2d(x, w, b, **kw)
    bound = ref.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), **kw)
    return exp, bound


def ref_grad_input(gy, w, shape, kw):
    return (ref.conv2d_grad_input(gy, w, shape, **kw),
            ref.conv2d_grad_input(np.abs(gy), np.abs(w), shape, **kw))


def ref_grad_weight(gy, x, shape, kw):
    return (ref.conv2d_grad_weight(gy, x, shape, **kw),
            ref.conv2d_grad_weight(np.abs(gy), np.abs(x), shape, **kw))


def ref_grad_bias(gy, data_format):
    return ref.conv2d_grad_bias(gy, data_format), ref.conv2d_grad_bias(np.abs(gy), data_format)


# ----------------------------------------------------------------------------------------------------------------
# Every option, both layouts, every algorithm, float32 and float64
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_forward(rng, case, data_format, algorithm, dtype):
    x, w, b, kw = make(rng, case, data_format, dtype)
    got = fastconv.conv2d(x, w, b, algorithm=algorithm, **kw)
    assert_close(got, *ref_forward(x, w, b, kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_grad_input(rng, case, data_format, algorithm, dtype):
    x, w, b, kw = make(rng, case, data_format, dtype)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw)).astype(dtype)
    got = fastconv.conv2d_grad_input(gy, w, x.shape, algorithm=algorithm, **kw)
    assert_close(got, *ref_grad_input(gy, w, x.shape, kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_grad_weight(rng, case, data_format, algorithm, dtype):
    x, w, b, kw = make(rng, case, data_format, dtype)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw)).astype(dtype)
    got = fastconv.conv2d_grad_weight(gy, x, w.shape, algorithm=algorithm, **kw)
    assert_close(got, *ref_grad_weight(gy, x, w.shape, kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 1, 1, 7), (3, 8, 9, 16)])
def test_conv2d_grad_bias(rng, shape, data_format, dtype):
    gy = rng.standard_normal(shape).astype(dtype)
    got = fastconv.conv2d_grad_bias(gy, data_format=data_format)
    assert_close(got, *ref_grad_bias(gy, data_format), dtype)


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
def test_conv2d_without_bias(rng, data_format, algorithm):
    x, w, b, kw = make(rng, CASES[7], data_format)
    got = fastconv.conv2d(x, w, algorithm=algorithm, **kw)
    assert_close(got, *ref_forward(x, w, None, kw), np.float64)
    got0 = fastconv.conv2d(x, w, None, algorithm=algorithm, **kw)
    assert_close(got0, *ref_forward(x, w, None, kw), np.float64)


@pytest.mark.parametrize("data_format", DF)
def test_same_padding_output_shape(rng, data_format):
    # "same": output ceil(n / s) whatever the kernel, stride or dilation
    for H, W, R, S, s, d in [(7, 8, 3, 3, 2, 1), (10, 11, 4, 2, 3, 1), (9, 6, 3, 3, (2, 4), 2), (5, 5, 5, 5, 1, 1)]:
        case = (1, H, W, 2, 3, (R, S), s, "same", d, 1)
        x, w, b, kw = make(rng, case, data_format)
        y = fastconv.conv2d(x, w, b, **kw)
        sh, sw = ref.pair(s)
        OH, OW = -(-H // sh), -(-W // sw)
        assert y.shape == ((1, OH, OW, 3) if data_format == "channels_last" else (1, 3, OH, OW))
        assert_close(y, *ref_forward(x, w, b, kw), np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Finite differences (float64, tiny shapes) on the package itself
# ----------------------------------------------------------------------------------------------------------------


def numeric_grad(f, a, eps=1e-6):
    a = a.copy()
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        fp = f(a)
        a[i] = old - eps
        fm = f(a)
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


FD_CASES = [
    (1, 5, 4, 2, 3, (3, 2), (2, 1), "same", 1, 1),
    (2, 5, 5, 2, 4, (2, 2), 1, ((1, 0), (0, 2)), (2, 1), 2),
    (1, 6, 5, 3, 3, (3, 3), 2, 1, 1, 3),
]


@pytest.mark.parametrize("algorithm", ("direct", "im2col"))
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_conv2d_grads_finite_differences(rng, case, data_format, algorithm):
    x, w, b, kw = make(rng, case, data_format)
    kwa = dict(kw, algorithm=algorithm)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw))
    loss_x = lambda a: np.vdot(gy, fastconv.conv2d(a, w, b, **kwa))  # noqa: E731
    loss_w = lambda a: np.vdot(gy, fastconv.conv2d(x, a, b, **kwa))  # noqa: E731
    loss_b = lambda a: np.vdot(gy, fastconv.conv2d(x, w, a, **kwa))  # noqa: E731
    np.testing.assert_allclose(fastconv.conv2d_grad_input(gy, w, x.shape, **kwa), numeric_grad(loss_x, x),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fastconv.conv2d_grad_weight(gy, x, w.shape, **kwa), numeric_grad(loss_w, w),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fastconv.conv2d_grad_bias(gy, data_format=data_format), numeric_grad(loss_b, b),
                               rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# direct and im2col agree; results do not depend on the thread count
# ----------------------------------------------------------------------------------------------------------------

BIG_CASES = [
    (4, 16, 16, 8, 16, (3, 3), 1, "same", 1, 1),
    (3, 17, 15, 6, 10, (3, 3), 2, "same", 1, 2),
    (4, 14, 14, 8, 16, (3, 3), 1, 1, 1, 8),              # depthwise, multiplier 2
    (5, 13, 12, 5, 7, (5, 3), (2, 1), ((2, 1), (0, 1)), (1, 2), 1),
    (8, 9, 9, 4, 4, (1, 1), 1, "valid", 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES[::3] + BIG_CASES, ids=case_id)
def test_direct_and_im2col_agree(rng, case, data_format, dtype):
    x, w, b, kw = make(rng, case, data_format, dtype)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw)).astype(dtype)
    y_d = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    y_i = fastconv.conv2d(x, w, b, algorithm="im2col", **kw)
    assert_close(y_i, y_d.astype(np.float64), 2 * ref_forward(x, w, b, kw)[1], dtype)
    gx_d = fastconv.conv2d_grad_input(gy, w, x.shape, algorithm="direct", **kw)
    gx_i = fastconv.conv2d_grad_input(gy, w, x.shape, algorithm="im2col", **kw)
    assert_close(gx_i, gx_d.astype(np.float64), 2 * ref_grad_input(gy, w, x.shape, kw)[1], dtype)
    gw_d = fastconv.conv2d_grad_weight(gy, x, w.shape, algorithm="direct", **kw)
    gw_i = fastconv.conv2d_grad_weight(gy, x, w.shape, algorithm="im2col", **kw)
    assert_close(gw_i, gw_d.astype(np.float64), 2 * ref_grad_weight(gy, x, w.shape, kw)[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", BIG_CASES, ids=case_id)
def test_big_cases_vs_reference(rng, case, data_format, dtype):
    x, w, b, kw = make(rng, case, data_format, dtype)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw)).astype(dtype)
    for algorithm in ALGOS:
        assert_close(fastconv.conv2d(x, w, b, algorithm=algorithm, **kw), *ref_forward(x, w, b, kw), dtype)
        assert_close(fastconv.conv2d_grad_input(gy, w, x.shape, algorithm=algorithm, **kw),
                     *ref_grad_input(gy, w, x.shape, kw), dtype)
        assert_close(fastconv.conv2d_grad_weight(gy, x, w.shape, algorithm=algorithm, **kw),
                     *ref_grad_weight(gy, x, w.shape, kw), dtype)


def test_im2col_column_buffer_tiling(rng):
    # one image's column buffer is 64 * 9 * 100 * 100 float64 = 44 MiB, more than the 32 MiB tile
    case = (2, 100, 100, 64, 4, (3, 3), 1, "same", 1, 1)
    x, w, b, kw = make(rng, case, "channels_last")
    y_i = fastconv.conv2d(x, w, b, algorithm="im2col", **kw)
    assert_close(y_i, *ref_forward(x, w, b, kw), np.float64)
    gy = rng.standard_normal(y_i.shape)
    gw_i = fastconv.conv2d_grad_weight(gy, x, w.shape, algorithm="im2col", **kw)
    assert_close(gw_i, *ref_grad_weight(gy, x, w.shape, kw), np.float64)
    gx_i = fastconv.conv2d_grad_input(gy, w, x.shape, algorithm="im2col", **kw)
    assert_close(gx_i, *ref_grad_input(gy, w, x.shape, kw), np.float64)


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", BIG_CASES[:4], ids=case_id)
def test_thread_count_bitwise_identical(threads, rng, case, data_format, algorithm):
    x, w, b, kw = make(rng, case, data_format, np.float32)
    kw = dict(kw, algorithm=algorithm)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw)).astype(np.float32)

    def run():
        return (fastconv.conv2d(x, w, b, **kw),
                fastconv.conv2d_grad_input(gy, w, x.shape, **kw),
                fastconv.conv2d_grad_weight(gy, x, w.shape, **kw),
                fastconv.conv2d_grad_bias(gy, data_format=data_format))

    threads.set_num_threads(1)
    assert threads.get_num_threads() == 1
    one = run()
    for n in (2, 3):
        threads.set_num_threads(n)
        # (a build without OpenMP runs serially whatever is asked, and reports 1)
        assert threads.get_num_threads() == (n if threads.show_config()["openmp"] else 1)
        for a, c in zip(one, run()):
            np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------------------------------------------
# Empty batch, unusual memory layouts, dtypes, out=
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
def test_empty_batch(rng, data_format, algorithm):
    case = (0, 8, 9, 4, 6, (3, 3), 2, "same", 1, 2)
    x, w, b, kw = make(rng, case, data_format, np.float32)
    kwa = dict(kw, algorithm=algorithm)
    oshape = out_shape(x, w, kw)
    y = fastconv.conv2d(x, w, b, **kwa)
    assert y.shape == (0,) + oshape and y.dtype == np.float32
    gy = np.zeros((0,) + oshape, np.float32)
    gx = fastconv.conv2d_grad_input(gy, w, x.shape, **kwa)
    assert gx.shape == x.shape and gx.dtype == np.float32
    gw = fastconv.conv2d_grad_weight(gy, x, w.shape, **kwa)
    assert gw.shape == w.shape and gw.dtype == np.float32
    np.testing.assert_array_equal(gw, 0)
    gb = fastconv.conv2d_grad_bias(gy, data_format=data_format)
    assert gb.shape == (6,)
    np.testing.assert_array_equal(gb, 0)


def _views(a, rng, kind):
    """The same values as ``a`` in another memory layout (the returned array is a view or a Fortran copy)."""
    if kind == "fortran":
        v = np.asfortranarray(a)
    elif kind == "negative":  # negative strides along every axis
        big = a[::-1, ::-1, ::-1, ::-1].copy()
        v = big[::-1, ::-1, ::-1, ::-1]
    elif kind == "sliced":  # a strided window into a bigger array
        big = rng.standard_normal(tuple(2 * n + 1 for n in a.shape)).astype(a.dtype)
        sl = tuple(slice(1, 1 + 2 * n, 2) for n in a.shape)
        big[sl] = a
        v = big[sl]
    elif kind == "transposed":  # a permuted view of a contiguous array (axis 1 fastest in memory)
        v = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        raise ValueError(kind)
    np.testing.assert_array_equal(v, a)
    if a.size > 1:
        assert not v.flags.c_contiguous
    return v


@pytest.mark.parametrize("kind", ["fortran", "negative", "sliced", "transposed"])
@pytest.mark.parametrize("algorithm", ("direct", "im2col"))
@pytest.mark.parametrize("data_format", DF)
def test_non_contiguous_inputs(rng, data_format, algorithm, kind):
    case = (2, 7, 8, 4, 6, (3, 2), (2, 1), "same", 1, 2)
    x, w, b, kw = make(rng, case, data_format)
    kwa = dict(kw, algorithm=algorithm)
    gy = rng.standard_normal((x.shape[0],) + out_shape(x, w, kw))
    xv, wv, gyv = _views(x, rng, kind), _views(w, rng, kind), _views(gy, rng, kind)
    bv = np.repeat(b, 2)[::2] if kind != "negative" else b[::-1].copy()[::-1]
    assert_close(fastconv.conv2d(xv, wv, bv, **kwa), *ref_forward(x, w, b, kw), np.float64)
    assert_close(fastconv.conv2d_grad_input(gyv, wv, x.shape, **kwa), *ref_grad_input(gy, w, x.shape, kw),
                 np.float64)
    assert_close(fastconv.conv2d_grad_weight(gyv, xv, w.shape, **kwa), *ref_grad_weight(gy, x, w.shape, kw),
                 np.float64)
    assert_close(fastconv.conv2d_grad_bias(gyv, data_format=data_format), *ref_grad_bias(gy, data_format),
                 np.float64)


def test_flipped_channel_view(rng):
    # x[:, ::-1] from the brief: a negative stride on one axis only
    x, w, b, kw = make(rng, (2, 6, 7, 3, 4, (3, 3), 1, 1, 1, 1), "channels_last")
    xv = x[:, ::-1]
    assert_close(fastconv.conv2d(xv, w, b, **kw), *ref_forward(np.ascontiguousarray(xv), w, b, kw), np.float64)
    xv = x[..., ::-1]
    assert_close(fastconv.conv2d(xv, w, b, **kw), *ref_forward(np.ascontiguousarray(xv), w, b, kw), np.float64)


def expected_dtype(*dtypes):
    """Spec: float16 -> float32, integer/bool -> float64, then the wider of the two."""
    out = []
    for d in map(np.dtype, dtypes):
        if d.kind in "iub":
            out.append(np.dtype(np.float64))
        elif d == np.float16:
            out.append(np.dtype(np.float32))
        else:
            out.append(d)
    return max(out, key=lambda d: d.itemsize)


@pytest.mark.parametrize(
    "xdt, wdt",
    [
        (np.float16, np.float16),
        (np.float16, np.float32),
        (np.float32, np.float16),
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.int32, np.int32),
        (np.int64, np.float64),
        (np.uint8, np.int16),
        (np.int8, np.float32),
        (np.bool_, np.float64),
        (np.float16, np.float64),
    ],
    ids=lambda d: np.dtype(d).name,
)
@pytest.mark.parametrize("data_format", DF)
def test_dtype_promotion(rng, data_format, xdt, wdt):
    case = (2, 6, 5, 3, 4, (3, 3), 1, "same", 1, 1)
    N, H, W, C, K, (R, S) = case[:6]
    x_cf = rng.integers(0, 2, (N, C, H, W)) if xdt is np.bool_ else rng.integers(0, 5, (N, C, H, W))
    x = ref.from_channels_first(x_cf.astype(np.float64), data_format).astype(xdt)
    w = ref.weight_from_oihw(rng.integers(0, 4, (K, C, R, S)).astype(np.float64), data_format).astype(wdt)
    kw = dict(stride=1, padding="same", dilation=1, groups=1, data_format=data_format)
    want = expected_dtype(xdt, wdt)
    y = fastconv.conv2d(x, w, **kw)
    assert_close(y, *ref_forward(x, w, None, kw), want)
    gy = rng.integers(-2, 3, y.shape).astype(xdt if np.dtype(xdt).kind == "f" else np.int32)
    gx = fastconv.conv2d_grad_input(gy, w, x.shape, **kw)
    assert gx.dtype == expected_dtype(gy.dtype, wdt)
    assert_close(gx, *ref_grad_input(gy, w, x.shape, kw), gx.dtype)
    gw = fastconv.conv2d_grad_weight(gy, x, w.shape, **kw)
    assert gw.dtype == expected_dtype(gy.dtype, xdt)
    assert_close(gw, *ref_grad_weight(gy, x, w.shape, kw), gw.dtype)
    gb = fastconv.conv2d_grad_bias(gy, data_format=data_format)
    assert gb.dtype == expected_dtype(gy.dtype)
    assert_close(gb, *ref_grad_bias(gy, data_format), gb.dtype)


@pytest.mark.parametrize("bad", [np.complex128, object, "U3"])
def test_unsupported_dtype_raises(rng, bad):
    x = np.zeros((1, 5, 5, 2)).astype(bad)
    w = np.ones((3, 3, 2, 2))
    with pytest.raises(TypeError):
        fastconv.conv2d(x, w)
    with pytest.raises(TypeError):
        fastconv.conv2d(np.ones((1, 5, 5, 2)), w.astype(bad))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("data_format", DF)
def test_out_argument(rng, data_format, algorithm, dtype):
    x, w, b, kw = make(rng, CASES[6], data_format, dtype)
    shape = (x.shape[0],) + out_shape(x, w, kw)
    buf = np.full(shape, np.nan, dtype=dtype)  # garbage that must be overwritten, not accumulated into
    res = fastconv.conv2d(x, w, b, algorithm=algorithm, out=buf, **kw)
    assert res is buf
    assert_close(buf, *ref_forward(x, w, b, kw), dtype)
    res = fastconv.conv2d(x, w, None, algorithm=algorithm, out=buf, **kw)  # reuse the same buffer
    assert res is buf
    assert_close(buf, *ref_forward(x, w, None, kw), dtype)


def test_out_argument_rejected(rng):
    x, w, b, kw = make(rng, CASES[0], "channels_last", np.float32)
    shape = (x.shape[0],) + out_shape(x, w, kw)
    bad_bufs = [
        np.empty(shape[:-1] + (shape[-1] + 1,), np.float32),       # wrong shape
        np.empty(shape, np.float64),                               # wrong dtype
        np.empty(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2],  # not C-contiguous
        np.empty(shape, np.float32, order="F"),
        [[0.0]],                                                   # not an array
    ]
    ro = np.empty(shape, np.float32)
    ro.flags.writeable = False
    bad_bufs.append(ro)
    for buf in bad_bufs:
        with pytest.raises((ValueError, TypeError)):
            fastconv.conv2d(x, w, b, out=buf, **kw)
    # sharing memory with an input
    x2, w2, b2, kw2 = make(rng, (1, 4, 4, 2, 2, (1, 1), 1, "valid", 1, 1), "channels_last", np.float32)
    with pytest.raises(ValueError):
        fastconv.conv2d(x2, w2, b2, out=x2, **kw2)


# ----------------------------------------------------------------------------------------------------------------
# Direct PyTorch oracle (skips without torch)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [CASES[i] for i in (2, 7, 11, 12, 17, 18)], ids=case_id)
def test_vs_torch(torch, rng, case, data_format):
    x, w, b, kw = make(rng, case, data_format)
    xc, wc = ref.to_channels_first(x, data_format), ref.weight_to_oihw(w, data_format)
    (pt, pb), (pl, pr) = ref.resolve_padding(kw["padding"], xc.shape[2:], wc.shape[2:], kw["stride"],
                                             kw["dilation"])
    xt = torch.from_numpy(np.ascontiguousarray(xc)).requires_grad_(True)
    wt = torch.from_numpy(np.ascontiguousarray(wc)).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=kw["stride"],
                                    dilation=kw["dilation"], groups=kw["groups"])
    gy_cf = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(gy_cf))
    gy = ref.from_channels_first(gy_cf, data_format)
    tight = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fastconv.conv2d(x, w, b, **kw),
                               ref.from_channels_first(yt.detach().numpy(), data_format), **tight)
    np.testing.assert_allclose(fastconv.conv2d_grad_input(gy, w, x.shape, **kw),
                               ref.from_channels_first(xt.grad.numpy(), data_format), **tight)
    np.testing.assert_allclose(fastconv.conv2d_grad_weight(gy, x, w.shape, **kw),
                               ref.weight_from_oihw(wt.grad.numpy(), data_format), **tight)
    np.testing.assert_allclose(fastconv.conv2d_grad_bias(gy, data_format=data_format), bt.grad.numpy(), **tight)


# ----------------------------------------------------------------------------------------------------------------
# Random configurations (hypothesis)
# ----------------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    N=st.integers(1, 2), H=st.integers(1, 9), W=st.integers(1, 9),
    R=st.integers(1, 4), S=st.integers(1, 4),
    sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 2), dw=st.integers(1, 2),
    groups=st.sampled_from([1, 2, 3]), cg=st.integers(1, 3), kg=st.integers(1, 3),
    data_format=st.sampled_from(DF), algorithm=st.sampled_from(ALGOS),
    dtype=st.sampled_from(DTYPES),
)
def test_random_configs(data, N, H, W, R, S, sh, sw, dh, dw, groups, cg, kg, data_format, algorithm, dtype):
    padding = data.draw(st.one_of(
        st.sampled_from(["valid", "same"]), st.integers(0, 3), st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    pads = ref.resolve_padding(padding, (H, W), (R, S), (sh, sw), (dh, dw))
    if H + sum(pads[0]) < dh * (R - 1) + 1 or W + sum(pads[1]) < dw * (S - 1) + 1:
        return  # no output: an error case, not tested here
    rng = np.random.default_rng(0)
    case = (N, H, W, cg * groups, kg * groups, (R, S), (sh, sw), padding, (dh, dw), groups)
    x, w, b, kw = make(rng, case, data_format, dtype)
    kwa = dict(kw, algorithm=algorithm)
    y = fastconv.conv2d(x, w, b, **kwa)
    assert_close(y, *ref_forward(x, w, b, kw), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(fastconv.conv2d_grad_input(gy, w, x.shape, **kwa), *ref_grad_input(gy, w, x.shape, kw), dtype)
    assert_close(fastconv.conv2d_grad_weight(gy, x, w.shape, **kwa), *ref_grad_weight(gy, x, w.shape, kw), dtype)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, groups", [
    ((70, 66, 3), (7, 7), 2, 3, 1, 1),      # a 7x7 stride-2 RGB stem: bands of output rows, two rounds
    ((41, 40, 8), (3, 3), 1, 2, 2, 2),      # dilated, grouped
    ((40, 40, 8), (1, 1), 1, 0, 1, 1),      # pointwise: bands write their own rows
])
@pytest.mark.parametrize("data_format", DF)
def test_im2col_input_gradient_of_small_batches_in_bands(threads, rng, batch, shape, kernel, stride, padding,
                                                         dilation, groups, data_format):
    # Fewer than 4 images: each image's output rows are cut into bands summed in two parallel rounds (even,
    # odd); the same bits for any thread count, and the reference's values.
    h, w, c = shape
    x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
    weight = rng.standard_normal(kernel + (c // groups, 16)).astype(np.float32)
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(fastconv.conv2d(x, weight, **opts).shape).astype(np.float32)
    expected = ref_grad_input(gy.astype(np.float64), weight.astype(np.float64), x.shape, opts)
    shape_in, gy_in, w_in = x.shape, gy, weight
    if data_format == "channels_first":
        shape_in = (batch, c, h, w)
        gy_in, w_in = np.ascontiguousarray(gy.transpose(0, 3, 1, 2)), np.ascontiguousarray(weight.transpose(3, 2, 0, 1))
    results = []
    for n in (1, 2, 3):
        threads.set_num_threads(n)
        results.append(fastconv.conv2d_grad_input(gy_in, w_in, shape_in, data_format=data_format, algorithm="im2col",
                                                  **opts))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    got = results[0] if data_format == "channels_last" else results[0].transpose(0, 2, 3, 1)
    assert_close(got, *expected, np.float32)
