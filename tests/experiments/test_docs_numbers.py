"""Every number that docs/results.md, docs/studies.md and docs/continual.md quote as a result is
found in the committed files of the run it comes from (``docs/<doc>/raw/<run>/``: the run's
``metrics.jsonl.gz``, ``summary.md`` and ``config.json``), to the precision it is printed with.

A result is a number in a table row, a quoted line (``>``) or a bullet (``-``) of a section that
reports a run; each such section names its runs in ``SECTIONS``. A printed number matches a
value of the run's files when they are equal once the value is rounded to the printed digits:
``0.913`` matches 0.91296, ``7.8e-21`` matches 7.77e-21, ``3200`` only 3200. Values are read
from the raw metrics (every number in every record), and from the summary and config text.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

# doc -> {section heading (a prefix of the heading line): the run folders it quotes}
SECTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "continual.md": {
        "### The loop on MNIST, with injected faults": ("continual/raw/loop-mnist",),
        "### The optimizer study on MNIST": (
            "continual/raw/study-mnist-10k",
            "continual/raw/study-permuted-full",
        ),
    },
    "studies.md": {
        "### `surfaces`": ("studies/raw/surfaces",),
        "### `conditioning`": ("studies/raw/conditioning",),
        "### `lr-sensitivity`": ("studies/raw/lr-sensitivity",),
        "### `noise-redundancy`": ("studies/raw/noise-redundancy",),
        "### `batch-regimes`": ("studies/raw/batch-regimes",),
        "### `generalisation`": ("studies/raw/generalisation",),
        "### `architectures`": ("studies/raw/architectures",),
    },
    "results.md": {
        "## Summary": tuple(
            f"results/raw/{run}"
            for run in (
                "adam-fig1",
                "adam-fig2a",
                "adam-fig2b",
                "adam-adamax",
                "adam-fig3-quick",
                "adam-fig4",
                "adadelta",
            )
        ),  # fmt: skip
        "## Adam Fig. 1": ("results/raw/adam-fig1",),
        "## Adam Fig. 2a": ("results/raw/adam-fig2a",),
        "## Adam Fig. 2b": ("results/raw/adam-fig2b",),
        "## AdaMax vs Adam": ("results/raw/adam-adamax",),
        "## Adam Fig. 3 — CNN": ("results/raw/adam-fig3-quick",),
        "## Adam Fig. 3 at the paper": ("results/raw/adam-fig3-paper-width",),
        "## Adam Fig. 4": ("results/raw/adam-fig4",),
        "## ADADELTA": ("results/raw/adadelta",),
    },
}

NUMBER = re.compile(
    r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+−]?\d+)?(?![\w])"
)


def printed_numbers(text: str) -> list[str]:
    """The numbers of a line as printed (a thousands separator ``60,000`` kept in one)."""
    return [m.group(0) for m in NUMBER.finditer(text)]


def value_and_half_unit(token: str) -> tuple[float, float]:
    """The number and half a unit of its last printed digit (its rounding interval)."""
    plain = token.replace("−", "-").replace(",", "")
    mantissa, _, exponent = plain.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    scale = 10.0 ** int(exponent) if exponent else 1.0
    return float(plain), 0.5 * 10.0**-decimals * scale


def flatten(value):
    """Every number in a JSON value."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from flatten(v)
    elif isinstance(value, str):
        yield from (value_and_half_unit(t)[0] for t in printed_numbers(value))


def run_values(folder: Path) -> list[float]:
    """The sorted numbers of one run's committed files."""
    values = []
    with gzip.open(folder / "metrics.jsonl.gz", "rt") as lines:
        for line in lines:
            values.extend(flatten(json.loads(line)))
    for name in ("summary.md", "config.json"):
        values.extend(
            value_and_half_unit(t)[0] for t in printed_numbers((folder / name).read_text())
        )
    return sorted(v for v in values if math.isfinite(v))


def found(token: str, values: list[float]) -> bool:
    """Is there a value that rounds to ``token`` at its printed precision?"""
    target, half = value_and_half_unit(token)
    slack = half * (1 + 1e-9) + 1e-12 * abs(target)
    i = bisect.bisect_left(values, target - slack)
    return i < len(values) and values[i] <= target + slack


def section(doc: str, heading: str) -> list[str]:
    """The lines of the section that starts at ``heading``, up to the next heading of the same
    or a higher level."""
    lines = (DOCS / doc).read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"{doc}: {len(starts)} headings start with {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    body, in_code = [], False
    for line in lines[starts[0] + 1 :]:
        in_code ^= line.startswith("```")
        hashes = len(line) - len(line.lstrip("#"))
        if not in_code and 0 < hashes <= level and line[hashes : hashes + 1] == " ":
            break
        body.append(line)
    return body


def result_lines(lines: list[str]) -> list[str]:
    """Table rows (not the header or its rule), quoted lines and bullets."""
    out, in_table = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|"):
            if in_table and not set(stripped) <= set("|-: "):
                out.append(stripped)
            in_table = True  # the first row of a table is its header
            continue
        in_table = False
        if stripped.startswith((">", "- ")):
            out.append(stripped)
    return out


CASES = [(doc, heading) for doc, sections in SECTIONS.items() for heading in sections]


@pytest.mark.parametrize(("doc", "heading"), CASES, ids=[f"{d}:{h}" for d, h in CASES])
def test_every_quoted_result_is_in_the_committed_run_files(doc, heading):
    folders = [DOCS / folder for folder in SECTIONS[doc][heading]]
    for folder in folders:
        assert (folder / "metrics.jsonl.gz").is_file(), f"{folder}: raw metrics not committed"
    values = sorted(v for folder in folders for v in run_values(folder))
    lines = result_lines(section(doc, heading))
    assert lines, f"{doc} {heading!r}: no result lines found"
    missing = [
        (token, line[:80])
        for line in lines
        for token in printed_numbers(line)
        if not found(token, values)
    ]
    assert not missing, f"{doc} {heading!r}: not in the run files: {missing}"


def test_the_matching_rule_respects_the_printed_precision():
    values = sorted([0.91296, 7.77e-21, 3200.0, 60000.0])
    assert found("0.913", values) and found("0.9130", values) and not found("0.9129", values)
    assert found("7.8e-21", values) and not found("7.7e-21", values)
    assert found("3200", values) and not found("3201", values) and found("60,000", values)
    line = "v2 at 0.910 → 0.925 (400), −0.028"
    assert printed_numbers(line) == ["0.910", "0.925", "400", "−0.028"]
    assert not found("−0.028", values)
