"""One hyperparameter protocol for every program: grid → population → choice → records.

1. A grid: a log grid of learning rates ``α₀ · 10^u``, u evenly spaced in [−d, d]
   (:func:`log_grid`; α₀ the registry's suggested rate: :func:`suggested_rates`), one
   from ``low`` to ``high`` (:func:`log_range`), or the product of several axes
   (:func:`product_grid`);
2. the whole grid × seeds trained as ONE population (``engine.fit_population``: one
   compilation, one ``vmap``), each member's optimizer built by one factory shape,
   ``make_tx(**hparams)`` (:func:`optimizer_factory`);
3. the configuration with the best seed-mean final value of a validation metric is chosen
   (:func:`choose`; a diverged run, NaN, counts as the worst value);
4. records: one row per (configuration, seed, epoch) for ``metrics.jsonl``
   (:func:`records`), and the search table (:meth:`Tuned.search`).

The test set is never used for the choice unless a caller asks for it by name (a paper
whose protocol picked on test error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import optax
from optlab import optimizers as opt
from optlab.experiments import engine, report

LOWER_IS_BETTER = ("loss", "error")


def log_grid(center: float, size: int, decades: float = 1.0) -> np.ndarray:
    """``size`` values ``center · 10^u``, u evenly spaced in [−decades, decades] (just
    ``center`` if size is 1)."""
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"grid size must be a positive integer, got {size!r}")
    if not center > 0:
        raise ValueError(f"grid centre must be > 0, got {center!r}")
    exponents = np.linspace(-decades, decades, size) if size > 1 else np.zeros(1)
    return center * 10.0**exponents


def suggested_rates(optimizer: str, size: int, decades: float = 1.0) -> np.ndarray:
    """:func:`log_grid` around the registry's ``suggested_learning_rate`` of ``optimizer``."""
    return log_grid(opt.info(optimizer).suggested_learning_rate, size, decades)


def log_range(low: float, high: float, size: int) -> np.ndarray:
    """``size`` log-spaced values from ``low`` to ``high``, both included."""
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"grid size must be a positive integer, got {size!r}")
    if not 0 < low <= high:
        raise ValueError(f"a log range needs 0 < low <= high, got {low!r}, {high!r}")
    return np.logspace(math.log10(low), math.log10(high), size)


def product_grid(**axes: Sequence[float]) -> dict[str, np.ndarray]:
    """The Cartesian product of ``axes`` as parallel arrays (first axis slowest):
    ``product_grid(learning_rate=[a, b], momentum=[m])`` → ``{"learning_rate": [a, b],
    "momentum": [m, m]}``."""
    if not axes or any(len(values) == 0 for values in axes.values()):
        raise ValueError(f"every grid axis needs at least one value, got {axes}")
    rows = list(itertools.product(*axes.values()))
    return {name: np.array([row[i] for row in rows]) for i, name in enumerate(axes)}


def optimizer_factory(
    name: str, schedule: Callable[[Any], optax.Schedule] | None = None, **fixed: Any
) -> Callable[..., optax.GradientTransformation]:
    """``make_tx(**hparams) -> opt.get(name, **fixed, **hparams)``: the one factory shape
    ``engine.fit_population`` and the studies' simulator call (values may be traced).

    With ``schedule`` (``learning_rate -> optax.Schedule``, e.g. a ``functools.partial`` of
    ``schedules.build``) the optimizer gets ``schedule(learning_rate)`` as its rate.
    """
    opt.info(name)  # an unknown name fails here, with the valid names, not inside a trace

    def make_tx(**hparams: Any) -> optax.GradientTransformation:
        if schedule is not None:
            hparams["learning_rate"] = schedule(hparams["learning_rate"])
        return opt.get(name, **fixed, **hparams)

    return make_tx


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised; losses and errors minimised."""
    return not any(word in metric for word in LOWER_IS_BETTER)


def choose(final: np.ndarray, maximise: bool = False) -> int:
    """Index of the best seed-mean of ``final`` (``(P, S)``); NaN counts as the worst."""
    values = np.asarray(final, np.float64)
    values = np.where(np.isnan(values), -np.inf if maximise else np.inf, values)
    means = values.mean(axis=1)
    return int(np.argmax(means) if maximise else np.argmin(means))


class Tuned(NamedTuple):
    """A population over a grid and the configuration chosen from it.

    Attributes:
      name: what was tuned (an optimizer's name).
      population: the ``engine.PopulationResult`` (its ``hparams`` in float32, as trained).
      select: the metric the choice was made on (e.g. ``"val_loss"``).
      index: the chosen configuration.
      grid: name -> ``(P,)`` the grid as asked for (float64).
    """

    name: str
    population: engine.PopulationResult
    select: str
    index: int
    grid: dict[str, np.ndarray]

    @property
    def chosen(self) -> dict[str, float]:
        """The chosen configuration's hyperparameters."""
        return {name: float(values[self.index]) for name, values in self.grid.items()}

    @property
    def diverged(self) -> bool:
        """Whether any seed of the chosen configuration diverged."""
        return bool(self.population.diverged[self.index].any())

    def at_grid_edge(self, name: str = "learning_rate") -> bool:
        """Whether the chosen value of ``name`` is the smallest or largest of ≥ 3 values."""
        values = np.unique(self.grid[name])
        return len(values) >= 3 and self.chosen[name] in (values[0], values[-1])

    def curves(self, metric: str) -> np.ndarray:
        """``(S, epochs)`` of ``metric`` at the chosen configuration."""
        return self.population.histories[metric][self.index]

    def final(self, metric: str) -> np.ndarray:
        """``(S,)`` last-epoch values of ``metric`` at the chosen configuration."""
        return self.curves(metric)[:, -1]

    def search(self) -> np.ndarray:
        """``(P,)`` the seed-mean final value of the selection metric per configuration
        (NaN for a configuration with a diverged seed)."""
        return self.population.histories[self.select][:, :, -1].mean(axis=1)


def tune(
    make_model: Callable,
    make_tx: Callable,
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    data,
    config: engine.TrainConfig,
    *,
    select: str = "val_loss",
    name: str = "",
    **fit_options: Any,
) -> Tuned:
    """Train ``hparams × seeds`` as one population and choose on ``select``.

    ``select`` names a history metric (``val_loss``, ``val_accuracy``, ``train_loss`` ...),
    or ``<split>_error``, added to the histories as ``100 · (1 − <split>_accuracy)``:
    losses and errors are minimised, accuracies maximised, at the last epoch, averaged over
    seeds. ``fit_options`` go to ``engine.fit_population``
    (``loss``, ``on_epoch``, checkpointing, ``on_non_finite`` ...). Without ``on_epoch`` the
    population shows a progress bar of its own (:class:`report.Progress`), removed when done.
    """
    if "on_epoch" in fit_options:  # the caller shows its own progress
        population = engine.fit_population(make_model, make_tx, hparams, seeds, data, config,
                                           **fit_options)  # fmt: skip
    else:  # a bar of its own for this population: compiling, then its epochs
        with report.Progress(config.epochs, name or "training", leave=False) as progress:
            settings = len(next(iter(hparams.values()))) if hparams else 1
            progress.compiling(f"{settings} setting(s) × {len(seeds)} seed(s)")
            population = engine.fit_population(
                make_model, make_tx, hparams, seeds, data, config,
                on_epoch=progress.epoch, **fit_options,
            )  # fmt: skip
    histories = population.histories
    split, _, kind = select.rpartition("_")
    if kind == "error" and f"{split}_accuracy" in histories:  # e.g. test_error, in %
        histories[select] = 100.0 * (1.0 - histories[f"{split}_accuracy"])
    if select not in histories:
        raise ValueError(f"select {select!r} is not a metric of this run: {sorted(histories)}")
    index = choose(histories[select][:, :, -1], maximise=higher_is_better(select))
    grid = {key: np.asarray(values, np.float64) for key, values in hparams.items()}
    return Tuned(name, population, select, index, grid)


def tune_rates(
    optimizer: str,
    make_model: Callable,
    rates: Sequence[float],
    seeds: Sequence[int],
    data,
    config: engine.TrainConfig,
    **tune_options: Any,
) -> Tuned:
    """:func:`tune` of the registered ``optimizer``'s learning rate over ``rates`` (its
    other hyperparameters at their defaults): the programs' most common search."""
    return tune(make_model, optimizer_factory(optimizer), {"learning_rate": rates}, seeds, data,
                config, name=optimizer, **tune_options)  # fmt: skip


def records(tuned: Tuned, **fields: Any) -> list[dict[str, Any]]:
    """One ``metrics.jsonl`` row per (configuration, seed, epoch): ``fields``, the name,
    the configuration's hyperparameters, seed, epoch, whether it was selected and
    diverged, and every metric (None for NaN)."""
    pop = tuned.population
    grid = tuned.grid
    rows = []
    for p in range(len(next(iter(grid.values()))) if grid else 1):
        for s, seed in enumerate(pop.seeds):
            for e in range(pop.history.epochs_done):
                row = dict(fields, optimizer=tuned.name)
                row.update({k: float(v[p]) for k, v in grid.items()})
                row.update(seed=int(seed), epoch=e + 1, selected=p == tuned.index,
                           diverged=bool(pop.diverged[p, s]))  # fmt: skip
                for metric, values in pop.histories.items():
                    value = float(values[p, s, e])
                    row[metric] = None if np.isnan(value) else value
                rows.append(row)
    return rows
