"""The reproduction protocol shared by ``optlab adam-paper`` and ``optlab adadelta-paper``.

For every curve of a figure (a :class:`Contender`: optimizer, learning-rate grid, optional
momentum grid, model options):

1. train the whole grid × seeds as one population under ``vmap``
   (:func:`experiments.tuning.tune`; every member starts from the same initialisation for
   a given seed, as the paper's protocol asks);
2. pick the configuration with the lowest final value of the figure's metric, averaged
   over seeds (a diverged run counts as +∞), the paper's "best of a dense grid";
3. report that configuration's seeds as the curve: mean ± std per epoch.

Then print and save the paper's numbers beside ours (a table at the paper's x values),
plot both (paper: markers; ours: lines with a ±std band) and give a verdict per curve:
"reproduced" when every comparable point is within ``tolerance`` (relative) of the paper's,
otherwise "differs" with the likely reasons. Each way the run departs from the paper's set-up
is a :class:`Departure` that declares the epochs, metrics and curves it can change; a
deviation names only the departures that can change its epoch, metric and curve. A run
smaller than the paper's (a subset of the data, fewer epochs, a reduced model, a substitute
dataset) says "indicative only" in every verdict line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from optlab import models
from optlab.experiments import data as datasets
from optlab.experiments import engine, report, schedules, tuning
from optlab.experiments.papers._published import Above, PublishedTable, format_cell

TOLERANCE = 0.25  # relative deviation accepted as "reproduced"
INDICATIVE = "indicative only"  # in every verdict line of a run smaller than the paper's
# Schedules whose value at step t depends on the run's length (total steps): for the others
# a shorter run is, step for step, the first part of the longer one.
RUN_LENGTH_SCHEDULES = frozenset({"cosine"})


@dataclasses.dataclass(frozen=True)
class Departure:
    """One way a run departs from the paper's set-up, and what it can change.

    Attributes:
      text: the departure in words (named as a likely reason for a deviation).
      from_epoch: the first epoch whose values it can change (``math.inf``: none).
      metrics: the metrics it can change (None: every metric).
      curves: the curves it concerns (None: every curve).
      indicative: the run is smaller than, or not the same problem as, the paper's (a subset
        of the data, fewer epochs, a reduced model, a substitute dataset): a verdict on it is
        indicative only.
    """

    text: str
    from_epoch: float = 1
    metrics: frozenset[str] | None = None
    curves: frozenset[str] | None = None
    indicative: bool = False

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict (sets as sorted lists, "never" for an infinite ``from_epoch``)."""
        return {
            "text": self.text,
            "from_epoch": self.from_epoch if math.isfinite(self.from_epoch) else "never",
            "metrics": None if self.metrics is None else sorted(self.metrics),
            "curves": None if self.curves is None else sorted(self.curves),
            "indicative": self.indicative,
        }

    def can_affect(self, epoch: int, metric: str, curve: str) -> bool:
        """Can this departure change ``metric`` of ``curve`` at ``epoch``?"""
        return (
            epoch >= self.from_epoch
            and (self.metrics is None or metric in self.metrics)
            and (self.curves is None or curve in self.curves)
        )


def likely_reasons(departures: Sequence[Departure], epoch: int, metric: str, curve: str) -> str:
    """The departures that can change ``metric`` of ``curve`` at ``epoch``, joined; when
    none can, says so (the paper's digitized values are then the first suspect)."""
    named = [d.text for d in departures if d.can_affect(epoch, metric, curve)]
    if named:
        return "; ".join(named)
    return (
        f"no departure of this run from the paper's set-up can change epoch {epoch} "
        "(the digitized values are estimates)"
    )


def indicative_note(departures: Sequence[Departure]) -> str:
    """``"indicative only (why)"`` for a run smaller than the paper's, else ``""``."""
    why = [d.text for d in departures if d.indicative]
    return f"{INDICATIVE} ({'; '.join(why)})" if why else ""


def outcome(verdict: str, note: str) -> str:
    """The bold verdict word of a line, with ``, indicative only`` for a smaller run."""
    if note and verdict != "not compared":
        return f"**{verdict}, {INDICATIVE}**"
    return f"**{verdict}**"


def format_over_seeds(values, digits: int = 4) -> str:
    """``mean ± std`` over several seeds; one seed's value alone (no spread was measured)."""
    values = np.asarray(values, float).ravel()
    if values.size == 1:
        return report.format_number(float(values[0]), digits)
    return report.format_mean_std(values, digits=digits)


def spread_label(seeds: int) -> str:
    """How a table's cells summarise the seeds."""
    return "mean ± std over seeds" if seeds > 1 else "one seed: no spread measured"


# --------------------------------------------------------------------------- specifications


@dataclasses.dataclass(frozen=True)
class Contender:
    """One curve: an optimizer, the centre of its learning-rate grid, optional momenta.

    Attributes:
      label: the curve's name in the paper's legend (a row of the published table).
      optimizer: registry name (``optimizers.available()``).
      center_lr: centre of the log grid ``center · 10^u``, u evenly spaced in [−1, 1].
      momenta: grid of the factory's ``momentum`` argument (empty: none searched).
      model_options: options for ``models.build`` (e.g. dropout).
      fixed: other factory arguments, fixed.
      explicit_grid: name -> values searched as a product instead of the log grid (e.g.
        ADADELTA's ρ × ε, or Zeiler's Table 1 rates); the run size's grid does not apply.
      paper_setting: the setting of the paper's curve where its numbers reveal it (None:
        unknown), with ``paper_setting_evidence`` saying how; a chosen setting that differs
        from it is a departure that can change every epoch of the curve.
    """

    label: str
    optimizer: str
    center_lr: float
    momenta: tuple[float, ...] = ()
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    explicit_grid: Mapping[str, tuple[float, ...]] | None = None
    paper_setting: Mapping[str, float] | None = None
    paper_setting_evidence: str = ""


@dataclasses.dataclass(frozen=True)
class Size:
    """How large a run is: data, epochs, seeds, grid sizes, model overrides."""

    name: str  # "full", "quick" or "tiny"
    epochs: int
    seeds: int
    grid: int  # learning rates per contender
    momenta: int  # momenta per contender that searches momentum (first ones of its grid)
    train_size: int | None = None  # None: the whole training set
    test_size: int | None = None
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A figure (or table) to reproduce on a classifier."""

    key: str
    title: str
    dataset: str
    model: str
    contenders: tuple[Contender, ...]
    batch_size: int
    metric: str  # "train_loss" or "test_error"
    metric_label: str
    published: PublishedTable | None
    paper_setup: str
    paper_epochs: int
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    l2: float = 0.0
    schedule: str = "constant"
    eval_train: bool = False
    logy: bool = True
    standardize: bool = False
    measurement_note: str = ""  # how our metric may differ from the paper's curve
    sizes: Mapping[str, Size] = dataclasses.field(default_factory=dict)
    assumptions: tuple[Departure, ...] = ()  # set-up details the paper does not state


class Curve(NamedTuple):
    """A contender and its tuned grid population (the chosen configuration is the curve)."""

    contender: Contender
    tuned: tuning.Tuned

    @property
    def label(self) -> str:
        return self.contender.label

    def histories(self, metric: str) -> np.ndarray:
        """``(P, S, epochs)`` of ``metric`` over the whole grid."""
        return self.tuned.population.histories[metric]


# --------------------------------------------------------------------------- data


def load_dataset(name: str, data_dir: str | None) -> datasets.Dataset:
    """``data.load(name)`` without touching the network (missing files: a clear DataError)."""
    return datasets.load(name, data_dir=data_dir, download=False)


def cifar10_present(data_dir: str | None) -> bool:
    try:
        load_dataset("cifar10", data_dir)
    except datasets.DataError:
        return False
    return True


def subset(ds: datasets.Dataset, train_size: int | None, test_size: int | None):
    """A stratified, seeded subset of the training and test splits (None: keep all;
    :func:`experiments.data.stratified_subset`); a size larger than its split is a
    ValueError naming the flag and the split's size (not silently all of it)."""
    for split, size in (("train", train_size), ("test", test_size)):
        available = len(getattr(ds, f"y_{split}"))
        if size is not None and size > available:
            raise ValueError(
                f"--{split}-size {size} is more than the {available:,} images of {ds.name}'s "
                f"{split} set; give at most {available}, or leave --{split}-size out to use all"
            )
    x_train, y_train = datasets.stratified_subset(ds.x_train, ds.y_train, train_size)
    x_test, y_test = datasets.stratified_subset(ds.x_test, ds.y_test, test_size)
    meta = {**ds.meta, "subset": {"train": len(y_train), "test": len(y_test)}}
    return dataclasses.replace(
        ds, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, meta=meta
    )


def standardize(ds: datasets.Dataset) -> datasets.Dataset:
    """Per-channel ``(x − mean) / std`` with the training set's statistics.

    A stand-in for the paper's whitening (Fig. 3); ZCA whitening is not applied.
    """
    axes = tuple(range(ds.x_train.ndim - 1))
    mean = ds.x_train.mean(axis=axes, keepdims=True)
    std = ds.x_train.std(axis=axes, keepdims=True) + 1e-6
    return dataclasses.replace(
        ds,
        x_train=((ds.x_train - mean) / std).astype(np.float32),
        x_test=((ds.x_test - mean) / std).astype(np.float32),
    )


# --------------------------------------------------------------------------- training


def hparam_grid(contender: Contender, size: Size) -> dict[str, np.ndarray]:
    """The contender's grid: its explicit product grid, else ``size.grid`` rates of the log
    grid around ``center_lr`` × its first ``size.momenta`` momenta (if it searches any)."""
    if contender.explicit_grid is not None:
        return tuning.product_grid(**contender.explicit_grid)
    rates = tuning.log_grid(contender.center_lr, size.grid)
    momenta = contender.momenta[: max(size.momenta, 1)]
    if not momenta:
        return {"learning_rate": rates}
    return tuning.product_grid(learning_rate=rates, momentum=momenta)


def contender_optimizer(exp: Experiment, contender: Contender, config: engine.TrainConfig,
                        num_train: int) -> Callable:  # fmt: skip
    """``make_tx(learning_rate=..., **hparams)``: the contender's optimizer with the
    experiment's schedule around the rate (:func:`experiments.tuning.optimizer_factory`)."""
    steps = config.steps_per_epoch(num_train)
    schedule = functools.partial(schedules.build, exp.schedule, steps_per_epoch=steps,
                                 total_steps=steps * config.epochs)  # fmt: skip
    return tuning.optimizer_factory(contender.optimizer, schedule, **contender.fixed)


def train_contender(exp: Experiment, contender: Contender, ds, size: Size, on_epoch=None) -> Curve:
    """Train the contender's grid × seeds as one population and choose its configuration
    (lowest seed-mean final ``exp.metric``)."""
    config = engine.TrainConfig(
        epochs=size.epochs,
        batch_size=exp.batch_size,
        eval_train=exp.eval_train,
    )
    options = {**exp.model_options, **contender.model_options, **size.model_options}

    def make_model(key):
        return models.build(exp.model, ds.input_shape, ds.num_classes, seed=key, **options)

    tuned = tuning.tune(
        make_model,
        contender_optimizer(exp, contender, config, len(ds.x_train)),
        hparam_grid(contender, size),
        list(range(size.seeds)),
        ds,
        config,
        select=exp.metric,
        name=contender.optimizer,
        loss=engine.Classification(l2=exp.l2),
        on_epoch=on_epoch,
    )
    return Curve(contender, tuned)


# --------------------------------------------------------------------------- comparing


def departures(
    exp: Experiment, size: Size, ds, dataset_used: str, full_train: int
) -> list[Departure]:
    """How this run departs from the paper's set-up, each with what it can change.

    A subset of the data changes every epoch (an epoch is fewer steps); fewer epochs change
    none of the epochs run unless the schedule depends on the run's length; a reduced model
    or a substitute dataset changes everything; the experiment's assumptions and measurement
    note are declared with it. The learning-rate choice is per curve
    (:func:`choice_departure`).
    """
    found = []
    if dataset_used != exp.dataset:
        found.append(
            Departure(f"{dataset_used} substitutes {exp.dataset} (absent here)", indicative=True)
        )
    if len(ds.x_train) < full_train:
        config = engine.TrainConfig(epochs=1, batch_size=exp.batch_size)
        found.append(
            Departure(
                f"trained on {len(ds.x_train):,} of {full_train:,} training images "
                f"({config.steps_per_epoch(len(ds.x_train))} steps per epoch, not "
                f"{config.steps_per_epoch(full_train)})",
                indicative=True,
            )
        )
    if size.epochs < exp.paper_epochs:
        by_length = exp.schedule in RUN_LENGTH_SCHEDULES
        found.append(
            Departure(
                f"{size.epochs} of the paper's {exp.paper_epochs} epochs"
                + (f" (the `{exp.schedule}` schedule depends on the run's length)" if by_length
                   else ""),
                from_epoch=1 if by_length else size.epochs + 1,
                indicative=True,
            )
        )  # fmt: skip
    if size.model_options:
        found.append(Departure(f"reduced model {dict(size.model_options)}", indicative=True))
    found.extend(exp.assumptions)
    if exp.measurement_note:
        found.append(Departure(exp.measurement_note, metrics=frozenset({exp.metric})))
    return found


def choice_departure(exp: Experiment, size: Size, curve: Curve) -> Departure | None:
    """The curve's chosen setting as a departure (it can change every epoch of the curve).

    Where the paper's setting is known (``Contender.paper_setting``), a chosen setting that
    differs from it; where it is not, a learning-rate grid coarser than the paper's dense one
    or chosen at an earlier epoch than the paper's last. None when neither applies.
    """
    contender, label = curve.contender, curve.label
    chosen = curve.tuned.chosen
    if contender.paper_setting is not None:
        differing = {
            k: v for k, v in contender.paper_setting.items() if not np.isclose(chosen[k], v)
        }
        if not differing:
            return None
        ours = ", ".join(f"{k}={chosen[k]:g}" for k in differing)
        theirs = ", ".join(f"{k}={v:g}" for k, v in differing.items())
        return Departure(
            f"{label} at {ours} (ours: the lowest {exp.metric} at epoch {size.epochs}) where the "
            f"paper's curve is its {theirs} run ({contender.paper_setting_evidence})",
            curves=frozenset({label}),
        )
    coarse = contender.explicit_grid is None and size.grid < 5
    early = size.epochs < exp.paper_epochs
    if not (coarse or early):
        return None
    how = [f"from a {size.grid}-point grid, not a dense one"] if coarse else []
    if early:
        how.append(f"at epoch {size.epochs}, not the paper's {exp.paper_epochs}")
    return Departure(
        f"{label}'s learning rate chosen {' and '.join(how)} (the paper's is not stated)",
        curves=frozenset({label}),
    )


class CurveVerdict(NamedTuple):
    """A curve against the paper: ``verdict`` "reproduced" | "differs" | "not compared";
    ``detail`` in words; ``epoch`` of the largest deviation (None unless "differs");
    ``note`` :func:`indicative_note` of the run ("" for a run of the paper's size)."""

    verdict: str
    detail: str
    epoch: int | None = None
    note: str = ""

    @property
    def line(self) -> str:
        """``**verdict[, indicative only]** (detail[; indicative only (why)])``."""
        detail = f"{self.detail}; {self.note}" if self.note else self.detail
        return f"{outcome(self.verdict, self.note)} ({detail})"


def curve_verdict(
    published: PublishedTable,
    label: str,
    ours: np.ndarray,
    tolerance: float = TOLERANCE,
    note: str = "",
) -> CurveVerdict:
    """The :class:`CurveVerdict` of one curve.

    ``ours`` is the seed-mean per epoch (epoch e at index e − 1). Each published point
    within the epochs run is compared: a number must lie within ``tolerance`` relative of
    it, an ``Above(v)`` bound must be exceeded. ``note``: :func:`indicative_note` of the run.
    """
    checks = []
    for x, cell in zip(published.x, published.rows[label], strict=True):
        if cell is None or not isinstance(x, int) or x > len(ours):
            continue
        value = float(ours[x - 1])
        if isinstance(cell, Above):
            checks.append((x, value > cell.value, None))
        else:
            deviation = (value - cell) / cell if math.isfinite(value) else math.inf
            checks.append((x, abs(deviation) <= tolerance, deviation))
    if not checks:
        return CurveVerdict("not compared", f"no published point within the {len(ours)} epochs run")
    epochs = ", ".join(str(x) for x, _, _ in checks)
    if all(ok for _, ok, _ in checks):
        return CurveVerdict(
            "reproduced", f"within {tolerance:.0%} relative at epochs {epochs}", note=note
        )
    worst = max(
        (c for c in checks if not c[1]), key=lambda c: math.inf if c[2] is None else abs(c[2])
    )
    x, _, deviation = worst
    if deviation is None:
        detail = f"below the paper's bound {published.value(label, x)} at epoch {x}"
    else:
        detail = f"{deviation:+.0%} at epoch {x}; compared at epochs {epochs}"
    return CurveVerdict("differs", detail, x, note)


def ranking_verdict(
    published: PublishedTable, means: Mapping[str, np.ndarray], note: str = ""
) -> str:
    """Whether the optimizers rank as in the paper at the last epoch both have numbers for
    (``note``: :func:`indicative_note` of the run, appended)."""
    labels = [label for label in means if label in published.rows]
    epochs_run = min(len(m) for m in means.values())
    usable = [
        x
        for x in published.x
        if isinstance(x, int)
        and x <= epochs_run
        and all(isinstance(published.value(label, x), float | Above) for label in labels)
    ]
    if len(labels) < 2 or not usable:
        return "ranking: not compared (no common published epoch within the run)"
    x = usable[-1]

    def paper_value(label):  # a bound "above v" ranks as v
        cell = published.value(label, x)
        return cell.value if isinstance(cell, Above) else cell

    paper = sorted(labels, key=paper_value)
    ours = sorted(labels, key=lambda label: np.nan_to_num(means[label][x - 1], nan=np.inf))
    verdict = "same ranking as the paper" if paper == ours else "ranking differs from the paper"
    verdict += f", {INDICATIVE}" if note else ""
    order = f"paper: {' < '.join(paper)}; ours: {' < '.join(ours)}"
    return f"ranking at epoch {x}: {verdict} ({order})"


def comparison_table(
    published: PublishedTable, curves: Mapping[str, np.ndarray], digits: int = 3
) -> str:
    """Markdown: per curve a "paper" row and an "ours" row (mean ± std over seeds; one
    seed's value alone) at the paper's x."""
    rows = []
    for label, per_seed in curves.items():
        if label in published.rows:
            rows.append([label, "paper", *(format_cell(c) for c in published.rows[label])])
        cells = []
        for x in published.x:
            if not isinstance(x, int) or x > per_seed.shape[1]:
                cells.append("not run")
            else:
                cells.append(format_over_seeds(per_seed[:, x - 1], digits=digits))
        rows.append([label, "ours", *cells])
    headers = ["curve", "source", *(f"{published.x_label} {x}" for x in published.x)]
    return report.markdown_table(headers, rows)


# --------------------------------------------------------------------------- plotting


def plot_against_paper(
    path: Path,
    curves: Mapping[str, np.ndarray],
    published: PublishedTable | None,
    *,
    ylabel: str,
    title: str,
    logy: bool,
) -> Path:
    """Ours: seed-mean lines with ±std bands; the paper: markers of the same colour."""
    figure = report.new_figure((7, 4.5))
    axes = figure.add_subplot()
    epochs_run = max(values.shape[1] for values in curves.values())
    ours = {
        label: (np.arange(1, per_seed.shape[1] + 1), np.mean(per_seed, 0), np.std(per_seed, 0))
        for label, per_seed in curves.items()
    }
    colors = report.draw_curves(axes, {f"{label} (ours)": c for label, c in ours.items()})
    for label in curves:
        if published is None or label not in published.rows:
            continue
        shown = [(x, v) for x, v in published.points(label) if x <= max(epochs_run, 5)]
        if shown:
            xs, ys = zip(*shown, strict=True)
            axes.plot(xs, ys, ls="none", marker="o", mfc="none",
                      color=colors[f"{label} (ours)"], label=f"{label} (paper)")  # fmt: skip
    report.style_axes(axes, xlabel="epoch", ylabel=ylabel, title=title, logy=logy,
                      legend_columns=2)  # fmt: skip
    return report.save_figure(figure, path, dpi=90)


# --------------------------------------------------------------------------- reporting


def metric_records(exp_key: str, dataset_used: str, results: Sequence[Curve]):
    """One record per run (grid member × seed) and epoch (:func:`tuning.records`), naming
    the figure, dataset and curve."""
    for r in results:
        yield from tuning.records(r.tuned, figure=exp_key, dataset=dataset_used, curve=r.label)


def search_table(results: Sequence[Curve]) -> str:
    """Markdown: every grid configuration's final selection metric (mean over seeds), the
    chosen one marked."""
    rows = []
    for r in results:
        tuned = r.tuned
        for p, final in enumerate(tuned.search()):
            settings = ", ".join(f"{k}={v[p]:.3g}" for k, v in tuned.grid.items())
            diverged = " (diverged)" if tuned.population.diverged[p].any() else ""
            chosen = " ← chosen" if p == tuned.index else ""
            rows.append([r.label, settings, report.format_number(final) + diverged + chosen])
    metric = results[0].tuned.select if results else ""
    return report.markdown_table(["curve", "configuration", f"final {metric}"], rows)


def verdict_lines(
    published: PublishedTable | None,
    curves: Mapping[str, np.ndarray],
    departures: Sequence[Departure],
    metric: str,
    tolerance: float = TOLERANCE,
) -> list[str]:
    """``- label: verdict (detail); likely: ...`` per curve, then the ranking.

    A curve that differs names as likely reasons only the departures that can change
    ``metric`` of that curve at the epoch of its largest deviation; every line of a run
    smaller than the paper's says "indicative only" (:func:`indicative_note`).
    """
    if published is None:
        return ["- no published numbers to compare against"]
    note = indicative_note(departures)
    lines = []
    for label, per_seed in curves.items():
        if label not in published.rows:
            others = ", ".join(
                f"{other} {format_over_seeds(v[:, -1])}"
                for other, v in curves.items()
                if other != label
            )
            lines.append(
                f"- {label}: **not compared** (the paper gives no curve); ours ends at "
                f"{format_over_seeds(per_seed[:, -1])} (vs {others})"
            )
            continue
        verdict = curve_verdict(published, label, np.mean(per_seed, 0), tolerance, note)
        likely = (
            f"; likely: {likely_reasons(departures, verdict.epoch, metric, label)}"
            if verdict.verdict == "differs"
            else ""
        )
        lines.append(f"- {label}: {verdict.line}{likely}")
    means = {label: np.mean(v, 0) for label, v in curves.items()}
    lines.append(f"- {ranking_verdict(published, means, note)}")
    return lines


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def reproduce(
    exp: Experiment,
    size: Size,
    ds,
    *,
    dataset_used: str,
    full_train: int,
    run_dir: Path,
    extra_config: Mapping[str, Any] | None = None,
) -> list[Curve]:
    """Train every contender, then write config, metrics, summary and plot; print the table."""
    timer = Timer()
    run_departures = departures(exp, size, ds, dataset_used, full_train)
    report.write_config(
        run_dir,
        {
            "experiment": exp.key,
            "title": exp.title,
            "dataset": dataset_used,
            "paper_dataset": exp.dataset,
            "model": exp.model,
            "model_options": {**exp.model_options, **size.model_options},
            "contenders": [dataclasses.asdict(c) for c in exp.contenders],
            "size": dataclasses.asdict(size),
            "batch_size": exp.batch_size,
            "l2": exp.l2,
            "schedule": exp.schedule,
            "metric": exp.metric,
            "selection": f"lowest final {exp.metric}, mean over seeds",
            "data": {"train": len(ds.x_train), "test": len(ds.x_test), "meta": ds.meta},
            "deviations_from_paper": [d.record() for d in run_departures],
            "tolerance": TOLERANCE,
            **(extra_config or {}),
            "machine": report.machine(),
        },
    )
    results = []
    with report.Progress(len(exp.contenders) * size.epochs, exp.key) as progress:
        for contender in exp.contenders:
            progress.compiling(contender.label)
            results.append(train_contender(exp, contender, ds, size, on_epoch=progress.epoch))
    curves = {r.label: r.tuned.curves(exp.metric) for r in results}

    with report.MetricsWriter(run_dir) as writer:
        for record in metric_records(exp.key, dataset_used, results):
            writer.write(record)
    title = f"{exp.title} — {dataset_used}" + (
        f" (substitute for {exp.dataset})" if dataset_used != exp.dataset else ""
    )
    plot_against_paper(
        run_dir / f"{exp.key}.png", curves, exp.published, ylabel=exp.metric_label,
        title=f"{title}\n{size.name} run; paper: markers, ours: mean ± std of {size.seeds} seed(s)",
        logy=exp.logy,
    )  # fmt: skip
    table = (
        comparison_table(exp.published, curves)
        if exp.published is not None
        else report.markdown_table(
            ["curve", f"final {exp.metric}"],
            [[label, format_over_seeds(v[:, -1])] for label, v in curves.items()],
        )
    )
    chosen_departures = [choice_departure(exp, size, r) for r in results]
    all_departures = [*run_departures, *(d for d in chosen_departures if d is not None)]
    verdicts = verdict_lines(exp.published, curves, all_departures, exp.metric)
    chosen = "\n".join(
        f"- {r.label} (`{r.contender.optimizer}`): "
        + ", ".join(f"{k}={v:.3g}" for k, v in r.tuned.chosen.items())
        + (" — diverged for some seed" if r.tuned.diverged else "")
        + (" — at the edge of the grid (a wider grid may do better)"
           if r.tuned.at_grid_edge() else "")
        for r in results
    )  # fmt: skip
    wall = timer.elapsed()
    compile_s = sum(r.tuned.population.compile_time_s for r in results)
    sections = [
        f"Paper setup: {exp.paper_setup}",
        f"This run ({size.name}): {dataset_used}, {len(ds.x_train):,} training / "
        f"{len(ds.x_test):,} test images, {size.epochs} epochs, batch {exp.batch_size}, "
        f"{size.seeds} seed(s), {size.grid} learning rate(s) per optimizer; model options "
        f"{dict({**exp.model_options, **size.model_options})}; schedule `{exp.schedule}`, "
        f"l2 {exp.l2:g}. Selection: lowest final {exp.metric} (mean over seeds).",
        *(
            [f"Our assumptions, not the paper's: {'; '.join(d.text for d in exp.assumptions)}."]
            if exp.assumptions
            else []
        ),
        f"![{exp.title}]({exp.key}.png)",
        f"## Paper vs ours ({spread_label(size.seeds)}, at the chosen configuration)",
        (exp.published.source + ".\n\n" if exp.published else "") + table,
        "## Verdict (tolerance: within 25% relative at every published point run; "
        "ranking of optimizers at the last common epoch; likely reasons: the departures from "
        "the paper's set-up that can change that epoch and metric)",
        "\n".join(verdicts),
        "## Chosen configurations",
        chosen,
        "## Grid search",
        search_table(results),
        "## Measurement",
        f"Wall time {wall:.1f} s ({compile_s:.1f} s compiling); "
        f"{report.describe_machine(report.machine())}.",
    ]
    report.write_summary(run_dir, title, sections)
    print(table)
    print("\n".join(verdicts))
    print(f"wrote {run_dir} in {wall:.1f} s")
    return results
