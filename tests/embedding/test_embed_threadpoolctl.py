"""threadpoolctl sees fastconv's OpenMP runtime and limits the threads its kernels start.

Each check runs in a fresh interpreter: OpenMP thread pools and the per-thread OpenMP settings that
threadpoolctl changes outlive a call, so only a new process gives a clean count of the threads a kernel starts.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastconv
from fastconv._kernels import openmp_helpers

pytestmark = [
    pytest.mark.skipif(not openmp_helpers.openmp_enabled(), reason="fastconv was built without OpenMP"),
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counting threads needs Linux's /proc"),
]


def _run(script):
    pytest.importorskip("threadpoolctl")
    env = dict(os.environ, OMP_DYNAMIC="false")   # a team gets exactly the threads asked for
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OMP_THREAD_LIMIT", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_threadpool_info_lists_the_openmp_runtime_fastconv_loads():
    report = _run("""
        import json, os
        def mapped_openmp():
            with open("/proc/self/maps") as f:
                paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
            return {os.path.realpath(p) for p in paths if "omp" in os.path.basename(p)}
        import numpy, scipy, threadpoolctl
        before = mapped_openmp()
        import fastconv
        loaded_by_fastconv = sorted(mapped_openmp() - before)
        info = [dict(lib, filepath=os.path.realpath(lib["filepath"])) for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "openmp"]
        print(json.dumps({"loaded_by_fastconv": loaded_by_fastconv, "info": info}))
    """)
    listed = {lib["filepath"] for lib in report["info"]}
    assert listed, f"threadpoolctl lists no OpenMP runtime: {report}"
    # (When numpy/scipy had already loaded the same runtime, fastconv adds none of its own: that one is it.)
    assert set(report["loaded_by_fastconv"]) <= listed, report
    assert all(lib["internal_api"] == "openmp" for lib in report["info"])


def test_threadpool_limits_sets_the_threads_kernels_start():
    report = _run("""
        import json, os
        import numpy as np
        import fastconv
        from threadpoolctl import threadpool_limits
        def os_threads():
            return len(os.listdir("/proc/self/task"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 64, 64, 16)).astype(np.float32)
        w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
        # Direct conv and pooling: OpenMP only, no BLAS (which has threads of its own); large enough that fastconv
        # gives them every thread allowed (it uses fewer for tiny calls).
        def work():
            fastconv.conv2d(x, w, padding="same", algorithm="direct")
            fastconv.max_pool2d(x, 3, stride=1, padding="same", return_indices=True)
        default = fastconv.get_num_threads()
        start = os_threads()
        with threadpool_limits(1, user_api="openmp"):
            limited = fastconv.get_num_threads()
            work()
            after_limited = os_threads()
        with threadpool_limits(3, user_api="openmp"):
            raised = fastconv.get_num_threads()
            work()
            after_raised = os_threads()
        print(json.dumps(dict(default=default, restored=fastconv.get_num_threads(), start=start, limited=limited,
                              after_limited=after_limited, raised=raised, after_raised=after_raised)))
    """)
    assert report["limited"] == 1 and report["after_limited"] == report["start"], report   # no worker started
    assert report["raised"] == 3 and report["after_raised"] == report["start"] + 2, report  # a team of 3
    assert report["restored"] == report["default"], report


def test_limits_are_per_thread_and_set_num_threads_is_process_wide():
    """The rule docs/embedding.md gives for worker threads: enter threadpool_limits inside each worker (an
    OpenMP limit belongs to the thread that set it), or call fastconv.set_num_threads once."""
    report = _run("""
        import json, threading
        import fastconv
        from threadpoolctl import threadpool_info, threadpool_limits
        def in_worker(body):
            seen = []
            t = threading.Thread(target=lambda: seen.append(body()))
            t.start(); t.join()
            return seen[0]
        def limited_inside():
            with threadpool_limits(1, user_api="openmp"):
                return fastconv.get_num_threads()
        default = fastconv.get_num_threads()
        with threadpool_limits(1, user_api="openmp"):
            worker_under_main_limit = in_worker(fastconv.get_num_threads)
        worker_own_limit = in_worker(limited_inside)
        fastconv.set_num_threads(1)
        worker_after_set = in_worker(fastconv.get_num_threads)
        prefixes = [lib["prefix"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
        print(json.dumps(dict(default=default, worker_under_main_limit=worker_under_main_limit,
                              worker_own_limit=worker_own_limit, worker_after_set=worker_after_set,
                              prefixes=prefixes)))
    """)
    assert report["worker_own_limit"] == 1, report
    assert report["worker_after_set"] == 1, report
    if report["prefixes"] == ["libgomp"]:
        # GNU OpenMP: a new thread starts from the process-wide defaults, not from another thread's limit.
        assert report["worker_under_main_limit"] == report["default"], report


def test_threadpool_limit_caps_an_explicit_set_num_threads(threads):
    from threadpoolctl import threadpool_limits

    threads.set_num_threads(2)
    with threadpool_limits(1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == 2
