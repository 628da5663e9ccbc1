"""AdaBelief: Adam whose denominator tracks the gradient's deviation from its EWMA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias
from optlab.optimizers.adam import _first_moment_hat, _init_moments, _new_state


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdaBelief's rescaling (Zhuang et al. 2020, Algorithm 2).

    With gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g
        s ← β₂ s + (1 − β₂) |g − m|² + ε_root
        m̂ = m / (1 − β₁ᵗ)  (or NAdam's look-ahead) ;   ŝ = s / (1 − β₂ᵗ)
        u = m̂ / (√ŝ + ε)

    Args:
      b1, b2, eps, eps_root, nesterov: as in ``adabelief``.

    Returns:
      A transformation with state ``ScaleByAdamState`` (``nu`` holds ``s``).
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        s = jax.tree.map(
            lambda g, m, s: (1 - b2) * abs_sq(g - m) + b2 * s + eps_root, updates, m, state.nu
        )
        m_hat = _first_moment_hat(updates, m, b1, t, nesterov)
        u = jax.tree.map(lambda m, s: m / (jnp.sqrt(s) + eps), m_hat, debias(s, b2, t))
        return optax.tree.cast_like(u, updates), _new_state(m, s, t, state)

    return optax.GradientTransformation(_init_moments, update_fn)


def adabelief(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdaBelief: large steps where the gradient agrees with its prediction ``m``.

    With learning rate ``η``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g
        s ← β₂ s + (1 − β₂) |g − m|² + ε_root
        θ ← θ − η [m / (1 − β₁ᵗ)] / (√(s / (1 − β₂ᵗ)) + ε)

    Defaults equal ``optax.adabelief`` (ε = ε_root = 1e-16). State per parameter:
    ``m`` and ``s``. ``ScaleByAdamState`` is reused for the state, ``nu`` holding ``s``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0 outside the root.
      eps_root: ε_root ≥ 0 added to ``s`` each step.
      nesterov: NAdam's look-ahead first moment.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Zhuang et al., "AdaBelief Optimizer", NeurIPS 2020.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate),
    )
