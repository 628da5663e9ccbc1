"""Run folders and what goes in them: config.json, metrics.jsonl, summary.md, PNG plots.

Every experiment writes the same kinds of files so that runs can be compared and
re-read by tools::

    run_dir = report.make_run_dir(args.out, "compare")
    report.write_config(run_dir, {"dataset": "digits", "train": config})
    with report.MetricsWriter(run_dir) as metrics:
        metrics.write({"optimizer": "adam", "seed": 0, "epoch": 1, "train_loss": 0.3})
    report.write_summary(run_dir, "Title", [report.markdown_table(headers, rows)])
    report.plot_curves(run_dir / "loss.png", {"adam": (epochs, mean, std)}, ylabel="loss")

Plots use Matplotlib's object API with the Agg canvas (no pyplot, no display needed), and
every figure is made here: :func:`new_figure`, drawn with :func:`draw_curves` (mean lines
with ±std bands) and :func:`style_axes`, or whole by :func:`plot_curves` and
:func:`plot_panels`.
:class:`RunFolderLock` keeps a second process out of a run folder in use, and every file is
written atomically with the mode the umask allows (:func:`atomic_write_text`).
:func:`machine` says where and when a run ran (for ``config.json`` and summaries) and
:func:`peak_memory_mb` how much memory it took.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import math
import os
import platform
import resource
import secrets
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm.auto import tqdm

DASH = "—"


def timestamp() -> str:
    """UTC time as ``YYYYmmdd-HHMMSS``, for default run-folder names."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")


def machine() -> dict[str, Any]:
    """Where and when this ran: the UTC date, Python and JAX versions, JAX's backend, the
    first device's kind, the device and process counts, CPU cores, machine architecture and
    processor."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line of :func:`machine`'s fields for a summary, e.g. ``JAX 0.10.0, cpu backend
    (1 × cpu), 2 CPU cores, x86_64, 2026-01-31T12:00:00+00:00``."""
    return (
        f"JAX {info['jax']}, {info['backend']} backend ({info['device_count']} × "
        f"{info['device_kind']}), {info['cpu_count']} CPU cores, {info['processor']}, "
        f"{info['date_utc']}"
    )


def peak_memory_mb() -> float:
    """Peak memory in MiB: the first device's peak bytes in use where the backend reports
    them (GPU, TPU), else this process's peak resident set size (``ru_maxrss``: KiB on
    Linux, bytes on macOS)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def make_run_dir(out: str | Path | None, prefix: str, *, root: str | Path = "runs") -> Path:
    """Create the run folder ``out`` (default ``<root>/<prefix>-<timestamp>``), check writability.

    Raises:
      OSError: with the folder and the reason when it cannot be created or written.
    """
    run_dir = Path(out) if out else Path(root) / f"{prefix}-{timestamp()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise cannot_write(run_dir, err) from None
    return run_dir


def cannot_write(run_dir: Path, err: OSError) -> OSError:
    """The one-line error for a run folder that cannot be created or written."""
    reason = err.strerror or str(err)
    return OSError(f"cannot write the run folder {run_dir}: {reason}")


class RunFolderInUseError(OSError):
    """Another process holds the run folder's :class:`RunFolderLock`."""


LOCK_NAME = ".lock"
HOLDER_WAIT_S = 0.5  # how long a refused process waits for the holder to write its PID


class RunFolderLock:
    """One process at a time in a run folder: an exclusive, non-blocking ``flock`` on
    ``<run_dir>/.lock``, which holds the holder's PID and command::

        with report.RunFolderLock(out):
            ...  # check the folder, train, write

    A second process (or a second lock in this one) is refused with
    :class:`RunFolderInUseError` naming the holder's PID and command. The kernel releases a
    ``flock`` when its holder exits in any way, SIGKILL included, so a lock file left by a
    killed process is simply taken over. On release the lock file is removed, and so are the
    folders the lock created if nothing else was written into them: a command refused while
    holding the lock leaves the folder as it was (or absent, as it was).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> RunFolderLock:
        self._created = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = open_locked(self.path)
        except RunFolderInUseError:
            remove_empty_folders(self._created)
            raise
        except OSError as err:
            remove_empty_folders(self._created)
            raise cannot_write(self.run_dir, err) from None
        holder = {"pid": os.getpid(), "command": shlex.join(sys.orig_argv)}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(holder).encode(), 0)
        except OSError as err:
            self.__exit__()
            raise cannot_write(self.run_dir, err) from None
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # before the unlock: see open_locked
        os.close(self._fd)
        self._fd = None
        remove_empty_folders(self._created)


def same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def open_locked(path: Path) -> int:
    """``path`` opened (created if missing) and ``flock``-ed exclusively, without waiting.

    A holder removes the file before unlocking it, so a file locked here that is no longer
    at ``path`` was just released and removed: it is closed and ``path`` opened again.

    Raises:
      RunFolderInUseError: another open file holds the lock (its PID and command named).
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise RunFolderInUseError(
                f"run folder {path.parent} is in use by {holder}; wait for it to finish or "
                "choose another --out folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if same_file(fd, path):
            return fd
        os.close(fd)


def read_holder(fd: int) -> str:
    """``PID 123 (optlab compare ...)`` from a held lock file, waiting up to
    :data:`HOLDER_WAIT_S` for a holder that has just taken it to write it."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        try:
            holder = json.loads(os.pread(fd, 1 << 16, 0))
            command = " ".join(str(holder["command"]).split())  # one line
            return f"PID {int(holder['pid'])} ({command[:200]})"
        except (ValueError, TypeError, KeyError):
            if time.monotonic() > deadline:
                return "another process"
            time.sleep(0.02)


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def create_temporary(path: Path) -> tuple[int, Path]:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path``, opened for writing.

    Created with mode 0o666 like any file a program creates, so the umask decides its
    permissions (0o644 under the usual 0o022), which the file keeps when renamed to ``path``.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and
    ``os.replace``: a crash or a full disk mid-write leaves the old file (or none), never
    a truncated one. The file's mode is what the umask allows (``0o666 & ~umask``)."""
    path = Path(path)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """``figure.savefig`` made atomic in the same way as :func:`atomic_write_text`, with the
    same mode."""
    path = Path(path)
    fd, tmp = create_temporary(path)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_jsonable(value: Any) -> Any:
    """Dataclasses, NamedTuples, NumPy/JAX scalars and arrays, Paths -> plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return to_jsonable(value._asdict())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # NumPy and JAX scalars and arrays
        return to_jsonable(np.asarray(value).tolist())
    return value


def write_config(run_dir: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` (indented, keys in insertion order)."""
    path = Path(run_dir) / "config.json"
    return atomic_write_text(path, json.dumps(to_jsonable(config), indent=2) + "\n")


class MetricsWriter:
    """Append one JSON record per line to ``metrics.jsonl`` (non-finite floats become null)."""

    def __init__(self, run_dir: Path, name: str = "metrics.jsonl"):
        self.path = Path(run_dir) / name
        self._file = self.path.open("a")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(to_jsonable(record)) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    with Path(path).open() as file:
        return [json.loads(line) for line in file if line.strip()]


def format_number(value: float | None, digits: int = 4) -> str:
    """A compact number for tables; ``—`` for None or NaN."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.{digits}g}"


def format_mean_std(values: Iterable[float], digits: int = 4, scale: float = 1.0) -> str:
    """``mean ± std`` over seeds (population std, ddof=0); ``—`` if any value is NaN."""
    values = np.asarray(list(values), float) * scale
    if values.size == 0 or not np.all(np.isfinite(values)):
        return DASH
    return f"{values.mean():.{digits}g} ± {values.std():.2g}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are converted with ``str`` (pipes escaped)."""

    def cell(value):
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(run_dir: Path, title: str, sections: Iterable[str]) -> Path:
    """Write ``summary.md``: a title, then the given Markdown sections."""
    path = Path(run_dir) / "summary.md"
    return atomic_write_text(path, f"# {title}\n\n" + "\n\n".join(sections) + "\n")


class Progress:
    """A progress bar over training epochs (tqdm, on stderr) whose time left counts training
    only: compiling is shown as its own phase, and the estimate is the epochs left times the
    mean training time of the epochs trained so far (``EpochReport.epoch_time_s``, which
    compilation is not part of; restored epochs count as done but not in the mean).

        with report.Progress(total_epochs, "adam-paper") as progress:
            progress.compiling("Adam")
            tuning.tune(..., on_epoch=progress.epoch)
    """

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"

    def __init__(self, total: int | None, desc: str, *, disable: bool = False, leave=True):
        self.bar = tqdm(
            total=total,
            desc=desc,
            bar_format=self.FORMAT if total else None,
            unit="epoch",
            dynamic_ncols=True,
            disable=disable,
            leave=leave,
            file=sys.stderr,
        )
        self.trained_s: list[float] = []
        self.label = ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def compiling(self, label: str) -> None:
        """The next run (``label``) is being compiled; its first epoch ends the phase."""
        self.label = label
        self.bar.set_postfix_str(f"{label}: compiling", refresh=True)

    def epoch(self, report=None, note: str = "") -> None:
        """One epoch done (an ``on_epoch`` callback: ``report`` is its ``EpochReport``);
        ``note`` is shown beside the time left (e.g. the best loss so far)."""
        if report is not None and not report.restored:
            self.trained_s.append(float(report.epoch_time_s))
        self.bar.update()
        self.bar.set_postfix_str(", ".join(filter(None, [self.label, note, self.time_left()])))

    def time_left(self) -> str:
        """``~M:SS left`` from training epochs only, or "" before any."""
        if not self.trained_s or not self.bar.total:
            return ""
        seconds = (self.bar.total - self.bar.n) * float(np.mean(self.trained_s))
        return f"~{tqdm.format_interval(seconds)} left"


def new_figure(figsize: tuple[float, float] = (7, 4.5)) -> Figure:
    """A figure on the Agg canvas with constrained layout (no pyplot, no display needed)."""
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def annotated_heatmap(axes, values, *, vmin: float = 0.0, vmax: float = 1.0, digits: int = 2,
                      fontsize: float = 7, cmap: str = "viridis"):  # fmt: skip
    """Draw the matrix ``values`` on ``axes`` as an image with each cell's value written in
    it (white on the darker lower 60 % of the scale); returns the image (for a colorbar)."""
    values = np.asarray(values, float)
    image = axes.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap)
    dark_below = vmin + 0.6 * (vmax - vmin)
    for (row, col), value in np.ndenumerate(values):
        axes.text(col, row, f"{value:.{digits}f}", ha="center", va="center", fontsize=fontsize,
                  color="w" if value < dark_below else "k")  # fmt: skip
    return image


Curves = Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]]
DOTTED_BELOW = 12  # draw_curves(dots=True) marks the points of curves shorter than this
COLORS = tuple(f"C{i}" for i in range(10))  # Matplotlib's default 10-colour cycle
LINE_STYLES = ("-", "--", ":", "-.")
INTEGER_AXES = frozenset({"epoch", "epochs", "step", "steps"})  # labels of counted x axes


def curve_style(index: int) -> tuple[str, str]:
    """``(colour, line style)`` of the ``index``-th curve: the 10 colours with solid lines,
    then again dashed, dotted, dash-dotted, so 40 curves on one axes are all distinct."""
    return COLORS[index % len(COLORS)], LINE_STYLES[(index // len(COLORS)) % len(LINE_STYLES)]


def draw_curves(axes, curves: Curves, *, dots: bool = False) -> dict[str, str]:
    """Draw ``label -> (x, mean, std or None)`` on ``axes``: a line per curve in its own
    :func:`curve_style` with a ±std band (and, with ``dots``, its points marked when it has
    fewer than ``DOTTED_BELOW``); returns label -> the line's colour."""
    colors = {}
    for index, (label, (x, mean, std)) in enumerate(curves.items()):
        x, mean = np.asarray(x, float), np.asarray(mean, float)
        marker = "." if dots and len(x) < DOTTED_BELOW else None
        color, line_style = curve_style(index)
        axes.plot(x, mean, label=label, lw=1.5, marker=marker, color=color, ls=line_style)
        if std is not None:
            std = np.asarray(std, float)
            axes.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        colors[label] = color
    return colors


def style_axes(
    axes,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    legend_size: str | float = "small",
    legend_columns: int = 1,
    legend: bool = True,
) -> None:
    """Labels, log scales, a light grid, integer ticks on a counted x axis (epochs, steps:
    :data:`INTEGER_AXES`), and when anything is labelled a legend, by default outside the
    axes on the right so that it hides no data."""
    if logx:
        axes.set_xscale("log")
    if logy:
        axes.set_yscale("log")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if xlabel in INTEGER_AXES and not logx:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if legend and axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=legend_size, ncol=legend_columns, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # fmt: skip


def zoom_limits(curves: Curves, within: float, margin: float = 0.15) -> tuple[float, float]:
    """y limits that show the curves whose final value is within ``within`` of the best
    (highest) final value, with ``margin`` of their spread above and below: on accuracy,
    the 95–97 % differences a full 0–1 axis hides; a curve far below is left off-scale."""
    finals = np.array([np.asarray(mean, float)[-1] for _, mean, _ in curves.values()])
    finals = finals[np.isfinite(finals)]
    best = finals.max()
    close = finals[finals >= best - within]
    spread = max(best - close.min(), 1e-3)
    return close.min() - margin * spread - 0.5 * spread, best + margin * spread + 0.5 * spread


def plot_curves(
    path: str | Path,
    curves: Curves,
    *,
    xlabel: str = "epoch",
    ylabel: str,
    title: str = "",
    logy: bool = False,
    zoom_within: float | None = None,
) -> Path:
    """Plot ``label -> (x, mean, std or None)`` as lines with ±std bands, the legend outside
    on the right; save a PNG.

    With ``zoom_within`` (a higher-is-better metric such as accuracy) a second panel shows
    the last half of the x range with the y axis zoomed onto the curves that end within
    ``zoom_within`` of the best (:func:`zoom_limits`)."""
    zoom = zoom_within is not None
    figure = new_figure((12 if zoom else 9, 4.8))
    axes = figure.subplots(1, 2 if zoom else 1, squeeze=False).ravel()
    titles = [title]
    if zoom:
        titles.append(f"zoomed on the curves ending within {zoom_within:g} of the best")
    for ax, panel_title in zip(axes, titles, strict=False):
        draw_curves(ax, curves)
        style_axes(ax, xlabel=xlabel, ylabel=ylabel, title=panel_title, logy=logy, legend=False)
    if zoom:
        x_max = max(np.asarray(x, float)[-1] for x, _, _ in curves.values())
        axes[1].set_xlim(x_max / 2, x_max)
        axes[1].set_ylim(*zoom_limits(curves, zoom_within))
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper",
                  fontsize="small", ncol=2 if len(curves) > 12 else 1)  # fmt: skip
    return save_figure(figure, path)


def plot_panels(
    path: str | Path,
    panels: Mapping[str, Curves],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    suptitle: str = "",
    columns: int = 3,
) -> Path:
    """One panel per ``title -> curves`` (as :func:`plot_curves`', points dotted on short
    curves), ``columns`` panels a row; save a PNG. Panels that all show the same labels
    share one legend outside them, on the right; otherwise each has its own, outside."""
    rows = -(-len(panels) // columns)
    columns = min(columns, len(panels))
    shared = len({tuple(curves) for curves in panels.values()}) == 1
    figure = new_figure((4.2 * columns + (1.6 if shared else 1.6 * columns), 3.3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, curves) in zip(axes, panels.items(), strict=False):
        draw_curves(ax, curves, dots=True)
        style_axes(ax, xlabel=xlabel, ylabel=ylabel, title=title, logx=logx, logy=logy,
                   legend_size=7, legend=not shared)  # fmt: skip
    if shared and axes[0].get_legend_handles_labels()[0]:
        figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper",
                      fontsize="small")  # fmt: skip
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if suptitle:
        figure.suptitle(suptitle)
    return save_figure(figure, path, dpi=80)
