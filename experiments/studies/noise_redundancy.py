"""Noisy labels and duplicated data: what they do to each optimizer's convergence and to the
train–test gap.

Settings, each derived from the same training split (the validation and test splits stay
clean and untouched):

* label noise ρ ∈ {0, 0.2, 0.4}: a fraction ρ of the training labels replaced by a different,
  uniformly drawn class (``data.add_label_noise``);
* duplication k ∈ {2, 4}: every training example k times (``data.duplicate``), trained for
  E / k epochs so that the budget in gradient steps, E · N / B, is the same as the clean run's.

For every optimizer and setting the learning rate is chosen from a log grid around the
registry's suggestion (rates × seeds in one ``engine.fit_population``) by the seed-mean final
validation loss. Reported at the chosen rate, mean ± std over seeds: final training loss and
accuracy on the labels trained on (a full pass, eval mode), test accuracy, and the gaps

    gap_acc = acc_train − acc_test,    gap_loss = L_test − L_train.

Sizes: ``--quick`` is digits, an MLP 64-10, sgd/momentum/adam, 8 epochs, 3 rates, 3 seeds
(about 45 s on 2 CPU cores). The full study is MNIST, an MLP 784-256-10, the 7 course-notes
optimizers, 20 epochs, batch 128, 5 rates, 3 seeds (expected on one GPU: about 10 minutes,
estimate; 35 populations, most of the time compilation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from optlab import models
from optlab.experiments import data, engine, report, tuning
from optlab.experiments.studies import _common as common

STUDY = "noise-redundancy"


class Setting(NamedTuple):
    label: str
    noise: float  # fraction of training labels changed
    copies: int  # times each training example appears


SIZES = {
    "test": dict(
        dataset="digits", widths=(32,), optimizers=("sgd", "adam"), noise=(0.0, 0.4),
        copies=(2,), epochs=4, batch_size=64, num_rates=2, decades=0.5, seeds=2,
    ),
    "quick": dict(
        dataset="digits", widths=(64,), optimizers=("sgd", "momentum", "adam"),
        noise=(0.0, 0.2, 0.4), copies=(2, 4), epochs=8, batch_size=32, num_rates=3,
        decades=1.0, seeds=3,
    ),
    "cpu": dict(
        dataset="mnist", num_train=6000, widths=(128,), optimizers=common.QUICK_OPTIMIZERS,
        noise=(0.0, 0.2, 0.4), copies=(2, 4), epochs=8, batch_size=64, num_rates=3,
        decades=1.0, seeds=3,
    ),
    "full": dict(
        dataset="mnist", widths=(256,), optimizers=common.COURSE_OPTIMIZERS,
        noise=(0.0, 0.2, 0.4), copies=(2, 4), epochs=20, batch_size=128, num_rates=5,
        decades=1.0, seeds=3,
    ),
}  # fmt: skip


def settings(cfg: dict) -> list[Setting]:
    """Clean first, then the noise levels, then the duplications; checks E divisible by k."""
    out = [Setting("clean", 0.0, 1)]
    out += [Setting(f"label noise {rho:.0%}", rho, 1) for rho in cfg["noise"] if rho > 0]
    for k in cfg["copies"]:
        if cfg["epochs"] % k:
            raise ValueError(f"epochs ({cfg['epochs']}) must be a multiple of copies k={k}")
        out.append(Setting(f"duplicated ×{k}", 0.0, k))
    return out


def derive(splits: common.Splits, setting: Setting, seed: int = 0) -> common.Splits:
    """The training split with the setting's label noise or duplication applied."""
    train = data.Dataset(
        splits.name, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
        num_classes=splits.num_classes,
    )  # fmt: skip
    if setting.noise > 0:
        train = data.add_label_noise(train, setting.noise, seed=seed)
    if setting.copies > 1:
        train = data.duplicate(train, setting.copies, seed=seed)
    return splits.replace(x_train=train.x_train, y_train=train.y_train)


def whole_batches(splits: common.Splits, batch_size: int) -> common.Splits:
    """Drop the last N mod B training examples, so that k copies take exactly k times the
    steps per epoch and E / k epochs on them exactly the clean run's E · N / B steps."""
    keep = len(splits.y_train) // batch_size * batch_size
    return splits.replace(x_train=splits.x_train[:keep], y_train=splits.y_train[:keep])


def outcome(tuned: tuning.Tuned, steps_per_epoch: int) -> dict:
    """The chosen rate's per-seed numbers and curves."""
    train_acc, test_acc = tuned.final("train_accuracy"), tuned.final("test_accuracy")
    epochs = tuned.curves("train_loss").shape[-1]
    return dict(
        rate=tuned.chosen["learning_rate"],
        train_loss=tuned.final("train_loss"),
        train_accuracy=train_acc,
        test_accuracy=test_acc,
        gap_accuracy=train_acc - test_acc,
        gap_loss=tuned.final("test_loss") - tuned.final("train_loss"),
        steps=np.arange(1, epochs + 1) * steps_per_epoch,
        curve=tuned.curves("train_loss"),
    )


def answer(results: dict[str, dict[str, dict]], names: list[str], labels: list[str]) -> str:
    """The paragraph, from the numbers: what label noise and duplication change per optimizer."""
    parts = []
    noisy = [label for label in labels if label.startswith("label noise")]
    if noisy:
        worst = noisy[-1]
        drops = {
            n: results["clean"][n]["test_accuracy"] - results[worst][n]["test_accuracy"]
            for n in names
        }
        gaps = {
            n: results[worst][n]["gap_accuracy"] - results["clean"][n]["gap_accuracy"]
            for n in names
        }
        robust = min(names, key=lambda n: drops[n].mean())
        fragile = max(names, key=lambda n: drops[n].mean())
        real = common.spread_differs(drops[robust], drops[fragile])
        listing = "; ".join(
            f"{n} {100 * drops[n].mean():+.1f} pp test accuracy lost, gap "
            f"{100 * gaps[n].mean():+.1f} pp"
            for n in names
        )
        parts.append(
            f"With {worst} (vs clean): {listing}. {robust} loses the least test "
            f"accuracy and {fragile} the most; the difference is "
            f"{'beyond' if real else 'within'} the seed spread."
        )
        memorise = [n for n in names if results[worst][n]["gap_accuracy"].mean() > 0]
        if memorise:
            parts.append(
                f"At {worst}, {', '.join(memorise)} fit the noisy training labels better "
                "than they predict the clean test labels (positive accuracy gap: memorisation)."
            )
        else:
            parts.append(
                f"At {worst}, every optimizer scores higher on the clean test labels than "
                "on the noisy training labels (negative gap): within this budget none "
                "memorised the wrong labels."
            )
    duplicated = [label for label in labels if label.startswith("duplicated")]
    for label in duplicated:
        changes, real = [], []
        for n in names:
            clean, dup = results["clean"][n]["train_loss"], results[label][n]["train_loss"]
            changes.append(f"{n} {common.fmt(clean.mean())} → {common.fmt(dup.mean())}")
            real.append(common.spread_differs(clean, dup))
        count = sum(real)
        parts.append(
            f"{label.capitalize()} at the same number of gradient steps, final training loss "
            f"(clean → duplicated): {'; '.join(changes)}; {count} of {len(names)} optimizers "
            f"differ beyond the seed spread"
            + (
                " — redundant copies cost nothing in steps: a stochastic optimizer sees the "
                "same gradients either way."
                if count == 0
                else "."
            )
        )
    return " ".join(parts)


def loss_panels(results, names: list[str], cases: list[Setting]) -> dict:
    """Panels: one per label-noise level (a curve per optimizer), then one per optimizer
    comparing its clean run with the duplicated ones at equal gradient steps."""

    def curve(r):
        return (r["steps"], r["curve"].mean(0), r["curve"].std(0))

    panels = {
        case.label: {n: curve(results[case.label][n]) for n in names}
        for case in cases
        if case.copies == 1
    }
    duplicated = [case.label for case in cases if case.copies > 1]
    if duplicated:
        for n in names:
            panels[f"{n}: duplicated data"] = {
                label: curve(results[label][n]) for label in ["clean", *duplicated]
            }
    return panels


def plot_gaps(path, results, names, labels):
    figure = report.new_figure((max(7, 1.6 * len(labels)), 4.2))
    axes = figure.subplots(1, 2)
    x = np.arange(len(labels))
    width = 0.8 / len(names)
    for ax, key, title in (
        (axes[0], "test_accuracy", "test accuracy"),
        (axes[1], "gap_accuracy", "train − test accuracy (gap)"),
    ):
        for i, n in enumerate(names):
            values = np.array([results[label][n][key] for label in labels])  # (settings, S)
            ax.bar(x + (i - (len(names) - 1) / 2) * width, 100 * values.mean(1), width,
                   yerr=100 * values.std(1), label=n, capsize=2)  # fmt: skip
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set(ylabel="percent", title=title)
        ax.axhline(0, color="k", lw=0.6)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    report.save_figure(figure, path, dpi=90)


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
    cases = settings(cfg)
    splits = whole_batches(
        common.load_splits(cfg["dataset"], num_train=cfg.get("num_train")), cfg["batch_size"]
    )
    base = engine.TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], eval_train=True)
    run_dir = report.make_run_dir(out, f"study-{STUDY}")
    report.write_config(
        run_dir,
        dict(study=STUDY, quick=quick, size=size_name, **cfg, seed_ids=seed_ids,
             settings=[c._asdict() for c in cases], train=base, data=splits.sizes(),
             machine=report.machine()),
    )  # fmt: skip

    def make_model(key):
        return models.build(
            "mlp", splits.input_shape, splits.num_classes, seed=key, widths=cfg["widths"]
        )

    names = list(cfg["optimizers"])
    results: dict[str, dict[str, dict]] = {}
    with report.MetricsWriter(run_dir) as metrics:
        for case in cases:
            derived = derive(splits, case)
            config = engine.TrainConfig(
                epochs=cfg["epochs"] // case.copies, batch_size=cfg["batch_size"],
                eval_train=True,
            )  # fmt: skip
            steps_per_epoch = config.steps_per_epoch(len(derived.y_train))
            results[case.label] = {}
            for name in names:
                rates = tuning.suggested_rates(name, cfg["num_rates"], cfg["decades"])
                tuned = tuning.tune_rates(name, make_model, rates, seed_ids, derived, config)
                for record in tuning.records(
                    tuned, study=STUDY, setting=case.label, label_noise=case.noise,
                    copies=case.copies,
                ):  # fmt: skip
                    record["gradient_steps"] = record["epoch"] * steps_per_epoch
                    record["final_loss"] = record["train_loss"]
                    metrics.write(record)
                results[case.label][name] = outcome(tuned, steps_per_epoch)

    labels = [c.label for c in cases]
    rows = [
        [label, n, f"{r['rate']:.3g}", common.mean_std(r["train_loss"]),
         common.mean_std_pct(r["train_accuracy"]), common.mean_std_pct(r["test_accuracy"]),
         common.mean_std_pct(r["gap_accuracy"]), common.mean_std(r["gap_loss"])]
        for label in labels for n, r in results[label].items()
    ]  # fmt: skip
    panels = loss_panels(results, names, cases)
    report.plot_panels(
        run_dir / "training_loss.png", panels, xlabel="gradient steps",
        ylabel="training loss (labels trained on)", logy=True,
        suptitle=f"{splits.name}: training loss at the tuned rate (mean ± std over seeds)",
    )  # fmt: skip
    plot_gaps(run_dir / "accuracy_gap.png", results, names, labels)
    text = answer(results, names, labels)
    sections = [
        f"{splits.name} ({splits.sizes()} before duplication), MLP {cfg['widths']}, batch "
        f"{cfg['batch_size']}, {cfg['epochs']} epochs clean (E/k epochs with k copies: the "
        f"same gradient steps), {cfg['num_rates']} rates per optimizer around the registry's "
        f"suggestion (±{cfg['decades']:g} decades) chosen by final validation loss (clean "
        f"validation split), seeds {seed_ids}, mean ± std. Train metrics are a full "
        "evaluation pass over the training labels actually used (noisy ones included).",
        "## What do label noise and duplication change?",
        text,
        "## Results at the tuned learning rate",
        report.markdown_table(
            [
                "setting",
                "optimizer",
                "η",
                "train loss",
                "train acc %",
                "test acc %",
                "gap acc (pp)",
                "gap loss",
            ],
            rows,
        ),  # fmt: skip
        "![training loss](training_loss.png)\n![accuracy and gap](accuracy_gap.png)",
        f"Hardware: {report.describe_machine(report.machine())}. "
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: label noise and duplicated data", sections)
    print(text)
    return dict(folder=run_dir, results=results, answer=text)
