"""Memory-light second moments: Adafactor's factored RMS (Shazeer & Stern 2018) and SM3's
per-axis cover accumulators (Anil et al. 2019)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq
from optlab.optimizers.sgd import scale_by_ewma


class ScaleBySM3State(NamedTuple):
    """Per leaf, one accumulator per axis ``μ_i`` (shape ``(n_i,)``; a scalar leaf: one
    scalar), and the momentum ``ν`` of the parameter's shape."""

    mu: optax.Updates
    nu: optax.Updates


def _reject_complex(params) -> None:
    if any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params)):
        raise ValueError("sm3 does not support complex parameters (neither does Optax's).")


def _axis_accumulators(p) -> list[jax.Array]:
    """Zeros of shape ``(p.shape[i],)`` for each axis ``i`` (one scalar for a scalar ``p``)."""
    if p.ndim == 0:
        return [jnp.zeros_like(p)]
    return [jnp.zeros((n,), p.dtype) for n in p.shape]


def _broadcast_to_axis(v, shape, axis):
    """``v`` of shape ``(n_axis,)`` reshaped to ``[1, …, n_axis, …, 1]``."""
    return jnp.reshape(v, [1] * axis + [shape[axis]] + [1] * (len(shape) - axis - 1))


def scale_by_sm3(
    b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8
) -> optax.GradientTransformation:
    """SM3-II's rescaling with momentum.

    Per leaf with gradient ``g`` (``r`` axes, accumulators ``μ_i``): for ``r ≥ 2``::

        a = c₁ g² + β₂ min_i μ_i        (μ_i broadcast along axis i; c₁ = 1 if β₂ = 1
                                         else 1 − β₂)
        μ_i ← max of a over every axis but i

    and for ``r ≤ 1``: ``a = c₁ g² + β₂ μ₀``, ``μ₀ ← a`` (a full accumulator). Then::

        ν ← β₁ ν + (1 − β₁) g / √(a + ε)     (0 where a = 0)
        u = ν

    Real parameters only (ValueError at ``init``, as Optax).

    Args:
      b1: β₁ in [0, 1), the momentum.
      b2: β₂ in [0, 1] (1: the paper's sum, no decay).
      eps: ε ≥ 0, inside the root.

    Returns:
      A transformation with state ``ScaleBySM3State``.
    """
    _checks.decay_rate("b1", b1)
    _checks.unit_interval("b2", b2)
    _checks.non_negative("eps", eps)
    c1 = (1.0 - b2) if b2 != 1.0 else 1.0

    def init_fn(params):
        _reject_complex(params)
        return ScaleBySM3State(
            mu=jax.tree.map(_axis_accumulators, params), nu=optax.tree.zeros_like(params)
        )

    def accumulate(g, mu):
        if g.ndim < 2:
            return c1 * g**2 + b2 * mu[0]
        cover = [_broadcast_to_axis(v, g.shape, i) for i, v in enumerate(mu)]
        return c1 * g**2 + b2 * functools.reduce(jnp.minimum, cover)

    def axis_maxima(a):
        if a.ndim < 2:
            return [a]
        # a ≥ 0, so a max from 0 is the max, and a zero-size leaf gets zeros, not an error
        others = [[j for j in range(a.ndim) if j != i] for i in range(a.ndim)]
        return [jnp.max(a, axis=axes, initial=0) for axes in others]

    def update_fn(updates, state, params=None):
        del params
        a = jax.tree.map(accumulate, updates, state.mu)
        inverse_root = jax.tree.map(lambda a: jnp.where(a > 0, jax.lax.rsqrt(a + eps), 0.0), a)
        nu = jax.tree.map(
            lambda g, r, n: (1 - b1) * (g * r) + b1 * n, updates, inverse_root, state.nu
        )
        return nu, ScaleBySM3State(mu=jax.tree.map(axis_maxima, a), nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def sm3(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9):
    """SM3: Adagrad-like per-coordinate steps from per-axis accumulators, sublinear memory.

    With learning rate ``η``, momentum ``β`` and, per leaf of ``r ≥ 2`` axes, accumulators
    ``μ_i`` (one per axis, of that axis's length)::

        a = g² + min_i μ_i            (the tightest cover of the past Σ g²)
        μ_i ← max of a over every axis but i
        ν ← β ν + (1 − β) g / √(a + ε),   ε = 1e-8 (0 where a = 0)
        θ ← θ − η ν

    Leaves of ``r ≤ 1`` axes keep a full accumulator (Adagrad's ``a = g² + a``). Defaults
    equal ``optax.sm3`` (β = 0.9, the accumulator a plain sum as the paper's SM3-II).
    Memory: the momentum ``ν`` (one buffer) plus ``Σ_i n_i`` per ``n_1 × … × n_r`` leaf
    (vectors and scalars: a second full buffer). A factory, not a registry entry: that
    state is not a whole number of parameter-sized buffers, which the registry's
    ``state_per_param`` assumes. Real parameters only.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      momentum: β in [0, 1).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(scale_by_sm3(momentum), optax.scale_by_learning_rate(learning_rate))


class ScaleByFactoredRmsState(NamedTuple):
    """Step count and, per leaf, the row and column statistics ``r``, ``c`` (factored
    leaves) or the full second moment ``v`` (the others); unused ones are ``(1,)`` zeros,
    as in Optax's ``FactoredState``."""

    count: jax.Array
    v_row: optax.Updates
    v_col: optax.Updates
    v: optax.Updates


@dataclasses.dataclass
class _LeafStats:
    """One leaf's update and statistics (a plain object: a leaf of the tree maps)."""

    update: jax.Array | None
    v_row: jax.Array
    v_col: jax.Array
    v: jax.Array


def factored_dims(shape, factored: bool, min_dim_size_to_factor: int) -> tuple[int, int] | None:
    """``(d₁, d₀)``, the axes of the second-largest and largest sizes, when the leaf is
    factored (2+ axes, the second-largest ≥ ``min_dim_size_to_factor``); else None."""
    if not factored or len(shape) < 2:
        return None
    sorted_dims = np.argsort(shape)
    if shape[sorted_dims[-2]] < min_dim_size_to_factor:
        return None
    return int(sorted_dims[-2]), int(sorted_dims[-1])


def adafactor_decay(step, exponent):
    """Adafactor's increasing decay ``β̂₂ₜ = 1 − (t + 1)^(−exponent)`` at ``step = t``."""
    return 1.0 - jnp.array(step + 1, jnp.float32) ** (-exponent)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
) -> optax.GradientTransformation:
    """Adafactor's rescaling by a factored estimate of the RMS gradient.

    With gradient ``g``, step ``t`` (from 0), ``β̂ = 1 − (t − offset + 1)^(−decay_rate)``
    and ``G = |g|² + ε₁``: for a factored leaf (axes ``d₀`` largest, ``d₁`` second)::

        r ← β̂ r + (1 − β̂) mean_{d₀} G ;   c ← β̂ c + (1 − β̂) mean_{d₁} G
        u = g / √(r c / mean(r))          (r, c broadcast back along d₀, d₁)

    and for the others::

        v ← β̂ v + (1 − β̂) G ;   u = g / √v

    Needs ``params`` (for their shapes and dtypes).

    Args:
      factored, decay_rate, step_offset, min_dim_size_to_factor, epsilon: as in
        ``adafactor`` (``decay_offset``, ``eps`` there).

    Returns:
      A transformation with state ``ScaleByFactoredRmsState``.
    """
    _checks.non_negative("decay_rate", decay_rate)
    _checks.non_negative("epsilon", epsilon)

    def placeholder(p):
        return jnp.zeros((1,), dtype=p.dtype)

    def init_leaf(p):
        dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
        if dims is None:
            return _LeafStats(None, placeholder(p), placeholder(p), jnp.zeros_like(p))
        d1, d0 = dims
        row = jnp.zeros(p.shape[:d0] + p.shape[d0 + 1 :], p.dtype)
        col = jnp.zeros(p.shape[:d1] + p.shape[d1 + 1 :], p.dtype)
        return _LeafStats(None, row, col, placeholder(p))

    def pick(stats, field):
        return jax.tree.map(lambda x: getattr(x, field), stats)

    def init_fn(params):
        stats = jax.tree.map(init_leaf, params)
        return ScaleByFactoredRmsState(
            count=jnp.zeros([], jnp.int32),
            v_row=pick(stats, "v_row"),
            v_col=pick(stats, "v_col"),
            v=pick(stats, "v"),
        )

    def update_leaf(g, row, col, v, p, step):
        decay = adafactor_decay(step - step_offset, decay_rate)
        g_sq = abs_sq(g) + epsilon
        dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
        if dims is None:
            v = (decay * v + (1.0 - decay) * g_sq).astype(p.dtype)
            return _LeafStats(g * v**-0.5, placeholder(p), placeholder(p), v)
        d1, d0 = dims
        row = (decay * row + (1.0 - decay) * jnp.mean(g_sq, axis=d0)).astype(p.dtype)
        col = (decay * col + (1.0 - decay) * jnp.mean(g_sq, axis=d1)).astype(p.dtype)
        row_axis = d1 - 1 if d1 > d0 else d1
        row_factor = (row / jnp.mean(row, axis=row_axis, keepdims=True)) ** -0.5
        u = g * jnp.expand_dims(row_factor, axis=d0) * jnp.expand_dims(col**-0.5, axis=d1)
        return _LeafStats(u, row, col, placeholder(p))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_factored_rms needs params: call update(g, state, params).")
        out = jax.tree.map(
            lambda g, r, c, v, p: update_leaf(g, r, c, v, p, state.count),
            updates,
            state.v_row,
            state.v_col,
            state.v,
            params,
        )
        new_state = ScaleByFactoredRmsState(
            optax.safe_increment(state.count),
            pick(out, "v_row"),
            pick(out, "v_col"),
            pick(out, "v"),
        )
        return pick(out, "update"), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def adafactor(
    learning_rate: optax.ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: optax.ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """Adafactor: RMS-scaled steps from factored (row × column) second moments.

    With learning rate ``η``, the factored rescaling ``u`` of ``scale_by_factored_rms`` and,
    per leaf ``θ``::

        u ← u / max(1, RMS(u) / d)                  (clipping_threshold d; None: off)
        u ← η u                                     (learning_rate None: η = 1)
        u ← u · max(RMS(θ), 10⁻³)                   (multiply_by_parameter_scale)
        m ← β m + (1 − β) u ;  u = m                (momentum β; None: off)
        θ ← θ − (u + λ θ)                           (weight_decay_rate λ; None: off)

    Defaults equal ``optax.adafactor``: no momentum (so a factored ``m × n`` leaf keeps
    ``m + n`` numbers, others one full buffer), β̂₂ₜ = 1 − (t+1)^−0.8, d = 1, relative
    steps. The clipping and parameter-scale blocks are Optax's (``clip_by_block_rms``,
    ``scale_by_param_block_rms``). A factory, not a registry entry: its state is not a
    whole number of parameter-sized buffers (the registry's ``state_per_param``). Needs
    ``params``.

    Args:
      learning_rate: η ≥ 0, a float, an Optax schedule, or None (no scaling).
      min_dim_size_to_factor: factor a leaf whose second-largest axis is at least this.
      decay_rate: the exponent of β̂₂ₜ (0.8).
      decay_offset: steps subtracted from ``t`` in β̂₂ₜ (fine-tuning).
      multiply_by_parameter_scale: scale steps by the parameters' RMS (relative steps).
      clipping_threshold: d > 0, or None.
      momentum: β in [0, 1), or None.
      dtype_momentum: dtype of ``m``.
      weight_decay_rate: λ ≥ 0 (or a schedule), or None.
      eps: ε₁ ≥ 0, added to ``|g|²``.
      factored: factor leaves at all.
      weight_decay_mask: leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018.
    """
    if learning_rate is not None:
        _checks.learning_rate(learning_rate)
    if clipping_threshold is not None:
        _checks.non_negative("clipping_threshold", clipping_threshold)
    if momentum is not None:
        _checks.decay_rate("momentum", momentum)
    if weight_decay_rate is not None:
        _checks.non_negative("weight_decay_rate", weight_decay_rate)
    blocks = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        blocks.append(optax.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        blocks.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        blocks.append(optax.scale_by_param_block_rms())
    if momentum is not None:
        blocks.append(scale_by_ewma(momentum, dtype_momentum))
    if weight_decay_rate is not None:
        blocks.append(optax.add_decayed_weights(weight_decay_rate, weight_decay_mask))
    blocks.append(optax.scale(-1.0))
    return optax.chain(*blocks)
