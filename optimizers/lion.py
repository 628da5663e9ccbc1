"""Lion: the sign of an interpolated momentum (Chen et al. 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByLionState(NamedTuple):
    """Step count and the momentum ``m`` (one buffer per parameter)."""

    count: jax.Array
    mu: optax.Updates


def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, mu_dtype: Any | None = None
) -> optax.GradientTransformation:
    """Lion's rescaling.

    With gradient ``g``::

        u = sign(β₁ m + (1 − β₁) g)
        m ← β₂ m + (1 − β₂) g

    Args:
      b1, b2, mu_dtype: as in ``lion``.

    Returns:
      A transformation with state ``ScaleByLionState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fn(params):
        return ScaleByLionState(
            count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params, dtype=mu_dtype)
        )

    def update_fn(updates, state, params=None):
        del params
        u = jax.tree.map(lambda g, m: jnp.sign((1.0 - b1) * g + b1 * m), updates, state.mu)
        m = jax.tree.map(lambda g, m: (1 - b2) * g + b2 * m, updates, state.mu)
        new_state = ScaleByLionState(
            count=optax.safe_increment(state.count), mu=optax.tree.cast_like(m, state.mu)
        )
        return optax.tree.cast_like(u, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-3,
    mask: Any = None,
) -> optax.GradientTransformation:
    """Lion: every coordinate moves by ±η, the sign of an interpolated momentum.

    With learning rate ``η``, weight decay ``λ`` and gradient ``g``::

        u = sign(β₁ m + (1 − β₁) g)
        m ← β₂ m + (1 − β₂) g
        θ ← θ − η (u + λ θ)

    Defaults equal ``optax.lion`` (β₁ = 0.9, β₂ = 0.99, λ = 1e-3). Because ``|u| = 1``
    its learning rate is typically 3–10× smaller than Adam's. State per parameter: ``m``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1), the interpolation for the update.
      b2: β₂ in [0, 1), the momentum decay.
      mu_dtype: dtype of ``m``; None keeps the parameter dtype.
      weight_decay: λ ≥ 0 (or a schedule), decoupled as in AdamW.
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_lion(b1, b2, mu_dtype),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
