"""Fuzzing extreme geometry: strides, dilations, paddings and pool sizes up to 2**57 on tiny arrays.

A few output cells over a 1..5 pixel input, with windows, strides and paddings of any size up to 2**57 (the
functional API accepts up to 2**60: _validation.INDEX_LIMIT), test that the kernels' 64-bit index arithmetic
neither overflows nor allocates scratch in proportion to the geometry (it once computed 0 where the answer was
x[0, 0], returned inf for a finite average, and crashed the process). The NumPy reference cannot pad by 2**57,
so the expected results come from a sparse reference written here: loops over the output cells and the taps,
visiting only the input cells a tap reaches, in Python ints. Inputs are small integers, so every sum is exact
and conv / max results are compared exactly (average pooling, which divides, within
_fuzz_support's error bound).

Ops: conv2d (each example runs all three algorithms), conv2d_grad_input, conv2d_grad_weight (all three
algorithms), depthwise_conv2d, max_pool2d (values and indices) with max_pool2d_grad, avg_pool2d with
avg_pool2d_grad; both layouts, float32 and float64. Examples per op: 200, or 5,000 with ``--fuzz-long``.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from _fuzz_support import DATA_FORMATS, DTYPES, Examples, assert_close, fuzz_settings

HUGE = 2 ** 57
ALGORITHMS = ("direct", "im2col", "auto")


def _size(draw, cap):
    """1, 2, 3, a power of two or any integer up to ``cap``: small and huge values alike."""
    return draw(st.one_of(st.integers(1, min(3, cap)), st.integers(0, cap.bit_length() - 1).map(lambda e: 2 ** e),
                          st.integers(1, cap)))


def _split(draw, total, limit=None):
    """(before, after) summing to ``total``, each below ``limit`` when given."""
    low = 0 if limit is None else max(0, total - (limit - 1))
    high = total if limit is None else min(total, limit - 1)
    before = draw(st.integers(low, high))
    return before, total - before


@st.composite
def conv_geometries(draw):
    """Per axis (rows, columns): input size, kernel taps, dilation, stride, padding, output size (1 to 4)."""
    axes = []
    for _ in range(2):
        size, taps = draw(st.integers(1, 5)), draw(st.integers(1, 3))
        dilation = _size(draw, HUGE // 4) if taps > 1 else draw(st.integers(1, 3))
        stride = _size(draw, HUGE)
        extent = (taps - 1) * dilation + 1
        if draw(st.booleans()):  # Keras "same": ceil(size / stride) outputs, padding what the kernel needs
            out = -(-size // stride)
            total = max((out - 1) * stride + extent - size, 0)
            pads = (total // 2, total - total // 2)
        else:
            out = draw(st.integers(1, 4))
            total = max((out - 1) * stride + extent - size + draw(st.integers(0, min(stride - 1, HUGE))), 0)
            out = (size + total - extent) // stride + 1
            pads = _split(draw, total)
        axes.append(dict(size=size, taps=taps, dilation=dilation, stride=stride, pads=pads, out=out))
    return axes


@st.composite
def conv_cases(draw, depthwise=False):
    axes = draw(conv_geometries())
    groups = draw(st.integers(1, 3))
    cg = 1 if depthwise else draw(st.integers(1, 2))
    kg = draw(st.integers(1, 2))
    return dict(axes=axes, groups=groups, cg=cg, kg=kg, n=draw(st.integers(1, 2)),
                fmt=draw(st.sampled_from(DATA_FORMATS)), dtype=draw(st.sampled_from(DTYPES)),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


def _ints(rng, shape, dtype):
    return rng.integers(-3, 4, size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------------- sparse references
# NCHW activations, OIHW weights, Python-int coordinates: only the input cells a tap reaches are visited.


def _taps(axes, oh, ow):
    """((r, s), (ih, iw)) for every tap of output cell (oh, ow) that lands on an input cell."""
    rows, cols = axes
    for r in range(rows["taps"]):
        ih = oh * rows["stride"] - rows["pads"][0] + r * rows["dilation"]
        if not 0 <= ih < rows["size"]:
            continue
        for s in range(cols["taps"]):
            iw = ow * cols["stride"] - cols["pads"][0] + s * cols["dilation"]
            if 0 <= iw < cols["size"]:
                yield (r, s), (ih, iw)


def _conv_cells(case):
    """(n, k, c_in, c_w, oh, ow, r, s, ih, iw) for every product of the convolution."""
    (rows, cols), groups, cg, kg = case["axes"], case["groups"], case["cg"], case["kg"]
    for n in range(case["n"]):
        for k in range(groups * kg):
            for c in range(cg):
                for oh in range(rows["out"]):
                    for ow in range(cols["out"]):
                        for (r, s), (ih, iw) in _taps(case["axes"], oh, ow):
                            yield n, k, (k // kg) * cg + c, c, oh, ow, r, s, ih, iw


def sparse_conv2d(case, x, w, b):
    (rows, cols) = case["axes"]
    k_total = case["groups"] * case["kg"]
    y = np.zeros((case["n"], k_total, rows["out"], cols["out"]))
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    for n, k, ci, cw, oh, ow, r, s, ih, iw in _conv_cells(case):
        y[n, k, oh, ow] += float(x[n, ci, ih, iw]) * float(w[k, cw, r, s])
    return y


def sparse_grad_input(case, gy, w):
    (rows, cols) = case["axes"]
    gx = np.zeros((case["n"], case["groups"] * case["cg"], rows["size"], cols["size"]))
    for n, k, ci, cw, oh, ow, r, s, ih, iw in _conv_cells(case):
        gx[n, ci, ih, iw] += float(gy[n, k, oh, ow]) * float(w[k, cw, r, s])
    return gx


def sparse_grad_weight(case, gy, x):
    (rows, cols) = case["axes"]
    gw = np.zeros((case["groups"] * case["kg"], case["cg"], rows["taps"], cols["taps"]))
    for n, k, ci, cw, oh, ow, r, s, ih, iw in _conv_cells(case):
        gw[k, cw, r, s] += float(gy[n, k, oh, ow]) * float(x[n, ci, ih, iw])
    return gw


# ---------------------------------------------------------------------------------------------- conv helpers


def _options(case):
    rows, cols = case["axes"]
    return dict(stride=(rows["stride"], cols["stride"]), padding=(rows["pads"], cols["pads"]),
                dilation=(rows["dilation"], cols["dilation"]), data_format=case["fmt"])


def _to_layout(a, fmt):
    """NCHW (or OIHW) reference arrays in ``fmt``'s activation layout."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if fmt == "channels_last" else a


def _weight_to_layout(w, fmt):
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0)) if fmt == "channels_last" else w


def _weight_from_layout(w, fmt):
    return w.transpose(3, 2, 0, 1) if fmt == "channels_last" else w


def _conv_arrays(case):
    rng = np.random.default_rng(case["seed"])
    (rows, cols), dtype = case["axes"], case["dtype"]
    c, k = case["groups"] * case["cg"], case["groups"] * case["kg"]
    x = _ints(rng, (case["n"], c, rows["size"], cols["size"]), dtype)
    w = _ints(rng, (k, case["cg"], rows["taps"], cols["taps"]), dtype)
    b = _ints(rng, (k,), dtype) if case["bias"] else None
    gy = _ints(rng, (case["n"], k, rows["out"], cols["out"]), dtype)
    return x, w, b, gy


def _equal(got, want, case, what):
    assert got.dtype == case["dtype"], what
    np.testing.assert_array_equal(got, want.astype(case["dtype"]), err_msg=f"{what} {case}")


# ---------------------------------------------------------------------------------------------- conv tests


def test_conv2d_extreme_geometry(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        x, w, b, _ = _conv_arrays(case)
        fmt = case["fmt"]
        want = _to_layout(sparse_conv2d(case, x, w, b), fmt)
        for algorithm in ALGORITHMS:
            got = fastconv.conv2d(_to_layout(x, fmt), _weight_to_layout(w, fmt), b, groups=case["groups"],
                                  algorithm=algorithm, **_options(case))
            _equal(got, want, case, f"conv2d algorithm={algorithm}")

    check()
    examples.expect(fuzz_examples, "conv2d_extreme_geometry")


def test_conv2d_grads_extreme_geometry(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases())
    @examples
    def check(case):
        x, w, _, gy = _conv_arrays(case)
        fmt = case["fmt"]
        want_gx = _to_layout(sparse_grad_input(case, gy, w), fmt)
        want_gw = sparse_grad_weight(case, gy, x)
        x_shape = _to_layout(x, fmt).shape
        for algorithm in ALGORITHMS:
            gx = fastconv.conv2d_grad_input(_to_layout(gy, fmt), _weight_to_layout(w, fmt), x_shape,
                                            groups=case["groups"], algorithm=algorithm, **_options(case))
            _equal(gx, want_gx, case, f"conv2d_grad_input algorithm={algorithm}")
            gw = fastconv.conv2d_grad_weight(_to_layout(gy, fmt), _to_layout(x, fmt), _weight_to_layout(w, fmt).shape,
                                             groups=case["groups"], algorithm=algorithm, **_options(case))
            _equal(_weight_from_layout(gw, fmt), want_gw, case, f"conv2d_grad_weight algorithm={algorithm}")

    check()
    examples.expect(fuzz_examples, "conv2d_grads_extreme_geometry")


def test_depthwise_extreme_geometry(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=conv_cases(depthwise=True))
    @examples
    def check(case):
        x, w, b, gy = _conv_arrays(case)  # w: (C*M, 1, R, S), PyTorch's depthwise layout
        fmt = case["fmt"]
        c, m = case["groups"], case["kg"]
        w_layout = w if fmt == "channels_first" else np.ascontiguousarray(
            w.reshape(c, m, *w.shape[2:]).transpose(2, 3, 0, 1))  # (R, S, C, M)
        opts = _options(case)
        got = fastconv.depthwise_conv2d(_to_layout(x, fmt), w_layout, b, **opts)
        _equal(got, _to_layout(sparse_conv2d(case, x, w, b), fmt), case, "depthwise_conv2d")
        gx = fastconv.depthwise_conv2d_grad_input(_to_layout(gy, fmt), w_layout, _to_layout(x, fmt).shape, **opts)
        _equal(gx, _to_layout(sparse_grad_input(case, gy, w), fmt), case, "depthwise_conv2d_grad_input")
        gw = fastconv.depthwise_conv2d_grad_weight(_to_layout(gy, fmt), _to_layout(x, fmt), w_layout.shape, **opts)
        want_gw = sparse_grad_weight(case, gy, x)
        if fmt == "channels_last":
            want_gw = want_gw.reshape(c, m, *w.shape[2:]).transpose(2, 3, 0, 1)
        _equal(gw, want_gw, case, "depthwise_conv2d_grad_weight")

    check()
    examples.expect(fuzz_examples, "depthwise_extreme_geometry")


# ---------------------------------------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw):
    """Per axis: input size, pool size (huge ones too, with their product at most 2**60), stride, padding (each
    side smaller than the pool), ceil_mode; output cells 1 to 4."""
    ceil_mode = draw(st.booleans())
    axes = []
    for axis in range(2):
        size = draw(st.integers(1, 5))
        # the window's cell count must stay within 2**60: huge rows leave few columns
        k = _size(draw, HUGE if axis == 0 else min(HUGE, 2 ** 60 // axes[0]["k"]))
        stride = _size(draw, HUGE)
        out = draw(st.integers(1, 4))
        total = (out - 1) * stride + k - size + draw(st.integers(0, min(stride - 1, HUGE)))
        total = min(max(total, 0), 2 * k - 2)  # each side < k
        pads = _split(draw, total, limit=k)
        span = size + total - k
        if span < 0:  # the window does not fit even padded: no padding, a window no larger than the input
            k, pads, span = min(k, size), (0, 0), size - min(k, size)
        n_out = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (n_out - 1) * stride >= size + pads[0]:
            n_out -= 1  # PyTorch's rule: the last window starts inside the input or the left padding
        assert 1 <= n_out <= 6, "the strategy drew a large output"
        axes.append(dict(size=size, k=k, stride=stride, pads=pads, out=n_out))
    return dict(axes=axes, ceil_mode=ceil_mode, n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)),
                count_include_pad=draw(st.booleans()), fmt=draw(st.sampled_from(DATA_FORMATS)),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2 ** 32 - 1)))


def _window(ax, o):
    """(first real cell, one past the last real cell, cells counted with count_include_pad) of window o."""
    start = o * ax["stride"] - ax["pads"][0]
    real = (max(start, 0), min(start + ax["k"], ax["size"]))
    counted = min(start + ax["k"], ax["size"] + ax["pads"][1]) - start  # never beyond the padding
    return real, counted


def sparse_pools(case, x, gy):
    """(max, argmax, max grad, avg, avg grad) of NCHW ``x``; ``gy`` is the output gradient of both pools."""
    rows, cols = case["axes"]
    shape = (case["n"], case["c"], rows["out"], cols["out"])
    mx, idx, avg = np.zeros(shape), np.zeros(shape, np.int64), np.zeros(shape)
    gmax, gavg = np.zeros(x.shape), np.zeros(x.shape)
    for n in range(case["n"]):
        for c in range(case["c"]):
            for oh in range(rows["out"]):
                (h0, h1), counted_h = _window(rows, oh)
                for ow in range(cols["out"]):
                    (w0, w1), counted_w = _window(cols, ow)
                    cells = [(ih, iw) for ih in range(h0, h1) for iw in range(w0, w1)]
                    best = cells[0]
                    for cell in cells:  # the first maximum in row-major order wins
                        if x[n, c][cell] > x[n, c][best]:
                            best = cell
                    mx[n, c, oh, ow] = x[n, c][best]
                    idx[n, c, oh, ow] = best[0] * cols["size"] + best[1]  # h * W + w
                    gmax[n, c][best] += gy[n, c, oh, ow]
                    divisor = counted_h * counted_w if case["count_include_pad"] else len(cells)
                    avg[n, c, oh, ow] = sum(float(x[n, c][cell]) for cell in cells) / divisor
                    for cell in cells:
                        gavg[n, c][cell] += float(gy[n, c, oh, ow]) / divisor
    return mx, idx, gmax, avg, gavg


def test_pools_extreme_geometry(fuzz_examples):
    examples = Examples()

    @fuzz_settings(fuzz_examples)
    @given(case=pool_cases())
    @examples
    def check(case):
        rows, cols = case["axes"]
        rng = np.random.default_rng(case["seed"])
        x = _ints(rng, (case["n"], case["c"], rows["size"], cols["size"]), case["dtype"])
        gy = _ints(rng, (case["n"], case["c"], rows["out"], cols["out"]), case["dtype"])
        mx, idx, gmax, avg, gavg = sparse_pools(case, x, gy)
        *_, avg_magnitude, gavg_magnitude = sparse_pools(case, np.abs(x), np.abs(gy))
        fmt = case["fmt"]
        opts = dict(pool_size=(rows["k"], cols["k"]), stride=(rows["stride"], cols["stride"]),
                    padding=(rows["pads"], cols["pads"]), ceil_mode=case["ceil_mode"], data_format=fmt)
        x_l, gy_l = _to_layout(x, fmt), _to_layout(gy, fmt)
        got, got_idx = fastconv.max_pool2d(x_l, return_indices=True, **opts)
        _equal(got, _to_layout(mx, fmt), case, "max_pool2d")
        np.testing.assert_array_equal(got_idx, _to_layout(idx, fmt), err_msg=f"max_pool2d indices {case}")
        _equal(fastconv.max_pool2d_grad(gy_l, got_idx, x_l.shape, **opts), _to_layout(gmax, fmt), case,
               "max_pool2d_grad")
        cip = case["count_include_pad"]
        terms = max(x[0, 0].size, gy[0, 0].size)  # at most this many cells per window, windows per cell
        got = fastconv.avg_pool2d(x_l, count_include_pad=cip, **opts)
        assert_close(got, _to_layout(avg, fmt), _to_layout(avg_magnitude, fmt), terms, case["dtype"],
                     f"avg_pool2d {case}")
        got = fastconv.avg_pool2d_grad(gy_l, x_l.shape, count_include_pad=cip, **opts)
        assert_close(got, _to_layout(gavg, fmt), _to_layout(gavg_magnitude, fmt), terms, case["dtype"],
                     f"avg_pool2d_grad {case}")

    check()
    examples.expect(fuzz_examples, "pools_extreme_geometry")
