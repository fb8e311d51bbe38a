"""The machine's own limits, measured in the same run: sgemm rate and memory copy bandwidth."""
import numpy as np

from fastconv.bench.timing import interleaved_medians


def sgemm_gflops(n=2048, rounds=5):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.empty_like(a)
    seconds = interleaved_medians({"sgemm": lambda: np.matmul(a, a, out=b)}, rounds)["sgemm"]
    return 2 * n ** 3 / seconds / 1e9


def copy_gbytes(megabytes=256, rounds=5):
    src = np.ones(megabytes << 18, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = interleaved_medians({"copy": lambda: np.copyto(dst, src)}, rounds)["copy"]
    # A copy reads and writes every byte.
    return 2 * src.nbytes / seconds / 1e9
