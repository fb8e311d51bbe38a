"""Build fastconv's Cython kernels.

The kernels live in ``src/fastconv/_kernels`` and are compiled into the ``fastconv._kernels`` package, with their
``.pxd`` files installed beside them so that other Cython code can ``cimport`` them.

Environment switches:
- ``FASTCONV_DEBUG=1``: bounds checking and wraparound back on, no optimisation (for tests under sanitizers).
- ``FASTCONV_SANITIZE=address,undefined``: compile and link with these ``-fsanitize`` checks (UB is fatal); run
  the tests with the sanitizer runtime preloaded (see .ci/run).
- ``FASTCONV_NO_OPENMP=1``: build serial kernels even where the compiler has OpenMP.
- ``FASTCONV_BUILD_ONLY=name,...``: compile only these kernel families (development rebuilds).
"""
import os
import subprocess
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = os.path.join("src", "fastconv", "_kernels")
# One extension per .pyx family in KERNEL_DIR (a new kernel family needs no edit here).
KERNEL_MODULES = sorted(os.path.splitext(name)[0] for name in os.listdir(KERNEL_DIR) if name.endswith(".pyx"))
# Developers' switch for quick rebuilds: FASTCONV_BUILD_ONLY=pooling,conv_direct compiles just those families.
if os.environ.get("FASTCONV_BUILD_ONLY"):
    KERNEL_MODULES = [m for m in KERNEL_MODULES if m in os.environ["FASTCONV_BUILD_ONLY"].split(",")]
DEBUG = os.environ.get("FASTCONV_DEBUG", "0") == "1"
SANITIZE = [name for name in os.environ.get("FASTCONV_SANITIZE", "").split(",") if name]
# Sanitized builds compile these at -O0 rather than -O1: the depthwise module's six unrolled instantiations (three
# instruction sets x two dtypes) take gcc 150 s at -O1 under ASan, 30 s at -O0; its sanitized tests run 8.5 -> 11 s.
SANITIZE_UNOPTIMISED = {"conv_depthwise"}


def compiler_has_openmp(compiler_cmd):
    """Compile and link a tiny OpenMP program; True when the compiler accepts -fopenmp."""
    if os.environ.get("FASTCONV_NO_OPENMP", "0") == "1":
        return False
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { int n = 0;
        #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "check_openmp.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = [compiler_cmd, "-fopenmp", src, "-o", os.path.join(tmp, "check_openmp")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


class BuildKernels(build_ext):
    """build_ext that adds OpenMP flags when the compiler supports them and warns when it does not, and compiles
    the kernel families in parallel (one per core) unless ``-j`` says otherwise."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                else os.cpu_count() or 1)

    def build_extensions(self):
        compiler_cmd = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        openmp = compiler_has_openmp(compiler_cmd)
        if not openmp:
            warnings.warn(
                "fastconv: the C compiler has no OpenMP support; building serial kernels "
                "(fastconv.show_config() will report it)."
            )
        for ext in self.extensions:
            ext.define_macros.append(("FASTCONV_OPENMP", "1" if openmp else "0"))
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


def kernel_extensions():
    if DEBUG:
        compile_args = ["-O0", "-g"]
    else:
        # -O3 lets gcc vectorise the channel loops; -fno-math-errno keeps math calls inlinable.
        compile_args = ["-O3", "-fno-math-errno"]
    link_args = []
    if SANITIZE:
        flags = [f"-fsanitize={','.join(SANITIZE)}", "-fno-omit-frame-pointer"]
        if "undefined" in SANITIZE:
            flags.append("-fno-sanitize-recover=undefined")  # a UB report fails the test run
        # -O1 keeps the sanitized kernel tests fast enough; -O0 (FASTCONV_DEBUG alone) is very slow under ASan.
        compile_args = [a for a in compile_args if not a.startswith("-O")] + ["-O1", "-g"] + flags
        link_args = flags
    extensions = []
    for name in KERNEL_MODULES:
        module_args = list(compile_args)
        if SANITIZE and name in SANITIZE_UNOPTIMISED:
            module_args = [a for a in module_args if not a.startswith("-O")] + ["-O0"]
        extensions.append(
            Extension(
                f"fastconv._kernels.{name}",
                [os.path.join(KERNEL_DIR, f"{name}.pyx")],
                include_dirs=[numpy.get_include(), KERNEL_DIR],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
                extra_compile_args=module_args,
                extra_link_args=list(link_args),
            )
        )
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "nonecheck": DEBUG,
        "embedsignature": True,
    }
    return cythonize(
        extensions,
        nthreads=0 if os.name == "nt" else min(4, os.cpu_count() or 1),
        compiler_directives=directives,
        include_path=["src"],
        compile_time_env={"FASTCONV_DEBUG": DEBUG},
    )


setup(
    packages=find_packages(include=["fastconv", "fastconv.*"]) + ["fastconv._kernels"],
    package_dir={"fastconv": "fastconv", "fastconv._kernels": KERNEL_DIR},
    package_data={"fastconv._kernels": ["*.pxd", "*.pyx", "*.h"]},
    ext_modules=kernel_extensions(),
    cmdclass={"build_ext": BuildKernels},
    zip_safe=False,
)
