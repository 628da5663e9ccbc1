"""Adam with its bias correction switchable, for the paper's Fig. 4.

``optimizers.adam`` always corrects; the paper's Fig. 4 compares it with the uncorrected
update (what RMSProp with momentum does). ``adam_with_correction(α, β1, β2, c)`` covers both
with one code path, and ``c`` may be a traced 0/1 scalar, so one ``engine.fit_population``
(one ``vmap``) trains the whole grid β1 × β2 × α × {with, without} of the VAE
(``experiments.papers.adam.train_fig4``, loss ``engine.NegativeELBO``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByAdamCorrectionState(NamedTuple):
    """Step count ``t`` and the moments ``m``, ``v``."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adam_with_correction(
    b1=0.9, b2=0.999, eps: float = 1e-8, correction=1.0
) -> optax.GradientTransformation:
    """Adam's rescaling with the bias correction weighted by ``c`` (Kingma & Ba, Sec. 3).

    With gradient ``g`` and step ``t``::

        m ← β1 m + (1 − β1) g ;   v ← β2 v + (1 − β2) g²
        m̂ = m / (1 − c β1ᵗ) ;    v̂ = v / (1 − c β2ᵗ)
        u = m̂ / (√v̂ + ε)

    ``c = 1`` is Algorithm 1 (``optimizers.adam``); ``c = 0`` is Adam without correction,
    i.e. RMSProp (decay β2, ε outside the root) on an EWMA momentum ``m``. ``b1``, ``b2``
    and ``c`` may be traced scalars (population training vmaps over them).
    """

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return ScaleByAdamCorrectionState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        v = jax.tree.map(lambda g, v: (1 - b2) * g * g + b2 * v, updates, state.nu)
        tf = t.astype(jnp.float32)
        m_scale = 1 / (1 - correction * b1**tf)
        v_scale = 1 / (1 - correction * b2**tf)
        u = jax.tree.map(
            lambda m, v: (m_scale * m / (jnp.sqrt(v_scale * v) + eps)).astype(m.dtype), m, v
        )
        return u, ScaleByAdamCorrectionState(t, m, v)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_with_correction(
    learning_rate, b1=0.9, b2=0.999, eps: float = 1e-8, correction=1.0
) -> optax.GradientTransformation:
    """``θ ← θ − α m̂ / (√v̂ + ε)`` with correction weight ``c`` (see the scale block)."""
    if isinstance(correction, int | float) and correction not in (0, 1):
        raise ValueError(f"correction must be 0 or 1 (or a traced 0/1 scalar), got {correction!r}")
    return optax.chain(
        scale_by_adam_with_correction(b1, b2, eps, correction),
        optax.scale_by_learning_rate(learning_rate),
    )
