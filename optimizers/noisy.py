"""Noisy SGD: gradient descent with annealed Gaussian gradient noise (Neelakantan et al.)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class AddNoiseState(NamedTuple):
    """Step count and the PRNG key of the next draw (a typed key, as in Optax)."""

    count: jax.Array
    rng_key: jax.Array


def _key(key) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.key(key)


def add_noise(eta: float = 0.01, gamma: float = 0.55, key=0) -> optax.GradientTransformation:
    """Add Gaussian noise of variance ``η_n / tᵞ`` to the update.

    With update ``g``, step ``t`` and ``z ~ N(0, I)`` (one key split per leaf)::

        u = g + √(η_n / tᵞ) z

    Args:
      eta: η_n ≥ 0, the initial noise variance.
      gamma: γ ≥ 0, the variance's decay exponent.
      key: an int seed or a JAX PRNG key.

    Returns:
      A transformation with state ``AddNoiseState``.
    """
    _checks.non_negative("eta", eta)
    _checks.non_negative("gamma", gamma)

    def init_fn(params):
        del params
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=_key(key))

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        standard_deviation = jnp.sqrt(eta / t**gamma)
        rng_key, sample_key = jax.random.split(state.rng_key)
        noise = optax.tree.random_like(sample_key, updates, jax.random.normal)
        u = jax.tree.map(lambda g, z: g + standard_deviation * z, updates, noise)
        return optax.tree.cast_like(u, updates), AddNoiseState(count=t, rng_key=rng_key)

    return optax.GradientTransformation(init_fn, update_fn)


def noisy_sgd(
    learning_rate: optax.ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key=0,
) -> optax.GradientTransformation:
    """SGD on gradients with annealed Gaussian noise.

    With learning rate ``η``, gradient ``g``, step ``t`` and ``z ~ N(0, I)``::

        θ ← θ − η (g + √(η_n / tᵞ) z)

    Equals ``optax.noisy_sgd(learning_rate, eta, gamma, key)`` (η_n = 0.01, γ = 0.55,
    the paper's values). Optax's ``key=None`` warns and uses 0; ours defaults to 0
    without a warning. The noise is the same for every run given the same ``key``: vary
    it to draw independent noise. State: the count and the key, no parameter-sized buffer.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      eta: η_n ≥ 0, the initial noise variance.
      gamma: γ ≥ 0, the decay exponent of the variance.
      key: an int seed or a JAX PRNG key.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
      Networks", arXiv:1511.06807, 2015.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(add_noise(eta, gamma, key), optax.scale_by_learning_rate(learning_rate))
