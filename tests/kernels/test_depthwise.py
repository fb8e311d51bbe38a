"""fastconv.depthwise_conv2d and its gradients against tests/reference.py, PyTorch and finite differences; conv2d
with groups == in_channels routed to the same kernels.

Tolerances are scale-aware as in test_conv.py: ``|got - exp| <= rel * bound`` where ``bound`` is the same operation
applied to the absolute values of the inputs.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
import reference as ref
from fastconv import functional_depthwise
from fastconv._kernels import conv_depthwise, cpu_dispatch

DF = ref.DATA_FORMATS
DTYPES = (np.float32, np.float64)

# (N, H, W, C, M, (R, S), stride, padding, dilation)
CASES = [
    (2, 7, 6, 4, 1, (3, 3), 1, "same", 1),
    (2, 8, 9, 3, 2, (3, 3), 2, "same", 1),                  # multiplier 2, stride 2, "same" totals (0, 1)/(1, 1)
    (1, 9, 8, 5, 3, (3, 3), 1, "valid", 1),                 # multiplier 3
    (1, 10, 11, 5, 3, (3, 2), (2, 3), "valid", (2, 1)),     # even kernel width, mixed strides and dilations
    (1, 12, 9, 20, 1, (3, 3), 1, ((0, 2), (1, 0)), 1),      # asymmetric explicit padding, C past one lane block
    (2, 6, 7, 17, 2, (5, 5), 1, 2, 1),                      # 5x5, K = 34: a partial lane block
    (1, 11, 10, 2, 3, (3, 2), (2, 1), ((1, 2), (2, 0)), (2, 3)),
    (1, 5, 5, 33, 1, (1, 1), 2, "valid", 1),                # 1x1 stride 2
    (1, 3, 3, 2, 2, (3, 3), 1, 2, 1),                       # padding 2 around a 3x3 input: border-only outputs
    (2, 14, 13, 40, 1, (3, 3), 2, "same", 1),
    (1, 9, 9, 8, 1, (3, 3), 1, "same", 2),                  # dilation 2, "same"
    (1, 12, 12, 6, 2, (5, 5), 2, "same", 1),                # 5x5 stride 2
    (1, 1, 9, 3, 1, (1, 3), 1, "same", 1),                  # H = 1
    (2, 5, 4, 3, 1, (5, 4), 1, "valid", 1),                 # kernel = input: 1x1 output
    # whole lane blocks and no multiplier: interior pixels read the input directly, borders from packed columns
    (2, 9, 10, 32, 1, (3, 3), 1, "same", 1),
    (1, 11, 12, 32, 1, (3, 3), 2, "same", 1),
    (1, 7, 9, 48, 1, (3, 3), 2, "valid", 1),
    (1, 8, 8, 16, 1, (3, 3), 1, ((1, 0), (0, 2)), 1),
    (1, 6, 4, 16, 1, (5, 5), 1, 2, 1),                      # narrower than the kernel: every pixel a border one
    (1, 6, 7, 16, 1, (5, 5), 2, "same", 1),
]


def case_id(c):
    N, H, W, C, M, RS, s, p, d = c
    return f"N{N}-{H}x{W}-C{C}M{M}-k{RS[0]}x{RS[1]}-s{s}-p{p}-d{d}".replace(" ", "")


def make(rng, case, data_format, dtype=np.float64):
    """x, w (depthwise layout of data_format), b, gy and the keyword arguments shared with the reference."""
    N, H, W, C, M, (R, S), stride, padding, dilation = case
    x = ref.from_channels_first(rng.standard_normal((N, C, H, W)), data_format).astype(dtype)
    w = rng.standard_normal((R, S, C, M))
    if data_format == "channels_first":
        w = np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(C * M, 1, R, S))
    w = w.astype(dtype)
    b = rng.standard_normal(C * M).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, data_format=data_format)
    y_shape = ref.depthwise_conv2d(x, w, None, **kw).shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    return x, w, b, gy, kw


def assert_close(got, exp, bound, dtype):
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray) and got.dtype == dtype, (type(got), getattr(got, "dtype", None))
    assert got.shape == exp.shape, (got.shape, exp.shape)
    rel = 2e-5 if dtype == np.float32 else 1e-12
    err = np.abs(got.astype(np.float64) - exp)
    lim = rel * (bound + 1e-6)
    bad = ~(err <= lim)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / lim, 0)), err.shape)
        raise AssertionError(f"{bad.sum()} of {err.size} elements off (dtype {dtype}); worst at {i}: got {got[i]!r}, "
                             f"expected {exp[i]!r}, limit {lim[i]:.3g}")


def check_all(x, w, b, gy, kw, dtype):
    assert_close(fastconv.depthwise_conv2d(x, w, b, **kw), ref.depthwise_conv2d(x, w, b, **kw),
                 ref.depthwise_conv2d(np.abs(x), np.abs(w), np.abs(b), **kw), dtype)
    assert_close(fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw),
                 ref.depthwise_conv2d_grad_input(gy, w, x.shape, **kw),
                 ref.depthwise_conv2d_grad_input(np.abs(gy), np.abs(w), x.shape, **kw), dtype)
    assert_close(fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw),
                 ref.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw),
                 ref.depthwise_conv2d_grad_weight(np.abs(gy), np.abs(x), w.shape, **kw), dtype)


# ----------------------------------------------------------------------------------------------------------------
# Against the NumPy reference: every option, both layouts, both dtypes
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(rng, case, data_format, dtype):
    check_all(*make(rng, case, data_format, dtype), dtype)


@pytest.mark.parametrize("data_format", DF)
def test_without_bias_and_output_dtype(rng, data_format):
    x, w, _, _, kw = make(rng, CASES[1], data_format, np.float32)
    y = fastconv.depthwise_conv2d(x, w, **kw)
    assert y.dtype == np.float32
    assert_close(y, ref.depthwise_conv2d(x, w, None, **kw), ref.depthwise_conv2d(np.abs(x), np.abs(w), None, **kw),
                 np.float32)


@pytest.mark.parametrize("data_format", DF)
def test_work_plans_do_not_change_results(rng, data_format, monkeypatch):
    """Tiny rings (one lane block per work item) and short bands take other code paths through the same maths:
    forward and input gradient are bit-identical, the weight gradient sums in other chunks."""
    case = (2, 19, 18, 40, 2, (3, 3), 1, "same", 1)
    x, w, b, gy, kw = make(rng, case, data_format, np.float32)

    def run():
        return (fastconv.depthwise_conv2d(x, w, b, **kw), fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw),
                fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw))

    default = run()
    monkeypatch.setattr(functional_depthwise, "RING_BYTES", 1)
    monkeypatch.setattr(functional_depthwise, "MIN_GROUP_BLOCKS", 1)
    monkeypatch.setattr(functional_depthwise, "MIN_UNITS", 64)
    monkeypatch.setattr(functional_depthwise, "MIN_BAND_ROWS", 1)
    plans = (functional_depthwise._forward_plan, functional_depthwise._grad_input_plan)
    for plan in plans:                     # plans are cached per problem
        plan.cache_clear()
    try:
        small = run()
    finally:
        for plan in plans:
            plan.cache_clear()
    if data_format == "channels_last":
        group_blocks, band_rows = functional_depthwise._forward_plan.__wrapped__(
            fastconv._problem.conv_problem(x.shape, (3, 3, 1, 80), stride=1, padding="same", dilation=1, groups=40,
                                           channels_last=True), 4)
        assert group_blocks == 1 and band_rows < 19
    np.testing.assert_array_equal(default[0], small[0])
    np.testing.assert_array_equal(default[1], small[1])
    np.testing.assert_allclose(default[2], small[2], rtol=1e-5, atol=1e-4)
    check_all(x, w, b, gy, kw, np.float32)


# ----------------------------------------------------------------------------------------------------------------
# conv2d(groups=C) takes the depthwise kernels with algorithm="auto"
# ----------------------------------------------------------------------------------------------------------------


def grouped_weight(w, data_format):
    """The depthwise weight as conv2d(groups=C) takes it: HWIO (R, S, 1, C*M) or OIHW (C*M, 1, R, S)."""
    if data_format == "channels_last":
        r, s, c, m = w.shape
        return w.reshape(r, s, 1, c * m)
    return w


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[6]], ids=case_id)
def test_conv2d_with_groups_equal_to_channels_agrees(rng, case, data_format):
    x, w, b, gy, kw = make(rng, case, data_format, np.float32)
    wg = grouped_weight(w, data_format)
    groups = case[3]
    ours = (fastconv.depthwise_conv2d(x, w, b, **kw), fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw),
            fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw).reshape(wg.shape))
    auto = (fastconv.conv2d(x, wg, b, groups=groups, **kw),
            fastconv.conv2d_grad_input(gy, wg, x.shape, groups=groups, **kw),
            fastconv.conv2d_grad_weight(gy, x, wg.shape, groups=groups, **kw))
    for a, o in zip(auto, ours):           # the same kernels: the same bits
        np.testing.assert_array_equal(a, o)
    direct = (fastconv.conv2d(x, wg, b, groups=groups, algorithm="direct", **kw),
              fastconv.conv2d_grad_input(gy, wg, x.shape, groups=groups, algorithm="direct", **kw),
              fastconv.conv2d_grad_weight(gy, x, wg.shape, groups=groups, algorithm="direct", **kw))
    for d, o in zip(direct, ours):
        np.testing.assert_allclose(o, d, rtol=1e-4, atol=1e-4)


def test_conv2d_routes_depthwise_problems_only():
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def problem(c, k, groups):
        return conv_problem((1, 8, 8, c), (3, 3, c // groups, k), stride=1, padding="same", dilation=1,
                            groups=groups, channels_last=True)

    assert _planning.choose_forward(problem(8, 16, 8), "auto") == "depthwise"
    assert _planning.choose_grad_input(problem(8, 8, 8), "auto", 2) == "depthwise"
    assert _planning.choose_grad_weight(problem(8, 24, 8), "auto") == "depthwise"
    assert _planning.choose_forward(problem(8, 16, 8), "direct") == "direct"
    assert _planning.choose_forward(problem(8, 16, 4), "auto") != "depthwise"
    assert _planning.choose_forward(problem(1, 16, 1), "auto") != "depthwise"   # one channel: a plain conv


# ----------------------------------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[5], CASES[10]], ids=case_id)
def test_vs_torch(torch, rng, case, data_format, dtype):
    x, w, b, gy, kw = make(rng, case, data_format, dtype)
    N, H, W, C, M, (R, S), stride, padding, dilation = case
    to_nchw = (lambda a: a.transpose(0, 3, 1, 2)) if data_format == "channels_last" else (lambda a: a)
    w_oihw = w.reshape(R, S, C * M).transpose(2, 0, 1)[:, None] if data_format == "channels_last" else w
    tx = torch.tensor(np.ascontiguousarray(to_nchw(x)), requires_grad=True)
    tw = torch.tensor(np.ascontiguousarray(w_oihw), requires_grad=True)
    (pt, pb), (pl, pr) = ref.resolve_padding(padding, (H, W), (R, S), stride, dilation)
    padded = torch.nn.functional.pad(tx, (pl, pr, pt, pb))
    ty = torch.nn.functional.conv2d(padded, tw, torch.tensor(b), stride=stride, dilation=dilation, groups=C)
    ty.backward(torch.tensor(np.ascontiguousarray(to_nchw(gy))))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(to_nchw(fastconv.depthwise_conv2d(x, w, b, **kw)), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(to_nchw(fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw)), tx.grad.numpy(),
                               **tol)
    gw = fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw)
    gw_oihw = gw.reshape(R, S, C * M).transpose(2, 0, 1)[:, None] if data_format == "channels_last" else gw
    np.testing.assert_allclose(gw_oihw, tw.grad.numpy(), **tol)


# ----------------------------------------------------------------------------------------------------------------
# Finite differences (float64)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[8]], ids=case_id)
def test_gradients_match_finite_differences(rng, case, data_format):
    x, w, b, gy, kw = make(rng, case, data_format)
    gx = fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw)
    gw = fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw)

    def loss(xv, wv):
        return float(np.sum(fastconv.depthwise_conv2d(xv, wv, b, **kw) * gy))

    eps = 1e-6
    for array, grad, is_x in ((x, gx, True), (w, gw, False)):
        flat = rng.choice(array.size, size=min(10, array.size), replace=False)
        for i in flat:
            idx = np.unravel_index(i, array.shape)
            saved = array[idx]
            array[idx] = saved + eps
            plus = loss(x, w)
            array[idx] = saved - eps
            minus = loss(x, w)
            array[idx] = saved
            np.testing.assert_allclose(grad[idx], (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{'x' if is_x else 'weight'} at {idx}")


# ----------------------------------------------------------------------------------------------------------------
# Threads, instruction sets
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", [(3, 20, 17, 36, 2, (3, 3), 1, "same", 1), (2, 15, 16, 24, 1, (3, 3), 2, "same", 1),
                                  (4, 9, 9, 70, 1, (5, 5), 1, 2, 1)], ids=case_id)
def test_thread_count_bitwise_identical(threads, rng, case, data_format):
    x, w, b, gy, kw = make(rng, case, data_format, np.float32)

    def run():
        return (fastconv.depthwise_conv2d(x, w, b, **kw), fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw),
                fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw))

    threads.set_num_threads(1)
    one = run()
    for n in (2, 3):
        threads.set_num_threads(n)
        for a, c in zip(one, run()):
            np.testing.assert_array_equal(a, c)


def test_isa_levels_match_cpu_dispatch():
    assert {level: name for name, level in conv_depthwise.ISA_LEVELS.items()} == cpu_dispatch.ISA_NAMES


ISA_SCRIPT = """
import sys, numpy as np, fastconv
rng = np.random.default_rng(3)
out = {}
for df in ("channels_last", "channels_first"):
    for case in ((2, 11, 13, 20, 2, 3, 1, "same", 1), (1, 12, 11, 9, 1, 3, 2, "same", 1),
                 (1, 10, 9, 6, 1, 5, 1, 2, 1), (1, 9, 10, 5, 3, 3, 2, ((1, 0), (2, 1)), (2, 1))):
        n, h, w, c, m, k, s, p, d = case
        x = rng.standard_normal((n, h, w, c) if df == "channels_last" else (n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, k, c, m) if df == "channels_last" else (c * m, 1, k, k)).astype(np.float32)
        kw = dict(stride=s, padding=p, dilation=d, data_format=df)
        y = fastconv.depthwise_conv2d(x, wt, **kw)
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx = fastconv.depthwise_conv2d_grad_input(g, wt, x.shape, **kw)
        gw = fastconv.depthwise_conv2d_grad_weight(g, x, wt.shape, **kw)
        out[f"{df}{case}"] = np.concatenate([y.ravel(), gx.ravel(), gw.ravel()])
np.savez(sys.argv[1], **out)
print(fastconv.show_config()["isa"])
"""


def test_every_instruction_set_level_agrees(tmp_path):
    best = cpu_dispatch.best_isa_name()
    levels = [name for name in ("baseline", "avx2", "avx512")
              if cpu_dispatch._LEVELS[name] <= cpu_dispatch._LEVELS[best]]
    results = {}
    for level in levels:
        path = tmp_path / f"{level}.npz"
        proc = subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(path)], env=dict(os.environ, FASTCONV_ISA=level),
                              capture_output=True, text=True, check=True)
        assert proc.stdout.strip().splitlines()[-1] == level
        results[level] = np.load(path)
    for level in levels:
        for key in results[best].files:
            np.testing.assert_allclose(results[level][key], results[best][key], rtol=1e-4, atol=1e-4,
                                       err_msg=f"{level} vs {best}: {key}")


# ----------------------------------------------------------------------------------------------------------------
# Memory layouts, dtypes, out=, empty batches
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DF)
def test_non_contiguous_inputs(rng, data_format):
    x, w, b, gy, kw = make(rng, CASES[5], data_format, np.float32)
    x_view = np.asfortranarray(x)[:, ::-1][:, ::-1]                      # Fortran order, then reversed twice
    wide = np.zeros(w.shape[:-1] + (2 * w.shape[-1],), dtype=w.dtype)
    wide[..., ::2] = w
    w_view = wide[..., ::2]
    gy_view = np.repeat(gy, 2, axis=0)[::2]
    b_view = np.repeat(b, 2)[::2]
    assert not (x_view.flags.c_contiguous or w_view.flags.c_contiguous or gy_view.flags.c_contiguous)
    np.testing.assert_array_equal(fastconv.depthwise_conv2d(x_view, w_view, b_view, **kw),
                                  fastconv.depthwise_conv2d(x, w, b, **kw))
    np.testing.assert_array_equal(fastconv.depthwise_conv2d_grad_input(gy_view, w_view, x.shape, **kw),
                                  fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw))
    np.testing.assert_array_equal(fastconv.depthwise_conv2d_grad_weight(gy_view, x_view, w.shape, **kw),
                                  fastconv.depthwise_conv2d_grad_weight(gy, x, w.shape, **kw))


@pytest.mark.parametrize("xdt, wdt, expected", [
    (np.float16, np.float16, np.float32), (np.float32, np.float64, np.float64), (np.int32, np.int32, np.float64),
    (np.float32, np.int8, np.float64),
])
def test_dtype_promotion(rng, xdt, wdt, expected):
    x = (rng.standard_normal((1, 6, 5, 3)) * 3).astype(xdt)
    w = (rng.standard_normal((3, 3, 3, 2)) * 3).astype(wdt)
    y = fastconv.depthwise_conv2d(x, w, padding="same")
    assert y.dtype == expected
    np.testing.assert_allclose(y, ref.depthwise_conv2d(x, w, None, padding="same"), rtol=1e-3, atol=1e-3)
    g = np.ones(y.shape, dtype=xdt)
    assert fastconv.depthwise_conv2d_grad_input(g, w, x.shape, padding="same").dtype == expected
    # grad_output and x are both of x's dtype here
    x_compute = np.float32 if xdt in (np.float16, np.float32) else np.float64
    assert fastconv.depthwise_conv2d_grad_weight(g, x, w.shape, padding="same").dtype == x_compute


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
def test_out_argument(rng, data_format, dtype):
    x, w, b, _, kw = make(rng, CASES[4], data_format, dtype)
    expected = fastconv.depthwise_conv2d(x, w, b, **kw)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    assert fastconv.depthwise_conv2d(x, w, b, out=out, **kw) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("data_format", DF)
def test_empty_batch(rng, data_format):
    x, w, b, gy, kw = make(rng, CASES[1], data_format, np.float32)
    x0, gy0 = x[:0], gy[:0]
    assert fastconv.depthwise_conv2d(x0, w, b, **kw).shape == gy0.shape
    gx = fastconv.depthwise_conv2d_grad_input(gy0, w, x0.shape, **kw)
    assert gx.shape == x0.shape and gx.dtype == np.float32
    gw = fastconv.depthwise_conv2d_grad_weight(gy0, x0, w.shape, **kw)
    assert gw.shape == w.shape and not gw.any()


# ----------------------------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the argument and the value received, before any kernel runs
# ----------------------------------------------------------------------------------------------------------------

X = np.zeros((2, 8, 8, 4), dtype=np.float32)
W = np.zeros((3, 3, 4, 2), dtype=np.float32)
G = np.zeros((2, 8, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: fastconv.depthwise_conv2d(X, np.zeros((3, 3, 5, 2))), ValueError, r"weight.*C = 4.*\(3, 3, 5, 2\)"),
    (lambda: fastconv.depthwise_conv2d(X, np.zeros((3, 3, 4))), ValueError, r"weight.*4-D.*\(3, 3, 4\)"),
    (lambda: fastconv.depthwise_conv2d(X, np.zeros((3, 3, 4, 0))), ValueError, r"weight.*zero-sized.*\(3, 3, 4, 0\)"),
    (lambda: fastconv.depthwise_conv2d(X.transpose(0, 3, 1, 2), np.zeros((8, 2, 3, 3)),
                                       data_format="channels_first"), ValueError, r"weight.*\(C\*M, 1, R, S\).*\(8, 2"),
    (lambda: fastconv.depthwise_conv2d(X.transpose(0, 3, 1, 2), np.zeros((6, 1, 3, 3)),
                                       data_format="channels_first"), ValueError, r"weight.*C = 4.*\(6, 1, 3, 3\)"),
    (lambda: fastconv.depthwise_conv2d(X, W, np.zeros(4)), ValueError, r"bias.*\(8,\).*\(4,\)"),
    (lambda: fastconv.depthwise_conv2d(X, W, stride=0), ValueError, r"stride.*stride=0"),
    (lambda: fastconv.depthwise_conv2d(X, W, dilation=(1, 0)), ValueError, r"dilation.*\(1, 0\)"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding="sme"), ValueError, r"padding.*'sme'"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding=1.5), TypeError, r"padding.*1\.5"),
    (lambda: fastconv.depthwise_conv2d(X, W, data_format="NHWC"), ValueError, r"data_format.*'NHWC'"),
    (lambda: fastconv.depthwise_conv2d(X, W, data_format=1), TypeError, r"data_format.*1"),
    (lambda: fastconv.depthwise_conv2d(X.astype(complex), W), TypeError, r"x.*complex"),
    (lambda: fastconv.depthwise_conv2d("x", W), TypeError, r"x.*<U1"),
    (lambda: fastconv.depthwise_conv2d(np.zeros((2, 8, 8, 0)), W), ValueError, r"x.*one channel.*\(2, 8, 8, 0\)"),
    (lambda: fastconv.depthwise_conv2d(np.zeros((1, 2, 2, 4)), W), ValueError, r"output would be empty"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding="same", out=np.zeros((2, 8, 8, 4), np.float32)), ValueError,
     r"out.*\(2, 8, 8, 8\).*\(2, 8, 8, 4\)"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding="same", out=np.zeros((2, 8, 8, 8))), TypeError,
     r"out.*float32.*float64"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding="same", out=np.zeros((2, 8, 8, 16), np.float32)[..., ::2]),
     ValueError, r"out.*C-contiguous"),
    (lambda: fastconv.depthwise_conv2d(X, W, padding="same", out=[0.0]), TypeError, r"out.*list"),
    (lambda: fastconv.depthwise_conv2d_grad_input(G[:, :4], W, X.shape, padding="same"), ValueError,
     r"grad_output.*\(2, 8, 8, 8\).*\(2, 4, 8, 8\)"),
    (lambda: fastconv.depthwise_conv2d_grad_input(G, W, [2, 8, 8], padding="same"), ValueError,
     r"input_shape.*\[2, 8, 8\]"),
    (lambda: fastconv.depthwise_conv2d_grad_input(G, W, "shape", padding="same"), TypeError, r"input_shape.*'shape'"),
    (lambda: fastconv.depthwise_conv2d_grad_input(G, np.zeros((3, 3, 2, 2)), X.shape, padding="same"), ValueError,
     r"weight.*C = 4.*\(3, 3, 2, 2\)"),
    (lambda: fastconv.depthwise_conv2d_grad_weight(G, X, (3, 3, 4), padding="same"), ValueError,
     r"weight_shape.*\(3, 3, 4\)"),
    (lambda: fastconv.depthwise_conv2d_grad_weight(G, X, (3, 3, 4, 3), padding="same"), ValueError,
     r"grad_output.*\(2, 8, 8, 12\).*\(2, 8, 8, 8\)"),
    (lambda: fastconv.depthwise_conv2d_grad_weight(G, X, (3, 3, 4, -1), padding="same"), ValueError,
     r"weight_shape.*-1"),
])
def test_bad_input_raises(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_out_must_not_overlap_an_input():
    buffer = np.zeros((2, 8, 8, 8), dtype=np.float32)
    x = buffer[..., :4]
    with pytest.raises(ValueError, match=r"out.*overlap.*x"):
        fastconv.depthwise_conv2d(x, W, padding="same", out=buffer)
    frozen = np.zeros((2, 8, 8, 8), dtype=np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"out.*writable"):
        fastconv.depthwise_conv2d(X, W, padding="same", out=frozen)


@pytest.mark.parametrize("data_format", DF)
def test_streaming_stores_write_the_same_values(rng, data_format, monkeypatch):
    """Outputs past STREAM_BYTES are written with non-temporal stores into 64-byte aligned arrays."""
    case = (2, 9, 10, 16, 2, (3, 3), 1, "same", 1)           # K = 32: whole 64-byte lane blocks
    x, w, b, gy, kw = make(rng, case, data_format, np.float32)
    plain = (fastconv.depthwise_conv2d(x, w, b, **kw), fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw))
    monkeypatch.setattr(functional_depthwise, "STREAM_BYTES", 0)
    streamed = (fastconv.depthwise_conv2d(x, w, b, **kw), fastconv.depthwise_conv2d_grad_input(gy, w, x.shape, **kw))
    for a, c in zip(plain, streamed):
        np.testing.assert_array_equal(a, c)
        if data_format == "channels_last":
            assert c.ctypes.data % 64 == 0 and c.flags.c_contiguous and c.flags.writeable
    out = np.zeros_like(plain[0])                           # a user's out= (maybe unaligned): plain stores
    np.testing.assert_array_equal(fastconv.depthwise_conv2d(x, w, b, out=out, **kw), plain[0])
