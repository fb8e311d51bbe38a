"""Proves tests/reference.py right: against PyTorch (float64) and against finite differences / adjoint identities.

Torch tests skip without torch; the finite-difference and adjoint tests need only NumPy.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as ref

DF = ref.DATA_FORMATS

# (N, H, W, C, K, (R, S), stride, padding, dilation, groups)
CONV_CASES = [
    (2, 7, 6, 3, 4, (3, 3), 1, "valid", 1, 1),
    (2, 5, 5, 4, 6, (1, 1), 1, "valid", 1, 1),
    (2, 9, 8, 3, 5, (3, 3), 2, "valid", 1, 1),
    (1, 10, 11, 2, 3, (3, 2), (2, 3), "valid", 1, 1),
    (2, 7, 7, 3, 4, (3, 3), 1, "same", 1, 1),
    (1, 6, 7, 2, 3, (4, 2), 1, "same", 1, 1),
    (2, 8, 9, 3, 4, (3, 3), 2, "same", 1, 1),
    (1, 10, 11, 2, 4, (3, 3), (2, 3), "same", 2, 1),
    (2, 6, 6, 3, 4, (3, 3), 1, 1, 1, 1),
    (1, 6, 7, 2, 3, (3, 3), 2, (2, 1), 1, 1),
    (2, 7, 6, 3, 4, (3, 3), 1, ((0, 2), (1, 0)), 1, 1),
    (1, 11, 10, 2, 3, (3, 2), (2, 1), ((1, 2), (2, 0)), (2, 3), 1),
    (2, 9, 9, 3, 4, (3, 3), 1, "valid", 2, 1),
    (2, 6, 7, 4, 6, (3, 3), 1, 1, 1, 2),
    (1, 8, 8, 8, 8, (3, 3), 2, "same", 1, 4),
    (2, 7, 7, 4, 4, (3, 3), 1, "same", 1, 4),
    (2, 7, 6, 3, 6, (3, 3), 1, 1, 1, 3),
    (1, 10, 9, 2, 6, (3, 3), 2, "same", 2, 2),
    (2, 5, 4, 3, 2, (5, 4), 1, "valid", 1, 1),
    (1, 10, 10, 3, 5, (1, 3), 3, "valid", 1, 1),
    (3, 5, 5, 5, 7, (2, 2), 1, "valid", 1, 1),
]


def case_id(c):
    N, H, W, C, K, RS, s, p, d, g = c
    return f"N{N}-{H}x{W}-C{C}K{K}-k{RS[0]}x{RS[1]}-s{s}-p{p}-d{d}-g{g}".replace(" ", "")


def make_conv(rng, case, data_format):
    N, H, W, C, K, (R, S), stride, padding, dilation, groups = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    b = rng.standard_normal(K)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, data_format=data_format)
    return (ref.from_channels_first(x, data_format), ref.weight_from_oihw(w, data_format), b, kw)


def torch_conv_parts(torch, x, w, kw):
    """Torch float64 tensors (channels_first, explicitly padded input) for reference inputs in any layout."""
    df = kw["data_format"]
    xc = ref.to_channels_first(x, df)
    wc = ref.weight_to_oihw(w, df)
    pads = ref.resolve_padding(kw["padding"], xc.shape[2:], wc.shape[2:], kw["stride"], kw["dilation"])
    xt = torch.from_numpy(np.ascontiguousarray(xc))
    wt = torch.from_numpy(np.ascontiguousarray(wc))
    return xt, wt, pads


def tpad(torch, t, pads, value=0.0):
    (pt, pb), (pl, pr) = pads
    return torch.nn.functional.pad(t, (pl, pr, pt, pb), value=value)


# ----------------------------------------------------------------------------------------------------------------
# Sizes and padding
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, k, s, d, expected",
    [
        (5, 3, 1, 1, (1, 1)),
        (5, 3, 2, 1, (1, 1)),   # out 3, total 2
        (6, 3, 2, 1, (0, 1)),   # out 3, total 1: odd total, extra after
        (4, 4, 1, 1, (1, 2)),   # even kernel
        (4, 2, 1, 1, (0, 1)),
        (10, 3, 2, 2, (1, 2)),  # k_eff 5, out 5, total 3
        (11, 3, 3, 2, (1, 2)),  # k_eff 5, out 4, total 3
        (7, 1, 3, 1, (0, 0)),
        (8, 2, 2, 1, (0, 0)),   # total max(6 + 2 - 8, 0)
        (9, 2, 4, 1, (0, 1)),   # out 3, total 1
        (10, 1, 4, 1, (0, 0)),  # total 8 + 1 - 10 = -1 clipped at 0
        (3, 5, 1, 1, (2, 2)),
    ],
)
def test_same_padding_values(n, k, s, d, expected):
    pads = ref.resolve_padding("same", (n, n), (k, k), s, d)
    assert pads == (expected, expected)
    (t, b), _ = pads
    assert ref.output_size(n, k, s, d, t, b) == -(-n // s)


def test_resolve_padding_forms():
    assert ref.resolve_padding("valid", (5, 6), (3, 3)) == ((0, 0), (0, 0))
    assert ref.resolve_padding(2, (5, 6), (3, 3)) == ((2, 2), (2, 2))
    assert ref.resolve_padding((1, 3), (5, 6), (3, 3)) == ((1, 1), (3, 3))
    assert ref.resolve_padding(((0, 2), (3, 1)), (5, 6), (3, 3)) == ((0, 2), (3, 1))
    assert ref.resolve_padding("same", (6, 7), (4, 3), (2, 3)) == ((1, 1), (1, 1))
    with pytest.raises(ValueError):
        ref.resolve_padding(-1, (5, 5), (3, 3))
    with pytest.raises(ValueError):
        ref.resolve_padding("sme", (5, 5), (3, 3))


@pytest.mark.parametrize(
    "n, k, s, before, after, ceil_mode, expected",
    [
        (7, 2, 2, 0, 0, False, 3),
        (7, 2, 2, 0, 0, True, 4),
        (5, 2, 2, 1, 1, True, 3),   # ceil gives 4, but window 3 would start in the after-padding
        (5, 2, 2, 1, 1, False, 3),
        (7, 3, 3, 0, 0, True, 3),
        (8, 3, 2, 1, 1, True, 5),   # ceil(7/2)+1 = 5, start 8 < 9 kept
        (6, 3, 2, 0, 0, True, 3),   # ceil(3/2)+1 = 3, start 4 < 6 kept
        (4, 4, 1, 0, 0, True, 1),
    ],
)
def test_output_size_values(n, k, s, before, after, ceil_mode, expected):
    assert ref.output_size(n, k, s, 1, before, after, ceil_mode) == expected


@pytest.mark.parametrize("n", range(3, 12))
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (2, 2, 1), (3, 2, 1), (3, 3, 1), (3, 2, 0), (4, 3, 2), (2, 1, 1)])
def test_pool_output_size_vs_torch(torch, n, k, s, p):
    x = torch.zeros(1, 1, n, n, dtype=torch.float64)
    for ceil_mode in (False, True):
        if n + 2 * p < k:
            continue
        y = torch.nn.functional.max_pool2d(x, k, s, p, ceil_mode=ceil_mode)
        assert ref.output_size(n, k, s, 1, p, p, ceil_mode) == y.shape[-1]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k, d", [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (3, 2), (2, 3), (4, 2)])
def test_same_stride1_matches_torch_same(torch, rng, k, d):
    # torch's padding="same" (stride 1) also puts the odd extra row/column after.
    x = rng.standard_normal((1, 2, 9, 8))
    w = rng.standard_normal((3, 2, k, k + 1))
    got = ref.conv2d(x, w, padding="same", dilation=d, data_format="channels_first")
    exp = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=d)
    np.testing.assert_allclose(got, exp.numpy(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Convolution vs torch
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_vs_torch(torch, rng, case, data_format):
    x, w, b, kw = make_conv(rng, case, data_format)
    got = ref.conv2d(x, w, b, **kw)
    xt, wt, pads = torch_conv_parts(torch, x, w, kw)
    yt = torch.nn.functional.conv2d(tpad(torch, xt, pads), wt, torch.from_numpy(b), stride=kw["stride"],
                                    dilation=kw["dilation"], groups=kw["groups"])
    exp = ref.from_channels_first(yt.numpy(), data_format)
    assert got.dtype == np.float64 and got.shape == exp.shape
    np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_grads_vs_torch(torch, rng, case, data_format):
    x, w, b, kw = make_conv(rng, case, data_format)
    y = ref.conv2d(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    xt, wt, pads = torch_conv_parts(torch, x, w, kw)
    xpt = tpad(torch, xt, pads)
    gyt = torch.from_numpy(ref.to_channels_first(gy, data_format).copy())
    conv_kw = dict(stride=kw["stride"], dilation=kw["dilation"], groups=kw["groups"])

    # grad of the padded input via torch.nn.grad, then cropped to the real input
    gxp = torch.nn.grad.conv2d_input(xpt.shape, wt, gyt, **conv_kw).numpy()
    (pt, pb), (pl, pr) = pads
    gx_exp = gxp[:, :, pt:pt + xt.shape[2], pl:pl + xt.shape[3]]
    gw_exp = torch.nn.grad.conv2d_weight(xpt, wt.shape, gyt, **conv_kw).numpy()
    gb_exp = gyt.sum(dim=(0, 2, 3)).numpy()

    gx = ref.conv2d_grad_input(gy, w, x.shape, **kw)
    gw = ref.conv2d_grad_weight(gy, x, w.shape, **kw)
    gb = ref.conv2d_grad_bias(gy, data_format)
    np.testing.assert_allclose(gx, ref.from_channels_first(gx_exp, data_format), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, ref.weight_from_oihw(gw_exp, data_format), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, gb_exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CONV_CASES[::4], ids=case_id)
def test_conv2d_grads_vs_torch_autograd(torch, rng, case, data_format):
    x, w, b, kw = make_conv(rng, case, data_format)
    gy = rng.standard_normal(ref.conv2d(x, w, b, **kw).shape)
    xt, wt, pads = torch_conv_parts(torch, x, w, kw)
    bt = torch.from_numpy(b)
    for t in (xt, wt, bt):
        t.requires_grad_(True)
    yt = torch.nn.functional.conv2d(tpad(torch, xt, pads), wt, bt, stride=kw["stride"], dilation=kw["dilation"],
                                    groups=kw["groups"])
    yt.backward(torch.from_numpy(ref.to_channels_first(gy, data_format).copy()))
    np.testing.assert_allclose(ref.conv2d_grad_input(gy, w, x.shape, **kw),
                               ref.from_channels_first(xt.grad.numpy(), data_format), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv2d_grad_weight(gy, x, w.shape, **kw),
                               ref.weight_from_oihw(wt.grad.numpy(), data_format), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv2d_grad_bias(gy, data_format), bt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    N=st.integers(1, 2), H=st.integers(1, 9), W=st.integers(1, 9),
    R=st.integers(1, 4), S=st.integers(1, 4),
    sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 3), dw=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 3]), cg=st.integers(1, 3), kg=st.integers(1, 3),
    data_format=st.sampled_from(DF),
)
def test_conv2d_random_configs_vs_torch(data, N, H, W, R, S, sh, sw, dh, dw, groups, cg, kg, data_format):
    torch = pytest.importorskip("torch")
    padding = data.draw(st.one_of(
        st.sampled_from(["valid", "same"]), st.integers(0, 3),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    pads = ref.resolve_padding(padding, (H, W), (R, S), (sh, sw), (dh, dw))
    if H + sum(pads[0]) < dh * (R - 1) + 1 or W + sum(pads[1]) < dw * (S - 1) + 1:
        return  # output would be empty
    rng = np.random.default_rng(0)
    case = (N, H, W, cg * groups, kg * groups, (R, S), (sh, sw), padding, (dh, dw), groups)
    x, w, b, kw = make_conv(rng, case, data_format)
    y = ref.conv2d(x, w, b, **kw)
    xt, wt, pads = torch_conv_parts(torch, x, w, kw)
    yt = torch.nn.functional.conv2d(tpad(torch, xt, pads), wt, torch.from_numpy(b), stride=(sh, sw),
                                    dilation=(dh, dw), groups=groups)
    np.testing.assert_allclose(y, ref.from_channels_first(yt.numpy(), data_format), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    gyt = torch.from_numpy(ref.to_channels_first(gy, data_format).copy())
    xpt = tpad(torch, xt, pads)
    gxp = torch.nn.grad.conv2d_input(xpt.shape, wt, gyt, (sh, sw), 0, (dh, dw), groups).numpy()
    gx_exp = gxp[:, :, pads[0][0]:pads[0][0] + H, pads[1][0]:pads[1][0] + W]
    np.testing.assert_allclose(ref.conv2d_grad_input(gy, w, x.shape, **kw),
                               ref.from_channels_first(gx_exp, data_format), rtol=1e-12, atol=1e-12)
    gw_exp = torch.nn.grad.conv2d_weight(xpt, wt.shape, gyt, (sh, sw), 0, (dh, dw), groups).numpy()
    np.testing.assert_allclose(ref.conv2d_grad_weight(gy, x, w.shape, **kw),
                               ref.weight_from_oihw(gw_exp, data_format), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Convolution: adjoint identities and finite differences (no torch needed)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_adjoint_identities(rng, case, data_format):
    # conv is bilinear in (x, w): <conv(x, w), gy> = <x, grad_input(gy, w)> = <w, grad_weight(gy, x)>
    x, w, b, kw = make_conv(rng, case, data_format)
    y0 = ref.conv2d(x, w, None, **kw)
    gy = rng.standard_normal(y0.shape)
    lhs = np.vdot(y0, gy)
    assert np.isclose(np.vdot(x, ref.conv2d_grad_input(gy, w, x.shape, **kw)), lhs, rtol=1e-11, atol=1e-11)
    assert np.isclose(np.vdot(w, ref.conv2d_grad_weight(gy, x, w.shape, **kw)), lhs, rtol=1e-11, atol=1e-11)
    yb = ref.conv2d(x, w, b, **kw)
    assert np.isclose(np.vdot(yb - y0, gy), np.vdot(b, ref.conv2d_grad_bias(gy, data_format)), rtol=1e-11)


def numeric_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar f at every element of a (float64)."""
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


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_conv2d_grads_finite_differences(rng, case, data_format):
    x, w, b, kw = make_conv(rng, case, data_format)
    gy = rng.standard_normal(ref.conv2d(x, w, b, **kw).shape)
    loss_x = lambda a: np.vdot(gy, ref.conv2d(a, w, b, **kw))  # noqa: E731
    loss_w = lambda a: np.vdot(gy, ref.conv2d(x, a, b, **kw))  # noqa: E731
    loss_b = lambda a: np.vdot(gy, ref.conv2d(x, w, a, **kw))  # noqa: E731
    np.testing.assert_allclose(ref.conv2d_grad_input(gy, w, x.shape, **kw), numeric_grad(loss_x, x),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref.conv2d_grad_weight(gy, x, w.shape, **kw), numeric_grad(loss_w, w),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref.conv2d_grad_bias(gy, data_format), numeric_grad(loss_b, b), rtol=1e-6, atol=1e-7)


def test_layouts_agree(rng):
    case = (2, 7, 6, 4, 6, (3, 2), (2, 1), "same", (1, 2), 2)
    x, w, b, kw = make_conv(rng, case, "channels_first")
    y_cf = ref.conv2d(x, w, b, **kw)
    kw_cl = dict(kw, data_format="channels_last")
    y_cl = ref.conv2d(ref.from_channels_first(x, "channels_last"), ref.weight_from_oihw(w, "channels_last"), b, **kw_cl)
    np.testing.assert_array_equal(y_cl, ref.from_channels_first(y_cf, "channels_last"))


# ----------------------------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------------------------

# (N, H, W, C, pool_size, stride, padding, ceil_mode); symmetric padding <= pool/2 so torch takes it directly
POOL_CASES_TORCH = [
    (2, 8, 8, 3, 2, None, 0, False),
    (2, 9, 7, 3, 2, None, 0, False),
    (2, 9, 7, 3, 2, None, 0, True),
    (1, 9, 9, 2, 3, 2, 0, False),
    (1, 10, 9, 2, 3, 2, 1, True),
    (1, 10, 9, 2, 3, 2, 1, False),
    (2, 6, 6, 4, 3, 1, 1, False),
    (1, 5, 5, 1, 5, None, 0, False),
    (1, 5, 5, 2, 2, 2, 1, True),
    (1, 7, 8, 2, 3, 3, 0, True),
    (1, 8, 7, 2, (3, 2), (2, 1), (1, 1), True),
    (1, 8, 11, 2, (2, 4), (1, 3), (1, 2), True),
    (3, 12, 12, 8, 2, 2, 0, False),
]

# explicit / asymmetric / "same" padding, not ceil_mode: torch sees an input padded with -inf
POOL_CASES_PADDED = [
    (2, 7, 8, 3, 3, 2, "same", False),
    (2, 7, 8, 3, 2, None, "same", False),
    (1, 8, 7, 2, (3, 2), (2, 1), ((1, 0), (0, 1)), False),
    (1, 8, 7, 2, (2, 3), (1, 2), ((0, 1), (2, 1)), False),
    (1, 11, 10, 3, 3, 3, "same", False),
    (2, 6, 9, 2, 4, 1, ((3, 0), (1, 2)), False),
]


def pool_id(c):
    return "-".join(str(v) for v in c).replace(" ", "")


def torch_pool(torch, x_cf, pool_size, stride, pads, ceil_mode, symmetric):
    """Torch max_pool2d -> (out, indices into the unpadded (H, W) plane)."""
    F = torch.nn.functional
    xt = torch.from_numpy(np.ascontiguousarray(x_cf))
    k = ref.pair(pool_size)
    s = ref.pair(stride if stride is not None else k)
    H, W = x_cf.shape[2:]
    if symmetric:
        p = (pads[0][0], pads[1][0])
        out, idx = F.max_pool2d(xt, k, s, p, ceil_mode=ceil_mode, return_indices=True)
        return out.numpy(), idx.numpy()
    assert not ceil_mode
    (pt, pb), (pl, pr) = pads
    out, idx = F.max_pool2d(tpad(torch, xt, pads, -np.inf), k, s, 0, return_indices=True)
    idx = idx.numpy()
    Wp = W + pl + pr
    hp, wp = idx // Wp, idx % Wp
    assert (hp >= pt).all() and (hp < pt + H).all() and (wp >= pl).all() and (wp < pl + W).all()
    return out.numpy(), (hp - pt) * W + (wp - pl)


def run_pool_vs_torch(torch, rng, case, data_format, symmetric, x_cf=None):
    N, H, W, C, k, s, p, ceil_mode = case
    if x_cf is None:
        x_cf = rng.standard_normal((N, C, H, W))
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = ref.max_pool2d(x, k, s, p, ceil_mode, data_format)
    pads = ref.resolve_padding(p, (H, W), ref.pair(k), s if s is not None else k, 1)
    t_out, t_idx = torch_pool(torch, x_cf, k, s, pads, ceil_mode, symmetric)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(out, ref.from_channels_first(t_out, data_format))
    np.testing.assert_array_equal(idx, ref.from_channels_first(t_idx, data_format))
    return x, out, idx


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", POOL_CASES_TORCH, ids=pool_id)
def test_max_pool2d_vs_torch(torch, rng, case, data_format):
    run_pool_vs_torch(torch, rng, case, data_format, symmetric=True)


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", POOL_CASES_PADDED, ids=pool_id)
def test_max_pool2d_padded_vs_torch(torch, rng, case, data_format):
    run_pool_vs_torch(torch, rng, case, data_format, symmetric=False)


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", POOL_CASES_TORCH[:6] + POOL_CASES_PADDED[:2], ids=pool_id)
def test_max_pool2d_ties_vs_torch(torch, rng, case, data_format):
    # few distinct values -> many ties; torch's CPU kernel keeps the first maximum, like the spec
    N, H, W, C = case[:4]
    x_cf = rng.integers(0, 3, size=(N, C, H, W)).astype(np.float64)
    run_pool_vs_torch(torch, rng, case, data_format, symmetric=case in POOL_CASES_TORCH, x_cf=x_cf)


@pytest.mark.parametrize("data_format", DF)
def test_max_pool2d_single_nan_vs_torch(torch, rng, data_format):
    # one NaN per non-overlapping window at most (torch keeps the last NaN, the spec doesn't say which)
    x_cf = rng.standard_normal((2, 3, 8, 8))
    x_cf[0, 0, 1, 1] = np.nan
    x_cf[1, 2, 4, 7] = np.nan
    x_cf[0, 1, 6, 2] = np.nan
    _, out, idx = run_pool_vs_torch(torch, rng, (2, 8, 8, 3, 2, None, 0, False), data_format, True, x_cf=x_cf)
    assert np.isnan(out).sum() == 3


def test_max_pool2d_rules_by_hand():
    x = np.array([[1.0, 5.0, 5.0, 0.0],
                  [5.0, 2.0, -1.0, np.nan],
                  [-np.inf, -np.inf, 3.0, 3.0],
                  [-np.inf, -np.inf, 3.0, np.nan]])[None, None]
    out, idx = ref.max_pool2d(x, 2, None, "valid", False, "channels_first")
    np.testing.assert_array_equal(out[0, 0], [[5.0, np.nan], [-np.inf, np.nan]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 7], [8, 15]])  # first 5 wins; NaN wins; first -inf; first NaN
    # padded cells never win, even against -inf inputs
    xi = np.full((1, 1, 3, 3), -np.inf)
    out, idx = ref.max_pool2d(xi, 2, 2, 1, False, "channels_first")
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])
    out, idx = ref.max_pool2d(xi, 2, 2, ((0, 1), (0, 1)), True, "channels_first")
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [6, 8]])


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", POOL_CASES_TORCH + POOL_CASES_PADDED, ids=pool_id)
def test_max_pool2d_grad_vs_torch_autograd(torch, rng, case, data_format):
    N, H, W, C, k, s, p, ceil_mode = case
    x_cf = rng.standard_normal((N, C, H, W))
    x = ref.from_channels_first(x_cf, data_format)
    out, idx = ref.max_pool2d(x, k, s, p, ceil_mode, data_format)
    gy = rng.standard_normal(out.shape)
    got = ref.max_pool2d_grad(gy, idx, x.shape, data_format)

    pads = ref.resolve_padding(p, (H, W), ref.pair(k), s if s is not None else k, 1)
    xt = torch.from_numpy(x_cf.copy()).requires_grad_(True)
    kk = ref.pair(k)
    ss = ref.pair(s if s is not None else k)
    if case in POOL_CASES_TORCH:
        yt = torch.nn.functional.max_pool2d(xt, kk, ss, (pads[0][0], pads[1][0]), ceil_mode=ceil_mode)
    else:
        yt = torch.nn.functional.max_pool2d(tpad(torch, xt, pads, -np.inf), kk, ss, 0)
    yt.backward(torch.from_numpy(ref.to_channels_first(gy, data_format).copy()))
    np.testing.assert_allclose(got, ref.from_channels_first(xt.grad.numpy(), data_format), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(1, 7, 7, 2, 3, 2, 1, True), (2, 5, 6, 1, 3, 2, "same", False),
                                  (1, 6, 5, 2, (2, 3), (1, 2), ((1, 0), (0, 2)), False)], ids=pool_id)
def test_max_pool2d_grad_finite_differences(rng, case, data_format):
    N, H, W, C, k, s, p, ceil_mode = case
    # well-separated distinct values: the argmax does not move under a 1e-6 step
    x = rng.permutation(N * H * W * C).reshape(N, H, W, C).astype(np.float64) * 0.1
    x = ref.from_channels_first(x.transpose(0, 3, 1, 2), data_format)
    out, idx = ref.max_pool2d(x, k, s, p, ceil_mode, data_format)
    gy = rng.standard_normal(out.shape)
    fd = numeric_grad(lambda a: np.vdot(gy, ref.max_pool2d(a, k, s, p, ceil_mode, data_format)[0]), x)
    np.testing.assert_allclose(ref.max_pool2d_grad(gy, idx, x.shape, data_format), fd, rtol=1e-7, atol=1e-8)
