"""Numerics: NaN and infinity propagate as in PyTorch's CPU kernels, and float32 stays within a stated error bound
of the float64 reference on long reductions (docs/bad_input.md, "Numerics").

Non-finite values, against PyTorch (the ``torch`` fixture; skipped without it):

- hand-written cases, one per rule the documentation states (max-pooling keeps a NaN and points its index and
  its gradient at the last NaN of the window, infinities are ordinary values, average pools and convolutions
  propagate, ``0 * inf`` is NaN, padded zeros included);
- random small problems with NaN, +inf and -inf dropped into x, the weight and grad_output, both layouts,
  float32 and float64. Pools and their gradients: NaN, +inf and -inf exactly where PyTorch has them (and the
  same indices). Convolutions (conv2d and both gradients with algorithm "auto" and "im2col", and the depthwise
  functions): exactly the non-finite cells of the zero-padded definition (the float64 reference run on the
  non-finite inputs: every product of the padded input, ``0 * inf = NaN``), which are PyTorch's for float64;
  PyTorch's float32 kernels skip some products with padded zeros, so there fastconv must be non-finite wherever
  PyTorch is. The finite cells are held to _fuzz_support's error bound.

float32 on long reductions (sums of n = C*R*S up to 4608 products for conv2d and its input gradient, N*Ho*Wo =
4608 for the weight and bias gradients, H*W = 4608 for global and whole-image average pooling): every output y
satisfies ``|y32 - y64| <= 2 * sqrt(n) * eps32 * sum(|x| * |w|)`` against the float64 reference computed from the
same (float32) inputs, for random-sign and same-sign (worst case) data, every algorithm and both layouts.
"""
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import reference  # tests/ is on sys.path (tests/conftest.py)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fuzz"))
from _fuzz_support import assert_close, fuzz_settings  # noqa: E402  (tests/fuzz: the shared error bound)

NAN, INF = float("nan"), float("inf")
EPS32 = float(np.finfo(np.float32).eps)
NONFINITE_EXAMPLES = 60


def _kind(a):
    """0 finite, 1 +inf, 2 -inf, 3 NaN, element by element."""
    a = np.asarray(a, np.float64)
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [3, 1, 2], 0)


def assert_same_nonfinite(got, want, what):
    """NaN, +inf and -inf exactly where ``want`` (PyTorch's result) has them."""
    got_kind, want_kind = _kind(got), _kind(want)
    if not np.array_equal(got_kind, want_kind):
        i = tuple(int(v) for v in np.argwhere(got_kind != want_kind)[0])
        raise AssertionError(f"{what}: at {i} fastconv gives {np.asarray(got)[i]!r}, PyTorch {np.asarray(want)[i]!r} "
                             f"({int((got_kind != want_kind).sum())} cells differ)")


def _t(torch, a, grad=False):
    return torch.tensor(np.ascontiguousarray(a), requires_grad=grad)


def _nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------- max pooling, by hand

X_NAN = np.array([[1.0, NAN, 3.0, 2.0],
                  [NAN, 0.0, 5.0, NAN],
                  [7.0, 8.0, -INF, INF],
                  [1.0, 2.0, 3.0, 4.0]]).reshape(1, 1, 4, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_max_pool_keeps_nan_and_points_at_the_last_one(torch, dtype, data_format):
    """A window with a NaN pools to NaN; with several NaNs the index (and so the gradient) goes to the last one in
    row-major order, as in PyTorch; +inf wins like any larger number; -inf is an ordinary value."""
    x = X_NAN.astype(dtype)
    tx = _t(torch, x, grad=True)
    ty, ti = torch.nn.functional.max_pool2d(tx, 2, stride=1, return_indices=True)
    g = np.arange(1.0, 10.0, dtype=dtype).reshape(1, 1, 3, 3)
    ty.backward(_t(torch, g))
    cf = data_format == "channels_first"
    out, idx = fastconv.max_pool2d(x if cf else _nhwc(x), 2, stride=1, return_indices=True, data_format=data_format)
    grad = fastconv.max_pool2d_grad(g if cf else _nhwc(g), idx, x.shape if cf else _nhwc(x).shape, pool_size=2,
                                    stride=1, data_format=data_format)
    out, idx, grad = (a if cf else _nchw(a) for a in (out, idx, grad))
    assert_same_nonfinite(out, ty.detach().numpy(), "max_pool2d")
    np.testing.assert_array_equal(idx, ti.numpy())
    assert idx[0, 0, 0, 0] == 4  # the window's NaNs are at (0, 1) and (1, 0): the later one, flat index 4
    np.testing.assert_array_equal(grad, tx.grad.numpy())
    np.testing.assert_array_equal(out[0, 0, 2], np.array([8.0, 8.0, INF], dtype))  # -inf loses, +inf wins


def test_max_pool_of_minus_infinity_and_padding(torch):
    """A window of -inf pools to -inf and points at its first real cell: padding never wins, not even against a
    real -inf (PyTorch's indices)."""
    x = np.full((1, 1, 2, 2), -INF)
    out, idx = fastconv.max_pool2d(x, 2, stride=1, padding=1, return_indices=True, data_format="channels_first")
    t_out, t_idx = torch.nn.functional.max_pool2d(_t(torch, x), 2, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_global_max_pool_keeps_nan(torch, data_format):
    x = X_NAN.astype(np.float32)
    tx = _t(torch, x, grad=True)
    ty, ti = torch.nn.functional.adaptive_max_pool2d(tx, 1, return_indices=True)
    ty.backward(_t(torch, np.full((1, 1, 1, 1), 3.0, np.float32)))
    cf = data_format == "channels_first"
    out, idx = fastconv.global_max_pool2d(x if cf else _nhwc(x), data_format=data_format, return_indices=True)
    assert np.isnan(out[0, 0]) and idx[0, 0] == ti.numpy().ravel()[0] == 7  # the last NaN, (1, 3)
    grad = fastconv.global_max_pool2d_grad(np.full((1, 1), 3.0, np.float32), idx, x.shape if cf else _nhwc(x).shape,
                                           data_format=data_format)
    np.testing.assert_array_equal(grad if cf else _nchw(grad), tx.grad.numpy())


# ---------------------------------------------------------------------------------------------- sums, by hand


def test_average_pools_propagate(torch):
    """NaN, +inf and +inf with -inf (NaN) in a window propagate through avg_pool2d and global_avg_pool2d, and
    through their gradients when grad_output holds them; a float32 sum that overflows is inf, as in PyTorch."""
    F = torch.nn.functional
    x = np.array([[INF, -INF, 1.0, 2.0], [1.0, 2.0, NAN, 0.0], [INF, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    x = x.reshape(1, 1, 4, 4)
    assert_same_nonfinite(fastconv.avg_pool2d(x, 2, data_format="channels_first"), F.avg_pool2d(_t(torch, x), 2),
                          "avg_pool2d")
    out = fastconv.avg_pool2d(x, 2, data_format="channels_first")
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 0, 1]) and out[0, 0, 1, 0] == INF
    assert out[0, 0, 1, 1] == 1.0
    assert np.isnan(fastconv.global_avg_pool2d(x, data_format="channels_first")[0, 0])
    g = np.array([[INF, 1.0], [NAN, -INF]]).reshape(1, 1, 2, 2)
    tx = _t(torch, np.zeros((1, 1, 4, 4)), grad=True)
    F.avg_pool2d(tx, 2).backward(_t(torch, g))
    assert_same_nonfinite(fastconv.avg_pool2d_grad(g, (1, 1, 4, 4), data_format="channels_first"),
                          tx.grad.numpy(), "avg_pool2d_grad")
    big = np.full((1, 2, 2, 1), 3e38, np.float32)  # the sum overflows float32 before the division
    assert fastconv.avg_pool2d(big, 2)[0, 0, 0, 0] == INF == float(F.avg_pool2d(_t(torch, _nchw(big)), 2))
    assert fastconv.global_avg_pool2d(big)[0, 0] == INF


@pytest.mark.parametrize("algorithm", ["auto", "im2col"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_conv_zero_times_infinity_is_nan(torch, algorithm, data_format):
    """conv2d computes every product of the zero-padded definition, as PyTorch does: an infinite input meeting a
    zero weight gives NaN, and so does an infinite weight meeting a padded (zero) cell; +inf and -inf in one sum
    give NaN; the gradients follow the same rule."""
    F = torch.nn.functional
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1], x[0, 0, 2, 2] = INF, -INF
    w = np.ones((1, 1, 3, 3))
    w[0, 0, 0, 0] = 0.0
    w_inf = np.ones((1, 1, 3, 3))
    w_inf[0, 0, 0, 0] = INF
    cf = data_format == "channels_first"
    to = (lambda a: a) if cf else _nhwc
    back = (lambda a: a) if cf else _nchw
    wt = (lambda a: a) if cf else (lambda a: np.ascontiguousarray(a.transpose(2, 3, 1, 0)))
    for xx, ww in ((x, w), (np.arange(16.0).reshape(1, 1, 4, 4), w_inf)):
        tx, tw = _t(torch, xx, grad=True), _t(torch, ww, grad=True)
        ty = F.conv2d(tx, tw, padding=1)
        g = np.ones(ty.shape)
        g[0, 0, 0, 3] = INF
        ty.backward(_t(torch, g))
        got = fastconv.conv2d(to(xx), wt(ww), padding=1, data_format=data_format, algorithm=algorithm)
        assert_same_nonfinite(back(got), ty.detach().numpy(), "conv2d")
        gx = fastconv.conv2d_grad_input(to(g), wt(ww), to(xx).shape, padding=1, data_format=data_format,
                                        algorithm=algorithm)
        assert_same_nonfinite(back(gx), tx.grad.numpy(), "conv2d_grad_input")
        gw = fastconv.conv2d_grad_weight(to(g), to(xx), wt(ww).shape, padding=1, data_format=data_format,
                                         algorithm=algorithm)
        assert_same_nonfinite(gw if cf else gw.transpose(3, 2, 0, 1), tw.grad.numpy(), "conv2d_grad_weight")
    # the infinite weight on a padded cell: PyTorch's 0 * inf
    assert np.isnan(back(fastconv.conv2d(to(np.ones((1, 1, 4, 4))), wt(w_inf), padding=1, data_format=data_format,
                                         algorithm=algorithm))[0, 0, 0, 0])


def test_explicit_direct_skips_padded_products():
    """Documented difference: algorithm="direct" (only when asked for by name) does not multiply padded cells, so
    an infinite weight on a padded tap gives inf where PyTorch (and "auto") give NaN."""
    w = np.ones((3, 3, 1, 1))
    w[0, 0, 0, 0] = INF
    x = np.ones((1, 4, 4, 1))
    direct = fastconv.conv2d(x, w, padding=1, algorithm="direct")[0, :, :, 0]
    assert direct[0].tolist() == [4.0, 6.0, 6.0, 4.0] and direct[:, 0].tolist() == [4.0, 6.0, 6.0, 4.0]
    auto = fastconv.conv2d(x, w, padding=1)[0, :, :, 0]
    assert np.isnan(auto[0]).all() and np.isnan(auto[:, 0]).all()  # PyTorch's 0 * inf on the padded tap
    assert (direct[1:, 1:] == INF).all() and (auto[1:, 1:] == INF).all()


def test_finite_inputs_keep_their_algorithm():
    """The non-finite check changes nothing for finite inputs. It counts NaNs and infinities exactly in
    contiguous float arrays (in parallel; the packed weights of the direct kernels carry the count of their own
    pass), and elsewhere sums (a finite array whose sum overflows then only takes the exact im2col path)."""
    from fastconv import _layout, _planning, functional

    from fastconv._problem import conv_problem

    problem = conv_problem((1, 5, 5, 8), (3, 3, 8, 8), stride=1, padding="same", dilation=1, groups=1,
                           channels_last=True)
    chosen = _planning.choose_forward(problem, "auto")
    assert functional._settle_algorithm(chosen, "auto", problem, [np.ones(9)]) == chosen
    assert functional._settle_algorithm(chosen, "auto", problem, [np.array([1.0, NAN])]) == "im2col"
    assert functional._settle_algorithm(chosen, "direct", problem, [np.array([1.0, NAN])]) == chosen
    for dtype in (np.float32, np.float64):
        huge = np.full(40000, np.finfo(dtype).max, dtype)
        assert functional._finite(huge)  # counted, not summed
        for bad in (NAN, INF, -INF):
            for where in (0, 16383, 16384, 39999):  # block edges of the parallel count
                hit = huge.copy()
                hit[where] = bad
                assert not functional._finite(hit), (dtype, bad, where)
    assert not functional._finite(np.full(8, 3e38, np.float32)[::2])  # strided: summed, overflow counts
    assert functional._finite(np.full(8, 5e37, np.float32)[::2])
    packed = _layout.pack_direct_weights(np.ones((3, 3, 8, 8)), 1, 8)
    assert functional._settle_algorithm(chosen, "auto", problem, [packed]) == chosen
    not_finite = _layout.PackedWeights(packed.values, False)
    assert functional._settle_algorithm(chosen, "auto", problem, [not_finite]) == "im2col"


# ---------------------------------------------------------------------------------------------- random non-finites


def _inject(rng, a, count):
    a = np.array(a, copy=True)
    flat = a.reshape(-1)
    for _ in range(count):
        flat[rng.integers(flat.size)] = rng.choice([NAN, INF, -INF])
    return a


def _sanitized(a):
    """Non-finite values replaced by 0: the reference then gives the exact value of every cell whose sum had no
    non-finite term (the cells that stay finite)."""
    return np.where(np.isfinite(a), a, 0.0)


def assert_nonfinite_superset(got, torch_out, what):
    """Non-finite wherever PyTorch is (PyTorch's float32 kernels, oneDNN's and the depthwise ones, skip some
    products with padded zeros: they may give a number, or inf, where the definition gives NaN)."""
    missing = np.isfinite(np.asarray(got, np.float64)) & ~np.isfinite(np.asarray(torch_out, np.float64))
    assert not missing.any(), f"{what}: finite where PyTorch is not, at {np.argwhere(missing)[0].tolist()}"


def _check(got, ref_raw, torch_out, exact_torch, ref_fn, mag_fn, terms, dtype, what):
    """The non-finite pattern of the zero-padded definition (the float64 reference run on the non-finite
    inputs), PyTorch's pattern (or a superset of it, see above), and the finite cells within the error bound of
    the reference run on the inputs with their non-finite values zeroed (the cells that stay finite had no
    non-finite term)."""
    assert_same_nonfinite(got, ref_raw, f"{what} (reference)")
    if exact_torch:
        assert_same_nonfinite(got, torch_out, f"{what} (PyTorch)")
    else:
        assert_nonfinite_superset(got, torch_out, f"{what} (PyTorch)")
    finite = np.isfinite(np.asarray(ref_raw, np.float64))
    want, magnitude = ref_fn(), mag_fn()
    assert_close(np.where(finite, got, 0).astype(dtype), np.where(finite, want, 0), np.where(finite, magnitude, 0),
                 terms, dtype, what)


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, "depthwise"]))
    c = draw(st.integers(1, 6))
    if groups == "depthwise":
        groups, cg, k = c, 1, c * draw(st.integers(1, 2))
    else:
        c = groups * max(1, c // groups)
        cg, k = c // groups, groups * draw(st.integers(1, 3))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, (r - 1) * dilation + 1 - 2 * pad[0]), 6))
    w = draw(st.integers(max(1, (s - 1) * dilation + 1 - 2 * pad[1]), 6))
    return dict(n=draw(st.integers(1, 2)), c=c, k=k, cg=cg, groups=groups, r=r, s=s, h=h, w=w, stride=stride,
                dilation=dilation, pad=pad, dtype=draw(st.sampled_from([np.float32, np.float64])),
                counts=[draw(st.integers(0, 3)) for _ in range(3)], seed=draw(st.integers(0, 2 ** 32 - 1)))


def _conv_setup(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = _inject(rng, rng.uniform(-1, 1, (case["n"], case["c"], case["h"], case["w"])), case["counts"][0])
    wt = _inject(rng, rng.uniform(-1, 1, (case["k"], case["cg"], case["r"], case["s"])), case["counts"][1])
    return x.astype(dtype), wt.astype(dtype), rng


def test_conv_nonfinite_like_torch(torch):
    @fuzz_settings(NONFINITE_EXAMPLES)
    @given(case=conv_cases())
    def check(case):
        _conv_nonfinite_case(torch, case)

    check()


def _conv_nonfinite_case(torch, case):
    F = torch.nn.functional
    x, w, rng = _conv_setup(case)
    dtype, groups = case["dtype"], case["groups"]
    opts = dict(stride=case["stride"], padding=case["pad"], dilation=case["dilation"], groups=groups)
    tx, tw = _t(torch, x, grad=True), _t(torch, w, grad=True)
    ty = F.conv2d(tx, tw, **opts)
    g = _inject(rng, rng.uniform(-1, 1, ty.shape), case["counts"][2]).astype(dtype)
    ty.backward(_t(torch, g))
    torch_out = dict(y=ty.detach().numpy(), gx=tx.grad.numpy(), gw=tw.grad.numpy())
    exact_torch = dtype == np.float64  # (PyTorch's float32 kernels skip some padded products: a superset then)
    ref_opts = dict(stride=case["stride"], padding=case["pad"], dilation=case["dilation"], groups=groups,
                    data_format="channels_first")
    sx, sw, sg = _sanitized(x), _sanitized(w), _sanitized(g)
    with np.errstate(invalid="ignore"):
        ref_raw = dict(y=reference.conv2d(x, w, **ref_opts), gx=reference.conv2d_grad_input(g, w, x.shape, **ref_opts),
                       gw=reference.conv2d_grad_weight(g, x, w.shape, **ref_opts))
    checks = dict(
        y=(lambda: reference.conv2d(sx, sw, **ref_opts), lambda: reference.conv2d(np.abs(sx), np.abs(sw), **ref_opts),
           case["cg"] * case["r"] * case["s"]),
        gx=(lambda: reference.conv2d_grad_input(sg, sw, x.shape, **ref_opts),
            lambda: reference.conv2d_grad_input(np.abs(sg), np.abs(sw), x.shape, **ref_opts),
            case["k"] * case["r"] * case["s"]),
        gw=(lambda: reference.conv2d_grad_weight(sg, sx, w.shape, **ref_opts),
            lambda: reference.conv2d_grad_weight(np.abs(sg), np.abs(sx), w.shape, **ref_opts), g[:, 0].size),
    )

    def verify(op, got, what):
        ref_fn, mag_fn, terms = checks[op]
        _check(got, ref_raw[op], torch_out[op], exact_torch, ref_fn, mag_fn, terms, dtype, f"{what} {case}")

    for fmt in ("channels_first", "channels_last"):
        cf = fmt == "channels_first"
        to = (lambda a: a) if cf else _nhwc
        back = (lambda a: a) if cf else _nchw
        wl = w if cf else np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        for algorithm in ("auto", "im2col"):
            what = f"{algorithm} {fmt}"
            verify("y", back(fastconv.conv2d(to(x), wl, data_format=fmt, algorithm=algorithm, **opts)),
                   f"conv2d {what}")
            verify("gx", back(fastconv.conv2d_grad_input(to(g), wl, to(x).shape, data_format=fmt, algorithm=algorithm,
                                                         **opts)), f"conv2d_grad_input {what}")
            gw = fastconv.conv2d_grad_weight(to(g), to(x), wl.shape, data_format=fmt, algorithm=algorithm, **opts)
            verify("gw", gw if cf else gw.transpose(3, 2, 0, 1), f"conv2d_grad_weight {what}")
        if groups == case["c"]:  # the depthwise functions: weight (C*M, 1, R, S) or (R, S, C, M)
            dw_opts = dict(stride=case["stride"], padding=case["pad"], dilation=case["dilation"], data_format=fmt)
            m = case["k"] // case["c"]
            wl = w if cf else np.ascontiguousarray(w.reshape(case["c"], m, case["r"], case["s"]).transpose(2, 3, 0, 1))
            verify("y", back(fastconv.depthwise_conv2d(to(x), wl, **dw_opts)), f"depthwise_conv2d {fmt}")
            verify("gx", back(fastconv.depthwise_conv2d_grad_input(to(g), wl, to(x).shape, **dw_opts)),
                   f"depthwise_conv2d_grad_input {fmt}")
            gw = fastconv.depthwise_conv2d_grad_weight(to(g), to(x), wl.shape, **dw_opts)
            verify("gw", gw if cf else gw.transpose(2, 3, 0, 1).reshape(w.shape), f"depthwise_conv2d_grad_weight {fmt}")


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))  # PyTorch's limit
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), k=k, pad=pad,
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                h=draw(st.integers(max(1, k[0] - 2 * pad[0]), 7)), w=draw(st.integers(max(1, k[1] - 2 * pad[1]), 7)),
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()), ties=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                counts=[draw(st.integers(0, 4)) for _ in range(3)], seed=draw(st.integers(0, 2 ** 32 - 1)))


def test_pools_nonfinite_like_torch(torch):
    @fuzz_settings(NONFINITE_EXAMPLES)
    @given(case=pool_cases())
    def check(case):
        _pools_nonfinite_case(torch, case)

    check()


def _pools_nonfinite_case(torch, case):
    F = torch.nn.functional
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    shape = (case["n"], case["c"], case["h"], case["w"])
    base = rng.integers(-2, 3, shape).astype(np.float64) if case["ties"] else rng.uniform(-1, 1, shape)
    x = _inject(rng, base, case["counts"][0]).astype(dtype)
    t_opts = dict(kernel_size=case["k"], stride=case["stride"], padding=case["pad"], ceil_mode=case["ceil_mode"])
    tx_max, tx_avg, tx_gmax, tx_gavg = (_t(torch, x, grad=True) for _ in range(4))
    ty_max, t_idx = F.max_pool2d(tx_max, return_indices=True, **t_opts)
    ty_avg = F.avg_pool2d(tx_avg, count_include_pad=case["count_include_pad"], **t_opts)
    ty_gmax, t_gidx = F.adaptive_max_pool2d(tx_gmax, 1, return_indices=True)
    ty_gavg = F.adaptive_avg_pool2d(tx_gavg, 1)
    g = _inject(rng, rng.uniform(-1, 1, ty_max.shape), case["counts"][1]).astype(dtype)
    gg = _inject(rng, rng.uniform(-1, 1, ty_gmax.shape), case["counts"][2]).astype(dtype)
    for ty, grad in ((ty_max, g), (ty_avg, g), (ty_gmax, gg), (ty_gavg, gg)):
        ty.backward(_t(torch, grad))
    opts = dict(pool_size=case["k"], stride=case["stride"], padding=case["pad"], ceil_mode=case["ceil_mode"])
    for fmt in ("channels_first", "channels_last"):
        cf = fmt == "channels_first"
        to = (lambda a: a) if cf else _nhwc
        back = (lambda a: a) if cf else _nchw
        what = f"{fmt} {case}"
        out, idx = fastconv.max_pool2d(to(x), return_indices=True, data_format=fmt, **opts)
        assert_same_nonfinite(back(out), ty_max.detach().numpy(), f"max_pool2d {what}")
        t_out = ty_max.detach().numpy()
        np.testing.assert_array_equal(np.where(np.isnan(t_out), 0, back(out)), np.where(np.isnan(t_out), 0, t_out),
                                      err_msg=f"max_pool2d {what}")  # exact: a winner is an input
        np.testing.assert_array_equal(back(idx), t_idx.numpy(), err_msg=f"max_pool2d indices {what}")
        grad = fastconv.max_pool2d_grad(to(g), idx, to(x).shape, data_format=fmt, **opts)
        assert_same_nonfinite(back(grad), tx_max.grad.numpy(), f"max_pool2d_grad {what}")
        avg = fastconv.avg_pool2d(to(x), count_include_pad=case["count_include_pad"], data_format=fmt, **opts)
        assert_same_nonfinite(back(avg), ty_avg.detach().numpy(), f"avg_pool2d {what}")
        finite = np.isfinite(ty_avg.detach().numpy())
        np.testing.assert_allclose(back(avg)[finite], ty_avg.detach().numpy()[finite], rtol=1e-5, atol=1e-6,
                                   err_msg=f"avg_pool2d {what}")
        grad = fastconv.avg_pool2d_grad(to(g), to(x).shape, count_include_pad=case["count_include_pad"],
                                        data_format=fmt, **opts)
        assert_same_nonfinite(back(grad), tx_avg.grad.numpy(), f"avg_pool2d_grad {what}")
        gmax, gidx = fastconv.global_max_pool2d(to(x), data_format=fmt, return_indices=True)
        assert_same_nonfinite(gmax, ty_gmax.detach().numpy()[:, :, 0, 0], f"global_max_pool2d {what}")
        np.testing.assert_array_equal(gidx, t_gidx.numpy()[:, :, 0, 0], err_msg=f"global_max_pool2d indices {what}")
        grad = fastconv.global_max_pool2d_grad(gg[:, :, 0, 0], gidx, to(x).shape, data_format=fmt)
        assert_same_nonfinite(back(grad), tx_gmax.grad.numpy(), f"global_max_pool2d_grad {what}")
        gavg = fastconv.global_avg_pool2d(to(x), data_format=fmt)
        assert_same_nonfinite(gavg, ty_gavg.detach().numpy()[:, :, 0, 0], f"global_avg_pool2d {what}")
        grad = fastconv.global_avg_pool2d_grad(gg[:, :, 0, 0], to(x).shape, data_format=fmt)
        assert_same_nonfinite(back(grad), tx_gavg.grad.numpy(), f"global_avg_pool2d_grad {what}")


# ---------------------------------------------------------------------------------------------- float32 error bounds

BOUND_FACTOR = 2.0  # |y32 - y64| <= BOUND_FACTOR * sqrt(n) * eps32 * sum(|x| * |w|); measured at most 0.70


def _data(rng, shape, sign):
    a = rng.uniform(0.0, 1.0, shape) if sign == "same" else rng.uniform(-1.0, 1.0, shape)
    return a.astype(np.float32)


def assert_float32_bound(got, want, magnitude, n, what):
    assert got.dtype == np.float32, what
    ratio = np.abs(got.astype(np.float64) - want) / (math.sqrt(n) * EPS32 * magnitude)
    worst = float(ratio.max())
    assert worst <= BOUND_FACTOR, f"{what}: error {worst:.3f} x sqrt(n) * eps32 * sum(|x||w|) > {BOUND_FACTOR}"


def _fmt(shape_nchw, fmt):
    n, c, h, w = shape_nchw
    return (n, c, h, w) if fmt == "channels_first" else (n, h, w, c)


def _wfmt(shape_oihw, fmt):
    k, c, r, s = shape_oihw
    return (k, c, r, s) if fmt == "channels_first" else (r, s, c, k)


REDUCTIONS = [  # (R, C, groups): C / groups * R * R products per output, up to 4608
    pytest.param(3, 512, 1, id="3x3x512"),
    pytest.param(1, 4608, 1, id="1x1x4608"),
    pytest.param(5, 184, 1, id="5x5x184"),
    pytest.param(7, 94, 1, id="7x7x94"),
    pytest.param(3, 1024, 2, id="3x3x1024-groups2"),
]


@pytest.mark.parametrize("sign", ["random", "same"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("r, c, groups", REDUCTIONS)
def test_conv2d_float32_long_reductions(r, c, groups, data_format, sign):
    rng = np.random.default_rng(r * 10007 + c)
    x = _data(rng, _fmt((1, c, 8, 8), data_format), sign)
    w = _data(rng, _wfmt((16, c // groups, r, r), data_format), sign)
    pad = ((r // 2, r // 2), (r // 2, r // 2))
    opts = dict(padding=pad, groups=groups, data_format=data_format)
    want = reference.conv2d(x, w, None, **opts)
    magnitude = reference.conv2d(np.abs(x), np.abs(w), None, **opts)
    for algorithm in ("direct", "im2col", "auto"):
        got = fastconv.conv2d(x, w, algorithm=algorithm, **opts)
        assert_float32_bound(got, want, magnitude, c // groups * r * r, f"conv2d {algorithm}")


@pytest.mark.parametrize("sign", ["random", "same"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("r, c, groups", [REDUCTIONS[0], REDUCTIONS[4]])
def test_conv2d_grad_input_float32_long_reductions(r, c, groups, data_format, sign):
    """K / groups * R * S = 4608 products per input cell."""
    rng = np.random.default_rng(r * 7919 + c)
    x_shape = _fmt((1, c, 8, 8), data_format)
    gy = _data(rng, _fmt((1, c, 8, 8), data_format), sign)
    w = _data(rng, _wfmt((c, c // groups, r, r), data_format), sign)
    opts = dict(padding=((1, 1), (1, 1)), groups=groups, data_format=data_format)
    want = reference.conv2d_grad_input(gy, w, x_shape, **opts)
    magnitude = reference.conv2d_grad_input(np.abs(gy), np.abs(w), x_shape, **opts)
    for algorithm in ("direct", "im2col", "auto"):
        got = fastconv.conv2d_grad_input(gy, w, x_shape, algorithm=algorithm, **opts)
        assert_float32_bound(got, want, magnitude, c // groups * r * r, f"conv2d_grad_input {algorithm}")


@pytest.mark.parametrize("sign", ["random", "same"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_weight_and_bias_gradients_float32_long_reductions(data_format, sign):
    """N * Ho * Wo = 2 * 48 * 48 = 4608 products per weight (conv2d, depthwise) and bias gradient."""
    rng = np.random.default_rng(4608)
    x = _data(rng, _fmt((2, 8, 50, 50), data_format), sign)
    gy = _data(rng, _fmt((2, 16, 48, 48), data_format), sign)
    n = 2 * 48 * 48
    w_shape = _wfmt((16, 8, 3, 3), data_format)
    want = reference.conv2d_grad_weight(gy, x, w_shape, data_format=data_format)
    magnitude = reference.conv2d_grad_weight(np.abs(gy), np.abs(x), w_shape, data_format=data_format)
    for algorithm in ("direct", "im2col", "auto"):
        got = fastconv.conv2d_grad_weight(gy, x, w_shape, algorithm=algorithm, data_format=data_format)
        assert_float32_bound(got, want, magnitude, n, f"conv2d_grad_weight {algorithm}")
    got = fastconv.conv2d_grad_bias(gy, data_format=data_format)
    assert_float32_bound(got, reference.conv2d_grad_bias(gy, data_format=data_format),
                         reference.conv2d_grad_bias(np.abs(gy), data_format=data_format), n, "conv2d_grad_bias")
    dw_shape = (16, 1, 3, 3) if data_format == "channels_first" else (3, 3, 8, 2)
    want = reference.depthwise_conv2d_grad_weight(gy, x, dw_shape, data_format=data_format)
    magnitude = reference.depthwise_conv2d_grad_weight(np.abs(gy), np.abs(x), dw_shape, data_format=data_format)
    got = fastconv.depthwise_conv2d_grad_weight(gy, x, dw_shape, data_format=data_format)
    assert_float32_bound(got, want, magnitude, n, "depthwise_conv2d_grad_weight")


@pytest.mark.parametrize("sign", ["random", "same"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_average_pools_float32_long_reductions(data_format, sign):
    """H * W = 64 * 72 = 4608 cells per mean (global_avg_pool2d, and avg_pool2d with one window)."""
    rng = np.random.default_rng(72)
    x = _data(rng, _fmt((2, 8, 64, 72), data_format), sign)
    n = 64 * 72
    ax = np.abs(x)
    assert_float32_bound(fastconv.global_avg_pool2d(x, data_format=data_format),
                         reference.global_avg_pool2d(x, data_format=data_format),
                         reference.global_avg_pool2d(ax, data_format=data_format), n, "global_avg_pool2d")
    assert_float32_bound(fastconv.avg_pool2d(x, (64, 72), data_format=data_format),
                         reference.avg_pool2d(x, (64, 72), data_format=data_format),
                         reference.avg_pool2d(ax, (64, 72), data_format=data_format), n, "avg_pool2d")
