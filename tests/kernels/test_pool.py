"""fastconv.max_pool2d / max_pool2d_grad against tests/reference.py (and PyTorch where available)."""

import numpy as np
import pytest

import fastconv
import reference as ref

DF = ref.DATA_FORMATS
DTYPES = (np.float32, np.float64)

# (N, H, W, C, pool_size, stride, padding, ceil_mode)
CASES = [
    (2, 8, 8, 3, 2, None, "valid", False),
    (2, 9, 7, 3, 2, None, "valid", False),                       # odd sizes, floor
    (2, 9, 7, 3, 2, None, "valid", True),                        # ceil_mode: partial last window
    (1, 9, 9, 2, 3, 2, "valid", False),                          # overlapping 3x3 / 2
    (1, 10, 9, 2, 3, 2, 1, True),                                # overlapping + padding + ceil
    (2, 7, 8, 3, 3, 2, "same", False),                           # "same", totals (1, 1) and (0, 1)
    (2, 7, 8, 3, 2, None, "same", False),                        # "same", odd total in H
    (1, 8, 7, 2, (3, 2), (2, 1), ((1, 0), (0, 1)), False),
    (1, 8, 7, 2, (2, 3), (1, 2), ((0, 1), (2, 1)), True),
    (2, 6, 6, 4, 3, 1, 1, False),                                # stride 1, padding 1
    (1, 5, 5, 1, 5, None, "valid", False),                       # global pooling
    (1, 11, 10, 3, 3, 3, "same", True),
    (3, 12, 12, 8, 2, 2, 0, False),
    (1, 5, 5, 2, 2, 2, 1, True),                                 # ceil window dropped: it starts in padding
    (1, 7, 8, 2, 3, 3, "valid", True),                           # last window holds one real row
    (2, 6, 9, 2, 4, 1, ((3, 0), (1, 2)), False),                 # padding up to pool_size - 1
    (1, 1, 6, 3, (1, 3), (1, 2), "same", True),                  # H = 1
]


def case_id(c):
    return "-".join(str(v) for v in c).replace(" ", "")


def kwargs(case, data_format):
    N, H, W, C, k, s, p, ceil_mode = case
    return dict(stride=s, padding=p, ceil_mode=ceil_mode, data_format=data_format)


def make_x(rng, case, data_format, dtype=np.float64):
    N, H, W, C = case[:4]
    return ref.from_channels_first(rng.standard_normal((N, C, H, W)), data_format).astype(dtype)


def ref_pool(x, case, data_format):
    N, H, W, C, k, s, p, ceil_mode = case
    return ref.max_pool2d(x, k, s, p, ceil_mode, data_format)


def fc_pool(x, case, data_format, **extra):
    return fastconv.max_pool2d(x, case[4], return_indices=True, **kwargs(case, data_format), **extra)


def fc_pool_grad(gy, idx, shape, case, data_format):
    return fastconv.max_pool2d_grad(gy, idx, shape, pool_size=case[4], **kwargs(case, data_format))


def check_forward(x, case, data_format, dtype):
    out, idx = fc_pool(x, case, data_format)
    exp, exp_idx = ref_pool(x, case, data_format)
    assert out.dtype == np.dtype(dtype) and out.shape == exp.shape
    assert idx.dtype == np.int64 and idx.shape == exp.shape
    np.testing.assert_array_equal(out, exp.astype(dtype))  # a max is exact
    np.testing.assert_array_equal(idx, exp_idx)
    return out, idx


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_pool2d(rng, case, data_format, dtype):
    x = make_x(rng, case, data_format, dtype)
    out, idx = check_forward(x, case, data_format, dtype)
    plain = fastconv.max_pool2d(x, case[4], **kwargs(case, data_format))
    assert isinstance(plain, np.ndarray)
    np.testing.assert_array_equal(plain, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_pool2d_grad(rng, case, data_format, dtype):
    x = make_x(rng, case, data_format, dtype)
    out, idx = fc_pool(x, case, data_format)
    gy = rng.standard_normal(out.shape).astype(dtype)
    got = fc_pool_grad(gy, idx, x.shape, case, data_format)
    _, exp_idx = ref_pool(x, case, data_format)
    exp = ref.max_pool2d_grad(gy, exp_idx, x.shape, data_format)
    assert got.dtype == np.dtype(dtype) and got.shape == x.shape
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, exp, rtol=tol, atol=tol * max(1.0, np.abs(exp).max()))


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("k, s, p, ceil_mode", [(3, 2, 0, False), (3, 2, 1, True), (3, 2, "same", False),
                                                (3, 1, 1, False), (4, 2, ((1, 2), (2, 1)), False)])
def test_overlapping_windows_backward(rng, data_format, k, s, p, ceil_mode):
    # overlapping windows share winners: the gradient of a shared cell is the sum of all its windows' grads
    case = (2, 9, 10, 3, k, s, p, ceil_mode)
    x_cf = rng.standard_normal((2, 3, 9, 10))
    x_cf[:, :, 4, 4] = 10.0  # cells that win every window covering them; one of the two sits where windows
    x_cf[:, :, 5, 5] = 9.0   # overlap whatever the padding parity
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = check_forward(x, case, data_format, np.float64)
    gy = rng.standard_normal(out.shape)
    got = fc_pool_grad(gy, idx, x.shape, case, data_format)
    exp = ref.max_pool2d_grad(gy, idx, x.shape, data_format)
    np.testing.assert_allclose(got, exp, rtol=1e-14, atol=1e-14)
    idx_cf = ref.to_channels_first(idx, data_format).astype(np.int64)
    shared = (idx_cf == 4 * 10 + 4).sum(axis=(2, 3)) + (idx_cf == 5 * 10 + 5).sum(axis=(2, 3))
    assert (shared > 2).all()  # the overlap really happens in every plane
    # gradient of a sum of the outputs: each input cell gets the number of windows it wins
    ones = fc_pool_grad(np.ones_like(out), idx, x.shape, case, data_format)
    counts = ref.to_channels_first(ones, data_format)
    expected = np.zeros((2, 3, 90))
    for n in range(2):
        for c in range(3):
            np.add.at(expected[n, c], idx_cf[n, c].ravel(), 1.0)
    np.testing.assert_array_equal(counts.reshape(2, 3, 90), expected)


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
@pytest.mark.parametrize("case", [(1, 7, 7, 2, 3, 2, 1, True), (2, 5, 6, 1, 3, 2, "same", False),
                                  (1, 6, 5, 2, (2, 3), (1, 2), ((1, 0), (0, 2)), False)], ids=case_id)
def test_max_pool2d_grad_finite_differences(rng, case, data_format):
    N, H, W, C = case[:4]
    x_cf = rng.permutation(N * C * H * W).reshape(N, C, H, W) * 0.1  # distinct, well-separated values
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = fc_pool(x, case, data_format)
    gy = rng.standard_normal(out.shape)
    fd = numeric_grad(lambda a: np.vdot(gy, fc_pool(a, case, data_format)[0]), x)
    np.testing.assert_allclose(fc_pool_grad(gy, idx, x.shape, case, data_format), fd, rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# Ties, NaN, -inf and padding
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ties_first_maximum_wins(rng, case, data_format):
    N, H, W, C = case[:4]
    x = ref.from_channels_first(rng.integers(0, 3, (N, C, H, W)).astype(np.float64), data_format)
    check_forward(x, case, data_format, np.float64)
    check_forward(np.zeros_like(x), case, data_format, np.float64)  # everything tied


@pytest.mark.parametrize("data_format", DF)
def test_ties_by_hand(data_format):
    x_cf = np.array([[1.0, 5.0, 5.0, 0.0],
                     [5.0, 2.0, 7.0, 7.0],
                     [3.0, 3.0, 1.0, 1.0],
                     [3.0, 3.0, 1.0, 1.0]])[None, None]
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = fastconv.max_pool2d(x, 2, data_format=data_format, return_indices=True)
    np.testing.assert_array_equal(ref.to_channels_first(out, data_format)[0, 0], [[5.0, 7.0], [3.0, 1.0]])
    np.testing.assert_array_equal(ref.to_channels_first(idx, data_format)[0, 0], [[1, 6], [8, 10]])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
def test_nan_propagates(rng, data_format, dtype):
    # exactly one NaN in some non-overlapping windows: value NaN and index the NaN's cell, as in PyTorch
    x_cf = rng.standard_normal((2, 3, 8, 8))
    nan_cells = [(0, 0, 1, 1), (1, 2, 4, 7), (0, 1, 6, 2), (1, 0, 0, 0), (1, 1, 7, 7)]
    for cell in nan_cells:
        x_cf[cell] = np.nan
    x = ref.from_channels_first(x_cf, data_format).astype(dtype)
    out, idx = check_forward(x, (2, 8, 8, 3, 2, None, "valid", False), data_format, dtype)
    out_cf, idx_cf = ref.to_channels_first(out, data_format), ref.to_channels_first(idx, data_format)
    assert np.isnan(out_cf).sum() == len(nan_cells)
    for n, c, h, w in nan_cells:
        assert np.isnan(out_cf[n, c, h // 2, w // 2])
        assert idx_cf[n, c, h // 2, w // 2] == h * 8 + w


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(2, 9, 9, 3, 3, 2, 1, True), (1, 8, 7, 2, 3, 1, "same", False)], ids=case_id)
def test_many_nans_overlapping(rng, case, data_format):
    # several NaNs per window: the output is NaN wherever a window holds a NaN, and the index points at a NaN
    N, H, W, C = case[:4]
    x_cf = rng.standard_normal((N, C, H, W))
    x_cf[rng.random(x_cf.shape) < 0.15] = np.nan
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = fc_pool(x, case, data_format)
    exp, exp_idx = ref_pool(x, case, data_format)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exp))
    np.testing.assert_array_equal(out, exp)  # NaN == NaN for assert_array_equal
    out_cf, idx_cf = ref.to_channels_first(out, data_format), ref.to_channels_first(idx, data_format)
    picked = np.take_along_axis(x_cf.reshape(N, C, H * W), idx_cf.reshape(N, C, -1).astype(np.int64), axis=2)
    np.testing.assert_array_equal(picked.reshape(out_cf.shape), out_cf)
    # where no NaN is in the window, the index is exactly the reference's
    ok = ~np.isnan(exp)
    np.testing.assert_array_equal(idx[ok], exp_idx[ok])


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(1, 3, 3, 2, 2, 2, 1, False), (1, 3, 3, 2, 2, 2, ((0, 1), (0, 1)), True),
                                  (1, 5, 4, 1, 3, 2, "same", True)], ids=case_id)
def test_padding_never_wins_against_minus_inf(case, data_format):
    N, H, W, C = case[:4]
    x = np.full((N, H, W, C) if data_format == "channels_last" else (N, C, H, W), -np.inf)
    out, idx = check_forward(x, case, data_format, np.float64)
    assert np.isneginf(out).all()


@pytest.mark.parametrize("data_format", DF)
def test_negative_values_with_padding(rng, data_format):
    # all inputs negative: zero padding would win; -infinity padding must not
    case = (2, 7, 6, 3, 3, 2, "same", True)
    x = -np.abs(make_x(rng, case, data_format)) - 1.0
    out, idx = check_forward(x, case, data_format, np.float64)
    assert (out < 0).all()


# ----------------------------------------------------------------------------------------------------------------
# Threads, empty batch, memory layouts, dtypes
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(4, 32, 30, 16, 3, 2, 1, True), (8, 16, 16, 8, 2, None, "valid", False)],
                         ids=case_id)
def test_thread_count_bitwise_identical(threads, rng, case, data_format):
    x = make_x(rng, case, data_format, np.float32)

    def run():
        out, idx = fc_pool(x, case, data_format)
        gy = np.linspace(-1, 1, out.size, dtype=np.float32).reshape(out.shape)
        return out, idx, fc_pool_grad(gy, idx, x.shape, case, data_format)

    threads.set_num_threads(1)
    one = run()
    for n in (2, 3):
        threads.set_num_threads(n)
        for a, c in zip(one, run()):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("data_format", DF)
def test_empty_batch(data_format):
    case = (0, 7, 8, 3, 3, 2, "same", True)
    x = np.zeros((0, 7, 8, 3) if data_format == "channels_last" else (0, 3, 7, 8), np.float32)
    out, idx = fc_pool(x, case, data_format)
    OH, OW = ref.pool_output_hw((7, 8), 3, 2, "same", True)
    shape = (0, OH, OW, 3) if data_format == "channels_last" else (0, 3, OH, OW)
    assert out.shape == shape and out.dtype == np.float32
    assert idx.shape == shape and idx.dtype == np.int64
    gx = fc_pool_grad(np.zeros(shape, np.float32), idx, x.shape, case, data_format)
    assert gx.shape == x.shape and gx.dtype == np.float32


@pytest.mark.parametrize("kind", ["fortran", "negative", "sliced", "transposed"])
@pytest.mark.parametrize("data_format", DF)
def test_non_contiguous_inputs(rng, data_format, kind):
    case = (2, 9, 8, 3, 3, 2, 1, True)
    x = make_x(rng, case, data_format)
    if kind == "fortran":
        xv = np.asfortranarray(x)
    elif kind == "negative":
        xv = x[::-1, ::-1, ::-1, ::-1].copy()[::-1, ::-1, ::-1, ::-1]
    elif kind == "sliced":
        big = rng.standard_normal(tuple(2 * n for n in x.shape))
        big[::2, ::2, ::2, ::2] = x
        xv = big[::2, ::2, ::2, ::2]
    elif kind == "transposed":
        xv = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        raise ValueError(kind)
    np.testing.assert_array_equal(xv, x)
    out, idx = check_forward(xv, case, data_format, np.float64)
    gy = rng.standard_normal(out.shape)
    big = np.zeros(tuple(2 * n for n in gy.shape))
    big[::2, ::2, ::2, ::2] = gy
    gyv = big[::2, ::2, ::2, ::2]
    idxv = np.asfortranarray(idx)
    got = fc_pool_grad(gyv, idxv, x.shape, case, data_format)
    np.testing.assert_allclose(got, ref.max_pool2d_grad(gy, idx, x.shape, data_format), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("data_format", DF)
def test_flipped_axis_view(rng, data_format):
    case = (2, 9, 8, 3, 3, 2, 1, True)
    base = make_x(rng, case, data_format)
    xv = base[:, ::-1]
    assert xv.strides[1] < 0
    out, idx = fc_pool(xv, case, data_format)
    exp, exp_idx = ref_pool(np.ascontiguousarray(xv), case, data_format)
    np.testing.assert_array_equal(out, exp)
    np.testing.assert_array_equal(idx, exp_idx)


@pytest.mark.parametrize("dtype, want", [(np.float16, np.float32), (np.int32, np.float64), (np.uint8, np.float64),
                                         (np.int64, np.float64), (np.bool_, np.float64)],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
def test_dtype_promotion(rng, data_format, dtype, want):
    case = (2, 7, 6, 3, 3, 2, "same", False)
    N, H, W, C = case[:4]
    hi = 2 if dtype is np.bool_ else 50
    x = ref.from_channels_first(rng.integers(0, hi, (N, C, H, W)).astype(np.float64), data_format).astype(dtype)
    out, idx = check_forward(x, case, data_format, want)
    gy = rng.integers(-3, 4, out.shape).astype(dtype if dtype is np.float16 else np.int32)
    gx = fc_pool_grad(gy, idx, x.shape, case, data_format)
    assert gx.dtype == np.dtype(want if dtype is np.float16 else np.float64)
    np.testing.assert_allclose(gx, ref.max_pool2d_grad(gy, idx, x.shape, data_format), rtol=1e-6)


def test_unsupported_dtype_raises():
    with pytest.raises(TypeError):
        fastconv.max_pool2d(np.zeros((1, 4, 4, 1), np.complex64))


def test_defaults():
    # pool_size 2, stride = pool_size, "valid", channels_last
    x = np.arange(2 * 5 * 6 * 3, dtype=np.float64).reshape(2, 5, 6, 3)
    out = fastconv.max_pool2d(x)
    exp, _ = ref.max_pool2d(x, 2, None, "valid", False, "channels_last")
    np.testing.assert_array_equal(out, exp)
    assert out.shape == (2, 2, 3, 3)


# ----------------------------------------------------------------------------------------------------------------
# Direct PyTorch oracle (skips without torch)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [c for c in CASES if isinstance(c[6], int) or c[6] == "valid"], ids=case_id)
def test_vs_torch(torch, rng, case, data_format):
    N, H, W, C, k, s, p, ceil_mode = case
    x_cf = rng.standard_normal((N, C, H, W))
    x = ref.from_channels_first(x_cf, data_format)
    pp = 0 if p == "valid" else p
    kk = ref.pair(k)
    if pp * 2 > min(kk):
        pytest.skip("torch requires padding <= pool_size / 2")
    xt = torch.from_numpy(x_cf.copy()).requires_grad_(True)
    yt, it = torch.nn.functional.max_pool2d(xt, kk, s if s is not None else kk, pp, ceil_mode=ceil_mode,
                                           return_indices=True)
    gy_cf = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(gy_cf))
    out, idx = fc_pool(x, case, data_format)
    np.testing.assert_array_equal(out, ref.from_channels_first(yt.detach().numpy(), data_format))
    np.testing.assert_array_equal(idx, ref.from_channels_first(it.numpy(), data_format))
    gx = fc_pool_grad(ref.from_channels_first(gy_cf, data_format), idx, x.shape, case, data_format)
    np.testing.assert_allclose(gx, ref.from_channels_first(xt.grad.numpy(), data_format), rtol=1e-14, atol=1e-14)
