"""Throughput of ``fastconv.dask.predict`` on a local Dask cluster against plain ``model.predict``.

Three figures, measured in one process, in rounds whose order rotates (so no configuration always runs after the
same one), medians reported:

- ``dask 1x1``: ``fastconv.dask.predict`` on a ``LocalCluster`` of 1 worker process with 1 thread;
- ``dask 2x1``: the same on 2 worker processes with 1 thread each;
- ``plain 2 threads``: ``model.predict`` in this process with ``fastconv.set_num_threads(2)``.

The model is the MNIST convnet of :mod:`fastconv.models.zoo` (28x28x1, 93k parameters), the images random float32.
For the clusters the images are first persisted on the workers (as if read there from a store) and the outputs
stay there (``persist``), so a round times inference and scheduling, not the transfer from this process. Both
clusters start before the first round and stay up; the idle one costs next to nothing.

Run as a script (it is not a pytest benchmark)::

    python bench/bench_dask.py --images 20000 --chunk 1000 --batch-size 250 --rounds 5
"""
import argparse
import logging
import statistics
import time

import numpy as np


def _cluster(n_workers):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    return cluster, Client(cluster, set_as_default=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=1000, help="images per dask chunk")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="fastconv threads for plain model.predict")
    args = parser.parse_args(argv)

    import dask.array as da
    from distributed import futures_of, wait

    import fastconv
    import fastconv.dask
    from fastconv.models.zoo import mnist_convnet

    fastconv.utils.set_random_seed(0)
    model = mnist_convnet()

    clusters = {"dask 1x1": _cluster(1), "dask 2x1": _cluster(2)}
    persisted = {}
    for n_workers, (label, (_, client)) in enumerate(clusters.items(), start=1):
        client.wait_for_workers(n_workers)
        # Made on the workers (as if read there from a store): this process never sends them.
        images = da.random.default_rng(0).standard_normal((args.images, 28, 28, 1), dtype=np.float32,
                                                          chunks=(args.chunk, 28, 28, 1))
        persisted[label] = client.persist(images)
        with client.as_current():
            wait(futures_of(persisted[label]))
    x = clusters["dask 1x1"][1].compute(persisted["dask 1x1"]).result()

    def run_cluster(label):
        client = clusters[label][1]
        out = client.persist(fastconv.dask.predict(model, persisted[label], batch_size=args.batch_size))
        with client.as_current():
            wait(futures_of(out))
        del out

    def run_plain():
        old = fastconv.get_num_threads()
        fastconv.set_num_threads(args.threads)
        try:
            model.predict(x, batch_size=args.batch_size, verbose=0)
        finally:
            fastconv.set_num_threads(old)

    runs = {"dask 1x1": lambda: run_cluster("dask 1x1"), "dask 2x1": lambda: run_cluster("dask 2x1"),
            f"plain {args.threads} threads": run_plain}
    labels = list(runs)
    for label in labels:  # warm-up: workers rebuild the model, first-call set-up
        runs[label]()
    times = {label: [] for label in labels}
    for r in range(args.rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            time.sleep(0.5)  # let spinning thread pools settle
            start = time.perf_counter()
            runs[label]()
            times[label].append(time.perf_counter() - start)

    for cluster, client in clusters.values():
        client.close()
        cluster.close()

    print(f"{args.images} images 28x28x1, mnist_convnet, chunks of {args.chunk}, batch_size {args.batch_size}, "
          f"{args.rounds} rounds (median)")
    print(f"{'configuration':<18} {'seconds':>8} {'images/s':>10}")
    results = {}
    for label in labels:
        seconds = statistics.median(times[label])
        results[label] = args.images / seconds
        print(f"{label:<18} {seconds:8.3f} {results[label]:10.0f}")
    return results


if __name__ == "__main__":
    main()
