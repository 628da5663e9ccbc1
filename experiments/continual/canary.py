"""Canary (A/B) rollout: the challenger answers a share of traffic beside the champion.

On the requests routed to the canary both models predict; with ``b`` = champion right and
challenger wrong, ``c`` = champion wrong and challenger right, the exact McNemar test
conditions on the ``n = b + c`` discordant pairs, where under H0 (equal accuracy)
``b ~ Binomial(n, 1/2)``. The one-sided p-value for "challenger worse",
``P(B ≥ b | n, 1/2)`` (``scipy.stats.binomtest(b, n, 0.5, alternative="greater")``), below
``alpha`` rejects the challenger; otherwise it is promoted (not shown worse). ``min_gain``
(off by default) optionally also asks the challenger's accuracy to beat the champion's by that much.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class CanaryDecision:
    promote: bool
    reason: str
    requests: int
    b: int  # champion right, challenger wrong
    c: int  # champion wrong, challenger right
    p_value: float
    champion_accuracy: float
    challenger_accuracy: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def route(num_requests: int, share: float, seed: int) -> np.ndarray:
    """Boolean mask of the requests the canary sees (a ``share`` of them, at least one)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"canary share must be in (0, 1], got {share}")
    k = max(1, round(share * num_requests))
    mask = np.zeros(num_requests, bool)
    mask[np.random.default_rng(seed).choice(num_requests, k, replace=False)] = True
    return mask


def mcnemar_worse_p(champion_correct: np.ndarray, challenger_correct: np.ndarray):
    """Exact one-sided McNemar p-value that the challenger is worse; returns (b, c, p)."""
    a, z = np.asarray(champion_correct, bool), np.asarray(challenger_correct, bool)
    b, c = int((a & ~z).sum()), int((~a & z).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    return b, c, p


def decide(
    champion_correct: np.ndarray,
    challenger_correct: np.ndarray,
    *,
    alpha: float = 0.05,
    min_gain: float | None = None,
) -> CanaryDecision:
    """Promote or roll back from per-request correctness of both models on the same requests."""
    b, c, p = mcnemar_worse_p(champion_correct, challenger_correct)
    acc_a = float(np.mean(champion_correct)) if len(champion_correct) else 0.0
    acc_z = float(np.mean(challenger_correct)) if len(challenger_correct) else 0.0
    n = len(champion_correct)
    if p < alpha:
        reason = f"worse: exact McNemar b={b}, c={c}, p={p:.3g} < alpha={alpha}"
        promote = False
    elif min_gain is not None and acc_z - acc_a < min_gain:
        reason = f"gain {acc_z - acc_a:+.3f} below min_gain={min_gain} (p={p:.3g})"
        promote = False
    else:
        reason = f"not worse: exact McNemar b={b}, c={c}, p={p:.3g} ≥ alpha={alpha}"
        promote = True
    return CanaryDecision(promote, reason, n, b, c, p, acc_a, acc_z)
