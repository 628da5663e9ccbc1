"""A small jitted trainer for warm-started continual training (with an EWC penalty).

The shared engine (``experiments.engine``) trains from scratch on a fixed dataset; continual
training needs a warm start from the deployed weights, a changing dataset (new users plus a
replay buffer) and an extra loss term (EWC), so this module keeps its own step, written on
the same functional view: ``graphdef, params = nnx.split(model)``, ``nnx.merge`` inside jit.

The loss of a minibatch ``(x, y)`` of size ``B`` is

    L(θ) = −(1/B) Σ_b log softmax(f_θ(x_b))[y_b]  +  (λ/2) Σ_k F_k (θ_k − θ*_k)²

with ``F`` the diagonal Fisher information and ``θ*`` the anchor weights (λ = 0: plain
fine-tuning). Minibatches are drawn uniformly with replacement from the first ``n`` rows of
a padded array, so array shapes only take a few bucketed sizes and the step compiles once per
(optimizer, batch size, bucket); the number of steps is traced (a ``lax.fori_loop``).
The learning rate lives in the optimizer state (``optax.inject_hyperparams``), so the same
compiled step serves every learning rate, and a population of learning rates trains at once
under ``jax.vmap``.
"""

from __future__ import annotations

import functools
import math
import resource
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import models
import optimizers


def make_model(input_shape, num_classes=10, widths=(100, 100), dropout=0.0, seed=0):
    """The project's MLP (``models.build("mlp", ...)``): ReLU hidden layers, dropout after each."""
    return models.build(
        "mlp", tuple(input_shape), num_classes, seed=seed, widths=tuple(widths), dropout=dropout
    )


# ----------------------------------------------------------------------------- optimizers


@functools.cache
def make_tx(name: str) -> optax.GradientTransformation:
    """One transformation per name from the project's registry, its learning rate a
    hyperparameter in the state (ValueError naming the valid names if unknown)."""
    return optax.inject_hyperparams(optimizers.get_factory(name))(learning_rate=0.0)


# ----------------------------------------------------------------------------- training


def _bucket(n: int, minimum: int = 64) -> int:
    """The smallest power of two ≥ max(n, minimum): padded sizes, so few compilations."""
    return 1 << max(0, max(n, minimum) - 1).bit_length()


def pad(x: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, *x.shape[1:]), x.dtype)
    out[: len(x)] = x
    return out


def _loss(graphdef, params, x, y, key, fisher, anchor, ewc_lambda):
    model = nnx.merge(graphdef, params)
    logits = model(x, train=True, rngs=key)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    penalty = sum(
        jnp.sum(f * (p - a) ** 2)
        for f, p, a in zip(*(jax.tree.leaves(t) for t in (fisher, params, anchor)), strict=True)
    )
    return ce + 0.5 * ewc_lambda * penalty


def _train(graphdef, tx, batch_size, params, learning_rate, x, y, n, num_steps, key, ewc):
    fisher, anchor, ewc_lambda = ewc
    opt_state = tx.init(params)  # a fresh optimizer state for every fit
    opt_state.hyperparams["learning_rate"] = learning_rate

    def step(i, carry):
        params, opt_state, loss_sum = carry
        k_idx, k_drop = jax.random.split(jax.random.fold_in(key, i))
        idx = jax.random.randint(k_idx, (batch_size,), 0, n)
        loss, grads = jax.value_and_grad(_loss, argnums=1)(
            graphdef, params, x[idx], y[idx], k_drop, fisher, anchor, ewc_lambda
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss_sum + loss

    params, _, loss_sum = jax.lax.fori_loop(0, num_steps, step, (params, opt_state, jnp.zeros(())))
    return params, loss_sum / jnp.maximum(num_steps, 1)


_train_jit = jax.jit(_train, static_argnums=(0, 1, 2))
_train_population = jax.jit(
    jax.vmap(_train, in_axes=(None, None, None, None, 0, None, None, None, None, 0, None)),
    static_argnums=(0, 1, 2),
)


def _ewc_args(ewc, params):
    """(F, θ*, λ); zeros (plain fine-tuning) when ``ewc`` is None. Host arrays: no eager ops."""
    if ewc is None:
        zeros = jax.tree.map(lambda p: np.zeros(p.shape, p.dtype), params)
        return zeros, params, np.float32(0.0)
    fisher, anchor, ewc_lambda = ewc
    return fisher, anchor, np.float32(ewc_lambda)


def _data(x, y, capacity):
    size = _bucket(len(y), max(64, capacity))
    return pad(x, size), pad(y, size)


def train(
    graphdef,
    params,
    optimizer,
    learning_rate,
    x,
    y,
    *,
    batch_size,
    epochs,
    seed,
    ewc=None,
    capacity=0,
):
    """Train from ``params`` for ``epochs × ⌈n/batch_size⌉`` steps; returns (params, loss).

    Data are padded to at least ``capacity`` rows, so calls with different ``n`` share one
    compiled step. ``ewc = (F, θ*, λ)`` adds the EWC penalty.
    """
    n = len(y)
    steps = epochs * math.ceil(n / batch_size)
    new_params, loss = _train_jit(
        graphdef,
        make_tx(optimizer),
        batch_size,
        params,
        np.float32(learning_rate),
        *_data(x, y, capacity),
        n,
        steps,
        jax.random.key(seed),
        _ewc_args(ewc, params),
    )
    return new_params, float(loss)


def train_population(
    graphdef,
    params,
    optimizer,
    learning_rates,
    x,
    y,
    *,
    batch_size,
    epochs,
    seed,
    ewc=None,
    capacity=0,
):
    """Train one warm-started copy per learning rate at once (``jax.vmap``).

    Returns the list of trained parameter trees (host arrays) and the mean losses.
    """
    n = len(y)
    steps = epochs * math.ceil(n / batch_size)
    keys = jax.random.split(jax.random.key(seed), len(learning_rates))
    new_params, loss = _train_population(
        graphdef,
        make_tx(optimizer),
        batch_size,
        params,
        np.asarray(learning_rates, np.float32),
        *_data(x, y, capacity),
        n,
        steps,
        keys,
        _ewc_args(ewc, params),
    )
    new_params = jax.device_get(new_params)
    members = [jax.tree.map(lambda p, i=i: p[i], new_params) for i in range(len(learning_rates))]
    return members, np.asarray(loss)


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef, params, x):
    return nnx.merge(graphdef, params)(x, train=False).argmax(-1)


def predict(graphdef, params, x: np.ndarray) -> np.ndarray:
    """Predicted classes (bucketed shapes, so few compilations)."""
    if len(x) == 0:
        return np.zeros(0, np.int32)
    size = _bucket(len(x), 512)
    return np.asarray(_predict(graphdef, params, pad(x, size)))[: len(x)]


def accuracy(graphdef, params, x, y) -> float:
    return float(np.mean(predict(graphdef, params, x) == y)) if len(y) else float("nan")


@functools.partial(jax.jit, static_argnums=0)
def _fisher(graphdef, params, x, y, mask):
    def sample_grad(xi, yi):
        def log_lik(p):
            logits = nnx.merge(graphdef, p)(xi[None], train=False)
            return -optax.softmax_cross_entropy_with_integer_labels(logits, yi[None]).sum()

        return jax.grad(log_lik)(params)

    grads = jax.vmap(sample_grad)(x, y)
    weights = mask / jnp.maximum(mask.sum(), 1.0)
    return jax.tree.map(lambda g: jnp.tensordot(weights, g**2, axes=1), grads)


def diagonal_fisher(graphdef, params, x, y, max_samples: int = 256):
    """Empirical diagonal Fisher ``F_k = E_(x,y)[(∂ log p(y|x; θ)/∂θ_k)²]``."""
    x, y = x[:max_samples], y[:max_samples]
    size = _bucket(len(y), max_samples)
    mask = (np.arange(size) < len(y)).astype(np.float32)
    return jax.device_get(_fisher(graphdef, params, pad(x, size), pad(y, size), mask))


# ----------------------------------------------------------------------------- bookkeeping


def flatten(tree) -> dict[str, np.ndarray]:
    """A pytree of arrays as ``{path: array}`` (for ``.npz`` files)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def unflatten(template, flat: dict[str, np.ndarray]):
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    missing = [jax.tree_util.keystr(p) for p, _ in paths if jax.tree_util.keystr(p) not in flat]
    if missing:
        raise ValueError(f"weights file lacks {missing[:3]}")
    return jax.tree_util.tree_unflatten(treedef, [flat[jax.tree_util.keystr(p)] for p, _ in paths])


def peak_memory_mb() -> float:
    """Peak resident memory of this process (device peak bytes where the backend has them)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
