"""python -m fastconv.bench: fastconv against its peers, same process, same threads, ratios."""
import argparse
import json
import sys

import fastconv
from fastconv.bench import machine, peers, report, run, suite, training


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m fastconv.bench", description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="threads for fastconv and every peer")
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: the whole suite)")
    p.add_argument("--ops", default="forward,grad_input,grad_weight", help="conv operations to measure")
    p.add_argument("--no-pool", action="store_true", help="skip the max-pool suite")
    p.add_argument("--training", action=argparse.BooleanOptionalAction, default=True,
                   help="time one end-to-end training step of the suite's models (--quick: the MNIST one only)")
    p.add_argument("--quick", action="store_true", help="a few layers, few rounds")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds per case")
    p.add_argument("--json", default=None, help="write the raw results to this file")
    p.add_argument("--plot", default=None, help="draw the ratios to this PNG (needs matplotlib)")
    p.add_argument("--no-numpy", action="store_true", help="leave out the plain NumPy baseline")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.get_num_threads()
    by_name = {layer.name: layer for layer in suite.CONV_LAYERS}
    names = args.layers.split(",") if args.layers else (suite.QUICK_LAYERS if args.quick else list(by_name))
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown layer(s) {unknown}; choose from {list(by_name)}")
    ops = [op for op in args.ops.split(",") if op]
    bad_ops = [op for op in ops if op not in run.CONV_OPS]
    if bad_ops:
        raise SystemExit(f"unknown op(s) {bad_ops}; choose from {list(run.CONV_OPS)}")

    # NumPy's own BLAS (the sgemm reference and the NumPy peer) gets the same threads as everyone else
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        return _measure(args, threads, names, by_name, ops)


def _measure(args, threads, names, by_name, ops):
    rounds = args.rounds or (3 if args.quick else 7)
    min_seconds = 0.0 if args.quick else 1.0
    cfg = fastconv.show_config()
    sgemm = machine.sgemm_gflops(n=1024 if args.quick else 2048)
    copy_bw = machine.copy_gbytes(megabytes=64 if args.quick else 256)
    found = peers.installed_peers()
    if args.no_numpy:
        found.pop("numpy")
    print(f"\nthreads={threads}  sgemm={sgemm:.1f} GFLOP/s  copy={copy_bw:.1f} GB/s (read+write)")
    print("peers: " + ", ".join(f"{name} {version}" for name, version in found.items()) + "\n", flush=True)
    conv = run.conv_rows([by_name[n] for n in names], ops, threads, rounds, min_seconds,
                         numpy_peer="numpy" in found)
    print(report.conv_table(conv, sgemm), flush=True)
    pool = []
    if not args.no_pool:
        cases = suite.POOL_CASES[:2] if args.quick else suite.POOL_CASES
        pool = run.pool_rows(cases, threads, rounds, min_seconds, numpy_peer="numpy" in found)
        print("\n" + report.pool_table(pool, copy_bw), flush=True)
    steps = []
    if args.training:
        models = [m for m in training.TRAINING_MODELS if not args.quick or m.name in training.QUICK_TRAINING_MODELS]
        steps = run.training_rows(models, threads, rounds, min_seconds)
        print("\n" + report.training_table(steps), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "peers": found, "threads": threads, "sgemm_gflops": sgemm, "copy_gbytes": copy_bw,
                       "conv": conv, "pool": pool, "training": steps}, f, indent=1)
    if args.plot:
        report.plot(conv, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
