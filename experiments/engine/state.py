"""The training state and how a population of them is built.

A model is split once into ``graphdef`` (static structure) and two state pytrees,
``params`` (every ``nnx.Param``) and ``model_state`` (everything else: BatchNorm
statistics, RNG counters); the step merges them back inside the traced function, so a
step is a pure function of a :class:`TrainState` that ``jit``, ``lax.scan`` and ``vmap``
take. A population stacks ``P`` configurations × ``S`` seeds along a leading axis,
p-major (member ``m = p·S + s``); a single run is a population of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

PyTree = Any


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree; checkpointable)."""

    params: PyTree  # nnx.State of nnx.Param
    model_state: PyTree  # nnx.State of everything else (BatchStat, RNG counters, ...)
    opt_state: optax.OptState
    step: jax.Array  # int32, optimizer steps taken
    key: jax.Array  # PRNG key for data order and dropout
    epoch: jax.Array  # int32, epochs completed


class WarmStart(NamedTuple):
    """Start every member from given weights instead of ``make_model``'s initialisation.

    ``params`` (and ``model_state``, if given) replace the built model's; ``opt_state``, if
    given, replaces the optimizer's fresh state. Each is one member's tree; every member
    starts from it.
    """

    params: PyTree
    model_state: PyTree | None = None
    opt_state: optax.OptState | None = None


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(model_key, train_key)`` derived from one integer seed.

    Member ``s`` of a population is ``make_model(model_key)`` trained with ``train_key``
    (data order and dropout), so ``fit(make_model(seed_keys(s)[0]), tx, data,
    replace(config, seed=s))`` reproduces a population member.
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


def _tile(tree: PyTree, times: int) -> PyTree:
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (times, *jnp.shape(leaf))), tree)


def init_population(
    make_model: Callable[[jax.Array], nnx.Module],
    make_tx: Callable[..., optax.GradientTransformation],
    member_hparams: Mapping[str, jax.Array],
    seeds: Sequence[int],
    num_configs: int,
    warm_start: WarmStart | None = None,
):
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
    num_members = len(train_keys)
    if warm_start is not None:
        params = _tile(warm_start.params, num_members)
        if warm_start.model_state is not None:
            model_state = _tile(warm_start.model_state, num_members)
    opt_state = jax.vmap(lambda hp, p: make_tx(**hp).init(p))(member_hparams, params)
    if warm_start is not None and warm_start.opt_state is not None:
        opt_state = _tile(warm_start.opt_state, num_members)
    states = TrainState(
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        step=jnp.zeros(num_members, jnp.int32),
        key=train_keys,
        epoch=jnp.zeros(num_members, jnp.int32),
    )
    return graphdef, states


def member(states: TrainState, index: int) -> TrainState:
    """One member of a stacked population state."""
    return jax.tree.map(lambda leaf: leaf[index], states)
