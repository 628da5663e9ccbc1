"""The host loop: :func:`fit_population`, and :func:`fit`, a population of one.

Per epoch the host calls ONE compiled function for the whole population (``vmap`` over
members; a population of one runs the same function on the member itself), fetches the
epoch's means once, evaluates, records, checkpoints and reports. A member whose epoch
was not finite (a non-finite loss, or a non-finite state at the end) is replayed with
every step checked (:mod:`experiments.engine.step`): it keeps its last good state, is
frozen and marked diverged (``fit`` raises :class:`NonFiniteError` instead).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from optlab.experiments import parallel
from optlab.experiments.engine import io
from optlab.experiments.engine import splits as splits_lib
from optlab.experiments.engine.config import TrainConfig, check_policy
from optlab.experiments.engine.history import EpochReport, History
from optlab.experiments.engine.objectives import as_objective
from optlab.experiments.engine.state import (
    TrainState,
    WarmStart,
    init_population,
    member,
    seed_keys,
    split_model,
)
from optlab.experiments.engine.step import make_epoch, make_evaluate, state_finite
from optlab.optimizers import finite
from optlab.optimizers.schedule_free import eval_params

PyTree = Any


class NonFiniteError(FloatingPointError, ValueError):
    """A run's loss, gradients, updates or state became NaN or infinite.

    Attributes:
      epoch: the 1-based epoch in which it happened.
      step: the 0-based step within that epoch.
      what: what went non-finite first (``"loss"``, ``"gradient"``, ``"update"``,
        ``"parameter"``, ``"optimizer state"``, ``"model state"``).
      leaves: paths of the leaves that did (empty for the loss).
      state: the last good :class:`TrainState` (before the bad step; finite).
      history: the :class:`History` of the completed epochs.
    """

    def __init__(self, message, *, epoch, step, what, leaves, state=None, history=None):
        super().__init__(message)
        self.epoch, self.step, self.what, self.leaves = epoch, step, what, leaves
        self.state, self.history = state, history


class PopulationResult(NamedTuple):
    """What :func:`fit_population` returns: P configurations × S seeds trained together.

    ``result.histories["test_accuracy"][p, s]`` is member (p, s)'s curve, and
    ``engine.member(result.state, p * S + s)`` its final :class:`TrainState` (the state is
    stacked p-major).

    Attributes:
      history: the per-epoch metrics, ``history.metrics[name]`` of shape ``(P, S, epochs)``.
      hparams: name -> ``(P,)`` the configurations trained.
      seeds: ``(S,)``.
      state: the final :class:`TrainState` stacked over the ``P·S`` members (p-major).
      graphdef: the model's structure (``nnx.merge(graphdef, params, model_state)``).
      compile_time_s: lowering + compilation of the training epoch.
      non_finite: member index -> what went non-finite first, for diverged members.
    """

    history: History
    hparams: dict[str, np.ndarray]
    seeds: np.ndarray
    state: TrainState
    graphdef: Any
    compile_time_s: float
    non_finite: dict[int, str]

    @property
    def histories(self) -> dict[str, np.ndarray]:
        """Metric name -> ``(P, S, epochs)`` values, NaN after a member diverged."""
        return self.history.metrics

    @property
    def diverged(self) -> np.ndarray:
        """``(P, S)`` booleans: the members stopped by a non-finite value (see ``non_finite``)."""
        return self.history.diverged

    @property
    def epoch_time_s(self) -> np.ndarray:
        """``(epochs,)`` wall seconds of each epoch of the whole population."""
        return self.history.epoch_time_s

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the same for every member)."""
        return self.history.steps_per_epoch


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      model: the trained model (merged back from the final state, at the parameters to
        evaluate: Schedule-Free's ``x``, :func:`optimizers.eval_params`); the input model is
        not modified.
      history: the :class:`History` of the population of one; ``history.records()`` gives
        per-epoch dicts of floats.
      state: the final :class:`TrainState` (one member, not stacked).
      compile_time_s: lowering + compilation of the training epoch (0 when a finished run
        is restored).
      steps_per_epoch: optimizer steps per epoch.
    """

    model: nnx.Module
    history: History
    state: TrainState
    compile_time_s: float
    steps_per_epoch: int


# --------------------------------------------------------------------------- compilation

_COMPILED: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 32


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((jnp.shape(a), jnp.result_type(a), getattr(a, "sharding", None))
                          for a in leaves)  # fmt: skip


def _compiled(key, build: Callable, args) -> tuple[Callable, float]:
    """``(executable, seconds to compile)``; cached per ``key`` and argument signature, so a
    repeated fit (the continual loop) compiles once (seconds 0 on a hit)."""
    signature = (key, _signature(args))
    if signature in _COMPILED:
        _COMPILED.move_to_end(signature)
        return _COMPILED[signature], 0.0
    start = time.perf_counter()
    executable = jax.jit(build()).lower(*args).compile()
    seconds = time.perf_counter() - start
    _COMPILED[signature] = executable
    while len(_COMPILED) > _CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return executable, seconds


def _over_members(fn: Callable, single: bool, shared: int) -> Callable:
    """``fn`` of one member as a function of the stacked population: ``vmap`` over the
    leading axis of the first ``len(args) - shared`` arguments, or for a population of one,
    ``fn`` on the member itself (no batching overhead)."""
    if not single:
        return lambda *args: jax.vmap(fn, in_axes=(0,) * (len(args) - shared) + (None,) * shared)(
            *args
        )

    def one(*args):
        per_member, rest = args[: len(args) - shared], args[len(args) - shared :]
        out = fn(*(jax.tree.map(lambda a: a[0], a) for a in per_member), *rest)
        return jax.tree.map(lambda a: a[None], out)

    return one


def population_epoch(graphdef, make_tx, config: TrainConfig, *, single: bool, skip: bool = False,
                     checked: bool = False, mesh=None) -> Callable:  # fmt: skip
    """The function :func:`fit_population` compiles and calls once per epoch.

    ``(states, member_hparams, train, train_size, objective) -> (states, EpochOutput,
    state_finite)``, over the population's stacked states (``single``: a population of
    one, run without ``vmap``). ``make_tx(**hparams)`` builds each member's optimizer.
    """

    def member_epoch(state, hp, train, train_size, objective):
        epoch = make_epoch(graphdef, make_tx(**hp), batch_size=config.batch_size,
                           compute_dtype=config.compute_dtype, skip=skip, checked=checked,
                           mesh=mesh)  # fmt: skip
        new, out = epoch(state, train, train_size, objective)
        return new, out, state_finite(new)

    return _over_members(member_epoch, single, shared=3)


def _evaluate_builder(graphdef, compute_dtype: str, single: bool):
    evaluate = make_evaluate(graphdef, compute_dtype)

    def member_evaluate(params, opt_state, model_state, objective, evals):
        params = eval_params(opt_state, params)  # Schedule-Free's x; else the parameters
        return {split: evaluate(params, model_state, objective, data)
                for split, data in evals.items()}  # fmt: skip

    return lambda: _over_members(member_evaluate, single, shared=2)


@jax.jit
def _where_members(mask, new, old):
    """Per member (leading axis): ``new`` where ``mask``, else ``old``."""

    def pick(n, o):
        return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


# --------------------------------------------------------------------------- reporting


def _leaf_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def describe_non_finite(guard, index: int, skip: bool) -> tuple[str, list[str]]:
    """``(what, leaf paths)``: the first thing the checked step found non-finite, in the
    order loss, gradient, update, parameter, optimizer state, model state."""
    kinds = [("gradient", guard.grads), ("update", guard.updates), ("parameter", guard.params),
             ("optimizer state", guard.opt_state), ("model state", guard.model_state)]  # fmt: skip
    if skip:
        kinds = kinds[1:]
    elif not bool(np.asarray(guard.loss)[index]):
        return "loss", []
    for what, tree in kinds:
        flags = [bool(np.asarray(leaf)[index]) for leaf in jax.tree.leaves(tree)]
        bad = [name for name, ok in zip(_leaf_names(tree), flags, strict=True) if not ok]
        if bad:
            return what, bad
    return "state", []


def gradients_finite(guard, index: int) -> bool:
    """Whether every gradient of member ``index`` was finite at its first bad step."""
    return all(bool(np.asarray(leaf)[index]) for leaf in jax.tree.leaves(guard.grads))


def _message(what: str, leaves: list[str], gave_up_skipping: bool) -> str:
    if what == "loss":
        return "the loss"
    where = f" of {', '.join(leaves)}" if leaves else ""
    giving_up = " (too many non-finite gradients in a row to skip)" if gave_up_skipping else ""
    return f"the {what}{where}{giving_up}"


# --------------------------------------------------------------------------- training


def _place(states, splits: splits_lib.Splits, config: TrainConfig):
    """``(states, train, mesh)`` on the default device, or on a data-parallel mesh (over
    every process's devices after ``jax.distributed.initialize``; each process places its
    own copy, :func:`parallel.place`)."""
    if not config.data_parallel:
        return states, jax.tree.map(jnp.asarray, splits.train), None
    mesh = parallel.data_mesh()
    parallel.check_batch_divisible(config.batch_size or splits.num_train, mesh)
    states = parallel.place(states, parallel.state_shardings(states, mesh))
    train = parallel.place(jax.tree.map(np.asarray, splits.train), parallel.replicated(mesh))
    return states, train, mesh


def _replicated(tree, mesh):
    """``tree`` as it is, or with a mesh a full copy on each of its devices: the inputs a
    compiled function takes beside the placed state (under several processes every input
    must be a global array)."""
    return tree if mesh is None else parallel.place(tree, parallel.replicated(mesh))


HISTORY_BYTES_PER_MEMBER_EPOCH = 16 * 8  # up to 16 float64 metrics per member and epoch


def machine_memory_bytes() -> int:
    """The memory the run's state lives in: the device's limit where it reports one (a
    GPU), else this machine's physical memory."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(make_model, make_tx, hparams, seed: int, num_members: int, epochs: int) -> None:
    """Refuse, before anything is allocated, a run whose state and history cannot fit.

    Estimate: ``3 · M · b`` for the states of ``M`` members of ``b`` bytes each (parameters,
    model and optimizer state, found from shapes alone: the state, the epoch's new state and
    the epoch-start state kept for a replay) plus ``M · epochs · 128`` bytes of history.

    Raises:
      ValueError: the estimate exceeds :func:`machine_memory_bytes`, with both figures.
    """
    first = {name: jnp.asarray(values[0]) for name, values in hparams.items()}

    def member_state(key, hparams):  # traced hyperparameters: the factory checks none
        _, params, model_state = split_model(make_model(key))
        return params, model_state, make_tx(**hparams).init(params)

    shapes = jax.eval_shape(member_state, seed_keys(seed)[0], first)
    member_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
    needed = 3 * num_members * member_bytes + num_members * epochs * HISTORY_BYTES_PER_MEMBER_EPOCH
    available = machine_memory_bytes()
    if needed > available:
        raise ValueError(
            f"this run needs about {needed / 2**30:,.1f} GiB ({num_members:,} runs of "
            f"{member_bytes / 2**20:,.2f} MiB of state, {epochs:,} epochs of history), more "
            f"than the {available / 2**30:,.1f} GiB here; use fewer seeds, configurations or "
            "epochs"
        )


def _check_hparams(hparams: Mapping[str, Sequence[float]]) -> tuple[dict[str, np.ndarray], int]:
    hparams = {name: np.asarray(values, np.float32) for name, values in hparams.items()}
    if not hparams:
        return {}, 1
    sizes = {name: values.shape for name, values in hparams.items()}
    if len(set(sizes.values())) != 1 or len(next(iter(sizes.values()))) != 1:
        raise ValueError(f"hparams must map names to 1-D lists of one common length, got {sizes}")
    return hparams, len(next(iter(hparams.values())))


def fit_population(
    make_model: Callable[[jax.Array], nnx.Module],
    make_tx: Callable[..., optax.GradientTransformation],
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    data,
    config: TrainConfig,
    *,
    loss=None,
    warm_start: WarmStart | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    on_non_finite: str = "stop",
    fingerprint: Mapping[str, Any] | None = None,
    _raise_non_finite: bool = False,
) -> PopulationResult:
    """Train P hyperparameter configurations × S seeds at once under one ``jax.vmap``.

    Member ``(p, s)`` is the model ``make_model(seed_keys(seeds[s])[0])`` trained with
    ``make_tx(**{k: hparams[k][p]})`` and data order/dropout from ``seed_keys(seeds[s])[1]``;
    the hyperparameters reach ``make_tx`` as traced scalars, so the P·S runs share ONE
    compiled epoch. ``hparams={}`` is one configuration (``make_tx()``).

    Args:
      make_model: ``key -> nnx.Module``.
      make_tx: ``(**hparams) -> optax.GradientTransformation``.
      hparams: name -> P values.
      seeds: the S seeds.
      data: a :class:`~experiments.engine.splits.Splits`, or a dataset with NumPy
        ``x_train, y_train, x_test, y_test`` (and ``x_val, y_val``) for a classifier.
      config: the :class:`TrainConfig` (``config.seed`` is not used: the seeds are).
      loss: the :class:`~experiments.engine.objectives.Objective` (default
        ``Classification()``), or a function ``(model, batch, key) -> (loss, metrics)``.
      warm_start: start every member from these weights (and optimizer state).
      on_epoch: called with an :class:`EpochReport` after each epoch, restored ones
        included.
      checkpoint_dir: save the stacked state of all members and the history there with
        Orbax after every ``checkpoint_every``-th epoch and after the last; ``keep`` are
        retained. Every saved state is finite (diverged members hold their last good
        state).
      resume: continue from the latest valid checkpoint in ``checkpoint_dir`` (from
        scratch if there is none); a resumed run ends bitwise equal to an uninterrupted
        one. Without it, a folder that holds checkpoints is refused.
      on_non_finite: ``"stop"``: a member whose loss, gradients, updates or state become
        non-finite is frozen at its last good state and marked diverged (its metrics are
        NaN from that epoch on). ``"skip"``: ``make_tx`` is wrapped in
        :func:`optimizers.finite.skip_non_finite`, skipped updates are counted as
        ``skipped_steps``, and a member diverges only when its state goes non-finite.
      fingerprint: what identifies the optimizer and model options (e.g.
        ``{"optimizer": "adam"}``); it must match to resume.

    Returns:
      A :class:`PopulationResult`.

    Raises:
      ValueError: bad arguments or data (non-finite inputs, labels out of range, shapes
        that do not fit the model), before any compilation.
      CheckpointMismatchError: the checkpoint is from another configuration.
    """
    check_policy(on_non_finite)
    skip = on_non_finite == "skip"
    objective = as_objective(loss)
    hparams, num_configs = _check_hparams(hparams)
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    splits = splits_lib.as_splits(data, config.eval_train)
    if splits.train_size is not None and config.batch_size is None:
        raise ValueError("padded training data (train_size) needs a batch_size")
    steps = config.steps_per_epoch(splits.num_train)
    splits_lib.check_finite(splits)
    if splits.evals and not objective.evaluates:
        raise ValueError(
            f"the splits {sorted(splits.evals)} cannot be evaluated: the loss has no per-example "
            "metrics; pass engine.FunctionObjective(loss_fn, metrics_fn), or no evals"
        )
    if skip:
        make_tx = _Skipping(make_tx)

    num_seeds = len(seeds)
    num_members = num_configs * num_seeds
    single = num_members == 1
    check_memory(make_model, make_tx, hparams, seeds[0], num_members, config.epochs)
    member_hparams = {k: jnp.asarray(np.repeat(v, num_seeds)) for k, v in hparams.items()}
    graphdef, states = init_population(
        make_model, make_tx, member_hparams, seeds, num_configs, warm_start
    )
    first = member(states, 0)

    def model_outputs(x):
        return jax.eval_shape(
            lambda x: nnx.merge(graphdef, first.params, first.model_state, copy=True)(
                x, train=False
            ),
            jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
        )

    objective.check_data(model_outputs, splits.train, "train")
    for split, tree in splits.evals.items():
        objective.check_data(model_outputs, tree, split)
    checkpointer = io.open_checkpointer(checkpoint_dir, checkpoint_every, keep, resume)
    run_fingerprint = None
    if checkpointer is not None:  # hashing the data costs a pass over it: only to resume
        model_name = type(nnx.merge(graphdef, first.params, first.model_state)).__name__
        run_fingerprint = io.run_fingerprint(
            model_name, splits, config, objective, on_non_finite,
            {"hparams": {k: v.tolist() for k, v in hparams.items()}, "seeds": seeds,
             "user": dict(fingerprint or {})},
        )  # fmt: skip
    history = History.empty(num_configs, num_seeds, config.epochs, steps)
    non_finite: dict[int, str] = {}
    compile_s = 0.0
    try:
        start_epoch = 0
        if checkpointer is not None and (
            restored := checkpointer.restore_latest(states, run_fingerprint)
        ):
            states, saved, start_epoch = restored
            history = History.from_json(saved, config.epochs)
            for epoch in range(1, start_epoch + 1):
                if on_epoch is not None:
                    on_epoch(history.report(epoch, restored=True))
        states, train, mesh = _place(states, splits, config)
        train_size = None if splits.train_size is None else jnp.int32(splits.train_size)
        evals = _replicated({
            name: splits_lib.eval_batches(tree, config.eval_batch_size)
            for name, tree in splits.evals.items()
        }, mesh)  # fmt: skip
        objective = _replicated(objective, mesh)
        args = (_replicated(member_hparams, mesh), train, _replicated(train_size, mesh), objective)
        static = (graphdef, make_tx, config.batch_size, config.compute_dtype, skip, mesh, single)
        if start_epoch < config.epochs:
            train_epoch, compile_s = _compiled(
                ("epoch", *static),
                lambda: population_epoch(graphdef, make_tx, config, single=single, skip=skip,
                                         mesh=mesh), (states, *args),
            )  # fmt: skip
        evaluate = None
        if evals:
            evaluate, _ = _compiled(
                ("evaluate", graphdef, config.compute_dtype, single),
                _evaluate_builder(graphdef, config.compute_dtype, single),
                (states.params, states.opt_state, states.model_state, objective, evals),
            )

        for epoch in range(start_epoch + 1, config.epochs + 1):
            start = time.perf_counter()
            new_states, out, state_ok = train_epoch(states, *args)
            jax.block_until_ready(new_states)
            frozen = history.diverged.reshape(-1)
            state_ok, losses_finite = parallel.fetch((state_ok, out.losses_finite))
            ok = state_ok & (True if skip else losses_finite)
            suspect = ~ok & ~frozen
            newly_diverged = np.zeros(num_members, bool)
            if suspect.any():
                checked_epoch, seconds = _compiled(
                    ("checked", *static),
                    lambda: population_epoch(graphdef, make_tx, config, single=single, skip=skip,
                                             checked=True, mesh=mesh), (states, *args),
                )  # fmt: skip
                compile_s += seconds
                replayed, checked_out, _ = checked_epoch(states, *args)
                mask = _replicated(jnp.asarray(suspect), mesh)
                new_states = _where_members(mask, replayed, new_states)
                out = _where_members(mask, checked_out._replace(guard=None), out)
                guard = parallel.fetch(checked_out.guard)
                bad_step = guard.first_bad_step
                newly_diverged = suspect & (bad_step >= 0)
                for index in np.flatnonzero(newly_diverged):
                    what, leaves = describe_non_finite(guard, index, skip)
                    gave_up = skip and not gradients_finite(guard, index)
                    non_finite[int(index)] = (
                        f"non-finite values at epoch {epoch}, step {bad_step[index]}: "
                        f"{_message(what, leaves, gave_up)}"
                    )
                    if _raise_non_finite:
                        _raise(non_finite[int(index)], skip, checkpointer, epoch,
                               int(bad_step[index]),
                               what, leaves, member(new_states, index), history)  # fmt: skip
            if frozen.any():
                new_states = _where_members(_replicated(jnp.asarray(frozen), mesh), states,
                                            new_states)  # fmt: skip
            states = new_states
            jax.block_until_ready(states)
            epoch_time = time.perf_counter() - start

            values = {"train_loss": out.loss}
            values.update({f"train_{name}": value for name, value in out.metrics.items()})
            if evaluate is not None:
                evaluated = evaluate(states.params, states.opt_state, states.model_state,
                                     objective, evals)  # fmt: skip
                for split, metrics in evaluated.items():
                    values.update({f"{split}_{name}": value for name, value in metrics.items()})
            if skip:
                values["skipped_steps"] = out.skipped
            values = parallel.fetch(values)
            report = history.record(epoch, values, epoch_time,
                                    newly_diverged.reshape(num_configs, num_seeds))  # fmt: skip
            if checkpointer is not None:
                checkpointer.save(epoch, states, history.to_json(), run_fingerprint,
                                  force=epoch == config.epochs)  # fmt: skip
            if on_epoch is not None:
                on_epoch(report)
    finally:
        if checkpointer is not None:
            checkpointer.close()

    return PopulationResult(
        history=history,
        hparams=hparams,
        seeds=np.asarray(seeds),
        state=states,
        graphdef=graphdef,
        compile_time_s=compile_s,
        non_finite=non_finite,
    )


def _raise(message, skip, checkpointer, epoch, step, what, leaves, state, history):
    kept = "the last good state is kept"
    if checkpointer is not None:
        saved = checkpointer.steps()
        kept += (
            f" and the last good checkpoint is epoch {saved[-1]} in {checkpointer.directory}"
            if saved
            else f"; no checkpoint was written yet in {checkpointer.directory}"
        )
    raise NonFiniteError(
        f"{message}; {kept} (try a smaller learning rate"
        + (")" if skip else ", or --on-non-finite skip)"),
        epoch=epoch, step=step, what=what, leaves=leaves, state=state, history=history,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Skipping:
    """``make_tx`` wrapped in :func:`optimizers.finite.skip_non_finite`; equal for an equal
    ``make_tx``, so repeated fits under "skip" reuse the compiled epoch."""

    make_tx: Callable

    def __call__(self, **hparams):
        return finite.skip_non_finite(self.make_tx(**hparams))


@dataclasses.dataclass(frozen=True, eq=False)
class _Returns:
    """The ``make_tx`` of :func:`fit`: returns ``tx``. Equal for the same ``tx`` object, so a
    repeated fit with one optimizer reuses the compiled epoch (the cache holds ``tx``, so
    its ``id`` is not reused while cached)."""

    tx: optax.GradientTransformation

    def __call__(self):
        return self.tx

    def __eq__(self, other):
        return isinstance(other, _Returns) and other.tx is self.tx

    def __hash__(self):
        return id(self.tx)


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    data,
    config: TrainConfig,
    *,
    loss=None,
    warm_start: WarmStart | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    on_non_finite: str = "stop",
    fingerprint: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with ``tx`` on ``data`` for ``config.epochs`` epochs.

    :func:`fit_population` with one member (the seed ``config.seed``) and no
    hyperparameters: the arguments mean the same, except that a non-finite loss,
    gradient, update or state raises :class:`NonFiniteError` (carrying the last good
    state; the last good checkpoint stays on disk) instead of freezing the member.

    Returns:
      A :class:`FitResult`.
    """
    result = fit_population(
        lambda key: model, _Returns(tx), {}, [config.seed], data, config,
        loss=loss, warm_start=warm_start, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, keep=keep, resume=resume,
        on_non_finite=on_non_finite, fingerprint=fingerprint, _raise_non_finite=True,
    )  # fmt: skip
    state = member(result.state, 0)
    # The model to use: Schedule-Free's x (the state keeps y, where gradients are taken).
    trained = nnx.merge(result.graphdef, eval_params(state.opt_state, state.params),
                        state.model_state)  # fmt: skip
    return FitResult(trained, result.history, state, result.compile_time_s,
                     result.steps_per_epoch)  # fmt: skip
