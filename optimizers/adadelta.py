"""ADADELTA: Adagrad's shrinking step replaced by a ratio of two moving RMS."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq


class ScaleByAdaDeltaState(NamedTuple):
    """Moving averages ``E[g²]`` and ``E[Δ²]`` (two buffers per parameter)."""

    e_g: optax.Updates
    e_x: optax.Updates


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> optax.GradientTransformation:
    """Rescale by ``RMS[Δ]_{t−1} / RMS[g]_t`` (Zeiler 2012, Algorithm 1).

    With gradient ``g``::

        E[g²] ← ρ E[g²] + (1 − ρ) |g|²
        Δ = √(E[Δ²] + ε) / √(E[g²] + ε) · g
        E[Δ²] ← ρ E[Δ²] + (1 − ρ) |Δ|²

    The paper's step is ``θ ← θ − Δ``; follow this block by a learning rate of 1 to get it.

    Args:
      rho: ρ in [0, 1).
      eps: ε ≥ 0.

    Returns:
      A transformation with state ``ScaleByAdaDeltaState``.
    """
    _checks.decay_rate("rho", rho)
    _checks.non_negative("eps", eps)

    def init_fn(params):
        return ScaleByAdaDeltaState(
            e_g=optax.tree.zeros_like(params), e_x=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        e_g = jax.tree.map(lambda g, e: (1 - rho) * abs_sq(g) + rho * e, updates, state.e_g)
        delta = jax.tree.map(
            lambda g, e_g, e_x: (jnp.sqrt(e_x + eps) / jnp.sqrt(e_g + eps)) * g,
            updates,
            e_g,
            state.e_x,
        )
        e_x = jax.tree.map(lambda d, e: (1 - rho) * abs_sq(d) + rho * e, delta, state.e_x)
        new_state = ScaleByAdaDeltaState(
            e_g=optax.tree.cast_like(e_g, state.e_g), e_x=optax.tree.cast_like(e_x, state.e_x)
        )
        return delta, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def adadelta(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """ADADELTA: per-coordinate steps with units of θ and no hand-tuned learning rate.

    With learning rate ``η``, gradient ``g`` and weight decay ``λ``::

        g ← g + λ θ
        E[g²] ← ρ E[g²] + (1 − ρ) |g|²
        Δ = √(E[Δ²] + ε) / √(E[g²] + ε) · g
        E[Δ²] ← ρ E[Δ²] + (1 − ρ) |Δ|²
        θ ← θ − η Δ

    Defaults equal ``optax.adadelta`` (ρ = 0.9, ε = 1e-6) except ``η``: Optax 0.2.8's
    default ``learning_rate=None`` applies ``+Δ`` and climbs the gradient; here η = 1.0,
    which is the paper's step ``θ ← θ − Δ``. The paper's setting is ρ = 0.95, ε = 1e-6
    (``adadelta_paper``). State per parameter: two buffers ``E[g²]``, ``E[Δ²]``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule (None is refused, see above).
      rho: ρ in [0, 1).
      eps: ε ≥ 0.
      weight_decay: λ ≥ 0, added to the gradient before the rescaling (Optax's order).
      weight_decay_mask: pytree of bools or callable selecting the decayed leaves.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho, eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def adadelta_paper(
    learning_rate: optax.ScalarOrSchedule = 1.0, rho: float = 0.95, eps: float = 1e-6
):
    """ADADELTA with Zeiler's settings (ρ = 0.95, ε = 1e-6, step ``θ ← θ − Δ``)."""
    return adadelta(learning_rate, rho=rho, eps=eps)
