"""Max-pooling benchmarks: fastconv against PyTorch and a plain NumPy baseline.

Layers (float32; shapes given channels_last, NHWC):
- ``2x2s2_32x148x148x32``: pool 2x2, stride 2, valid, on (32, 148, 148, 32);
- ``3x3s2same_8x112x112x64``: pool 3x3, stride 2, padding "same" on (8, 112, 112, 64) (Keras "same": the one
  row/column of padding goes at the bottom/right; PyTorch gets it through ``F.pad`` with -inf, timed with it).

Each layer is timed forward (no indices) and forward+backward (forward with indices, then the gradient
scatter) for fastconv (channels_last and channels_first), PyTorch (NCHW and channels_last memory format, autograd)
and NumPy (``sliding_window_view`` + max / argmax + ``bincount`` scatter).

``extra_info["gflop_per_s"]`` counts one operation per window cell visited (N * OH * OW * C * kh * kw
comparisons), so that the numbers compare implementations, not pooling with convolution.
"""
import functools

import numpy as np
import pytest

LAYERS = {
    "2x2s2_32x148x148x32": dict(shape=(32, 148, 148, 32), pool=2, stride=2, padding="valid"),
    "3x3s2same_8x112x112x64": dict(shape=(8, 112, 112, 64), pool=3, stride=2, padding="same"),
}
PASSES = ("forward", "forward+backward")
IMPLS = (
    "fastconv-channels_last",
    "fastconv-channels_first",
    "torch-nchw",
    "torch-channels_last",
    "numpy",
)


def _geometry(L):
    """((pt, pb), (pl, pr)), (OH, OW) for a layer (square pool and stride)."""
    n, h, w, c = L["shape"]
    k, s = L["pool"], L["stride"]
    pads, out = [], []
    for size in (h, w):
        if L["padding"] == "same":
            o = -(-size // s)
            total = max((o - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        else:
            o = (size - k) // s + 1
            pads.append((0, 0))
        out.append(o)
    return tuple(pads), tuple(out)


def _ops(L, pass_):
    n, h, w, c = L["shape"]
    _, (oh, ow) = _geometry(L)
    ops = float(n * oh * ow * c * L["pool"] ** 2)
    return ops if pass_ == "forward" else ops + n * oh * ow * c  # + one scatter-add per output cell


@functools.lru_cache(maxsize=1)
def _data(layer):
    L = LAYERS[layer]
    _, (oh, ow) = _geometry(L)
    n, h, w, c = L["shape"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, c), dtype=np.float32)
    gy = rng.standard_normal((n, oh, ow, c), dtype=np.float32)
    return x, gy


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _fastconv_step(layer, pass_, data_format):
    fc = pytest.importorskip("fastconv")
    L = LAYERS[layer]
    x, gy = _data(layer)
    if data_format == "channels_first":
        x, gy = _nchw(x), _nchw(gy)
    opts = dict(stride=L["stride"], padding=L["padding"], data_format=data_format)
    k = L["pool"]
    if pass_ == "forward":
        def step():
            return fc.max_pool2d(x, k, **opts)
    else:
        # one-byte window positions where they apply (channels_last), as fastconv's layers use
        opts["index_format"] = "window" if data_format == "channels_last" else "flat"

        def step():
            y, idx = fc.max_pool2d(x, k, return_indices=True, **opts)
            gx = fc.max_pool2d_grad(gy, idx, x.shape, pool_size=k, **opts)
            return y, gx
    return step


def _torch_step(layer, pass_, memory_format):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    L = LAYERS[layer]
    x, gy = _data(layer)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    tx = torch.from_numpy(_nchw(x)).contiguous(memory_format=fmt)
    tgy = torch.from_numpy(_nchw(gy)).contiguous(memory_format=fmt)
    k, s = L["pool"], L["stride"]
    ((pt, pb), (pl, pr)), _ = _geometry(L)
    padded = (pt, pb, pl, pr) != (0, 0, 0, 0)

    def pool(t):
        if padded:  # asymmetric "same" padding: PyTorch's own padding is symmetric
            t = F.pad(t, (pl, pr, pt, pb), value=float("-inf"))
        return F.max_pool2d(t, k, s)

    if pass_ == "forward":
        def step():
            with torch.no_grad():
                return pool(tx)
    else:
        tx.requires_grad_(True)

        def step():
            tx.grad = None
            y = pool(tx)
            y.backward(tgy)
            return y, tx.grad
    return step


# --------------------------------------------------------------------------------------------
# NumPy baseline (channels_last)


def _windows(x, L):
    """(N, OH, OW, C, k, k) strided view of the -inf-padded input, and the padding used."""
    ((pt, pb), (pl, pr)), _ = _geometry(L)
    if (pt, pb, pl, pr) != (0, 0, 0, 0):
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    k, s = L["pool"], L["stride"]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win, (pt, pl)


def np_max_pool2d(x, L):
    win, _ = _windows(x, L)
    return win.max(axis=(-2, -1))


def np_max_pool2d_fwd_bwd(x, gy, L):
    n, h, w, c = x.shape
    k, s = L["pool"], L["stride"]
    win, (pt, pl) = _windows(x, L)
    _, oh, ow = win.shape[:3]
    flat = win.reshape(n, oh, ow, c, k * k)  # a copy
    arg = flat.argmax(axis=-1)  # first maximum in row-major window order
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    rows = np.arange(oh)[None, :, None, None] * s - pt + arg // k
    cols = np.arange(ow)[None, None, :, None] * s - pl + arg % k
    target = ((np.arange(n)[:, None, None, None] * h + rows) * w + cols) * c + np.arange(c)
    gx = np.bincount(target.ravel(), weights=gy.ravel(), minlength=n * h * w * c)
    return y, gx.astype(x.dtype).reshape(n, h, w, c)


def _numpy_step(layer, pass_):
    L = LAYERS[layer]
    x, gy = _data(layer)
    if pass_ == "forward":
        return lambda: np_max_pool2d(x, L)
    return lambda: np_max_pool2d_fwd_bwd(x, gy, L)


# --------------------------------------------------------------------------------------------


def _make_step(impl, layer, pass_):
    if impl.startswith("fastconv-"):
        return _fastconv_step(layer, pass_, impl.split("-", 1)[1])
    if impl.startswith("torch-"):
        return _torch_step(layer, pass_, impl.split("-", 1)[1])
    return _numpy_step(layer, pass_)


# the decorator nearest the function varies slowest: one layer's data is built once for all its runs
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_max_pool(measure, layer, pass_, impl):
    step = _make_step(impl, layer, pass_)
    measure(step, group=f"max_pool {layer} {pass_}", flop=_ops(LAYERS[layer], pass_), layer=layer, impl=impl,
            pass_=pass_, dtype="float32")


@pytest.mark.parametrize("layer", list(LAYERS))
def test_numpy_baseline_is_a_max_pool(layer):
    """The baseline computes what it claims (cheap check against PyTorch on a slice; not a benchmark)."""
    torch = pytest.importorskip("torch")
    L = dict(LAYERS[layer])
    L["shape"] = (2, 11, 9, 3)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(L["shape"])
    ((pt, pb), (pl, pr)), (oh, ow) = _geometry(L)
    gy = rng.standard_normal((2, oh, ow, 3))
    tx = torch.from_numpy(_nchw(x)).requires_grad_(True)
    t = torch.nn.functional.pad(tx, (pl, pr, pt, pb), value=float("-inf"))
    y = torch.nn.functional.max_pool2d(t, L["pool"], L["stride"])
    y.backward(torch.from_numpy(_nchw(gy)))
    ny, ngx = np_max_pool2d_fwd_bwd(x, gy, L)
    np.testing.assert_array_equal(np_max_pool2d(x, L), ny)
    np.testing.assert_array_equal(ny, y.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ngx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)
