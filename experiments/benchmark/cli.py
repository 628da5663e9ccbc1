"""``optlab benchmark``: the DeepOBS protocol on every problem for every optimizer.

Run folder: ``config.json`` (written first), ``metrics.jsonl`` (every tuning and re-run
epoch), ``summary.md``, ``profiles.png``, ``lr_sensitivity_*.png``. A progress bar counts
epochs over all problems and optimizers and shows each population's compilation as its own
phase. A problem whose data is missing is skipped with the reason (MNIST, Fashion-MNIST:
``--data-dir`` or ``$OPTLAB_DATA_DIR``; nothing is downloaded).

Sizes: by default DeepOBS's (36 rates, 10 seeds, each problem's epochs, batch 128).
``--quick`` runs the synthetic and embedded problems with 8 rates (one per decade), 2
seeds and a few epochs: minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from optlab.experiments import report, tracking
from optlab.experiments.benchmark import baselines, output, problems, protocol
from tqdm.auto import tqdm

FULL = {"grid_size": 36, "seeds": 10}
QUICK = {"grid_size": 8, "seeds": 2}
RUN_FILES = ("config.json", "metrics.jsonl")


def positive(flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"--{flag} must be >= 1, got {value}")
    return value


def settings(args: argparse.Namespace) -> dict:
    """The run's definition from the options, every value checked."""
    sizes = QUICK if args.quick else FULL
    for flag in ("grid_size", "seeds", "batch_size", "train_size"):
        positive(flag.replace("_", "-"), getattr(args, flag))
    grid_size = args.grid_size or sizes["grid_size"]
    protocol.deepobs_grid(grid_size)  # a clear error for a bad size
    chosen = problems.resolve(args.problems, args.quick)
    epochs = problem_epochs(args.epochs, chosen, args.quick)
    if args.out == "":
        raise ValueError("--out is empty; give a run folder, or leave --out out for a new one")
    cfg = {
        "problems": [p.name for p in chosen],
        "optimizers": [spec.label for spec in protocol.parse_optimizers(args.optimizers)],
        "epochs": epochs,
        "grid_size": grid_size,
        "seeds": args.seeds or sizes["seeds"],
        "batch_size": args.batch_size,
        "train_size": args.train_size,
        "quick": args.quick,
        "data_dir": args.data_dir,
    }
    cfg["smaller_than_deepobs"] = smaller_than_deepobs(cfg, chosen)
    return cfg


def problem_epochs(spec: str | None, chosen: list[problems.Problem], quick: bool) -> dict:
    """Epochs per problem: ``spec`` is None (the defaults: DeepOBS's, or the quick ones), an
    integer for all, or ``name=N,name=N`` for some (the others keep their default)."""
    epochs = {p.name: p.quick_epochs if quick else p.epochs for p in chosen}
    if spec is None:
        return epochs
    if spec.strip().isdigit():
        return {name: positive("epochs", int(spec)) for name in epochs}
    for part in filter(None, (part.strip() for part in spec.split(","))):
        name, equals, value = part.partition("=")
        if not equals or name not in epochs or not value.strip().isdigit():
            raise ValueError(
                f"--epochs {spec!r}: {part!r} is not N or name=N with name one of this run's "
                f"problems ({', '.join(epochs)})"
            )
        epochs[name] = positive("epochs", int(value))
    return epochs


def smaller_than_deepobs(cfg: dict, chosen: list[problems.Problem]) -> dict[str, list[str]]:
    """Per DeepOBS problem of this run, why its run is smaller than DeepOBS's protocol
    (empty lists are left out)."""
    reasons = {}
    for problem in (p for p in chosen if p.deepobs):
        size = {"epochs": cfg["epochs"][problem.name], "grid_size": cfg["grid_size"],
                "seeds": cfg["seeds"], "batch_size": cfg["batch_size"] or problem.batch_size,
                "train_size": cfg["train_size"] if problem.needs else None}  # fmt: skip
        reference = {**baselines.PROTOCOL, "epochs": problem.epochs}
        if found := baselines.smaller_than_deepobs(size, reference):
            reasons[problem.name] = found
    return reasons


def check_run_folder(out: str | None) -> None:
    if out is None:
        return
    found = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if found:
        raise ValueError(
            f"run folder {out} already holds a run ({', '.join(found)}); choose a new --out folder"
        )


def build_all(cfg: dict) -> tuple[dict, dict[str, str]]:
    """``({name: Built}, {name: reason skipped})``."""
    built, skipped = {}, {}
    for name in cfg["problems"]:
        try:
            problem = problems.PROBLEMS[name]
            built[name] = problems.build(problem, cfg["data_dir"], cfg["train_size"])
        except problems.Unavailable as reason:
            skipped[name] = str(reason)
    return built, skipped


def run(args: argparse.Namespace) -> int:
    """Check everything, then train every problem × optimizer and write the run folder."""
    cfg = settings(args)
    specs = protocol.parse_optimizers(args.optimizers)
    if args.track:
        tracking.check_available()  # refused before any folder or training
    start = time.perf_counter()
    built, skipped = build_all(cfg)
    for name, reason in skipped.items():
        print(f"optlab benchmark: skipping {name}: {reason}")
    with report.RunFolderLock(args.out) if args.out else contextlib.nullcontext():
        check_run_folder(args.out)
        run_dir = report.make_run_dir(args.out, "benchmark")
        report.write_config(run_dir, {**cfg, "skipped": skipped, "machine": report.machine(),
                                      "data": {n: b.meta for n, b in built.items()}})  # fmt: skip
        outcomes = train_all(cfg, specs, built)
        meta = {"wall_time_s": time.perf_counter() - start, "machine": report.machine()}
        output.write_metrics(run_dir, outcomes)
        output.write_summary(run_dir, cfg, outcomes, skipped, meta)
    print(f"wrote {run_dir} in {meta['wall_time_s']:.1f} s")
    if args.track:
        tracking.log_benchmark(run_dir, meta["wall_time_s"])
        print(f"tracked in MLflow: mlflow ui --backend-store-uri {tracking.tracking_uri(run_dir)}")
    return 0


def train_all(cfg: dict, specs: list[protocol.OptimizerSpec], built: dict) -> list:
    """Every problem × optimizer through :func:`protocol.run`, under one progress bar."""
    total = sum(cfg["epochs"][name] * 2 for name in built) * len(specs)
    outcomes = []
    with tqdm(total=total, desc="benchmark", unit="epoch", dynamic_ncols=True) as bar:
        for name, problem_built in built.items():
            problem = problems.PROBLEMS[name]
            size = {
                "epochs": cfg["epochs"][name],
                "grid_size": cfg["grid_size"],
                "seeds": cfg["seeds"],
                "batch_size": cfg["batch_size"] or problem.batch_size,
            }
            for spec in specs:

                def phase(step, label=f"{name} · {spec.label}"):
                    bar.set_postfix_str(f"{label} · {step}: compiling", refresh=True)

                    def on_epoch(report_):
                        bar.set_postfix_str(f"{label} · {step}: training", refresh=False)
                        bar.update()

                    return on_epoch

                outcomes.append(protocol.run(problem, problem_built, spec, size, phase))
    return outcomes
