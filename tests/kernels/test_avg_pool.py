"""fastconv.avg_pool2d, global_avg_pool2d, global_max_pool2d and their gradients against tests/reference.py,
PyTorch (avg_pool2d, adaptive pools, amax), finite differences, thread counts, views and bad input."""
import itertools
import re

import numpy as np
import pytest

import fastconv
import reference as ref

DF = ref.DATA_FORMATS
DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}

# (N, H, W, C, pool_size, stride, padding, ceil_mode)
CASES = [
    (2, 8, 8, 3, 2, None, "valid", False),
    (2, 9, 7, 3, 2, None, "valid", False),                       # odd sizes, floor: uncovered last row/column
    (2, 9, 7, 3, 2, None, "valid", True),                        # ceil_mode: partial last window
    (1, 9, 9, 2, 3, 2, "valid", False),                          # overlapping 3x3 / 2
    (1, 10, 9, 2, 3, 2, 1, True),                                # overlapping + padding + ceil (beyond the pad)
    (2, 7, 8, 3, 3, 2, "same", False),                           # "same", totals (1, 1) and (0, 1)
    (2, 7, 8, 3, 2, None, "same", False),                        # "same", odd total in H
    (1, 8, 7, 2, (3, 2), (2, 1), ((1, 0), (0, 1)), False),       # asymmetric explicit padding
    (1, 8, 7, 2, (2, 3), (1, 2), ((0, 1), (2, 1)), True),
    (2, 6, 6, 4, 3, 1, 1, False),                                # stride 1, padding 1
    (1, 5, 5, 1, 5, None, "valid", False),                       # one window = the whole plane
    (1, 11, 10, 3, 3, 3, "same", True),
    (3, 12, 12, 8, 2, 2, 0, False),
    (1, 5, 5, 2, 2, 2, 1, True),                                 # ceil window dropped: it starts in padding
    (1, 7, 8, 2, 3, 3, "valid", True),                           # last window holds one real row
    (2, 6, 9, 2, 4, 1, ((3, 0), (1, 2)), False),                 # padding up to pool_size - 1
    (1, 1, 6, 3, (1, 3), (1, 2), "same", True),                  # H = 1
    (1, 9, 10, 2, 2, 3, 0, False),                               # stride > pool: cells no window holds
    (2, 6, 7, 70, 2, 1, "same", False),                          # many channels
]


def case_id(c):
    return "-".join(str(v) for v in c).replace(" ", "")


def options(case, data_format, count_include_pad):
    N, H, W, C, k, s, p, ceil_mode = case
    return dict(pool_size=k, stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                data_format=data_format)


def make_x(rng, case, data_format, dtype=np.float64):
    N, H, W, C = case[:4]
    return ref.from_channels_first(rng.standard_normal((N, C, H, W)), data_format).astype(dtype)


def fc_avg(x, case, data_format, cip):
    o = options(case, data_format, cip)
    return fastconv.avg_pool2d(x, o.pop("pool_size"), **o)


def fc_avg_grad(gy, shape, case, data_format, cip):
    return fastconv.avg_pool2d_grad(gy, shape, **options(case, data_format, cip))


def ref_avg(x, case, data_format, cip):
    N, H, W, C, k, s, p, ceil_mode = case
    return ref.avg_pool2d(x, k, s, p, ceil_mode, cip, data_format)


def ref_avg_grad(gy, shape, case, data_format, cip):
    N, H, W, C, k, s, p, ceil_mode = case
    return ref.avg_pool2d_grad(gy, shape, k, s, p, ceil_mode, cip, data_format)


def nchw_to(a, data_format):
    return ref.from_channels_first(np.asarray(a), data_format)


def shape_in(shape_cf, data_format):
    n, c, h, w = shape_cf
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)


# ----------------------------------------------------------------------------------------------------------------
# Average pooling against the NumPy reference
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cip", [False, True], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_avg_pool2d_vs_reference(rng, case, data_format, cip, dtype):
    x = make_x(rng, case, data_format, dtype)
    out = fc_avg(x, case, data_format, cip)
    exp = ref_avg(x, case, data_format, cip)
    assert out.dtype == np.dtype(dtype) and out.shape == exp.shape
    np.testing.assert_allclose(out, exp, **TOL[dtype])
    gy = rng.standard_normal(out.shape).astype(dtype)
    got = fc_avg_grad(gy, x.shape, case, data_format, cip)
    assert got.dtype == np.dtype(dtype) and got.shape == x.shape
    np.testing.assert_allclose(got, ref_avg_grad(gy, x.shape, case, data_format, cip), **TOL[dtype])


@pytest.mark.parametrize("data_format", DF)
def test_same_excludes_padding_by_hand(data_format):
    # Keras/TensorFlow "same": 2x2 / 2 on 3x3 pads one row and column at the bottom/right, left out of the mean
    x_cf = np.arange(9.0).reshape(1, 1, 3, 3)
    out = fastconv.avg_pool2d(nchw_to(x_cf, data_format), 2, padding="same", data_format=data_format)
    np.testing.assert_array_equal(ref.to_channels_first(out, data_format)[0, 0], [[2.0, 3.5], [6.5, 8.0]])
    inc = fastconv.avg_pool2d(nchw_to(x_cf, data_format), 2, padding="same", count_include_pad=True,
                              data_format=data_format)
    np.testing.assert_array_equal(ref.to_channels_first(inc, data_format)[0, 0], [[2.0, 1.75], [3.25, 2.0]])


@pytest.mark.parametrize("data_format", DF)
def test_ceil_mode_divisor_by_hand(data_format):
    # W = 6, pool 3, stride 2, padding 1, ceil_mode: 4 windows; the last starts at input column 5 and covers
    # column 5, one padding column and one column beyond the padding, which never counts.
    x_cf = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape(1, 1, 1, 6)
    kw = dict(stride=(1, 2), padding=((0, 0), (1, 1)), ceil_mode=True, data_format=data_format)
    exclude = fastconv.avg_pool2d(nchw_to(x_cf, data_format), (1, 3), **kw)
    include = fastconv.avg_pool2d(nchw_to(x_cf, data_format), (1, 3), count_include_pad=True, **kw)
    np.testing.assert_allclose(ref.to_channels_first(exclude, data_format).ravel(), [1.5, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(ref.to_channels_first(include, data_format).ravel(), [1.0, 3.0, 5.0, 3.0])


@pytest.mark.parametrize("data_format", DF)
def test_constant_input_averages_to_itself(data_format):
    # without the padding in the divisor every window of a constant image averages to the constant
    for case in CASES:
        N, H, W, C = case[:4]
        x = np.full(shape_in((N, C, H, W), data_format), 2.5)
        np.testing.assert_allclose(fc_avg(x, case, data_format, False), 2.5, rtol=1e-15)


def test_defaults():
    x = np.arange(2 * 5 * 6 * 3, dtype=np.float64).reshape(2, 5, 6, 3)
    out = fastconv.avg_pool2d(x)
    np.testing.assert_allclose(out, ref.avg_pool2d(x, 2, None, "valid", False, False, "channels_last"), rtol=1e-15)
    assert out.shape == (2, 2, 3, 3)
    g = fastconv.avg_pool2d_grad(np.ones_like(out), x.shape)
    assert g.shape == x.shape
    np.testing.assert_array_equal(g[:, 4], 0.0)  # row 4 is in no window
    np.testing.assert_array_equal(g[:, :4], 0.25)


# ----------------------------------------------------------------------------------------------------------------
# Average pooling against PyTorch, every option combination (torch: symmetric padding <= pool_size / 2)
# ----------------------------------------------------------------------------------------------------------------

TORCH_GRID = [(k, s, p, ceil_mode, cip)
              for k, s, p, ceil_mode, cip in itertools.product(
                  [(2, 2), (3, 3), (3, 2), (1, 3)], [None, 1, 2, (2, 3)], [(0, 0), (1, 1), (1, 0)],
                  [False, True], [False, True])
              if 2 * p[0] <= k[0] and 2 * p[1] <= k[1]]


def torch_avg(torch, x_cf, k, s, p, ceil_mode, cip, gy_cf=None):
    xt = torch.from_numpy(x_cf.copy()).requires_grad_(True)
    yt = torch.nn.functional.avg_pool2d(xt, k, s if s is not None else k, p, ceil_mode=ceil_mode,
                                        count_include_pad=cip)
    if gy_cf is None:
        return yt.detach().numpy(), None
    yt.backward(torch.from_numpy(gy_cf))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("k, s, p, ceil_mode, cip", TORCH_GRID, ids=lambda v: str(v).replace(" ", ""))
def test_avg_pool2d_vs_torch(torch, rng, data_format, k, s, p, ceil_mode, cip):
    x_cf = rng.standard_normal((2, 3, 9, 8))
    y_cf, _ = torch_avg(torch, x_cf, k, s, p, ceil_mode, cip)
    gy_cf = rng.standard_normal(y_cf.shape)
    for dtype in DTYPES:
        xd, gyd = x_cf.astype(dtype), gy_cf.astype(dtype)
        y_t, gx_t = torch_avg(torch, xd, k, s, p, ceil_mode, cip, gyd)
        kw = dict(stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=cip, data_format=data_format)
        out = fastconv.avg_pool2d(nchw_to(xd, data_format).astype(dtype), k, **kw)
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_allclose(out, nchw_to(y_t, data_format), **TOL[dtype])
        gx = fastconv.avg_pool2d_grad(nchw_to(gyd, data_format).astype(dtype), shape_in(x_cf.shape, data_format),
                                      pool_size=k, **kw)
        np.testing.assert_allclose(gx, nchw_to(gx_t, data_format), **TOL[dtype])


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("case", [c for c in CASES if not (isinstance(c[6], int) or c[6] == "valid")], ids=case_id)
def test_asymmetric_padding_vs_torch_sums(torch, rng, case, data_format, cip):
    # torch cannot pad asymmetrically: pad explicitly, pool window sums (divisor_override=1), and divide by the
    # pooled sums of a mask of the cells that count (TensorFlow's "same" rule without count_include_pad)
    N, H, W, C, k, s, p, ceil_mode = case
    F = torch.nn.functional
    k = ref.pair(k)
    s = ref.pair(s if s is not None else k)
    (pt, pb), (pl, pr) = ref.resolve_padding(p, (H, W), k, s, 1)
    x_cf = rng.standard_normal((N, C, H, W))
    pads = (pl, pr, pt, pb)
    sums = F.avg_pool2d(F.pad(torch.from_numpy(x_cf), pads), k, s, ceil_mode=ceil_mode, divisor_override=1)
    mask = F.pad(torch.ones((1, 1, H, W), dtype=torch.float64), pads, value=1.0 if cip else 0.0)
    counts = F.avg_pool2d(mask, k, s, ceil_mode=ceil_mode, divisor_override=1)
    expected = (sums / counts).numpy()
    out = fc_avg(nchw_to(x_cf, data_format), case, data_format, cip)
    np.testing.assert_allclose(out, nchw_to(expected, data_format), rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------------------------------------------
# Global pooling against the reference and PyTorch
# ----------------------------------------------------------------------------------------------------------------

# NCHW; planes shorter and longer than the 32 lanes of the NCHW maximum, channels in several blocks of 64, C = 1
GLOBAL_SHAPES = [(2, 3, 5, 6), (1, 70, 4, 3), (3, 130, 7, 7), (2, 4, 1, 1), (1, 2, 1, 9), (2, 5, 17, 3),
                 (1, 3, 19, 23), (2, 1, 5, 7), (1, 1, 16, 16)]


def global_ids(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("shape_cf", GLOBAL_SHAPES, ids=global_ids)
def test_global_pools_vs_reference(rng, shape_cf, data_format, dtype):
    x = nchw_to(rng.standard_normal(shape_cf), data_format).astype(dtype)
    n, c = shape_cf[:2]
    avg = fastconv.global_avg_pool2d(x, data_format=data_format)
    assert avg.shape == (n, c) and avg.dtype == np.dtype(dtype)
    np.testing.assert_allclose(avg, ref.global_avg_pool2d(x, data_format), **TOL[dtype])
    mx, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
    exp, exp_idx = ref.global_max_pool2d(x, data_format)
    assert mx.dtype == np.dtype(dtype) and idx.dtype == np.int64 and idx.shape == (n, c)
    np.testing.assert_array_equal(mx, exp.astype(dtype))  # a max is exact
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_array_equal(fastconv.global_max_pool2d(x, data_format=data_format), mx)

    gy = rng.standard_normal((n, c)).astype(dtype)
    g_avg = fastconv.global_avg_pool2d_grad(gy, x.shape, data_format=data_format)
    assert g_avg.shape == x.shape and g_avg.dtype == np.dtype(dtype)
    np.testing.assert_allclose(g_avg, ref.global_avg_pool2d_grad(gy, x.shape, data_format), **TOL[dtype])
    g_max = fastconv.global_max_pool2d_grad(gy, idx, x.shape, data_format=data_format)
    assert g_max.shape == x.shape and g_max.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(g_max, ref.global_max_pool2d_grad(gy, idx, x.shape, data_format))


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("shape_cf", GLOBAL_SHAPES, ids=global_ids)
def test_global_pools_vs_torch(torch, rng, shape_cf, data_format):
    F = torch.nn.functional
    x_cf = rng.standard_normal(shape_cf)
    gy = rng.standard_normal(shape_cf[:2])
    for dtype in DTYPES:
        xd, gyd = x_cf.astype(dtype), gy.astype(dtype)
        x = nchw_to(xd, data_format).astype(dtype)

        xt = torch.from_numpy(xd.copy()).requires_grad_(True)
        yt = F.adaptive_avg_pool2d(xt, 1)[:, :, 0, 0]
        yt.backward(torch.from_numpy(gyd))
        np.testing.assert_allclose(fastconv.global_avg_pool2d(x, data_format=data_format), yt.detach().numpy(),
                                   **TOL[dtype])
        np.testing.assert_allclose(fastconv.global_avg_pool2d_grad(gyd, x.shape, data_format=data_format),
                                   nchw_to(xt.grad.numpy(), data_format), **TOL[dtype])

        xt = torch.from_numpy(xd.copy()).requires_grad_(True)
        yt = torch.amax(xt, dim=(2, 3))
        yt.backward(torch.from_numpy(gyd))
        _, it = F.adaptive_max_pool2d(torch.from_numpy(xd), 1, return_indices=True)
        out, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
        np.testing.assert_array_equal(out, yt.detach().numpy())
        np.testing.assert_array_equal(idx, it.numpy()[:, :, 0, 0])
        np.testing.assert_array_equal(fastconv.global_max_pool2d_grad(gyd, idx, x.shape, data_format=data_format),
                                      nchw_to(xt.grad.numpy(), data_format))


@pytest.mark.parametrize("data_format", DF)
def test_global_max_ties_first_maximum_wins(rng, data_format):
    x_cf = rng.integers(0, 3, (2, 70, 9, 11)).astype(np.float64)
    x = nchw_to(x_cf, data_format)
    for xx in (x, np.zeros_like(x), np.full_like(x, -np.inf)):
        out, idx = fastconv.global_max_pool2d(xx, data_format=data_format, return_indices=True)
        exp, exp_idx = ref.global_max_pool2d(xx, data_format)
        np.testing.assert_array_equal(out, exp)
        np.testing.assert_array_equal(idx, exp_idx)
    for dtype in DTYPES:  # the float32 path tracks positions in int32
        out, idx = fastconv.global_max_pool2d(x.astype(dtype), data_format=data_format, return_indices=True)
        np.testing.assert_array_equal(idx, ref.global_max_pool2d(x, data_format)[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
def test_global_max_nan_propagates(rng, data_format, dtype):
    x_cf = rng.standard_normal((2, 67, 9, 8))
    x_cf[0, 3, 2, 1] = np.nan                         # one NaN
    x_cf[1, 66, 0, 0] = x_cf[1, 66, 3, 4] = np.nan    # two: the value is NaN and the index one of them
    x_cf[0, 7, 8, 7] = np.nan                         # in the tail after the lanes of the NCHW maximum
    x_cf[0, 8, ::3, ::2] = np.nan                     # NaN in many lanes
    x_cf[1, 5] = np.nan                               # a whole plane
    x = nchw_to(x_cf, data_format).astype(dtype)
    out, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x_cf).any(axis=(2, 3)))
    assert idx[0, 3] == 2 * 8 + 1 and idx[0, 7] == 8 * 8 + 7
    picked = np.take_along_axis(x_cf.reshape(2, 67, 72), idx[:, :, None], axis=2)[:, :, 0]
    np.testing.assert_array_equal(np.isnan(picked), np.isnan(out))
    np.testing.assert_array_equal(fastconv.global_max_pool2d(x, data_format=data_format), out)
    assert np.isnan(fastconv.global_avg_pool2d(x, data_format=data_format)[0, 3])


# ----------------------------------------------------------------------------------------------------------------
# Finite differences (float64)
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


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("case", [(1, 7, 7, 2, 3, 2, 1, True), (2, 5, 6, 1, 3, 2, "same", False),
                                  (1, 6, 5, 2, (2, 3), (1, 2), ((1, 0), (0, 2)), True)], ids=case_id)
def test_avg_pool2d_grad_finite_differences(rng, case, data_format, cip):
    x = make_x(rng, case, data_format)
    gy = rng.standard_normal(fc_avg(x, case, data_format, cip).shape)
    fd = numeric_grad(lambda a: np.vdot(gy, fc_avg(a, case, data_format, cip)), x)
    np.testing.assert_allclose(fc_avg_grad(gy, x.shape, case, data_format, cip), fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("data_format", DF)
def test_global_grads_finite_differences(rng, data_format):
    shape = shape_in((2, 3, 4, 5), data_format)
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1  # distinct, well-separated values
    gy = rng.standard_normal((2, 3))
    fd = numeric_grad(lambda a: np.vdot(gy, fastconv.global_avg_pool2d(a, data_format=data_format)), x)
    np.testing.assert_allclose(fastconv.global_avg_pool2d_grad(gy, shape, data_format=data_format), fd,
                               rtol=1e-7, atol=1e-8)
    _, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
    fd = numeric_grad(lambda a: np.vdot(gy, fastconv.global_max_pool2d(a, data_format=data_format)), x)
    np.testing.assert_allclose(fastconv.global_max_pool2d_grad(gy, idx, shape, data_format=data_format), fd,
                               rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# Threads, empty batches, views, dtypes
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(4, 32, 30, 16, 3, 2, 1, True), (3, 16, 17, 130, 2, None, "same", False)],
                         ids=case_id)
def test_thread_count_bitwise_identical(threads, rng, case, data_format):
    x = make_x(rng, case, data_format, np.float32)

    def run():
        out = fc_avg(x, case, data_format, True)
        gy = np.linspace(-1, 1, out.size, dtype=np.float32).reshape(out.shape)
        gavg = fastconv.global_avg_pool2d(x, data_format=data_format)
        gmax, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
        g2 = np.linspace(-1, 1, gmax.size, dtype=np.float32).reshape(gmax.shape)
        return (out, fc_avg_grad(gy, x.shape, case, data_format, True), fc_avg(x, case, data_format, False),
                gavg, gmax, idx, fastconv.global_avg_pool2d_grad(g2, x.shape, data_format=data_format),
                fastconv.global_max_pool2d_grad(g2, idx, x.shape, data_format=data_format))

    threads.set_num_threads(1)
    one = run()
    for n in (2, 3):
        threads.set_num_threads(n)
        for a, b in zip(one, run()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data_format", DF)
def test_empty_batch_and_channels(data_format):
    for shape_cf in [(0, 3, 7, 8), (2, 0, 7, 8)]:
        x = np.zeros(shape_in(shape_cf, data_format), np.float32)
        out = fastconv.avg_pool2d(x, 3, stride=2, padding="same", ceil_mode=True, data_format=data_format)
        OH, OW = ref.pool_output_hw((7, 8), 3, 2, "same", True)
        assert out.shape == shape_in(shape_cf[:2] + (OH, OW), data_format) and out.dtype == np.float32
        gx = fastconv.avg_pool2d_grad(out, x.shape, pool_size=3, stride=2, padding="same", ceil_mode=True,
                                      data_format=data_format)
        assert gx.shape == x.shape and gx.dtype == np.float32
        n, c = shape_cf[:2]
        for fn in (fastconv.global_avg_pool2d, fastconv.global_max_pool2d):
            assert fn(x, data_format=data_format).shape == (n, c)
        out, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
        assert idx.shape == (n, c) and idx.dtype == np.int64
        assert fastconv.global_max_pool2d_grad(out, idx, x.shape, data_format=data_format).shape == x.shape
        assert fastconv.global_avg_pool2d_grad(out, x.shape, data_format=data_format).shape == x.shape


def views(rng, x):
    """The same values as x in four non-contiguous layouts."""
    big = rng.standard_normal(tuple(2 * n for n in x.shape))
    big[::2, ::2, ::2, ::2] = x
    return {
        "fortran": np.asfortranarray(x),
        "negative": x[::-1, ::-1, ::-1, ::-1].copy()[::-1, ::-1, ::-1, ::-1],
        "sliced": big[::2, ::2, ::2, ::2],
        "transposed": np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
    }


@pytest.mark.parametrize("data_format", DF)
def test_non_contiguous_inputs(rng, data_format):
    case = (2, 9, 8, 3, 3, 2, 1, True)
    x = make_x(rng, case, data_format)
    out = fc_avg(x, case, data_format, True)
    gy = rng.standard_normal(out.shape)
    gx = fc_avg_grad(gy, x.shape, case, data_format, True)
    g2 = rng.standard_normal(x.shape[:1] + (3,))
    gmax, idx = fastconv.global_max_pool2d(x, data_format=data_format, return_indices=True)
    kw = dict(data_format=data_format)
    for kind, xv in views(rng, x).items():
        np.testing.assert_array_equal(xv, x)
        assert not xv.flags.c_contiguous, kind
        np.testing.assert_array_equal(fc_avg(xv, case, data_format, True), out)
        np.testing.assert_array_equal(fastconv.global_avg_pool2d(xv, **kw), fastconv.global_avg_pool2d(x, **kw))
        np.testing.assert_array_equal(fastconv.global_max_pool2d(xv, **kw), gmax)
    for kind, gyv in views(rng, gy).items():
        np.testing.assert_array_equal(fc_avg_grad(gyv, x.shape, case, data_format, True), gx)
    g2v, idxv = g2.T.copy().T, np.asfortranarray(idx)[::1]
    assert not g2v.flags.c_contiguous
    np.testing.assert_array_equal(fastconv.global_avg_pool2d_grad(g2v, x.shape, **kw),
                                  fastconv.global_avg_pool2d_grad(g2, x.shape, **kw))
    np.testing.assert_array_equal(fastconv.global_max_pool2d_grad(g2v, idxv, x.shape, **kw),
                                  fastconv.global_max_pool2d_grad(g2, idx, x.shape, **kw))
    # int32 and uint indices are accepted too
    np.testing.assert_array_equal(fastconv.global_max_pool2d_grad(g2, idx.astype(np.uint16), x.shape, **kw),
                                  fastconv.global_max_pool2d_grad(g2, idx, x.shape, **kw))


@pytest.mark.parametrize("dtype, want", [(np.float16, np.float32), (np.int32, np.float64), (np.uint8, np.float64),
                                         (np.bool_, np.float64)], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
def test_dtype_promotion(rng, data_format, dtype, want):
    case = (2, 7, 6, 3, 3, 2, "same", False)
    N, H, W, C = case[:4]
    hi = 2 if dtype is np.bool_ else 50
    x64 = nchw_to(rng.integers(0, hi, (N, C, H, W)).astype(np.float64), data_format)
    x = x64.astype(dtype)
    out = fc_avg(x, case, data_format, False)
    assert out.dtype == np.dtype(want)
    np.testing.assert_allclose(out, ref_avg(x64, case, data_format, False), rtol=1e-6)
    assert fastconv.global_avg_pool2d(x, data_format=data_format).dtype == np.dtype(want)
    assert fastconv.global_max_pool2d(x, data_format=data_format).dtype == np.dtype(want)
    gy = rng.integers(-3, 4, out.shape).astype(dtype if dtype is np.float16 else np.int32)
    gx = fc_avg_grad(gy, x.shape, case, data_format, False)
    assert gx.dtype == np.dtype(want if dtype is np.float16 else np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: the right exception, a message naming the argument and showing the value received
# ----------------------------------------------------------------------------------------------------------------

X = np.zeros((1, 6, 6, 3))
G_AVG = np.zeros((1, 3, 3, 3))
G2 = np.zeros((1, 3))
IDX = np.zeros((1, 3), np.int64)


def raises(exc, name, value):
    return pytest.raises(exc, match=r"(?s)(?=.*\b" + re.escape(name) + r"\b)(?=.*" + re.escape(value) + ")")


BAD_AVG = [
    (dict(x=np.zeros((6, 6, 3))), ValueError, "x", "(6, 6, 3)"),
    (dict(x=np.zeros((1, 6, 6, 3), np.complex64)), TypeError, "x", "complex64"),
    (dict(x=np.zeros((1, 1, 1, 3))), ValueError, "x", "(1, 1, 1, 3)"),
    (dict(pool_size=0), ValueError, "pool_size", "0"),
    (dict(pool_size=2.5), TypeError, "pool_size", "2.5"),
    (dict(stride=(2, 0)), ValueError, "stride", "(2, 0)"),
    (dict(padding="sme"), ValueError, "padding", "'sme'"),
    (dict(padding=2), ValueError, "padding", "2"),
    (dict(padding=-1), ValueError, "padding", "-1"),
    (dict(ceil_mode=1), TypeError, "ceil_mode", "1"),
    (dict(count_include_pad=1), TypeError, "count_include_pad", "1"),
    (dict(count_include_pad="yes"), TypeError, "count_include_pad", "'yes'"),
    (dict(count_include_pad=None), TypeError, "count_include_pad", "None"),
    (dict(data_format="NCHW"), ValueError, "data_format", "'NCHW'"),
    (dict(data_format=None), TypeError, "data_format", "None"),
]


@pytest.mark.parametrize("overrides, exc, name, value", BAD_AVG, ids=lambda v: str(v)[:30])
def test_avg_pool2d_bad_input(overrides, exc, name, value):
    kw = dict(x=X, pool_size=2)
    kw.update(overrides)
    with raises(exc, name, value):
        fastconv.avg_pool2d(kw.pop("x"), kw.pop("pool_size"), **kw)


BAD_AVG_GRAD = [
    (dict(grad_output=np.zeros((3, 3, 3))), ValueError, "grad_output", "(3, 3, 3)"),
    (dict(grad_output=np.zeros((1, 3, 3, 4))), ValueError, "grad_output", "(1, 3, 3, 4)"),
    (dict(grad_output=np.zeros((1, 3, 3, 3), object)), TypeError, "grad_output", "object"),
    (dict(input_shape=(6, 6, 3)), ValueError, "input_shape", "(6, 6, 3)"),
    (dict(input_shape=6), TypeError, "input_shape", "6"),
    (dict(input_shape=(1, 6.0, 6, 3)), TypeError, "input_shape", "(1, 6.0, 6, 3)"),
    (dict(input_shape=(1, -6, 6, 3)), ValueError, "input_shape", "(1, -6, 6, 3)"),
    (dict(input_shape=(1, 8, 8, 3)), ValueError, "grad_output", "(1, 8, 8, 3)"),
    (dict(input_shape=(1, 1, 1, 3)), ValueError, "input_shape", "(1, 1, 1, 3)"),
    (dict(stride=1), ValueError, "grad_output", "(1, 3, 3, 3)"),
    (dict(count_include_pad=0), TypeError, "count_include_pad", "0"),
    (dict(pool_size=(2, 2, 2)), ValueError, "pool_size", "(2, 2, 2)"),
    (dict(data_format="channels_middle"), ValueError, "data_format", "'channels_middle'"),
]


@pytest.mark.parametrize("overrides, exc, name, value", BAD_AVG_GRAD, ids=lambda v: str(v)[:30])
def test_avg_pool2d_grad_bad_input(overrides, exc, name, value):
    kw = dict(grad_output=G_AVG, input_shape=X.shape)
    kw.update(overrides)
    with raises(exc, name, value):
        fastconv.avg_pool2d_grad(kw.pop("grad_output"), kw.pop("input_shape"), **kw)


BAD_GLOBAL = [
    (dict(x=np.zeros((6, 6, 3))), ValueError, "x", "(6, 6, 3)"),
    (dict(x=np.zeros((1, 1, 6, 6, 3))), ValueError, "x", "(1, 1, 6, 6, 3)"),
    (dict(x=np.zeros((1, 0, 6, 3))), ValueError, "x", "(1, 0, 6, 3)"),
    (dict(x=np.zeros((1, 3, 6, 0)), data_format="channels_first"), ValueError, "x", "(1, 3, 6, 0)"),
    (dict(x=np.zeros((1, 6, 6, 3), "U1")), TypeError, "x", "<U1"),
    (dict(x="abc"), TypeError, "x", "<U3"),
    (dict(data_format="channels"), ValueError, "data_format", "'channels'"),
    (dict(data_format=1), TypeError, "data_format", "1"),
]


@pytest.mark.parametrize("fn", ["global_avg_pool2d", "global_max_pool2d"])
@pytest.mark.parametrize("overrides, exc, name, value", BAD_GLOBAL, ids=lambda v: str(v)[:30])
def test_global_pool_bad_input(fn, overrides, exc, name, value):
    kw = dict(x=X)
    kw.update(overrides)
    with raises(exc, name, value):
        getattr(fastconv, fn)(kw.pop("x"), **kw)


def test_global_max_pool2d_bad_return_indices():
    with raises(TypeError, "return_indices", "'yes'"):
        fastconv.global_max_pool2d(X, return_indices="yes")


BAD_GLOBAL_GRAD = [
    (dict(grad_output=np.zeros((1, 3, 1, 1))), ValueError, "grad_output", "(1, 3, 1, 1)"),
    (dict(grad_output=np.zeros((1, 4))), ValueError, "grad_output", "(1, 4)"),
    (dict(grad_output=np.zeros((2, 3))), ValueError, "grad_output", "(2, 3)"),
    (dict(grad_output=np.zeros((1, 3), np.complex128)), TypeError, "grad_output", "complex128"),
    (dict(input_shape=(1, 6, 6)), ValueError, "input_shape", "(1, 6, 6)"),
    (dict(input_shape=[1, 6, 6, None]), TypeError, "input_shape", "None"),
    (dict(input_shape=(1, 6, 0, 3)), ValueError, "input_shape", "(1, 6, 0, 3)"),
    (dict(input_shape=(1, 6, 6, 3), data_format="channels_first"), ValueError, "grad_output", "(1, 3)"),
    (dict(data_format="nhwc"), ValueError, "data_format", "'nhwc'"),
]
BAD_INDICES = [
    (dict(indices=np.zeros((1, 3), np.float64)), TypeError, "indices", "float64"),
    (dict(indices=np.zeros((1, 4), np.int64)), ValueError, "indices", "(1, 4)"),
    (dict(indices=np.zeros((3,), np.int64)), ValueError, "indices", "(3,)"),
    (dict(indices=np.array([[0, 36, 0]])), ValueError, "indices", "36"),
    (dict(indices=np.array([[0, -1, 0]])), ValueError, "indices", "-1"),
    (dict(indices=np.array([[0, 10 ** 12, 0]])), ValueError, "indices", str(10 ** 12)),
]


@pytest.mark.parametrize("overrides, exc, name, value", BAD_GLOBAL_GRAD, ids=lambda v: str(v)[:30])
def test_global_avg_pool2d_grad_bad_input(overrides, exc, name, value):
    kw = dict(grad_output=G2, input_shape=X.shape)
    kw.update(overrides)
    with raises(exc, name, value):
        fastconv.global_avg_pool2d_grad(kw.pop("grad_output"), kw.pop("input_shape"), **kw)


@pytest.mark.parametrize("overrides, exc, name, value", BAD_GLOBAL_GRAD + BAD_INDICES, ids=lambda v: str(v)[:30])
def test_global_max_pool2d_grad_bad_input(overrides, exc, name, value):
    kw = dict(grad_output=G2, indices=IDX, input_shape=X.shape)
    kw.update(overrides)
    with raises(exc, name, value):
        fastconv.global_max_pool2d_grad(kw.pop("grad_output"), kw.pop("indices"), kw.pop("input_shape"), **kw)


def test_base_calls_are_valid():
    assert fastconv.avg_pool2d(X).shape == (1, 3, 3, 3)
    assert fastconv.avg_pool2d(X, 2, padding=1, count_include_pad=True).shape == (1, 4, 4, 3)
    assert fastconv.avg_pool2d_grad(G_AVG, X.shape).shape == X.shape
    assert fastconv.global_avg_pool2d_grad(G2, X.shape).shape == X.shape
    assert fastconv.global_max_pool2d_grad(G2, np.array([[0, 35, 7]]), X.shape).shape == X.shape
    assert fastconv.global_max_pool2d_grad(G2, IDX, (1, 3, 6, 6), data_format="channels_first").shape == \
        (1, 3, 6, 6)


def test_functional_reexports():
    from fastconv import functional, functional_pooling

    for name in functional_pooling.__all__:
        assert getattr(functional, name) is getattr(functional_pooling, name) is getattr(fastconv, name)
        assert name in functional.__all__ and name in fastconv.__all__
