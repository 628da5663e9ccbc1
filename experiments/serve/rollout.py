"""Staged rollout: who sees the canary, and when it moves to the next share or back.

**Routing.** User ``u`` sees the canary of rollout ``r`` iff ``h(r, u) < share`` with
``h(r, u) = blake2b(f"{r}:{u}") / 2⁶⁴ ∈ [0, 1)``: one user always sees one version within a
stage, the users at a share stay on the canary when it widens (``h`` does not change), and
each rollout picks its own users (``r`` salts the hash).

**Stages** (:data:`STAGES`): a new version enters as canary at 5 %, then 25 %, 50 % and 100 %
(it becomes the stable version). Each step is gated by the exact McNemar test
(:func:`canary.decide`) on the labelled feedback that arrived during the stage, which both
versions scored: with ``b`` = stable right and canary wrong, ``c`` = stable wrong and canary
right, ``p = P(B ≥ b | B ~ Binomial(b + c, 1/2))``. Once a stage holds ``min_pairs`` labelled
samples, ``p < alpha`` rolls the canary back; otherwise it moves on.

The share decides how many users the canary *answers* (the exposure to a bad version);
the gate uses every labelled sample of the stage, scored by both versions (a paired design),
so a stage lasts ``min_pairs`` feedback samples whatever its share.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from optlab.experiments.continual import canary

STAGES = (0.05, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The serving state: ``stable`` answers everyone but the canary's share of users.

    ``id`` numbers rollouts (and salts the routing hash); ``stage`` indexes :data:`STAGES`;
    ``since`` is the last feedback id before the stage began (its samples have larger ids).
    """

    id: int
    stable: int
    canary: int | None = None
    stage: int = len(STAGES) - 1
    since: int = 0

    @property
    def share(self) -> float:
        return STAGES[self.stage] if self.canary is not None else 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Rollout:
        return cls(**d)


def position(rollout_id: int, user: str) -> float:
    """``h(r, u)`` of the module docstring, uniform on [0, 1)."""
    digest = hashlib.blake2b(f"{rollout_id}:{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def version_for(rollout: Rollout, user: str) -> int:
    """The version that answers ``user`` now."""
    if rollout.canary is not None and position(rollout.id, user) < rollout.share:
        return rollout.canary
    return rollout.stable


def start(previous: Rollout, canary_version: int, since: int) -> Rollout:
    """A new rollout of ``canary_version`` at the first stage."""
    return Rollout(previous.id + 1, previous.stable, canary_version, 0, since)


@dataclasses.dataclass(frozen=True)
class Gate:
    """A stage decision: ``action`` is ``advance``, ``promote`` (to 100 %) or ``rollback``."""

    action: str
    before: Rollout
    after: Rollout
    decision: canary.CanaryDecision

    def to_dict(self) -> dict:
        return {
            "action": self.action,
            "rollout": self.before.id,
            "stable": self.before.stable,
            "canary": self.before.canary,
            "from_share": self.before.share,
            "to_share": {"advance": self.after.share, "promote": 1.0}.get(self.action, 0.0),
            **self.decision.to_dict(),
        }


def gate(
    rollout: Rollout,
    stable_correct: np.ndarray,
    canary_correct: np.ndarray,
    last_id: int,
    *,
    alpha: float,
    min_pairs: int,
) -> Gate | None:
    """The decision at the end of the stage, or None while it holds < ``min_pairs`` samples.

    ``last_id`` is the newest feedback id counted: the next stage starts after it.
    """
    if rollout.canary is None or len(stable_correct) < min_pairs:
        return None
    decision = canary.decide(stable_correct, canary_correct, alpha=alpha)
    if not decision.promote:
        after = Rollout(rollout.id, rollout.stable, None, len(STAGES) - 1, last_id)
        return Gate("rollback", rollout, after, decision)
    if rollout.stage + 1 == len(STAGES) - 1:
        after = Rollout(rollout.id, rollout.canary, None, len(STAGES) - 1, last_id)
        return Gate("promote", rollout, after, decision)
    after = dataclasses.replace(rollout, stage=rollout.stage + 1, since=last_id)
    return Gate("advance", rollout, after, decision)
