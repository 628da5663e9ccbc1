"""``optlab adadelta-paper``: its options. The reproduction lives in
:mod:`experiments.papers.adadelta`, imported only when the command runs, so ``--help`` and
usage errors answer at once."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--table", choices=("1", "2"), default=None, help="Table 1 or Table 2")
    group.add_argument(
        "--figure", choices=("1", "all"), default=None, help="Fig. 1, or all (tables and figure)"
    )
    parser.add_argument("--quick", action="store_true", help="MNIST subset, few epochs (< 1 min)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--out", default=None, help="run folder (default runs/adadelta-<time>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the size's)")
    parser.add_argument("--train-size", type=int, default=None, help="training subset size")
    parser.add_argument("--test-size", type=int, default=None, help="test subset size")
    parser.add_argument("--data-dir", default=None, help="where the dataset files are")


def run(args: argparse.Namespace) -> int:
    from optlab.experiments.papers import adadelta  # here: JAX loads only when it runs

    return adadelta.run(args)
