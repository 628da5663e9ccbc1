"""One history format for every run: per-epoch metrics of a population (a run is one member)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def metric_names(metrics: Mapping[str, Any]) -> list[str]:
    """Metric names in reading order: train, val, test; loss before accuracy."""
    return sorted(metrics, key=lambda name: (SPLIT_ORDER.get(name.split("_")[0], 3), name))


class EpochReport(NamedTuple):
    """What ``on_epoch`` receives after every epoch (restored ones included).

    ``metrics[name]`` has shape ``(P, S)`` (NaN for a diverged member); a single run
    reads its values with :meth:`value`.
    """

    epoch: int  # 1-based
    metrics: dict[str, np.ndarray]
    epoch_time_s: float
    restored: bool  # True for an epoch restored from a checkpoint, not trained now

    def value(self, name: str) -> float:
        """The metric of a population of one as a float."""
        values = np.asarray(self.metrics[name])
        if values.size != 1:
            raise ValueError(f"{name} has {values.size} members; index metrics[{name!r}]")
        return float(values.reshape(()))


@dataclasses.dataclass
class History:
    """Per-epoch metrics of ``P`` configurations × ``S`` seeds.

    Attributes:
      metrics: name -> ``(P, S, epochs)``; NaN for epochs not run and, for a diverged
        member, from the epoch it diverged in. Names are ``train_loss``, ``train_<metric>``
        (minibatch means, or an evaluation pass with ``eval_train``), ``<split>_<metric>``
        for every evaluated split, and ``skipped_steps`` under the "skip" policy.
      epoch_time_s: ``(epochs,)`` wall time of each epoch's training (the whole
        population's; compilation excluded).
      diverged: ``(P, S)`` whether each member went non-finite and was frozen.
      steps_per_epoch: optimizer steps per epoch.
      epochs_done: epochs completed so far.
    """

    metrics: dict[str, np.ndarray]
    epoch_time_s: np.ndarray
    diverged: np.ndarray
    steps_per_epoch: int
    epochs_done: int = 0

    @classmethod
    def empty(cls, num_configs: int, num_seeds: int, epochs: int, steps_per_epoch: int):
        return cls({}, np.zeros(epochs), np.zeros((num_configs, num_seeds), bool),
                   steps_per_epoch)  # fmt: skip

    def record(self, epoch: int, values: Mapping[str, np.ndarray], epoch_time_s: float,
               newly_diverged: np.ndarray) -> EpochReport:  # fmt: skip
        """Store epoch ``epoch`` (1-based): ``values[name]`` of shape ``(P, S)``."""
        self.diverged = self.diverged | newly_diverged
        shape = (*self.diverged.shape, len(self.epoch_time_s))
        for name in metric_names(values):
            series = self.metrics.setdefault(name, np.full(shape, np.nan))
            value = np.asarray(values[name], float).reshape(self.diverged.shape)
            series[:, :, epoch - 1] = np.where(self.diverged, np.nan, value)
        self.epoch_time_s[epoch - 1] = epoch_time_s
        self.epochs_done = epoch
        return self.report(epoch)

    def report(self, epoch: int, restored: bool = False) -> EpochReport:
        metrics = {name: series[:, :, epoch - 1] for name, series in self.metrics.items()}
        return EpochReport(epoch, metrics, float(self.epoch_time_s[epoch - 1]), restored)

    def records(self, config: int = 0, seed: int = 0) -> list[dict[str, float]]:
        """One member's completed epochs as ``[{"epoch": e, metric: value, ...,
        "epoch_time_s", "step_time_s"}]`` (time: the whole population's epoch)."""
        out = []
        for epoch in range(self.epochs_done):
            record = {"epoch": epoch + 1}
            record.update({name: float(self.metrics[name][config, seed, epoch])
                           for name in metric_names(self.metrics)})  # fmt: skip
            seconds = float(self.epoch_time_s[epoch])
            record.update(epoch_time_s=seconds, step_time_s=seconds / self.steps_per_epoch)
            out.append(record)
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (NaN as None), for checkpoints."""

        def plain(values):
            return [[None if np.isnan(v) else float(v) for v in row] for row in values]

        return {
            "epochs_done": self.epochs_done,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_time_s": self.epoch_time_s.tolist(),
            "diverged": self.diverged.tolist(),
            "metrics": {
                name: [plain(series[:, :, e]) for e in range(self.epochs_done)]
                for name, series in self.metrics.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], epochs: int) -> History:
        """Inverse of :meth:`to_json`, padded to ``epochs``."""
        diverged = np.asarray(data["diverged"], bool)
        history = cls({}, np.zeros(epochs), diverged, int(data["steps_per_epoch"]),
                      int(data["epochs_done"]))  # fmt: skip
        history.epoch_time_s[: len(data["epoch_time_s"])] = data["epoch_time_s"][:epochs]
        for name, per_epoch in data["metrics"].items():
            series = np.full((*diverged.shape, epochs), np.nan)
            for e, values in enumerate(per_epoch):
                series[:, :, e] = np.asarray(values, dtype=float)
            history.metrics[name] = series
        return history
