"""RMSProp: divide the gradient by a moving root mean square of recent gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias
from optlab.optimizers.sgd import scale_by_momentum


class ScaleByRmsState(NamedTuple):
    """Step count, first moment ``μ`` (centered form only, else empty) and ``ν``."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    centered: bool = False,
) -> optax.GradientTransformation:
    """Divide by the root of an EWMA of squared gradients (minus the squared mean if centered).

    With gradient ``g``, decay ``ρ``, step ``t``, ``ν₀ = initial_scale``, ``μ₀ = 0``::

        ν ← ρ ν + (1 − ρ) |g|²            ν̂ = ν / (1 − ρᵗ) if bias_correction else ν
        μ ← ρ μ + (1 − ρ) g               μ̂ likewise              (centered only)
        σ² = ν̂ − |μ̂|² if centered else ν̂
        u = g / √(σ² + ε)    (eps_in_sqrt)     or     u = g / (√σ² + ε)

    and ``u = 0`` where that denominator is 0 (ε = 0 and every past g was 0).

    Args:
      decay: ρ in [0, 1).
      eps: ε ≥ 0.
      initial_scale: ν₀ ≥ 0.
      eps_in_sqrt: ε inside the root (Optax's default) or outside.
      bias_correction: divide the moments by ``1 − ρᵗ``.
      centered: subtract the squared mean (Graves 2013).

    Returns:
      A transformation with state ``ScaleByRmsState``.
    """
    _checks.decay_rate("decay", decay)
    _checks.non_negative("eps", eps)
    _checks.non_negative("initial_scale", initial_scale)

    def inverse_root(s):
        return jax.lax.rsqrt(s + eps) if eps_in_sqrt else 1 / (jnp.sqrt(s) + eps)

    def scale(s, g):
        if isinstance(eps, int | float) and eps > 0:
            return inverse_root(s) * g  # s + ε > 0 (the guard below would change rounding)
        # With ε = 0, σ² = 0 where every past g was 0 (so g = 0): step 0, not 0 · ∞ = NaN.
        denominator = s + eps if eps_in_sqrt else jnp.sqrt(s) + eps
        return jnp.where(denominator > 0, inverse_root(s) * g, 0.0)

    def init_fn(params):
        return ScaleByRmsState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params) if centered else None,
            nu=optax.tree.full_like(params, initial_scale),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        nu = jax.tree.map(lambda g, v: (1 - decay) * abs_sq(g) + decay * v, updates, state.nu)
        nu_hat = debias(nu, decay, count) if bias_correction else nu
        if centered:
            mu = jax.tree.map(lambda g, m: (1 - decay) * g + decay * m, updates, state.mu)
            mu_hat = debias(mu, decay, count) if bias_correction else mu
            var = jax.tree.map(lambda m, v: v - abs_sq(m), mu_hat, nu_hat)
            mu = optax.tree.cast_like(mu, state.mu)
        else:
            mu, var = None, nu_hat
        u = jax.tree.map(scale, var, updates)
        return u, ScaleByRmsState(count=count, mu=mu, nu=optax.tree.cast_like(nu, state.nu))

    return optax.GradientTransformation(init_fn, update_fn)


def rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
    """RMSProp (Hinton's lecture 6e), optionally centered and with momentum.

    With learning rate ``η``, gradient ``g``, decay ``ρ`` and momentum ``β``::

        ν ← ρ ν + (1 − ρ) |g|²
        u = η g / √(ν + ε)                         (σ² = ν − |μ|² when centered)
        v ← u + β v ;  θ ← θ − v                   (θ ← θ − u without momentum)

    Defaults equal ``optax.rmsprop`` (ρ = 0.9, ε = 1e-8 inside the root, ν₀ = 0). Hinton's
    slides have ``MeanSquare = 0.9 MeanSquare + 0.1 g²`` and ``g / √MeanSquare`` with no ε:
    ``rmsprop(η, decay=0.9, eps=0.0)``; without ε a coordinate whose gradients have all
    been 0 gets a zero step (Optax gives NaN, 0/0, there). State per parameter: ``ν``; plus ``μ`` if
    centered; plus the momentum trace ``v`` if momentum is set.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      decay: ρ in [0, 1).
      eps: ε ≥ 0.
      initial_scale: ν₀ ≥ 0.
      eps_in_sqrt: ε inside the root (True) or outside.
      centered: divide by the moving standard deviation instead of the RMS.
      momentum: β in [0, 1) applied after the learning rate (Optax's order), or None.
      nesterov: Nesterov form of the momentum.
      bias_correction: divide the moments by ``1 − ρᵗ``.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Tieleman & Hinton, Coursera lecture 6e, 2012; Graves, arXiv:1308.0850 (centered).
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered),
        optax.scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, nesterov) if momentum is not None else optax.identity(),
    )
