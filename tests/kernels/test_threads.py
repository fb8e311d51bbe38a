"""Threads: the thread-count setting, GIL-free concurrent calls, and BLAS left as the user set it."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv import _threads


def _workload(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 20, 20, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    y_direct = fastconv.conv2d(x, w, padding="same", algorithm="direct")
    y_im2col = fastconv.conv2d(x, w, padding="same", algorithm="im2col")
    gw = fastconv.conv2d_grad_weight(y_im2col, x, w.shape, padding="same", algorithm="im2col")
    gi = fastconv.conv2d_grad_input(y_direct, w, x.shape, padding="same", algorithm="im2col")
    pooled, idx = fastconv.max_pool2d(y_direct, 3, stride=2, padding="same", return_indices=True)
    gp = fastconv.max_pool2d_grad(pooled, idx, y_direct.shape, pool_size=3, stride=2, padding="same")
    return [y_direct, y_im2col, gw, gi, pooled, gp]


def test_concurrent_python_threads_match_serial_results():
    serial = [_workload(seed) for seed in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(_workload, range(8)))
    for expected, got in zip(serial, concurrent):
        for e, g in zip(expected, got):
            np.testing.assert_array_equal(e, g)


def test_blas_thread_count_is_restored_after_concurrent_calls():
    libs = _threads._scipy_blas_libraries()
    before = [lib.num_threads for lib in libs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(_workload, range(8)))
    assert [lib.num_threads for lib in libs] == before


def test_blas_is_single_threaded_inside_a_kernel_call():
    libs = _threads._scipy_blas_libraries()
    with _threads.blas_single_threaded():
        assert all(lib.num_threads == 1 for lib in libs)
        with _threads.blas_single_threaded():  # re-entrant
            assert all(lib.num_threads == 1 for lib in libs)
        assert all(lib.num_threads == 1 for lib in libs)


def test_blas_is_single_threaded_inside_a_call_from_a_worker_thread():
    """Not only from the main thread: threadpoolctl >= 3.8 ignores OpenBLAS limits set by any thread but the
    first one that set one, and the kernels' GEMMs then ran on a full BLAS team (different bits)."""
    libs = _threads._scipy_blas_libraries()
    with _threads.blas_single_threaded():  # the main thread limits first, as the first kernel call would
        pass
    seen = []

    def in_worker():
        with _threads.blas_single_threaded():
            seen.append([lib.num_threads for lib in libs])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(in_worker).result()
    assert seen == [[1] * len(libs)]


def test_set_num_threads_round_trip(threads):
    fastconv.set_num_threads(3)
    # A build without OpenMP runs every kernel serially and says so.
    assert fastconv.get_num_threads() == (3 if fastconv.show_config()["openmp"] else 1)
    fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() >= 1


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                        (True, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, error, threads):
    with pytest.raises(error, match=r"received n="):
        fastconv.set_num_threads(bad)


def test_omp_num_threads_sets_the_default():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
                         capture_output=True, text=True, env=env, check=True)
    expected = "3" if fastconv.show_config()["openmp"] else "1"
    assert out.stdout.strip() == expected


def test_small_calls_run_on_fewer_threads(threads, monkeypatch):
    """Tiny kernel calls stay on one thread (a busy machine makes waking a second one cost milliseconds); big
    ones use every thread asked for."""
    from fastconv import _threads

    monkeypatch.setattr(_threads, "_FLOPS_PER_THREAD", 2_000_000)   # the real grains (the fixture zeroes them)
    monkeypatch.setattr(_threads, "_BYTES_PER_THREAD", 256 * 1024)
    threads.set_num_threads(4)
    most = threads.get_num_threads()   # 4, or 1 in a build without OpenMP
    assert _threads.threads_for_flops(1_000) == 1
    assert _threads.threads_for_flops(5 * _threads._FLOPS_PER_THREAD) == most
    assert _threads.threads_for_flops(10 ** 12) == most
    assert _threads.threads_for_bytes(1024) == 1
    assert _threads.threads_for_bytes(2 * _threads._BYTES_PER_THREAD) == min(2, most)
    threads.set_num_threads(1)
    assert _threads.threads_for_flops(10 ** 12) == 1
