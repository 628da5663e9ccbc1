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


def make_train_epoch(graphdef, tx, config: TrainConfig, num_train: int):
    """The pure function ``(state, x, y) -> (state, EpochMetrics)`` for one epoch.

    The epoch permutes the training set with a key split from ``state.key``, drops the
    last ``N mod B`` examples of the permutation and runs one ``lax.scan`` of
    :func:`train_step` over the ``N // B`` minibatches. After the first non-finite step
    the scan keeps the last good state (the remaining steps are not applied).
    """
    batch_size = config.batch_size or num_train
    steps = config.steps_per_epoch(num_train)

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
                state, x[batch], y[batch], graphdef=graphdef, tx=tx, l2=config.l2,
                compute_dtype=config.compute_dtype,
            )  # fmt: skip
            finite = loss_finite & jnp.all(jnp.stack(jax.tree.leaves(grads_finite)))
            healthy = guard.first_bad_step < 0
            state = jax.tree.map(
                lambda new, old: jnp.where(finite & healthy, new, old), new_state, state
            )
            first_bad = healthy & ~finite
            guard = StepGuard(
                first_bad_step=jnp.where(first_bad, index, guard.first_bad_step),
                loss_finite=jnp.where(first_bad, loss_finite, guard.loss_finite),
                grads_finite=jax.tree.map(
                    lambda new, old: jnp.where(first_bad, new, old),
                    grads_finite,
                    guard.grads_finite,
                ),
            )
            return (state, guard), (loss, accuracy)

        state = state._replace(key=key)
        (state, guard), (losses, accuracies) = jax.lax.scan(
            body, (state, guard), (jnp.arange(steps, dtype=jnp.int32), batches)
        )
        return state._replace(epoch=state.epoch + 1), EpochMetrics(losses, accuracies, guard)

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
        model = nnx.merge(graphdef, _cast_floating(params, dtype), model_state, copy=True)

        def body(totals, batch):
            x, y, mask = batch
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


def _check_finite(guard: StepGuard, params, epoch: int, state, history):
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
    raise NonFiniteError(
        f"non-finite values at epoch {epoch}, step {first_bad_step}: {' and '.join(what)}; "
        "the last good state is kept (try a smaller learning rate)",
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


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    data,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` with ``tx`` on ``data`` for ``config.epochs`` epochs.

    Args:
      model: an ``nnx.Module`` called as ``model(x, train=..., rngs=...)``; not modified.
      tx: the optimizer.
      data: anything with NumPy ``x_train, y_train, x_test, y_test`` (e.g. a ``Dataset``).
      config: the :class:`TrainConfig`.
      on_epoch: called with each epoch's record (progress bars, logging).

    Returns:
      A :class:`FitResult`. History records hold ``epoch, train_loss, train_accuracy,
      test_loss, test_accuracy, epoch_time_s, step_time_s``; epoch times exclude
      compilation, which is reported once as ``compile_time_s``.

    Raises:
      NonFiniteError: the loss or gradients became non-finite (carries the last good state).
    """
    _, train_key = seed_keys(config.seed)
    graphdef, state = init_state(model, tx, train_key)
    # Copy so that donating the state leaves ``model``'s own arrays (and any optimizer
    # state that aliases the parameters) intact.
    state = jax.tree.map(lambda a: a.copy(), state)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    evals = eval_sets(data, config)
    steps = config.steps_per_epoch(len(x_train))
    train_epoch = jax.jit(make_train_epoch(graphdef, tx, config, len(x_train)), donate_argnums=0)
    evaluate = jitted_evaluate(graphdef, config.compute_dtype)
    train_epoch, compile_time_s = _compile(train_epoch, state, x_train, y_train)

    def run_epoch(state: TrainState, epoch: int, history: list[dict]):
        """One epoch: train, check finiteness, evaluate; returns (state, record)."""
        start = time.perf_counter()
        state, metrics = train_epoch(state, x_train, y_train)
        jax.block_until_ready(state)
        epoch_time = time.perf_counter() - start
        _check_finite(metrics.guard, state.params, epoch, state, history)
        evaluations = evaluate(state.params, state.model_state, evals)
        values = jax.device_get(_epoch_metrics(metrics, evaluations))
        record = {"epoch": epoch, **{name: float(values[name]) for name in metric_names(values)}}
        record.update(epoch_time_s=epoch_time, step_time_s=epoch_time / steps)
        return state, record

    history: list[dict] = []
    for epoch in range(1, config.epochs + 1):
        state, record = run_epoch(state, epoch, history)
        history.append(record)
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


def fit_population(
    make_model: Callable[[jax.Array], nnx.Module],
    make_tx: Callable[..., optax.GradientTransformation],
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    data,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int], None] | None = None,
) -> PopulationResult:
    """Train P hyperparameter configurations × S seeds at once under one ``jax.vmap``.

    Member ``(p, s)`` is the model ``make_model(seed_keys(seeds[s])[0])`` trained with
    ``make_tx(**{k: hparams[k][p]})`` and data order/dropout from ``seed_keys(seeds[s])[1]``;
    the hyperparameters reach ``make_tx`` as traced scalars, so the P·S runs share ONE
    compiled epoch. ``config.seed`` is not used (the seeds are).

    A member whose loss or gradients become non-finite is frozen at its last good state
    and marked in ``diverged``; its metrics are NaN from the epoch where that happened.

    Returns:
      A :class:`PopulationResult`; ``histories[metric]`` has shape ``(P, S, epochs)``.
    """
    hparams = {name: np.asarray(values, np.float32) for name, values in hparams.items()}
    sizes = {name: values.shape for name, values in hparams.items()}
    if not hparams or len(set(sizes.values())) != 1 or len(next(iter(sizes.values()))) != 1:
        raise ValueError(f"hparams must map names to 1-D lists of one common length, got {sizes}")
    num_configs, num_seeds = len(next(iter(hparams.values()))), len(seeds)
    if num_seeds == 0:
        raise ValueError("seeds must not be empty")

    # Members are p-major: member m = p * S + s.
    member_hparams = {k: jnp.asarray(np.repeat(v, num_seeds)) for k, v in hparams.items()}
    graphdef, states = init_population(make_model, make_tx, member_hparams, seeds, num_configs)

    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    evals = eval_sets(data, config)
    num_train = len(x_train)
    steps = config.steps_per_epoch(num_train)

    def train_member(state, hp, x, y):
        return make_train_epoch(graphdef, make_tx(**hp), config, num_train)(state, x, y)

    train_epoch = jax.jit(jax.vmap(train_member, in_axes=(0, 0, None, None)), donate_argnums=0)
    evaluate = jitted_evaluate(graphdef, config.compute_dtype, population=True)

    args = (member_hparams, x_train, y_train)
    train_epoch, compile_s = _compile(train_epoch, states, *args)

    num_members = num_configs * num_seeds
    records: dict[str, np.ndarray] = {}
    diverged = np.zeros(num_members, bool)
    epoch_times = np.zeros(config.epochs)
    for epoch in range(config.epochs):
        start = time.perf_counter()
        states, metrics = train_epoch(states, *args)
        jax.block_until_ready(states)
        epoch_times[epoch] = time.perf_counter() - start
        evaluations = evaluate(states.params, states.model_state, evals)
        values, bad = jax.device_get(
            (_epoch_metrics(metrics, evaluations), metrics.guard.first_bad_step >= 0)
        )
        diverged |= bad
        for name, value in values.items():
            history = records.setdefault(name, np.full((num_members, config.epochs), np.nan))
            history[:, epoch] = np.where(diverged, np.nan, value)
        if on_epoch is not None:
            on_epoch(epoch + 1)

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
