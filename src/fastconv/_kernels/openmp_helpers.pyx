"""Python-visible facts about the OpenMP runtime the kernels were built with."""


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (otherwise they run serially)."""
    return bool(fastconv_openmp_enabled())


def omp_max_threads():
    """The OpenMP runtime's default team size (1 without OpenMP)."""
    return fastconv_omp_max_threads()
