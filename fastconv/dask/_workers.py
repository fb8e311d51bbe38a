"""How many threads fastconv's kernels use inside a Dask task, so that a worker never runs more threads than it
has been given.

The rule (:func:`task_threads`), in the order it is tried:

1. inside a ``distributed`` worker: the worker's thread count (``nthreads``), and the worker's tasks that run
   fastconv take turns, so that at most ``nthreads`` kernel threads run in it at once;
2. in any other thread but the main one (the threaded scheduler's pool): 1 per task; the pool's threads are the
   parallelism;
3. in the main thread of a process started by :mod:`multiprocessing` (the processes scheduler): 1 per task;
4. in the main thread of the main process (the synchronous scheduler): the setting already in force
   (:func:`fastconv.set_num_threads`, else ``OMP_NUM_THREADS``, else every core).

An explicit ``num_threads`` overrides the count; inside a worker, tasks then run ``nthreads // num_threads`` at a
time (at least one). The count is process-wide (the kernels read it at each call), so it is reference-counted:
the first task to enter sets it and the last one to leave restores the previous setting.
"""
import contextlib
import multiprocessing
import sys
import threading

__all__ = ["task_threads", "current_worker", "rule_threads"]

_state_lock = threading.Lock()
_users = 0
_saved = None
_worker_slots = {}  # (worker address, threads per task) -> semaphore bounding the concurrent fastconv tasks
_held = threading.local()  # a thread already holding a slot does not wait for another (nesting never deadlocks)


def current_worker():
    """The ``distributed`` worker running this thread, or None (also when distributed is not even imported)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def _worker_threads(worker):
    state = getattr(worker, "state", None)
    n = getattr(state, "nthreads", None) or getattr(worker, "nthreads", None) or 1
    return max(1, int(n))


def rule_threads(worker=None):
    """The thread count of the module's rule for the current thread (None: leave the setting in force)."""
    if worker is not None:
        return _worker_threads(worker)
    if threading.current_thread() is not threading.main_thread():
        return 1
    if multiprocessing.parent_process() is not None:
        return 1
    return None


def _slots(worker, n):
    key = (getattr(worker, "address", id(worker)), n)
    with _state_lock:
        slot = _worker_slots.get(key)
        if slot is None:
            slot = _worker_slots[key] = threading.BoundedSemaphore(max(1, _worker_threads(worker) // n))
        return slot


@contextlib.contextmanager
def _process_threads(n):
    global _users, _saved
    from fastconv import _threads

    with _state_lock:
        if _users == 0:
            _saved = _threads._requested_threads
        _users += 1
        _threads.set_num_threads(n)
    try:
        yield
    finally:
        with _state_lock:
            _users -= 1
            if _users == 0:
                _threads.set_num_threads(_saved)


@contextlib.contextmanager
def task_threads(num_threads=None):
    """Run the block with fastconv's kernels on the thread count of the module's rule (or ``num_threads``).

    Use it in your own Dask tasks that call fastconv; :func:`fastconv.dask.predict`,
    :func:`fastconv.dask.extract_features` and :class:`fastconv.sklearn.ConvNetClassifier` use it already.

    Parameters
    ----------
    num_threads : int, optional
        At least 1; None applies the rule.

    Raises
    ------
    TypeError, ValueError
        For a ``num_threads`` that is not a positive int.

    Examples
    --------
    >>> import fastconv
    >>> from fastconv.dask import task_threads
    >>> with task_threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    num_threads = check_threads(num_threads)
    worker = current_worker()
    n = num_threads if num_threads is not None else rule_threads(worker)
    if n is None:
        yield
        return
    if worker is None or getattr(_held, "depth", 0):
        with _process_threads(n):
            yield
        return
    with _slots(worker, n):
        _held.depth = 1
        try:
            with _process_threads(n):
                yield
        finally:
            _held.depth = 0


def check_threads(num_threads, name="num_threads"):
    """``num_threads`` as an int >= 1, or None."""
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not hasattr(num_threads, "__index__"):
        raise TypeError(f"{name} must be a positive int or None; received {name}={num_threads!r}")
    value = num_threads.__index__()
    if value < 1:
        raise ValueError(f"{name} must be at least 1; received {name}={num_threads!r}")
    return value
