"""ACProp: AdaBelief's centred second moment, applied one step late (Zhuang et al. 2021)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias
from optlab.optimizers.adam import _init_moments, _new_state


def scale_by_acprop(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-16, eps_root: float = 1e-16
) -> optax.GradientTransformation:
    """ACProp's rescaling, asynchronous: the denominator uses ``s`` from the step before.

    With gradient ``g``, step ``t`` and ``m``, ``s`` as they were before this step::

        ŝ = s / (1 − β₂ᵗ⁻¹)   (ŝ = 1 at t = 1, when s is still 0)
        u = g / (√ŝ + ε)
        s ← β₂ s + (1 − β₂) |g − m|² + ε_root      (m of the previous step)
        m ← β₁ m + (1 − β₁) g

    ``m`` enters only through the prediction error ``g − m``; the step itself moves along
    ``g`` (Optax 0.2.8's form, after the authors' repository).

    Args:
      b1, b2, eps, eps_root: as in ``acprop``.

    Returns:
      A transformation with state ``ScaleByAdamState`` (``nu`` holds ``s``).
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)

    def update_fn(updates, state, params=None):
        del params
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        s = jax.tree.map(
            lambda g, m, s: (1 - b2) * abs_sq(g - m) + b2 * s + eps_root,
            updates,
            state.mu,
            state.nu,
        )
        t = optax.safe_increment(state.count)
        first = state.count == 0
        s_hat = debias(state.nu, b2, jnp.where(first, t, state.count))
        s_hat = jax.tree.map(lambda s: jnp.where(first, 1, s), s_hat)
        u = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, s_hat)
        return u, _new_state(m, s, t, state)

    return optax.GradientTransformation(_init_moments, update_fn)


def acprop(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """ACProp: a gradient step divided by the belief ``s`` of the steps before this one.

    With learning rate ``η``, weight decay ``λ``, gradient ``g``, step ``t`` and ``m``,
    ``s`` from the previous step::

        θ ← θ − η (g / (√(s / (1 − β₂ᵗ⁻¹)) + ε) + λ θ)     (the fraction is g / (1 + ε) at t = 1)
        s ← β₂ s + (1 − β₂) |g − m|² + ε_root
        m ← β₁ m + (1 − β₁) g

    Defaults equal ``optax.contrib.acprop``. The denominator does not contain the current
    gradient ("asynchronous" in the paper), unlike AdaBelief's. State per parameter: ``m``
    and ``s``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1), the decay of the prediction ``m``.
      b2: β₂ in [0, 1), the decay of ``s``.
      eps: ε ≥ 0 outside the root.
      eps_root: ε_root ≥ 0 added to ``s`` each step.
      weight_decay: λ ≥ 0 (or a schedule), multiplied by η (PyTorch's convention).
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Zhuang et al., "Momentum Centering and Asynchronous Update for Adaptive Gradient
      Methods", NeurIPS 2021.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_acprop(b1, b2, eps, eps_root),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
