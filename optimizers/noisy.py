"""Noisy SGD: gradient descent with annealed Gaussian gradient noise (Neelakantan et al.)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks


class AddNoiseState(NamedTuple):
    """Step count and the key data (uint32) of the PRNG key of the next draw.

    Optax keeps a typed key (``key<fry>``); ours keeps its raw data, so that the state is
    plain arrays (NumPy, checkpoints, byte counts) and draws the same numbers.
    """

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
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=jax.random.key_data(_key(key)))

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        standard_deviation = jnp.sqrt(eta / t**gamma)
        rng_key, sample_key = jax.random.split(jax.random.wrap_key_data(state.rng_key))
        noise = optax.tree.random_like(sample_key, updates, jax.random.normal)
        u = jax.tree.map(lambda g, z: g + standard_deviation * z, updates, noise)
        new_state = AddNoiseState(count=t, rng_key=jax.random.key_data(rng_key))
        return optax.tree.cast_like(u, updates), new_state

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
    it to draw independent noise. State: the count and the key's data (uint32, where
    Optax keeps a typed key; the draws are the same), no parameter-sized buffer.

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
