"""``optlab compare``: its options. The training lives in :mod:`experiments.compare`,
imported only when the command runs, so ``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse

from optlab.experiments.commands import DATASETS, TRACK_HELP

NON_FINITE_POLICIES = ("stop", "skip")  # engine.NON_FINITE_POLICIES (a test keeps them equal)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument(
        "--model",
        default="mlp",
        help="a models.available() classifier with its default options (default: mlp, one "
        "hidden layer of 100 units)",
    )
    parser.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated registry names or MODULE:FACTORY of your own (default: the "
        "course set and the extended family)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default 20 (--quick: 4)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument(
        "--lr-grid-size", type=int, default=None, help="learning rates per optimizer (default 5)"
    )
    parser.add_argument(
        "--target-loss", type=float, default=0.1, help="training loss for 'epochs to target'"
    )
    parser.add_argument(
        "--validation", type=float, default=0.2, help="fraction of training data held out"
    )
    parser.add_argument("--out", default=None, help="run folder (default runs/compare-<time>)")
    parser.add_argument("--data-dir", default=None, help="where dataset files are")
    parser.add_argument("--quick", action="store_true", help="a small run for tests and laptops")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="checkpoint each optimizer's population every N epochs under OUT/checkpoints "
        "(default: no checkpoints; --resume implies 1)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoints (finished optimizers are not "
        "retrained)",
    )
    parser.add_argument(
        "--on-non-finite",
        choices=NON_FINITE_POLICIES,
        default="stop",
        help="a NaN/Inf loss or gradient freezes the run as diverged (stop, default) or "
        "skips that update (skip)",
    )
    parser.add_argument("--track", action="store_true", help=TRACK_HELP)
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="split each minibatch over all devices (batch size divisible by their number)",
    )


def run(args: argparse.Namespace) -> int:
    from optlab.experiments import compare  # here: JAX loads only when the command runs

    return compare.run(args)
