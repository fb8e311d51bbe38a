"""Repeated calls and long training leave memory flat: no leak in the kernels, their wrappers or the fit loop.

Resident memory (``/proc/self/statm``) catches leaks anywhere, C included, but only in pages: 10,000 calls that
each leaked one small output array would add about 4 MiB. ``tracemalloc`` (NumPy reports its buffers to it)
catches smaller leaks over fewer calls, counting what fastconv's own lines allocated and kept (threadpoolctl and
ctypes below them fill bounded caches of their own), and the count of live objects catches leaked references.
Each op runs on one thread and on small data, so the calls cost microseconds; deliberate leaks show that each
measurement sees one (600 bytes a call for tracemalloc and the object count, 16 KiB of fresh pages a call for
RSS).
"""
import gc
import mmap
import os
import resource
import tracemalloc

import numpy as np
import pytest

import fastconv
from _kernel_workloads import operations

FASTCONV_DIR = os.path.dirname(fastconv.__file__) + os.sep
LEAK_TEST_FILE = __file__
CALLS = 10_000
WARM_UP = 200
RSS_SLACK = 4 << 20          # "within a few MiB"
TRACED_SLACK = 16 << 10      # kept by fastconv's own lines over TRACED_CALLS calls: under 32 bytes a call
TRACED_CALLS = 500


def rss_bytes():
    """Resident set size now (``/proc/self/statm``; ``ru_maxrss`` elsewhere, which only grows)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture
def one_thread(threads):
    threads.set_num_threads(1)
    return threads


OPS = sorted(operations(size="small"))


def growth(call):
    """(resident bytes, live objects, traced bytes) gained over repeated calls of ``call``, after a warm-up."""
    for _ in range(WARM_UP):
        call()
    gc.collect()
    objects_before = len(gc.get_objects())
    rss_before = rss_bytes()
    for _ in range(CALLS):
        call()
    gc.collect()
    rss_grown = rss_bytes() - rss_before
    objects_grown = len(gc.get_objects()) - objects_before
    tracemalloc.start()
    try:
        for _ in range(50):
            call()
        gc.collect()  # cyclic garbage waits for the collector: that is not a leak
        before = tracemalloc.take_snapshot()
        for _ in range(TRACED_CALLS):
            call()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # only what fastconv's own lines allocated and kept (libraries below it fill caches of their own)
    traced_grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                       if stat.traceback[0].filename.startswith(FASTCONV_DIR) or stat.traceback[0].filename
                       == LEAK_TEST_FILE)
    return rss_grown, objects_grown, traced_grown


@pytest.mark.parametrize("name", OPS)
def test_ten_thousand_calls_leave_memory_flat(name, one_thread):
    rss_grown, objects_grown, traced_grown = growth(operations(size="small")[name])
    assert rss_grown < RSS_SLACK, f"{name}: resident memory grew by {rss_grown / 2**20:.1f} MiB over {CALLS} calls"
    assert objects_grown < 100, f"{name}: {objects_grown} more live Python objects after {CALLS} calls"
    assert traced_grown < TRACED_SLACK, f"{name}: {traced_grown} traced bytes more after {TRACED_CALLS} calls"


def test_the_measurement_sees_a_small_leak():
    kept = []
    _, objects_grown, traced_grown = growth(lambda: kept.append([np.ones(128, np.float32)]))  # 600 B a call
    assert objects_grown >= 100 and traced_grown >= TRACED_SLACK


def test_resident_memory_sees_a_leak_of_pages():
    """RSS sees leaked memory that the allocator cannot serve from what it already holds (late in a long test
    run, malloc may hold hundreds of MiB of free heap): here, fresh pages mapped and written, 16 KiB a call."""
    kept = []

    def leak():
        pages = mmap.mmap(-1, 16384)
        pages.write(b"x" * 16384)
        kept.append(pages)

    try:
        rss_grown, _, _ = growth(leak)
    finally:
        for pages in kept:
            pages.close()
    assert rss_grown >= RSS_SLACK


class _RssPerEpoch(fastconv.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rss = []

    def on_epoch_end(self, epoch, logs=None):
        gc.collect()
        self.rss.append(rss_bytes())


def test_twenty_training_epochs_leave_memory_flat(one_thread, rng):
    from fastconv import layers

    model = fastconv.Sequential([
        layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.BatchNormalization(),
        layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.2), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    probe = _RssPerEpoch()
    model.fit(x, y, batch_size=8, epochs=23, verbose=0, seed=0, validation_split=0.25, callbacks=[probe])
    after_warm_up = probe.rss[2:]  # 20 epochs after three of warm-up
    assert len(after_warm_up) == 21
    grown = max(after_warm_up) - after_warm_up[0]
    assert grown < RSS_SLACK, f"resident memory grew by {grown / 2**20:.1f} MiB over 20 epochs: " \
                              f"{[round(r / 2**20, 1) for r in after_warm_up]} MiB"
