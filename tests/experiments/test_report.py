"""Run-folder helpers: folders, config.json, metrics.jsonl, Markdown tables, PNG plots."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import math
import os
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from optlab.experiments import report
from optlab.experiments.engine import EpochReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_make_run_dir_creates_nested_folders_and_defaults_to_a_timestamp(tmp_path):
    run_dir = report.make_run_dir(tmp_path / "a" / "b", "compare")
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []
    default = report.make_run_dir(None, "compare", root=tmp_path / "runs")
    assert default.parent == tmp_path / "runs" and default.name.startswith("compare-2")


def test_make_run_dir_reports_an_unwritable_place_clearly(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write the run folder .*a-file"):
        report.make_run_dir(blocker / "run", "compare")


def test_config_and_metrics_round_trip_plain_json(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Config:
        epochs: int = 3
        widths: tuple = (8, 4)

    path = report.write_config(tmp_path, {"train": Config(), "lr": np.float32(0.5), "p": tmp_path})
    assert json.loads(path.read_text()) == {
        "train": {"epochs": 3, "widths": [8, 4]},
        "lr": 0.5,
        "p": str(tmp_path),
    }
    with report.MetricsWriter(tmp_path) as metrics:
        metrics.write({"optimizer": "adam", "epoch": 1, "loss": np.float32(0.25)})
        metrics.write({"optimizer": "adam", "epoch": 2, "loss": float("nan")})
    records = report.read_metrics(tmp_path / "metrics.jsonl")
    assert records == [
        {"optimizer": "adam", "epoch": 1, "loss": 0.25},
        {"optimizer": "adam", "epoch": 2, "loss": None},
    ]


def test_markdown_table_and_number_formats(tmp_path):
    rows = [["a|b", 1], ["c", report.format_number(None)]]
    table = report.markdown_table(["name", "value"], rows)
    assert table.splitlines() == [
        "| name | value |",
        "|---|---|",
        "| a\\|b | 1 |",
        "| c | — |",
    ]
    assert report.format_mean_std([0.9, 0.95, 1.0], scale=100) == "95 ± 4.1"
    assert report.format_mean_std([1.0, math.nan]) == report.DASH
    assert report.format_number(0.123456) == "0.1235"
    path = report.write_summary(tmp_path, "Title", ["intro", table])
    assert path.read_text() == f"# Title\n\nintro\n\n{table}\n"


def test_plot_curves_writes_a_png(tmp_path):
    epochs = np.arange(1, 6)
    curves = {
        "adam": (epochs, 1.0 / epochs, 0.1 / epochs),
        "sgd": (epochs, 2.0 / epochs, None),
    }
    path = report.plot_curves(tmp_path / "loss.png", curves, ylabel="loss", logy=True, title="t")
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 5000


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_draw_curves_gives_each_curve_a_colour_its_band_and_dots_on_short_ones():
    figure = report.new_figure()
    axes = figure.add_subplot()
    x = np.arange(1, 6)
    colors = report.draw_curves(axes, {"a": (x, x, 0.1 * x), "b": (x, 2 * x, None)}, dots=True)
    assert list(colors) == ["a", "b"] and colors["a"] != colors["b"]
    assert [line.get_marker() for line in axes.lines] == [".", "."]
    assert len(axes.collections) == 1  # one ±std band: "b" has no std
    report.style_axes(axes, xlabel="epoch", ylabel="loss", logy=True)
    assert axes.get_yscale() == "log" and axes.get_legend() is not None


def test_plot_panels_lays_out_rows_of_columns(tmp_path):
    x = np.arange(1, 4)
    panels = {f"panel {i}": {"adam": (x, x / (i + 1), None)} for i in range(4)}
    path = report.plot_panels(tmp_path / "p.png", panels, xlabel="epoch", ylabel="loss")
    # 3 columns of 4.2 in + 1.6 in for the one shared legend, × 2 rows of 3.3 in, at 80 dpi
    assert png_size(path) == (1136, 528)


def test_sixteen_curves_are_all_distinguishable_by_colour_and_line_style():
    """The main job draws 16 optimizers: a 10-colour cycle alone gave pairs the same look."""
    figure = report.new_figure()
    axes = figure.add_subplot()
    x = np.arange(1, 4)
    report.draw_curves(axes, {f"opt{i}": (x, x + i, None) for i in range(16)})
    looks = [(line.get_color(), line.get_linestyle()) for line in axes.lines]
    assert len(set(looks)) == 16
    assert len({report.curve_style(i) for i in range(40)}) == 40


def test_epoch_axes_get_integer_ticks_and_the_legend_sits_outside_the_data():
    figure = report.new_figure()
    axes = figure.add_subplot()
    x = np.arange(1, 8)
    report.draw_curves(axes, {"a": (x, 1.0 / x, None), "b": (x, 2.0 / x, None)})
    report.style_axes(axes, xlabel="epoch", ylabel="loss")
    figure.canvas.draw()
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    renderer = figure.canvas.get_renderer()
    legend_box = axes.get_legend().get_window_extent(renderer)
    assert not legend_box.overlaps(axes.get_window_extent(renderer))


def test_zoom_limits_show_the_close_finishers_and_leave_a_diverged_curve_off_scale():
    x = np.arange(1, 21)
    curves = {
        name: (x, np.linspace(0.5, final, 20), None)
        for name, final in {"adam": 0.97, "sgd": 0.955, "lion": 0.962, "diverged": 0.1}.items()
    }
    low, high = report.zoom_limits(curves, within=0.1)
    assert 0.9 < low < 0.955 and 0.97 < high < 1.0


def test_accuracy_plot_with_a_zoom_panel_is_twice_as_wide(tmp_path):
    x = np.arange(1, 6)
    curves = {"adam": (x, 0.9 + 0.01 * x, None), "sgd": (x, 0.85 + 0.02 * x, None)}
    plain = report.plot_curves(tmp_path / "a.png", curves, ylabel="accuracy")
    zoomed = report.plot_curves(tmp_path / "b.png", curves, ylabel="accuracy", zoom_within=0.1)
    assert png_size(plain) == (1080, 576) and png_size(zoomed) == (1440, 576)  # 9 / 12 in


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    """A write that fails midway (simulated ENOSPC) leaves the previous file and no temporary."""
    path = report.write_config(tmp_path, {"learning_rate": 0.1})
    before = path.read_text()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        report.write_config(tmp_path, {"learning_rate": 0.2})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_save_figure_leaves_no_partial_png(tmp_path, monkeypatch):
    figure = report.new_figure()
    figure.add_subplot().plot([0, 1], [1, 0])

    def broken_savefig(*args, **kwargs):
        Path(args[0]).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(OSError):
        report.save_figure(figure, tmp_path / "loss.png")
    assert list(tmp_path.iterdir()) == []


def test_machine_names_versions_devices_and_a_utc_date():
    info = report.machine()
    assert info["jax"] == jax.__version__
    assert info["backend"] == "cpu" and info["device_kind"] == "cpu"  # the test suite's JAX
    assert info["device_count"] >= 1 and info["process_count"] == 1
    assert info["cpu_count"] == os.cpu_count()
    assert info["machine"] and info["processor"]
    date = datetime.datetime.fromisoformat(info["date_utc"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.UTC) - date) < datetime.timedelta(minutes=5)
    line = report.describe_machine(info)
    assert f"JAX {jax.__version__}, cpu backend" in line and f"{os.cpu_count()} CPU cores" in line


def test_peak_memory_prefers_the_device_peak_and_falls_back_to_the_process_peak(monkeypatch):
    current_rss_mb = (
        int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                 if line.startswith("VmRSS:")).split()[1]) / 1024
    )  # fmt: skip
    peak = report.peak_memory_mb()  # the CPU backend reports no peak: ru_maxrss, in KiB
    # The kernel updates ru_maxrss lazily, so compare loosely; a unit error is a factor 1024.
    assert current_rss_mb / 2 <= peak < 32 * current_rss_mb

    device = types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": 3 * 2**20})
    monkeypatch.setattr(jax, "devices", lambda: [device])
    assert report.peak_memory_mb() == 3.0


def test_progress_shows_compiling_then_time_left_from_training_epochs_only():
    """The ETA once counted compilation (1:04:48 at the first epoch of a 2-minute run)."""
    with report.Progress(5, "test") as progress:
        progress.compiling("adam")
        assert progress.bar.postfix == "adam: compiling" and progress.time_left() == ""
        progress.epoch(EpochReport(1, {}, 0.0, restored=True))  # restored: done, not timed
        progress.epoch(EpochReport(2, {}, 2.0, restored=False))
        progress.epoch(EpochReport(3, {}, 4.0, restored=False), note="best 0.1")
        assert progress.bar.n == 3
        assert progress.time_left() == "~00:06 left"  # 2 epochs left × mean(2, 4) s
        assert progress.bar.postfix == "adam, best 0.1, ~00:06 left"
