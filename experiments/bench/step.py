"""``optlab bench step``: one optimizer step, ours vs Optax's, on the same parameter tree.

A step is ``updates, state = tx.update(grads, state, params)`` followed by
``params = optax.apply_updates(params, updates)``, jitted with params and state donated, in
both implementations. Candidates run interleaved (ours, Optax, ours, ...) and the ratio
``ours / optax`` of the median step times is reported per optimizer, tree and dtype.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments.bench import timing

TREES = ("one", "many", "mlp", "vgg16")
MANY_LEAVES = 200

# Optax's implementation of the same update, by our registry name (learning rate -> tx).
OPTAX_COUNTERPARTS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": functools.partial(optax.sgd, momentum=0.9),
    "nesterov": functools.partial(optax.sgd, momentum=0.9, nesterov=True),
    # v <- beta v + (1 - beta) g ; p <- p - lr v
    "sgdm": lambda lr: optax.chain(optax.ema(0.9, debias=False), optax.scale_by_learning_rate(lr)),
    "adagrad": optax.adagrad,
    "rmsprop": optax.rmsprop,
    "adadelta": optax.adadelta,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adamax": optax.adamax,
    "nadam": optax.nadam,
    "amsgrad": optax.amsgrad,
    "lion": optax.lion,
    "adabelief": optax.adabelief,
    "radam": optax.radam,
    "lamb": optax.lamb,
    # Optax's other main-namespace optimizers (optimistic_adam: v1 without its deprecation
    # warning is optimistic_adam_v2 with alpha = beta = learning rate and unit scaling).
    "sign_sgd": optax.sign_sgd,
    "signum": optax.signum,
    "yogi": optax.yogi,
    "adamaxw": optax.adamaxw,
    "nadamw": optax.nadamw,
    "adan": optax.adan,
    "noisy_sgd": functools.partial(optax.noisy_sgd, key=0),
    "optimistic_gradient_descent": optax.optimistic_gradient_descent,
    "optimistic_adam": lambda lr: optax.optimistic_adam_v2(1.0, alpha=lr, beta=lr),
    "optimistic_adam_v2": optax.optimistic_adam_v2,
    "novograd": optax.novograd,
    "lars": optax.lars,
    "fromage": optax.fromage,
    "rprop": optax.rprop,
    # Optax's contrib (the learning-rate-free ones take the same learning rate, a multiplier).
    "madgrad": optax.contrib.madgrad,
    "acprop": optax.contrib.acprop,
    "dog": optax.contrib.dog,
    "dowg": optax.contrib.dowg,
    "cocob": optax.contrib.cocob,
    "dadapt_adamw": optax.contrib.dadapt_adamw,
    "galore": optax.contrib.galore,
    "muon": optax.contrib.muon,
    "schedule_free_adamw": optax.contrib.schedule_free_adamw,
    "schedule_free_sgd": optax.contrib.schedule_free_sgd,
    "adopt": optax.contrib.adopt,
    "ademamix": optax.contrib.ademamix,
    "simplified_ademamix": optax.contrib.simplified_ademamix,
    "prodigy": optax.contrib.prodigy,
}

# Real models' parameter trees: (registry name, input shape, options).
MODEL_TREES = {
    "mlp": ("mlp", (28, 28, 1), {"widths": (1000, 1000)}),  # Adam paper: 784-1000-1000-10
    "vgg16": ("vgg16", (32, 32, 3), {}),  # VGG16 for CIFAR-10, about 15M parameters
}


def model_shapes(tree: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the ``nnx.Param`` leaves of a model from ``models``, by path."""
    name, input_shape, options = MODEL_TREES[tree]
    model = nnx.eval_shape(lambda: models.build(name, input_shape, 10, **options))
    leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(path): leaf.shape for path, leaf in leaves}


def tree_shapes(tree: str, size: int) -> dict[str, tuple[int, ...]]:
    """Leaf shapes of a named tree; ``size`` (parameters) sets the synthetic ones.

    ``one``: one leaf of ``size``; ``many``: 200 leaves totalling ``size``; ``mlp``: the Adam
    paper's MNIST MLP 784-1000-1000-10; ``vgg16``: VGG16 for CIFAR-10 (about 15M).
    """
    if tree == "one":
        return {"w": (size,)}
    if tree == "many":
        per_leaf = max(1, size // MANY_LEAVES)
        return {f"w{i:03d}": (per_leaf,) for i in range(MANY_LEAVES)}
    if tree in MODEL_TREES:
        return model_shapes(tree)
    raise ValueError(f"unknown tree {tree!r}; choose from {', '.join(TREES)}")


def random_tree(shapes, dtype, seed: int = 0, scale: float = 0.01):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        name: (scale * jax.random.normal(key, shape)).astype(dtype)
        for key, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def count_params(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def apply_step(tx: optax.GradientTransformation, params, state, grads):
    """``u, s = tx.update(g, s, p)``; ``p <- p + u``."""
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def jitted_step(tx: optax.GradientTransformation):
    return jax.jit(functools.partial(apply_step, tx), donate_argnums=(0, 1))


def stepper(tx: optax.GradientTransformation, params, grads) -> Callable[[], object]:
    """A zero-argument callable doing one donated step on its own copy of ``params``."""
    step = jitted_step(tx)
    params = jax.tree.map(jnp.copy, params)
    # Some states hold the very arrays they were initialised from (Optax's dog, cocob,
    # madgrad keep x₀ = params): a copy, so that donating params and state is legal.
    carry = [params, jax.tree.map(jnp.copy, tx.init(params))]

    def run():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        return carry[0]

    return run


def ours(name: str, learning_rate: float = 1e-3) -> optax.GradientTransformation:
    return opt.get(name, learning_rate=learning_rate)


def optimizer_names(requested: list[str] | None, need_counterpart: bool) -> list[str]:
    """``requested`` (registry names or ``MODULE:FACTORY`` specs, :func:`optimizers.resolve`),
    or every registered one; without a request and with ``need_counterpart``, only those
    Optax has."""
    if requested:
        return opt.resolve(requested)
    names = opt.available()
    return [n for n in names if n in OPTAX_COUNTERPARTS] if need_counterpart else names


def optax_reference(name: str) -> str:
    """The Optax optimizer ``name`` is timed against: its counterpart, else Optax's Adam
    (a researcher's own optimizer, a paper form), the common baseline."""
    return name if name in OPTAX_COUNTERPARTS else "adam"


def measure(args: argparse.Namespace) -> dict:
    size = int(args.size or (1e6 if args.quick else 10e6))
    trees = args.trees or (["one", "many", "mlp"] if args.quick else list(TREES))
    repeats = args.repeats or (3 if args.quick else 15)
    names = optimizer_names(args.optimizers, need_counterpart=True)
    rows = []
    for tree in trees:
        shapes = tree_shapes(tree, size)
        for dtype in args.dtypes:
            params = random_tree(shapes, jnp.dtype(dtype), seed=0)
            grads = random_tree(shapes, jnp.dtype(dtype), seed=1)
            for name in names:
                times = timing.interleaved(
                    {
                        "ours": stepper(ours(name), params, grads),
                        "optax": stepper(
                            OPTAX_COUNTERPARTS[optax_reference(name)](1e-3), params, grads
                        ),
                    },
                    repeats=repeats,
                )
                rows.append(
                    {
                        "optimizer": name,
                        "optax_reference": optax_reference(name),
                        "tree": tree,
                        "leaves": len(shapes),
                        "params": count_params(params),
                        "dtype": dtype,
                        "ours_ms": 1e3 * times["ours"].median_s,
                        "ours_iqr_ms": 1e3 * times["ours"].iqr_s,
                        "optax_ms": 1e3 * times["optax"].median_s,
                        "optax_iqr_ms": 1e3 * times["optax"].iqr_s,
                        "ours_over_optax": times["ours"].median_s / times["optax"].median_s,
                    }
                )
    config = {"size": size, "trees": trees, "dtypes": args.dtypes, "repeats": repeats}
    return {"config": config, "environment": timing.environment(), "rows": rows}
