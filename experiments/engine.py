"""The training engine: jit-compiled epochs on the pure functional view of an NNX model.

A model is split once into ``graphdef`` (static structure) and two state pytrees,
``params`` (every ``nnx.Param``) and ``model_state`` (everything else: BatchNorm
statistics, RNG counters). The train step merges them back inside the traced function,
so every step is a pure function of a :class:`TrainState` that ``jit``, ``lax.scan`` and
``vmap`` can take.

One epoch is ONE ``lax.scan`` over minibatches of data already on the device:

* the training set is permuted with a fresh key each epoch and cut into
  ``steps = N // batch_size`` minibatches; the last ``N mod batch_size`` examples of the
  permutation are dropped for that epoch (a different remainder every epoch, so every
  example is seen on average), hence batch GD (``batch_size = N``), SGD
  (``batch_size = 1``) and minibatch SGD are the same code;
* the loss is the mean softmax cross-entropy on integer labels plus
  ``(l2 / 2) * ||θ||²`` over every parameter;
* the state buffers are donated to the compiled epoch; the per-step losses and
  accuracies stay on the device and are fetched once per epoch.

A step whose loss or gradients are not finite is not applied: the scan keeps the last
good state from then on and reports the step and the non-finite leaves; :func:`fit`
raises :class:`NonFiniteError` carrying that state.

:func:`fit_population` trains P hyperparameter configurations × S seeds at once under
``jax.vmap``, with one compilation, and returns each metric as a ``(P, S, epochs)``
array.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

PyTree = Any
COMPUTE_DTYPES = ("float32", "bfloat16")
NON_FINITE_POLICIES = ("stop", "skip")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train for and how.

    Attributes:
      epochs: number of passes over the training set.
      batch_size: minibatch size B; ``None`` means the whole training set (batch GD).
        Each epoch takes ``N // B`` steps and drops the remainder of its permutation.
      seed: seeds the data order and dropout (and, in :func:`fit_population`, the model).
      l2: coefficient of the penalty ``(l2 / 2) * ||θ||²`` added to the loss.
      compute_dtype: ``"float32"`` or ``"bfloat16"``; with bfloat16 the forward and
        backward passes run on bfloat16 copies of the float32 parameters and inputs.
      eval_batch_size: batch size of the (jitted, batched) evaluation.
      eval_train: if True, ``train_loss``/``train_accuracy`` are measured by a full
        evaluation pass over the training set after each epoch (eval mode, no dropout,
        no penalty); otherwise they are the mean over the epoch's minibatches.
      schedule: learning-rate schedule name from :mod:`experiments.schedules`.
      schedule_kwargs: its keyword arguments (see :func:`experiments.schedules.build`).
      data_parallel: split every minibatch over all devices (a ``"data"`` mesh axis,
        parameters and optimizer state replicated; :mod:`experiments.parallel`). Same
        results as one device within float tolerance; ``batch_size`` must be divisible
        by the device count.
    """

    epochs: int = 10
    batch_size: int | None = 128
    seed: int = 0
    l2: float = 0.0
    compute_dtype: str = "float32"
    eval_batch_size: int = 1000
    eval_train: bool = False
    schedule: str = "constant"
    schedule_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_parallel: bool = False

    def __post_init__(self):
        from experiments import schedules

        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive integer or None, got {self.batch_size!r}"
            )
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                f"got {self.compute_dtype!r}"
            )
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ValueError(
                f"eval_batch_size must be a positive integer, got {self.eval_batch_size!r}"
            )
        if not isinstance(self.data_parallel, bool):
            raise ValueError(f"data_parallel must be True or False, got {self.data_parallel!r}")
        schedules.check_name(self.schedule)

    def steps_per_epoch(self, num_train: int) -> int:
        """``N // B``: the number of optimizer steps in one epoch."""
        batch_size = self.batch_size or num_train
        if batch_size > num_train:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({num_train} examples)"
            )
        return num_train // batch_size

    def learning_rate_schedule(self, learning_rate, num_train: int) -> optax.Schedule:
        """The configured schedule around a base learning rate (a float or a traced scalar)."""
        from experiments import schedules

        steps = self.steps_per_epoch(num_train)
        return schedules.build(
            self.schedule,
            learning_rate,
            steps_per_epoch=steps,
            total_steps=steps * self.epochs,
            **self.schedule_kwargs,
        )


# --------------------------------------------------------------------------- state


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree; checkpointable)."""

    params: PyTree  # nnx.State of nnx.Param
    model_state: PyTree  # nnx.State of everything else (BatchStat, RNG counters, ...)
    opt_state: optax.OptState
    step: jax.Array  # int32, optimizer steps taken
    key: jax.Array  # PRNG key for data order and dropout
    epoch: jax.Array  # int32, epochs completed


class StepGuard(NamedTuple):
    """Where an epoch first went non-finite (``first_bad_step = -1``: it did not)."""

    first_bad_step: jax.Array  # int32, index of the step within the epoch
    loss_finite: jax.Array  # bool, was the loss finite at that step
    grads_finite: PyTree  # bool per parameter leaf at that step


class EpochMetrics(NamedTuple):
    losses: jax.Array  # (steps,) minibatch losses (including the L2 penalty)
    accuracies: jax.Array  # (steps,)
    guard: StepGuard
    skipped: jax.Array  # (steps,) bool: update skipped for a non-finite gradient ("skip")


class NonFiniteError(FloatingPointError, ValueError):
    """The loss or the gradients became NaN or infinite.

    Attributes:
      epoch: the 1-based epoch in which it happened.
      step: the 0-based step within that epoch.
      leaves: paths of the parameters whose gradients were not finite.
      state: the last good :class:`TrainState` (before the bad step).
      history: the history of the completed epochs.
    """

    def __init__(self, message, *, epoch, step, leaves, state=None, history=None):
        super().__init__(message)
        self.epoch, self.step, self.leaves = epoch, step, leaves
        self.state, self.history = state, history


class FitResult(NamedTuple):
    model: nnx.Module  # the trained model (merged back from the final state)
    history: list[dict]  # one record per epoch
    state: TrainState
    compile_time_s: float  # lowering + compilation of the train epoch
    steps_per_epoch: int


class PopulationResult(NamedTuple):
    histories: dict[str, np.ndarray]  # metric -> (P, S, epochs); NaN after divergence
    hparams: dict[str, np.ndarray]  # name -> (P,)
    seeds: np.ndarray  # (S,)
    diverged: np.ndarray  # (P, S) bool
    epoch_time_s: np.ndarray  # (epochs,) training time of the whole population's epoch
    compile_time_s: float
    steps_per_epoch: int
    state: TrainState  # stacked over P*S members (leading axis, p-major)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(model_key, train_key)`` derived from one integer seed.

    :func:`fit_population` builds member ``s``'s model with ``make_model(model_key)`` and
    trains it with ``train_key``; :func:`fit` uses ``train_key`` of ``config.seed``. So
    ``fit(make_model(seed_keys(s)[0]), tx, data, replace(config, seed=s))`` reproduces a
    population member.
    """
    model_key, train_key = jax.random.split(jax.random.key(seed))
    return model_key, train_key


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, PyTree, PyTree]:
    """``graphdef, params, model_state = nnx.split(model, nnx.Param, ...)``."""
    return nnx.split(model, nnx.Param, ...)


def init_state(model: nnx.Module, tx: optax.GradientTransformation, key: jax.Array):
    """Split ``model`` and initialise the optimizer: returns ``(graphdef, TrainState)``."""
    graphdef, params, model_state = split_model(model)
    state = TrainState(
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        key=key,
        epoch=jnp.zeros((), jnp.int32),
    )
    return graphdef, state


# --------------------------------------------------------------------------- pure functions


def _cast_floating(tree: PyTree, dtype) -> PyTree:
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def loss_fn(params, model_state, graphdef, x, y, key, *, l2: float, compute_dtype: str):
    """Mean cross-entropy of one minibatch plus ``(l2/2)·||θ||²``, in train mode.

    Returns ``(loss, (new_model_state, accuracy))``.
    """
    dtype = jnp.dtype(compute_dtype)
    model = nnx.merge(graphdef, _cast_floating(params, dtype), model_state, copy=True)
    logits = model(x.astype(dtype), train=True, rngs=nnx.Rngs(dropout=key)).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if l2:
        loss = loss + 0.5 * l2 * optax.tree.norm(params, squared=True)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    _, _, new_model_state = split_model(model)
    new_model_state = jax.tree.map(
        lambda new, old: new.astype(old.dtype), new_model_state, model_state
    )
    return loss, (new_model_state, accuracy)


def train_step(state: TrainState, x, y, *, graphdef, tx, l2: float = 0.0, compute_dtype="float32"):
    """One optimizer step: ``θ ← θ + tx.update(∇L(θ))``.

    Returns ``(new_state, loss, accuracy, loss_finite, grads_finite)`` where
    ``grads_finite`` is a bool per parameter leaf. The new state is returned even when
    something is not finite; callers decide what to keep.
    """
    step_key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (model_state, accuracy)), grads = grad_fn(
        state.params,
        state.model_state,
        graphdef,
        x,
        y,
        step_key,
        l2=l2,
        compute_dtype=compute_dtype,
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state._replace(
        params=optax.apply_updates(state.params, updates),
        model_state=model_state,
        opt_state=opt_state,
        step=state.step + 1,
    )
    grads_finite = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
    return new_state, loss, accuracy, jnp.isfinite(loss), grads_finite


def _all_true(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.asarray(True), *jax.tree.leaves(tree)]))


def make_train_epoch(
    graphdef,
    tx,
    config: TrainConfig,
    num_train: int,
    *,
    on_non_finite: str = "stop",
    mesh: jax.sharding.Mesh | None = None,
):
    """The pure function ``(state, x, y) -> (state, EpochMetrics)`` for one epoch.

    The epoch permutes the training set with a key split from ``state.key``, drops the
    last ``N mod B`` examples of the permutation and runs one ``lax.scan`` of
    :func:`train_step` over the ``N // B`` minibatches.

    ``on_non_finite="stop"``: a step is bad when its loss or a gradient is not finite.
    ``on_non_finite="skip"``: ``tx`` must already skip non-finite gradients
    (:func:`optimizers.finite.skip_non_finite`); such a step is counted in
    ``EpochMetrics.skipped`` and keeps the model state (e.g. BatchNorm statistics), and
    a step is bad only when the parameters it produces are not finite (the wrapper gave
    up after too many skips in a row). After the first bad step the scan keeps the last
    good state (the remaining steps are not applied).

    With a ``mesh`` (:func:`experiments.parallel.data_mesh`) each minibatch is split
    over its ``"data"`` axis.
    """
    if on_non_finite not in NON_FINITE_POLICIES:
        raise ValueError(
            f"on_non_finite must be one of {', '.join(NON_FINITE_POLICIES)}, got {on_non_finite!r}"
        )
    batch_size = config.batch_size or num_train
    steps = config.steps_per_epoch(num_train)
    skip = on_non_finite == "skip"

    def minibatch(x, y, batch):
        if mesh is None:
            return x[batch], y[batch]
        from experiments import parallel

        return parallel.shard_batch(x[batch], mesh), parallel.shard_batch(y[batch], mesh)

    def train_epoch(state: TrainState, x, y):
        key, perm_key = jax.random.split(state.key)
        batches = jax.random.permutation(perm_key, num_train)[: steps * batch_size]
        batches = batches.reshape(steps, batch_size)
        guard = StepGuard(
            first_bad_step=jnp.array(-1, jnp.int32),
            loss_finite=jnp.array(True),
            grads_finite=jax.tree.map(lambda _: jnp.array(True), state.params),
        )

        def body(carry, inputs):
            state, guard = carry
            index, batch = inputs
            new_state, loss, accuracy, loss_finite, grads_finite = train_step(
                state, *minibatch(x, y, batch), graphdef=graphdef, tx=tx, l2=config.l2,
                compute_dtype=config.compute_dtype,
            )  # fmt: skip
            finite = loss_finite & _all_true(grads_finite)
            if skip:
                skipped = ~_all_true(grads_finite)
                new_state = new_state._replace(
                    model_state=jax.tree.map(
                        lambda new, old: jnp.where(skipped, old, new),
                        new_state.model_state,
                        state.model_state,
                    )
                )
                good = _all_true(jax.tree.map(lambda p: jnp.all(jnp.isfinite(p)), new_state.params))
            else:
                skipped, good = jnp.array(False), finite
            healthy = guard.first_bad_step < 0
            state = jax.tree.map(
                lambda new, old: jnp.where(good & healthy, new, old), new_state, state
            )
            first_bad = healthy & ~good
            guard = StepGuard(
                first_bad_step=jnp.where(first_bad, index, guard.first_bad_step),
                loss_finite=jnp.where(first_bad, loss_finite, guard.loss_finite),
                grads_finite=jax.tree.map(
                    lambda new, old: jnp.where(first_bad, new, old),
                    grads_finite,
                    guard.grads_finite,
                ),
            )
            return (state, guard), (loss, accuracy, skipped & healthy)

        state = state._replace(key=key)
        (state, guard), (losses, accuracies, skipped) = jax.lax.scan(
            body, (state, guard), (jnp.arange(steps, dtype=jnp.int32), batches)
        )
        metrics = EpochMetrics(losses, accuracies, guard, skipped)
        return state._replace(epoch=state.epoch + 1), metrics

    return train_epoch


class EvalData(NamedTuple):
    """A split padded to whole evaluation batches: ``x (K, b, ...)``, ``y``/``mask (K, b)``."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> EvalData:
    """Pad a split to a multiple of ``batch_size`` (mask 0 on the padding), on the device."""
    n = len(x)
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    shape = (num_batches, batch_size)
    return EvalData(
        jnp.asarray(x.reshape(*shape, *x.shape[1:])),
        jnp.asarray(y.reshape(shape)),
        jnp.asarray(mask.reshape(shape)),
    )


def make_evaluate(graphdef, compute_dtype: str = "float32"):
    """The pure function ``(params, model_state, EvalData) -> (mean loss, accuracy)``.

    Eval mode (``train=False``: no dropout, BatchNorm running averages), no penalty.
    """
    dtype = jnp.dtype(compute_dtype)

    def evaluate(params, model_state, data: EvalData):
        params = _cast_floating(params, dtype)

        def body(totals, batch):
            x, y, mask = batch
            # Merged inside the scan body: modules that run their own nnx transforms (nnx.RNN's
            # scan) refuse parameters traced at an outer level.
            model = nnx.merge(graphdef, params, model_state, copy=True)
            logits = model(x.astype(dtype), train=False).astype(jnp.float32)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            correct = jnp.argmax(logits, -1) == y
            return (totals[0] + jnp.sum(losses * mask), totals[1] + jnp.sum(correct * mask)), None

        (loss_sum, correct_sum), _ = jax.lax.scan(body, (0.0, 0.0), tuple(data))
        count = jnp.sum(data.mask)
        return loss_sum / count, correct_sum / count

    return evaluate


@functools.lru_cache(maxsize=32)
def jitted_evaluate(graphdef, compute_dtype: str = "float32", population: bool = False):
    """``(params, model_state, {split: EvalData}) -> {split: (loss, accuracy)}``, jitted.

    With ``population=True`` it is vmapped over stacked members. Cached per model
    structure, so repeated fits (or populations) of one architecture compile it once.
    """
    evaluate = make_evaluate(graphdef, compute_dtype)

    def evaluate_splits(params, model_state, evals):
        return {split: evaluate(params, model_state, data) for split, data in evals.items()}

    if population:
        evaluate_splits = jax.vmap(evaluate_splits, in_axes=(0, 0, None))
    return jax.jit(evaluate_splits)


# --------------------------------------------------------------------------- fit


def _leaf_names(tree: PyTree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _compile(fn, *args):
    """Ahead-of-time compile ``fn`` for ``args``: returns (compiled, seconds)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _check_finite(guard: StepGuard, params, epoch: int, state, history, checkpoint=None):
    first_bad_step = int(guard.first_bad_step)
    if first_bad_step < 0:
        return
    leaves = [
        name
        for name, ok in zip(_leaf_names(params), jax.tree.leaves(guard.grads_finite), strict=True)
        if not bool(ok)
    ]
    what = [] if bool(guard.loss_finite) else ["the loss"]
    what += [f"gradients of {', '.join(leaves)}"] if leaves else []
    what = what or ["the parameters (too many non-finite gradients in a row to skip)"]
    kept = "the last good state is kept"
    if checkpoint is not None:
        saved = checkpoint.steps()
        kept += (
            f" and the last good checkpoint is epoch {saved[-1]} in {checkpoint.directory}"
            if saved
            else f"; no checkpoint was written yet in {checkpoint.directory}"
        )
    raise NonFiniteError(
        f"non-finite values at epoch {epoch}, step {first_bad_step}: {' and '.join(what)}; "
        f"{kept} (try a smaller learning rate, or on_non_finite='skip')",
        epoch=epoch, step=first_bad_step, leaves=leaves, state=state, history=history,
    )  # fmt: skip


def eval_sets(data, config: TrainConfig) -> dict[str, EvalData]:
    """The splits evaluated after every epoch, on the device, padded to whole batches.

    ``test`` always; ``val`` when ``data`` has ``x_val``/``y_val`` (not None); ``train``
    when ``config.eval_train``.
    """
    splits = {"test": (data.x_test, data.y_test)}
    if getattr(data, "x_val", None) is not None:
        splits["val"] = (data.x_val, data.y_val)
    if config.eval_train:
        splits["train"] = (data.x_train, data.y_train)
    return {
        name: eval_batches(np.asarray(x), np.asarray(y), config.eval_batch_size)
        for name, (x, y) in splits.items()
    }


def metric_names(metrics: Mapping[str, Any]) -> list[str]:
    """Metric names in reading order: train, val, test; loss before accuracy."""
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(metrics, key=lambda name: (order.get(name.split("_")[0], 3), name))


def _epoch_metrics(metrics: EpochMetrics, evaluations: Mapping[str, tuple]) -> dict[str, Any]:
    """``{split}_loss``/``{split}_accuracy``; train from the minibatches unless evaluated."""
    out = {"train_loss": metrics.losses.mean(-1), "train_accuracy": metrics.accuracies.mean(-1)}
    for split, (loss, accuracy) in evaluations.items():
        out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, accuracy
    return out


def check_data(data, num_classes: int | None = None) -> None:
    """Reject data that would train on garbage, before anything is compiled.

    Every ``x_*`` array (train, val, test) must be finite; every ``y_*`` array must hold
    integer labels in ``[0, num_classes)`` (``num_classes`` from the argument, else
    ``data.num_classes`` when it is positive; the label check is skipped without one).

    Raises:
      ValueError: naming the array, what is wrong and what is valid.
    """
    num_classes = num_classes or getattr(data, "num_classes", None) or None
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
        if x is not None:
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                first = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0, 0])
                raise ValueError(
                    f"x_{split} holds {bad} NaN or infinite value(s) (first in example {first}); "
                    "inputs must be finite"
                )
        if y is not None and num_classes:
            y = np.asarray(y)
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y_{split} must hold integer class labels, got dtype {y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= num_classes):
                raise ValueError(
                    f"y_{split} holds labels in [{y.min()}, {y.max()}], "
                    f"valid labels are 0..{num_classes - 1}"
                )


def output_classes(graphdef, params, model_state, x_example) -> int:
    """The model's number of logits, from an abstract call on one example (no compute).

    Raises:
      ValueError: the example's shape does not fit the model (the model's own message).
    """
    # Merged inside the traced function (nnx.RNN's scan refuses outer-level parameters).
    out = jax.eval_shape(
        lambda x: nnx.merge(graphdef, params, model_state, copy=True)(x, train=False),
        jax.ShapeDtypeStruct(x_example.shape, x_example.dtype),
    )
    return int(out.shape[-1])


def data_fingerprint(data) -> dict[str, Any]:
    """Shapes, dtypes and SHA-256 of every split: resuming on other data is refused."""
    out = {}
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array = getattr(data, name, None)
        if array is not None:
            array = np.ascontiguousarray(array)
            digest = hashlib.sha256(array.view(np.uint8).reshape(-1)).hexdigest()
            out[name] = f"{array.dtype}{list(array.shape)} sha256:{digest[:16]}"
    return out


def run_fingerprint(model, data, config: TrainConfig, on_non_finite: str, extra=None) -> dict:
    """What must match to resume: model class, training config, data, policy, ``extra``.

    ``extra`` is the caller's description of what the engine cannot see inside ``tx``
    (optimizer name and hyperparameters) or ``model`` (its options). ``data_parallel`` is
    left out: a run may resume on another number of devices.
    """
    from experiments.checkpoint import fingerprint

    train = {k: v for k, v in dataclasses.asdict(config).items() if k != "data_parallel"}
    return fingerprint(
        model=type(model).__name__, train=train, data=data_fingerprint(data),
        on_non_finite=on_non_finite, user=extra or {},
    )  # fmt: skip


def _open_checkpointer(checkpoint_dir, checkpoint_every: int, keep: int, resume: bool):
    """The :class:`~experiments.checkpoint.Checkpointer`, checked before any compilation."""
    from experiments.checkpoint import CheckpointConfig, Checkpointer

    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs a checkpoint_dir to resume from")
        return None
    checkpointer = Checkpointer(CheckpointConfig(checkpoint_dir, every=checkpoint_every, keep=keep))
    if not resume and (saved := checkpointer.steps()):
        checkpointer.close()
        raise ValueError(
            f"checkpoint folder {checkpointer.directory} already holds checkpoints (epochs "
            f"{saved}); pass resume=True to continue that run, or use an empty "
            "folder"
        )
    return checkpointer


def _place(state, x, y, config: TrainConfig):
    """``(state, x, y, mesh)``: on the default device, or on a data-parallel mesh."""
    if not config.data_parallel:
        return state, jnp.asarray(x), jnp.asarray(y), None
    from experiments import parallel

    mesh = parallel.data_mesh()
    parallel.check_batch_divisible(config.batch_size or len(x), mesh)
    state = jax.device_put(state, parallel.state_shardings(state, mesh))
    x, y = jax.device_put((np.asarray(x), np.asarray(y)), parallel.replicated(mesh))
    return state, x, y, mesh


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    data,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    on_non_finite: str = "stop",
    fingerprint: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with ``tx`` on ``data`` for ``config.epochs`` epochs.

    Args:
      model: an ``nnx.Module`` called as ``model(x, train=..., rngs=...)``; not modified.
      tx: the optimizer.
      data: anything with NumPy ``x_train, y_train, x_test, y_test`` (e.g. a ``Dataset``).
      config: the :class:`TrainConfig`.
      on_epoch: called with each epoch's record (progress bars, logging).
      checkpoint_dir: save the whole training state (parameters, optimizer and model
        state, step, PRNG key, epochs done, history) there with Orbax after every
        ``checkpoint_every``-th good epoch and after the last; ``keep`` are retained.
      resume: continue from the latest valid checkpoint in ``checkpoint_dir`` (from
        scratch if there is none). Without it, a folder that holds checkpoints is refused.
      on_non_finite: ``"stop"`` raises :class:`NonFiniteError` at the first non-finite
        loss or gradient; ``"skip"`` wraps ``tx`` in
        :func:`optimizers.finite.skip_non_finite` (``optax.apply_if_finite`` semantics)
        and records ``skipped_steps`` per epoch in the history.
      fingerprint: what identifies the optimizer and model options (e.g.
        ``{"optimizer": "adam", "learning_rate": 1e-3}``); with the engine's own
        :func:`run_fingerprint` it must match to resume.

    Returns:
      A :class:`FitResult`. History records hold ``epoch, train_loss, train_accuracy,
      test_loss, test_accuracy, epoch_time_s, step_time_s`` (and ``skipped_steps`` with
      ``"skip"``); epoch times exclude compilation, reported once as ``compile_time_s``
      (0 when a finished run is restored).

    Raises:
      ValueError: bad arguments or data (non-finite inputs, labels out of range, shapes
        that do not fit the model), before any compilation.
      CheckpointMismatchError: the checkpoint is from another configuration.
      OSError: the checkpoint folder is not writable or a save failed.
      NonFiniteError: the loss or gradients became non-finite (carries the last good
        state; the last good checkpoint stays on disk).
    """
    from optimizers import finite

    if on_non_finite not in NON_FINITE_POLICIES:
        raise ValueError(
            f"on_non_finite must be one of {', '.join(NON_FINITE_POLICIES)}, got {on_non_finite!r}"
        )
    steps = config.steps_per_epoch(len(data.x_train))
    if on_non_finite == "skip":
        tx = finite.skip_non_finite(tx)
    _, train_key = seed_keys(config.seed)
    graphdef, state = init_state(model, tx, train_key)
    check_data(data, output_classes(graphdef, state.params, state.model_state, data.x_train[:1]))
    # Copy so that donating the state leaves ``model``'s own arrays (and any optimizer
    # state that aliases the parameters) intact.
    state = jax.tree.map(lambda a: a.copy(), state)
    state, x_train, y_train, mesh = _place(state, data.x_train, data.y_train, config)
    checkpointer = _open_checkpointer(checkpoint_dir, checkpoint_every, keep, resume)
    try:
        return _fit_loop(
            graphdef, tx, data, config, state, x_train, y_train, steps,
            mesh=mesh, on_epoch=on_epoch, on_non_finite=on_non_finite, checkpointer=checkpointer,
            fingerprint=run_fingerprint(model, data, config, on_non_finite, fingerprint),
        )  # fmt: skip
    finally:
        if checkpointer is not None:
            checkpointer.close()


def _fit_loop(graphdef, tx, data, config, state, x_train, y_train, steps, *, mesh, on_epoch,
              on_non_finite, checkpointer, fingerprint) -> FitResult:  # fmt: skip
    """:func:`fit` after its checks: restore, compile, train, checkpoint."""
    history: list[dict] = []
    start_epoch = 0
    if checkpointer is not None and (restored := checkpointer.restore_latest(state, fingerprint)):
        state, history, start_epoch = restored
    evals = eval_sets(data, config)
    evaluate = jitted_evaluate(graphdef, config.compute_dtype)
    compile_time_s = 0.0
    if start_epoch < config.epochs:
        train_epoch = jax.jit(
            make_train_epoch(graphdef, tx, config, len(x_train), on_non_finite=on_non_finite,
                             mesh=mesh),
            donate_argnums=0,
        )  # fmt: skip
        train_epoch, compile_time_s = _compile(train_epoch, state, x_train, y_train)

    for epoch in range(start_epoch + 1, config.epochs + 1):
        start = time.perf_counter()
        state, metrics = train_epoch(state, x_train, y_train)
        jax.block_until_ready(state)
        epoch_time = time.perf_counter() - start
        _check_finite(metrics.guard, state.params, epoch, state, history, checkpointer)
        evaluations = evaluate(state.params, state.model_state, evals)
        values = jax.device_get(_epoch_metrics(metrics, evaluations))
        record = {"epoch": epoch, **{name: float(values[name]) for name in metric_names(values)}}
        record.update(epoch_time_s=epoch_time, step_time_s=epoch_time / steps)
        if on_non_finite == "skip":
            record["skipped_steps"] = int(np.sum(jax.device_get(metrics.skipped)))
        history.append(record)
        if checkpointer is not None:
            checkpointer.save(epoch, state, history, fingerprint, force=epoch == config.epochs)
        if on_epoch is not None:
            on_epoch(record)

    trained = nnx.merge(graphdef, state.params, state.model_state)
    return FitResult(trained, history, state, compile_time_s, steps)


# --------------------------------------------------------------------------- population


def init_population(make_model, make_tx, member_hparams, seeds, num_configs: int):
    """``(graphdef, TrainState stacked over the P·S members, p-major)``.

    The S models are built eagerly, once per seed, and tiled over the P configurations
    (compiling a vmapped initialiser costs far more than building a few models); the
    optimizer states are initialised under ``vmap`` with each member's hyperparameters.
    """
    built = [split_model(make_model(seed_keys(seed)[0])) for seed in seeds]
    graphdef = built[0][0]

    def stack(trees):
        return jax.tree.map(lambda *leaves: jnp.stack(leaves * num_configs), *trees)

    params, model_state = stack([b[1] for b in built]), stack([b[2] for b in built])
    train_keys = jnp.stack([seed_keys(seed)[1] for seed in seeds] * num_configs)
    opt_state = jax.vmap(lambda hp, p: make_tx(**hp).init(p))(member_hparams, params)
    num_members = len(train_keys)
    states = TrainState(
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        step=jnp.zeros(num_members, jnp.int32),
        key=train_keys,
        epoch=jnp.zeros(num_members, jnp.int32),
    )
    return graphdef, states


def _population_history(records, diverged, epoch_times, epochs_done: int) -> list[dict]:
    """The population's metrics so far as JSON-able per-epoch records (NaN as None)."""

    def plain(values):
        return [None if np.isnan(v) else float(v) for v in values]

    return [
        {
            "epoch": epoch + 1,
            "metrics": {name: plain(values[:, epoch]) for name, values in records.items()},
            "epoch_time_s": float(epoch_times[epoch]),
        }
        for epoch in range(epochs_done)
    ] + [{"diverged": diverged.tolist()}]


def _restore_population_history(history, num_members: int, epochs: int):
    """Inverse of :func:`_population_history`: ``(records, diverged, epoch_times)``."""
    *per_epoch, last = history
    records: dict[str, np.ndarray] = {}
    epoch_times = np.zeros(epochs)
    for record in per_epoch:
        epoch = record["epoch"] - 1
        epoch_times[epoch] = record["epoch_time_s"]
        for name, values in record["metrics"].items():
            target = records.setdefault(name, np.full((num_members, epochs), np.nan))
            target[:, epoch] = np.asarray(values, dtype=float)
    return records, np.asarray(last["diverged"], bool), epoch_times


def fit_population(
    make_model: Callable[[jax.Array], nnx.Module],
    make_tx: Callable[..., optax.GradientTransformation],
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    data,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int], None] | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    on_non_finite: str = "stop",
    fingerprint: Mapping[str, Any] | None = None,
) -> PopulationResult:
    """Train P hyperparameter configurations × S seeds at once under one ``jax.vmap``.

    Member ``(p, s)`` is the model ``make_model(seed_keys(seeds[s])[0])`` trained with
    ``make_tx(**{k: hparams[k][p]})`` and data order/dropout from ``seed_keys(seeds[s])[1]``;
    the hyperparameters reach ``make_tx`` as traced scalars, so the P·S runs share ONE
    compiled epoch. ``config.seed`` is not used (the seeds are).

    A member whose loss or gradients become non-finite (``on_non_finite="stop"``), or
    whose parameters do despite skipping (``"skip"``, see :func:`fit`), is frozen at its
    last good state and marked in ``diverged``; its metrics are NaN from that epoch on.
    With ``"skip"`` the histories hold ``skipped_steps`` per member and epoch.

    ``checkpoint_dir``, ``checkpoint_every``, ``keep``, ``resume`` and ``fingerprint``
    work as in :func:`fit`: the stacked state of all members and the histories so far are
    checkpointed at epoch boundaries, and a resumed population ends bitwise equal to an
    uninterrupted one. ``on_epoch`` is called with the epoch number after each epoch,
    restored ones included.

    Returns:
      A :class:`PopulationResult`; ``histories[metric]`` has shape ``(P, S, epochs)``.
    """
    from optimizers import finite

    if on_non_finite not in NON_FINITE_POLICIES:
        raise ValueError(
            f"on_non_finite must be one of {', '.join(NON_FINITE_POLICIES)}, got {on_non_finite!r}"
        )
    hparams = {name: np.asarray(values, np.float32) for name, values in hparams.items()}
    sizes = {name: values.shape for name, values in hparams.items()}
    if not hparams or len(set(sizes.values())) != 1 or len(next(iter(sizes.values()))) != 1:
        raise ValueError(f"hparams must map names to 1-D lists of one common length, got {sizes}")
    num_configs, num_seeds = len(next(iter(hparams.values()))), len(seeds)
    if num_seeds == 0:
        raise ValueError("seeds must not be empty")
    num_train = len(data.x_train)
    steps = config.steps_per_epoch(num_train)
    if on_non_finite == "skip":
        make_tx = (lambda inner: lambda **hp: finite.skip_non_finite(inner(**hp)))(make_tx)

    # Members are p-major: member m = p * S + s.
    member_hparams = {k: jnp.asarray(np.repeat(v, num_seeds)) for k, v in hparams.items()}
    graphdef, states = init_population(make_model, make_tx, member_hparams, seeds, num_configs)
    one = jax.tree.map(lambda leaf: leaf[0], states)
    check_data(data, output_classes(graphdef, one.params, one.model_state, data.x_train[:1]))
    states, x_train, y_train, mesh = _place(states, data.x_train, data.y_train, config)
    fingerprint = run_fingerprint(
        nnx.merge(graphdef, one.params, one.model_state), data, config, on_non_finite,
        {"hparams": {k: v.tolist() for k, v in hparams.items()}, "seeds": list(seeds),
         "user": fingerprint or {}},
    )  # fmt: skip
    checkpointer = _open_checkpointer(checkpoint_dir, checkpoint_every, keep, resume)
    num_members = num_configs * num_seeds
    records: dict[str, np.ndarray] = {}
    diverged = np.zeros(num_members, bool)
    epoch_times = np.zeros(config.epochs)
    start_epoch, compile_s = 0, 0.0
    try:
        if checkpointer is not None and (
            restored := checkpointer.restore_latest(states, fingerprint)
        ):
            states, history, start_epoch = restored
            records, diverged, epoch_times = _restore_population_history(
                history, num_members, config.epochs
            )
            for epoch in range(1, start_epoch + 1):
                if on_epoch is not None:
                    on_epoch(epoch)
        evals = eval_sets(data, config)
        evaluate = jitted_evaluate(graphdef, config.compute_dtype, population=True)
        args = (member_hparams, x_train, y_train)
        if start_epoch < config.epochs:

            def train_member(state, hp, x, y):
                epoch_fn = make_train_epoch(
                    graphdef, make_tx(**hp), config, num_train, on_non_finite=on_non_finite,
                    mesh=mesh,
                )  # fmt: skip
                return epoch_fn(state, x, y)

            train_epoch = jax.jit(
                jax.vmap(train_member, in_axes=(0, 0, None, None)), donate_argnums=0
            )
            train_epoch, compile_s = _compile(train_epoch, states, *args)

        for epoch in range(start_epoch, config.epochs):
            start = time.perf_counter()
            states, metrics = train_epoch(states, *args)
            jax.block_until_ready(states)
            epoch_times[epoch] = time.perf_counter() - start
            evaluations = evaluate(states.params, states.model_state, evals)
            values, bad, skipped = jax.device_get(
                (
                    _epoch_metrics(metrics, evaluations),
                    metrics.guard.first_bad_step >= 0,
                    metrics.skipped.sum(-1),
                )
            )
            if on_non_finite == "skip":
                values["skipped_steps"] = skipped
            diverged |= bad
            for name, value in values.items():
                history = records.setdefault(name, np.full((num_members, config.epochs), np.nan))
                history[:, epoch] = np.where(diverged, np.nan, value)
            if checkpointer is not None:
                checkpointer.save(
                    epoch + 1, states, _population_history(records, diverged, epoch_times,
                                                           epoch + 1),
                    fingerprint, force=epoch + 1 == config.epochs,
                )  # fmt: skip
            if on_epoch is not None:
                on_epoch(epoch + 1)
    finally:
        if checkpointer is not None:
            checkpointer.close()

    shape = (num_configs, num_seeds, config.epochs)
    return PopulationResult(
        histories={name: records[name].reshape(shape) for name in metric_names(records)},
        hparams=hparams,
        seeds=np.asarray(seeds),
        diverged=diverged.reshape(num_configs, num_seeds),
        epoch_time_s=epoch_times,
        compile_time_s=compile_s,
        steps_per_epoch=steps,
        state=states,
    )
