"""In a fresh process, the first im2col call (which imports SciPy's BLAS lazily) still holds that BLAS at one
thread while it runs and restores it after."""
import subprocess
import sys

SCRIPT = """
import numpy as np, fastconv
from fastconv import _threads
seen = []
original = _threads.blas_single_threaded
class Spy:
    def __enter__(self):
        self.cm = original(); self.cm.__enter__()
        seen.append([lib.num_threads for lib in _threads._blas_controller])
    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)
_threads.blas_single_threaded = lambda: Spy()
import fastconv.functional as F
F.blas_single_threaded = _threads.blas_single_threaded
x = np.ones((2, 8, 8, 4), np.float32); w = np.ones((3, 3, 4, 8), np.float32)
fastconv.conv2d(x, w, algorithm="im2col")
libs = _threads._blas_controller
assert libs and all("scipy" in lib.filepath for lib in libs), [lib.filepath for lib in libs]
assert seen == [[1] * len(libs)], seen
print("ok")
"""


def test_first_im2col_call_limits_scipy_blas():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
