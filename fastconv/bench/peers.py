"""The contenders: fastconv in both layouts, PyTorch in both memory formats, onnxruntime, and plain NumPy (an
im2col made of a sliding-window view and one BLAS matmul: what a user would write without a kernel library).
Each peer is optional and imported lazily; a peer that is not installed is simply absent from the results.

TensorFlow is not a peer: it cannot be installed next to this project's pinned PyTorch in CI, and Keras 3 on
the torch backend would only time PyTorch again."""
import importlib.metadata

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import fastconv


def conv_inputs(layer, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((layer.batch, layer.size, layer.size, layer.in_c), dtype=np.float32)
    w = rng.standard_normal((layer.kernel, layer.kernel, layer.in_c, layer.out_c), dtype=np.float32)
    w *= np.float32(1 / np.sqrt(layer.in_c * layer.kernel ** 2))
    gy = rng.standard_normal((layer.batch, layer.out_size, layer.out_size, layer.out_c), dtype=np.float32)
    return x, w, gy


def fastconv_conv(layer, op, channels_last, algorithm="auto"):
    x, w, gy = conv_inputs(layer)
    fmt = "channels_last" if channels_last else "channels_first"
    if not channels_last:
        x, gy = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(gy.transpose(0, 3, 1, 2))
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    kw = dict(stride=layer.stride, padding=layer.pad, data_format=fmt, algorithm=algorithm)
    if op == "forward":
        out = np.empty(gy.shape, np.float32)
        return lambda: fastconv.conv2d(x, w, out=out, **kw)
    if op == "grad_input":
        return lambda: fastconv.conv2d_grad_input(gy, w, x.shape, **kw)
    return lambda: fastconv.conv2d_grad_weight(gy, x, w.shape, **kw)


def installed_peers():
    """``{peer: version}`` of the peers this process can run (NumPy always)."""
    found = {"numpy": np.__version__}
    for name, dist in (("torch", "torch"), ("onnxruntime", "onnxruntime")):
        available = torch_available() if name == "torch" else onnxruntime_available()
        if available:
            found[name] = importlib.metadata.version(dist)
    return found


def numpy_conv(layer):
    """Forward convolution in plain NumPy, NHWC: the patches of a sliding-window view, copied into an im2col
    matrix by the reshape, times the kernel matrix."""
    x, w, _ = conv_inputs(layer)
    p, k, s = layer.pad, layer.kernel, layer.stride
    if p:
        x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]   # (N, Ho, Wo, C, R, S)
    kernel = np.ascontiguousarray(w.transpose(2, 0, 1, 3).reshape(-1, layer.out_c))  # rows in (C, R, S) order
    rows = layer.batch * layer.out_size ** 2
    return lambda: np.matmul(windows.reshape(rows, -1), kernel)


def numpy_pool(case):
    """Max-pool forward in plain NumPy: the max of a sliding-window view (-inf padding for "same")."""
    x = pool_inputs(case)
    if case.padding == "same":
        total = max((-(-case.size // case.stride) - 1) * case.stride + case.pool - case.size, 0)
        pad = (total // 2, total - total // 2)
        x = np.pad(x, ((0, 0), pad, pad, (0, 0)), constant_values=-np.inf)
    windows = sliding_window_view(x, (case.pool, case.pool), axis=(1, 2))[:, ::case.stride, ::case.stride]
    return lambda: windows.max(axis=(-2, -1))


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_conv(layer, op, channels_last, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x, w, gy = conv_inputs(layer)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
    gyt = torch.from_numpy(gy).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    kw = dict(stride=layer.stride, padding=layer.pad)
    if op == "forward":
        def run():
            with torch.no_grad():
                F.conv2d(xt, wt, **kw)
    elif op == "grad_input":
        def run():
            torch.nn.grad.conv2d_input(xt.shape, wt, gyt, **kw)
    else:
        def run():
            torch.nn.grad.conv2d_weight(xt, wt.shape, gyt, **kw)
    return run


def onnxruntime_available():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnxruntime_conv(layer, threads):
    """A one-node Conv model (NCHW, as ONNX defines it) run by onnxruntime's CPU provider."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x, w, _ = conv_inputs(layer)
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    wn = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[layer.kernel] * 2,
                            strides=[layer.stride] * 2, pads=[layer.pad] * 4)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xn.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(wn, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning, as OpenMP's do shortly after a region (fair to whoever runs next).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": xn})


def pool_inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((case.batch, case.size, case.size, case.channels), dtype=np.float32)


def fastconv_pool(case, with_backward):
    x = pool_inputs(case)
    kw = dict(stride=case.stride, padding=case.padding)
    if not with_backward:
        return lambda: fastconv.max_pool2d(x, case.pool, **kw)

    kw["index_format"] = "window"  # one byte per output cell, as fastconv's layers keep them

    def run():
        y, idx = fastconv.max_pool2d(x, case.pool, return_indices=True, **kw)
        fastconv.max_pool2d_grad(y, idx, x.shape, pool_size=case.pool, **kw)
    return run


def torch_pool(case, with_backward, channels_last, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(pool_inputs(case)).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    if case.padding == "same":
        total = max((-(-case.size // case.stride) - 1) * case.stride + case.pool - case.size, 0)
        pads = (total // 2, total - total // 2) * 2
    else:
        pads = None

    def forward(inp):
        if pads is not None:
            inp = F.pad(inp, pads, value=float("-inf"))
        return F.max_pool2d(inp, case.pool, case.stride)

    if not with_backward:
        def run():
            with torch.no_grad():
                forward(xt)
        return run
    xg = xt.detach().clone().requires_grad_(True)

    def run_backward():
        y = forward(xg)
        y.backward(torch.ones_like(y))
        xg.grad = None
    return run_backward
