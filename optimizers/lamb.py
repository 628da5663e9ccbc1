"""Layer-wise methods: LAMB, LARS and Fromage, steps rescaled per layer by ‖θ‖ / ‖u‖."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.adam import scale_by_adam
from optlab.optimizers.sgd import scale_by_momentum


def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> optax.GradientTransformation:
    """Rescale each leaf (layer) by its trust ratio (You et al. 2017, 2020).

    With parameter leaf ``θ``, update leaf ``u`` and ``‖x‖₊ = max(‖x‖, min_norm)``::

        u ← u · c ‖θ‖₊ / (‖u‖₊ + ε)      (u unchanged where ‖θ‖₊ = 0 or ‖u‖₊ = 0)

    with ``c = trust_coefficient``. The norms are ``optax.safe_norm`` (finite gradients
    through the max). Needs ``params`` in ``update``. Stateless.

    Args:
      min_norm: lower bound of both norms, ≥ 0.
      trust_coefficient: c ≥ 0.
      eps: ε ≥ 0, added to the update's norm.
    """
    _checks.non_negative("min_norm", min_norm)
    _checks.non_negative("trust_coefficient", trust_coefficient)
    _checks.non_negative("eps", eps)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_trust_ratio needs params: call update(g, state, params).")

        def rescale(u, theta):
            theta_norm = optax.safe_norm(theta, min_norm)
            u_norm = optax.safe_norm(u, min_norm)
            ratio = trust_coefficient * theta_norm / (u_norm + eps)
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


def lars(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """LARS: SGD with momentum whose per-layer step is scaled by ‖θ‖ / ‖g + λθ‖.

    With learning rate ``η``, weight decay ``λ``, trust coefficient ``c``, momentum ``β``
    and, per leaf (layer) ``θ`` with gradient ``g``::

        r = g + λ θ
        r ← r · c ‖θ‖ / (‖r‖ + ε)       (ratio 1 where ‖θ‖ = 0 or ‖r‖ = 0)
        v ← η r + β v                    (nesterov: the step is η r + β v)
        θ ← θ − v

    Defaults equal ``optax.lars`` (c = 1e-3, β = 0.9, λ = 0); masks select the leaves that
    are decayed and rescaled (True: all; the paper excludes biases and norms' scales).
    Because ``c`` is small, its learning rates are ~1000× SGD's. State per parameter:
    ``v``. Needs ``params``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      weight_decay: λ ≥ 0 (or a schedule).
      weight_decay_mask: leaves to decay (pytree of bools, callable or True).
      trust_coefficient: c ≥ 0.
      eps: ε ≥ 0.
      trust_ratio_mask: leaves to rescale (pytree of bools, callable or True).
      momentum: β in [0, 1).
      nesterov: Nesterov's look-ahead momentum.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
      arXiv:1708.03888, 2017.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.masked(scale_by_trust_ratio(0.0, trust_coefficient, eps), trust_ratio_mask),
        optax.scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, nesterov),
    )


def fromage(
    learning_rate: optax.ScalarOrSchedule, min_norm: float = 1e-6
) -> optax.GradientTransformation:
    """Fromage: a step of relative size η per layer, then a shrink that keeps ‖θ‖ steady.

    With learning rate ``η`` and, per leaf (layer) ``θ`` with gradient ``g`` and
    ``‖x‖₊ = max(‖x‖, min_norm)``::

        θ ← (θ − η g ‖θ‖₊ / ‖g‖₊) / √(1 + η²)

    (the ratio 1 where a norm is 0). Written as Optax does: the trust ratio, the learning
    rate ``η / √(1 + η²)`` and a weight "decay" of ``1/√(1 + η²) − 1``. Defaults equal
    ``optax.fromage``. Stateless. Needs ``params``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      min_norm: lower bound of both norms, ≥ 0.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Bernstein, Vahdat, Yue & Liu, "On the Distance between Two Neural Networks and the
      Stability of Learning", NeurIPS 2020.
    """
    _checks.learning_rate(learning_rate)
    if callable(learning_rate):
        shrink = lambda count: 1 / (1 + learning_rate(count) ** 2) ** 0.5  # noqa: E731
        return optax.chain(
            scale_by_trust_ratio(min_norm),
            optax.scale_by_learning_rate(lambda count: shrink(count) * learning_rate(count)),
            optax.add_decayed_weights(lambda count: shrink(count) - 1),
        )
    shrink = 1 / (1 + learning_rate**2) ** 0.5
    return optax.chain(
        scale_by_trust_ratio(min_norm),
        optax.scale_by_learning_rate(learning_rate * shrink),
        optax.add_decayed_weights(shrink - 1),
    )
