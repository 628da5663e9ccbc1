"""``--track``: compare and continual runs logged to a real local MLflow store, read back
with MLflow's own client and checked against the run folder's files."""

import json
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from optlab.experiments import cli, tracking

mlflow = pytest.importorskip("mlflow")  # the optional extra; the test extra installs it
from mlflow import MlflowClient  # noqa: E402


def client_for(run_dir) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")


def test_track_without_mlflow_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "run"
    assert (
        cli.main(["compare", "--quick", "--optimizers", "sgd", "--track", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'optlab[tracking]'" in err
    assert not out.exists()


@pytest.mark.slow
def test_compare_track_logs_config_chosen_curves_memory_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    args = ["compare", "--quick", "--optimizers", "sgd,adam", "--epochs", "2", "--seeds", "2",
            "--lr-grid-size", "2", "--track", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0

    client = client_for(out)
    experiment = client.get_experiment_by_name("optlab compare")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert set(children) == {"sgd", "adam"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    config = json.loads((out / "config.json").read_text())
    assert parent.data.params["dataset"] == "digits" and parent.data.params["epochs"] == "2"
    assert json.loads(parent.data.params["optimizers"]) == config["optimizers"]
    assert parent.data.metrics["peak_memory_mb"] > 0 and parent.data.metrics["wall_time_s"] > 0

    # Each child's curve is the chosen learning rate's, mean over seeds, read from metrics.jsonl.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    selected = [row for row in rows if row["selected"]]
    expected = defaultdict(lambda: defaultdict(list))
    for row in selected:
        expected[row["optimizer"]][row["epoch"]].append(row["test_accuracy"])
    for name, run in children.items():
        history = client.get_metric_history(run.info.run_id, "test_accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        for m in history:
            assert m.value == pytest.approx(np.mean(expected[name][m.step]), rel=1e-6)
        (chosen,) = {row["learning_rate"] for row in selected if row["optimizer"] == name}
        assert float(run.data.params["learning_rate"]) == pytest.approx(chosen)

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.json", "metrics.jsonl", "summary.md", "loss.png", "accuracy.png"} <= artifacts
    assert "mlflow.db" not in artifacts


@pytest.mark.slow
def test_continual_track_registers_every_model_version_with_its_status(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "optlab.experiments", "continual", "--quick", "--tasks", "2",
         "--users-per-task", "1", "--track", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(out / "registry.sqlite") as db:
        versions = dict(db.execute("SELECT version, status FROM models").fetchall())
    assert versions and "deployed" in versions.values()

    client = client_for(out)
    name = f"optlab-continual-{out.name}"
    registered = client.search_model_versions(f"name='{name}'")
    status = {int(v.tags["optlab_version"]): v.tags["status"] for v in registered}
    assert status == {v: tracking.MODEL_STATUS[s] for v, s in versions.items()}
    production = client.get_model_version_by_alias(name, "production")
    deployed = next(v for v, s in versions.items() if s == "deployed")
    assert production.tags["optlab_version"] == str(deployed)
    assert production.source.endswith(f"models/v{deployed}.npz")

    (run,) = client.search_runs([client.get_experiment_by_name("optlab continual").experiment_id])
    users = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    users = [u for u in users if u.get("kind") == "user"]
    history = client.get_metric_history(run.info.run_id, "canary_accuracy")
    assert sorted(m.step for m in history) == sorted(u["user"] for u in users)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.jsonl", "summary.md", "models"} <= artifacts


@pytest.mark.slow
def test_benchmark_track_logs_each_problem_and_optimizer_rerun(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    argv = ["benchmark", "--quick", "--problems", "quadratic_deep", "--optimizers", "sgd,adam",
            "--epochs", "2", "--grid-size", "2", "--seeds", "2", "--track",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0

    client = client_for(out)
    runs = client.search_runs([client.get_experiment_by_name("optlab benchmark").experiment_id])
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert set(children) == {"quadratic_deep/sgd", "quadratic_deep/adam"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for name, run in children.items():
        optimizer = name.split("/")[1]
        reruns = [r for r in rows if r["phase"] == "rerun" and r["optimizer"] == optimizer]
        last = max(r["epoch"] for r in reruns)
        expected = np.mean([r["test_loss"] for r in reruns if r["epoch"] == last])
        assert run.data.metrics["final_test_loss"] == pytest.approx(expected, rel=1e-6)
        assert float(run.data.params["learning_rate"]) == pytest.approx(reruns[0]["learning_rate"])
