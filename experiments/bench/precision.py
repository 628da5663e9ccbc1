"""``optlab bench precision``: a bfloat16 first moment (``mu_dtype``), its savings and its cost.

For each Adam-family optimizer, ``mu_dtype=float32`` and ``mu_dtype=bfloat16`` side by side:

- ``state_B_per_param``: ``sum of tx.init(params)'s leaves' nbytes / parameters`` on the
  model's tree (Adam: ``4 + 4 = 8`` B with a float32 ``m``, ``2 + 4 = 6`` B with bfloat16),
  and ``state_dtypes``, the floating dtypes found in that state.
- ``step_hlo_B_per_param``: bytes per parameter that the compiled step reads and writes
  (counted from its HLO as in ``optlab bench roofline``).
- ``step_over_float32``: median time of one jitted, donated ``tx.update`` + ``apply_updates``
  with a bfloat16 ``m`` over the float32 one, interleaved (``experiments/bench/timing.py``).
- the accuracy cost: the MLP trained with each ``mu_dtype`` by the population engine
  (:func:`experiments.engine.fit_population`, one population per dtype, S seeds × the
  learning rates), then the final training loss (a full evaluation pass) and test accuracy,
  mean ± standard deviation over the seeds.

Both populations use the same seeds, hence the same initial weights and data order, so
seed ``s`` of one and of the other differ only in the rounding of ``m``. The comparison is
therefore paired: ``d_s = metric_s(bfloat16) − metric_s(float32)``, summarised by its mean
and a paired t-test (``scipy.stats.ttest_rel``). The difference is called *within seed
noise* when ``|mean d| ≤ σ_seeds``, the standard deviation of the float32 runs over seeds
(the spread one gets from changing the seed alone).
"""

from __future__ import annotations

import argparse
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import data, engine
from optlab.experiments.bench import roofline, step, timing
from optlab.experiments.bench.memory import state_bytes_per_param

MU_DTYPES = ("float32", "bfloat16")
DEFAULT_OPTIMIZERS = ("adam", "nadam", "adamw")
METRICS = ("train_loss", "test_accuracy")
DATASETS = ("digits", "mnist", "fashion_mnist")


def optimizers_with_mu_dtype() -> list[str]:
    """Registered optimizers whose factory takes a ``mu_dtype`` argument."""
    return [
        name
        for name in opt.available()
        if "mu_dtype" in inspect.signature(opt.get_factory(name)).parameters
    ]


def check_optimizers(names: list[str]) -> list[str]:
    """``names`` if every one accepts ``mu_dtype``, else ``ValueError`` listing those that do."""
    valid = optimizers_with_mu_dtype()
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"optimizer(s) {unknown} have no mu_dtype; choose from {', '.join(valid)}")
    return names


def load_subset(name: str, train_size: int | None):
    """The dataset ``name`` (local files only) with its first ``train_size`` training examples."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if train_size is not None and train_size < 1:
        raise ValueError(f"train_size must be a positive integer, got {train_size}")
    ds = data.load(name, download=False)
    if train_size is None or train_size >= len(ds.x_train):
        return ds
    return ds.replace(x_train=ds.x_train[:train_size], y_train=ds.y_train[:train_size])


def mlp_shapes(input_shape, num_classes: int, widths) -> dict[str, tuple[int, ...]]:
    """Shapes of the MLP's ``nnx.Param`` leaves, by path (from shapes only, nothing runs)."""
    model = nnx.eval_shape(lambda: models.build("mlp", input_shape, num_classes, widths=widths))
    leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(path): leaf.shape for path, leaf in leaves}


def state_dtypes(tx, params) -> str:
    """The floating dtypes of ``tx.init(params)``'s leaves, sorted, comma-separated (from
    shapes only): ``"bfloat16,float32"`` for Adam with a bfloat16 ``m``."""
    state = jax.eval_shape(tx.init, params)
    leaves = jax.tree.leaves(state)
    floating = {str(leaf.dtype) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)}
    return ",".join(sorted(floating))


def step_traffic(name: str, params, grads) -> dict[str, float]:
    """mu_dtype -> bytes per parameter the compiled step moves (``roofline.hlo_traffic``)."""
    n = step.count_params(params)
    return {
        mu_dtype: roofline.hlo_traffic(
            roofline.compile_step(
                opt.get(name, learning_rate=1e-3, mu_dtype=mu_dtype), params, grads
            )
        )["bytes"]
        / n
        for mu_dtype in MU_DTYPES
    }


def step_times(name: str, params, grads, repeats: int) -> dict[str, timing.Timing]:
    """mu_dtype -> interleaved timing of one donated step of ``name`` on ``params``."""
    candidates = {
        mu_dtype: step.stepper(opt.get(name, learning_rate=1e-3, mu_dtype=mu_dtype), params, grads)
        for mu_dtype in MU_DTYPES
    }
    return timing.interleaved(candidates, repeats=repeats)


def train_population(name: str, mu_dtype: str, ds, widths, learning_rates, seeds, epochs: int):
    """Final ``{metric: (P, S)}`` of the MLP trained with ``name(mu_dtype=mu_dtype)``."""

    def make_model(key):
        return models.build("mlp", ds.input_shape, ds.num_classes, seed=key, widths=widths)

    def make_tx(learning_rate):
        return opt.get(name, learning_rate=learning_rate, mu_dtype=mu_dtype)

    config = engine.TrainConfig(epochs=epochs, batch_size=128, eval_train=True)
    result = engine.fit_population(
        make_model, make_tx, {"learning_rate": learning_rates}, seeds, ds, config
    )
    return {metric: result.histories[metric][:, :, -1] for metric in METRICS}


def paired_summary(low: np.ndarray, full: np.ndarray) -> dict[str, float | bool]:
    """Summary of ``low`` (bfloat16 m) against ``full`` (float32 m), both ``(S,)`` by seed.

    ``d = low − full``; ``within_seed_noise``: ``|mean d| ≤ std(full)`` over seeds;
    ``p_value``: paired t-test of ``mean d = 0`` (NaN with one seed or identical runs).
    """
    diff = low - full
    seed_std = float(np.std(full, ddof=1)) if len(full) > 1 else math.nan
    p_value = math.nan
    if len(diff) > 1 and np.ptp(diff) > 0:
        p_value = float(scipy.stats.ttest_rel(low, full).pvalue)
    return {
        "diff": float(diff.mean()),
        "seed_std": seed_std,
        "p_value": p_value,
        "within_seed_noise": bool(abs(diff.mean()) <= seed_std),
    }


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    return float(values.mean()), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def optimizer_rows(name, states, traffic, times, finals, learning_rates) -> list[dict]:
    """One row per (mu_dtype, learning rate) of optimizer ``name``; ``states``: mu_dtype ->
    (state bytes per parameter, state dtypes)."""
    rows = []
    for mu_dtype in MU_DTYPES:
        for p, learning_rate in enumerate(learning_rates):
            loss_mean, loss_std = mean_std(finals[mu_dtype]["train_loss"][p])
            acc_mean, acc_std = mean_std(finals[mu_dtype]["test_accuracy"][p])
            row = {
                "optimizer": name,
                "mu_dtype": mu_dtype,
                "learning_rate": learning_rate,
                "state_B_per_param": states[mu_dtype][0],
                "state_dtypes": states[mu_dtype][1],
                "step_hlo_B_per_param": traffic[mu_dtype],
                "step_ms": 1e3 * times[mu_dtype].median_s,
                "step_iqr_ms": 1e3 * times[mu_dtype].iqr_s,
                "step_over_float32": times[mu_dtype].median_s / times["float32"].median_s,
                "train_loss": loss_mean,
                "train_loss_std": loss_std,
                "test_accuracy": acc_mean,
                "test_accuracy_std": acc_std,
            }
            if mu_dtype != "float32":
                for metric in METRICS:
                    summary = paired_summary(
                        finals[mu_dtype][metric][p], finals["float32"][metric][p]
                    )
                    row.update({f"{metric}_{key}": value for key, value in summary.items()})
            rows.append(row)
    return rows


def measure(args: argparse.Namespace) -> dict:
    names = check_optimizers(args.optimizers or list(DEFAULT_OPTIMIZERS))
    quick = args.quick
    dataset = args.dataset or ("digits" if quick else "mnist")
    train_size = args.train_size if args.train_size is not None else (None if quick else 10_000)
    epochs = args.epochs if args.epochs is not None else (2 if quick else 5)
    num_seeds = args.seeds if args.seeds is not None else (2 if quick else 5)
    learning_rates = args.learning_rates or [1e-3]
    widths = args.widths or ((32,) if quick else (1000, 1000))
    repeats = args.repeats or (3 if quick else 7)
    if epochs < 1 or num_seeds < 1:
        raise ValueError(f"epochs and seeds must be >= 1, got {epochs} and {num_seeds}")

    ds = load_subset(dataset, train_size)
    shapes = mlp_shapes(ds.input_shape, ds.num_classes, widths)
    params = step.random_tree(shapes, jax.numpy.float32)
    grads = step.random_tree(shapes, jax.numpy.float32, seed=1)
    seeds = list(range(num_seeds))
    rows = []
    for name in names:
        txs = {
            mu_dtype: opt.get(name, learning_rate=1e-3, mu_dtype=mu_dtype) for mu_dtype in MU_DTYPES
        }
        states = {
            mu_dtype: (state_bytes_per_param(tx, params), state_dtypes(tx, params))
            for mu_dtype, tx in txs.items()
        }
        traffic = step_traffic(name, params, grads)
        times = step_times(name, params, grads, repeats)
        finals = {
            mu_dtype: train_population(name, mu_dtype, ds, widths, learning_rates, seeds, epochs)
            for mu_dtype in MU_DTYPES
        }
        rows += optimizer_rows(name, states, traffic, times, finals, learning_rates)
    size = f"MLP {'-'.join(map(str, (math.prod(ds.input_shape), *widths, ds.num_classes)))}"
    notes = [
        f"{size} ({step.count_params(params)} parameters), float32 parameters and v; "
        f"{dataset}, {len(ds.x_train)} training / {len(ds.x_test)} test examples, "
        f"{epochs} epochs of batch 128, seeds {seeds}",
        "train_loss: full evaluation pass over the training set after the last epoch; "
        "mean and std over seeds",
        "*_diff: mean over seeds of (bfloat16 − float32), paired by seed (same init, same "
        "data order); *_within_seed_noise: |diff| <= float32 std over seeds; "
        "*_p_value: paired t-test",
        f"step_*: one jitted, donated update + apply on the same tree, {repeats} interleaved "
        "repeats (median, IQR); step_hlo_B_per_param: bytes its compiled HLO moves "
        "(see bench roofline)",
    ]
    config = {
        "optimizers": names,
        "dataset": dataset,
        "train_size": len(ds.x_train),
        "epochs": epochs,
        "seeds": seeds,
        "learning_rates": learning_rates,
        "widths": list(widths),
        "repeats": repeats,
    }
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
