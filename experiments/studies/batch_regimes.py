"""Batch gradient descent vs SGD vs mini-batches: loss against epochs and against wall time.

The same engine code runs every regime; only the batch size B changes: B = 1 is SGD in its
original sense, B = N is batch gradient descent (one step per epoch), values in between are
mini-batch SGD. An epoch takes ⌊N / B⌋ steps of

    θ ← θ − η · update(∇ (1/B) Σ_{i∈batch} ℓ_i(θ)).

For every optimizer and batch size the learning rate is chosen from a log grid (±1.5 decades
around the registry's suggestion; rates × seeds in one ``engine.fit_population``) by the
seed-mean final validation loss: a larger batch usually wants a larger rate, and a fixed rate
would mostly measure which batch size it happens to suit. The training loss (a full pass, eval
mode) is reported per epoch, mean ± std over seeds. Wall time per epoch comes from one
separate, single-run ``engine.fit`` at the chosen rate (seed 0; compilation excluded, shown
apart): a vmapped population's time is not one run's. "Loss against wall time" sets the
seed-mean curve against that run's cumulative epoch time.

The answer compares, per optimizer, the final loss at equal epochs and the wall time to reach
a common target: the geometric mean √(L_min · L_max) of the lowest and the highest seed-mean
final training losses over the batch sizes (halfway on the log scale, so that the target
separates the regimes instead of being reached only by the best one).

Sizes: ``--quick`` is digits, an MLP 64-10, sgd and adam, B ∈ {1, 16, 128, N}, 5 epochs, 4
rates, 2 seeds (about 45 s on 2 CPU cores). The full study is MNIST, an MLP 784-256-10, sgd,
momentum and adam, B ∈ {1, 8, 32, 128, 1024, N}, 10 epochs, 5 rates, 3 seeds (expected on one
GPU: about 20 minutes, estimate; B = 1 is 48 000 sequential steps per epoch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from optlab import models
from optlab.experiments import engine, report, tuning
from optlab.experiments.studies import _common as common

STUDY = "batch-regimes"
FULL_BATCH = None  # engine.TrainConfig's "whole training set"

SIZES = {
    "test": dict(
        dataset="digits", widths=(32,), optimizers=("sgd",), batch_sizes=(1, 64, FULL_BATCH),
        epochs=2, num_rates=2, decades=1.0, seeds=2,
    ),
    "quick": dict(
        dataset="digits", widths=(64,), optimizers=("sgd", "adam"),
        batch_sizes=(1, 16, 128, FULL_BATCH), epochs=5, num_rates=4, decades=1.5, seeds=2,
    ),
    "cpu": dict(
        dataset="mnist", subset=4000, widths=(128,), optimizers=("sgd", "momentum", "adam"),
        batch_sizes=(1, 16, 128, FULL_BATCH), epochs=8, num_rates=4, decades=1.5, seeds=2,
    ),
    "full": dict(
        dataset="mnist", widths=(256,), optimizers=("sgd", "momentum", "adam"),
        batch_sizes=(1, 8, 32, 128, 1024, FULL_BATCH), epochs=10, num_rates=5, decades=1.5,
        seeds=3,
    ),
}  # fmt: skip


def batch_label(batch_size: int | None, num_train: int) -> str:
    if batch_size is None:
        return f"B=N={num_train} (batch GD)"
    return "B=1 (SGD)" if batch_size == 1 else f"B={batch_size}"


def common_target(finals: list[np.ndarray]) -> float:
    """√(L_min · L_max) of the seed-mean final losses (diverged runs left out)."""
    means = [float(np.mean(f)) for f in finals if np.isfinite(f).all()]
    if not means:
        return float("nan")
    return float(np.sqrt(min(means) * max(means)))


def time_to_target(curve: np.ndarray, seconds: np.ndarray, target: float):
    """(epochs, seconds) at the first epoch whose loss is ≤ target; (None, None) if never."""
    reached = np.flatnonzero(np.asarray(curve) <= target)
    if reached.size == 0:
        return None, None
    first = int(reached[0])
    return first + 1, float(seconds[first])


def timed_run(make_model, name, rate, splits, config, seed_ids):
    """Cumulative wall time per epoch of ONE run (``engine.fit``, seed ``seed_ids[0]``) and its
    compile time; epochs after a divergence get NaN."""
    model = make_model(engine.seed_keys(seed_ids[0])[0])
    tx = tuning.optimizer_factory(name)(learning_rate=rate)
    try:
        fitted = engine.fit(model, tx, splits, config)
        history, compile_s = fitted.history, fitted.compile_time_s
    except engine.NonFiniteError as err:
        history, compile_s = err.history, float("nan")
    times = [h["epoch_time_s"] for h in history.records()]
    times += [np.nan] * (config.epochs - len(times))
    return np.cumsum(times), compile_s


def answer(results: dict[str, dict[str, dict]]) -> str:
    """Per optimizer: best batch size at equal epochs and fastest to the target in wall time."""
    parts = []
    for name, by_batch in results.items():
        finals = {label: r["curve"][:, -1] for label, r in by_batch.items()}
        best_epoch = min(finals, key=lambda label: common.finite_or_inf(finals[label]).mean())
        worst_epoch = max(finals, key=lambda label: common.finite_or_inf(finals[label]).mean())
        real = common.spread_differs(finals[best_epoch], finals[worst_epoch])
        reached = {label: r for label, r in by_batch.items() if r["target_seconds"] is not None}
        sentence = (
            f"{name}: after the same {len(next(iter(by_batch.values()))['seconds'])} epochs the "
            f"lowest training loss is {best_epoch}'s ({common.mean_std(finals[best_epoch])}), "
            f"the highest {worst_epoch}'s ({common.mean_std(finals[worst_epoch])})"
            f"{'' if real else ', within the seed spread'}."
        )
        target = next(iter(by_batch.values()))["target"]
        if reached:
            fastest = min(reached, key=lambda label: reached[label]["target_seconds"])
            never = [label for label in by_batch if label not in reached]
            sentence += (
                f" To reach the target loss {common.fmt(target)} the fastest in wall time is "
                f"{fastest} ({reached[fastest]['target_seconds']:.3g} s, epoch "
                f"{reached[fastest]['target_epochs']})"
                + (f"; never reached by {', '.join(never)}" if never else "")
                + "."
            )
        per_epoch = ", ".join(f"{label} {r['seconds'][0]:.3g} s" for label, r in by_batch.items())
        parts.append(f"{sentence} Time per epoch: {per_epoch}.")
    return " ".join(parts)


def run(
    out=None,
    quick: bool = False,
    seeds: int | None = None,
    size: str | None = None,
    optimizers: Sequence[str] = (),
) -> dict:
    """Run the study and write the run folder; ``size`` (test, quick, cpu, full) overrides
    ``quick``; ``optimizers`` are added to the study's own set."""
    started = time.perf_counter()
    size_name, cfg = common.pick_size(SIZES, size, quick, optimizers)
    seed_ids = common.seed_list(seeds, cfg["seeds"])
    splits = common.load_splits(cfg["dataset"], num_train=cfg.get("subset"))
    num_train = len(splits.y_train)
    run_dir = report.make_run_dir(out, f"study-{STUDY}")
    report.write_config(
        run_dir,
        dict(study=STUDY, quick=quick, size=size_name, **cfg, seed_ids=seed_ids,
             num_train=num_train, target="sqrt(min * max) of final losses", data=splits.sizes(),
             machine=report.machine()),
    )  # fmt: skip

    def make_model(key):
        return models.build(
            "mlp", splits.input_shape, splits.num_classes, seed=key, widths=cfg["widths"]
        )

    results: dict[str, dict[str, dict]] = {}
    records = []
    for name in cfg["optimizers"]:
        results[name] = {}
        for batch_size in cfg["batch_sizes"]:
            label = batch_label(batch_size, num_train)
            config = engine.TrainConfig(
                epochs=cfg["epochs"], batch_size=batch_size, eval_train=True
            )
            rates = tuning.suggested_rates(name, cfg["num_rates"], cfg["decades"])
            tuned = tuning.tune_rates(name, make_model, rates, seed_ids, splits, config)
            rate = tuned.chosen["learning_rate"]
            seconds, compile_s = timed_run(make_model, name, rate, splits, config, seed_ids)
            steps = config.steps_per_epoch(num_train)
            for record in tuning.records(
                tuned, study=STUDY, batch_size=batch_size or num_train, steps_per_epoch=steps
            ):
                record["final_loss"] = record["train_loss"]
                if record["selected"]:
                    record["wall_time_s"] = float(seconds[record["epoch"] - 1])
                records.append(record)
            results[name][label] = dict(
                rate=rate,
                curve=tuned.curves("train_loss"),
                test_accuracy=tuned.final("test_accuracy"),
                seconds=seconds,
                compile_s=compile_s,
                steps=steps,
            )
    for by_batch in results.values():
        target = common_target([r["curve"][:, -1] for r in by_batch.values()])
        for r in by_batch.values():
            r["target"] = target
            r["target_epochs"], r["target_seconds"] = time_to_target(
                r["curve"].mean(0), r["seconds"], target
            )
    with report.MetricsWriter(run_dir) as metrics:
        for record in records:
            metrics.write(record)

    rows = [
        [name, label, r["steps"], f"{r['rate']:.3g}", common.mean_std(r["curve"][:, -1]),
         common.mean_std_pct(r["test_accuracy"]), f"{r['seconds'][-1] / len(r['seconds']):.3g}",
         f"{r['compile_s']:.2g}",
         "never" if r["target_seconds"] is None
         else f"{r['target_epochs']} / {r['target_seconds']:.3g}"]
        for name, by_batch in results.items() for label, r in by_batch.items()
    ]  # fmt: skip
    epochs = np.arange(1, cfg["epochs"] + 1)
    by_epoch = {
        name: {label: (epochs, r["curve"].mean(0), r["curve"].std(0)) for label, r in b.items()}
        for name, b in results.items()
    }
    by_time = {
        name: {label: (r["seconds"], r["curve"].mean(0), r["curve"].std(0))
               for label, r in b.items()}
        for name, b in results.items()
    }  # fmt: skip
    report.plot_panels(
        run_dir / "loss_vs_epochs.png", by_epoch, xlabel="epoch", ylabel="training loss",
        logy=True, suptitle=f"{splits.name}: training loss per epoch (tuned η per batch size)",
    )  # fmt: skip
    report.plot_panels(
        run_dir / "loss_vs_time.png", by_time, xlabel="wall time (s, one run, no compile)",
        ylabel="training loss", logy=True, logx=True,
        suptitle=f"{splits.name}: training loss against wall time",
    )  # fmt: skip
    text = answer(results)
    sections = [
        f"{splits.name} ({splits.sizes()}), MLP {cfg['widths']}, {cfg['epochs']} epochs, "
        f"batch sizes {[b or num_train for b in cfg['batch_sizes']]}, {cfg['num_rates']} rates "
        f"per optimizer and batch size (±{cfg['decades']:g} decades around the registry's "
        f"suggestion) chosen by final validation loss, seeds {seed_ids}. Target loss = "
        "√(L_min · L_max) of the seed-mean final training losses over batch sizes; time to "
        "it is read at epoch ends.",
        "## Batch GD vs SGD vs mini-batches",
        text,
        "## Results at the tuned learning rate",
        report.markdown_table(
            [
                "optimizer",
                "batch",
                "steps/epoch",
                "η",
                "final train loss",
                "test acc %",
                "s/epoch (1 run)",
                "compile s",
                "target: epochs / s",
            ],
            rows,
        ),  # fmt: skip
        "![loss vs epochs](loss_vs_epochs.png)\n![loss vs wall time](loss_vs_time.png)",
        f"Hardware: {report.describe_machine(report.machine())}. "
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: batch GD vs SGD vs mini-batches", sections)
    print(text)
    return dict(folder=run_dir, results=results, answer=text)
