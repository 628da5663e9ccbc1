"""``optlab bench memory``: optimizer-state bytes per parameter and memory of a training step.

For each optimizer, ``state_B_per_param = sum of the state leaves' nbytes / parameters``,
measured from ``tx.init(params)`` (so step counters and any extra buffers count). The
training step is the engine's ``train_step`` (forward, backward, update; state donated) on
the Adam paper's MNIST MLP 784-1000-1000-10 at batch 128. Its compiled
``memory_analysis()`` gives argument, output and temporary sizes on every backend;
``device.memory_stats()`` gives the peak memory in use where the backend reports it (GPUs;
None on CPU).
"""

from __future__ import annotations

import argparse
import functools

import jax
import optax
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import engine
from optlab.experiments.bench import roofline, step, timing

BATCH_SIZE = 128
INPUT_SHAPE = (28, 28, 1)


def state_bytes_per_param(tx: optax.GradientTransformation, params) -> float:
    """``sum(leaf.nbytes for leaf in state) / count(params)``, from shapes only."""
    state = jax.eval_shape(tx.init, params)
    return roofline.tree_bytes(state) / step.count_params(params)


def step_memory(make_model, tx: optax.GradientTransformation, x, y) -> dict:
    """Compiled memory sizes of one donated training step, and the device's peak if known.

    The step is compiled from shapes alone; it runs (on a real state) only where the
    device reports its peak memory.
    """

    def make_state():
        return engine.init_state(make_model(), tx, jax.random.key(0))[1]

    graphdef = engine.split_model(nnx.eval_shape(make_model))[0]
    state = jax.eval_shape(make_state)
    train_step = functools.partial(
        engine.train_step, graphdef=graphdef, tx=tx, objective=engine.Classification()
    )
    batch = {"x": x, "y": y}
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile()
    analysis = compiled.memory_analysis()
    result = {
        "params": step.count_params(state.params),
        "state_bytes": roofline.tree_bytes(state.opt_state),
        "argument_bytes": analysis.argument_size_in_bytes,
        "temp_bytes": analysis.temp_size_in_bytes,
        "alias_bytes": analysis.alias_size_in_bytes,
        "peak_device_bytes": "n/a on CPU",
    }
    if jax.devices()[0].memory_stats() is not None:
        jax.block_until_ready(compiled(jax.jit(make_state)(), batch))
        result["peak_device_bytes"] = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
    return result


def measure(args: argparse.Namespace) -> dict:
    widths = args.widths or ((100,) if args.quick else (1000, 1000))
    names = step.optimizer_names(args.optimizers, need_counterpart=False)
    x = jax.random.uniform(jax.random.key(2), (BATCH_SIZE, *INPUT_SHAPE))
    y = jax.random.randint(jax.random.key(3), (BATCH_SIZE,), 0, 10)
    rows = []
    for name in names:
        tx = opt.get(name, learning_rate=1e-3)
        memory = step_memory(
            lambda: models.build("mlp", INPUT_SHAPE, 10, seed=0, widths=widths), tx, x, y
        )
        n = memory["params"]
        rows.append(
            {
                "optimizer": name,
                "state_buffers": opt.info(name).state_per_param,
                "state_B_per_param": memory["state_bytes"] / n,
                "step_argument_B_per_param": memory["argument_bytes"] / n,
                "step_temp_B_per_param": memory["temp_bytes"] / n,
                "step_alias_B_per_param": memory["alias_bytes"] / n,
                "peak_device_bytes": memory["peak_device_bytes"],
            }
        )
    notes = [
        f"MLP 784-{'-'.join(map(str, widths))}-10, float32, batch {BATCH_SIZE}",
        "state_B_per_param: bytes of tx.init(params) / params (step counters included)",
        "peak_device_bytes is the process peak (monotone over the run), where reported",
    ]
    config = {"widths": list(widths), "batch_size": BATCH_SIZE}
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
