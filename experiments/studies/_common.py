"""What every study shares: whole optimisation runs in one ``lax.scan``, vmapped over problems,
learning rates and seeds; picking a learning rate from a grid; formatting the results.

A run is

    g_t = ∇f(θ_t) + n_t,    (u_t, s_{t+1}) = tx.update(g_t, s_t, θ_t),    θ_{t+1} = θ_t + u_t,

with gradient noise n_t = σ ξ_t (ξ_t standard normal, drawn beforehand, one sequence per
seed; a study may shape it, e.g. Q ξ_t) and σ an argument, so exact (σ = 0) and noisy runs
share one compilation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers as opt

Array = jax.Array
MakeTx = Callable[[Array], optax.GradientTransformation]

# The course-notes set: what the pictures and tables show by default.
COURSE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")
QUICK_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


def optimizer_names(quick: bool) -> list[str]:
    """The optimizers a study compares, restricted to those the registry has."""
    wanted = QUICK_OPTIMIZERS if quick else COURSE_OPTIMIZERS
    available = set(opt.available())
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValueError(f"optimizers {missing} are not in the registry: {sorted(available)}")
    return list(wanted)


def make_tx_factory(name: str, **hyperparams) -> MakeTx:
    """``learning_rate -> opt.get(name, learning_rate=..., **hyperparams)`` (traced rates ok)."""
    return lambda learning_rate: opt.get(name, learning_rate=learning_rate, **hyperparams)


def make_simulator(
    loss_fn: Callable[[Array, Array], Array],
    make_tx: MakeTx,
    gradient_noise: Callable[[Array, Array], Array] | None = None,
    keep_path: bool = False,
):
    """Compile one optimizer's runs on a family of problems ``loss_fn(θ, problem)``.

    Returns ``simulate(problems, theta0s, noise_stds, learning_rates, xi)``, vmapped over
    P problems (``problems``, ``theta0s`` and ``noise_stds`` share the leading axis P), L
    learning rates (or rows of hyperparameters that ``make_tx`` takes) and S seeds, with
    standard normal draws ``xi`` shaped (S, T, d) (T steps). It gives the losses f(θ_t),
    t = 0..T, shaped (P, L, S, T+1), and with ``keep_path`` the iterates θ_t shaped
    (P, L, S, T+1, d). Only the loss and the optimizer are baked in, so one compilation
    serves every problem, start, grid, seed and noise level of the same shapes. The gradient
    noise is σ ξ_t, or σ ``gradient_noise(ξ_t, problem)`` where a study shapes it.
    """
    value_and_grad = jax.value_and_grad(loss_fn)
    if gradient_noise is None:
        gradient_noise = lambda xi, problem: xi  # noqa: E731

    def run_one(problem, theta0, noise_std, learning_rate, xi):
        tx = make_tx(learning_rate)

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


def log_grid(low: float, high: float, num: int) -> np.ndarray:
    """``num`` log-spaced values from ``low`` to ``high``, both included."""
    return np.logspace(math.log10(low), math.log10(high), num)


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


def new_figure(width: float, height: float):
    """A Matplotlib figure on the Agg canvas (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure
