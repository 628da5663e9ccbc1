"""NovoGrad: Adam-like steps normalised by a per-layer second moment (Ginsburg et al. 2019)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class ScaleByNovogradState(NamedTuple):
    """Step count, the momentum ``m`` (per parameter) and ``v`` (one scalar per leaf)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """NovoGrad's rescaling, per leaf (layer) ``l``.

    With gradient leaf ``g`` and parameter leaf ``θ``, at the first step::

        v = ‖g‖² ;   m = g / (√(v + ε_root) + ε) + λ θ

    and afterwards::

        v ← β₂ v + (1 − β₂) ‖g‖²
        m ← β₁ m + g / (√(v + ε_root) + ε) + λ θ
        u = m

    Needs ``params`` in ``update``.

    Args:
      b1, b2, eps, eps_root, weight_decay: as in ``novograd``.

    Returns:
      A transformation with state ``ScaleByNovogradState``.
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)
    _checks.non_negative("weight_decay", weight_decay)

    def init_fn(params):
        return ScaleByNovogradState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=jax.tree.map(lambda p: jnp.asarray(0.0, dtype=p.dtype), params),
        )

    def normalised(g, theta, v):
        return g / (jnp.sqrt(v + eps_root) + eps) + weight_decay * theta

    def first_v(grads, v):
        return jax.tree.map(lambda g, v: (jnp.linalg.norm(g) ** 2).astype(v.dtype), grads, v)

    def next_v(grads, v):
        return jax.tree.map(lambda g, v: (1 - b2) * jnp.linalg.norm(g) ** 2 + b2 * v, grads, v)

    def first_m(grads, params, m, v):
        del m
        return jax.tree.map(normalised, grads, params, v)

    def next_m(grads, params, m, v):
        return jax.tree.map(lambda g, p, m, v: b1 * m + normalised(g, p, v), grads, params, m, v)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_novograd needs params: call update(g, state, params).")
        t = optax.safe_increment(state.count)
        # lax.cond, as Optax: the two branches fuse (and round) differently from a select.
        v = jax.lax.cond(t == 1, first_v, next_v, updates, state.nu)
        m = jax.lax.cond(t == 1, first_m, next_m, updates, params, state.mu, v)
        return m, ScaleByNovogradState(count=t, mu=m, nu=v)

    return optax.GradientTransformation(init_fn, update_fn)


def novograd(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """NovoGrad: SGD momentum on gradients normalised by a per-layer running ‖g‖².

    With learning rate ``η``, weight decay ``λ`` and, per leaf (layer), gradient ``g``,
    parameters ``θ``::

        v ← β₂ v + (1 − β₂) ‖g‖²                   (v = ‖g‖² at the first step)
        m ← β₁ m + g / (√(v + ε_root) + ε) + λ θ    (m = that sum at the first step)
        θ ← θ − η m

    ``v`` is one scalar per leaf, so the state is about one buffer (``m``) per parameter.
    The momentum adds the normalised gradient without a ``(1 − β₁)`` factor, as in the
    paper. Defaults equal ``optax.novograd`` (β₂ = 0.25, ε = 1e-6). Needs ``params``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root.
      weight_decay: λ ≥ 0 (a number: it sits inside the momentum).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", arXiv:1905.11286, 2019.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
