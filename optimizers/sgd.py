"""Gradient descent: plain, heavy-ball momentum, Nesterov momentum and EWMA momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax
from optlab.optimizers import _checks


class ScaleByMomentumState(NamedTuple):
    """Heavy-ball trace ``v`` (one buffer per parameter)."""

    trace: optax.Updates


def scale_by_momentum(
    momentum: float, nesterov: bool = False, accumulator_dtype: Any | None = None
) -> optax.GradientTransformation:
    """Heavy-ball (Polyak) or Nesterov momentum, the form of ``optax.trace``.

    With gradient ``g`` and momentum ``β``::

        v ← g + β v
        u = g + β v   if nesterov   else   u = v

    Args:
      momentum: β, the decay of the trace, in [0, 1).
      nesterov: use Nesterov's look-ahead form.
      accumulator_dtype: dtype of ``v``; None keeps the parameter dtype.

    Returns:
      A transformation with state ``ScaleByMomentumState``.
    """
    _checks.decay_rate("momentum", momentum)

    def init_fn(params):
        return ScaleByMomentumState(trace=optax.tree.zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        v = jax.tree.map(lambda g, v: g + momentum * v, updates, state.trace)
        u = jax.tree.map(lambda g, v: g + momentum * v, updates, v) if nesterov else v
        return u, ScaleByMomentumState(trace=optax.tree.cast_like(v, state.trace))

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByEwmaState(NamedTuple):
    """Exponentially weighted moving average ``v`` of the gradients."""

    ewma: optax.Updates


def scale_by_ewma(
    beta: float, accumulator_dtype: Any | None = None
) -> optax.GradientTransformation:
    """EWMA momentum of the course notes, with no bias correction.

    With gradient ``g``::

        v ← β v + (1 − β) g ;   u = v

    (Optax writes this as ``optax.ema(β, debias=False)``.) Compared with heavy ball
    (``v ← g + β v``) the step is ``1 − β`` times smaller for the same learning rate:
    ``sgdm(η/(1−β), β)`` and ``sgd(η, momentum=β)`` follow the same trajectory.

    Args:
      beta: β in [0, 1).
      accumulator_dtype: dtype of ``v``; None keeps the parameter dtype.

    Returns:
      A transformation with state ``ScaleByEwmaState``.
    """
    _checks.decay_rate("beta", beta)

    def init_fn(params):
        return ScaleByEwmaState(ewma=optax.tree.zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        v = jax.tree.map(lambda g, v: (1 - beta) * g + beta * v, updates, state.ewma)
        return v, ScaleByEwmaState(ewma=optax.tree.cast_like(v, state.ewma))

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Stochastic gradient descent, optionally with heavy-ball or Nesterov momentum.

    With learning rate ``η``, gradient ``g`` and momentum ``β``::

        θ ← θ − η g                                  (momentum=None)
        v ← g + β v ;  θ ← θ − η v                   (momentum=β)
        v ← g + β v ;  θ ← θ − η (g + β v)           (momentum=β, nesterov=True)

    Batch, stochastic and mini-batch gradient descent are this same update: they differ
    only in the batch the caller computes ``g`` on (the whole training set, one example,
    or a mini-batch). The optimizer never sees the batch.

    Defaults equal ``optax.sgd`` (Optax 0.2.8). State per parameter: none without
    momentum, one trace ``v`` with it.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      momentum: β in [0, 1), or None for plain gradient descent.
      nesterov: Nesterov's look-ahead momentum (Sutskever et al. 2013 form).
      accumulator_dtype: dtype of ``v``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Robbins & Monro 1951; Polyak 1964; Sutskever et al., ICML 2013.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_momentum(momentum, nesterov, accumulator_dtype)
        if momentum is not None
        else optax.identity(),
        optax.scale_by_learning_rate(learning_rate),
    )


def heavy_ball(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9):
    """Heavy-ball momentum SGD, ``sgd(learning_rate, momentum=0.9)`` (registry "momentum")."""
    return sgd(learning_rate, momentum=momentum)


def nesterov(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9):
    """Nesterov momentum SGD, ``sgd(learning_rate, momentum=0.9, nesterov=True)``."""
    return sgd(learning_rate, momentum=momentum, nesterov=True)


def sgdm(learning_rate: optax.ScalarOrSchedule, beta: float = 0.9) -> optax.GradientTransformation:
    """SGD with EWMA momentum (the course notes' form).

    With learning rate ``η``, gradient ``g`` and ``β``::

        v ← β v + (1 − β) g ;   θ ← θ − η v

    Optax has no alias for it; it equals ``optax.chain(optax.ema(β, debias=False),
    optax.scale(-η))``. The ``(1 − β)`` factor makes ``v`` an average of gradients, so
    its size does not grow with β the way heavy ball's ``1/(1 − β)`` does.

    Defaults: β = 0.9. State per parameter: one buffer ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      beta: β in [0, 1).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Course-notes form of momentum; see e.g. Goodfellow, Bengio & Courville 2016, 8.3.2.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(scale_by_ewma(beta), optax.scale_by_learning_rate(learning_rate))
