"""``optlab compare``: train every optimizer on one dataset and compare them.

Protocol, per optimizer (every optimizer gets the same initialisations and data orders):

1. Hold out a stratified validation split of the training set (``--validation``, 20%;
   ``data.load(validation=...)``, i.e. :func:`experiments.data.split_validation`).
2. Train a population under one ``jax.vmap`` (:func:`experiments.tuning.tune`): a log grid
   of ``--lr-grid-size`` learning rates ``α₀ · 10^u``, u evenly spaced in [−1, 1], around
   the registry's ``suggested_learning_rate`` α₀, × ``--seeds`` seeds, on the rest of the
   training set. One compilation per optimizer.
3. Choose the learning rate with the lowest final validation loss, averaged over seeds
   (a diverged run counts as +∞). The test set is never used for the choice.
4. Report the chosen rate's seeds: final training loss (full pass over the training
   split), test accuracy mean ± std, the first epoch at which the seed-mean training loss
   reaches ``--target-loss``, the median time per optimizer step of the vmapped population
   (all grid × seed runs together, compilation excluded), and the optimizer-state bytes
   per parameter measured from the state pytree.

Writes to the run folder: ``config.json``, ``metrics.jsonl`` (one record per optimizer,
learning rate, seed and epoch, the chosen rate's marked ``selected``: :func:`tuning.records`),
``summary.md``, ``loss.png``, ``accuracy.png``.

Reliability options: ``--checkpoint-every N`` checkpoints each optimizer's whole
population (stacked state of every grid × seed member, histories so far) every N epochs
under ``<out>/checkpoints/<optimizer>``; ``--resume --out <out>`` continues an interrupted
run: finished optimizers are restored without training, the interrupted one continues
from its last checkpoint, bitwise as if uninterrupted. A run folder belongs to one run: a
folder already holding one (``config.json``, ``metrics.jsonl`` or ``checkpoints``) is
refused without ``--resume``, and ``--resume`` is refused unless the run definition
(dataset, model, optimizers, epochs, batch size, seeds, grid size, validation fraction,
non-finite policy) equals the one saved in ``config.json``; every check runs before
anything is written. ``--resume`` into a missing or empty folder says so and starts a new
run. Two processes on one ``--out`` (two runs, or a run and its ``--resume``): the second is
refused naming the first's PID (:class:`report.RunFolderLock`, taken before any check).
``--on-non-finite skip`` skips non-finite updates (counted as ``skipped_steps``)
instead of marking the run diverged. ``--data-parallel`` splits every minibatch over all
devices.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import data as datasets
from optlab.experiments import engine, report, tracking, tuning
from optlab.experiments.commands import DATASETS
from optlab.experiments.engine.objectives import check_labels
from optlab.experiments.engine.splits import as_splits, check_finite

COURSE = ("sgd", "sgdm", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")
EXTENDED = ("adamw", "adamax", "nadam", "amsgrad", "lion", "adabelief", "radam", "lamb")
NOT_CLASSIFIERS = ("vae",)
# Small defaults so the whole comparison runs in about a minute on a laptop CPU.
FULL = {"epochs": 20, "lr_grid_size": 5, "seeds": 3}
QUICK = {"epochs": 4, "lr_grid_size": 3, "seeds": 2}
# What a run folder holds once a run has started in it.
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints")
# The settings that define a run's results: ``--resume`` must continue with the same ones.
DEFINITION = ("dataset", "model", "model_options", "optimizers", "epochs", "batch_size", "seeds",
              "lr_grid_size", "validation", "on_non_finite")  # fmt: skip


# --------------------------------------------------------------------------- choices


def resolve_optimizers(spec: str | None) -> list[str]:
    """The optimizers to compare: ``spec`` (comma-separated registry names or
    ``MODULE:FACTORY`` specs, :func:`optimizers.resolve`) or every default one registered."""
    if spec is None:
        known = opt.available()
        return [name for name in (*COURSE, *EXTENDED) if name in known]
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--optimizers is empty; give names from {', '.join(opt.available())}")
    return opt.resolve(names)


def resolve_model(name: str) -> str:
    valid = [m for m in models.available() if m not in NOT_CLASSIFIERS]
    if name not in valid:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(valid)}")
    return name


def resolve_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return name


def at_least_one(key: str, value: int | None, default: int | None = None) -> int | None:
    """``value``, or ``default`` when the option was not given (None; 0 is not "not given");
    a given value below 1 is a ValueError naming the flag."""
    if value is None:
        return default
    if value < 1:
        raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    return value


def settings(args: argparse.Namespace) -> dict:
    """Command-line arguments with the --quick or full defaults filled in, validated."""
    sizes = QUICK if args.quick else FULL
    chosen = {key: at_least_one(key, getattr(args, key), default) for key, default in sizes.items()}
    at_least_one("batch_size", args.batch_size)
    if not 0 < args.validation < 1:
        raise ValueError(f"--validation must be in (0, 1), got {args.validation}")
    checkpoint_every = at_least_one(
        "checkpoint_every", args.checkpoint_every, 1 if args.resume else None
    )
    if args.out == "":
        raise ValueError("--out is empty; give a run folder, or leave --out out for a new one")
    if args.resume and not args.out:
        raise ValueError("--resume needs --out RUN_FOLDER, the folder of the run to continue")
    return {
        "dataset": resolve_dataset(args.dataset),
        "model": resolve_model(args.model),
        "optimizers": resolve_optimizers(args.optimizers),
        "batch_size": args.batch_size,
        "target_loss": args.target_loss,
        "validation": args.validation,
        "quick": args.quick,
        "checkpoint_every": checkpoint_every,
        "resume": args.resume,
        "on_non_finite": args.on_non_finite,
        "data_parallel": args.data_parallel,
        **chosen,
    }


# --------------------------------------------------------------------------- run folder


def definition(cfg: dict) -> dict:
    """The settings that define the run's results (:data:`DEFINITION`), in the JSON form
    ``config.json`` holds them in."""
    values = {**cfg, "model_options": models.options(cfg["model"])}
    return json.loads(json.dumps(report.to_jsonable({key: values[key] for key in DEFINITION})))


def flag(key: str) -> str:
    """The command-line flag of a settings key (``lr_grid_size`` -> ``--lr-grid-size``)."""
    return "model options" if key == "model_options" else f"--{key.replace('_', '-')}"


def definition_differences(saved: dict, current: dict) -> list[str]:
    """``'--optimizers: saved [...], now [...]'`` for every definition key that differs."""
    missing = "(missing)"
    return [
        f"{flag(key)}: saved {json.dumps(saved.get(key, missing))}, now {json.dumps(value)}"
        for key, value in current.items()
        if saved.get(key, missing) != value
    ]


def saved_config(run_dir: Path, found: list[str]) -> dict:
    """The ``config.json`` of the run in ``run_dir`` (which holds ``found``), else a ValueError."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(
            f"run folder {run_dir} holds {', '.join(found)} but no config.json, so --resume cannot "
            "check that it continues the same run; choose a new --out folder"
        )
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); --resume cannot continue it") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} does not hold a JSON object; --resume cannot continue it")
    return saved


def check_run_folder(out: str | None, cfg: dict) -> bool:
    """Whether this command continues the run in ``out`` (True) or starts a new one (False),
    decided before anything is written.

    A folder holding a run (any of :data:`RUN_FILES`) is refused without ``--resume`` (two
    runs would mix in ``metrics.jsonl``), and with ``--resume`` when the saved definition
    (:data:`DEFINITION`) differs from this one, naming the differing flags. ``--resume``
    into a missing or empty folder says so on stderr and starts a new run.
    """
    if out is None:  # a new timestamped folder
        return False
    run_dir = Path(out)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not cfg["resume"]:
        if found:
            raise ValueError(
                f"run folder {run_dir} already holds a run ({', '.join(found)}); pass --resume "
                "to continue it, or choose a new --out folder"
            )
        return False
    if not found:
        print(
            f"optlab compare: nothing to resume in {run_dir} (no {', '.join(RUN_FILES)}); "
            "starting a new run",
            file=sys.stderr,
        )
        return False
    differences = definition_differences(saved_config(run_dir, found), definition(cfg))
    if differences:
        raise ValueError(
            f"--resume continues the same run, but {run_dir}/config.json differs: "
            f"{'; '.join(differences)}; rerun with the saved options or choose a new --out folder"
        )
    return True


# --------------------------------------------------------------------------- measuring


def epochs_to_target(train_loss: np.ndarray, target: float) -> int | None:
    """First 1-based epoch at which ``train_loss`` (per epoch) is <= target, else None."""
    hits = np.flatnonzero(train_loss <= target)
    return int(hits[0]) + 1 if hits.size else None


def state_bytes_per_param(states: engine.TrainState) -> float:
    """Bytes of optimizer state per parameter (a population's stacked state: same ratio)."""
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(states.opt_state))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(states.params))
    return state_bytes / num_params


def check_data(splits, num_classes: int) -> None:
    """The engine's data checks, run before any folder or output exists: every input finite
    and every label in ``[0, num_classes)``, else a ValueError naming the split."""
    check_finite(as_splits(splits))
    for split in ("train", "val", "test"):
        check_labels(getattr(splits, f"y_{split}"), num_classes, split)


def checkpoint_options(name: str, cfg: dict, run_dir) -> dict:
    """``fit_population`` checkpoint arguments for optimizer ``name`` (none if disabled).

    Each optimizer's population has its own folder ``run_dir/checkpoints/<name>``; a
    finished one holds its last epoch, so ``--resume`` restores it without training.
    """
    if cfg["checkpoint_every"] is None:
        return {}
    return {
        "checkpoint_dir": run_dir / "checkpoints" / name,
        "checkpoint_every": cfg["checkpoint_every"],
        "keep": 2,
        "resume": cfg["resume"],
        "fingerprint": {
            "optimizer": name,
            "model": cfg["model"],
            "model_options": models.options(cfg["model"]),
            "dataset": cfg["dataset"],
            "validation": cfg["validation"],
        },
    }


def compare_one(
    name: str, make_model, splits, config: engine.TrainConfig, cfg: dict, on_epoch, run_dir=None
) -> dict:
    """Grid × seeds population for one optimizer, the rate chosen on validation loss; returns
    a result dict (``tuned``: the :class:`tuning.Tuned`, and what the report shows)."""
    tuned = tuning.tune_rates(
        name,
        make_model,
        tuning.suggested_rates(name, cfg["lr_grid_size"]),
        list(range(cfg["seeds"])),
        splits,
        config,
        select="val_loss",
        on_epoch=on_epoch,
        on_non_finite=cfg["on_non_finite"],
        **checkpoint_options(name, cfg, run_dir),
    )
    pop = tuned.population
    chosen = {metric: tuned.curves(metric) for metric in pop.histories}  # (S, epochs)
    return {
        "optimizer": name,
        "tuned": tuned,
        "learning_rate": tuned.chosen["learning_rate"],
        "at_grid_edge": tuned.at_grid_edge(),
        "diverged": tuned.diverged,
        "history": chosen,
        "epochs_to_target": epochs_to_target(chosen["train_loss"].mean(0), cfg["target_loss"]),
        "step_time_s": float(np.median(pop.epoch_time_s) / pop.steps_per_epoch),
        "state_bytes_per_param": state_bytes_per_param(pop.state),
        "compile_time_s": pop.compile_time_s,
        "state_per_param": opt.info(name).state_per_param,
    }


# --------------------------------------------------------------------------- reporting


def summary_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        history = r["history"]
        rows.append(
            [
                r["optimizer"],
                f"{r['learning_rate']:.3g}"
                + (" (grid edge)" if r["at_grid_edge"] else "")
                + (" (diverged)" if r["diverged"] else ""),
                report.format_mean_std(history["train_loss"][:, -1]),
                report.format_mean_std(history["test_accuracy"][:, -1], scale=100.0),
                report.DASH if r["epochs_to_target"] is None else str(r["epochs_to_target"]),
                f"{1e3 * r['step_time_s']:.3g}",
                f"{r['state_bytes_per_param']:.2f}",
            ]
        )
    return rows


def edge_note(results: list[dict]) -> list[str]:
    """A warning when a chosen rate is the smallest or largest of its grid: the best rate
    may lie outside it, so that optimizer may be under-tuned."""
    names = [r["optimizer"] for r in results if r["at_grid_edge"]]
    if not names:
        return []
    return [
        f"**Grid edge:** the chosen rate of {', '.join(names)} is at an end of its grid (one "
        "decade either side of the optimizer's suggested rate); the best rate may lie outside "
        "it, so these optimizers may be under-tuned here."
    ]


def headers(cfg: dict) -> list[str]:
    members = cfg["lr_grid_size"] * cfg["seeds"]
    return [
        "optimizer",
        "chosen lr",
        "final train loss",
        "test accuracy (%)",
        f"epochs to loss ≤ {cfg['target_loss']:g}",
        f"step time (ms, {members} runs vmapped)",
        "state bytes / param",
    ]


def write_config(run_dir, cfg, model_options, config, splits, data_meta) -> None:
    report.write_config(
        run_dir,
        {
            **cfg,
            "model_options": model_options,
            "train": config,
            "data": {"train": len(splits.x_train), "val": len(splits.x_val),
                     "test": len(splits.x_test), "meta": data_meta},
            "machine": report.machine(),
        },
    )  # fmt: skip


def write_run(run_dir, cfg, results, meta) -> None:
    if cfg["resume"]:  # the restored results are complete: rewrite, do not append
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    with report.MetricsWriter(run_dir) as metrics:
        for r in results:
            for record in tuning.records(r["tuned"]):
                metrics.write(record)

    search_rows = [
        [r["optimizer"], *(f"{lr:.3g}: {report.format_number(v)}" for lr, v in zip(
            r["tuned"].grid["learning_rate"], r["tuned"].search(), strict=True))]
        for r in results
    ]  # fmt: skip
    sections = [
        f"Dataset `{cfg['dataset']}`, model `{cfg['model']}`, {cfg['epochs']} epochs, batch size "
        f"{cfg['batch_size']}, {cfg['seeds']} seeds; learning rate chosen on a "
        f"{cfg['validation']:.0%} validation split of the training set (lowest final validation "
        "loss, mean over seeds). Mean ± std over seeds at the chosen rate.",
        report.markdown_table(headers(cfg), summary_rows(results)),
        *edge_note(results),
        "## Learning-rate search (final validation loss, mean over seeds)",
        report.markdown_table(
            ["optimizer", *(f"lr {i + 1}" for i in range(cfg["lr_grid_size"]))], search_rows
        ),
        "## Measurement",
        f"Wall time {meta['wall_time_s']:.1f} s (compilation included: "
        f"{meta['compile_time_s']:.1f} s of epoch compilation); "
        f"{report.describe_machine(meta['machine'])}. Step time is the median over epochs of "
        "one training epoch of the whole vmapped population divided by its steps.",
    ]
    report.write_summary(run_dir, f"Optimizer comparison on {cfg['dataset']}", sections)

    def curves(metric):
        return {
            r["optimizer"]: (
                np.arange(1, cfg["epochs"] + 1),
                r["history"][metric].mean(0),
                r["history"][metric].std(0),
            )
            for r in results
        }

    report.plot_curves(
        run_dir / "loss.png", curves("train_loss"), ylabel="training loss", logy=True,
        title=f"{cfg['dataset']}: training loss (mean ± std over seeds)",
    )  # fmt: skip
    report.plot_curves(
        run_dir / "accuracy.png", curves("test_accuracy"), ylabel="test accuracy",
        title=f"{cfg['dataset']}: test accuracy (mean ± std over seeds)", zoom_within=0.1,
    )  # fmt: skip


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    """Validate everything (options, run folder, data), then train and write the report.

    Nothing is written before every check has passed, so a refused command leaves an
    existing run folder as it was. A new run writes ``config.json`` first (what
    ``--resume`` checks); a resumed run rewrites it only with the finished report.
    """
    with run_folder_lock(args.out):
        return compare_and_report(args)


def run_folder_lock(out: str | None) -> contextlib.AbstractContextManager:
    """The lock on ``--out`` that keeps a second command out of it while this one runs, taken
    by process 0 (the one that writes the folder); a new timestamped folder needs none."""
    if not out or jax.process_index() != 0:
        return contextlib.nullcontext()
    return report.RunFolderLock(out)


def compare_and_report(args: argparse.Namespace) -> int:
    cfg = settings(args)
    if args.track:
        tracking.check_available()  # refused before any folder or training
    # Only process 0 writes the folder, so only it judges it: a process that starts after
    # process 0 wrote config.json must not take the folder for another run's.
    resuming = check_run_folder(args.out, cfg) if jax.process_index() == 0 else cfg["resume"]
    start = time.perf_counter()
    full = datasets.load(cfg["dataset"], data_dir=args.data_dir)
    held_out = datasets.load(cfg["dataset"], data_dir=args.data_dir, validation=cfg["validation"])
    splits = SimpleNamespace(
        x_train=held_out.x_train,
        y_train=held_out.y_train,
        x_val=held_out.x_test,
        y_val=held_out.y_test,
        x_test=full.x_test,
        y_test=full.y_test,
    )
    config = engine.TrainConfig(
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        eval_train=True,
        data_parallel=cfg["data_parallel"],
    )
    config.steps_per_epoch(len(splits.x_train))  # a clear error before any work
    check_data(splits, full.num_classes)
    model_options = models.options(cfg["model"])  # the defaults, recorded in config.json
    if jax.process_count() > 1 and not args.out:
        raise ValueError(
            f"a run over {jax.process_count()} processes needs --out: one folder on a "
            "filesystem every host shares (the default name has a per-process timestamp)"
        )
    writes_report = jax.process_index() == 0  # every process trains; one writes the report

    def make_model(key):
        return models.build(
            cfg["model"], full.input_shape, full.num_classes, seed=key, **model_options
        )

    for name in cfg["optimizers"]:  # a run that cannot fit is refused before the folder exists
        engine.check_memory(make_model, tuning.optimizer_factory(name),
                            {"learning_rate": [opt.info(name).suggested_learning_rate]}, 0,
                            cfg["lr_grid_size"] * cfg["seeds"], cfg["epochs"])  # fmt: skip
    run_dir = report.make_run_dir(args.out, "compare")

    if writes_report and not resuming:
        write_config(run_dir, cfg, model_options, config, splits, full.meta)

    results = []
    total = len(cfg["optimizers"]) * cfg["epochs"]
    with report.Progress(total, "compare", disable=not writes_report) as progress:
        for name in cfg["optimizers"]:
            progress.compiling(name)
            results.append(
                compare_one(name, make_model, splits, config, cfg, progress.epoch, run_dir)
            )

    meta = {
        "wall_time_s": time.perf_counter() - start,
        "compile_time_s": sum(r["compile_time_s"] for r in results),
        "machine": report.machine(),
    }
    if not writes_report:
        return 0
    if resuming:
        write_config(run_dir, cfg, model_options, config, splits, full.meta)
    write_run(run_dir, cfg, results, meta)
    print(report.markdown_table(headers(cfg), summary_rows(results)))
    print(f"\nwrote {run_dir} in {meta['wall_time_s']:.1f} s")
    if args.track:
        tracking.log_compare(run_dir, meta["wall_time_s"])
        print(f"tracked in MLflow: mlflow ui --backend-store-uri {tracking.tracking_uri(run_dir)}")
    return 0
