"""Optimizers on 2-D analytic surfaces: the paths they take, how fast they get there, and what
momentum and a large learning rate do in a ravine.

Surfaces (θ = (x, y), minimum value f*):

    rosenbrock  f = (1 − x)² + 100 (y − x²)²                       f* = 0 at (1, 1)
    beale       f = Σ_i (c_i − x + x yⁱ)², c = (1.5, 2.25, 2.625)    f* = 0 at (3, 0.5)
    saddle      f = x² − y² + y⁴/4   (a saddle at 0, walls far out) f* = −1 at (0, ±√2)
    ravine      f = ½ (x² + 100 y²)  (condition number 100)        f* = 0 at (0, 0)

Each optimizer gets its learning rate from a log grid (all rates, seeds and surfaces run at
once under ``vmap``, each run one ``lax.scan``): the rate after which f − f* stays ≤ tol in the
fewest steps, else the lowest final loss. Noisy variants add Gaussian noise σ ξ_t to every
gradient (DeepOBS's stochastic 2-D problems), use a looser tol (a constant step cannot beat
the noise floor) and report mean ± std over seeds.

The ravine sweep runs heavy-ball SGD, v ← β v + g, θ ← θ − η v, over a grid of η for
β ∈ {0, 0.5, 0.9, 0.99}. On a quadratic with largest curvature λ_max it converges iff
η λ_max < 2 (1 + β); the summary sets the measured edge of divergence beside that bound.

Sizes: ``--quick`` runs 5 optimizers for 300 steps over 9 learning rates and 3 seeds, the
sweep for 200 steps (about 24 s of CPU time with imports, most of it XLA compilation and
Matplotlib); the full study runs the 7 course-notes optimizers for 3000 steps over 25 rates
and 5 seeds, the sweep for 1000 steps (about 30 s of CPU time; 96 s of wall time on a
shared, heavily loaded 2-core machine).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from optlab.experiments import report, tuning
from optlab.experiments.studies import _common as common

MOMENTA = (0.0, 0.5, 0.9, 0.99)
RAVINE_CURVATURE = (1.0, 100.0)


def rosenbrock(theta):
    x, y = theta
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def beale(theta):
    x, y = theta
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(theta):
    x, y = theta
    return x**2 - y**2 + y**4 / 4.0


def ravine(theta):
    x, y = theta
    return 0.5 * (RAVINE_CURVATURE[0] * x**2 + RAVINE_CURVATURE[1] * y**2)


@dataclasses.dataclass(frozen=True)
class Surface:
    name: str
    formula: str
    loss: Callable
    f_star: float
    minima: tuple[tuple[float, float], ...]
    starts: dict[str, tuple[float, float]]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    noise_std: float
    tol: float = 1e-4  # exact gradients
    noisy_tol: float = 1e-2  # noisy gradients: a constant step cannot get below the noise floor

    def target(self, noisy: bool) -> float:
        return self.f_star + (self.noisy_tol if noisy else self.tol)


SURFACES = (
    Surface(
        "rosenbrock",
        "(1 − x)² + 100 (y − x²)²",
        rosenbrock,
        0.0,
        ((1.0, 1.0),),
        {"deepobs (−0.5, 1.5)": (-0.5, 1.5), "classic (−1.2, 1)": (-1.2, 1.0)},
        (-2.0, 2.0),
        (-1.0, 3.0),
        noise_std=1.0,
    ),
    Surface(
        "beale",
        "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
        beale,
        0.0,
        ((3.0, 0.5),),
        {"deepobs (−4.5, 4.5)": (-4.5, 4.5), "plateau (1, 1.5)": (1.0, 1.5)},
        (-4.6, 4.6),
        (-4.6, 4.6),
        noise_std=1.0,
    ),
    Surface(
        "saddle",
        "x² − y² + y⁴/4",
        saddle,
        -1.0,
        ((0.0, 2**0.5), (0.0, -(2**0.5))),
        {"near the saddle (1, 0.001)": (1.0, 1e-3)},
        (-1.5, 1.5),
        (-2.2, 2.2),
        noise_std=0.5,
    ),
    Surface(
        "ravine",
        "½ (x² + 100 y²)",
        ravine,
        0.0,
        ((0.0, 0.0),),
        {"(−9, 1)": (-9.0, 1.0)},
        (-10.0, 2.0),
        (-1.5, 1.5),
        noise_std=1.0,
    ),
)


def sizes(quick: bool, seeds: int | None) -> dict:
    if quick:
        return dict(steps=300, num_rates=9, seeds=seeds or 3, sweep_steps=200, sweep_rates=13)
    return dict(steps=3000, num_rates=25, seeds=seeds or 5, sweep_steps=1000, sweep_rates=41)


def surface_loss(theta, index):
    """f_index(θ) for the surface ``SURFACES[index]`` (so one compilation covers them all).

    Under ``vmap`` the switch evaluates every surface and selects one, so a run whose θ has
    already overflowed can pick up NaN from another surface: it had diverged anyway.
    """
    return jax.lax.switch(index, [surface.loss for surface in SURFACES], theta)


def problems() -> list[tuple[Surface, str, bool]]:
    """Every (surface, start, noisy) setting the study runs."""
    return [
        (surface, start, noisy)
        for surface in SURFACES
        for start in surface.starts
        for noisy in (False, True)
    ]


def run_optimizers(names: list[str], size: dict, rates: np.ndarray) -> dict:
    """Every optimizer on every setting, all rates and seeds at once (one compile each).

    Returns ``{(surface name, start, noisy): {optimizer: dict(rate_index, losses (L,S,T+1),
    path (S,T+1,2))}}``; exact runs repeat the noisy runs' seeds with σ = 0 (same shapes,
    same compilation) and keep only seed 0.
    """
    settings = problems()
    index = jnp.asarray([SURFACES.index(surface) for surface, _, _ in settings])
    theta0 = jnp.asarray([surface.starts[start] for surface, start, _ in settings], jnp.float32)
    noise = jnp.asarray([surface.noise_std * noisy for surface, _, noisy in settings])
    xi = common.standard_normal(size["seeds"], size["steps"], 2)
    results = {}
    for name in names:
        make_tx = tuning.optimizer_factory(name)
        simulate = common.make_simulator(surface_loss, make_tx, keep_path=True)
        losses, paths = simulate(index, theta0, noise, {"learning_rate": rates}, xi)
        losses, paths = np.asarray(losses, np.float64), np.asarray(paths)
        for p, (surface, start, noisy) in enumerate(settings):
            seeds = slice(None) if noisy else slice(0, 1)
            setting_losses = losses[p, :, seeds]
            best = common.best_rate_index(setting_losses, surface.target(noisy))
            results.setdefault((surface.name, start, noisy), {})[name] = dict(
                rate_index=best, losses=setting_losses, path=paths[p, best, seeds]
            )
    return results


def momentum_sweep(size: dict) -> dict:
    """Heavy-ball SGD in the ravine over a grid of (η, β): final losses and a few paths."""
    shown_rates = (0.002, 0.018, 0.03)  # below, near and past plain SGD's limit 2/λ_max = 0.02
    rates = np.union1d(tuning.log_range(1e-4, 0.1, size["sweep_rates"]), shown_rates)
    grid = tuning.product_grid(momentum=MOMENTA, learning_rate=rates)  # β slowest
    make_tx = tuning.optimizer_factory("sgd")
    simulate = common.make_simulator(lambda theta, _: ravine(theta), make_tx, keep_path=True)
    start = np.asarray(SURFACES[-1].starts["(−9, 1)"], np.float32)
    xi = np.zeros((1, size["sweep_steps"], 2), np.float32)
    losses, paths = simulate(np.zeros(1), start[None], np.zeros(1), grid, xi)
    shape = (len(MOMENTA), len(rates))
    return dict(
        rates=rates,
        shown_rates=shown_rates,
        initial_loss=float(ravine(start)),
        final=np.asarray(losses[0, :, 0, -1], np.float64).reshape(shape),
        paths=np.asarray(paths[0, :, 0]).reshape(*shape, -1, 2),
    )


def diverged(final_loss, initial_loss) -> np.ndarray:
    """A run diverged if its loss ended non-finite or above where it started."""
    final_loss = np.asarray(final_loss)
    return ~np.isfinite(final_loss) | (final_loss > initial_loss)


def stability_limit(beta: float) -> float:
    """Heavy ball on a quadratic converges iff η λ_max < 2 (1 + β)."""
    return 2.0 * (1.0 + beta) / max(RAVINE_CURVATURE)


# ----------------------------------------------------------------------------- plots


def _contours(ax, surface: Surface, num: int = 300):
    xs = np.linspace(*surface.xlim, num)
    ys = np.linspace(*surface.ylim, num)
    grid_x, grid_y = np.meshgrid(xs, ys)
    gap = surface.loss(np.stack([grid_x, grid_y])) - surface.f_star  # NumPy broadcasts
    levels = np.logspace(np.log10(max(gap.min(), 1e-4)), np.log10(gap.max()), 25)
    ax.contour(
        grid_x,
        grid_y,
        np.maximum(gap, 1e-12),
        levels=levels,
        cmap="Greys",
        linewidths=0.6,
        norm="log",
    )
    for minimum in surface.minima:
        ax.plot(*minimum, marker="*", color="gold", markeredgecolor="k", markersize=14, zorder=5)
    ax.set_xlim(surface.xlim)
    ax.set_ylim(surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def plot_paths(surface: Surface, results: dict, names: list[str], rates: np.ndarray):
    starts = list(surface.starts)
    fig = report.new_figure((7 * len(starts), 6))
    axes = fig.subplots(1, len(starts), squeeze=False)
    colors = matplotlib.colormaps["tab10"]
    for ax, start in zip(axes[0], starts, strict=True):
        _contours(ax, surface)
        for i, name in enumerate(names):
            run = results[(surface.name, start, False)][name]
            path = run["path"][0]
            ax.plot(
                path[:, 0],
                path[:, 1],
                "-",
                lw=1.2,
                color=colors(i),
                alpha=0.85,
                label=f"{name} (η={rates[run['rate_index']]:.2g})",
            )
        ax.plot(*surface.starts[start], "ko", markersize=7, zorder=6)
        ax.set_title(f"{surface.name}: f = {surface.formula}\nstart {start}", fontsize=10)
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return fig


def plot_noisy_curves(surface: Surface, results: dict, names: list[str]):
    starts = list(surface.starts)
    fig = report.new_figure((6.5 * len(starts), 4.5))
    axes = fig.subplots(1, len(starts), squeeze=False)
    colors = matplotlib.colormaps["tab10"]
    for ax, start in zip(axes[0], starts, strict=True):
        for i, name in enumerate(names):
            run = results[(surface.name, start, True)][name]
            gap = np.clip(run["losses"][run["rate_index"]] - surface.f_star, 1e-12, 1e12)
            log_gap = np.log10(gap)
            mean, std = log_gap.mean(0), log_gap.std(0)
            steps = np.arange(gap.shape[-1])
            ax.plot(steps, 10**mean, color=colors(i), label=name)
            ax.fill_between(
                steps, 10 ** (mean - std), 10 ** (mean + std), color=colors(i), alpha=0.2
            )
        ax.axhline(surface.noisy_tol, color="k", ls=":", lw=1, label=f"tol {surface.noisy_tol:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("f − f*  (geometric mean, ±1 std band)")
        ax.set_title(
            f"{surface.name}, gradient noise σ={surface.noise_std:g}, start {start}", fontsize=10
        )
        ax.legend(fontsize=8)
    return fig


def plot_sweep(sweep: dict):
    fig = report.new_figure((8, 5))
    ax = fig.subplots()
    colors = matplotlib.colormaps["viridis"]
    ceiling = 10 * sweep["initial_loss"]
    for i, beta in enumerate(MOMENTA):
        color = colors(i / (len(MOMENTA) - 1) * 0.9)
        final = common.finite_or_inf(sweep["final"][i])
        ax.plot(
            sweep["rates"],
            np.clip(final, 1e-12, ceiling),
            "o-",
            ms=3,
            color=color,
            label=f"β = {beta:g}",
        )
        ax.axvline(stability_limit(beta), color=color, ls="--", lw=1)
    ax.axhline(sweep["initial_loss"], color="k", ls=":", lw=1, label="starting loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("final loss (clipped at 10× start = diverged)")
    ax.set_title(
        "Heavy-ball SGD in the ravine ½(x² + 100y²): final loss vs η\n"
        "dashed: stability limit η < 2(1+β)/λ_max",
        fontsize=10,
    )
    ax.legend()
    return fig


def plot_sweep_paths(sweep: dict):
    surface = SURFACES[-1]
    shown = sweep["shown_rates"]
    fig = report.new_figure((4.2 * len(MOMENTA), 2.6 * len(shown) + 0.4))
    axes = fig.subplots(len(shown), len(MOMENTA), sharex=True, sharey=True)
    for row, rate in enumerate(shown):
        col_rate = int(np.argmin(np.abs(sweep["rates"] - rate)))
        for col, beta in enumerate(MOMENTA):
            ax = axes[row, col]
            _contours(ax, surface, num=150)
            path = sweep["paths"][col, col_rate]
            ax.plot(path[:, 0], path[:, 1], "-", color="tab:red", lw=0.9)
            final = sweep["final"][col, col_rate]
            verdict = "diverged" if diverged(final, sweep["initial_loss"]) else f"f={final:.1e}"
            ax.set_title(f"η={rate:g}, β={beta:g}: {verdict}", fontsize=9)
            ax.set_xlabel("")
            ax.set_ylabel("")
    fig.suptitle(
        f"Heavy-ball SGD in the ravine, {len(sweep['paths'][0, 0]) - 1} steps "
        "(rows: learning rate η, columns: momentum β)"
    )
    return fig


# ----------------------------------------------------------------------------- run


def run(
    out=None, quick: bool = False, seeds: int | None = None, optimizers: Sequence[str] = ()
) -> dict:
    """Run the whole study and write the run folder; returns the numbers for callers."""
    started = time.perf_counter()
    size = sizes(quick, seeds)
    names = common.optimizer_names(quick, optimizers)
    rates = tuning.log_range(1e-5, 3.0, size["num_rates"])
    run_dir = report.make_run_dir(out, "study-surfaces")
    report.write_config(
        run_dir,
        dict(
            study="surfaces",
            quick=quick,
            optimizers=names,
            learning_rates=rates,
            momenta=MOMENTA,
            **size,
            surfaces={
                s.name: dict(
                    formula=s.formula,
                    f_star=s.f_star,
                    starts=s.starts,
                    tol=s.tol,
                    noisy_tol=s.noisy_tol,
                    noise_std=s.noise_std,
                )
                for s in SURFACES
            },
            machine=report.machine(),
        ),
    )
    sections = [
        f"{len(names)} optimizers, {size['steps']} steps, learning rate per optimizer from "
        f"{len(rates)} log-spaced values in [{rates[0]:g}, {rates[-1]:g}]: the fewest steps "
        "after which f − f* stays ≤ tol, else the lowest final loss. Noisy runs add Gaussian "
        f"noise σξ to every gradient; {size['seeds']} seeds, mean ± std."
    ]
    results = run_optimizers(names, size, rates)
    sweep = momentum_sweep(size)
    table = {}
    with report.MetricsWriter(run_dir) as metrics:
        for surface in SURFACES:
            rows = []
            for _, start, noisy in [setting for setting in problems() if setting[0] is surface]:
                for name, res in results[(surface.name, start, noisy)].items():
                    table[(surface.name, start, noisy, name)] = row = _log_setting(
                        metrics, surface, start, noisy, name, res, rates
                    )
                    rows.append(
                        [start, f"noisy σ={surface.noise_std:g}" if noisy else "exact", name, *row]
                    )
            for kind, plot in (("paths", plot_paths), ("noisy", plot_noisy_curves)):
                args = (
                    (surface, results, names, rates)
                    if kind == "paths"
                    else (surface, results, names)
                )
                report.save_figure(plot(*args), run_dir / f"{kind}_{surface.name}.png", dpi=110)
            sections += [
                f"## {surface.name}: f = {surface.formula}, f* = {surface.f_star:g}, tol = "
                f"{surface.tol:g} (exact), {surface.noisy_tol:g} (noisy)",
                report.markdown_table(
                    [
                        "start",
                        "gradients",
                        "optimizer",
                        "η",
                        "reached tol",
                        "steps to tol",
                        "final f − f*",
                    ],
                    rows,
                ),
                f"![paths](paths_{surface.name}.png)\n![noisy runs](noisy_{surface.name}.png)",
            ]
        for bi, beta in enumerate(MOMENTA):
            for ri, rate in enumerate(sweep["rates"]):
                final = sweep["final"][bi, ri]
                metrics.write(
                    dict(
                        study="surfaces",
                        surface="ravine",
                        sweep="momentum",
                        optimizer="sgd",
                        momentum=beta,
                        learning_rate=rate,
                        seed=0,
                        steps=size["sweep_steps"],
                        final_loss=final,
                        diverged=bool(diverged(final, sweep["initial_loss"])),
                    )
                )
    report.save_figure(plot_sweep(sweep), run_dir / "ravine_sweep.png", dpi=110)
    report.save_figure(plot_sweep_paths(sweep), run_dir / "ravine_sweep_paths.png", dpi=110)
    sections += [
        "## Momentum and learning rate in the ravine",
        f"Heavy-ball SGD (v ← βv + g, θ ← θ − ηv), {size['sweep_steps']} steps from (−9, 1). "
        "Theory: converges iff η λ_max < 2(1 + β), λ_max = 100. Diverged: the final loss is "
        "not finite or above the starting loss.",
        report.markdown_table(
            [
                "β",
                "theory: largest stable η",
                "largest η that did not diverge",
                "smallest η that diverged",
            ],
            sweep_table(sweep),
        ),
        "![sweep](ravine_sweep.png)\n![paths](ravine_sweep_paths.png)",
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: optimizers on analytic surfaces", sections)
    return dict(folder=run_dir, table=table, sweep=sweep, results=results, rates=rates)


def _log_setting(metrics, surface, start, noisy, name, res, rates) -> list[str]:
    """Write one record per (learning rate, seed); return the table row of the tuned rate."""
    losses = res["losses"]
    steps = common.steps_to_target(losses, surface.target(noisy))
    for li, rate in enumerate(rates):
        for seed in range(losses.shape[1]):
            metrics.write(
                dict(
                    study="surfaces",
                    surface=surface.name,
                    start=start,
                    noise_std=surface.noise_std if noisy else 0.0,
                    optimizer=name,
                    learning_rate=rate,
                    seed=seed,
                    selected=li == res["rate_index"],
                    steps_to_tol=int(steps[li, seed]),
                    final_loss=float(losses[li, seed, -1]),
                )
            )
    best = res["rate_index"]
    reached = steps[best][steps[best] >= 0]
    gap = losses[best, :, -1] - surface.f_star
    return [
        f"{rates[best]:.2g}",
        f"{len(reached)}/{len(gap)}",
        common.mean_std(reached, 4) if len(reached) else "never",
        common.mean_std(gap) if noisy else common.fmt(gap[0]),
    ]


def sweep_table(sweep: dict) -> list[list[str]]:
    """Per β: the theoretical limit beside the measured edge of divergence."""
    rows = []
    for bi, beta in enumerate(MOMENTA):
        bad = diverged(sweep["final"][bi], sweep["initial_loss"])
        stable, unstable = sweep["rates"][~bad], sweep["rates"][bad]
        rows.append(
            [
                f"{beta:g}",
                f"{stability_limit(beta):.4g}",
                f"{stable.max():.4g}" if len(stable) else "none",
                f"{unstable.min():.4g}" if len(unstable) else "none",
            ]
        )
    return rows
