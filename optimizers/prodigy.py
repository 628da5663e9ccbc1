"""Prodigy: Adam whose step size D is estimated from the distance travelled (Mishchenko &
Defazio 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByProdigyState(NamedTuple):
    """Prodigy's buffers and scalars.

    Attributes:
      exp_avg: ``m``, the EMA of ``d g``.
      exp_avg_sq: ``v``, the EMA of ``(d g)²``.
      grad_sum: ``s``, the β₃-weighted sum of ``d_lr d g / d₀``.
      params0: ``θ₀``, the starting point.
      estim_lr: ``d``, the step-size estimate (never decreases).
      numerator_weighted: ``r``, the β₃-weighted sum of ``(d / d₀) d_lr ⟨g, θ₀ − θ⟩``.
      count: step count ``t``.
    """

    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    grad_sum: optax.Updates
    params0: optax.Params
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def prodigy(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Prodigy: AdamW with the learning rate ``d`` estimated on the fly (no tuning of η).

    With schedule ``γ_t`` (``learning_rate``, 1.0 = the estimate itself), gradient ``g``,
    step ``t``, ``d`` the current estimate (from ``d₀ = estim_lr0``) and β₃ = √β₂ by
    default::

        d_lr = d γ_t √(1 − β₂ᵗ) / (1 − β₁ᵗ)
        m ← β₁ m + (1 − β₁) d g ;   v ← β₂ v + (1 − β₂) (d g)²
        s ← β₃ s + d_lr d g / d₀                (safeguard_warmup: d d g / d₀)
        r ← β₃ r + (d / d₀) d_lr ⟨g, θ₀ − θ⟩
        d ← max(d, c r / ‖s‖₁)                  (c = estim_lr_coef; d kept if ‖s‖₁ = 0)
        θ ← θ − d_lr (m / (√v + d ε) + λ θ)     (with the new d in ``d ε``)

    ``d`` grows while the iterates keep moving away from ``θ₀`` in the direction the
    gradients agree on. Defaults and update equal ``optax.contrib.prodigy`` (Optax 0.2.8).
    Where it departs from the paper's Algorithm 4 (docs/optimizers.md): the Adam bias
    correction in ``d_lr`` (the paper and PyTorch's default have none), the new ``d`` in
    the ``d ε`` term, and β₃ sums without the ``(1 − β₃)`` factors (which cancel in
    ``r / ‖s‖₁``). One deliberate difference from Optax: while ``‖s‖₁ = 0`` (zero
    gradients, or γ = 0) Optax's ``d`` becomes 0/0 = NaN and every later step NaN; ours
    keeps ``d``. State per parameter: four buffers (``m``, ``v``, ``s``, ``θ₀``) and two
    scalars. Needs ``params`` in ``update``.

    Args:
      learning_rate: γ ≥ 0, a float or an Optax schedule multiplying ``d`` (1.0: none).
      betas: (β₁, β₂), each in [0, 1).
      beta3: β₃ in [0, 1) for ``r`` and ``s``; None uses √β₂.
      eps: ε ≥ 0, scaled by ``d``.
      estim_lr0: d₀ > 0, the initial under-estimate.
      estim_lr_coef: c ≥ 0, multiplies each new estimate.
      weight_decay: λ ≥ 0 (AdamW's, scaled by ``d_lr``).
      safeguard_warmup: leave γ out of ``s`` (for warm-up schedules starting near 0).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``ScaleByProdigyState``.

    Reference:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
      ICML 2024 (arXiv:2306.06101).
    """
    _checks.learning_rate(learning_rate)
    beta1, beta2 = betas
    _checks.decay_rate("b1", beta1)
    _checks.decay_rate("b2", beta2)
    beta3 = beta2**0.5 if beta3 is None else beta3
    _checks.decay_rate("beta3", beta3)
    _checks.non_negative("eps", eps)
    _checks.positive("estim_lr0", estim_lr0)
    _checks.non_negative("estim_lr_coef", estim_lr_coef)
    _checks.non_negative("weight_decay", weight_decay)

    def init_fn(params):
        dtype = optax.tree.dtype(params, "lowest")
        return ScaleByProdigyState(
            exp_avg=optax.tree.zeros_like(params),
            exp_avg_sq=optax.tree.zeros_like(params),
            grad_sum=optax.tree.zeros_like(params),
            params0=params,
            estim_lr=jnp.asarray(estim_lr0, dtype=dtype),
            numerator_weighted=jnp.zeros((), dtype=dtype),
            count=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("prodigy needs params in update (for ⟨g, θ₀ − θ⟩).")
        t = optax.safe_increment(state.count)
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        d = state.estim_lr
        correction = ((1 - beta2**t) ** 0.5) / (1 - beta1**t)
        d_lr = jnp.asarray(d * gamma * correction, dtype=d.dtype)
        dg = jax.tree.map(lambda g: d * g, updates)
        distance = jax.tree.map(lambda p0, p: p0 - p, state.params0, params)
        progress = optax.tree.vdot(updates, distance)  # ⟨g, θ₀ − θ⟩
        m = jax.tree.map(lambda m, dg: beta1 * m + (1 - beta1) * dg, state.exp_avg, dg)
        v = jax.tree.map(lambda v, dg: beta2 * v + (1 - beta2) * dg * dg, state.exp_avg_sq, dg)
        s_weight = d if safeguard_warmup else d_lr
        s = jax.tree.map(lambda s, dg: beta3 * s + s_weight * dg / estim_lr0, state.grad_sum, dg)
        r = beta3 * state.numerator_weighted
        r += (d / estim_lr0) * d_lr * progress
        s_norm = optax.tree.sum(jax.tree.map(jnp.abs, s))
        # ‖s‖₁ = 0 (zero gradients so far, or γ = 0): no estimate, where Optax's d is 0/0.
        estimate = jnp.where(s_norm > 0, estim_lr_coef * r / s_norm, 0.0)
        new_d = jnp.maximum(d, estimate)
        u = jax.tree.map(
            lambda m, v, p: -weight_decay * d_lr * p - d_lr * m / (jnp.sqrt(v) + new_d * eps),
            m,
            v,
            params,
        )
        return u, ScaleByProdigyState(m, v, s, state.params0, new_d, r, t)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
