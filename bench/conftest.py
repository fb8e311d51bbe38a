"""pytest-benchmark setup for fastconv's benchmarks (run: ``python -m pytest bench --benchmark-only``).

- collects the ``bench_*.py`` files of this folder (pytest's default patterns only know ``test_*.py``);
- gives PyTorch the same thread count as fastconv (``torch.set_num_threads(fastconv.get_num_threads())``);
- ``measure``: times a callable with the ``benchmark`` fixture under a group and stores its GFLOP/s in
  ``extra_info`` (no timing is ever asserted).
"""
import fnmatch
import os

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's own hook collects it
    if any(fnmatch.fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return None  # already matched by the configured patterns
    return pytest.Module.from_parent(parent, path=file_path)


def _default_threads():
    try:
        import fastconv

        return int(fastconv.get_num_threads())
    except (ImportError, AttributeError):  # fastconv not built: its benchmarks skip, the peers still run
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture(scope="session")
def num_threads():
    """The thread count every implementation runs with: fastconv's."""
    return _default_threads()


@pytest.fixture(scope="session", autouse=True)
def _torch_threads(num_threads):
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def measure(benchmark, num_threads):
    """``measure(fn, group=..., flop=..., **info)``: warm up once, time ``fn``, record GFLOP/s."""

    def run(fn, *, group, flop, **info):
        benchmark.group = group
        benchmark.extra_info.update(info)
        benchmark.extra_info["threads"] = num_threads
        benchmark.extra_info["gflop"] = round(flop / 1e9, 4)
        fn()  # warm-up outside the timing (first-call set-up, page faults, oneDNN primitive creation)
        result = benchmark(fn)
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        mean = getattr(stats, "mean", None)
        if mean:
            benchmark.extra_info["gflop_per_s"] = round(flop / mean / 1e9, 2)
        return result

    return run
