"""Adam with its bias correction switchable, and a population trainer for the VAE (Fig. 4).

``optimizers.adam`` always corrects; the paper's Fig. 4 compares it with the uncorrected
update (what RMSProp with momentum does). ``adam_with_correction(α, β1, β2, c)`` covers both
with one code path, and ``c`` may be a traced 0/1 scalar, so one ``vmap`` trains the whole
grid β1 × β2 × α × {with, without}.

The VAE is not a classifier (its loss is the negative ELBO, see ``models.vae.VAE``), so
``engine.fit_population`` cannot train it; :func:`fit_vae_population` is the same design
(members stacked P-major, one jitted ``vmap`` of a ``lax.scan`` epoch, non-finite members
frozen and reported) around ``model.negative_elbo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import engine


class ScaleByAdamCorrectionState(NamedTuple):
    """Step count ``t`` and the moments ``m``, ``v``."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adam_with_correction(
    b1=0.9, b2=0.999, eps: float = 1e-8, correction=1.0
) -> optax.GradientTransformation:
    """Adam's rescaling with the bias correction weighted by ``c`` (Kingma & Ba, Sec. 3).

    With gradient ``g`` and step ``t``::

        m ← β1 m + (1 − β1) g ;   v ← β2 v + (1 − β2) g²
        m̂ = m / (1 − c β1ᵗ) ;    v̂ = v / (1 − c β2ᵗ)
        u = m̂ / (√v̂ + ε)

    ``c = 1`` is Algorithm 1 (``optimizers.adam``); ``c = 0`` is Adam without correction,
    i.e. RMSProp (decay β2, ε outside the root) on an EWMA momentum ``m``. ``b1``, ``b2``
    and ``c`` may be traced scalars (population training vmaps over them).
    """

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return ScaleByAdamCorrectionState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        v = jax.tree.map(lambda g, v: (1 - b2) * g * g + b2 * v, updates, state.nu)
        tf = t.astype(jnp.float32)
        m_scale = 1 / (1 - correction * b1**tf)
        v_scale = 1 / (1 - correction * b2**tf)
        u = jax.tree.map(
            lambda m, v: (m_scale * m / (jnp.sqrt(v_scale * v) + eps)).astype(m.dtype), m, v
        )
        return u, ScaleByAdamCorrectionState(t, m, v)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_with_correction(
    learning_rate, b1=0.9, b2=0.999, eps: float = 1e-8, correction=1.0
) -> optax.GradientTransformation:
    """``θ ← θ − α m̂ / (√v̂ + ε)`` with correction weight ``c`` (see the scale block)."""
    if isinstance(correction, int | float) and correction not in (0, 1):
        raise ValueError(f"correction must be 0 or 1 (or a traced 0/1 scalar), got {correction!r}")
    return optax.chain(
        scale_by_adam_with_correction(b1, b2, eps, correction),
        optax.scale_by_learning_rate(learning_rate),
    )


class VAEPopulationResult(NamedTuple):
    histories: dict[str, np.ndarray]  # "train_loss", "test_loss" -> (P, S, epochs)
    diverged: np.ndarray  # (P, S)
    compile_time_s: float
    steps_per_epoch: int


def _negative_elbo_mean(params, rest, graphdef, x, key):
    model = nnx.merge(graphdef, params, rest, copy=True)
    return model.negative_elbo(x, key).mean()


def _make_vae_epoch(graphdef, make_tx, batch_size: int, num_train: int):
    """``(state, hparams, x) -> (state, losses, finite)`` for one member and one epoch."""
    steps = num_train // batch_size
    grad_fn = jax.value_and_grad(_negative_elbo_mean)

    def epoch(state: engine.TrainState, hp, x):
        tx = make_tx(**hp)
        key, perm_key = jax.random.split(state.key)
        batches = jax.random.permutation(perm_key, num_train)[: steps * batch_size]

        def body(carry, batch):
            state, healthy = carry
            step_key = jax.random.fold_in(key, state.step)
            loss, grads = grad_fn(state.params, state.model_state, graphdef, x[batch], step_key)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            new = state._replace(
                params=optax.apply_updates(state.params, updates),
                opt_state=opt_state,
                step=state.step + 1,
            )
            finite = jnp.isfinite(loss) & jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
            )
            keep = healthy & finite
            state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
            return (state, keep), loss

        (state, healthy), losses = jax.lax.scan(
            body, (state, jnp.array(True)), batches.reshape(steps, batch_size)
        )
        return state._replace(key=key, epoch=state.epoch + 1), losses, healthy

    return epoch


def _make_vae_eval(graphdef, chunk: int):
    """Mean −ELBO over a test set (one fixed sample of z per example), in chunks."""

    def evaluate(params, rest, x_chunks, key):
        model = nnx.merge(graphdef, params, rest, copy=True)
        totals = jax.lax.map(lambda x: model.negative_elbo(x, key).sum(), x_chunks)
        return totals.sum() / (x_chunks.shape[0] * x_chunks.shape[1])

    return evaluate


def fit_vae_population(
    make_model: Callable[[jax.Array], nnx.Module],
    make_tx: Callable[..., optax.GradientTransformation],
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    x_train: np.ndarray,
    x_test: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 100,
    eval_chunk: int = 500,
    on_epoch: Callable[[int], None] | None = None,
) -> VAEPopulationResult:
    """Train P configurations × S seeds of a VAE at once under one ``vmap``.

    Member ``(p, s)``: ``make_model(engine.seed_keys(seeds[s])[0])`` trained with
    ``make_tx(**{k: hparams[k][p]})`` on minibatches of ``x_train`` (reshuffled each epoch
    from ``seed_keys(seeds[s])[1]``), minimising the mean −ELBO. A member whose loss or
    gradients become non-finite keeps its last good state and is reported as diverged
    (its metrics are NaN from that epoch on).

    Returns:
      ``histories["train_loss"]`` (mean minibatch −ELBO of the epoch) and
      ``histories["test_loss"]`` (−ELBO on ``x_test``, its size cut to whole chunks of
      ``eval_chunk``), each ``(P, S, epochs)``.
    """
    hp = {name: np.asarray(values, np.float32) for name, values in hparams.items()}
    lengths = {len(v) for v in hp.values()}
    if len(lengths) != 1:
        raise ValueError(f"hparams must be lists of one common length, got {lengths}")
    if batch_size > len(x_train):
        raise ValueError(f"batch_size {batch_size} > training set size {len(x_train)}")
    num_configs, num_seeds = lengths.pop(), len(seeds)
    member_hp = {k: jnp.asarray(np.repeat(v, num_seeds)) for k, v in hp.items()}
    graphdef, states = engine.init_population(make_model, make_tx, member_hp, seeds, num_configs)

    x = jnp.asarray(x_train.reshape(len(x_train), -1))
    chunk = min(eval_chunk, len(x_test))
    usable = len(x_test) // chunk * chunk
    x_chunks = jnp.asarray(x_test[:usable].reshape(usable // chunk, chunk, -1))
    eval_key = jax.random.key(1234)

    epoch_fn = _make_vae_epoch(graphdef, make_tx, batch_size, len(x))
    train = jax.jit(jax.vmap(epoch_fn, in_axes=(0, 0, None)), donate_argnums=0)
    evaluate = jax.jit(jax.vmap(_make_vae_eval(graphdef, chunk), in_axes=(0, 0, None, None)))
    start = time.perf_counter()
    train = train.lower(states, member_hp, x).compile()
    compile_s = time.perf_counter() - start

    members = num_configs * num_seeds
    train_loss = np.full((members, epochs), np.nan)
    test_loss = np.full((members, epochs), np.nan)
    diverged = np.zeros(members, bool)
    for epoch in range(epochs):
        states, losses, healthy = train(states, member_hp, x)
        test = evaluate(states.params, states.model_state, x_chunks, eval_key)
        losses, healthy, test = jax.device_get((losses, healthy, test))
        diverged |= ~healthy
        train_loss[:, epoch] = np.where(diverged, np.nan, losses.mean(-1))
        test_loss[:, epoch] = np.where(diverged, np.nan, test)
        if on_epoch is not None:
            on_epoch(epoch + 1)
    shape = (num_configs, num_seeds, epochs)
    return VAEPopulationResult(
        {"train_loss": train_loss.reshape(shape), "test_loss": test_loss.reshape(shape)},
        diverged.reshape(num_configs, num_seeds),
        compile_s,
        len(x) // batch_size,
    )
