"""Another extension cimports fastconv's kernels through fastconv.get_include() and calls them without the GIL.

embed_probe.pyx is built in a temporary folder, in a subprocess whose working directory is that folder (so the
source tree cannot stand in for the installed fastconv), exactly as a user's package would be built.
"""
import importlib.machinery
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv._kernels import conv_direct, openmp_helpers

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embed_probe.pyx")
PXD_FILES = ("geometry.pxd", "conv_direct.pxd", "pooling.pxd", "avg_pooling.pxd", "conv_im2col.pxd")

SETUP = """
import json
import sys
import numpy
import fastconv
from Cython.Build import cythonize
from setuptools import Extension, setup

openmp = ["-fopenmp"] if sys.argv.pop(1) == "openmp" else []
print("FASTCONV", json.dumps([fastconv.__file__, fastconv.get_include()]))
ext = Extension("embed_probe", ["embed_probe.pyx"], include_dirs=[numpy.get_include()],
                extra_compile_args=["-O0", "-g0", "-w"] + openmp, extra_link_args=openmp)  # quick build
setup(name="embed_probe", script_args=["build_ext", "--inplace"],
      ext_modules=cythonize([ext], include_path=[fastconv.get_include()], quiet=True))
"""


def _c_compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(shlex.split(cc)[0])


def _build(folder, openmp):
    return subprocess.run([sys.executable, "setup_probe.py", "openmp" if openmp else "serial"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    pytest.importorskip("Cython", reason="building a Cython extension needs Cython")
    pytest.importorskip("setuptools", reason="building a Cython extension needs setuptools")
    if os.name == "nt":
        pytest.skip("the embedding build uses gcc/clang flags (-fopenmp, -O0); not set up for MSVC")
    if _c_compiler() is None:
        pytest.skip("building a Cython extension needs a C compiler; none found (set CC or put cc on PATH)")
    folder = tmp_path_factory.mktemp("embed_probe")
    shutil.copy(PROBE, folder / "embed_probe.pyx")
    (folder / "setup_probe.py").write_text(textwrap.dedent(SETUP))
    proc = _build(folder, openmp=openmp_helpers.openmp_enabled())
    if proc.returncode != 0 and "fopenmp" in proc.stderr:   # a compiler without OpenMP: serial outer loop
        proc = _build(folder, openmp=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The build saw the fastconv this test runs against, not a copy of the source tree.
    line = next(l for l in proc.stdout.splitlines() if l.startswith("FASTCONV "))
    assert json.loads(line[len("FASTCONV "):]) == [fastconv.__file__, fastconv.get_include()]
    built = [name for name in os.listdir(folder) if name.startswith("embed_probe.") and name.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    assert len(built) == 1, os.listdir(folder)
    spec = importlib.util.spec_from_file_location("embed_probe", folder / built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_get_include_holds_the_declarations_of_the_loaded_kernels():
    include = fastconv.get_include()
    assert os.path.isabs(include)
    kernels = os.path.join(include, "fastconv", "_kernels")
    for name in PXD_FILES:
        assert os.path.isfile(os.path.join(kernels, name)), name
    # The .pxd files sit beside the very modules the cimported functions are loaded from at run time.
    assert os.path.samefile(kernels, os.path.dirname(conv_direct.__file__))


TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, pads, pool", [(1, (0, 0, 0, 0), 2), (2, (1, 2, 0, 1), 3)],
                         ids=["valid", "strided-padded"])
def test_conv_and_pool_kernels_called_from_nogil_code(probe, dtype, stride, pads, pool, rng):
    x = rng.standard_normal((3, 17, 15, 5)).astype(dtype)
    w = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    conv, pooled, indices = probe.conv_pool(x, w, b, stride, pads, pool, 2)

    expected = fastconv.conv2d(x, w, b, stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])))
    assert conv.shape == expected.shape and conv.dtype == dtype
    np.testing.assert_allclose(conv, expected, **TOLERANCE[dtype])
    # Same pooling kernel on the same data: exactly fastconv's answer, values and argmax indices.
    exp_pooled, exp_indices = fastconv.max_pool2d(conv, pool, return_indices=True)
    np.testing.assert_array_equal(pooled, exp_pooled)
    np.testing.assert_array_equal(indices, exp_indices)
    np.testing.assert_allclose(pooled, fastconv.max_pool2d(expected, pool), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_called_with_one_thread_inside_an_outer_parallel_loop(probe, dtype, rng):
    x = rng.standard_normal((6, 12, 10, 4)).astype(dtype)
    w = rng.standard_normal((3, 3, 4, 6)).astype(dtype)
    per_image = probe.conv_per_image(x, w, 2)
    # One call over the whole batch with two kernel threads does the same sums in the same order.
    whole, _, _ = probe.conv_pool(x, w, np.zeros(6, dtype), 1, (0, 0, 0, 0), 1, 2)
    np.testing.assert_array_equal(per_image, whole)
    np.testing.assert_allclose(per_image, fastconv.conv2d(x, w), **TOLERANCE[dtype])


def test_the_embedding_wrapper_validates_before_the_kernels_run(probe, rng):
    x = rng.standard_normal((1, 8, 8, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"weight must have 5 input channels; received weight with shape"):
        probe.conv_pool(x, w, np.zeros(2, np.float32), 1, (0, 0, 0, 0), 2, 1)
    with pytest.raises(ValueError, match="C-contiguous"):   # the typed memoryview's own check
        probe.conv_pool(x[:, ::2], w[:, :, :1], np.zeros(2, np.float32), 1, (0, 0, 0, 0), 2, 1)
