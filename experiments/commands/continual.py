"""``optlab continual``: its options. The loop lives in :mod:`experiments.continual`, imported
only when the command runs, so ``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse

from optlab.experiments.commands import TRACK_HELP

REGIMES = ("sgd", "momentum", "adam", "rmsprop", "adagrad", "stable-sgd")  # study.REGIMES' names


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/continual", help="run folder (registry, report)")
    parser.add_argument("--quick", action="store_true", help="small CPU size (< 2 min)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--study", choices=["optimizers"], help="run the optimizer study")
    parser.add_argument("--track", action="store_true", help=TRACK_HELP)
    parser.add_argument("--dataset", choices=["digits", "mnist", "fashion_mnist"])
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion_mnist/ IDX files")
    parser.add_argument("--downsample", type=int, help="average-pool k×k (28×28 → 14×14: 2)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tasks", type=int, help="number of tasks in the stream / study")
    parser.add_argument("--epochs", type=int, help="epochs per retrain / per task")
    loop = parser.add_argument_group("loop")
    loop.add_argument("--preset", choices=["styles", "permuted", "rotated", "split"])
    loop.add_argument("--users-per-task", type=int)
    loop.add_argument("--user-batch", type=int, help="samples each user brings")
    loop.add_argument("--strategy", choices=["naive", "replay", "ewc"])
    loop.add_argument("--buffer-size", type=int, help="replay buffer capacity")
    loop.add_argument("--ewc-lambda", type=float)
    loop.add_argument("--search", type=_names, help="optimizers searched, e.g. sgd,adam")
    loop.add_argument("--triggers", type=_names, help="retrain rules: every,drift,accuracy")
    loop.add_argument("--every", type=int, help="retrain every N users")
    loop.add_argument("--max-drop", type=float, help="accuracy drop that triggers/alerts")
    loop.add_argument("--drift-alpha", type=float)
    loop.add_argument("--canary-share", type=float, help="share of traffic the canary sees")
    loop.add_argument("--canary-alpha", type=float, help="McNemar threshold for 'worse'")
    loop.add_argument("--corrupt-users", type=_ints, help="inject NaNs into these users' batches")
    loop.add_argument("--worse-challenger-at", type=_ints, help="users whose challenger is broken")
    loop.add_argument("--slow-user", type=float, help=argparse.SUPPRESS)
    study = parser.add_argument_group("study")
    study.add_argument("--regimes", type=_names, help=f"subset of {', '.join(REGIMES)}")
    study.add_argument("--benchmarks", type=_names, help="permuted,rotated")
    study.add_argument("--seeds", type=_ints, help="e.g. 0,1,2")
    study.add_argument("--train-per-task", type=int)


def run(args: argparse.Namespace) -> int:
    from optlab.experiments.continual import cli  # here: JAX loads only when the command runs

    return cli.run(args)
