"""Interleaved timing: every contender runs once per round, in turn, so a noisy machine slows them alike.

Thread pools keep spinning for a while after a parallel region (OpenMP's spin-wait, onnxruntime's spinning
workers). Timed back to back, one contender's spinning threads would steal cores from the next one; a short
pause before each timed call lets them go idle, so each contender is timed on a quiet machine.
"""
import time

SETTLE_SECONDS = 0.005

import numpy as np


def interleaved_medians(contenders, rounds, min_seconds=0.0):
    """Median seconds per call of each callable in `contenders` (dict name -> fn), measured round-robin.

    One untimed warm-up call each first; then at least `rounds` rounds (more while the total stays under
    `min_seconds`), each calling every contender once.
    """
    for fn in contenders.values():
        fn()
    samples = {name: [] for name in contenders}
    start = time.perf_counter()
    done = 0
    while done < rounds or (time.perf_counter() - start < min_seconds and done < 10 * rounds):
        for name, fn in contenders.items():
            time.sleep(SETTLE_SECONDS)
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        done += 1
    return {name: float(np.median(s)) for name, s in samples.items()}


def first_call_seconds(make_fn):
    """Seconds of the very first call of a freshly made callable (warm-up cost)."""
    fn = make_fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
