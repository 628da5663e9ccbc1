"""The DeepOBS protocol, one problem × one optimizer at a time, on the engine.

1. Tune only the learning rate, on DeepOBS's grid: 36 values log-spaced from 10⁻⁵ to 10²
   (:func:`deepobs_grid`; a coarser run takes every k-th of them, so its values are still
   DeepOBS's). The whole grid trains as ONE population (``tuning.tune``: one compilation,
   one ``vmap``), seed 0, the optimizer's other hyperparameters at their defaults or as
   fixed in its spec (``momentum:momentum=0.99``).
2. Choose the rate with the best final validation value (``problem.select``: accuracy for
   the classifiers, loss otherwise; a diverged run is the worst). The test set is not used.
3. Re-run the chosen rate with seeds 0…S−1 (DeepOBS: 10 seeds), again as one population.
4. Measure on the re-run: the final test loss (and accuracy) per seed; the first epoch at
   which the seed-mean test metric meets the problem's target, as optimizer steps
   (``epoch × steps per epoch``) and as wall time (the re-run population's epochs up to
   it, compilation excluded); and the tuning cost (runs, optimizer steps, wall time with
   compilation).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from optlab import optimizers as opt
from optlab.experiments import engine, tuning
from optlab.experiments.benchmark.problems import Built, Problem

DEEPOBS_GRID = (1e-5, 1e2, 36)


def deepobs_grid(size: int = 36) -> np.ndarray:
    """``size`` of DeepOBS's 36 learning rates 10⁻⁵·10^(k/5), k = 0…35, evenly spaced in k
    (both ends kept): 36 is the whole grid, 8 every decade."""
    full = tuning.log_range(*DEEPOBS_GRID)
    if not isinstance(size, int) or not 2 <= size <= len(full):
        raise ValueError(f"--grid-size must be an integer in [2, {len(full)}], got {size!r}")
    return full[np.round(np.linspace(0, len(full) - 1, size)).astype(int)]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer and the hyperparameters held fixed (the rate is tuned):
    written ``name`` or ``name:key=value:key=value`` (``momentum:momentum=0.99``), ``name``
    also a researcher's ``MODULE:FACTORY``."""

    name: str
    fixed: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        return self.name + "".join(f":{key}={value:g}" for key, value in self.fixed)

    def factory(self) -> Callable:
        return tuning.optimizer_factory(self.name, **dict(self.fixed))


def parse_optimizer(text: str) -> OptimizerSpec:
    """An :class:`OptimizerSpec` from ``OPTIMIZER[:key=value...]``, where ``OPTIMIZER`` is a
    registered name or a researcher's ``MODULE:FACTORY`` (``my_opt.py:my_sgd``; registered
    on the way by ``opt.resolve``), checked against the registry."""
    parts = [part.strip() for part in text.split(":")]
    split = 2 if len(parts) > 1 and "=" not in parts[1] else 1  # MODULE:FACTORY, or a name
    (name,) = opt.resolve([":".join(parts[:split])])
    options = opt.info(name).defaults
    fixed = []
    for setting in parts[split:]:
        key, equals, value = setting.partition("=")
        if not equals or key not in options:
            raise ValueError(
                f"{text!r}: {setting!r} is not key=value with a key of {name} "
                f"({', '.join(options) or 'none'}; the learning rate is tuned)"
            )
        try:
            fixed.append((key, float(value)))
        except ValueError:
            raise ValueError(f"{text!r}: {key} must be a number, got {value!r}") from None
    return OptimizerSpec(name, tuple(fixed))


def parse_optimizers(spec: str) -> list[OptimizerSpec]:
    """Comma-separated :func:`parse_optimizer` specs, duplicates dropped."""
    specs = [parse_optimizer(part) for part in spec.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"--optimizers is empty; give names from {', '.join(opt.available())}")
    return list(dict.fromkeys(specs))


def first_reached(curve: np.ndarray, reached: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """The first 1-based epoch of ``curve`` (per epoch) that ``reached`` accepts, else None."""
    hits = np.flatnonzero(reached(curve))
    return int(hits[0]) + 1 if hits.size else None


@dataclasses.dataclass
class Outcome:
    """What the protocol measured for one problem and one optimizer."""

    problem: str
    optimizer: str
    learning_rate: float
    at_grid_edge: bool
    diverged_in_grid: int
    final: dict[str, np.ndarray]  # test metric -> (S,) final values
    epochs_to_target: int | None
    steps_to_target: int | None
    seconds_to_target: float | None
    tuning: dict[str, float]  # runs, steps, seconds, compile_s
    rerun: dict[str, float]  # seeds, seconds, compile_s
    tuned: tuning.Tuned  # the grid population
    chosen: tuning.Tuned  # the re-run population (a grid of one)

    @property
    def search(self) -> tuple[np.ndarray, np.ndarray]:
        """The grid and the final validation value of each rate (NaN where it diverged)."""
        return self.tuned.grid["learning_rate"], self.tuned.search()


def timed_tune(make_tx, built: Built, rates, seeds, config, select, name, on_epoch):
    start = time.perf_counter()
    tuned = tuning.tune(built.make_model, make_tx, {"learning_rate": rates}, seeds,
                        built.splits, config, select=select, name=name, loss=built.loss,
                        on_epoch=on_epoch)  # fmt: skip
    return tuned, time.perf_counter() - start


def run(problem: Problem, built: Built, spec: OptimizerSpec, size: dict[str, Any],
        phase: Callable[[str], Callable]) -> Outcome:  # fmt: skip
    """Steps 1–4 of the module docstring. ``phase(name)`` announces a phase ("tune", "re-run")
    and returns its ``on_epoch`` callback (the progress bar)."""
    config = engine.TrainConfig(epochs=size["epochs"], batch_size=size["batch_size"])
    make_tx = spec.factory()
    rates = deepobs_grid(size["grid_size"])
    tuned, tune_s = timed_tune(make_tx, built, rates, [0], config, problem.select, spec.label,
                               phase("tune"))  # fmt: skip
    rate = tuned.chosen["learning_rate"]
    seeds = list(range(size["seeds"]))
    chosen, rerun_s = timed_tune(make_tx, built, [rate], seeds, config, problem.select,
                                 spec.label, phase("re-run"))  # fmt: skip
    history = chosen.population.history
    target = problem.target
    epochs = first_reached(chosen.curves(target.metric).mean(axis=0), target.reached)
    steps_per_epoch = history.steps_per_epoch
    return Outcome(
        problem=problem.name,
        optimizer=spec.label,
        learning_rate=rate,
        at_grid_edge=tuned.at_grid_edge(),
        diverged_in_grid=int(tuned.population.diverged.any(axis=1).sum()),
        final={metric: chosen.final(metric) for metric in problem.final_metrics},
        epochs_to_target=epochs,
        steps_to_target=None if epochs is None else epochs * steps_per_epoch,
        seconds_to_target=None if epochs is None else float(history.epoch_time_s[:epochs].sum()),
        tuning={"runs": len(rates), "steps": len(rates) * size["epochs"] * steps_per_epoch,
                "seconds": tune_s, "compile_s": tuned.population.compile_time_s},
        rerun={"seeds": len(seeds), "seconds": rerun_s,
               "compile_s": chosen.population.compile_time_s},
        tuned=tuned,
        chosen=chosen,
    )  # fmt: skip
