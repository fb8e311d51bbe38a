"""Interleaved timing: every contender runs in turn within each round, so a noisy machine slows them alike.

Each contender is timed in its steady state, as a training loop or a batch job calls it: back to back. Thread
pools keep spinning for a while after a parallel region (OpenMP's spin-wait, onnxruntime's spinning workers) and
then go to sleep, and waking a sleeping pool costs milliseconds on a virtual machine. So before each timed call
of a short operation the contender makes one untimed call: it outlasts the previous contender's spinning threads
and wakes its own. (A pause instead, which an earlier version used, lets every pool fall asleep: on a 2-core
VM it made 2 ms calls of fastconv and PyTorch alike 3-6x slower than back to back.) Calls of 20 ms and more
need no such call: waking costs them little.
"""
import time

import numpy as np

# Calls shorter than this get an untimed call just before each timed one (see the module notes).
STEADY_STATE_BELOW_SECONDS = 0.02


def interleaved_medians(contenders, rounds, min_seconds=0.0):
    """Median seconds per call of each callable in `contenders` (dict name -> fn), measured round-robin.

    One untimed warm-up call each first; then at least `rounds` rounds (more while the total stays under
    `min_seconds`), each timing every contender once (after an untimed call for short ones).
    """
    last = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        fn()
        last[name] = time.perf_counter() - t0
    samples = {name: [] for name in contenders}
    start = time.perf_counter()
    done = 0
    while done < rounds or (time.perf_counter() - start < min_seconds and done < 10 * rounds):
        for name, fn in contenders.items():
            if last[name] < STEADY_STATE_BELOW_SECONDS:
                fn()
            t0 = time.perf_counter()
            fn()
            last[name] = time.perf_counter() - t0
            samples[name].append(last[name])
        done += 1
    return {name: float(np.median(s)) for name, s in samples.items()}


def first_call_seconds(make_fn):
    """Seconds of the very first call of a freshly made callable (warm-up cost)."""
    fn = make_fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
