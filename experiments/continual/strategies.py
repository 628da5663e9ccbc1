"""Continual-learning strategies: Naive fine-tuning, Replay and EWC.

* ``naive``   fine-tune the deployed weights on the new data only.
* ``replay``  train on the new data together with a bounded reservoir buffer of past samples
  (Vitter's Algorithm R: the ``t``-th sample seen replaces a uniformly chosen slot with
  probability ``capacity / t``, so the buffer is a uniform sample of everything seen).
* ``ewc``     Elastic Weight Consolidation (Kirkpatrick et al. 2017): add
  ``(λ/2) Σ_k F_k (θ_k − θ*_k)²`` to the loss, with ``F`` the diagonal Fisher of the
  deployed model on the data it learned and ``θ*`` its weights. Fishers accumulate over
  consolidations (``F ← F + F_new``, anchor ``θ* ←`` the latest deployed weights).
"""

from __future__ import annotations

import dataclasses

import numpy as np

STRATEGIES = ("naive", "replay", "ewc")


@dataclasses.dataclass
class ReplayBuffer:
    x: np.ndarray
    y: np.ndarray
    seen: int
    capacity: int

    @classmethod
    def empty(cls, capacity: int, input_shape) -> ReplayBuffer:
        return cls(np.zeros((0, *input_shape), np.float32), np.zeros(0, np.int32), 0, capacity)

    def add(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> ReplayBuffer:
        """Reservoir-sample ``(x, y)`` into a copy of the buffer (Algorithm R)."""
        bx, by = list(self.x), list(self.y)
        seen = self.seen
        for xi, yi in zip(x, y, strict=True):
            seen += 1
            if len(bx) < self.capacity:
                bx.append(xi)
                by.append(yi)
            else:
                slot = rng.integers(0, seen)
                if slot < self.capacity:
                    bx[slot], by[slot] = xi, yi
        shape = self.x.shape[1:]
        new_x = np.stack(bx).astype(np.float32) if bx else np.zeros((0, *shape), np.float32)
        return ReplayBuffer(new_x, np.asarray(by, np.int32), seen, self.capacity)


def training_set(strategy: str, x_new, y_new, buffer: ReplayBuffer | None):
    """The data a retrain fits: the new data, plus the replay buffer for ``replay``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    if strategy == "replay" and buffer is not None and len(buffer.y):
        return np.concatenate([x_new, buffer.x]), np.concatenate([y_new, buffer.y])
    return x_new, y_new
