"""LAMB: Adam's direction rescaled per layer by a trust ratio ‖θ‖ / ‖u‖."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.adam import scale_by_adam


def scale_by_trust_ratio() -> optax.GradientTransformation:
    """Rescale each leaf (layer) by its trust ratio (You et al. 2020).

    With parameter leaf ``θ`` and update leaf ``u``::

        u ← u · ‖θ‖ / ‖u‖          (u unchanged where ‖θ‖ = 0 or ‖u‖ = 0)

    Needs ``params`` in ``update``. Stateless.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_trust_ratio needs params: call update(g, state, params).")

        def rescale(u, theta):
            theta_norm, u_norm = jnp.linalg.norm(theta), jnp.linalg.norm(u)
            ratio = theta_norm / u_norm
            zero = jnp.logical_or(theta_norm == 0.0, u_norm == 0.0)
            return u * jnp.where(zero, jnp.array(1.0, dtype=theta.dtype), ratio)

        return jax.tree.map(rescale, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def lamb(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """LAMB: layer-wise adaptive moments for large batches.

    With learning rate ``η``, weight decay ``λ``, gradient ``g``, step ``t`` and, per
    leaf (layer) ``θ``::

        m, v, m̂, v̂ as in Adam
        r = m̂ / (√(v̂ + ε_root) + ε) + λ θ
        θ ← θ − η (‖θ‖ / ‖r‖) r              (ratio 1 where ‖θ‖ = 0 or ‖r‖ = 0)

    Defaults equal ``optax.lamb`` (ε = 1e-6, λ = 0). State per parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root: as in ``adam``.
      weight_decay: λ ≥ 0 (or a schedule).
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      You et al., "Large Batch Optimization for Deep Learning", ICLR 2020.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root),
        optax.add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        optax.scale_by_learning_rate(learning_rate),
    )
