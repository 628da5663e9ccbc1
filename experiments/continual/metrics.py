"""Continual-learning metrics with the standard definitions (Lopez-Paz & Ranzato 2017).

``R[j, i]`` is the accuracy on task ``i`` after training through task ``j`` (T × T).

* average accuracy  ``A = (1/T) Σ_i R[T−1, i]``
* backward transfer ``BWT = 1/(T−1) Σ_{i<T−1} (R[T−1, i] − R[i, i])``
* forgetting        ``F = 1/(T−1) Σ_{i<T−1} max_{j<T−1} R[j, i] − R[T−1, i]``
  (Chaudhry et al. 2018's average forgetting, the definition papers.md quotes)
* learning accuracy ``LA = (1/T) Σ_i R[i, i]`` (Riemer et al. 2019): how well each task was
  learned when it was new — low forgetting with low LA means little was learned to forget.
"""

from __future__ import annotations

import numpy as np


def average_accuracy(R: np.ndarray) -> float:
    R = np.asarray(R, float)
    return float(R[-1].mean())


def backward_transfer(R: np.ndarray) -> float:
    R = np.asarray(R, float)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[-1, i] - R[i, i] for i in range(T - 1)]))


def forgetting(R: np.ndarray) -> float:
    R = np.asarray(R, float)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[i : T - 1, i].max() - R[-1, i] for i in range(T - 1)]))


def learning_accuracy(R: np.ndarray) -> float:
    return float(np.mean(np.diag(np.asarray(R, float))))


def summarize(R: np.ndarray) -> dict[str, float]:
    return {
        "average_accuracy": average_accuracy(R),
        "learning_accuracy": learning_accuracy(R),
        "backward_transfer": backward_transfer(R),
        "forgetting": forgetting(R),
    }
