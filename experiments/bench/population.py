"""``optlab bench population``: P training runs at once under ``vmap`` vs one after another.

P members (Adam, learning rates log-spaced in [1e-4, 1e-2], one initial key each) of the
Adam paper's MNIST MLP train one epoch of ``steps`` minibatches of 128 as ONE compiled
function: ``vmap`` of the engine's epoch over the members' states and learning rates,
state donated (P = 1 runs the member itself, unvmapped, as :func:`engine.fit` does).

Sequential runs are measured, not computed: the P = 1 compiled epoch called once per
member, on its own copy of that member's state, P calls dispatched back to back and waited
on together (the most favourable order for the loop), timed in the same interleaved run as
the vmapped candidates (``experiments/bench/timing.py``). The figures per P are
``t_P / t_1`` (P vmapped runs relative to one; ideal 1 while the device has idle lanes, P
once it is full) and the speed-up ``sequential_s / vmapped_s``.

Both candidates of a size train the same members from the same states, so after the
warm-up epoch (which compiles) member ``p`` of the vmapped population and the solo run
``p`` must hold the same parameters up to rounding::

    relative_param_diff = max_p ‖θ_vmapped[p] − θ_solo[p]‖ / ‖θ_solo[p] − θ₀[p]‖

It is checked after one epoch, not after the timed ones: batched and unbatched matrix
products round differently, and training amplifies rounding (Adam turns a gradient that
is rounding noise into a step of ±lr); after 4 epochs of the default MLP at lr 5e-3 a
one-ulp change of the initial weights alone moves the parameters by 4 % of the distance
they travelled, so only the first epoch tells a wrong member apart from rounding.

On a 2-core CPU vmap has little to fill and can lose to a loop; on a GPU the goal is
``t_32 ≤ 3 t_1``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import engine
from optlab.experiments.bench import timing
from optlab.experiments.bench.train import BATCH_SIZE, load_data

INPUT_SHAPE = (28, 28, 1)


def make_adam(learning_rate):
    return opt.adam(learning_rate)


def initial_states(size: int, widths):
    """``(graphdef, states, learning_rates)`` of ``size`` members: keys split from key 0,
    learning rates log-spaced in [1e-4, 1e-2]; built under one ``vmap`` (one compilation)."""

    def make_model(key):
        return models.build("mlp", INPUT_SHAPE, 10, seed=key, widths=widths)

    def init_member(key, learning_rate):
        return engine.init_state(make_model(key), make_adam(learning_rate), key)[1]

    keys = jax.random.split(jax.random.key(0), size)
    learning_rates = jnp.logspace(-4, -2, size)
    graphdef = engine.split_model(nnx.eval_shape(lambda: make_model(keys[0])))[0]
    return graphdef, jax.jit(jax.vmap(init_member))(keys, learning_rates), learning_rates


def population_epoch(graphdef, *, single: bool) -> Callable:
    """The engine's epoch of Adam members, jitted with the states donated:
    ``(states, {"learning_rate": (P,)}, train, train_size, objective) -> (states, output,
    finite)``; ``single``: a population of one, run unvmapped."""
    config = engine.TrainConfig(epochs=1, batch_size=BATCH_SIZE)
    return jax.jit(
        engine.population_epoch(graphdef, make_adam, config, single=single), donate_argnums=0
    )


def members(states, start: int, stop: int):
    """Members ``start..stop-1`` of stacked ``states`` (the leading axis kept)."""
    return jax.tree.map(lambda a: a[start:stop], states)


def epoch_runner(epoch: Callable, states, learning_rates, train):
    """``(run, current)``: ``run()`` trains ``states`` (a copy of its own, carried from call
    to call) for one epoch with ``epoch`` and returns the members' mean losses;
    ``current()`` is the states now."""
    hparams = {"learning_rate": jnp.asarray(learning_rates)}
    objective = engine.Classification()
    carry = [jax.tree.map(lambda a: jnp.array(a, copy=True), states)]

    def run():
        carry[0], output, _ = epoch(carry[0], hparams, train, None, objective)
        return output.loss

    return run, lambda: carry[0]


def one_after_another(runs: list[Callable]) -> Callable:
    """A zero-argument callable calling each of ``runs`` once, in order."""
    return lambda: [run() for run in runs]


def relative_param_diff(stacked, solos, initial) -> float:
    """``max_p ‖θ_stacked[p] − θ_solo_p‖ / ‖θ_solo_p − θ₀[p]‖`` (Euclidean norms over all
    parameters): how far member ``p`` of the population is from its solo run, relative to
    how far training moved it. ``solos[p]`` is a population of one (leading axis 1)."""

    def flat(params, index):
        return np.concatenate([np.ravel(np.asarray(a[index], np.float64)) for a in params])

    stacked_params, initial_params = jax.tree.leaves(stacked.params), jax.tree.leaves(initial)
    ratios = []
    for p, solo in enumerate(solos):
        alone, start = flat(jax.tree.leaves(solo.params), 0), flat(initial_params, p)
        together = flat(stacked_params, p)
        ratios.append(np.linalg.norm(together - alone) / np.linalg.norm(alone - start))
    return float(max(ratios))


def measure(args: argparse.Namespace) -> dict:
    sizes = args.sizes or ([1, 2, 4] if args.quick else [1, 4, 16, 32, 64])
    if min(sizes) < 1:
        raise ValueError(f"population sizes must be >= 1, got {sizes}")
    sizes = sorted({1, *sizes})  # P = 1 is the reference of t_P / t_1
    steps = args.steps or (2 if args.quick else 10)
    widths = args.widths or ((32,) if args.quick else (1000, 1000))
    repeats = args.repeats or (2 if args.quick else 5)
    x, y, source = load_data("mnist", INPUT_SHAPE, steps * BATCH_SIZE, args.synthetic)
    train = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    graphdef, states, learning_rates = initial_states(max(sizes), widths)
    solo_epoch = population_epoch(graphdef, single=True)
    vmapped_epoch = population_epoch(graphdef, single=False)
    vmapped, solos, candidates = {}, {}, {}
    for size in sizes:
        epoch = solo_epoch if size == 1 else vmapped_epoch
        vmapped[size] = epoch_runner(epoch, members(states, 0, size), learning_rates[:size], train)
        solos[size] = [
            epoch_runner(solo_epoch, members(states, p, p + 1), learning_rates[p : p + 1], train)
            for p in range(size)
        ]
        candidates[f"vmapped {size}"] = vmapped[size][0]
        candidates[f"sequential {size}"] = one_after_another([run for run, _ in solos[size]])
    for run in candidates.values():  # the warm-up: compiles, then one epoch each
        jax.block_until_ready(run())
    agreement = {
        size: relative_param_diff(
            vmapped[size][1](), [current() for _, current in solos[size]], states.params
        )
        for size in sizes
    }
    times = timing.interleaved(candidates, repeats=repeats, warmup=0)
    one = times["vmapped 1"].median_s
    rows = []
    for size in sizes:
        together, apart = times[f"vmapped {size}"], times[f"sequential {size}"]
        rows.append(
            {
                "P": size,
                "vmapped_s": together.median_s,
                "vmapped_iqr_s": together.iqr_s,
                "sequential_s": apart.median_s,
                "sequential_iqr_s": apart.iqr_s,
                "vmapped_over_one": together.median_s / one,
                "speedup_vs_sequential": apart.median_s / together.median_s,
                "runs_per_s": size / together.median_s,
                "relative_param_diff": agreement[size],
            }
        )
    notes = [
        f"MLP 784-{'-'.join(map(str, widths))}-10, Adam, {steps} steps of {BATCH_SIZE}; {source}",
        "sequential_s: measured, the P=1 compiled epoch called once per member (P calls "
        "back to back), interleaved with the vmapped candidates",
        "relative_param_diff: max over members p of |theta_vmapped[p] - theta_solo[p]| / "
        "|theta_solo[p] - theta_0[p]| (Euclidean, all parameters) after the warm-up epoch",
    ]
    config = {"sizes": sizes, "steps": steps, "widths": list(widths), "repeats": repeats}
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
