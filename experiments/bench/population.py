"""``optlab bench population``: P training runs at once under ``vmap`` vs one after another.

P members (Adam, learning rates log-spaced in [1e-4, 1e-2], one seed each) of the Adam
paper's MNIST MLP train one epoch of ``steps`` minibatches of 128 as ONE compiled function:
``vmap`` of the engine's epoch over the members' states and learning rates, state donated.
Sequential runs are the P = 1 function called P times, so ``sequential_s = P · t_1``; the
figures are ``t_P / t_1`` (time of P vmapped runs relative to one; ideal 1 while the
device has idle lanes, P when it was already full) and the speed-up ``P · t_1 / t_P``.
On a 2-core CPU vmap has little to fill and can lose to a loop; on a GPU the goal is
``t_32 ≤ 3 t_1``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from experiments.bench import timing
from experiments.bench.train import BATCH_SIZE, load_data

INPUT_SHAPE = (28, 28, 1)


def initial_states(size: int, widths):
    """``(graphdef, states, learning_rates)`` of ``size`` members: seeds 0..size-1, learning
    rates log-spaced in [1e-4, 1e-2]; built under one ``vmap`` (so one compilation)."""
    from flax import nnx

    import models
    import optimizers as opt
    from experiments import engine

    def make_model(key):
        return models.build("mlp", INPUT_SHAPE, 10, seed=key, widths=widths)

    def init_member(key, learning_rate):
        return engine.init_state(make_model(key), opt.adam(learning_rate), key)[1]

    keys = jax.random.split(jax.random.key(0), size)
    learning_rates = jnp.logspace(-4, -2, size)
    graphdef = engine.split_model(nnx.eval_shape(lambda: make_model(keys[0])))[0]
    return graphdef, jax.jit(jax.vmap(init_member))(keys, learning_rates), learning_rates


def population_epoch(graphdef, states, learning_rates, x, y):
    """A zero-argument callable training the members of ``states`` for one epoch each, as
    one ``vmap`` of the engine's epoch."""
    import optimizers as opt
    from experiments import engine

    config = engine.TrainConfig(epochs=1, batch_size=BATCH_SIZE)

    def make_tx(learning_rate):
        return opt.adam(learning_rate)

    single = len(learning_rates) == 1
    epoch = jax.jit(engine.population_epoch(graphdef, make_tx, config, single=single))
    train = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    hparams = {"learning_rate": jnp.asarray(learning_rates)}
    objective = engine.Classification()
    carry = [states]

    def run():
        carry[0], output, finite = epoch(carry[0], hparams, train, None, objective)
        return output.loss, finite

    return run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", type=lambda s: [int(p) for p in s.split(",")], help="population sizes P"
    )
    parser.add_argument("--steps", type=int, help="minibatches per timed epoch")
    parser.add_argument(
        "--widths", type=lambda s: tuple(int(w) for w in s.split(",")), help="MLP hidden widths"
    )
    parser.add_argument("--synthetic", action="store_true", help="random data, no files read")


def measure(args: argparse.Namespace) -> dict:
    sizes = args.sizes or ([1, 2, 4] if args.quick else [1, 4, 16, 32, 64])
    if 1 not in sizes:
        sizes = [1, *sizes]
    steps = args.steps or (2 if args.quick else 10)
    widths = args.widths or ((32,) if args.quick else (1000, 1000))
    repeats = args.repeats or (2 if args.quick else 5)
    x, y, source = load_data("mnist", INPUT_SHAPE, steps * BATCH_SIZE, args.synthetic)
    graphdef, states, learning_rates = initial_states(max(sizes), widths)
    candidates = {
        size: population_epoch(
            graphdef, jax.tree.map(lambda a, p=size: a[:p], states), learning_rates[:size], x, y
        )
        for size in sizes
    }
    times = timing.interleaved(candidates, repeats=repeats)
    one = times[1].median_s
    rows = [
        {
            "P": size,
            "vmapped_s": t.median_s,
            "vmapped_iqr_s": t.iqr_s,
            "sequential_s": size * one,
            "vmapped_over_one": t.median_s / one,
            "speedup_vs_sequential": size * one / t.median_s,
            "runs_per_s": size / t.median_s,
        }
        for size, t in times.items()
    ]
    notes = [
        f"MLP 784-{'-'.join(map(str, widths))}-10, Adam, {steps} steps of {BATCH_SIZE}; {source}",
        "sequential_s = P x (P=1 epoch time): the same compiled function called P times",
    ]
    config = {"sizes": sizes, "steps": steps, "widths": list(widths), "repeats": repeats}
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
