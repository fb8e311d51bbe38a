"""The block cache that fastconv's functions allocate under (fastconv._memory, _kernels/block_cache.h): freed large
blocks come back for requests of their size, the cap holds, results never depend on a reused block's old bytes,
and NumPy's own allocations are left alone."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _memory
from fastconv._kernels import block_cache

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

MIN = block_cache.MIN_BLOCK_BYTES


@pytest.fixture
def fresh_cache():
    """An empty cache with the default cap, restored afterwards."""
    limit = _memory.block_cache_info()["limit_bytes"]
    _memory.set_block_cache_limit(0)
    _memory.set_block_cache_limit(block_cache.DEFAULT_LIMIT)
    yield
    _memory.set_block_cache_limit(limit)


@_memory.reusing_blocks
def cached_empty(shape, dtype=np.float32):
    return np.empty(shape, dtype)


@_memory.reusing_blocks
def cached_zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def test_outputs_come_from_the_cache_and_are_64_byte_aligned(rng):
    x = rng.standard_normal((1, 9, 9, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    for y in (fastconv.conv2d(x, w), fastconv.max_pool2d(x, 2), fastconv.conv2d_grad_weight(
            np.ones((1, 7, 7, 8), np.float32), x, w.shape)):
        assert get_handler_name(y) == block_cache.HANDLER_NAME
        assert y.ctypes.data % 64 == 0
    assert get_handler_name(np.empty(10)) != block_cache.HANDLER_NAME  # NumPy's own allocations: untouched


def test_a_freed_large_block_serves_the_next_request_of_its_size(fresh_cache):
    a = cached_empty(MIN // 4)  # float32: exactly MIN bytes
    address = a.ctypes.data
    del a
    assert _memory.block_cache_info()["held_bytes"] == MIN
    hits = _memory.block_cache_info()["hits"]
    b = cached_empty(MIN // 4)
    assert b.ctypes.data == address and _memory.block_cache_info()["hits"] == hits + 1
    assert _memory.block_cache_info()["held_bytes"] == 0
    c = cached_empty(MIN // 4 + 1)  # another size: a new block
    assert c.ctypes.data != address
    small = cached_empty(MIN // 8)  # under the minimum: never kept
    del small
    assert _memory.block_cache_info()["held_bytes"] == 0


def test_the_cap_gives_back_the_oldest_blocks(fresh_cache):
    _memory.set_block_cache_limit(3 * MIN)
    blocks = [cached_empty(MIN // 4 + i) for i in range(4)]  # four sizes just over MIN bytes
    sizes = [b.nbytes for b in blocks]
    while blocks:
        blocks.pop(0)  # freed in order of allocation
    info = _memory.block_cache_info()
    assert info["held_bytes"] == sum(sizes[2:]) <= 3 * MIN  # the first two (oldest) went back
    _memory.set_block_cache_limit(sizes[3])
    assert _memory.block_cache_info()["held_bytes"] == sizes[3]
    _memory.set_block_cache_limit(0)
    assert _memory.block_cache_info()["held_bytes"] == 0
    big = cached_empty(MIN)
    del big
    assert _memory.block_cache_info()["held_bytes"] == 0  # cap 0: nothing kept


def test_results_do_not_depend_on_a_reused_blocks_old_bytes(fresh_cache, rng):
    x = rng.standard_normal((4, 40, 40, 16)).astype(np.float32)   # output 4*38*38*32*4 bytes > MIN
    w = rng.standard_normal((3, 3, 16, 32)).astype(np.float32)
    expected = fastconv.conv2d(x, w).copy()
    junk = cached_empty(expected.shape)
    junk.fill(np.nan)
    del junk
    got = fastconv.conv2d(x, w)
    assert _memory.block_cache_info()["hits"] >= 1
    np.testing.assert_array_equal(got, expected)
    dirty = cached_empty(MIN // 4)
    dirty.fill(7.0)
    del dirty
    assert not cached_zeros(MIN // 4).any()  # calloc on a reused block zeroes it


def test_resizing_keeps_the_data(fresh_cache):
    a = cached_empty(MIN // 4)
    a[:] = np.arange(a.size, dtype=np.float32)
    a.resize(MIN // 2, refcheck=False)   # grows: moved to a new block
    np.testing.assert_array_equal(a[:MIN // 4], np.arange(MIN // 4, dtype=np.float32))
    a.resize(10, refcheck=False)         # shrinks far: moved again
    np.testing.assert_array_equal(a, np.arange(10, dtype=np.float32))


def test_threads_allocating_and_freeing_at_once(fresh_cache):
    errors = []

    def work(seed):
        try:
            for i in range(40):
                a = cached_empty(MIN // 4 + (seed + i) % 3)
                a[::4096] = seed
                assert (a[::4096] == seed).all()
        except Exception as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _memory.block_cache_info()["held_bytes"] <= block_cache.DEFAULT_LIMIT


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_bytes must be at least 0; received max_bytes=-1"):
        _memory.set_block_cache_limit(-1)
    for bad in (1.5, True, "64"):
        with pytest.raises(TypeError, match=f"max_bytes must be an int; received max_bytes={bad!r}"):
            _memory.set_block_cache_limit(bad)


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_the_environment_sets_the_cap_and_a_bad_value_warns():
    show = "from fastconv import _memory; print(_memory.block_cache_info()['limit_bytes'])"
    assert run_python(show, FASTCONV_BLOCK_CACHE_MB="64").stdout.split() == [str(64 << 20)]
    bad = run_python(show, FASTCONV_BLOCK_CACHE_MB="lots")
    assert bad.stdout.split() == [str(block_cache.DEFAULT_LIMIT)]
    assert "FASTCONV_BLOCK_CACHE_MB must be a number of MiB, at least 0; received FASTCONV_BLOCK_CACHE_MB='lots'" \
        in bad.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_allocate():
    code = """
import os, threading, numpy as np
from fastconv import _memory
@_memory.reusing_blocks
def alloc(n):
    return np.ones(n, np.float32)
keep = alloc(1 << 21)
del keep
pid = os.fork()
if pid == 0:
    a = alloc(1 << 21)
    os._exit(0 if a.sum() == (1 << 21) else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    assert run_python(code).stdout.split() == ["0"]
