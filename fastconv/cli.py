"""The `fastconv` command."""
import argparse
import sys


def _info(args):
    from fastconv import show_config

    show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="fastconv", description="Fast CPU convnet kernels.")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the build and runtime configuration")
    info.set_defaults(run=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
