"""Two targets of the performance issue that are not speeds: workspace memory and warm-up.

- Memory: the extra memory a conv call takes beyond its inputs and outputs. NumPy reports every buffer it
  allocates to tracemalloc, and fastconv's kernels take their workspaces (im2col columns, packed weights,
  per-thread partial sums) as NumPy arrays, so tracemalloc's peak during the call minus the result's size is
  that extra memory. Resident memory (VmHWM of a fresh child per case) is reported beside it as a cross-check
  that no C-side allocation escapes tracemalloc.
- Warm-up: the first call of each op in a fresh process against the median of the next calls, as it comes and
  with SciPy's BLAS imported beforehand (fastconv imports it on the first im2col call, a one-time ~0.15 s), and
  PyTorch's first call of the same op beside it (its fresh output memory faults in just the same).

Run: ``python bench/bench_memory_warmup.py [--threads 2] [--batches 1,32]``. Prints one table; no timing is
ever asserted.
"""
import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
import fastconv
from fastconv.bench.suite import CONV_LAYERS

name, batch, op, threads, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
fastconv.set_num_threads(threads)
layer = next(l for l in CONV_LAYERS if l.name == name)
rng = np.random.default_rng(0)
x = rng.standard_normal((batch, layer.size, layer.size, layer.in_c), dtype=np.float32)
w = rng.standard_normal((layer.kernel, layer.kernel, layer.in_c, layer.out_c), dtype=np.float32) * 0.05
kw = dict(stride=layer.stride, padding=layer.pad)
go = rng.standard_normal((batch, layer.out_size, layer.out_size, layer.out_c), dtype=np.float32)
call = {
    "forward": lambda: fastconv.conv2d(x, w, **kw),
    "grad_input": lambda: fastconv.conv2d_grad_input(go, w, x.shape, **kw),
    "grad_weight": lambda: fastconv.conv2d_grad_weight(go, x, w.shape, **kw),
}[op]

def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))

if mode == "memory":
    base = hwm()
    tracemalloc.start()
    result = call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"extra": peak - result.nbytes, "result": result.nbytes,
                      "rss_extra": hwm() - base - result.nbytes}))
elif mode == "torch":  # PyTorch's own first call of the same op (channels_last), for comparison
    try:
        import torch
    except ImportError:
        print(json.dumps(None))
        sys.exit(0)
    torch.set_num_threads(threads)
    xt, got = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in (x, go))  # NCHW view of NHWC memory
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    args = ([layer.stride] * 2, [layer.pad] * 2, [1, 1], False, [0, 0], 1)
    call = {
        "forward": lambda: torch.nn.functional.conv2d(xt, wt, stride=layer.stride, padding=layer.pad),
        "grad_input": lambda: torch.ops.aten.convolution_backward(got, xt, wt, None, *args, [True, False, False]),
        "grad_weight": lambda: torch.ops.aten.convolution_backward(got, xt, wt, None, *args, [False, True, False]),
    }[op]
    with torch.no_grad():
        t0 = time.perf_counter(); call(); first = time.perf_counter() - t0
        steady = []
        for _ in range(7):
            t0 = time.perf_counter(); call(); steady.append(time.perf_counter() - t0)
    print(json.dumps({"first": first, "steady": float(np.median(steady))}))
else:
    if mode == "warmup_blas":  # the one-time, per-process import of SciPy's BLAS (about 0.15 s) done already
        from fastconv import _threads
        from fastconv._kernels import conv_im2col  # noqa: F401
        _threads._scipy_blas_libraries()
    t0 = time.perf_counter(); call(); first = time.perf_counter() - t0
    steady = []
    for _ in range(7):
        t0 = time.perf_counter(); call(); steady.append(time.perf_counter() - t0)
    print(json.dumps({"first": first, "steady": float(np.median(steady))}))
"""

CASES = ["vgg_conv1_2", "vgg_conv3_2", "vgg_conv5_2", "small_c1", "small_c2", "resnet_stem"]
OPS = ["forward", "grad_input", "grad_weight"]


def _child(*args):
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,32", help="batch sizes for the memory table (vgg_conv1_2)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    print(f"threads={args.threads}\n\nextra memory beyond inputs and outputs (MiB): tracemalloc peak / RSS high-water")
    print(f"{'layer':12s} {'batch':>5s} " + " ".join(f"{op:>17s}" for op in OPS))
    for name in CASES:
        for batch in (batches if name == "vgg_conv1_2" else [None]):
            b = batch or {"small_c1": 32, "small_c2": 32}.get(name, 1)
            cells = []
            for op in OPS:
                m = _child(name, b, op, args.threads, "memory")
                cells.append(f"{m['extra'] / 2**20:8.1f} /{max(m['rss_extra'], 0) / 2**20:7.1f}")
            print(f"{name:12s} {b:5d} " + " ".join(f"{c:>17s}" for c in cells))

    print("\nfirst call / steady state, in a fresh process per op: fastconv as is / fastconv with SciPy's BLAS "
          "already imported / PyTorch (channels_last; '-' without it)")
    print(f"{'layer':12s} " + " ".join(f"{op:>20s}" for op in OPS))
    for name in CASES:
        b = {"small_c1": 32, "small_c2": 32}.get(name, 1)
        cells = []
        for op in OPS:
            cold, warm, peer = (_child(name, b, op, args.threads, mode) for mode in ("warmup", "warmup_blas", "torch"))
            peer_cell = f"{peer['first'] / peer['steady']:5.2f}" if peer else "    -"
            cells.append(f"{cold['first'] / cold['steady']:6.2f} /{warm['first'] / warm['steady']:5.2f} /{peer_cell}")
        print(f"{name:12s} " + " ".join(f"{c:>20s}" for c in cells))


if __name__ == "__main__":
    main()
