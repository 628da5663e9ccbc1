"""``optlab bench BENCHMARK``: running a benchmark and printing or writing its rows; the
options are :mod:`experiments.commands.bench`'s (see the package docstring)."""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

from optlab.experiments.report import atomic_write_text


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"optlab.experiments.bench.{args.benchmark}")
    result = module.measure(args)
    table = format_table(result["rows"])
    print(table)
    for note in result.get("notes", []):
        print(f"note: {note}")
    if args.out is not None:
        path = write_result(args.out, args.benchmark, result, table)
        print(f"wrote {path}")
    return 0


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table whose columns are the union of the rows' keys, in first-seen order."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[format_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *(line(r) for r in cells)])


def write_result(out_dir: pathlib.Path, name: str, result: dict[str, Any], table: str):
    """Writes ``<name>.json`` (the whole result) and ``<name>.md`` (the table) to ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    notes = "".join(f"\n- {note}" for note in result.get("notes", []))
    env = result.get("environment", {})
    header = f"# optlab bench {name}\n\n{env.get('device_kind', '')} · jax {env.get('jax', '')}"
    atomic_write_text(
        out_dir / f"{name}.md", f"{header} · {env.get('date_utc', '')}\n\n{table}\n{notes}\n"
    )
    return path
