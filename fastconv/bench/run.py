"""Run the suites and collect one row per (case, operation) with every contender's time."""
from fastconv.bench import peers, training
from fastconv.bench.timing import interleaved_medians

CONV_OPS = ("forward", "grad_input", "grad_weight")


def _apart(contenders, rounds, min_seconds):
    """Time the plain NumPy baseline on its own, after the others: NumPy's OpenBLAS keeps its threads busy-waiting
    for a while after each call, which, interleaved, halved the next contender's speed (measured: fastconv 166 ->
    133 and PyTorch 308 -> 136 GFLOP/s on vgg_conv1_2 with 2 threads). It never is the best peer."""
    return interleaved_medians(contenders, rounds, min_seconds)


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
            seconds = interleaved_medians(contenders, rounds, min_seconds)
            if numpy_peer and op == "forward":
                seconds.update(_apart({"numpy": peers.numpy_conv(layer)}, rounds, min_seconds))
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
            seconds = interleaved_medians(contenders, rounds, min_seconds)
            if numpy_peer and not backward:
                seconds.update(_apart({"numpy": peers.numpy_pool(case)}, rounds, min_seconds))
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
