"""Run the suites and collect one row per (case, operation) with every contender's time."""
from fastconv.bench import peers, training
from fastconv.bench.timing import interleaved_medians

CONV_OPS = ("forward", "grad_input", "grad_weight")


def conv_rows(layers, ops, threads, rounds, min_seconds, numpy_peer=True):
    has_torch, has_ort = peers.torch_available(), peers.onnxruntime_available()
    rows = []
    for layer in layers:
        for op in ops:
            contenders = {
                "fastconv_nhwc": peers.fastconv_conv(layer, op, channels_last=True),
                "fastconv_nchw": peers.fastconv_conv(layer, op, channels_last=False),
            }
            if has_torch:
                contenders["torch_nchw"] = peers.torch_conv(layer, op, channels_last=False, threads=threads)
                contenders["torch_nhwc"] = peers.torch_conv(layer, op, channels_last=True, threads=threads)
            if has_ort and op == "forward":
                contenders["onnxruntime"] = peers.onnxruntime_conv(layer, threads)
            if numpy_peer and op == "forward":
                contenders["numpy"] = peers.numpy_conv(layer)
            seconds = interleaved_medians(contenders, rounds, min_seconds)
            rows.append({"case": layer.name, "op": op, "gflop": layer.gflop, "seconds": seconds})
    return rows


def pool_rows(cases, threads, rounds, min_seconds, numpy_peer=True):
    has_torch = peers.torch_available()
    rows = []
    for case in cases:
        for backward in (False, True):
            contenders = {"fastconv_nhwc": peers.fastconv_pool(case, backward)}
            if has_torch:
                contenders["torch_nchw"] = peers.torch_pool(case, backward, channels_last=False, threads=threads)
                contenders["torch_nhwc"] = peers.torch_pool(case, backward, channels_last=True, threads=threads)
            if numpy_peer and not backward:
                contenders["numpy"] = peers.numpy_pool(case)
            seconds = interleaved_medians(contenders, rounds, min_seconds)
            op = "forward+backward" if backward else "forward"
            rows.append({"case": case.name, "op": op, "bytes": case.input_bytes, "seconds": seconds})
    return rows


def training_rows(models, threads, rounds, min_seconds):
    """One row per end-to-end model: seconds per training step of fastconv and of PyTorch in both layouts."""
    has_torch = peers.torch_available()
    rows = []
    for model in models:
        contenders = {"fastconv_nhwc": training.fastconv_step(model)}
        if has_torch:
            contenders["torch_nchw"] = training.torch_step(model, channels_last=False, threads=threads)
            contenders["torch_nhwc"] = training.torch_step(model, channels_last=True, threads=threads)
        seconds = interleaved_medians(contenders, rounds, min_seconds)
        rows.append({"case": model.name, "batch": model.batch, "seconds": seconds})
    return rows
