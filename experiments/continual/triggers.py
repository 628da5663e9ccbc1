"""Retrain triggers: every N new users, on detected drift, or on an accuracy drop.

``policy`` is a set of rules; the first that fires names the reason:

* ``every``    ``users_since_retrain ≥ every_n``
* ``drift``    the latest validated batch showed drift (Holm-corrected p < alpha)
* ``accuracy`` the champion's accuracy on the newest users' held-out samples fell below
  its accuracy at deployment by more than ``max_drop``
"""

from __future__ import annotations

import dataclasses

RULES = ("every", "drift", "accuracy")


@dataclasses.dataclass(frozen=True)
class TriggerConfig:
    rules: tuple[str, ...] = ("every", "drift", "accuracy")
    every_n: int = 3
    max_drop: float = 0.05

    def __post_init__(self):
        unknown = set(self.rules) - set(RULES)
        if unknown or not self.rules:
            raise ValueError(f"trigger rules must be among {RULES}, got {self.rules}")
        if self.every_n < 1:
            raise ValueError(f"every_n must be ≥ 1, got {self.every_n}")


def check(
    config: TriggerConfig,
    *,
    users_since_retrain: int,
    drift: bool,
    accuracy: float | None,
    deployed_accuracy: float | None,
) -> str | None:
    """The reason to retrain now, or None."""
    if users_since_retrain == 0:
        return None  # nothing new to train on
    if "drift" in config.rules and drift:
        return "drift"
    if (
        "accuracy" in config.rules
        and accuracy is not None
        and deployed_accuracy is not None
        and deployed_accuracy - accuracy > config.max_drop
    ):
        return f"accuracy_drop ({deployed_accuracy:.3f} → {accuracy:.3f})"
    if "every" in config.rules and users_since_retrain >= config.every_n:
        return f"every_{config.every_n}_users"
    return None
