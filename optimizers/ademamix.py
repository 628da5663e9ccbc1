"""AdEMAMix: Adam with a second, slow momentum (Pagliardini et al. 2024), and its simplified
single-momentum form (Morwani et al. 2025)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias
from optlab.optimizers.adam import _dtype


class ScaleByAdemamixState(NamedTuple):
    """Step counts (``count`` for ``m₁`` and ``v``, ``count_m2`` for the schedules of ``m₂``
    and α), the fast and slow momenta ``m₁``, ``m₂`` and the second moment ``v``."""

    count: jax.Array
    count_m2: jax.Array
    m1: optax.Updates
    m2: optax.Updates
    nu: optax.Updates


class ScaleBySimplifiedAdemamixState(NamedTuple):
    """Step count ``t``, the accumulated momentum ``m`` and the second moment ``n``."""

    t: jax.Array
    m: optax.Updates
    n: optax.Updates


def _value(schedule, count):
    return schedule(count) if callable(schedule) else schedule


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: optax.ScalarOrSchedule = 0.9999,
    alpha: optax.ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """AdEMAMix's rescaling.

    With gradient ``g``, step ``t`` and ``β₃, α`` (schedules called with ``t − 1``)::

        m₁ ← β₁ m₁ + (1 − β₁) g ;  m₂ ← β₃ m₂ + (1 − β₃) g ;  v ← β₂ v + (1 − β₂) |g|²
        u = (m₁ / (1 − β₁ᵗ) + α m₂) / (√(v / (1 − β₂ᵗ) + ε_root) + ε)

    ``m₂`` is not bias-corrected: the slow momentum fills slowly. The default α = 6 is
    ``optax.contrib.scale_by_ademamix``'s (``ademamix``'s is 5).

    Args:
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: as in ``ademamix``.

    Returns:
      A transformation with state ``ScaleByAdemamixState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.decay_rate("b3", b3)
    _checks.finite("alpha", alpha)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)
    mu_dtype = _dtype(mu_dtype)

    def init_fn(params):
        zeros = optax.tree.zeros_like(params, dtype=mu_dtype)  # v too, as in Optax
        return ScaleByAdemamixState(
            count=jnp.zeros([], jnp.int32),
            count_m2=jnp.zeros([], jnp.int32),
            m1=zeros,
            m2=zeros,
            nu=zeros,
        )

    def update_fn(updates, state, params=None):
        del params
        b3_t, alpha_t = _value(b3, state.count_m2), _value(alpha, state.count_m2)
        m1 = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.m1)
        m2 = jax.tree.map(lambda g, m: (1 - b3_t) * g + b3_t * m, updates, state.m2)
        v = jax.tree.map(lambda g, v: (1 - b2) * abs_sq(g) + b2 * v, updates, state.nu)
        t = optax.safe_increment(state.count)
        u = jax.tree.map(
            lambda m1, m2, v: (m1 + alpha_t * m2) / (jnp.sqrt(v + eps_root) + eps),
            debias(m1, b1, t),
            m2,
            debias(v, b2, t),
        )
        new_state = ScaleByAdemamixState(
            count=t,
            count_m2=optax.safe_increment(state.count_m2),
            m1=optax.tree.cast_like(m1, state.m1),
            m2=optax.tree.cast_like(m2, state.m2),
            nu=optax.tree.cast_like(v, state.nu),
        )
        return optax.tree.cast_like(u, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _step(count):
    """The paper's step ``t = count + 1``, in float64 where JAX has x64 (else float32)."""
    return jnp.asarray(count, jax.dtypes.canonicalize_dtype(jnp.float64)) + 1


def ademamix_alpha_schedule(alpha: float, warmup_steps: int):
    """The paper's α scheduler ``f_α(t) = min(t α / T, α)``, as a schedule of Optax's
    count ``t − 1`` (so that step ``t`` uses ``f_α(t)``, as in Algorithm 1)."""
    _checks.finite("alpha", alpha)

    def schedule(count):
        t = _step(count)
        return jnp.minimum(t * alpha / warmup_steps, alpha)

    return schedule


def ademamix_b3_schedule(b1: float, b3: float, warmup_steps: int):
    """The paper's β₃ scheduler, from ``β_start = β₁`` to ``β₃`` over ``T`` steps::

        f_β₃(t) = min(exp(ln β_start ln β₃ / ((1 − t/T) ln β₃ + (t/T) ln β_start)), β₃)

    (``1/ln β`` is linear in ``t``), as a schedule of Optax's count ``t − 1``."""
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b3", b3)
    log_start, log_end = math.log(b1), math.log(b3)

    def schedule(count):
        fraction = _step(count) / warmup_steps
        exponent = log_start * log_end / ((1 - fraction) * log_end + fraction * log_start)
        return jnp.minimum(jnp.exp(exponent), b3)

    return schedule


def ademamix(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: optax.ScalarOrSchedule = 0.9999,
    alpha: optax.ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """AdEMAMix: AdamW whose numerator adds α times a slow EMA of the gradients.

    With learning rate ``η``, weight decay ``λ``, gradient ``g`` and step ``t``::

        m₁ ← β₁ m₁ + (1 − β₁) g ;  m₂ ← β₃ m₂ + (1 − β₃) g ;  v ← β₂ v + (1 − β₂) |g|²
        θ ← θ − η ((m₁ / (1 − β₁ᵗ) + α m₂) / (√(v / (1 − β₂ᵗ) + ε_root) + ε) + λ θ)

    ``b3`` and ``alpha`` may be schedules; Optax calls them with ``t − 1``. The paper
    warms both up over ``T`` steps (Algorithm 1, ``f_β₃(t)``, ``f_α(t)``): that is
    ``ademamix(η, b3=ademamix_b3_schedule(β₁, β₃, T), alpha=ademamix_alpha_schedule(α,
    T))`` (checked against a NumPy transcription); without them, a large α early makes it
    unstable (the paper's Sec. 3). Defaults equal ``optax.contrib.ademamix`` (Optax
    0.2.8). One difference: where ``mu_dtype`` or a float32 schedule widens the moments,
    Optax's state changes dtype after the first step (its ``m₁``, ``m₂``, ``v`` are not
    cast back, so ``lax.scan`` refuses it); ours keeps the state's dtype. State per parameter:
    ``m₁``, ``m₂`` and ``v`` (all three in ``mu_dtype``, as in Optax).

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1), the fast EMA.
      b2: β₂ in [0, 1), the second moment.
      b3: β₃ in [0, 1), the slow EMA, or a schedule.
      alpha: α, the slow EMA's weight, or a schedule.
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root.
      mu_dtype: dtype of the moments; None keeps the parameter dtype.
      weight_decay: λ ≥ 0, multiplied by η.
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025 (arXiv:2409.03137).
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: optax.ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    """Simplified AdEMAMix's rescaling.

    With gradient ``g``, step ``t`` and ``α`` (a schedule is called with ``t − 1``)::

        m ← β₁ m + g                      (a sum, not an average: |m| ≈ |g| / (1 − β₁))
        n ← β₂ n + (1 − β₂) g²           (computed as g² + β₂ (n − g²), as in Optax)
        u = (m + α g) / (√(n / (1 − β₂ᵗ) + ε_root) + ε)

    Args:
      b1, b2, alpha, eps, eps_root: as in ``simplified_ademamix``.

    Returns:
      A transformation with state ``ScaleBySimplifiedAdemamixState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.finite("alpha", alpha)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleBySimplifiedAdemamixState(
            t=jnp.array(0, jnp.int32),
            m=optax.tree.zeros_like(params),
            n=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        alpha_t = _value(alpha, state.t)
        m = jax.tree.map(lambda g, m: g + b1 * m, updates, state.m)
        n = jax.tree.map(lambda g, n: g * g + b2 * (n - g * g), updates, state.n)
        t = optax.safe_increment(state.t)
        u = jax.tree.map(
            lambda m, g, n: (m + alpha_t * g) / (jnp.sqrt(n + eps_root) + eps),
            m,
            updates,
            debias(n, b2, t),
        )
        new_state = ScaleBySimplifiedAdemamixState(
            t=t, m=optax.tree.cast_like(m, state.m), n=optax.tree.cast_like(n, state.n)
        )
        return optax.tree.cast_like(u, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def simplified_ademamix(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: optax.ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """Simplified AdEMAMix: one accumulated momentum plus α times the current gradient.

    With learning rate ``η``, weight decay ``λ``, gradient ``g`` and step ``t``::

        m ← β₁ m + g ;   n ← β₂ n + (1 − β₂) g²
        θ ← θ − η ((m + α g) / (√(n / (1 − β₂ᵗ) + ε_root) + ε) + λ θ)

    With α = 0 it is Adam with learning rate ``η / (1 − β₁)`` and no first-moment bias
    correction. ``m`` is a sum (``|m| ≈ |g| / (1 − β₁)``, 100× for β₁ = 0.99), so its
    learning rate is about ``(1 − β₁)`` times Adam's. Defaults equal
    ``optax.contrib.simplified_ademamix`` (Optax 0.2.8). State per parameter: ``m``, ``n``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      alpha: α, the current gradient's extra weight, or a schedule.
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root.
      weight_decay: λ ≥ 0, multiplied by η.
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Morwani et al., "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", arXiv:2502.02431, 2025.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
