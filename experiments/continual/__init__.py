"""``optlab continual``: a banking app that keeps learning as new customers arrive.

A stream of users brings batches of handwritten digits whose style shifts; the loop validates
each batch, retrains on a trigger (with a small optimizer × learning-rate search), rolls the
challenger out as a canary beside the champion, promotes or rolls back on an exact McNemar
test, monitors accuracy and drift, and records everything in a SQLite model registry that
survives a SIGKILL (``--resume``). ``--study optimizers`` measures how the optimizer and its
learning rate, batch size and dropout change forgetting on Permuted and Rotated benchmarks.

See docs/continual.md; :mod:`experiments.continual.cli` is the command line.
"""

from __future__ import annotations

from optlab.experiments.continual.loop import LoopConfig, run_stream
from optlab.experiments.continual.study import StudyConfig, run_study

__all__ = ["LoopConfig", "StudyConfig", "run_stream", "run_study"]
