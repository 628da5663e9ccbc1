"""MoMo: momentum with a Polyak-type step from a model of the loss (Schaipp et al. 2023).

Both optimizers need the loss value ``f(x)`` at update time, Optax's
``GradientTransformationExtraArgs`` contract::

    updates, state = tx.update(grads, state, params, value=loss)

so they are public factories, not registry entries: the training engine calls
``tx.update(grads, state, params)`` without the value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByMomoState(NamedTuple):
    """``d`` (EWMA of gradients), ``f̄`` (of losses), ``γ`` (of ``⟨g, x⟩``), ``f_*``, count."""

    exp_avg: optax.Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


class ScaleByMomoAdamState(NamedTuple):
    """MoMo's state plus Adam's second moment ``v``."""

    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


def _check_value(value):
    if value is None:
        raise ValueError(
            "value=None is invalid: MoMo needs the loss at params, "
            "tx.update(grads, state, params, value=loss) (jax.value_and_grad gives both)."
        )


def _init_scalars(params, lower_bound):
    dtype = optax.tree.dtype(params, "lowest")
    return (
        jnp.zeros([], dtype=dtype),
        jnp.zeros([], dtype=dtype),
        jnp.array(lower_bound, dtype=dtype),
        jnp.zeros([], jnp.int32),
    )


def _polyak_step(barf, gamma, iprod, norm, lb, alpha, weight_decay, cap, bc1=1.0):
    """``τ = min(α / b, max((1 + αλ)(f̄ − b f_* − γ) + ⟨d, x⟩, 0) / n)`` (0 where ``n`` = 0)."""
    decay = 1 + alpha * weight_decay
    t1 = jnp.maximum(decay * (barf - bc1 * lb - gamma) + iprod, 0.0) / norm
    t1 = jnp.where(norm <= jnp.finfo(float).eps, 0.0, t1)
    return jnp.minimum(cap, t1)


def _check_common(learning_rate, weight_decay, lower_bound):
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    _checks.finite("lower_bound", lower_bound)


def momo(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """MoMo: SGD with momentum, the step capped by a Polyak step on a model of the loss.

    With learning rate ``α``, loss ``f`` and gradient ``g`` at ``x``, weight decay ``λ``,
    lower bound ``f_*`` and ``β_k = 0`` at the first step, ``β`` after::

        d ← β_k d + (1 − β_k) g ;   f̄ ← β_k f̄ + (1 − β_k) f ;   γ ← β_k γ + (1 − β_k) ⟨g, x⟩
        τ = min(α, max((1 + αλ)(f̄ − f_* − γ) + ⟨d, x⟩, 0) / ‖d‖²)     (0 if ‖d‖² ≤ ε_mach)
        x ← x − αλ/(1 + αλ) x − τ d

    With ``adapt_lower_bound`` ``f_*`` is re-estimated each step from the model (the paper's
    MoMo*). Defaults equal ``optax.contrib.momo``. Needs ``value=f`` in ``update``; not in
    the registry (see the module docstring). State per parameter: ``d``.

    Args:
      learning_rate: α ≥ 0, the cap on the step, a float or a schedule.
      beta: β in [0, 1).
      lower_bound: f_*, a lower bound on the loss (0 for most losses).
      weight_decay: λ ≥ 0.
      adapt_lower_bound: estimate f_* on the fly.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Reference:
      Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for Adaptive
      Learning Rates", ICML 2024 (arXiv:2305.07583).
    """
    _check_common(learning_rate, weight_decay, lower_bound)
    _checks.decay_rate("beta", beta)

    def init_fn(params):
        barf, gamma, lb, count = _init_scalars(params, lower_bound)
        return ScaleByMomoState(optax.tree.zeros_like(params), barf, gamma, lb, count)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        _check_value(value)
        bt = jnp.where(state.count == 0, 0.0, beta)
        barf = bt * state.barf + (1 - bt) * jnp.asarray(value, dtype=state.barf.dtype)
        d = jax.tree.map(lambda d, g: bt * d + (1 - bt) * g, state.exp_avg, updates)
        gamma = bt * state.gamma + (1 - bt) * optax.tree.vdot(updates, params)
        norm = optax.tree.norm(d, squared=True)
        iprod = optax.tree.vdot(d, params)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        decay = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            cap = decay * (barf - gamma) + iprod
            lb = jax.lax.cond(
                cap < decay * state.lb,
                lambda: jnp.maximum(cap / (2 * decay), lower_bound),
                lambda: state.lb,
            )
        tau = _polyak_step(barf, gamma, iprod, norm, lb, alpha, weight_decay, alpha)
        u = jax.tree.map(lambda d, x: -(alpha * weight_decay) / decay * x - tau * d, d, params)
        if adapt_lower_bound:
            lb = jnp.maximum((barf + iprod - gamma) - (1 / 2) * tau * norm, lower_bound)
        else:
            lb = state.lb
        count = optax.safe_increment(state.count)
        return u, ScaleByMomoState(d, barf, gamma, lb, count)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def momo_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """MoMo-Adam: Adam(W) with the step capped by a Polyak step on a model of the loss.

    With learning rate ``α``, loss ``f`` and gradient ``g`` at ``x``, step ``t``, weight
    decay ``λ``, ``b = 1 − β₁ᵗ`` and lower bound ``f_*``::

        d ← β₁ d + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) g²
        f̄ ← β₁ f̄ + (1 − β₁) f ;   γ ← β₁ γ + (1 − β₁) ⟨g, x⟩
        D = ε + √(v / (1 − β₂ᵗ)) ;   n = ⟨d, d / D⟩
        τ = min(α / b, max((1 + αλ)(f̄ − b f_* − γ) + ⟨d, x⟩, 0) / n)     (0 if n ≤ ε_mach)
        x ← x − αλ/(1 + αλ) x − τ d / D

    Defaults equal ``optax.contrib.momo_adam``. Needs ``value=f`` in ``update``; not in the
    registry (see the module docstring). State per parameter: ``d`` and ``v``.

    Args:
      learning_rate: α ≥ 0, a float or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0.
      lower_bound: f_*, a lower bound on the loss.
      weight_decay: λ ≥ 0, decoupled as in AdamW.
      adapt_lower_bound: estimate f_* on the fly.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Reference:
      Schaipp et al., "MoMo: Momentum Models for Adaptive Learning Rates", ICML 2024.
    """
    _check_common(learning_rate, weight_decay, lower_bound)
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)

    def init_fn(params):
        barf, gamma, lb, count = _init_scalars(params, lower_bound)
        zeros = optax.tree.zeros_like
        return ScaleByMomoAdamState(zeros(params), zeros(params), barf, gamma, lb, count)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        _check_value(value)
        t = optax.safe_increment(state.count)
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value, dtype=state.barf.dtype)
        d = jax.tree.map(lambda d, g: b1 * d + (1 - b1) * g, state.exp_avg, updates)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, updates)
        bc2 = jnp.asarray(1 - b2**t, dtype=barf.dtype)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / bc2), v)
        norm = optax.tree.vdot(d, jax.tree.map(lambda d, p: d / p, d, precond))
        gamma = b1 * state.gamma + (1 - b1) * optax.tree.vdot(updates, params)
        iprod = optax.tree.vdot(d, params)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        bc1 = jnp.asarray(1 - b1**t, dtype=barf.dtype)
        decay = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            cap = decay * (barf - gamma) + iprod
            lb = jnp.where(
                cap < decay * bc1 * state.lb,
                jnp.maximum(cap / (2 * bc1 * decay), lower_bound),
                state.lb,
            )
        tau = _polyak_step(barf, gamma, iprod, norm, lb, alpha, weight_decay, alpha / bc1, bc1)
        u = jax.tree.map(
            lambda d, p, x: -(alpha * weight_decay) / decay * x - tau * d / p, d, precond, params
        )
        if adapt_lower_bound:
            lb = jnp.maximum(((barf + iprod - gamma) - (1 / 2) * tau * norm) / bc1, lower_bound)
        else:
            lb = state.lb
        return u, ScaleByMomoAdamState(d, v, barf, gamma, lb, t)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
