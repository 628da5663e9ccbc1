"""Schedule-Free: interpolation and averaging in place of momentum and a decaying schedule."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.rmsprop import scale_by_rms
from optlab.optimizers.sgd import sgd


class ScheduleFreeState(NamedTuple):
    """Schedule-Free's scalars, the base optimizer's state and the sequence ``z``.

    Attributes:
      b1: β, the interpolation weight (in the parameters' lowest float dtype).
      weight_sum: ``Σ_{i≤t} w_i`` of the averaging weights ``w_i = (max_{j≤i} η_j)^p``.
      step_count: ``t + 1`` (from 1, so that a schedule sees the step it is taken at).
      max_lr: ``max_{i≤t} η_i``.
      base_optimizer_state: the wrapped optimizer's state.
      z: the base optimizer's iterate (the parameters hold ``y``).
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: optax.OptState
    z: optax.Params


def _x(y, z, b1):
    """The averaged sequence from the other two: ``x = (y − (1 − β) z) / β``."""
    return jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, y, z)


def schedule_free_eval_params(state: ScheduleFreeState, params: optax.Params) -> optax.Params:
    """The parameters to evaluate: ``x = (y − (1 − β) z) / β`` (``params`` hold ``y``).

    Raises:
      ValueError: ``state`` is not a Schedule-Free state (ours or Optax's).
    """
    if not is_schedule_free_state(state):
        raise ValueError(
            "schedule_free_eval_params needs a ScheduleFreeState, "
            f"got {type(state).__name__}; use eval_params to search a nested state."
        )
    return _x(params, state.z, state.b1)


def is_schedule_free_state(state) -> bool:
    """Whether ``state`` is a Schedule-Free state, ours or ``optax.contrib``'s."""
    return isinstance(state, ScheduleFreeState | optax.contrib.ScheduleFreeState)


def eval_params(opt_state, params: optax.Params) -> optax.Params:
    """The parameters to evaluate for an optimizer state: Schedule-Free's ``x`` where the
    state holds a Schedule-Free state (at any depth: inside ``optax.inject_hyperparams``,
    ``optax.chain`` or ``skip_non_finite``), else ``params`` themselves."""
    leaves = jax.tree.leaves(opt_state, is_leaf=is_schedule_free_state)
    found = [s for s in leaves if is_schedule_free_state(s)]
    if not found:
        return params
    if len(found) > 1:
        raise ValueError(f"the optimizer state holds {len(found)} Schedule-Free states; expected 1")
    return schedule_free_eval_params(found[0], params)


def schedule_free(
    base_optimizer: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Make ``base_optimizer`` schedule-free (Defazio et al. 2024, Algorithm 1).

    With ``Δ_t`` the base optimizer's update (e.g. ``−η_t g`` for SGD) of the gradient at
    the parameters ``y_t``, and ``p = weight_lr_power``::

        z_{t+1} = z_t + Δ_t
        w_t = (max_{i≤t} η_i)^p ;   c_t = w_t / Σ_{i≤t} w_i          (0 if the sum is 0)
        x_{t+1} = (1 − c_t) x_t + c_t z_{t+1}      (x_t = (y_t − (1 − β) z_t) / β)
        y_{t+1} = β x_{t+1} + (1 − β) z_{t+1}      (the update is y_{t+1} − y_t)

    The parameters hold ``y`` (where gradients are taken); evaluate at ``x``
    (``schedule_free_eval_params``, or ``eval_params`` for a nested state). ``x`` is not
    stored: it is recomputed from ``y`` and ``z``, so the memory is the base optimizer's
    plus ``z``. The base optimizer must have no momentum of its own (β replaces it).
    Equal to ``optax.contrib.schedule_free`` (Optax 0.2.8) update for update.

    Args:
      base_optimizer: the optimizer whose iterate is ``z`` (its learning rate included).
      learning_rate: η_t, the same value or schedule as the base optimizer's (it sets the
        averaging weights); a schedule is called with the step count from 1.
      b1: β in (0, 1).
      weight_lr_power: p, how much early (warm-up) steps are down-weighted.
      state_dtype: dtype of ``z``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``ScheduleFreeState``.

    Reference:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
    """
    _checks.learning_rate(learning_rate)
    _checks.decay_rate("b1", b1)
    if isinstance(b1, int | float) and b1 == 0:
        raise ValueError("b1=0 is invalid: b1 must be in (0, 1) (x = (y − (1 − b1) z) / b1).")
    _checks.finite("weight_lr_power", weight_lr_power)
    base_optimizer = optax.with_extra_args_support(base_optimizer)

    def init_fn(params):
        dtype = optax.tree.dtype(params, "lowest")
        z = params if state_dtype is None else optax.tree.cast(params, state_dtype)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype=dtype),
            weight_sum=jnp.zeros([], dtype=dtype),
            step_count=jnp.ones([], dtype=jnp.int32),
            max_lr=jnp.zeros([], dtype=dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=jax.tree.map(lambda t: t.copy(), z),  # its own buffer (both can be donated)
        )

    def update_fn(grads, state, params=None, **extra_args):
        if params is None:
            raise ValueError("schedule_free needs params in update (they hold y).")
        lr = learning_rate
        if callable(learning_rate):
            lr = jnp.asarray(learning_rate(state.step_count), dtype=state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        # 0/0 (a zero learning rate so far) gives c = 0; a NaN weight stays NaN.
        c = jnp.where(
            jnp.isnan(weight) | jnp.isnan(weight_sum),
            jnp.full(weight.shape, jnp.nan),
            jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
        )
        base_updates, base_state = base_optimizer.update(
            grads, state.base_optimizer_state, params, **extra_args
        )
        z = jax.tree.map(
            lambda z, u: jnp.asarray(z + u).astype(jnp.asarray(z).dtype), state.z, base_updates
        )
        x = jax.tree.map(lambda x, z: (1.0 - c) * x + c * z, _x(params, state.z, b1), z)
        y = jax.tree.map(lambda x, z: b1 * x + (1.0 - b1) * z, x, z)
        updates = jax.tree.map(lambda new, old: new - old, y, params)
        new_state = ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum,
            step_count=optax.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _warmup(learning_rate, warmup_steps):
    """``learning_rate`` after a linear warm-up from 0 over ``warmup_steps`` (None: none)."""
    if warmup_steps is None:
        return learning_rate
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
        raise ValueError(
            f"warmup_steps={warmup_steps!r} is invalid: warmup_steps must be an integer >= 1 "
            "(or None)."
        )
    return optax.warmup_constant_schedule(0.0, learning_rate, warmup_steps)


def schedule_free_sgd(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free SGD: ``schedule_free(sgd(η_t), η_t, β)``.

    With learning rate ``η_t`` (a linear warm-up from 0 over ``warmup_steps`` if given),
    weight decay ``λ`` and the gradient ``g`` at ``y``::

        z ← z − η_t (g + λ y)
        x ← (1 − c_t) x + c_t z ;   y ← β x + (1 − β) z          (``schedule_free``)

    Defaults equal ``optax.contrib.schedule_free_sgd``. Evaluate at
    ``schedule_free_eval_params(state, params)``. State per parameter: ``z``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule (used for the SGD step and the
        averaging weights).
      warmup_steps: length of a linear warm-up from 0, or None.
      b1: β in (0, 1).
      weight_decay: λ ≥ 0 (applied at ``y``, scaled by η), or None.
      weight_lr_power: p of the averaging weights ``(max η)^p``.
      state_dtype: dtype of ``z``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Reference:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    learning_rate = _warmup(learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = optax.chain(optax.add_decayed_weights(weight_decay), base)
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(
    learning_rate: optax.ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free AdamW: AdamW without its first moment, made schedule-free.

    With learning rate ``η_t`` (a linear warm-up from 0 over ``warmup_steps`` if given),
    weight decay ``λ``, the gradient ``g`` at ``y`` and step ``t``::

        v ← β₂ v + (1 − β₂) |g|² ;   v̂ = v / (1 − β₂ᵗ)
        z ← z − η_t (g / (√v̂ + ε) + λ y)
        x ← (1 − c_t) x + c_t z ;   y ← β₁ x + (1 − β₁) z          (``schedule_free``)

    (``scale_by_rms(β₂, ε, eps_in_sqrt=False, bias_correction=True)``: Adam with β₁ = 0
    without the zero first moment.) Defaults equal ``optax.contrib.schedule_free_adamw``.
    Defazio et al.'s Algorithm 1 differs in two places (docs/optimizers.md): it takes
    ``η_t √(1 − β₂ᵗ)`` as the averaging weights' learning rate, and decays at ``y``.
    Evaluate at ``schedule_free_eval_params(state, params)``. State per parameter: ``z``
    and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      warmup_steps: length of a linear warm-up from 0, or None.
      b1: β₁ in (0, 1), the interpolation.
      b2: β₂ in [0, 1).
      eps: ε ≥ 0.
      weight_decay: λ ≥ 0, scaled by η.
      weight_lr_power: p of the averaging weights ``(max η)^p``.
      state_dtype: dtype of ``z``; None keeps the parameter dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Reference:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    learning_rate = _warmup(learning_rate, warmup_steps)
    base = optax.chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def schedule_free_adamw_paper(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Schedule-Free AdamW as in Defazio et al.'s Algorithm 1.

    With γ = ``learning_rate``, ``T`` = ``warmup_steps`` and the gradient ``g`` at ``y``::

        γ_t = γ √(1 − β₂ᵗ) min(1, t / T)         (t from 1; no warm-up: min(…) = 1)
        v ← β₂ v + (1 − β₂) g² ;   z ← z − γ_t g / (√v + ε) − γ_t λ y
        c_t = γ_t² / Σ_{i≤t} γ_i² ;   x ← (1 − c_t) x + c_t z ;   y ← β₁ x + (1 − β₁) z

    ``schedule_free(base, γ_t)`` with ``base = chain(scale_by_rms(β₂, ε, eps_in_sqrt=False),
    add_decayed_weights(λ), scale_by_learning_rate(γ_t))``: ``γ_t`` is non-decreasing, so
    ``schedule_free``'s running maximum is ``γ_t`` itself. It differs from
    ``schedule_free_adamw`` (Optax's) in the averaging weights (``γ_t²`` with the
    ``√(1 − β₂ᵗ)`` factor), in ε (outside ``√v`` rather than ``√v̂``) and in the warm-up's
    first step (Optax's base optimizer sees the warm-up from 0). A factory, not a registry
    entry. State per parameter: ``z`` and ``v``.

    Args:
      learning_rate: γ ≥ 0 (a float: the warm-up and the bias factor are built in).
      warmup_steps: T, an integer ≥ 1, or None.
      b1: β₁ in (0, 1), the interpolation.
      b2: β₂ in [0, 1).
      eps: ε ≥ 0.
      weight_decay: λ ≥ 0, applied at ``y`` and scaled by ``γ_t``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``ScheduleFreeState``.

    Reference:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024, Algorithm 1.
    """
    _checks.learning_rate(learning_rate)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("weight_decay", weight_decay)
    _warmup(1.0, warmup_steps)  # checks warmup_steps

    def gamma(t):
        t = jnp.asarray(t, jax.dtypes.canonicalize_dtype(jnp.float64))  # float64 with x64
        warm = 1.0 if warmup_steps is None else jnp.minimum(1.0, t / warmup_steps)
        return learning_rate * jnp.sqrt(1 - b2**t) * warm

    base = optax.chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(lambda count: gamma(count + 1)),
    )
    return schedule_free(base, gamma, b1, weight_lr_power=2.0)
