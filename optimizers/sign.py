"""Sign methods: signSGD and Signum (Bernstein et al. 2018), every coordinate moves by ±η."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.sgd import scale_by_ewma


def scale_by_sign() -> optax.GradientTransformation:
    """The elementwise sign of the update.

    With update ``u``::

        u ← sign(u)          (sign(0) = 0)

    Stateless. Real parameters only (Optax's alias test skips complex ones).
    """

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(jnp.sign, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def sign_sgd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """signSGD: a step of ±η along each coordinate, the sign of the gradient.

    With learning rate ``η`` and gradient ``g``::

        θ ← θ − η sign(g)

    Equals ``optax.sign_sgd``. Stateless. With a constant η it ends in oscillation of
    amplitude η around a minimum; decay η to converge.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation
      for Non-Convex Problems", ICML 2018 (Algorithm 1).
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(scale_by_sign(), optax.scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Signum: the sign of an EWMA momentum.

    With learning rate ``η``, gradient ``g`` and ``β``::

        v ← β v + (1 − β) g
        θ ← θ − η sign(v)

    Equals ``optax.signum`` (``ema(β, debias=False)`` then the sign; a bias correction
    would not change the sign). State per parameter: ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      beta: β in [0, 1).
      accumulator_dtype: dtype of ``v``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Bernstein et al., ICML 2018 (Algorithm 3, "Signum").
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_ewma(beta, accumulator_dtype),
        scale_by_sign(),
        optax.scale_by_learning_rate(learning_rate),
    )
