"""Thread counts for the OpenMP kernels, and BLAS held to one thread while they run.

fastconv's kernels parallelise with OpenMP and call SciPy's BLAS from inside their parallel regions, one GEMM
per thread on its own tile. BLAS must therefore run single-threaded meanwhile, or every kernel thread would
start a full BLAS team (oversubscription). The limit is process-wide, so it is reference-counted: the first
kernel call to start sets it and the last one to finish restores the user's setting, however many Python
threads call fastconv at once.
"""
import contextlib
import operator
import os
import threading

from fastconv._kernels import openmp_helpers

_requested_threads = None
# OMP_NUM_THREADS, or every core this process may use, as the OpenMP runtime saw it when fastconv loaded.
_RUNTIME_DEFAULT = max(1, openmp_helpers.omp_max_threads())

_blas_lock = threading.Lock()
_blas_users = 0
_blas_controller = None
_blas_setters = None
_blas_saved = None

# GNU libgomp keeps its thread team across fork, but the child gets none of the threads: a child forked after
# the parent ran a parallel region hangs in its next multi-threaded one. Such a child runs fastconv on one thread.
_ran_parallel = False
_forked_after_parallel = False


def _after_fork_in_child():
    global _forked_after_parallel, _blas_lock, _blas_users
    _forked_after_parallel = _forked_after_parallel or _ran_parallel
    # a lock another parent thread held at the fork would stay held forever; the BLAS limit it set stays too
    _blas_lock = threading.Lock()
    if _blas_users:
        _blas_users = 0
        for set_threads, n in zip(_blas_setters, _blas_saved):
            set_threads(n)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of threads fastconv's kernels use (overrides ``OMP_NUM_THREADS``).

    Parameters
    ----------
    n : int or None
        At least 1. ``None`` returns to the default.

    Raises
    ------
    TypeError
        If ``n`` is not an int.
    ValueError
        If ``n < 1``.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.set_num_threads(1)
    >>> fastconv.get_num_threads()
    1
    >>> fastconv.set_num_threads(None)
    """
    global _requested_threads
    if n is None:
        _requested_threads = None
        return
    if isinstance(n, bool):
        raise TypeError(f"n must be an int; received n={n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int; received n={n!r}") from None
    if value < 1:
        raise ValueError(f"n must be at least 1; received n={n!r}")
    _requested_threads = value


def get_num_threads():
    """The number of threads the next kernel call will use (at most: small calls use fewer).

    ``set_num_threads(n)`` if it was called; otherwise the OpenMP runtime's default, which is
    ``OMP_NUM_THREADS`` when set and else the number of cores this process may run on. A lower limit set in
    the calling thread through OpenMP (``threadpoolctl.threadpool_limits(k, user_api="openmp")``) caps either.
    1 when fastconv was built without OpenMP, and in a process forked after fastconv ran multi-threaded
    (GNU libgomp cannot start threads there: start worker processes with "spawn" or "forkserver" to use more).
    """
    if not openmp_helpers.openmp_enabled() or _forked_after_parallel:
        return 1
    runtime = max(1, openmp_helpers.omp_max_threads())
    if _requested_threads is None:
        return runtime
    # A runtime count below the one at import comes from omp_set_num_threads in this thread, which is how
    # threadpoolctl's threadpool_limits works: honour it as a ceiling, so a caller that limits its libraries is
    # never defeated by fastconv's own setting.
    return min(_requested_threads, runtime) if runtime < _RUNTIME_DEFAULT else _requested_threads


# Below this much work per thread, one more OpenMP thread costs more than it saves. Waking a thread takes
# microseconds on an idle machine but can take a scheduler time slice (milliseconds) when the cores are busy with
# other work, and a parallel region waits for its slowest thread: on a loaded 2-core machine tiny calls ran 15 ms
# slower with 2 threads than with 1. ~2 MFLOP is ~40 us of arithmetic, 256 KiB ~20 us of memory traffic.
_FLOPS_PER_THREAD = 2_000_000
_BYTES_PER_THREAD = 256 * 1024


def threads_for_flops(flops):
    """The threads a kernel call of ``flops`` arithmetic should use: ``get_num_threads()``, fewer for small
    calls (1 below ~4 MFLOP). Results do not depend on it: every output element has one owning thread."""
    return _note_parallel(max(1, min(get_num_threads(), int(flops // _FLOPS_PER_THREAD))))


def threads_for_bytes(nbytes):
    """As :func:`threads_for_flops` for memory-bound kernels (pooling), by the bytes they touch."""
    return _note_parallel(max(1, min(get_num_threads(), int(nbytes // _BYTES_PER_THREAD))))


def _note_parallel(n):
    global _ran_parallel
    if n > 1:
        _ran_parallel = True
    return n


def _scipy_blas_libraries():
    """threadpoolctl handles on the BLAS that scipy.linalg.cython_blas calls (loaded with our blas module)."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS library before it is looked for)
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    scipy_root = os.path.dirname(os.path.dirname(scipy.__file__))
    scipy_owned = [lib for lib in blas.lib_controllers if os.path.relpath(lib.filepath, scipy_root).startswith("scipy")]
    return scipy_owned or list(blas.lib_controllers)


def _process_wide_setter(lib):
    """A function that sets ``lib``'s thread count for the whole process, whichever Python thread calls it.

    OpenBLAS's own thread pool (pthreads, not OpenMP) is process-wide. threadpoolctl >= 3.8 lets only the first
    Python thread that limits it change it and silently ignores every other thread, so a kernel called from a
    worker thread would run its GEMMs on a full BLAS team (different bits, oversubscribed). The reference count
    below already serialises our changes, so OpenBLAS is called directly.
    """
    if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) != "openmp":
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                setter = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if setter is not None:
                    return setter
    return lib.set_num_threads


@contextlib.contextmanager
def blas_single_threaded():
    """Hold SciPy's BLAS at one thread for the duration of the block (re-entrant, thread-safe)."""
    global _blas_users, _blas_controller, _blas_setters, _blas_saved
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = _scipy_blas_libraries()
            _blas_setters = [_process_wide_setter(lib) for lib in _blas_controller]
        if _blas_users == 0:
            _blas_saved = [lib.num_threads for lib in _blas_controller]
            for set_threads in _blas_setters:
                set_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for set_threads, n in zip(_blas_setters, _blas_saved):
                    set_threads(n)
