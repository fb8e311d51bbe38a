# Everything OpenMP-specific lives here, guarded so that a compiler without OpenMP builds serial kernels.

cdef extern from *:
    """
    #if FASTCONV_OPENMP
    #include <omp.h>
    static int fastconv_openmp_enabled(void) { return 1; }
    static int fastconv_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastconv_openmp_enabled(void) { return 0; }
    static int fastconv_omp_max_threads(void) { return 1; }
    #endif
    """
    int fastconv_openmp_enabled() noexcept nogil
    int fastconv_omp_max_threads() noexcept nogil
