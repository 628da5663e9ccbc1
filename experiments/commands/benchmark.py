"""``optlab benchmark``: its options. The protocol lives in :mod:`experiments.benchmark`,
imported only when the command runs, so ``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse

from optlab.experiments.commands import TRACK_HELP

DEFAULT_OPTIMIZERS = "sgd,momentum:momentum=0.99,adam"
# benchmark.problems.PROBLEMS' names (a test keeps them equal)
PROBLEMS = ("quadratic_deep", "two_d_rosenbrock", "two_d_beale", "mnist_logreg", "mnist_mlp",
            "fmnist_mlp", "fmnist_2c2d", "cifar10_3c3d", "digits", "digits_lstm")  # fmt: skip


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--problems",
        default=None,
        help=f"comma-separated, from {', '.join(PROBLEMS)} "
        "(default: all; --quick: the synthetic and embedded ones)",
    )
    parser.add_argument(
        "--optimizers",
        default=DEFAULT_OPTIMIZERS,
        help="comma-separated registered names, each optionally with fixed "
        f"hyperparameters name:key=value (default {DEFAULT_OPTIMIZERS}: "
        "DeepOBS's three)",
    )
    parser.add_argument(
        "--epochs",
        default=None,
        help="epochs for every problem (an integer), or for some of them "
        "(name=N,name=N); the others keep DeepOBS's (--quick: a few)",
    )
    parser.add_argument(
        "--grid-size",
        type=int,
        default=None,
        help="how many of DeepOBS's 36 learning rates (default 36, --quick 8)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds for the chosen rate (default 10, --quick 2)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size for every problem (default DeepOBS's, 128)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="at most this many training examples per classifier (a "
        "stratified subset; default: all)",
    )
    parser.add_argument("--data-dir", default=None, help="where the dataset files are")
    parser.add_argument("--out", default=None, help="run folder (default runs/benchmark-<time>)")
    parser.add_argument("--track", action="store_true", help=TRACK_HELP)
    parser.add_argument("--quick", action="store_true",
                        help="a small run for tests and laptops")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from optlab.experiments.benchmark import cli  # here: JAX loads only when the command runs

    return cli.run(args)
