"""L-BFGS: a quasi-Newton direction from the last m parameter and gradient differences."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks

# Optax's default line search (a module-level instance, as Optax's own default argument).
ZOOM_LINESEARCH = optax.scale_by_zoom_linesearch(
    max_linesearch_steps=20, initial_guess_strategy="one"
)


class ScaleByLbfgsState(NamedTuple):
    """Step count ``k``, the last parameters and updates, and the ring buffers of the last
    ``m`` differences ``s_i = θ_{i+1} − θ_i``, ``y_i = g_{i+1} − g_i`` (stacked on a leading
    axis of size ``m``) with their weights ``ρ_i = 1 / ⟨y_i, s_i⟩`` (Optax's field names)."""

    count: jax.Array
    params: optax.Params
    updates: optax.Updates
    diff_params_memory: optax.Updates
    diff_updates_memory: optax.Updates
    weights_memory: jax.Array


def precondition_by_lbfgs(g, s_memory, y_memory, rhos, identity_scale, memory_idx):
    """The two-loop recursion: ``H_k g`` for the L-BFGS inverse-Hessian estimate ``H_k``.

    Newest to oldest ``i``: ``α_i = ρ_i ⟨s_i, q⟩``, ``q ← q − α_i y_i``; then
    ``r = γ q``; oldest to newest: ``β_i = ρ_i ⟨y_i, r⟩``, ``r ← r + (α_i − β_i) s_i``.
    (Slots with ``ρ_i = 0``, not yet filled, leave ``q`` and ``r`` unchanged.)
    """
    memory_size = rhos.shape[0]
    indices = (memory_idx + jnp.arange(memory_size)) % memory_size

    def newest_to_oldest(q, i):
        s_i, y_i = jax.tree.map(lambda x: x[i], (s_memory, y_memory))
        alpha = rhos[i] * optax.tree.real(optax.tree.vdot(s_i, q))
        return optax.tree.cast_like(optax.tree.add_scale(q, -alpha, y_i), q), alpha

    q, alphas = jax.lax.scan(newest_to_oldest, g, indices, reverse=True)
    r = optax.tree.scale(identity_scale, q)

    def oldest_to_newest(r, i_alpha):
        i, alpha = i_alpha
        s_i, y_i = jax.tree.map(lambda x: x[i], (s_memory, y_memory))
        beta = rhos[i] * optax.tree.real(optax.tree.vdot(y_i, r))
        return optax.tree.cast_like(optax.tree.add_scale(r, alpha - beta, s_i), r), beta

    return jax.lax.scan(oldest_to_newest, r, (indices, alphas))[0]


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True):
    """The L-BFGS direction ``H_k g_k`` (Nocedal & Wright, Algorithm 7.4).

    At step ``k`` with parameters ``θ_k`` and update ``g_k``, first store the newest pair
    (from ``k = 1``; a pair with ``⟨y, s⟩ = 0`` gets ``ρ = 0``)::

        s = θ_k − θ_{k−1} ;  y = g_k − g_{k−1} ;  ρ = 1 / ⟨y, s⟩

    then ``u = H_k g_k`` by the two-loop recursion (``precondition_by_lbfgs``) from
    ``H⁰ = γ I``: ``γ = ⟨y, s⟩ / ‖y‖²`` (1 if ``y = 0``), ``min(1, 1/‖g₀‖)`` at ``k = 0``
    (``scale_init_precond``), else ``γ = 1``. Needs ``params``. Memory: ``2m + 2``
    parameter-sized buffers.

    Args:
      memory_size: m ≥ 1, the pairs kept.
      scale_init_precond: scale ``H⁰`` as above.

    Returns:
      A transformation with state ``ScaleByLbfgsState``.
    """
    if not isinstance(memory_size, int) or memory_size < 1:
        raise ValueError(
            f"memory_size={memory_size!r} is invalid: memory_size must be an int >= 1."
        )

    def init_fn(params):
        stacked = jax.tree.map(lambda p: jnp.zeros((memory_size,) + p.shape, p.dtype), params)
        return ScaleByLbfgsState(
            count=jnp.asarray(0, dtype=jnp.int32),
            params=optax.tree.zeros_like(params),
            updates=optax.tree.zeros_like(params),
            diff_params_memory=stacked,
            diff_updates_memory=stacked,
            weights_memory=jnp.zeros(memory_size),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_lbfgs needs params: call update(g, state, params).")
        memory_idx = state.count % memory_size
        previous_idx = (state.count - 1) % memory_size
        s = optax.tree.sub(params, state.params)
        y = optax.tree.sub(updates, state.updates)
        curvature = optax.tree.real(optax.tree.vdot(y, s))
        rho = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
        s, y, rho = jax.tree.map(
            lambda x: jnp.where(state.count > 0, x, jnp.zeros_like(x)), (s, y, rho)
        )
        s_memory, y_memory, rhos = jax.tree.map(
            lambda buffer, new: buffer.at[previous_idx].set(new),
            (state.diff_params_memory, state.diff_updates_memory, state.weights_memory),
            (s, y, rho),
        )
        if scale_init_precond:
            y_norm_sq = optax.tree.norm(y, squared=True)
            gamma = jnp.where(
                y_norm_sq > 0.0, optax.tree.real(optax.tree.vdot(y, s)) / y_norm_sq, 1.0
            )
            first = jnp.minimum(1.0, 1.0 / optax.tree.norm(jax.lax.stop_gradient(updates)))
            gamma = jnp.where(state.count > 0, gamma, first)
        else:
            gamma = 1.0
        direction = precondition_by_lbfgs(updates, s_memory, y_memory, rhos, gamma, memory_idx)
        return direction, ScaleByLbfgsState(
            count=optax.safe_increment(state.count),
            params=params,
            updates=updates,
            diff_params_memory=s_memory,
            diff_updates_memory=y_memory,
            weights_memory=rhos,
        )

    return optax.GradientTransformation(init_fn, update_fn)


def lbfgs(
    learning_rate: optax.ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: optax.GradientTransformation | None = ZOOM_LINESEARCH,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a zoom line search (strong Wolfe conditions), Optax's form.

    With the direction ``d_k = H_k g_k`` of ``scale_by_lbfgs`` and the step ``η_k`` the line
    search accepts (``learning_rate`` η, if given, scales the direction first)::

        θ ← θ − η_k η d_k

    Defaults equal ``optax.lbfgs`` (m = 10, the zoom line search of
    ``optax.scale_by_zoom_linesearch``, reused as is, ≤ 20 steps from a guess of 1).
    Optax's contract: the line search needs ``update(g, state, params, value=f, grad=g,
    value_fn=f_fn)`` (``optax.value_and_grad_from_state`` reuses its evaluations);
    ``linesearch=None`` makes it a plain ``update(g, state, params)``. A deterministic,
    full-batch method: a factory, not a registry entry (the engine neither passes the
    loss function nor suits a line search on mini-batches). State: ``2m + 2``
    parameter-sized buffers plus the line search's.

    Args:
      learning_rate: η ≥ 0, a float, a schedule, or None (η = 1).
      memory_size: m ≥ 1.
      scale_init_precond: scale the initial inverse Hessian by ``⟨y, s⟩/‖y‖²``.
      linesearch: a line search transformation, or None.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    References:
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 1989; Nocedal & Wright, "Numerical Optimization", 2006, Alg. 7.4.
    """
    if learning_rate is None:
        base_scaling = optax.scale(-1.0)
    else:
        _checks.learning_rate(learning_rate)
        base_scaling = optax.scale_by_learning_rate(learning_rate)
    return optax.chain(
        scale_by_lbfgs(memory_size, scale_init_precond),
        base_scaling,
        optax.identity() if linesearch is None else linesearch,
    )
