"""What the continual loop and the study train with: the model, the optimizers, and how one
warm-started fit is put to the engine; plus predictions, the Fisher and weight files.

Training itself is :func:`experiments.engine.fit_population`: every fit starts from the
deployed weights (``engine.WarmStart``) with a fresh optimizer state, on a training set
that changes between fits (new users plus a replay buffer), padded to a power-of-two bucket
(``engine.padded``: one compilation per bucket, not per size). Each epoch is a fresh random
permutation of the ``n`` examples cut into ``n // B`` minibatches of ``B = min(batch size, n)``
(:func:`train_config`). The objective is the cross-entropy, with the EWC penalty when
consolidating (``engine.ElasticWeightConsolidation``)::

    L(θ) = −(1/B) Σ_b log softmax(f_θ(x_b))[y_b]  +  (λ/2) Σ_k F_k (θ_k − θ*_k)²

Weights are the engine's split of the model, ``(params, model_state)`` (:class:`Weights`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from optlab import models
from optlab.experiments import engine, tuning

PyTree = Any


class Weights(NamedTuple):
    """A model's weights as the engine splits them: ``nnx.Param`` state and the rest."""

    params: PyTree
    model_state: PyTree


def make_model(input_shape, num_classes=10, widths=(100, 100), dropout=0.0, seed=0):
    """The project's MLP (``models.build("mlp", ...)``): ReLU hidden layers, dropout after each."""
    return models.build(
        "mlp", tuple(input_shape), num_classes, seed=seed, widths=tuple(widths), dropout=dropout
    )


def weights_of(model: nnx.Module) -> Weights:
    """``(params, model_state)`` of ``model`` (``engine.split_model``)."""
    return Weights(*engine.split_model(model)[1:])


# ----------------------------------------------------------------------------- training


@functools.cache
def make_tx(name: str):
    """``tuning.optimizer_factory(name)`` (ValueError naming the valid names if unknown);
    ONE object per name, so repeated fits reuse one compiled epoch."""
    return tuning.optimizer_factory(name)


def train_config(num_train: int, batch_size: int, epochs: int) -> engine.TrainConfig:
    """``epochs`` passes of ``n // B`` steps; a set smaller than ``B`` is one batch of ``n``.

    Raises:
      ValueError: if there is nothing to train on (``n = 0``).
    """
    if num_train < 1:
        raise ValueError("the training set is empty: nothing to train on")
    return engine.TrainConfig(epochs=epochs, batch_size=min(batch_size, num_train))


def members(result: engine.PopulationResult) -> list[Weights]:
    """Each member's final weights (host arrays), in population order."""
    state = jax.device_get(result.state)
    return [Weights(*jax.tree.map(lambda leaf, i=i: leaf[i], (state.params, state.model_state)))
            for i in range(len(state.step))]  # fmt: skip


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef, weights, x):
    return nnx.merge(graphdef, *weights)(x, train=False).argmax(-1)


def predict(graphdef, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Predicted classes (inputs padded to :func:`engine.padded`'s buckets: few compilations)."""
    if len(x) == 0:
        return np.zeros(0, np.int32)
    padded = engine.padded({"x": x}, minimum=512)
    return np.asarray(_predict(graphdef, weights, padded.train["x"]))[: len(x)]


def accuracy(graphdef, weights: Weights, x, y) -> float:
    """The share of ``x`` classified as ``y`` (NaN for an empty set)."""
    return float(np.mean(predict(graphdef, weights, x) == y)) if len(y) else float("nan")


@functools.partial(jax.jit, static_argnums=0)
def _fisher(graphdef, weights, x, y, mask):
    def sample_grad(xi, yi):
        def log_lik(params):
            logits = nnx.merge(graphdef, params, weights.model_state)(xi[None], train=False)
            return -optax.softmax_cross_entropy_with_integer_labels(logits, yi[None]).sum()

        return jax.grad(log_lik)(weights.params)

    grads = jax.vmap(sample_grad)(x, y)
    share = mask / jnp.maximum(mask.sum(), 1.0)
    return jax.tree.map(lambda g: jnp.tensordot(share, g**2, axes=1), grads)


def diagonal_fisher(graphdef, weights: Weights, x, y, max_samples: int = 256):
    """Empirical diagonal Fisher ``F_k = E_(x,y)[(∂ log p(y|x; θ)/∂θ_k)²]`` over the first
    ``max_samples`` examples: a tree shaped like ``weights.params``."""
    x, y = x[:max_samples], y[:max_samples]
    padded = engine.padded({"x": x, "y": y}, minimum=max_samples)
    mask = (np.arange(len(padded.train["y"])) < len(y)).astype(np.float32)
    return jax.device_get(_fisher(graphdef, weights, padded.train["x"], padded.train["y"], mask))


# ----------------------------------------------------------------------------- weight files


def flatten(tree) -> dict[str, np.ndarray]:
    """A pytree of arrays as ``{path: array}`` (for ``.npz`` files)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def unflatten(template, flat: dict[str, np.ndarray]):
    """Inverse of :func:`flatten` on ``template``'s structure (ValueError naming missing paths)."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    missing = [jax.tree_util.keystr(p) for p, _ in paths if jax.tree_util.keystr(p) not in flat]
    if missing:
        raise ValueError(f"weights file lacks {missing[:3]}")
    return jax.tree_util.tree_unflatten(treedef, [flat[jax.tree_util.keystr(p)] for p, _ in paths])
