"""ADOPT: Adam with the current gradient left out of its own normaliser (Taniguchi et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq
from optlab.optimizers.adam import ScaleByAdamState, _dtype


def quarter_power(t: jax.Array) -> jax.Array:
    """ADOPT's clipping value ``c_t = t^{1/4}`` (``t`` the step count from 0)."""
    return t**0.25


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] | float = quarter_power,
) -> optax.GradientTransformation:
    """ADOPT's rescaling: normalise by the second moment of the *previous* gradients.

    With gradient ``g``, step count ``t`` (from 0) and ``c_t = clip_value_fn(t)``::

        t = 0:   v ← |g|² ;  m ← 0 ;  u = 0             (the first gradient only sets v)
        t ≥ 1:   n = clip(g / max(√v, ε), −c_t, c_t)    (v from the steps before: no g)
                 m ← β₁ m + (1 − β₁) n ;  v ← β₂ v + (1 − β₂) |g|²
                 u = m                       (nesterov: u = β₁ m + (1 − β₁) n)

    Without ``use_clipping``, ``n = g / max(√v, ε)`` (the paper's Algorithm 1).

    Args:
      b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn: as in ``adopt``.

    Returns:
      A transformation with state ``ScaleByAdamState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    mu_dtype = _dtype(mu_dtype)

    def init_fn(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
        )

    def normalised(g, v, clip):
        n = g / jnp.maximum(jnp.sqrt(v), eps)
        return jnp.clip(n, -clip, clip) if use_clipping else n

    def update_fn(updates, state, params=None):
        del params
        started = state.count > 0
        b1_ = jnp.where(started, b1, 1)  # m stays 0 at t = 0
        b2_ = jnp.where(started, b2, 0)  # v = |g|² at t = 0
        clip = clip_value_fn(state.count) if callable(clip_value_fn) else clip_value_fn
        v = jax.tree.map(lambda g, v: (1 - b2_) * abs_sq(g) + b2_ * v, updates, state.nu)
        n = jax.tree.map(lambda g, v: normalised(g, v, clip), updates, state.nu)
        m = jax.tree.map(lambda n, m: (1 - b1_) * n + b1_ * m, n, state.mu)
        u = jax.tree.map(lambda n, m: (1 - b1_) * n + b1_ * m, n, m) if nesterov else m
        new_state = ScaleByAdamState(
            count=optax.safe_increment(state.count), mu=optax.tree.cast(m, mu_dtype), nu=v
        )
        return optax.tree.cast_like(u, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def adopt(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] | float = quarter_power,
) -> optax.GradientTransformation:
    """ADOPT: Adam's momentum of gradients normalised by the previous steps' RMS.

    With learning rate ``η``, gradient ``g`` and step count ``t`` (from 0)::

        t = 0:   v ← |g|² ;  θ unchanged
        t ≥ 1:   m ← β₁ m + (1 − β₁) clip(g / max(√v, ε), ±t^{1/4})
                 θ ← θ − η m ;   v ← β₂ v + (1 − β₂) |g|²

    Leaving ``g`` out of the ``v`` it is divided by removes the correlation that makes Adam
    diverge for some β₂ (the paper's Theorem: convergence for any β₂). Defaults equal
    ``optax.contrib.adopt`` (Optax 0.2.8), which is the paper's clipped form; without
    ``use_clipping`` it is the paper's Algorithm 1 (both checked against a NumPy
    transcription). ``clip_value_fn`` may also be a number (a fixed clip value): under
    ``optax.inject_hyperparams``, which calls a callable hyperparameter with its own step
    count (equal to ``t``), that is what the schedule arrives as (Optax's ``adopt`` fails
    there). State per parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, the floor of ``√v``.
      mu_dtype: dtype of ``m``; None keeps the parameter dtype.
      nesterov: ``u = β₁ m + (1 − β₁) n`` (not in the paper).
      use_clipping: clip the normalised gradient to ``±c_t``.
      clip_value_fn: ``c_t`` as a function of ``t`` (default ``t^{1/4}``), or a number.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β₂ with the Optimal
      Rate", NeurIPS 2024.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
