"""Seeded, stratified splits of labelled examples: the one way to hold out a validation set
or take a subset.

For ``n`` examples and a held-out size ``h`` (a count, or a fraction ``f`` giving
``h = round(f · n)``), a seeded shuffle of each class c (``n_c`` examples) sends about
``h · n_c / n`` of them to the held-out part, so both parts keep the class proportions
(``sklearn.model_selection.train_test_split(stratify=y)``). The same ``(y, h, seed)`` always
gives the same split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def held_out_count(held_out: int | float, n: int) -> int:
    """``held_out`` as a number of the ``n`` examples: an int as is, a fraction in (0, 1) as
    ``round(held_out · n)``; it must leave 1..n − 1 held out."""
    if isinstance(held_out, bool) or not isinstance(held_out, int | float | np.number):
        raise ValueError(f"held-out size must be an int or a fraction, got {held_out!r}")
    if isinstance(held_out, float | np.floating) and not 0.0 < held_out < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {held_out!r}")
    count = round(held_out * n) if isinstance(held_out, float | np.floating) else int(held_out)
    if not 0 < count < n:
        raise ValueError(f"held-out size {held_out!r} must leave 1..{n - 1} of {n} examples")
    return count


def split_validation(
    x: np.ndarray, y: np.ndarray, held_out: int | float, *, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: ``held_out`` examples (a count or a fraction of
    ``len(y)``) of ``(x, y)`` set aside, per class in proportion when ``stratify`` (labels
    ``y``; pass ``stratify=False`` for regression targets), chosen by ``seed``.

    Raises:
      ValueError: a held-out size that leaves either part empty, or (stratified) a part
        smaller than the number of classes or a class with a single example.
    """
    n = len(y)
    if len(x) != n:
        raise ValueError(f"x has {len(x)} examples but y has {n}")
    count = held_out_count(held_out, n)
    if stratify:
        classes = len(np.unique(y))
        if min(count, n - count) < classes:
            raise ValueError(
                f"a stratified split of {n} examples into {n - count} + {count} needs at least "
                f"{classes} (one per class) in each part"
            )
    keep, held = train_test_split(
        np.arange(n), test_size=count, stratify=y if stratify else None, random_state=seed
    )
    return x[keep], y[keep], x[held], y[held]


def stratified_subset(
    x: np.ndarray, y: np.ndarray, size: int | None, *, seed: int = 0, ordered: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` examples of ``(x, y)`` with the class proportions kept, chosen by ``seed``
    (all of them if ``size`` is None or at least ``len(y)``): the kept part of
    :func:`split_validation` holding out ``len(y) − size``, in its shuffled order, or with
    ``ordered`` in the examples' original order (the studies' subsets)."""
    if size is None or size >= len(y):
        return x, y
    if size < 1:
        raise ValueError(f"subset size must be >= 1, got {size}")
    indices = np.arange(len(y))
    kept, _, _, _ = split_validation(indices, y, len(y) - size, seed=seed)
    if ordered:
        kept = np.sort(kept)
    return x[kept], y[kept]
