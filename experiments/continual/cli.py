"""``optlab continual``: running the continual loop and its optimizer study from the command
line's options (:mod:`experiments.commands.continual`), with the quick and full sizes (see
the package docstring and docs/continual.md)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from optlab.experiments import tracking
from optlab.experiments.continual.loop import LoopConfig, run_stream
from optlab.experiments.continual.options import InvalidOption
from optlab.experiments.continual.study import StudyConfig, run_study
from optlab.experiments.report import RunFolderLock

QUICK_LOOP = LoopConfig(max_drop=0.1)
FULL_LOOP = LoopConfig(
    dataset="mnist",
    num_tasks=5,
    users_per_task=4,
    user_batch=500,
    reference_size=2000,
    eval_size=2000,
    canary_size=1000,
    widths=(256,),
    buffer_size=2000,
    every_n=4,
    search={"sgd": [0.03, 0.1], "momentum": [0.01, 0.03], "adam": [3e-4, 1e-3]},
)
QUICK_STUDY = StudyConfig()
FULL_STUDY = StudyConfig(  # Mirzadeh et al.'s setting: the whole training set, one epoch
    dataset="mnist", num_tasks=5, train_per_task=60000, epochs=1, eval_size=2000, seeds=(0, 1, 2)
)


def _configured(config, args, mapping: dict[str, str], **changes):
    """``config`` with the options given in ``args`` (``mapping``: option → field) and
    ``changes``; a value the config refuses is reported by its flag (``--user-batch``)."""
    given = {
        field: getattr(args, arg)
        for arg, field in mapping.items()
        if getattr(args, arg, None) is not None and field not in changes
    }
    try:
        return dataclasses.replace(config, **given, **changes)
    except InvalidOption as err:
        flags = {field: "--" + arg.replace("_", "-") for arg, field in mapping.items()}
        raise ValueError(err.named(flags.get(err.field, err.field))) from None


def run(args: argparse.Namespace) -> int:
    common = {
        "dataset": "dataset",
        "data_dir": "data_dir",
        "downsample": "downsample",
        "tasks": "num_tasks",
        "epochs": "epochs",
    }
    if args.study:
        if args.track:
            raise ValueError("--track logs the continual loop, not --study; drop one")
        config = _configured(
            QUICK_STUDY if args.quick else FULL_STUDY,
            args,
            {
                **common,
                "regimes": "regimes",
                "benchmarks": "benchmarks",
                "seeds": "seeds",
                "train_per_task": "train_per_task",
            },
        )
        with RunFolderLock(args.out):  # a second process on this folder is refused
            run_study(config, args.out)
        print(f"study written to {args.out}/summary.md")
        return 0
    search = {}
    if args.search is not None:  # an empty --search is refused, not ignored
        grid = {**FULL_LOOP.search, **QUICK_LOOP.search}
        search["search"] = {name: grid.get(name, [1e-3, 1e-2]) for name in args.search}
    config = _configured(
        QUICK_LOOP if args.quick else FULL_LOOP,
        args,
        {
            **common,
            "seed": "seed",
            "preset": "preset",
            "users_per_task": "users_per_task",
            "user_batch": "user_batch",
            "strategy": "strategy",
            "buffer_size": "buffer_size",
            "ewc_lambda": "ewc_lambda",
            "search": "search",
            "triggers": "trigger_rules",
            "every": "every_n",
            "max_drop": "max_drop",
            "drift_alpha": "drift_alpha",
            "canary_share": "canary_share",
            "canary_alpha": "canary_alpha",
            "corrupt_users": "corrupt_users",
            "worse_challenger_at": "worse_challenger_users",
            "slow_user": "slow_user_s",
        },
        **search,
    )
    if args.track:
        tracking.check_available()  # refused before anything runs
    started = time.perf_counter()
    with RunFolderLock(args.out):  # a second process on this folder is refused
        report = run_stream(config, args.out, resume=args.resume)
    if args.track:
        tracking.log_continual(Path(args.out), time.perf_counter() - started)
        print(f"tracked in MLflow: mlflow ui --backend-store-uri {tracking.tracking_uri(args.out)}")
    led = report["ledger"]
    print(
        f"ledger: {report['arrived']} arrived = {led.get('trained', 0)} trained + "
        f"{led.get('held_out', 0)} held out + {led.get('quarantined', 0)} quarantined; "
        f"{report['promoted']} promoted, {report['rolled_back']} rolled back; "
        f"average accuracy {report['metrics']['average_accuracy']:.3f}, "
        f"forgetting {report['metrics']['forgetting']:.3f}. Report: {args.out}/summary.md"
    )
    return 0
