"""Convolution benchmarks: fastconv against PyTorch and a plain NumPy im2col baseline.

Layers (float32, stride 1):
- ``56x56x256-256_3x3_pad1_b1``: a ResNet stage, batch 1, 56x56x256 -> 256, 3x3, padding 1;
- ``32x3x150x150-32_3x3``: a first layer, 32 images of 3x150x150 -> 32, 3x3, valid;
- ``64x32x13x13-64_3x3``: a small late layer, 64 images of 32x13x13 -> 64, 3x3, valid.

Each layer is timed forward and forward+backward (grad input, grad weight and grad bias) for
- fastconv, channels_last and channels_first, algorithm "direct" and "im2col";
- PyTorch, NCHW and channels_last memory format (autograd for the backward pass);
- NumPy: im2col through ``sliding_window_view`` + one matmul per batch chunk (the backward pass is the same
  lowering: grad input as a full correlation with the flipped kernel, grad weight as ``cols.T @ grad_output``).

One ``benchmark.group`` per layer and pass; ``extra_info`` holds GFLOP/s (2 * multiply-adds; forward+backward
counts three convolutions). PyTorch and fastconv run with the same thread count (see conftest.py).
"""
import functools

import numpy as np
import pytest

LAYERS = {
    "56x56x256-256_3x3_pad1_b1": dict(n=1, c=256, h=56, w=56, k=256, r=3, s=3, pad=1),
    "32x3x150x150-32_3x3": dict(n=32, c=3, h=150, w=150, k=32, r=3, s=3, pad=0),
    "64x32x13x13-64_3x3": dict(n=64, c=32, h=13, w=13, k=64, r=3, s=3, pad=0),
}
PASSES = ("forward", "forward+backward")
IMPLS = (
    "fastconv-channels_last-direct",
    "fastconv-channels_last-im2col",
    "fastconv-channels_first-direct",
    "fastconv-channels_first-im2col",
    "torch-nchw",
    "torch-channels_last",
    "numpy-im2col",
)


def _out_hw(L):
    return L["h"] + 2 * L["pad"] - L["r"] + 1, L["w"] + 2 * L["pad"] - L["s"] + 1


def _flop(L, pass_):
    oh, ow = _out_hw(L)
    fwd = 2.0 * L["n"] * oh * ow * L["k"] * L["c"] * L["r"] * L["s"]
    return fwd if pass_ == "forward" else 3.0 * fwd


@functools.lru_cache(maxsize=1)
def _data(layer):
    """float32 data in channels_last (NHWC activations, HWIO weight); one layer cached at a time."""
    L = LAYERS[layer]
    rng = np.random.default_rng(0)
    oh, ow = _out_hw(L)
    x = rng.standard_normal((L["n"], L["h"], L["w"], L["c"]), dtype=np.float32)
    w = (rng.standard_normal((L["r"], L["s"], L["c"], L["k"]), dtype=np.float32)
         / np.float32(np.sqrt(L["r"] * L["s"] * L["c"])))
    b = rng.standard_normal(L["k"], dtype=np.float32)
    gy = rng.standard_normal((L["n"], oh, ow, L["k"]), dtype=np.float32)
    return x, w, b, gy


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _oihw(w):
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


# --------------------------------------------------------------------------------------------
# fastconv


def _fastconv_step(layer, pass_, data_format, algorithm):
    fc = pytest.importorskip("fastconv")
    L = LAYERS[layer]
    x, w, b, gy = _data(layer)
    if data_format == "channels_first":
        x, w, gy = _nchw(x), _oihw(w), _nchw(gy)
    opts = dict(padding=L["pad"], data_format=data_format, algorithm=algorithm)

    if pass_ == "forward":
        def step():
            return fc.conv2d(x, w, b, **opts)
    else:
        def step():
            y = fc.conv2d(x, w, b, **opts)
            gx = fc.conv2d_grad_input(gy, w, x.shape, **opts)
            gw = fc.conv2d_grad_weight(gy, x, w.shape, **opts)
            gb = fc.conv2d_grad_bias(gy, data_format=data_format)
            return y, gx, gw, gb
    return step


# --------------------------------------------------------------------------------------------
# PyTorch


def _torch_step(layer, pass_, memory_format):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    L = LAYERS[layer]
    x, w, b, gy = _data(layer)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    tx = torch.from_numpy(_nchw(x)).contiguous(memory_format=fmt)
    tw = torch.from_numpy(_oihw(w)).contiguous(memory_format=fmt)
    tb = torch.from_numpy(b.copy())
    tgy = torch.from_numpy(_nchw(gy)).contiguous(memory_format=fmt)
    pad = L["pad"]

    if pass_ == "forward":
        def step():
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, padding=pad)
    else:
        for t in (tx, tw, tb):
            t.requires_grad_(True)

        def step():
            tx.grad = tw.grad = tb.grad = None
            y = F.conv2d(tx, tw, tb, padding=pad)
            y.backward(tgy)
            return y, tx.grad, tw.grad, tb.grad
    return step


# --------------------------------------------------------------------------------------------
# NumPy im2col baseline (channels_last, stride 1, dilation 1)

_CHUNK_BYTES = 64 << 20  # column buffer per batch chunk


def _cols(xp, r, s):
    """(n, Hp, Wp, C) padded input -> (n * OH * OW, r * s * C) column matrix (a copy)."""
    win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(1, 2))  # (n, OH, OW, C, r, s)
    n, oh, ow, c = win.shape[:4]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, r * s * c)


def _chunks(n, per_image_bytes):
    step = max(1, _CHUNK_BYTES // max(per_image_bytes, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def np_conv2d(x, w, b, pad):
    n, h, wd, c = x.shape
    r, s, _, k = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = h + 2 * pad - r + 1, wd + 2 * pad - s + 1
    wm = w.reshape(r * s * c, k)
    y = np.empty((n, oh, ow, k), dtype=np.result_type(x, w))
    for sl in _chunks(n, oh * ow * r * s * c * x.itemsize):
        m = np.matmul(_cols(xp[sl], r, s), wm)
        if b is not None:
            m += b
        y[sl] = m.reshape(-1, oh, ow, k)
    return y


def np_conv2d_grad_input(gy, w, pad):
    r, s = w.shape[:2]
    w_flip = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))  # (r, s, K, C)
    return np_conv2d(gy, w_flip, None, r - 1 - pad)  # full correlation; needs pad <= r - 1


def np_conv2d_grad_weight(gy, x, w_shape, pad):
    r, s, c, k = w_shape
    n = x.shape[0]
    oh, ow = gy.shape[1:3]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    gw = np.zeros((r * s * c, k), dtype=np.result_type(x, gy))
    for sl in _chunks(n, oh * ow * r * s * c * x.itemsize):
        gw += _cols(xp[sl], r, s).T @ gy[sl].reshape(-1, k)
    return gw.reshape(r, s, c, k)


def _numpy_step(layer, pass_):
    L = LAYERS[layer]
    x, w, b, gy = _data(layer)
    pad = L["pad"]
    if pass_ == "forward":
        def step():
            return np_conv2d(x, w, b, pad)
    else:
        def step():
            y = np_conv2d(x, w, b, pad)
            gx = np_conv2d_grad_input(gy, w, pad)
            gw = np_conv2d_grad_weight(gy, x, w.shape, pad)
            gb = gy.sum(axis=(0, 1, 2))
            return y, gx, gw, gb
    return step


# --------------------------------------------------------------------------------------------


def _make_step(impl, layer, pass_):
    if impl.startswith("fastconv-"):
        _, data_format, algorithm = impl.split("-")
        return _fastconv_step(layer, pass_, data_format, algorithm)
    if impl.startswith("torch-"):
        return _torch_step(layer, pass_, impl.split("-", 1)[1])
    return _numpy_step(layer, pass_)


# the decorator nearest the function varies slowest: one layer's data is built once for all its runs
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv(measure, layer, pass_, impl):
    step = _make_step(impl, layer, pass_)
    L = LAYERS[layer]
    measure(step, group=f"conv {layer} {pass_}", flop=_flop(L, pass_), layer=layer, impl=impl, pass_=pass_,
            dtype="float32")


def test_numpy_baseline_is_a_convolution():
    """The baseline computes what it claims (cheap check against PyTorch; not a benchmark)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 7, 6, 4))
    tx = torch.from_numpy(_nchw(x)).requires_grad_(True)
    tw = torch.from_numpy(_oihw(w)).requires_grad_(True)
    y = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), padding=1)
    y.backward(torch.from_numpy(_nchw(gy)))
    np.testing.assert_allclose(np_conv2d(x, w, b, 1), y.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10)
    np.testing.assert_allclose(np_conv2d_grad_input(gy, w, 1), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10)
    np.testing.assert_allclose(np_conv2d_grad_weight(gy, x, w.shape, 1), tw.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-10)
