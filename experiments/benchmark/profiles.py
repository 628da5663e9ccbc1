"""Dolan–Moré performance profiles (Dolan & Moré, Math. Program. 91, 2002).

For problems p and solvers s with a cost ``t[p, s]`` (here: steps, or seconds, to the
problem's target; ``inf`` where s never reached it)::

    r[p, s] = t[p, s] / min_s' t[p, s']          (the performance ratio; inf if t is)
    ρ_s(τ)  = |{p : r[p, s] ≤ τ}| / n_problems   (the profile, τ ≥ 1)

ρ_s(1) is the fraction of problems on which s was the fastest, ρ_s(τ) for large τ the
fraction it solved at all. A problem no solver solved counts for every solver as unsolved.
"""

from __future__ import annotations

import numpy as np


def performance_ratios(costs: np.ndarray) -> np.ndarray:
    """``r[p, s] = t[p, s] / min_s t[p, s]`` for costs ``(problems, solvers)``; ``inf``
    where ``t`` is ``inf`` or NaN (not solved), and on rows nobody solved."""
    costs = np.asarray(costs, np.float64)
    if costs.ndim != 2 or costs.size == 0:
        raise ValueError(f"costs must be a non-empty (problems, solvers) array, got {costs.shape}")
    costs = np.where(np.isnan(costs), np.inf, costs)
    if np.any(costs <= 0):
        raise ValueError("costs must be positive (steps or seconds to the target)")
    best = costs.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        ratios = costs / best
    return np.where(np.isfinite(costs) & np.isfinite(best), ratios, np.inf)


def performance_profile(costs: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``ρ[s, k] = ρ_s(taus[k])``: the fraction of problems solved within ``taus[k]`` times
    the best solver's cost."""
    ratios = performance_ratios(costs)
    taus = np.asarray(taus, np.float64)
    return (ratios[:, :, None] <= taus[None, None, :]).mean(axis=0)


def tau_grid(costs: np.ndarray, points: int = 200) -> np.ndarray:
    """τ from 1 to a little past the largest finite ratio, log-spaced, with every finite
    ratio itself included (where the step curves jump)."""
    ratios = performance_ratios(costs)
    finite = ratios[np.isfinite(ratios)]
    top = max(2.0, 1.1 * finite.max()) if finite.size else 2.0
    return np.unique(np.concatenate([np.geomspace(1.0, top, points), finite]))
