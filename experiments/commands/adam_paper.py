"""``optlab adam-paper``: its options. The reproduction lives in :mod:`experiments.papers.adam`,
imported only when the command runs, so ``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse

FIGURES = ("1", "2", "2b", "3", "4", "adamax")  # papers.adam.FIGURES (a test keeps them equal)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figure", default="1", help=f"one of {', '.join(FIGURES)}")
    parser.add_argument("--quick", action="store_true", help="MNIST subset, few epochs (< 1 min)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--out", default=None, help="run folder (default runs/adam-fig<N>-<time>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per curve")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the size's)")
    parser.add_argument("--grid-size", type=int, default=None, help="learning rates per curve")
    parser.add_argument("--train-size", type=int, default=None, help="training subset size")
    parser.add_argument("--test-size", type=int, default=None, help="test subset size")
    parser.add_argument(
        "--dataset",
        default=None,
        help="override the dataset (Fig. 3 default: cifar10 if present, else fashion_mnist)",
    )
    parser.add_argument(
        "--curves", default=None, help="comma-separated curve labels to run (default: all)"
    )
    parser.add_argument("--data-dir", default=None, help="where the dataset files are")


def run(args: argparse.Namespace) -> int:
    from optlab.experiments.papers import adam  # here: JAX loads only when the command runs

    return adam.run(args)
