"""The variational autoencoder of the Adam paper's bias-correction experiment."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from optlab.models._common import as_shape, check_input


class VAE(nnx.Module):
    """Variational autoencoder (Kingma & Welling 2014) as in Kingma & Ba 2015, Fig. 4.

    Encoder ``x (784) → 500 softplus → (μ, log σ²)`` of a 50-d diagonal Gaussian
    ``q(z|x)``; prior ``p(z) = N(0, I)``; decoder ``z → 500 softplus → 784`` Bernoulli
    logits of ``p(x|z)``. Pixel intensities in [0, 1] are the Bernoulli targets.

    Call contract, unlike the classifiers:
      * ``model.negative_elbo(x, key)`` → ``(N,)``, the training loss per example,
        ``−ELBO(x) = −log p(x|z) + KL(q(z|x) ‖ p(z))`` with one reparameterised sample
        ``z = μ + σ·ε``, ``ε ~ N(0, I)`` drawn from the PRNG ``key``, and the KL in closed
        form ``−½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)``. Minimise its mean.
      * ``model(x, train=False)`` → reconstruction logits of ``x``'s shape, decoding the
        posterior mean ``z = μ``; deterministic, ``train`` and ``rngs`` are accepted for the
        common signature and ignored (the VAE has no dropout or BatchNorm).
      * ``encode(x)`` → ``(μ, log σ²)``; ``decode(z)`` → logits ``(N, *input_shape)``.

    Args:
      input_shape: one example's shape, e.g. ``(28, 28, 1)``; ``(N, D)`` inputs accepted.
      num_classes: unused (the VAE has no classes); accepted so ``models.build`` treats
        every model alike.
      hidden: width of the encoder's and the decoder's hidden layers.
      latent_dim: dimension of ``z``.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int | None = None,
        *,
        hidden: int = 500,
        latent_dim: int = 50,
        rngs: nnx.Rngs,
    ):
        del num_classes
        self.input_shape = as_shape(input_shape)
        size = math.prod(self.input_shape)
        self.encoder = nnx.Linear(size, hidden, rngs=rngs)
        self.mean = nnx.Linear(hidden, latent_dim, rngs=rngs)
        self.log_variance = nnx.Linear(hidden, latent_dim, rngs=rngs)
        self.decoder = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.reconstruction = nnx.Linear(hidden, size, rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(μ, log σ²)`` of ``q(z|x)``, each ``(N, latent_dim)``."""
        check_input("VAE", x, self.input_shape, flat_ok=True)
        h = nnx.softplus(self.encoder(x.reshape(x.shape[0], -1)))
        return self.mean(h), self.log_variance(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits of ``p(x|z)``, shape ``(N, *input_shape)``."""
        logits = self.reconstruction(nnx.softplus(self.decoder(z)))
        return logits.reshape(z.shape[0], *self.input_shape)

    def negative_elbo(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """``−ELBO`` per example, ``(N,)``, with one sample of ``z`` drawn from ``key``."""
        mean, log_variance = self.encode(x)
        epsilon = jax.random.normal(key, mean.shape, mean.dtype)
        z = mean + jnp.exp(0.5 * log_variance) * epsilon
        logits = self.decode(z).reshape(x.shape[0], -1)
        targets = x.reshape(x.shape[0], -1)
        reconstruction = optax.sigmoid_binary_cross_entropy(logits, targets).sum(axis=-1)
        kl = -0.5 * jnp.sum(1 + log_variance - mean**2 - jnp.exp(log_variance), axis=-1)
        return reconstruction + kl

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        del train, rngs
        mean, _ = self.encode(x)
        return self.decode(mean).reshape(x.shape)
