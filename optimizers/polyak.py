"""Polyak step sizes: SGD whose step is the optimality gap over the squared gradient norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.sgd import sgd

POLYAK_VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> optax.GradientTransformationExtraArgs:
    """Scale the update by the Polyak step ``γ`` (needs the loss: ``update(..., value=f)``).

    With update ``g`` (over the whole pytree) and the current loss ``f``::

        gap = f − f*          (sps+: max(f − f*, 0))
        γ = min(gap / (‖g‖² + ε), γ_max)      (0 where ‖g‖² + ε ≤ float64's machine ε)
        u = γ g

    Stateless. Optax's contract: ``value`` is a keyword argument of ``update``.

    Args:
      f_min, max_learning_rate, eps, variant: as in ``polyak_sgd``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    _checks.finite("f_min", f_min)
    _checks.non_negative("max_learning_rate", max_learning_rate)
    _checks.non_negative("eps", eps)
    if variant not in POLYAK_VARIANTS:
        raise ValueError(f"variant={variant!r} is invalid: variant must be 'sps' or 'sps+'.")

    def update_fn(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        grad_sq_norm = optax.tree.norm(updates, squared=True)
        gap = jnp.array(value - f_min).astype(grad_sq_norm.dtype)
        if variant == "sps+":
            gap = jax.nn.relu(gap)
        step = jnp.where(
            grad_sq_norm + eps <= jnp.finfo(float).eps,
            jnp.array(0.0),
            jnp.minimum(gap / (grad_sq_norm + eps), max_learning_rate),
        )
        return optax.tree.scale(step, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: optax.ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> optax.GradientTransformationExtraArgs:
    """SGD with the Polyak step size (SPS): needs the loss value at every update.

    With loss ``f``, its lower bound ``f*``, gradient ``g`` and scaling ``c``::

        γ = min((f − f*) / (‖g‖² + ε), γ_max)       (sps+: max(f − f*, 0) on top)
        θ ← θ − c γ g

    Defaults equal ``optax.polyak_sgd`` (``f* = 0``: interpolating models; ``γ_max = 1``).
    Call ``update(g, state, params, value=f)`` (``optax.GradientTransformationExtraArgs``).
    The training engine calls ``update(g, state, params)`` without the loss, so this is a
    factory, not a registry entry. Stateless.

    Args:
      max_learning_rate: γ_max ≥ 0.
      scaling: c ≥ 0, a float or a schedule (the learning rate of the inner ``sgd``).
      f_min: f*, a lower bound of the loss.
      eps: ε ≥ 0.
      variant: ``"sps"`` or ``"sps+"`` (clip a negative gap at 0).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    References:
      Polyak, "Introduction to Optimization", 1987; Loizou, Vaswani, Laradji &
      Lacoste-Julien, "Stochastic Polyak Step-size for SGD", AISTATS 2021 (SPS_max);
      Garrigos et al. 2023 (SPS+).
    """
    _checks.non_negative("scaling", scaling)
    return optax.chain(
        sgd(learning_rate=scaling),
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
    )
