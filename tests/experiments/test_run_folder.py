"""``optlab compare``'s run folder belongs to one run, and a refused command touches nothing.

Every refusal is exit status 2 with one line on stderr, no traceback, and leaves an
existing run folder byte-for-byte (and mode-for-mode) as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from optlab.experiments import cli, compare, data

TINY = ["compare", "--quick", "--epochs", "1", "--seeds", "1", "--lr-grid-size", "1"]
SGD = [*TINY, "--optimizers", "sgd"]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``folder``: its mode and, for a file, its bytes."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_mode,
            path.read_bytes() if path.is_file() else None,
        )
        for path in sorted(folder.rglob("*"))
    }


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``optlab argv``; assert exit 2 and one stderr line holding ``fragments``."""
    status = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("compare:")]  # tqdm's bar
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished, checkpointed sgd run (1 epoch, 1 seed, 1 rate), shared read-only."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main([*SGD, "--checkpoint-every", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_folder(finished_run, tmp_path) -> Path:
    """A private copy of the finished run (modes kept)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_reusing_out_without_resume_is_refused(run_folder, capsys):
    """Problem 1: a second run into the same folder would mix its rows with the first's."""
    before = snapshot(run_folder)
    argv = [*TINY, "--optimizers", "adam", "--out", str(run_folder)]
    refused(capsys, argv, "already holds a run", "--resume", "new --out folder")
    assert snapshot(run_folder) == before


@pytest.mark.parametrize("kept", ["config.json", "metrics.jsonl", "checkpoints"])
def test_any_run_file_marks_the_folder_as_holding_a_run(run_folder, capsys, kept):
    for name in compare.RUN_FILES:
        if name != kept:
            path = run_folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = snapshot(run_folder)
    refused(capsys, [*SGD, "--out", str(run_folder)], f"already holds a run ({kept})")
    assert snapshot(run_folder) == before


@pytest.mark.parametrize(
    "change, difference",
    [
        (["--epochs", "2"], "--epochs: saved 1, now 2"),
        (["--optimizers", "adam"], '--optimizers: saved ["sgd"], now ["adam"]'),
        (["--optimizers", "sgd,adam"], '--optimizers: saved ["sgd"], now ["sgd", "adam"]'),
        (["--model", "logreg"], '--model: saved "mlp", now "logreg"'),
        (["--seeds", "2"], "--seeds: saved 1, now 2"),
        (["--lr-grid-size", "2"], "--lr-grid-size: saved 1, now 2"),
        (["--batch-size", "16"], "--batch-size: saved 32, now 16"),
        (["--validation", "0.3"], "--validation: saved 0.2, now 0.3"),
        (["--on-non-finite", "skip"], '--on-non-finite: saved "stop", now "skip"'),
    ],
)
def test_resume_with_another_run_definition_is_refused_naming_it(
    run_folder, capsys, change, difference
):
    """Problems 2 and 3: checked before anything is written, the differing flag named."""
    before = snapshot(run_folder)
    argv = [*SGD, "--out", str(run_folder), "--resume", *change]  # the last value wins
    refused(capsys, argv, "--resume continues the same run", difference)
    assert snapshot(run_folder) == before


def test_resume_of_a_folder_without_a_readable_config_is_refused(run_folder, capsys):
    config = run_folder / "config.json"
    config.write_text("{not json")
    before = snapshot(run_folder)
    refused(capsys, [*SGD, "--out", str(run_folder), "--resume"], "config.json is not valid JSON")
    assert snapshot(run_folder) == before
    config.unlink()
    before = snapshot(run_folder)
    refused(capsys, [*SGD, "--out", str(run_folder), "--resume"], "but no config.json")
    assert snapshot(run_folder) == before


@pytest.mark.parametrize(
    "flag, value",
    [("--epochs", "0"), ("--seeds", "0"), ("--lr-grid-size", "0"), ("--checkpoint-every", "0"),
     ("--batch-size", "0"), ("--epochs", "-1"), ("--checkpoint-every", "-2")],
)  # fmt: skip
def test_zero_or_negative_sizes_are_refused_naming_the_flag(tmp_path, capsys, flag, value):
    """Problem 4: 0 is a given value (not "use the default") and is refused."""
    out = tmp_path / "run"
    refused(capsys, [*SGD, flag, value, "--out", str(out)], f"{flag} must be >= 1, got {value}")
    assert not out.exists()


def test_zero_is_refused_in_an_existing_run_folder_too(run_folder, capsys):
    before = snapshot(run_folder)
    argv = [*SGD, "--out", str(run_folder), "--resume", "--checkpoint-every", "0"]
    refused(capsys, argv, "--checkpoint-every must be >= 1, got 0")
    assert snapshot(run_folder) == before


@pytest.mark.parametrize("make_empty_folder", [False, True])
def test_resume_into_a_missing_or_empty_folder_says_so_and_starts_a_new_run(
    tmp_path, capsys, make_empty_folder
):
    """Problem 5: one line on stderr, then an ordinary new run."""
    out = tmp_path / "run"
    if make_empty_folder:
        out.mkdir()
    assert cli.main([*SGD, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"nothing to resume in {out}" in err and "starting a new run" in err
    assert json.loads((out / "config.json").read_text())["optimizers"] == ["sgd"]
    assert (out / "checkpoints" / "sgd").is_dir()  # --resume implies --checkpoint-every 1


@pytest.mark.parametrize("spec", ["", ",", " , "])
def test_an_empty_optimizer_list_says_it_is_empty(tmp_path, capsys, spec):
    """Problem 6: not "unknown optimizer(s) ;"."""
    line = refused(capsys, [*TINY, "--optimizers", spec, "--out", str(tmp_path / "r")], "empty")
    assert "--optimizers is empty; give names from" in line and "sgd" in line
    assert "unknown" not in line


def test_data_loader_messages_name_the_flag_not_the_keyword(tmp_path, capsys, monkeypatch):
    """Problem 6: the loader's ``data_dir=`` reads ``--data-dir`` on the command line."""

    def missing(name, data_dir=None, validation=None):
        raise data.DataError(f"{name} files are missing: set $OPTLAB_DATA_DIR / data_dir= to them")

    monkeypatch.setattr(compare.datasets, "load", missing)
    line = refused(capsys, [*SGD, "--out", str(tmp_path / "run")], "$OPTLAB_DATA_DIR / --data-dir")
    assert "data_dir=" not in line
    assert not (tmp_path / "run").exists()


def test_engine_and_data_keywords_are_named_as_flags_on_the_command_line():
    err = ValueError("x; resume with the original configuration or use another")
    assert cli.one_line(err) == "x; --resume with the original options or use another"
    assert cli.one_line(ValueError("set data_dir= to it\nthen")) == "set --data-dir to it\\nthen"


def test_resume_may_change_what_does_not_change_the_results(run_folder, capsys):
    """Report-only options are not part of the run definition: the run resumes (restored,
    not retrained) and config.json records the new values."""
    metrics = (run_folder / "metrics.jsonl").read_bytes()
    argv = [*SGD, "--out", str(run_folder), "--resume", "--target-loss", "0.5"]
    assert cli.main([*argv, "--checkpoint-every", "2"]) == 0
    assert "nothing to resume" not in capsys.readouterr().err
    config = json.loads((run_folder / "config.json").read_text())
    assert (config["target_loss"], config["checkpoint_every"]) == (0.5, 2)
    assert (run_folder / "metrics.jsonl").read_bytes() == metrics
