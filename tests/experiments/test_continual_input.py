"""``optlab continual`` refuses nonsense options (one line naming the flag, exit 2, nothing
written) and refuses to resume from a damaged registry instead of starting over."""

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from optlab.experiments.cli import main
from optlab.experiments.continual import LoopConfig, StudyConfig
from optlab.experiments.continual.options import InvalidOption

REFUSED = [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--user-batch", "0"], "--user-batch must be a positive integer, got 0"),
    (["--users-per-task", "0"], "--users-per-task must be a positive integer, got 0"),
    (["--tasks", "0"], "--tasks must be a positive integer, got 0"),
    (["--search", ""], "--search must be a non-empty list of"),
    (["--search", "sgd,nosuch"], "--search must be a non-empty list of"),
    (["--every", "0"], "--every must be a positive integer, got 0"),
    (["--buffer-size", "-5"], "--buffer-size must be a positive integer, got -5"),
    (["--triggers", ""], "--triggers must be a non-empty list of every, drift, accuracy"),
    (["--max-drop", "1.5"], "--max-drop must be in [0, 1], got 1.5"),
    (["--canary-share", "0"], "--canary-share must be in (0, 1], got 0.0"),
    (["--canary-alpha", "nan"], "--canary-alpha must be in (0, 1), got nan"),
    (["--drift-alpha", "1"], "--drift-alpha must be in (0, 1), got 1.0"),
    (["--ewc-lambda", "-1"], "--ewc-lambda must be in [0, inf), got -1.0"),
    (["--seed", "-1"], "--seed must be an integer ≥ 0, got -1"),
    (["--downsample", "0"], "--downsample must be a positive integer, got 0"),
    (["--corrupt-users", "10"], "--corrupt-users must be users of the stream, 0 to 9"),
    (["--preset", "split", "--tasks", "6"], "--tasks must be at most 5 with the split preset"),
    (["--study", "optimizers", "--tasks", "0"], "--tasks must be a positive integer, got 0"),
    (["--study", "optimizers", "--seeds", ""], "--seeds must be a non-empty list of integers"),
    (["--study", "optimizers", "--regimes", ""], "--regimes must be a non-empty list of"),
    (["--study", "optimizers", "--train-per-task", "0"], "--train-per-task must be a positive"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_nonsense_option_is_refused_in_one_line_naming_its_flag(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["continual", "--quick", "--out", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"optlab continual: error: {message}")
    assert captured.err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("config", "changes", "field"),
    [
        (LoopConfig, {"epochs": 0}, "epochs"),
        (LoopConfig, {"user_batch": 0}, "user_batch"),
        (LoopConfig, {"users_per_task": 0}, "users_per_task"),
        (LoopConfig, {"num_tasks": 0}, "num_tasks"),
        (LoopConfig, {"search": {}}, "search"),
        (LoopConfig, {"search": {"adam": []}}, "search"),
        (LoopConfig, {"search": {"adam": ["fast"]}}, "search"),
        (LoopConfig, {"validation_fraction": 0.0}, "validation_fraction"),
        (LoopConfig, {"validation_fraction": 0.6, "held_out_fraction": 0.5}, "held_out_fraction"),
        (LoopConfig, {"widths": (64, 0)}, "widths"),
        (LoopConfig, {"dropout": 1.0}, "dropout"),
        (LoopConfig, {"epochs": True}, "epochs"),
        (LoopConfig, {"worse_challenger_users": (-1,)}, "worse_challenger_users"),
        (StudyConfig, {"num_tasks": 0}, "num_tasks"),
        (StudyConfig, {"epochs": 0}, "epochs"),
        (StudyConfig, {"benchmarks": ()}, "benchmarks"),
        (StudyConfig, {"regimes": ("nosuch",)}, "regimes"),
    ],
)
def test_the_api_refuses_what_the_command_line_refuses(config, changes, field):
    with pytest.raises(InvalidOption) as err:
        config(**changes)
    assert err.value.field == field and str(err.value).startswith(f"{field} must be ")


# ----------------------------------------------------------------------------- resume


def _optlab(out, *args, cache):
    env = {**os.environ, "OPTLAB_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "optlab.experiments", "continual", "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-user ``--quick`` run (a few seconds)."""
    root = tmp_path_factory.mktemp("continual-input")
    out = root / "run"
    done = _optlab(out, "--quick", "--tasks", "2", "--users-per-task", "1", cache=root / "jax")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"out": out, "cache": root / "jax"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_refused_option_leaves_an_existing_run_folder_byte_for_byte_unchanged(finished, capsys):
    before = _snapshot(finished["out"])
    assert main(["continual", "--quick", "--out", str(finished["out"]), "--epochs", "0"]) == 2
    assert capsys.readouterr().err.startswith("optlab continual: error: --epochs must be")
    assert _snapshot(finished["out"]) == before


def test_an_intact_run_resumes(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished["out"], copy)
    resumed = _optlab(copy, "--resume", cache=finished["cache"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at user 2 of 2" in resumed.stdout


def _truncate_to_half(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _empty(db: Path) -> None:
    db.write_bytes(b"")


def _delete(table: str):
    def damage(db: Path) -> None:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(f"DELETE FROM {table}")
            conn.commit()

    return damage


DAMAGE = {
    "truncated-to-half": (_truncate_to_half, "cannot be read: database disk image is malformed"),
    "emptied": (_empty, "registry.sqlite is empty"),
    "deleted": (Path.unlink, "registry.sqlite is missing"),
    "ledger-rows-deleted": (_delete("ledger"), "its ledger accounts for 0 samples, expected 200"),
    "users-rows-deleted": (_delete("users"), "but 0 users are recorded (expected 2)"),
    "state-rows-deleted": (_delete("state"), "no committed checkpoint"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_registry_is_refused_not_restarted(finished, tmp_path, damage):
    copy = tmp_path / "run"
    shutil.copytree(finished["out"], copy)
    harm, message = DAMAGE[damage]
    harm(copy / "registry.sqlite")
    resumed = _optlab(copy, "--resume", cache=finished["cache"])
    assert resumed.returncode == 2
    assert resumed.stdout == ""
    assert resumed.stderr.count("\n") == 1 and message in resumed.stderr
    assert resumed.stderr.strip().endswith(f"the run cannot be resumed from {copy}")
    assert not (copy / "state" / "after-user--1.npz").exists()  # no bootstrap began
