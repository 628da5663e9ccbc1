"""Interleaved-median timing: the one way every benchmark here measures time.

Candidates are timed in turns ``A B A B ...`` after a warm-up call each (which compiles), so
slow drifts of a shared machine (another process, thermal throttling) hit all of them
alike; each call is followed by ``jax.block_until_ready``. The summary of a candidate is
the median of its repeats and the interquartile range ``IQR = q3 - q1``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from optlab.experiments import report
from tqdm.auto import tqdm


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of one candidate: median, quartiles and every repeat."""

    median_s: float
    q1_s: float
    q3_s: float
    samples_s: tuple[float, ...]

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    @classmethod
    def from_samples(cls, samples_s) -> Timing:
        samples = np.asarray(samples_s, dtype=np.float64)
        q1, median, q3 = np.percentile(samples, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), tuple(float(s) for s in samples))

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "iqr_s": self.iqr_s,
            "q1_s": self.q1_s,
            "q3_s": self.q3_s,
            "repeats": len(self.samples_s),
        }


def time_once(fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()`` including the device work it dispatched."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(
    candidates: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Times each zero-argument callable ``repeats`` times, in turns ``A B A B ...``.

    Args:
      candidates: name -> callable doing one unit of work (a step, an epoch) and returning
        arrays to wait on. Callables that donate buffers keep their own state.
      repeats: timed calls per candidate.
      warmup: untimed calls per candidate first (the first one compiles).

    Returns:
      name -> ``Timing``.

    A transient progress bar (stderr) shows the warm-up, then the timed rounds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    label = " vs ".join(candidates)
    with tqdm(total=repeats, desc=label, unit="round", leave=False, file=sys.stderr) as bar:
        bar.set_postfix_str("warm-up (compiling)", refresh=True)
        for fn in candidates.values():
            for _ in range(warmup):
                jax.block_until_ready(fn())
        bar.set_postfix_str("timing")
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(repeats):
            for name, fn in candidates.items():
                samples[name].append(time_once(fn))
            bar.update()
    return {name: Timing.from_samples(s) for name, s in samples.items()}


def environment() -> dict[str, Any]:
    """What the figures were measured on: :func:`experiments.report.machine` (device,
    versions, date) and Optax's version."""
    return {**report.machine(), "optax": optax.__version__}
