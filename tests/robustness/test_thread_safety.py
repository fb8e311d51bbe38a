"""Kernels called from many Python threads, from a thread pool and from worker processes give the serial results.

fastconv releases the GIL in its kernels, so Python threads really do run them at once, each kernel with its own
OpenMP team; every result must still be bit for bit the one a lone call gives (each output element has one owner
thread and a fixed reduction order). Worker processes: "spawn" starts fresh interpreters; "fork" copies a parent
whose OpenMP runtime has already run a parallel region, the classic way to hang GNU libgomp (the child waits
forever for the parent's worker threads, which fork did not copy). Those run in a separate interpreter with a
timeout, so a hang fails the test instead of stalling the suite.
"""
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _kernel_workloads import workload, workload_float64

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = range(8)


@pytest.fixture
def two_threads(threads):
    """Kernels on two OpenMP threads (so each call opens a parallel region), restored afterwards."""
    threads.set_num_threads(2)
    return threads


@pytest.fixture(scope="module")
def serial():
    """Each seed's results computed alone, on two threads: ``serial[(run, seed)]``."""
    import fastconv

    previous = fastconv._threads._requested_threads
    fastconv.set_num_threads(2)
    try:
        return {(run.__name__, seed): run(seed) for run in (workload, workload_float64) for seed in SEEDS}
    finally:
        fastconv.set_num_threads(previous)


def _assert_identical(expected, got):
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.dtype == g.dtype and e.shape == g.shape
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize("run", [workload, workload_float64], ids=["float32", "float64"])
def test_eight_python_threads_at_once_give_the_serial_results(two_threads, serial, run):
    barrier = threading.Barrier(len(SEEDS))
    results, errors = {}, []

    def worker(seed):
        try:
            barrier.wait(timeout=60)  # start together, so the calls overlap
            results[seed] = [run(seed) for _ in range(2)]
        except BaseException as exc:  # noqa: B902 - reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in SEEDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert not errors, errors
    for seed in SEEDS:
        for repeat in results[seed]:
            _assert_identical(serial[(run.__name__, seed)], repeat)


def test_thread_pool_gives_the_serial_results(two_threads, serial):
    with ThreadPoolExecutor(max_workers=8) as pool:
        pooled = list(pool.map(workload, list(SEEDS) * 2))
    for k, got in enumerate(pooled):
        _assert_identical(serial[("workload", k % len(SEEDS))], got)


def test_nested_pools_from_inside_a_pool_task(two_threads, serial):
    """A task of one pool that itself fans out over another pool (as data loaders and servers do)."""
    def task(seed):
        with ThreadPoolExecutor(max_workers=2) as inner:
            return list(inner.map(workload, [seed, seed + 4]))

    with ThreadPoolExecutor(max_workers=4) as outer:
        got = list(outer.map(task, range(4)))
    for seed, (a, b) in zip(range(4), got):
        _assert_identical(serial[("workload", seed)], a)
        _assert_identical(serial[("workload", seed + 4)], b)


# --- worker processes -------------------------------------------------------------------------------------------
_PROCESS_SCRIPT = r"""
import multiprocessing, os, sys
sys.path.insert(0, {here!r})
import numpy as np
import fastconv
from _kernel_workloads import workload

def main():
    fastconv.set_num_threads(2)
    expected = [workload(seed) for seed in range(4)]   # the parent runs parallel regions first
    if {at_fork_single_thread!r}:
        os.register_at_fork(after_in_child=lambda: fastconv.set_num_threads(1))
    ctx = multiprocessing.get_context({method!r})
    with ctx.Pool(2) as pool:
        got = pool.map(workload, range(4))
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            np.testing.assert_array_equal(a, b)
    print("identical")

if __name__ == "__main__":
    main()
"""


def _run_pool(tmp_path, method, at_fork_single_thread=False, timeout=120):
    script = tmp_path / "pool_script.py"
    script.write_text(_PROCESS_SCRIPT.format(here=HERE, method=method, at_fork_single_thread=at_fork_single_thread))
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                                start_new_session=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker processes started with {method!r} hung for {timeout} s after the parent had run a "
                    f"parallel region")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "identical"


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_spawned_worker_processes_give_the_parent_results(tmp_path):
    _run_pool(tmp_path, "spawn")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_worker_processes_give_the_parent_results(tmp_path):
    """fastconv's at-fork handler (fastconv/_threads.py) puts a child forked after a parallel region on one
    thread, since GNU libgomp would hang in the child's next multi-threaded region."""
    _run_pool(tmp_path, "fork", timeout=20)  # the healthy run takes a few seconds


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_workers_on_one_thread_each_give_the_parent_results(tmp_path):
    """The same with the user's own at-fork rule on top (one kernel thread per child): the results do not
    depend on the thread count, so the children still match the parent bit for bit."""
    _run_pool(tmp_path, "fork", at_fork_single_thread=True)
