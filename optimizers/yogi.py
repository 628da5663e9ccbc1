"""Yogi: Adam whose second moment moves additively, by at most (1 − β₂) g² a step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias
from optlab.optimizers.adam import ScaleByAdamState


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> optax.GradientTransformation:
    """Yogi's rescaling (Zaheer et al. 2018), with Optax's bias correction.

    With gradient ``g``, step ``t`` and ``m₀ = v₀ = initial_accumulator_value``::

        m ← β₁ m + (1 − β₁) g
        v ← v − (1 − β₂) sign(v − |g|²) |g|²
        m̂ = m / (1 − β₁ᵗ) ;   v̂ = v / (1 − β₂ᵗ)
        u = m̂ / (√(v̂ + ε_root) + ε)

    Args:
      b1, b2, eps: as in ``yogi``.
      eps_root: ε_root ≥ 0, inside the root.
      initial_accumulator_value: m₀ = v₀ ≥ 0.

    Returns:
      A transformation with state ``ScaleByAdamState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)
    _checks.non_negative("initial_accumulator_value", initial_accumulator_value)

    def init_fn(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.full_like(params, initial_accumulator_value),
            nu=optax.tree.full_like(params, initial_accumulator_value),
        )

    def update_fn(updates, state, params=None):
        del params
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        v = jax.tree.map(
            lambda g, v: v - (1 - b2) * jnp.sign(v - abs_sq(g)) * abs_sq(g), updates, state.nu
        )
        t = optax.safe_increment(state.count)
        u = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), debias(m, b1, t), debias(v, b2, t)
        )
        return u, ScaleByAdamState(count=t, mu=m, nu=v)

    return optax.GradientTransformation(init_fn, update_fn)


def yogi(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
) -> optax.GradientTransformation:
    """Yogi: Adam with an additive second-moment update that cannot collapse suddenly.

    With learning rate ``η``, gradient ``g``, step ``t`` and ``m₀ = v₀ = 10⁻⁶``::

        m ← β₁ m + (1 − β₁) g
        v ← v − (1 − β₂) sign(v − |g|²) |g|²
        θ ← θ − η m̂ / (√v̂ + ε),   m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

    Adam's ``v − (1 − β₂)(v − g²)`` moves ``v`` by a fraction of ``v`` itself, so a
    large ``v`` can fall fast; Yogi's step is at most ``(1 − β₂) g²``. Defaults equal
    ``optax.yogi`` (ε = 1e-3, the paper's value). The paper's Algorithm 2 has no bias
    correction; Optax's (and ours) divides by ``1 − βᵗ`` as Adam does (docs/optimizers.md).
    State per parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, outside the root.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex Optimization",
      NeurIPS 2018.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(scale_by_yogi(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))
