"""What every study shares: whole optimisation runs in one ``lax.scan``, vmapped over problems,
learning rates and seeds; picking a learning rate from a grid by steps to a target; formatting
the results. The studies that train networks share the second half: train/validation/test
splits and "beyond the seed spread"; they tune a rate grid on validation with
:func:`experiments.tuning.tune` and plot with :mod:`experiments.report`.

A run is

    g_t = ∇f(θ_t) + n_t,    (u_t, s_{t+1}) = tx.update(g_t, s_t, θ_t),    θ_{t+1} = θ_t + u_t,

with gradient noise n_t = σ ξ_t (ξ_t standard normal, drawn beforehand, one sequence per
seed; a study may shape it, e.g. Q ξ_t) and σ an argument, so exact (σ = 0) and noisy runs
share one compilation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optlab import optimizers as opt
from optlab.experiments import data, report

Array = jax.Array
MakeTx = Callable[..., optax.GradientTransformation]  # make_tx(**hparams), as tuning's

# The course-notes set: what the pictures and tables show by default.
COURSE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")
QUICK_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


def optimizer_names(quick: bool, extra: Sequence[str] = ()) -> list[str]:
    """The optimizers a study compares: its own set, then ``extra`` (:func:`with_extra`)."""
    wanted = QUICK_OPTIMIZERS if quick else COURSE_OPTIMIZERS
    available = set(opt.available())
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValueError(f"optimizers {missing} are not in the registry: {sorted(available)}")
    return with_extra(wanted, extra)


def with_extra(names: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``names`` followed by ``extra`` (registry names or ``MODULE:FACTORY`` specs of a
    researcher's own optimizers, :func:`optimizers.resolve`), repeats dropped: a study's
    verdicts are about its own set, so ``--optimizers`` adds to it and never replaces it."""
    return list(dict.fromkeys([*names, *(opt.resolve(extra) if extra else ())]))


def make_simulator(
    loss_fn: Callable[[Array, Array], Array],
    make_tx: MakeTx,
    gradient_noise: Callable[[Array, Array], Array] | None = None,
    keep_path: bool = False,
):
    """Compile one optimizer's runs on a family of problems ``loss_fn(θ, problem)``.

    Returns ``simulate(problems, theta0s, noise_stds, hparams, xi)``, vmapped over P
    problems (``problems``, ``theta0s`` and ``noise_stds`` share the leading axis P), L
    configurations (``hparams``: name -> (L,) values, each row given to
    ``make_tx(**row)``, e.g. :func:`experiments.tuning.optimizer_factory`) and S seeds, with
    standard normal draws ``xi`` shaped (S, T, d) (T steps). It gives the losses f(θ_t),
    t = 0..T, shaped (P, L, S, T+1), and with ``keep_path`` the iterates θ_t shaped
    (P, L, S, T+1, d). Only the loss and the optimizer are baked in, so one compilation
    serves every problem, start, grid, seed and noise level of the same shapes. The gradient
    noise is σ ξ_t, or σ ``gradient_noise(ξ_t, problem)`` where a study shapes it.
    """
    value_and_grad = jax.value_and_grad(loss_fn)
    if gradient_noise is None:
        gradient_noise = lambda xi, problem: xi  # noqa: E731

    def run_one(problem, theta0, noise_std, hparams, xi):
        tx = make_tx(**hparams)

        def step(carry, xi_t):
            theta, state = carry
            loss, grad = value_and_grad(theta, problem)
            grad = grad + noise_std * gradient_noise(xi_t, problem)
            updates, state = tx.update(grad, state, theta)
            theta = optax.apply_updates(theta, updates)
            return (theta, state), (loss, theta if keep_path else None)

        carry = (theta0, tx.init(theta0))
        (theta_last, _), (losses, path) = jax.lax.scan(step, carry, xi)
        losses = jnp.append(losses, loss_fn(theta_last, problem))
        if keep_path:
            return losses, jnp.concatenate([theta0[None], path])
        return losses, None

    over_seeds = jax.vmap(run_one, in_axes=(None, None, None, None, 0))
    over_rates = jax.vmap(over_seeds, in_axes=(None, None, None, 0, None))
    over_problems = jax.vmap(over_rates, in_axes=(0, 0, 0, None, None))
    return jax.jit(over_problems)


def standard_normal(seeds: int, steps: int, dim: int, seed: int = 0) -> np.ndarray:
    """ξ of shape (seeds, steps, dim), drawn once on the host (float32)."""
    return np.random.default_rng(seed).standard_normal((seeds, steps, dim), dtype=np.float32)


def steps_to_target(losses: np.ndarray, target: float) -> np.ndarray:
    """First step t after which f(θ_s) ≤ target for every s ≥ t (last axis), else -1.

    "Stays below" rather than "first touches", so a run that bounces through the target on
    its way to diverging does not count as having reached it.
    """
    above = ~(np.asarray(losses) <= target)  # NaN counts as above
    num_steps = above.shape[-1]
    last_above = num_steps - 1 - np.argmax(above[..., ::-1], axis=-1)
    steps = np.where(above.any(axis=-1), last_above + 1, 0)
    return np.where(steps < num_steps, steps, -1)


def finite_or_inf(values: np.ndarray) -> np.ndarray:
    """NaN (a diverged run) becomes +inf, so it sorts last and prints as 'diverged'."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.inf)


def best_rate_index(losses: np.ndarray, target: float) -> int:
    """Pick a learning rate from runs of shape (L, S, T+1).

    Best = reaches the target in every seed in the fewest mean steps; among rates that
    never all reach it, the lowest mean final loss (a diverged run counts as +inf).
    """
    steps = steps_to_target(losses, target)  # (L, S)
    all_reached = (steps >= 0).all(axis=1)
    mean_steps = np.where(all_reached, steps.mean(axis=1), np.inf)
    final = finite_or_inf(losses[..., -1]).mean(axis=1)
    return int(np.lexsort((final, mean_steps))[0])


def fmt(value: float, digits: int = 3) -> str:
    """A number for a Markdown table: 'diverged' for inf/NaN, short scientific otherwise."""
    if value is None or not np.isfinite(value):
        return "diverged"
    return f"{value:.{digits}g}"


def mean_std(values: np.ndarray, digits: int = 3) -> str:
    """'mean ± std' over seeds, 'diverged' if any seed diverged."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        return "diverged"
    return f"{values.mean():.{digits}g} ± {values.std():.{digits}g}"


# ----------------------------------------------------------------------------- training studies
#
# The studies that train networks (noise-redundancy, batch-regimes, lr-sensitivity,
# generalisation, architectures) share one protocol, :func:`experiments.tuning.tune`: every
# learning-rate grid × seeds is ONE population (one vmap, one compilation per optimizer and
# setting), the rate is chosen on a validation split carved from the training set (never the
# test set), and the chosen rate's seeds are reported as mean ± std.

SGD_FAMILY = ("sgd", "momentum", "nesterov", "sgdm")
ADAPTIVE_FAMILY = ("adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "amsgrad")


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test arrays; ``engine.eval_sets`` evaluates ``val`` and ``test``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return dict(train=len(self.y_train), val=len(self.y_val), test=len(self.y_test))

    def replace(self, **changes) -> Splits:
        return dataclasses.replace(self, **changes)


def make_splits(
    ds,
    *,
    validation: float = 0.2,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> Splits:
    """Hold out a stratified ``validation`` fraction of the (optionally subsampled) training set.

    ``num_train`` examples of the official training set (stratified; all if None) are split
    into train and validation (:func:`experiments.data.split_validation`); ``num_test``
    examples of the official test set are kept for the final report only.
    """
    x, y = data.stratified_subset(ds.x_train, ds.y_train, num_train, seed=seed, ordered=True)
    x_train, y_train, x_val, y_val = data.split_validation(x, y, validation, seed=seed)
    x_test, y_test = data.stratified_subset(ds.x_test, ds.y_test, num_test, seed=seed,
                                            ordered=True)  # fmt: skip
    return Splits(ds.name, x_train, y_train, x_val, y_val, x_test, y_test, ds.num_classes)


def load_splits(name: str, **kwargs) -> Splits:
    """``make_splits(data.load(name), **kwargs)``."""
    return make_splits(data.load(name), **kwargs)


def spread_differs(a: np.ndarray, b: np.ndarray) -> bool:
    """The rule the studies use for "a real difference" between two sets of seeds:
    |mean(a) − mean(b)| > std(a) + std(b) (and both finite)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    return bool(abs(a.mean() - b.mean()) > a.std() + b.std())


def mean_std_pct(values: np.ndarray) -> str:
    """Fractions as percentages 'mean ± std' (e.g. accuracies)."""
    return report.format_mean_std(values, digits=4, scale=100.0)


def seed_list(seeds: int | None, default: int) -> list[int]:
    """Seeds 0..n−1 (``seeds`` from the command line, else the study's default)."""
    count = default if seeds is None else seeds
    if count < 1:
        raise ValueError(f"seeds must be at least 1, got {count}")
    return list(range(count))


def pick_size(
    sizes: dict[str, dict], size: str | None, quick: bool, extra: Sequence[str] = ()
) -> tuple[str, dict]:
    """``(name, settings)`` of a training study's size: ``size`` if given, else quick or full;
    ``extra`` optimizers are added to its ``"optimizers"`` (:func:`with_extra`).

    Raises:
      ValueError: ``size`` is not one of the study's sizes.
    """
    name = size or ("quick" if quick else "full")
    if name not in sizes:
        raise ValueError(f"unknown size {name!r}; valid sizes: {', '.join(sizes)}")
    settings = dict(sizes[name])
    settings["optimizers"] = with_extra(settings["optimizers"], extra)
    return name, settings
