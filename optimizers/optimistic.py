"""Optimistic gradient methods: a step along the gradient's extrapolation (Daskalakis et al.)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.adam import scale_by_adam


class ScaleByOptimisticGradientState(NamedTuple):
    """Step count and the previous update ``g_prev`` (one buffer per parameter)."""

    count: jax.Array
    previous_gradient: optax.Updates


def scale_by_optimistic_gradient(
    alpha: float = 1.0, beta: float = 1.0
) -> optax.GradientTransformation:
    """Optimistic extrapolation of the update.

    With update ``g``, the previous one ``g_prev`` (``g`` itself at the first step)::

        u = (α + β) g − β g_prev ;   g_prev ← g

    (Optax marks the first step with a boolean ``is_initial_step``; ours counts steps, so
    that every state leaf is a number of the registry's dtypes.)

    Args:
      alpha: α ≥ 0, the weight of the current update.
      beta: β ≥ 0, the optimism (weight of the change since the last step).

    Returns:
      A transformation with state ``ScaleByOptimisticGradientState``.
    """
    _checks.non_negative("alpha", alpha)
    _checks.non_negative("beta", beta)

    def init_fn(params):
        return ScaleByOptimisticGradientState(
            count=jnp.zeros([], jnp.int32), previous_gradient=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0

        def extrapolate(g, g_prev):
            g_prev = jnp.where(first, g, g_prev)
            return (alpha + beta) * g - beta * g_prev

        u = jax.tree.map(extrapolate, updates, state.previous_gradient)
        previous = optax.tree.cast_like(updates, state.previous_gradient)
        return u, ScaleByOptimisticGradientState(optax.safe_increment(state.count), previous)

    return optax.GradientTransformation(init_fn, update_fn)


def optimistic_gradient_descent(
    learning_rate: optax.ScalarOrSchedule, alpha: float = 1.0, beta: float = 1.0
) -> optax.GradientTransformation:
    """Optimistic gradient descent (OGD), for min-max games as well as minimisation.

    With learning rate ``η``, gradient ``g_t`` (``g₀`` standing in for ``g_{t−1}`` at the
    first step)::

        θ ← θ − η ((α + β) g_t − β g_{t−1})

    With α = β = 1 this is ``θ − 2η g_t + η g_{t−1}``: a gradient step plus a correction
    by the change in the gradient, which damps the cycling of plain gradient descent-ascent
    on bilinear games. Defaults equal ``optax.optimistic_gradient_descent``. State per
    parameter: ``g_{t−1}``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      alpha: α ≥ 0.
      beta: β ≥ 0, the optimism.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs with Optimism", ICLR 2018;
      Mokhtari, Ozdaglar & Pattathil, AISTATS 2020 (the (α, β) form).
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_optimistic_gradient(alpha, beta), optax.scale_by_learning_rate(learning_rate)
    )


def optimistic_adam(
    learning_rate: float,
    optimism: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformation:
    """Optimistic Adam: the optimistic extrapolation of Adam's (NAdam's) direction.

    With learning rate ``η``, optimism ``β_o`` (default ``η``) and Adam's direction
    ``d_t = m̂_t / (√(v̂_t + ε_root) + ε)`` (NAdam's ``m̂`` with ``nesterov=True``)::

        θ ← θ − (η + β_o) d_t + β_o d_{t−1}          (d₀ in place of d_{t−1} at t = 1)

    ``optax.optimistic_adam`` (0.2.8, deprecated there in favour of
    ``optimistic_adam_v2``): the learning rate is α of ``scale_by_optimistic_gradient``,
    so it cannot be a schedule (ValueError, as in Optax). State per parameter: ``m``,
    ``v`` and ``d_{t−1}``.

    Args:
      learning_rate: η ≥ 0, a number (not a schedule).
      optimism: β_o ≥ 0; None means ``learning_rate``.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in ``adam`` (nesterov on by default).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Daskalakis et al., "Training GANs with Optimism", ICLR 2018 (Optimistic Adam).
    """
    if callable(learning_rate):
        raise ValueError(
            "optimistic_adam's learning_rate cannot be a schedule (it is the optimistic "
            "α); use optimistic_adam_v2 for a schedule."
        )
    _checks.learning_rate(learning_rate)
    optimism = learning_rate if optimism is None else optimism
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        optax.scale_by_learning_rate(1.0),
    )


def optimistic_adam_v2(
    learning_rate: optax.ScalarOrSchedule,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nesterov: bool = True,
) -> optax.GradientTransformation:
    """Optimistic Adam with a separate learning rate (``optax.optimistic_adam_v2``).

    With learning rate ``η`` and Adam's (NAdam's) direction ``d_t`` as in
    ``optimistic_adam``::

        θ ← θ − η ((α + β) d_t − β d_{t−1})

    State per parameter: ``m``, ``v`` and ``d_{t−1}``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      alpha: α ≥ 0.
      beta: β ≥ 0, the optimism.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in ``adam`` (nesterov on by default).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        optax.scale_by_learning_rate(learning_rate),
    )
