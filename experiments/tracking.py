"""``--track``: a finished run folder logged to MLflow, so that which algorithm and
hyperparameters each training used, its memory, metrics and accuracy can be found, compared
and redeployed later.

The store is ``sqlite:///RUN/mlflow.db`` inside the run folder (no server needed), its
artifacts under ``RUN/mlartifacts``; ``MLFLOW_TRACKING_URI`` chooses another store. Browse
it with ``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``.

* ``optlab compare``: a parent run (the configuration as parameters, the wall time, peak
  memory, the run folder's files as artifacts) with one nested run per optimizer: its
  chosen learning rate, the per-epoch metrics of the chosen configuration (mean over seeds,
  ``step`` = epoch) and its final test accuracy.
* ``optlab benchmark``: the same, one nested run per problem and optimizer (the chosen
  rate's re-run, mean over its seeds).
* ``optlab continual``: a run with the configuration, per-user metrics (``step`` = user),
  the summary, the artifacts, and every model version in MLflow's model registry
  (registered model ``optlab-continual-<run folder>``), tagged with its status
  (``production``, ``canary``, ``archived``), optimizer and hyperparameters; the
  aliases ``production`` and ``canary`` point at the current ones.

MLflow is an optional extra (``pip install 'optlab[tracking]'``); :func:`check_available`
refuses ``--track`` before anything runs when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

MISSING = "--track needs MLflow: pip install 'optlab[tracking]' (or pip install mlflow)"
STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"
NOT_ARTIFACTS = frozenset({STORE, ARTIFACTS, "checkpoints", ".lock"})  # store, bulky state
# The continual registry's statuses as MLflow model-registry statuses.
MODEL_STATUS = {
    "deployed": "production",
    "candidate": "canary",
    "retired": "archived",
    "rolled_back": "archived",
}
BATCH = 900  # MLflow's log_batch takes up to 1000 metrics


def check_available() -> None:
    """Raise the one-line install hint when MLflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError(MISSING)


def tracking_uri(run_dir: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else the SQLite store inside ``run_dir``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(run_dir).resolve() / STORE}"


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``: MLflow parameters are flat strings."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[name] = text[:6000]  # MLflow's limit on a parameter value
    return flat


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``row`` (not booleans), as floats."""
    return {
        key: float(value)
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    }


def selected_curves(
    rows: Iterable[dict], group: Callable[[dict], Hashable] = lambda row: row["optimizer"]
) -> dict[Hashable, dict[int, dict[str, float]]]:
    """``group(row)`` (the optimizer) -> epoch -> metric -> mean over seeds, of the rows of
    the chosen configuration (``selected``; :func:`experiments.tuning.records`)."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        if row.get("selected"):
            for metric, value in numeric(row).items():
                if metric not in ("epoch", "seed"):
                    values[group(row)][row["epoch"]][metric].append(value)
    return {
        name: {
            epoch: {m: float(np.mean(v)) for m, v in metrics.items()}
            for epoch, metrics in by_epoch.items()
        }
        for name, by_epoch in values.items()
    }


class Tracker:
    """One MLflow client on the store of one run folder (:func:`tracking_uri`)."""

    def __init__(self, run_dir: Path, experiment: str):
        check_available()
        from mlflow import MlflowClient  # an optional extra, imported only with --track

        self.run_dir = Path(run_dir)
        self.client = MlflowClient(tracking_uri=tracking_uri(self.run_dir))
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            local = "MLFLOW_TRACKING_URI" not in os.environ
            location = (self.run_dir / ARTIFACTS).resolve().as_uri() if local else None
            self.experiment_id = self.client.create_experiment(experiment, location)

    def start(self, name: str, params: Mapping[str, Any], parent: str | None = None) -> str:
        """A new run (nested under ``parent``) with ``params``; its id."""
        tags = {"mlflow.parentRunId": parent} if parent else {}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] = (),
        metrics: Mapping[str, float] = (),
        steps: Mapping[int, Mapping[str, float]] = (),
    ) -> None:
        """Parameters, final ``metrics`` and per-step metrics (``step -> metric -> value``)."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        entries = [Metric(k, v, now, 0) for k, v in dict(metrics).items()]
        entries += [
            Metric(k, v, now, int(step))
            for step, row in dict(steps).items()
            for k, v in row.items()
        ]
        param_list = [Param(k, v) for k, v in flat_params(dict(params)).items()]
        for start in range(0, len(param_list), 100):  # MLflow's limit per batch
            self.client.log_batch(run_id, params=param_list[start : start + 100])
        for start in range(0, len(entries), BATCH):
            self.client.log_batch(run_id, metrics=entries[start : start + BATCH])

    def log_folder(self, run_id: str) -> None:
        """The run folder's files as artifacts (not the store, nor checkpoints)."""
        for path in sorted(self.run_dir.iterdir()):
            if path.name in NOT_ARTIFACTS or path.name.startswith("."):
                continue
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id)


def peak_memory() -> dict[str, float]:
    from optlab.experiments.report import peak_memory_mb  # a light module; kept lazy

    return {"peak_memory_mb": float(peak_memory_mb())}


def log_chosen_curves(
    run_dir: Path, experiment: str, rows: Iterable[dict], fields: tuple[str, ...], wall_time_s
) -> str:
    """A parent run (the configuration, wall time, peak memory, the folder's files) with one
    nested run per value of the row ``fields`` (the optimizer; the problem and the optimizer):
    its chosen learning rate and the per-epoch metrics of its chosen configuration, mean
    over seeds (:func:`selected_curves`); returns the parent run's id."""
    run_dir = Path(run_dir)
    tracker = Tracker(run_dir, experiment)
    parent = tracker.start(run_dir.name, json.loads((run_dir / "config.json").read_text()))
    curves = selected_curves(rows, group=lambda row: tuple(row[field] for field in fields))
    for key, by_epoch in curves.items():
        last = by_epoch[max(by_epoch)]
        chosen = {**dict(zip(fields, key, strict=True)), "learning_rate": last.get("learning_rate")}
        child = tracker.start("/".join(key), chosen, parent)
        tracker.log(child, metrics={f"final_{k}": v for k, v in last.items()}, steps=by_epoch)
        tracker.finish(child)
    tracker.log(parent, metrics={"wall_time_s": wall_time_s, **peak_memory()})
    tracker.log_folder(parent)
    tracker.finish(parent)
    return parent


def log_compare(run_dir: Path, wall_time_s: float) -> str:
    """Log a finished ``optlab compare`` run folder, a nested run per optimizer."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    return log_chosen_curves(run_dir, "optlab compare", rows, ("optimizer",), wall_time_s)


def log_benchmark(run_dir: Path, wall_time_s: float) -> str:
    """Log a finished ``optlab benchmark`` run folder, a nested run per problem and optimizer
    (its re-run at the chosen rate, mean over the seeds)."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    reruns = [row for row in rows if row["phase"] == "rerun"]
    fields = ("problem", "optimizer")
    return log_chosen_curves(run_dir, "optlab benchmark", reruns, fields, wall_time_s)


def log_continual(run_dir: Path, wall_time_s: float) -> str:
    """Log a finished ``optlab continual`` run folder and its model versions; returns the
    run's id."""
    from mlflow.exceptions import MlflowException

    run_dir = Path(run_dir)
    tracker = Tracker(run_dir, "optlab continual")
    config = json.loads((run_dir / "config.json").read_text())
    run = tracker.start(run_dir.name, config)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    users = {row["user"]: numeric(row) for row in rows if row.get("kind") == "user"}
    summary = next((numeric(row) for row in rows if row.get("kind") == "summary"), {})
    tracker.log(run, metrics={**summary, "wall_time_s": wall_time_s, **peak_memory()}, steps=users)
    tracker.log_folder(run)
    tracker.finish(run)

    name = f"optlab-continual-{run_dir.name}"
    try:
        tracker.client.create_registered_model(name)
    except MlflowException:  # already there: a rerun of --track on the same folder
        pass
    current = {"production": None, "canary": None}
    for model in (row for row in rows if row.get("kind") == "model"):
        status = MODEL_STATUS.get(model["status"], model["status"])
        version = tracker.client.create_model_version(
            name,
            source=f"runs:/{run}/{model['weights']}",
            run_id=run,
            tags={
                "status": status,
                "optlab_version": str(model["version"]),
                "optimizer": str(model.get("optimizer")),
                "hparams": json.dumps(model.get("hparams")),
                "reason": str(model.get("reason") or ""),
            },
        )
        if status in current:
            current[status] = version.version
    for alias, version in current.items():
        if version is not None:
            tracker.client.set_registered_model_alias(name, alias, version)
    return run
