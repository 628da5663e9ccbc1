"""Rprop: per-coordinate step sizes driven by the sign of successive gradients only."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByRpropState(NamedTuple):
    """Per-coordinate step sizes ``Δ`` and the last computed step ``s = Δ sign(g)`` (or 0)."""

    step_sizes: optax.Updates
    prev_updates: optax.Updates


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> optax.GradientTransformation:
    """Rprop's step as Optax 0.2.8 computes it, before the sign flip to descent.

    With gradient ``g``, ``Δ₀ = learning_rate`` and ``s₀ = 0``, per coordinate::

        p = g · s
        Δ ← clip(η⁺ Δ, Δ_min, Δ_max)   if p > 0
        Δ ← clip(η⁻ Δ, Δ_min, Δ_max)   if p < 0
        Δ unchanged                     if p = 0
        u = 0 if p < 0 else s           (the step stored at the previous call)
        s ← 0 if p < 0 else Δ sign(g)

    Igel & Hüsken's iRprop⁻ returns the new ``s`` instead of the stored one; Optax's
    returns it one call late (0 at the first step).

    Args:
      learning_rate, eta_minus, eta_plus, min_step_size, max_step_size: as in ``rprop``.

    Returns:
      A transformation with state ``ScaleByRpropState``.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("eta_minus", eta_minus)
    _checks.non_negative("eta_plus", eta_plus)
    _checks.non_negative("min_step_size", min_step_size)
    _checks.non_negative("max_step_size", max_step_size)

    def init_fn(params):
        return ScaleByRpropState(
            step_sizes=optax.tree.full_like(params, learning_rate),
            prev_updates=optax.tree.zeros_like(params),
        )

    def new_step_size(p, step_size):
        factor = jnp.where(p > 0, eta_plus, eta_minus)
        grown = jnp.clip(step_size * factor, min=min_step_size, max=max_step_size)
        return jnp.where(p == 0, step_size, grown)

    def update_fn(updates, state, params=None):
        del params
        p = jax.tree.map(lambda g, s: g * s, updates, state.prev_updates)
        step_sizes = jax.tree.map(new_step_size, p, state.step_sizes)
        steps = jax.tree.map(
            lambda p, g, step: jnp.where(p < 0, jnp.zeros_like(g), step * jnp.sign(g)),
            p,
            updates,
            step_sizes,
        )
        # Optax 0.2.8 returns the step stored at the previous call (one step late).
        u = jax.tree.map(
            lambda p, s_prev: jnp.where(p < 0, jnp.zeros_like(s_prev), s_prev),
            p,
            state.prev_updates,
        )
        return u, ScaleByRpropState(step_sizes, steps)

    return optax.GradientTransformation(init_fn, update_fn)


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> optax.GradientTransformation:
    """Rprop: each coordinate's step grows while its gradient keeps its sign, shrinks
    when the sign flips; the gradient's size is never used.

    With ``Δ₀ = learning_rate``, ``s₀ = 0``, per coordinate and ``p = g · s``::

        Δ ← clip(η⁺ Δ, Δ_min, Δ_max) if p > 0 ;  clip(η⁻ Δ, Δ_min, Δ_max) if p < 0
        θ ← θ − (0 if p < 0 else s)
        s ← 0 if p < 0 else Δ sign(g)

    Defaults equal ``optax.rprop``, and so does the update: Optax 0.2.8 applies the step
    ``s`` computed at the previous call (nothing at the first step), where iRprop⁻
    (Igel & Hüsken 2000, Optax's cited variant: no weight backtracking, unlike Riedmiller
    & Braun's original) applies ``Δ sign(g)`` of the current gradient at once
    (docs/optimizers.md). ``learning_rate`` is only the initial step size ``Δ₀``, kept in
    the state: changing it through ``optax.inject_hyperparams`` after ``init`` has no
    effect. A full-batch method: with noisy mini-batch gradients the sign flips are
    noise. State per parameter: ``Δ`` and ``s``.

    Args:
      learning_rate: Δ₀ ≥ 0 (a number, not a schedule).
      eta_minus: η⁻ ≥ 0, the shrink factor (< 1).
      eta_plus: η⁺ ≥ 0, the growth factor (> 1).
      min_step_size: Δ_min ≥ 0.
      max_step_size: Δ_max ≥ 0.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
      The RPROP Algorithm", ICNN 1993; Igel & Hüsken, "Improving the Rprop Learning
      Algorithm", NC 2000.
    """
    return optax.chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        optax.scale(-1.0),
    )
