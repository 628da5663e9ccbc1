"""One process at a time in a run folder, file modes from the umask, and sizes and paths the
data cannot satisfy refused in one line (issue 10, items 13, 17 and 18)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optlab.experiments import cli, report
from optlab.experiments import data as datasets
from optlab.experiments.data import loading

from tests.experiments.test_run_folder import SGD, refused, snapshot

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
HOLD_LOCK = (
    "import sys, time\n"
    "from experiments import report\n"
    "with report.RunFolderLock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


# --------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def lock_held_by_a_child(out: Path):
    """A child process holding the run-folder lock of ``out`` until it is SIGKILLed on exit
    (so the kernel, not the holder, frees the lock)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


def test_a_second_lock_is_refused_naming_the_holder_and_release_restores_the_folder(tmp_path):
    run_dir = tmp_path / "new" / "run"
    with report.RunFolderLock(run_dir) as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"]
        with pytest.raises(report.RunFolderInUseError) as refusal:
            report.RunFolderLock(run_dir).__enter__()
        message = str(refusal.value)
        assert f"{run_dir} is in use by PID {os.getpid()}" in message and "\n" not in message
    assert not (tmp_path / "new").exists()  # the folders it created, empty, are removed

    (run_dir / "kept").mkdir(parents=True)
    with report.RunFolderLock(run_dir):
        pass
    assert [p.name for p in run_dir.iterdir()] == ["kept"]  # the lock file is gone
    with report.RunFolderLock(run_dir):  # and can be taken again
        pass


def test_a_stale_lock_file_is_taken_over(tmp_path):
    """A lock file left by a killed holder is not locked: it is taken over and rewritten."""
    (tmp_path / report.LOCK_NAME).write_text('{"pid": 1, "command": "killed"}')
    with report.RunFolderLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_compare_on_a_folder_in_use_exits_2_naming_the_pid_then_runs_after_sigkill(
    tmp_path, capsys
):
    """Item 13: a second process on one --out died with sqlite3.IntegrityError (continual) or
    mixed two runs (compare); it is refused, and the kernel frees the lock of a killed holder."""
    out = tmp_path / "run"
    with lock_held_by_a_child(out) as holder:
        before = snapshot(out)
        line = refused(capsys, [*SGD, "--out", str(out)], f"is in use by PID {holder.pid}")
        assert "another --out folder" in line
        assert snapshot(out) == before
        resume = [*SGD, "--out", str(out), "--resume"]
        refused(capsys, resume, f"is in use by PID {holder.pid}")
    assert (out / report.LOCK_NAME).exists()  # left behind by the killed holder
    assert cli.main([*SGD, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["optimizers"] == ["sgd"]
    assert not (out / report.LOCK_NAME).exists()


# --------------------------------------------------------------------------- file modes


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_report_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    """Item 17: config.json and summary.md were 0600 (their temporary files' mode)."""
    umask(mask)
    config = report.write_config(tmp_path, {"learning_rate": 0.1})
    summary = report.write_summary(tmp_path, "Title", ["text"])
    plot = report.plot_curves(tmp_path / "loss.png", {"sgd": ([1, 2], [1.0, 0.5], None)},
                              ylabel="loss")  # fmt: skip
    assert {path.name: path.stat().st_mode & 0o777 for path in (config, summary, plot)} == {
        "config.json": mode,
        "summary.md": mode,
        "loss.png": mode,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "loss.png", "summary.md"]


# --------------------------------------------------------------------------- sizes and paths


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="needs the shared MNIST files")
@pytest.mark.parametrize("figure", ["1", "4"])
def test_a_train_size_above_the_dataset_is_refused_naming_the_flag_and_size(
    tmp_path, capsys, figure
):
    """Item 18: --train-size 100000000 was silently clamped to MNIST's 60,000 images."""
    out = tmp_path / "run"
    argv = ["adam-paper", "--figure", figure, "--tiny", "--train-size", "100000000"]
    assert cli.main([*argv, "--data-dir", str(SHARED_DATA), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "--train-size 100000000 is more than the 60,000 images of mnist's train" in err
    assert "give at most 60000" in err
    assert not out.exists()  # refused before any folder or training


def test_a_directory_where_a_data_file_should_be_is_named_as_such(tmp_path, monkeypatch):
    """Item 18: a directory in a file's place was reported as 'files missing'."""
    monkeypatch.setattr(loading, "shared_data_dir", lambda: None)
    folder = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    folder.mkdir(parents=True)
    with pytest.raises(datasets.DataError) as error:
        datasets.load("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert f"{folder} is a directory, not a file" in message and "missing" not in message


@pytest.mark.parametrize("study", [False, True])
def test_continual_on_a_folder_in_use_exits_2_naming_the_pid(tmp_path, capsys, study):
    """Item 13: two continual runs on one --out died with sqlite3.IntegrityError."""
    out = tmp_path / "run"
    with lock_held_by_a_child(out) as holder:
        before = snapshot(out)
        argv = ["continual", "--quick", "--tasks", "2", "--out", str(out)]
        argv += ["--study", "optimizers"] if study else ["--users-per-task", "1"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert f"is in use by PID {holder.pid}" in err and "\n" not in err
        assert snapshot(out) == before
