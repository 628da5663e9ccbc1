"""``optlab compare`` end to end on a tiny setting, and its clear errors."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from optlab.experiments import cli, compare, report
from optlab.experiments.commands import compare as compare_command


def test_compare_runs_end_to_end_and_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compare", "--quick", "--optimizers", "sgd,adam", "--epochs", "2", "--seeds", "2"]
    argv += ["--lr-grid-size", "2", "--out", str(out)]
    assert cli.main(argv) == 0

    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png", "config.json", "loss.png", "metrics.jsonl", "summary.md",
    ]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["optimizers"] == ["sgd", "adam"] and config["epochs"] == 2
    records = report.read_metrics(out / "metrics.jsonl")
    assert len(records) == 2 * 2 * 2 * 2  # optimizers × rates × seeds × epochs
    records = [r for r in records if r["selected"]]  # the chosen rate's runs
    assert {(r["optimizer"], r["seed"], r["epoch"]) for r in records} == {
        (name, seed, epoch) for name in ("sgd", "adam") for seed in (0, 1) for epoch in (1, 2)
    }
    assert len({(r["optimizer"], r["learning_rate"]) for r in records}) == 2  # one rate each
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["train_loss"] > 0 for r in records)
    assert config["machine"]["cpu_count"] >= 1 and config["machine"]["backend"] == "cpu"
    # Learning above chance (10 classes) after two epochs at the chosen rate.
    assert np.mean([r["test_accuracy"] for r in records if r["epoch"] == 2]) > 0.5
    summary = (out / "summary.md").read_text()
    assert "| sgd |" in summary and "| adam |" in summary and "Learning-rate search" in summary
    printed = capsys.readouterr().out
    assert "chosen lr" in printed and "state bytes / param" in printed
    adam_row = next(line for line in printed.splitlines() if line.startswith("| adam |"))
    assert adam_row.rstrip(" |").endswith("8.00")  # two float32 moments per parameter
    for plot in ("loss.png", "accuracy.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "flag, value, valid",
    [
        ("--optimizers", "adam,bogus", "adamw"),
        ("--dataset", "imagenet", "fashion_mnist"),
        ("--model", "resnet", "cnn_2c2d"),
    ],
)
def test_unknown_names_are_clear_errors(tmp_path, capsys, flag, value, valid):
    status = cli.main(["compare", flag, value, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert value.split(",")[-1] in err and re.search(r"valid( names)?: ", err) and valid in err
    assert not (tmp_path / "run").exists()


def test_settings_fill_quick_defaults_and_reject_bad_sizes():
    args = cli.build_parser()
    sub = args._subparsers._group_actions[0].choices["compare"]  # noqa: SLF001
    compare_command.configure_parser(sub)
    cfg = compare.settings(args.parse_args(["compare", "--quick", "--optimizers", "adam"]))
    assert (cfg["epochs"], cfg["lr_grid_size"], cfg["seeds"]) == (4, 3, 2)
    with pytest.raises(ValueError, match="--validation"):
        compare.settings(args.parse_args(["compare", "--validation", "1.5"]))


def test_epochs_to_target():
    assert compare.epochs_to_target(np.array([1.0, 0.5, 0.09, 0.2]), 0.1) == 3
    assert compare.epochs_to_target(np.array([1.0, np.nan]), 0.1) is None


def test_check_data_names_the_split_with_bad_inputs_or_labels():
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 2, 1], np.int32)
    good = {"x_train": x, "y_train": y, "x_val": x, "y_val": y, "x_test": x, "y_test": y}
    compare.check_data(SimpleNamespace(**good), num_classes=3)
    x_nan = x.copy()
    x_nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="x_val holds 1 NaN or infinite value.*example 2"):
        compare.check_data(SimpleNamespace(**good | {"x_val": x_nan}), num_classes=3)
    y_bad = np.array([0, 3, 1, 1], np.int32)
    with pytest.raises(ValueError, match=r"y_test holds labels in \[0, 3\], valid labels are 0..2"):
        compare.check_data(SimpleNamespace(**good | {"y_test": y_bad}), num_classes=3)


def test_default_optimizers_are_the_course_and_extended_sets():
    names = compare.resolve_optimizers(None)
    assert names[:8] == list(compare.COURSE) and set(compare.EXTENDED) <= set(names)


def test_resume_restores_finished_optimizers_and_gives_the_same_table(tmp_path, capsys):
    """A finished run resumed from its checkpoints trains nothing again and reports the same."""
    out = tmp_path / "run"
    argv = ["compare", "--quick", "--optimizers", "sgd,adam", "--epochs", "2", "--seeds", "1"]
    argv += ["--lr-grid-size", "2", "--out", str(out), "--checkpoint-every", "1"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    table = [line for line in first.splitlines() if line.startswith("| sgd |")]
    records = report.read_metrics(out / "metrics.jsonl")

    assert cli.main([*argv, "--resume"]) == 0
    resumed = capsys.readouterr().out
    resumed_table = [line for line in resumed.splitlines() if line.startswith("| sgd |")]
    # Same chosen rate and final metrics; only the measured step time may differ.
    assert table[0].split("|")[:6] == resumed_table[0].split("|")[:6]
    assert report.read_metrics(out / "metrics.jsonl") == records


def test_edge_note_names_optimizers_whose_rate_is_at_a_grid_end():
    results = [
        {"optimizer": "sgd", "at_grid_edge": True},
        {"optimizer": "adam", "at_grid_edge": False},
    ]
    (note,) = compare.edge_note(results)
    assert "sgd" in note and "adam" not in note
    assert compare.edge_note(results[1:]) == []


def test_in_a_multi_process_run_only_process_0_writes_the_report(tmp_path, capsys, monkeypatch):
    """Every process trains the same replicated run; the others leave the report to process 0."""
    monkeypatch.setattr(compare.jax, "process_count", lambda: 2)
    monkeypatch.setattr(compare.jax, "process_index", lambda: 1)
    out = tmp_path / "run"
    argv = ["compare", "--quick", "--optimizers", "sgd", "--epochs", "1", "--seeds", "1"]
    argv += ["--lr-grid-size", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert list(out.iterdir()) == []
    assert "chosen lr" not in capsys.readouterr().out
    # Process 1 starting after process 0 wrote the run's config.json trains all the same.
    (out / "config.json").write_text("{}")
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["config.json"]

    assert cli.main(argv) != 0  # no --out: each process would pick its own timestamped folder
    assert "needs --out" in capsys.readouterr().err
