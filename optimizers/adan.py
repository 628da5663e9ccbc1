"""Adan: adaptive Nesterov momentum from gradient differences (Xie et al. 2022)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias


class ScaleByAdanState(NamedTuple):
    """``m``, ``v`` (EWMA of gradient differences), ``n``, the last gradient ``g`` and ``t``
    (Optax's field names)."""

    m: optax.Updates
    v: optax.Updates
    n: optax.Updates
    g: optax.Updates
    t: jax.Array


def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    """Adan's rescaling, in Optax's form (EWMAs with weight β on the past, bias-corrected).

    With gradient ``g``, the previous gradient ``g_prev`` and ``Δ = g − g_prev``
    (``Δ = 0`` at the first step)::

        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) Δ
        n ← β₃ n + (1 − β₃) (g + (1 − β₂) Δ)²
        m̂, v̂, n̂ = m / (1 − β₁ᵗ), v / (1 − β₂ᵗ), n / (1 − β₃ᵗ)
        u = (m̂ + (1 − β₂) v̂) / (√(n̂ + ε_root) + ε)

    Args:
      b1, b2, b3, eps, eps_root: as in ``adan``.

    Returns:
      A transformation with state ``ScaleByAdanState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.decay_rate("b3", b3)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return ScaleByAdanState(m=zeros, v=zeros, n=zeros, g=zeros, t=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        first = state.t == 0
        diff = jax.tree.map(
            lambda g, g_prev: jnp.where(first, jnp.zeros_like(g), g - g_prev), updates, state.g
        )
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.m)
        v = jax.tree.map(lambda d, v: (1 - b2) * d + b2 * v, diff, state.v)
        n = jax.tree.map(
            lambda g, d, n: (1 - b3) * abs_sq(g + (1 - b2) * d) + b3 * n, updates, diff, state.n
        )
        t = optax.safe_increment(state.t)
        u = jax.tree.map(
            lambda m, v, n: (m + (1 - b2) * v) / (jnp.sqrt(n + eps_root) + eps),
            debias(m, b1, t),
            debias(v, b2, t),
            debias(n, b3, t),
        )
        return u, ScaleByAdanState(m=m, v=v, n=n, g=updates, t=t)

    return optax.GradientTransformation(init_fn, update_fn)


def adan(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """Adan: Adam-like steps along momentum plus a momentum of gradient differences.

    With learning rate ``η``, weight decay ``λ``, gradient ``g`` and the moments of
    ``scale_by_adan``::

        θ ← θ − η ((m̂ + (1 − β₂) v̂) / (√(n̂ + ε_root) + ε) + λ θ)

    Defaults equal ``optax.adan``. Optax's β's weigh the past (β₁ = 0.98 is the paper's
    β₁ = 0.02); it bias-corrects the three moments, starts them at 0 and decays weights
    decoupled (AdamW-style), where the paper's Algorithm 1 has no bias correction,
    starts from ``m₀ = g₀``, ``n₀ = g₀²`` and divides by ``1 + λη`` (proximal decay)
    (docs/optimizers.md). State per parameter: ``m``, ``v``, ``n`` and the last ``g``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1), decay of the gradient EWMA ``m``.
      b2: β₂ in [0, 1), decay of the difference EWMA ``v``.
      b3: β₃ in [0, 1), decay of the second moment ``n``.
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root.
      weight_decay: λ ≥ 0 (or a schedule).
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models", arXiv:2208.06677, 2022 (TPAMI 2024).
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
