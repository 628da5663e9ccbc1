"""The pure functions: one optimizer step, one epoch, one evaluation.

Nothing here touches the host: every function is traced once and compiled by
:mod:`experiments.engine.loop`, which also vmaps it over a population.

One epoch is one loop over minibatches of data already on the device:

* the training rows are permuted with a key split from ``state.key`` and cut into
  ``steps = n // B`` minibatches (the last ``n mod B`` rows of the permutation are dropped
  for that epoch, a different remainder every epoch), so batch GD (``B = n``), SGD
  (``B = 1``) and minibatch SGD are the same code; padded rows (``train_size < N``) are
  never drawn;
* each step gathers its minibatch, merges the model, and takes one optimizer step
  ``θ ← θ + tx.update(∇L(θ))`` on the objective's loss ``L``;
* the per-step losses and metrics are summed in the loop's carry; their means come back.

Finiteness costs nothing on the fast path: the fast epoch records only whether every loss
was finite; the host checks the final state once (:func:`state_finite`). Only if either
failed does it replay the epoch with ``checked=True``, where a step counts as good only
if its loss, gradients, updates, new parameters and new optimizer and model state are all
finite, the state stays at the last good step, and :class:`Guard` records what went
non-finite first. The replay takes the same steps, so the last good state is the one the
fast path passed through.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from optlab.experiments import parallel
from optlab.experiments.engine.splits import EvalData
from optlab.experiments.engine.state import TrainState, split_model

PyTree = Any


def cast_floating(tree: PyTree, dtype) -> PyTree:
    """Floating leaves of ``tree`` cast to ``dtype`` (a no-op for their own dtype)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def leaves_finite(tree: PyTree) -> PyTree:
    """``tree`` with each leaf replaced by ``all(isfinite(leaf))`` (True for non-floats)."""
    return jax.tree.map(
        lambda a: jnp.all(jnp.isfinite(a)) if jnp.issubdtype(a.dtype, jnp.inexact) else True,
        tree,
    )


def all_true(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.asarray(True), *map(jnp.asarray, jax.tree.leaves(tree))]))


def state_finite(state: TrainState) -> jax.Array:
    """Whether the parameters, optimizer state and model state hold only finite values."""
    return all_true(leaves_finite((state.params, state.opt_state, state.model_state)))


class StepOutput(NamedTuple):
    loss: jax.Array  # the minibatch loss
    metrics: dict[str, jax.Array]  # the objective's auxiliary metrics
    grads: PyTree
    updates: PyTree


def train_step(state: TrainState, batch, *, graphdef, tx, objective, compute_dtype="float32"):
    """One optimizer step on ``objective.loss``: returns ``(new_state, StepOutput)``.

    The new state is returned even when something is not finite; callers decide what to
    keep. Dropout (or the objective's sampling) uses ``fold_in(state.key, state.step)``.
    """
    dtype = jnp.dtype(compute_dtype)
    step_key = jax.random.fold_in(state.key, state.step)

    def loss_fn(params):
        model = nnx.merge(graphdef, cast_floating(params, dtype), state.model_state, copy=True)
        loss, metrics = objective.loss(model, cast_floating(batch, dtype), step_key)
        _, _, model_state = split_model(model)
        model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), model_state,
                                   state.model_state)  # fmt: skip
        return loss.astype(jnp.float32), (model_state, metrics)

    (loss, (model_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state._replace(
        params=optax.apply_updates(state.params, updates),
        model_state=model_state,
        opt_state=opt_state,
        step=state.step + 1,
    )
    return new_state, StepOutput(loss, metrics, grads, updates)


class Guard(NamedTuple):
    """What the checked epoch found at its first bad step (``first_bad_step = -1``: none).

    Each field after the step is the finiteness at that step: of the loss (a bool), and
    per leaf of the gradients, updates, new parameters, new optimizer and model state.
    """

    first_bad_step: jax.Array
    loss: jax.Array
    grads: PyTree
    updates: PyTree
    params: PyTree
    opt_state: PyTree
    model_state: PyTree


class EpochOutput(NamedTuple):
    loss: jax.Array  # mean minibatch loss
    metrics: dict[str, jax.Array]  # mean of each auxiliary metric
    losses_finite: jax.Array  # bool: every step's loss was finite
    skipped: jax.Array  # int32: updates skipped for a non-finite gradient ("skip")
    guard: Guard | None  # checked epochs only


def epoch_order(key, num_rows: int, train_size) -> jax.Array:
    """A random order of the rows; with ``train_size`` (traced) the padded rows come last."""
    if train_size is None:
        return jax.random.permutation(key, num_rows)
    scores = jax.random.uniform(key, (num_rows,))
    return jnp.argsort(jnp.where(jnp.arange(num_rows) < train_size, scores, 2.0))


def make_epoch(graphdef, tx, *, batch_size, compute_dtype="float32", skip=False, checked=False,
               mesh=None):  # fmt: skip
    """The pure function ``(state, train, train_size, objective) -> (state, EpochOutput)``.

    ``train`` is the training pytree (leaves ``(N, ...)``), ``train_size`` None or the
    traced number of real rows. ``batch_size`` None: the whole set (batch GD).

    ``skip``: ``tx`` is wrapped in :func:`optimizers.finite.skip_non_finite`; a skipped
    step keeps the model state (e.g. BatchNorm statistics) too, is counted, and is not
    bad (a non-finite loss or gradient is then expected). ``checked``: see the module
    docstring. With a ``mesh`` each minibatch is split over its ``"data"`` axis.
    """

    def minibatch(train, order, i, size):
        indices = jax.lax.dynamic_slice_in_dim(order, i * size, size)
        batch = jax.tree.map(lambda a: a[indices], train)
        if mesh is not None:
            batch = jax.tree.map(lambda a: parallel.shard_batch(a, mesh), batch)
        return batch

    def train_epoch(state: TrainState, train, train_size, objective):
        num_rows = jax.tree.leaves(train)[0].shape[0]
        size = batch_size or num_rows
        key, perm_key = jax.random.split(state.key)
        order = epoch_order(perm_key, num_rows, train_size)
        steps = (num_rows if train_size is None else train_size) // size
        state = state._replace(key=key)

        def step(state, i):
            return train_step(state, minibatch(train, order, i, size), graphdef=graphdef, tx=tx,
                              objective=objective, compute_dtype=compute_dtype)  # fmt: skip

        new_example, out_example = jax.eval_shape(step, state, 0)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), out_example.metrics)
        guard = None
        if checked:
            guard = Guard(
                jnp.array(-1, jnp.int32), jnp.array(True),
                *(jax.tree.map(lambda _: jnp.array(True), tree)
                  for tree in (out_example.grads, out_example.updates, new_example.params,
                               new_example.opt_state, new_example.model_state)),
            )  # fmt: skip

        def body(i, carry):
            state, loss_sum, metric_sums, losses_finite, skipped, guard = carry
            new, out = step(state, i)
            skipped_now = jnp.array(False)
            if skip:
                skipped_now = ~new.opt_state.last_finite
                new = new._replace(model_state=jax.tree.map(
                    lambda n, o: jnp.where(skipped_now, o, n), new.model_state, state.model_state
                ))  # fmt: skip
            if checked:
                found = Guard(
                    i, jnp.isfinite(out.loss), *map(leaves_finite, (
                        out.grads, out.updates, new.params, new.opt_state, new.model_state)),
                )  # fmt: skip
                judged = (found.updates, found.params, found.opt_state, found.model_state)
                if not skip:
                    judged = (found.loss, found.grads, *judged)
                healthy = guard.first_bad_step < 0
                good = all_true(judged)
                first_bad = healthy & ~good
                guard = jax.tree.map(lambda f, g: jnp.where(first_bad, f, g), found, guard)
                keep = healthy & good
                new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, state)
                skipped_now = skipped_now & keep
            metric_sums = jax.tree.map(lambda s, m: s + m.astype(jnp.float32), metric_sums,
                                       out.metrics)  # fmt: skip
            return (new, loss_sum + out.loss, metric_sums, losses_finite & jnp.isfinite(out.loss),
                    skipped + skipped_now.astype(jnp.int32), guard)  # fmt: skip

        init = (state, jnp.zeros((), jnp.float32), zeros, jnp.array(True),
                jnp.zeros((), jnp.int32), guard)  # fmt: skip
        state, loss_sum, metric_sums, losses_finite, skipped, guard = jax.lax.fori_loop(
            0, steps, body, init
        )
        count = jnp.maximum(steps, 1).astype(jnp.float32)
        output = EpochOutput(
            loss_sum / count,
            jax.tree.map(lambda s: s / count, metric_sums),
            losses_finite,
            skipped,
            guard,
        )
        return state._replace(epoch=state.epoch + 1), output

    return train_epoch


def make_evaluate(graphdef, compute_dtype: str = "float32"):
    """The pure function ``(params, model_state, objective, EvalData) -> {name: mean}``.

    Eval mode (``objective.metrics``: no dropout, BatchNorm running averages, no
    penalty); each per-example metric is averaged over the split's real rows.
    """
    dtype = jnp.dtype(compute_dtype)

    def evaluate(params, model_state, objective, data: EvalData):
        params = cast_floating(params, dtype)

        def metrics(batch):
            # Merged inside the loop body: modules that run their own nnx transforms
            # (nnx.RNN's scan) refuse parameters traced at an outer level.
            model = nnx.merge(graphdef, params, model_state, copy=True)
            return objective.metrics(model, cast_floating(batch, dtype))

        first = jax.tree.map(lambda a: a[0], data.batches)
        shapes = jax.eval_shape(metrics, first)
        zeros = {name: jnp.zeros((), jnp.float32) for name in shapes}

        def body(totals, inputs):
            batch, mask = inputs
            values = metrics(batch)
            return {k: totals[k] + jnp.sum(values[k].astype(jnp.float32) * mask)
                    for k in totals}, None  # fmt: skip

        totals, _ = jax.lax.scan(body, zeros, (data.batches, data.mask))
        count = jnp.sum(data.mask)
        return {name: total / count for name, total in totals.items()}

    return evaluate
