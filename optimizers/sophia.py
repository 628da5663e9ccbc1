"""Sophia: momentum divided by an EMA of a Hessian-diagonal estimate, clipped (Liu et al. 2024).

Its ``update`` needs the objective: ``tx.update(grads, state, params, obj_fn=f)`` with
``f(params) -> loss`` (the default Hutchinson estimate differentiates it twice), so it is a
factory here, not a registry entry: the training engine calls ``tx.update(grads, state,
params)`` only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import debias
from optlab.optimizers.adam import _dtype


class HutchinsonState(NamedTuple):
    """The PRNG key of the next Rademacher probe."""

    key: jax.Array


class ScaleBySophiaState(NamedTuple):
    """Step count, momentum ``m``, the EMA ``h`` of the Hessian diagonal and the
    estimator's own state."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    hessian_fn_state: Any


def hutchinson_diagonal_hessian(
    random_seed: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Hutchinson's unbiased estimate of the Hessian diagonal of ``obj_fn`` at ``params``::

        r ~ Rademacher (±1, one draw per step) ;   ĥ = r ⊙ (∇² f(θ) r)

    (``E[ĥ] = diag ∇² f``; one Hessian-vector product, by forward-over-reverse ``jvp``).
    The incoming updates are ignored. ``update`` needs ``params`` and ``obj_fn``.

    Args:
      random_seed: the first PRNG key (legacy uint32 form); None uses ``PRNGKey(0)``.

    Returns:
      A transformation with state ``HutchinsonState``.
    """

    def init_fn(params):
        del params
        return HutchinsonState(key=jax.random.PRNGKey(0) if random_seed is None else random_seed)

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None or obj_fn is None:
            raise ValueError(
                "the Hutchinson estimate needs params and obj_fn: "
                "tx.update(grads, state, params, obj_fn=lambda p: loss(p, batch))."
            )
        key, subkey = jax.random.split(state.key)
        signs = optax.tree.random_like(subkey, params, jax.random.rademacher, dtype=jnp.float32)
        signs = optax.tree.cast(signs, optax.tree.dtype(params, "lowest"))
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda h, r: h * r, hvp, signs), HutchinsonState(key=key)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: optax.GradientTransformation | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Sophia's rescaling.

    With gradient ``g``, step count ``t`` (from 0), ``ĥ`` from ``hessian_diagonal_fn``::

        m ← β₁ m + (1 − β₁) g ;   m̂ = m / (1 − β₁ᵗ⁺¹)
        u = clip(m̂ / max(γ h, ε), −ρ, ρ)          (ρ = clip_threshold; None: no clip)
        h ← β₂ h + (1 − β₂) ĥ        every ``update_interval`` steps (t mod k = 0), after u

    Args:
      b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype:
        as in ``sophia``.

    Returns:
      A transformation with state ``ScaleBySophiaState``; extra ``update`` keyword
      arguments (``obj_fn``) go to ``hessian_diagonal_fn``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("gamma", gamma)
    _checks.non_negative("clip_threshold", clip_threshold)
    if (
        not isinstance(update_interval, int)
        or isinstance(update_interval, bool)
        or (update_interval < 1)
    ):
        raise ValueError(
            f"update_interval={update_interval!r} is invalid: it must be an integer >= 1."
        )
    mu_dtype = _dtype(mu_dtype)
    estimator = optax.with_extra_args_support(
        hutchinson_diagonal_hessian() if hessian_diagonal_fn is None else hessian_diagonal_fn
    )

    def init_fn(params):
        return ScaleBySophiaState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
            hessian_fn_state=estimator.init(params),
        )

    def update_fn(updates, state, params=None, **estimator_args):
        if params is None:
            raise ValueError("sophia needs params in update (and obj_fn for its estimate).")
        grads = updates
        t = optax.safe_increment(state.count)
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        m_hat = debias(m, b1, t)
        u = jax.tree.map(lambda m, h: m / jnp.maximum(gamma * h, eps), m_hat, state.nu)
        if clip_threshold is not None:
            u = jax.tree.map(lambda u: jnp.clip(u, -clip_threshold, clip_threshold), u)

        def refresh(estimator_state, h):
            estimate, estimator_state = estimator.update(
                grads, estimator_state, params=params, **estimator_args
            )
            h = jax.tree.map(lambda e, h: (1 - b2) * e + b2 * h, estimate, h)
            return estimator_state, h

        estimator_state, h = jax.lax.cond(
            jnp.equal(state.count % update_interval, 0),
            refresh,
            lambda s, h: (s, h),
            state.hessian_fn_state,
            state.nu,
        )
        new_state = ScaleBySophiaState(t, optax.tree.cast(m, mu_dtype), h, estimator_state)
        return u, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sophia(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    weight_decay_mask: Any = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: optax.GradientTransformation | None = None,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Sophia-H: a clipped Newton-like step on a cheap Hessian-diagonal estimate.

    With learning rate ``η``, weight decay ``λ``, gradient ``g``, step count ``t`` and
    Hutchinson's ``ĥ = r ⊙ ∇²f r`` every ``k = update_interval`` steps::

        m ← β₁ m + (1 − β₁) g
        θ ← θ − η (clip(m̂ / max(γ h, ε), ±ρ) + λ θ)
        h ← β₂ h + (1 − β₂) ĥ        (t mod k = 0; so β₂ = 0.99 acts like 0.999 per step)

    Call ``update(grads, state, params, obj_fn=f)`` with ``f(params) -> loss`` on the
    current batch (extra keywords reach ``hessian_diagonal_fn``). The clip bounds each
    coordinate's step by ``η ρ`` where the curvature estimate is small or negative.
    Defaults equal ``optax.contrib.sophia`` (Optax 0.2.8; its ``verbose`` win-rate
    printing is not offered). Not a registry entry (the engine passes no ``obj_fn``).
    State per parameter: ``m`` and ``h``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1), per Hessian refresh.
      eps: ε ≥ 0, the floor of ``γ h``.
      weight_decay: λ ≥ 0 (multiplied by η).
      weight_decay_mask: which leaves to decay (pytree of bools or callable).
      gamma: γ ≥ 0, scales ``h``.
      clip_threshold: ρ ≥ 0, or None for no clipping.
      update_interval: k, steps between Hessian refreshes (integer ≥ 1).
      hessian_diagonal_fn: the estimator (a transformation whose update returns the
        diagonal); None: ``hutchinson_diagonal_hessian()``.
      mu_dtype: dtype of ``m``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Reference:
      Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
      Pre-training", ICLR 2024.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_sophia(
            b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype
        ),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )
