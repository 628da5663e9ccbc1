"""MADGRAD: momentumized, adaptive, dual-averaged gradients (Defazio & Jelassi 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByMadgradState(NamedTuple):
    """Step count ``k``, the weighted sums ``ν`` (of ``g²``) and ``s`` (of ``g``), and ``x₀``."""

    count: jax.Array
    grad_sum_sq: optax.Updates
    s: optax.Updates
    x0: optax.Params


def scale_by_madgrad(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
    *,
    eps_in_learning_rate: bool = True,
) -> optax.GradientTransformation:
    """MADGRAD's dual-averaging step, returned as an update ``x_{k+1} − x_k``.

    With gradient ``g`` at ``x_k``, step ``k = 0, 1, ...``, learning rate ``γ_k`` and
    momentum ``β`` (the paper's ``c = 1 − β``)::

        λ = (γ_k + ε) √(k + 1)       (eps_in_learning_rate=False: λ = γ_k √(k + 1))
        ν ← ν + λ g² ;   s ← s + λ g
        z = x₀ − s / (∛ν + ε)
        u = (1 − β) z + β x_k − x_k

    The learning rate is part of the block (it weights the sums), so it is not chained
    after it. Needs ``params`` in ``update``.

    Args:
      learning_rate: γ ≥ 0, a float or an Optax schedule of the step ``k``.
      momentum: β in [0, 1).
      eps: ε ≥ 0, in the denominator (and added to γ, see above).
      eps_in_learning_rate: add ε to γ as Optax and the authors' PyTorch code do (True),
        or use γ as in the paper's Algorithm 1 (False).

    Returns:
      A transformation with state ``ScaleByMadgradState``.
    """
    _checks.learning_rate(learning_rate)
    _checks.decay_rate("momentum", momentum)
    _checks.non_negative("eps", eps)

    def init_fn(params):
        return ScaleByMadgradState(
            count=jnp.zeros([], jnp.int32),
            grad_sum_sq=optax.tree.zeros_like(params),
            s=optax.tree.zeros_like(params),
            x0=jax.tree.map(jnp.copy, params),  # a copy: params and state can both be donated
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if eps_in_learning_rate:
            gamma = gamma + eps
        lam = gamma * jnp.sqrt(state.count + 1)
        nu = jax.tree.map(lambda v, g: v + (lam * g**2).astype(g.dtype), state.grad_sum_sq, updates)
        s = jax.tree.map(lambda s, g: s + (lam * g).astype(g.dtype), state.s, updates)
        z = jax.tree.map(lambda x0, s, v: x0 - s / (jnp.cbrt(v) + eps), state.x0, s, nu)
        u = jax.tree.map(lambda z, x: (1 - momentum) * z + momentum * x - x, z, params)
        count = optax.safe_increment(state.count)
        return u, ScaleByMadgradState(count, nu, s, state.x0)

    return optax.GradientTransformation(init_fn, update_fn)


def madgrad(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> optax.GradientTransformation:
    """MADGRAD: dual averaging with a cube-root AdaGrad denominator and momentum.

    With learning rate ``γ``, L2 weight decay ``λ_wd``, step ``k`` and ``g`` the gradient
    plus ``λ_wd x_k``::

        λ = (γ + ε) √(k + 1) ;   ν ← ν + λ g² ;   s ← s + λ g
        z = x₀ − s / (∛ν + ε)
        x_{k+1} = (1 − β) z + β x_k

    Defaults equal ``optax.contrib.madgrad`` (β = 0.9, ε = 1e-6, no decay). Optax, like
    the authors' PyTorch code, adds ε to γ, so even γ = 0 moves the parameters (by about
    ``(1 − β) ε^⅔ |g|^⅓``); the paper's Algorithm 1 uses γ itself: ``madgrad_paper``.
    State per parameter: ``ν``, ``s`` and ``x₀``.

    Args:
      learning_rate: γ ≥ 0, a float or an Optax schedule.
      momentum: β in [0, 1) (the paper's ``c = 1 − β``).
      weight_decay: λ_wd ≥ 0, added to the gradient (L2, as in Optax).
      eps: ε ≥ 0.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
      Averaged Gradient Method for Stochastic Optimization", JMLR 2022 (arXiv:2101.11075).
    """
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate, momentum, eps),
    )


def madgrad_paper(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> optax.GradientTransformation:
    """MADGRAD as in the paper's Algorithm 1: ``λ = γ √(k + 1)``, without Optax's ``γ + ε``."""
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate, momentum, eps, eps_in_learning_rate=False),
    )
