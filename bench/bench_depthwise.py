"""Depthwise convolution benchmarks: fastconv against PyTorch on MobileNet-style layers (float32, batch 8, 3x3).

Layers (``HxWxC``, stride, multiplier; "same" padding):
``112x112x32 s1``, ``112x112x64 s2``, ``56x56x128 s1``, ``28x28x256 s1``, ``14x14x512 s1``, ``7x7x1024 s1`` and
``56x56x64 s1 M2`` (channel multiplier 2).

Each layer is timed for the forward pass, the input gradient and the weight gradient separately:
- fastconv ``depthwise_conv2d`` / ``_grad_input`` / ``_grad_weight``, channels_last and channels_first;
- PyTorch ``conv2d(groups=C)`` and ``aten.convolution_backward`` (one gradient at a time), NCHW and
  channels_last memory format. "same" with stride 2 is an explicit (0, 1) pad of the input, as Keras does.

GFLOP/s count 2 * multiply-adds (the same for the three passes). PyTorch and fastconv run with the same thread count
(see conftest.py).

Run as a script for the comparison the numbers in the report come from: every implementation of one pass timed in
the same process, in rounds whose order rotates (no implementation always follows the same one), medians::

    python bench/bench_depthwise.py --threads 2 --rounds 15
"""
import argparse
import functools
import time

import numpy as np
import pytest

LAYERS = {
    "112x112x32_s1": dict(h=112, c=32, stride=1, m=1),
    "112x112x64_s2": dict(h=112, c=64, stride=2, m=1),
    "56x56x128_s1": dict(h=56, c=128, stride=1, m=1),
    "28x28x256_s1": dict(h=28, c=256, stride=1, m=1),
    "14x14x512_s1": dict(h=14, c=512, stride=1, m=1),
    "7x7x1024_s1": dict(h=7, c=1024, stride=1, m=1),
    "56x56x64_s1_M2": dict(h=56, c=64, stride=1, m=2),
}
BATCH = 8
PASSES = ("forward", "grad_input", "grad_weight")
IMPLS = ("fastconv-channels_last", "fastconv-channels_first", "torch-nchw", "torch-channels_last")


def _out_size(L):
    return -(-L["h"] // L["stride"])


def _flop(L):
    return 2.0 * BATCH * _out_size(L) ** 2 * L["c"] * L["m"] * 9


@functools.lru_cache(maxsize=1)
def _data(layer):
    """float32 NHWC input, (R, S, C, M) weight, bias and output gradient; one layer cached at a time."""
    L = LAYERS[layer]
    rng = np.random.default_rng(0)
    k, o = L["c"] * L["m"], _out_size(L)
    x = rng.standard_normal((BATCH, L["h"], L["h"], L["c"]), dtype=np.float32)
    w = rng.standard_normal((3, 3, L["c"], L["m"]), dtype=np.float32) / np.float32(3.0)
    b = rng.standard_normal(k, dtype=np.float32)
    gy = rng.standard_normal((BATCH, o, o, k), dtype=np.float32)
    return x, w, b, gy


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _depthwise_oihw(w):
    r, s, c, m = w.shape
    return np.ascontiguousarray(w.reshape(r, s, c * m).transpose(2, 0, 1)[:, None])


def _fastconv_step(layer, pass_, data_format):
    fc = pytest.importorskip("fastconv")
    L = LAYERS[layer]
    x, w, b, gy = _data(layer)
    if data_format == "channels_first":
        x, w, gy = _nchw(x), _depthwise_oihw(w), _nchw(gy)
    opts = dict(stride=L["stride"], padding="same", data_format=data_format)
    if pass_ == "forward":
        return lambda: fc.depthwise_conv2d(x, w, b, **opts)
    if pass_ == "grad_input":
        return lambda: fc.depthwise_conv2d_grad_input(gy, w, x.shape, **opts)
    return lambda: fc.depthwise_conv2d_grad_weight(gy, x, w.shape, **opts)


def _torch_step(layer, pass_, memory_format):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    L = LAYERS[layer]
    x, w, b, gy = _data(layer)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    tx = torch.from_numpy(_nchw(x))
    stride, pad = L["stride"], 1
    if stride == 2:   # TensorFlow's "same" for an even input: one row and column after, none before
        tx, pad = F.pad(tx, (0, 1, 0, 1)), 0
    tx = tx.contiguous(memory_format=fmt)
    tw = torch.from_numpy(_depthwise_oihw(w)).contiguous(memory_format=fmt)
    tb = torch.from_numpy(b.copy())
    tgy = torch.from_numpy(_nchw(gy)).contiguous(memory_format=fmt)
    groups = L["c"]
    if pass_ == "forward":
        def step():
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, stride, pad, 1, groups)
        return step
    mask = (True, False, False) if pass_ == "grad_input" else (False, True, False)
    backward = torch.ops.aten.convolution_backward

    def step():
        return backward(tgy, tx, tw, None, (stride, stride), (pad, pad), (1, 1), False, (0, 0), groups, mask)
    return step


def _make_step(impl, layer, pass_):
    family, layout = impl.split("-", 1)
    if family == "fastconv":
        return _fastconv_step(layer, pass_, layout)
    return _torch_step(layer, pass_, layout)


# the decorator nearest the function varies slowest: one layer's data is built once for all its runs
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_depthwise(measure, layer, pass_, impl):
    step = _make_step(impl, layer, pass_)
    measure(step, group=f"depthwise {layer} {pass_}", flop=_flop(LAYERS[layer]), layer=layer, impl=impl,
            pass_=pass_, dtype="float32")


def test_torch_peer_is_the_same_convolution():
    """The PyTorch steps compute what fastconv computes (cheap check on the stride-2 layer; not a benchmark)."""
    pytest.importorskip("torch")
    fc = pytest.importorskip("fastconv")
    layer = "112x112x64_s2"
    x, w, b, gy = _data(layer)
    y = _torch_step(layer, "forward", "nchw")().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(_fastconv_step(layer, "forward", "channels_last")(), y, rtol=1e-4, atol=1e-4)
    gw = _torch_step(layer, "grad_weight", "nchw")()[1].numpy()
    ours = fc.depthwise_conv2d_grad_weight(gy, x, w.shape, stride=2, padding="same")
    np.testing.assert_allclose(_depthwise_oihw(ours), gw, rtol=1e-3, atol=1e-2)


# --------------------------------------------------------------------------------------------
# Interleaved comparison (python bench/bench_depthwise.py)


def compare(threads=2, rounds=15, layers=None, out=print):
    """Median GFLOP/s of every implementation of every pass, measured in rotating order within one process."""
    import fastconv
    import torch

    fastconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows = []
    for layer in layers or list(LAYERS):
        flop = _flop(LAYERS[layer])
        for pass_ in PASSES:
            steps = {impl: _make_step(impl, layer, pass_) for impl in IMPLS}
            times = {impl: [] for impl in IMPLS}
            for step in steps.values():
                step()                                   # warm-up
            names = list(steps)
            for r in range(rounds):
                for impl in names[r % len(names):] + names[:r % len(names)]:
                    start = time.perf_counter()
                    steps[impl]()
                    times[impl].append(time.perf_counter() - start)
            gflops = {impl: flop / np.median(t) / 1e9 for impl, t in times.items()}
            best_torch = max(gflops["torch-nchw"], gflops["torch-channels_last"])
            rows.append((layer, pass_, gflops, best_torch))
            out(f"{layer:16s} {pass_:12s} fastconv NHWC {gflops['fastconv-channels_last']:6.1f}  "
                f"NCHW {gflops['fastconv-channels_first']:6.1f}   torch NCHW {gflops['torch-nchw']:6.1f}  "
                f"channels_last {gflops['torch-channels_last']:6.1f}   "
                f"ratio {gflops['fastconv-channels_last'] / best_torch:4.2f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layers", nargs="*", choices=list(LAYERS))
    cli = parser.parse_args()
    compare(cli.threads, cli.rounds, cli.layers)
