"""Adagrad: per-coordinate step sizes from the sum of squared gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq


class ScaleByRssState(NamedTuple):
    """Running sum of squared gradients ``s`` (one buffer per parameter)."""

    sum_of_squares: optax.Updates


def scale_by_rss(
    initial_accumulator_value: float = 0.1, eps: float = 1e-7, eps_in_sqrt: bool = True
) -> optax.GradientTransformation:
    """Divide by the root of the sum of squared gradients.

    With gradient ``g``, ``s₀ = initial_accumulator_value``::

        s ← s + |g|²
        u = g / √(s + ε)       (eps_in_sqrt=True, Optax's form)
        u = g / (√s + ε)       (eps_in_sqrt=False, Duchi et al.'s δ outside the root)

    and ``u = 0`` where ``s = 0``.

    Args:
      initial_accumulator_value: s₀ ≥ 0.
      eps: ε ≥ 0.
      eps_in_sqrt: where ε goes, see above.

    Returns:
      A transformation with state ``ScaleByRssState``.
    """
    _checks.non_negative("initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative("eps", eps)

    def inverse_root(s):
        if eps_in_sqrt:
            return jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0)
        return jnp.where(s > 0, 1 / (jnp.sqrt(s) + eps), 0.0)

    def init_fn(params):
        return ScaleByRssState(
            sum_of_squares=optax.tree.full_like(params, initial_accumulator_value)
        )

    def update_fn(updates, state, params=None):
        del params
        s = jax.tree.map(lambda g, s: abs_sq(g) + s, updates, state.sum_of_squares)
        u = jax.tree.map(lambda s, g: inverse_root(s) * g, s, updates)
        return u, ScaleByRssState(sum_of_squares=optax.tree.cast_like(s, state.sum_of_squares))

    return optax.GradientTransformation(init_fn, update_fn)


def adagrad(
    learning_rate: optax.ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    eps_in_sqrt: bool = True,
) -> optax.GradientTransformation:
    """Adagrad: each coordinate's step shrinks with its accumulated squared gradients.

    With learning rate ``η``, gradient ``g``, ``s₀ = initial_accumulator_value``::

        s ← s + |g|²
        θ ← θ − η g / √(s + ε)        (eps_in_sqrt=True: Optax)
        θ ← θ − η g / (√s + ε)        (eps_in_sqrt=False: the paper's δ = ε)

    Defaults equal ``optax.adagrad`` (s₀ = 0.1, ε = 1e-7 inside the root). The paper's
    form (Duchi et al. 2011: accumulator from 0, δ outside the root) is
    ``adagrad(η, initial_accumulator_value=0.0, eps=δ, eps_in_sqrt=False)``, also
    available as ``adagrad_paper``. State per parameter: one buffer ``s``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      initial_accumulator_value: s₀ ≥ 0.
      eps: ε ≥ 0.
      eps_in_sqrt: put ε inside the square root (Optax) or outside (paper).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods", JMLR 2011.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt),
        optax.scale_by_learning_rate(learning_rate),
    )


def adagrad_paper(learning_rate: optax.ScalarOrSchedule, eps: float = 1e-8):
    """Adagrad as in Duchi et al. 2011: ``θ ← θ − η g / (δ + √Σg²)``, sum from 0, δ = eps."""
    return adagrad(learning_rate, initial_accumulator_value=0.0, eps=eps, eps_in_sqrt=False)
