"""Skip updates whose gradients are NaN or infinite (``optax.apply_if_finite`` semantics)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class SkipNonFiniteState(NamedTuple):
    """How many steps were skipped, and the wrapped optimizer's state.

    Attributes:
      consecutive_skips: non-finite steps in a row up to now (0 after a finite step).
      last_finite: whether the last gradient was finite.
      total_skips: non-finite steps since ``init``.
      inner_state: the wrapped transformation's state (unchanged by a skipped step).
    """

    consecutive_skips: jax.Array
    last_finite: jax.Array
    total_skips: jax.Array
    inner_state: optax.OptState


def all_finite(tree) -> jax.Array:
    """``True`` iff every element of every leaf of ``tree`` is finite (``True`` for no leaves)."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in leaves] or [True]))


def skip_non_finite(
    inner: optax.GradientTransformation, max_consecutive_errors: int = 5
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that a step with a non-finite gradient changes nothing.

    With gradient ``g`` and ``k`` the number of non-finite gradients in a row so far::

        finite(g)  ⇒  k ← 0,      (u, s) ← inner.update(g, s)
        ¬finite(g) ⇒  k ← k + 1,  (u, s) ← (0, s)          if k ≤ max_consecutive_errors
                                  (u, s) ← inner.update(g, s)   otherwise (give up)

    The same semantics as ``optax.apply_if_finite`` (and equal to it update for update),
    with the state fields named for what they count and an empty pytree accepted.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: how many non-finite gradients in a row are skipped before
        the wrapper gives up and lets them through (so a run that is truly diverging is
        not hidden forever).

    Returns:
      A transformation with state :class:`SkipNonFiniteState`.
    """
    if not isinstance(max_consecutive_errors, int) or max_consecutive_errors < 0:
        raise ValueError(
            f"max_consecutive_errors={max_consecutive_errors!r} is invalid: "
            "it must be an integer >= 0."
        )
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return SkipNonFiniteState(
            consecutive_skips=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_skips=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        consecutive = jnp.where(finite, 0, optax.safe_increment(state.consecutive_skips))
        updates, inner_state = jax.lax.cond(
            finite | (consecutive > max_consecutive_errors),
            lambda: inner.update(updates, state.inner_state, params, **extra_args),
            lambda: (optax.tree.zeros_like(updates), state.inner_state),
        )
        total = jnp.where(finite, state.total_skips, optax.safe_increment(state.total_skips))
        return updates, SkipNonFiniteState(consecutive, finite, total, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
