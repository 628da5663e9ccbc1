"""Ill-conditioned quadratics, axis-aligned vs rotated: do diagonal preconditioners need the
curvature to line up with the coordinate axes?

    f(θ) = ½ (θ − x*)ᵀ Q (θ − x*),    Q = R diag(λ) Rᵀ,    x* = 0,

with the DeepOBS ``quadratic_deep`` spectrum: 100 dimensions, 90 eigenvalues λ ~ U(0, 1) and
10 ~ U(30, 60), drawn with seed 42. "Aligned" takes R = I; "rotated" a Haar-random rotation
(same seed). The start is θ₀ = R 1, so both problems are the same problem seen in different
coordinates: a rotation-invariant method (SGD, heavy ball, Nesterov) follows the same loss
curve on both, while a diagonal preconditioner (Adagrad, RMSProp, Adam) rescales coordinates
and can only exploit the curvature when it lies along the axes. Noisy variants add gradient
noise σ Q ξ, ξ ~ N(0, I), as when x* is sampled per step as in DeepOBS.

An oracle, ``diag-precond``, steps θ ← θ − η diag(Q)⁻¹ g: on the aligned problem with η = 1 that
is Newton's method and converges in one step; rotated, diag(Q) carries almost no information.

Sizes: ``--quick`` runs 5 optimizers + the oracle for 200 steps over 11 learning rates and 3
seeds (about 12 s of CPU time with imports); the full study runs the 7 course-notes
optimizers + the oracle for 2000 steps over 21 rates and 5 seeds (about 25 s of CPU time;
83 s of wall time on a shared, heavily loaded 2-core machine).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import scipy.stats
from optlab.experiments import report, tuning
from optlab.experiments.studies import _common as common

DIAGONAL = ("adagrad", "rmsprop", "adam")  # per-coordinate step sizes
ROTATION_INVARIANT = ("sgd", "momentum", "nesterov")
ORACLE = "diag-precond"
MARGIN_DECADES = 0.3  # a factor of 2 (in steps or final loss) counts as a difference
FLOOR = 1e-10  # losses below this count as converged (float32 round-off): equal, not "better"
SETTINGS = (("aligned", False), ("rotated", False), ("aligned", True), ("rotated", True))


def deepobs_spectrum(dim: int = 100, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (90% U(0, 1), 10% U(30, 60)) and a Haar-random rotation R."""
    rng = np.random.RandomState(seed)
    num_large = dim // 10
    eigenvalues = np.concatenate(
        [rng.uniform(0.0, 1.0, dim - num_large), rng.uniform(30.0, 60.0, num_large)]
    )
    rotation = scipy.stats.special_ortho_group.rvs(dim, random_state=rng)
    return eigenvalues, rotation


def quadratic(theta, hessian):
    """f(θ) = ½ θᵀ Q θ (x* = 0)."""
    return 0.5 * theta @ hessian @ theta


def hessian_noise(xi, hessian):
    """ξ ↦ Q ξ: the gradient noise of ½ (θ − x)ᵀ Q (θ − x) with x ~ N(0, I)."""
    return hessian @ xi


def diagonal_preconditioner(learning_rate, curvature) -> optax.GradientTransformation:
    """u = −η D⁻¹ g with D = diag(Q): Newton's step when Q is diagonal and η = 1."""
    return optax.chain(optax.scale(1.0 / curvature), optax.scale_by_learning_rate(learning_rate))


def sizes(quick: bool, seeds: int | None) -> dict:
    if quick:
        return dict(dim=100, steps=200, num_rates=11, seeds=seeds or 3, noise_std=0.1)
    return dict(dim=100, steps=2000, num_rates=21, seeds=seeds or 5, noise_std=0.1)


def run_optimizers(names: list[str], size: dict, rates: np.ndarray) -> dict:
    """Every optimizer on every setting, all rates and seeds at once.

    Returns ``{(frame, noisy): {optimizer: dict(rate_index, losses (L, S, T+1))}}`` and the
    problem description. Exact runs reuse the seeds with σ = 0 and keep seed 0.
    """
    eigenvalues, rotation = deepobs_spectrum(size["dim"])
    frames = {"aligned": np.eye(size["dim"]), "rotated": rotation}
    hessians = {frame: r @ np.diag(eigenvalues) @ r.T for frame, r in frames.items()}
    starts = {frame: r @ np.ones(size["dim"]) for frame, r in frames.items()}
    initial_loss = 0.5 * eigenvalues.sum()
    problem = dict(eigenvalues=eigenvalues, hessians=hessians, initial_loss=initial_loss)

    batch = lambda values: jnp.asarray(np.stack(values), jnp.float32)  # noqa: E731
    all_q = batch([hessians[frame] for frame, _ in SETTINGS])
    all_theta0 = batch([starts[frame] for frame, _ in SETTINGS])
    all_noise = batch([size["noise_std"] * noisy for _, noisy in SETTINGS])
    xi = common.standard_normal(size["seeds"], size["steps"], size["dim"])
    grid = {"learning_rate": jnp.asarray(rates, jnp.float32)}

    def tune(losses, noisy):
        seeds = slice(None) if noisy else slice(0, 1)
        losses = np.asarray(losses, np.float64)[:, seeds]
        return dict(
            rate_index=common.best_rate_index(losses, target(problem, noisy)), losses=losses
        )

    results = {setting: {} for setting in SETTINGS}
    for name in names:
        simulate = common.make_simulator(quadratic, tuning.optimizer_factory(name), hessian_noise)
        losses, _ = simulate(all_q, all_theta0, all_noise, grid, xi)
        for p, setting in enumerate(SETTINGS):
            results[setting][name] = tune(losses[p], setting[1])
    # The oracle's transformation depends on Q, so it compiles once per frame.
    for frame in frames:
        curvature = jnp.asarray(np.diag(hessians[frame]), jnp.float32)
        simulate = common.make_simulator(
            quadratic,
            lambda learning_rate, c=curvature: diagonal_preconditioner(learning_rate, c),
            hessian_noise,
        )
        indices = np.array([p for p, (f, _) in enumerate(SETTINGS) if f == frame])
        losses, _ = simulate(all_q[indices], all_theta0[indices], all_noise[indices], grid, xi)
        for i, p in enumerate(indices):
            results[SETTINGS[p]][ORACLE] = tune(losses[i], SETTINGS[p][1])
    return results, problem


def target(problem: dict, noisy: bool) -> float:
    """Tolerance: f ≤ 10⁻⁶ f(θ₀) with exact gradients, 10⁻² f(θ₀) with noisy ones."""
    return problem["initial_loss"] * (1e-2 if noisy else 1e-6)


class Score(NamedTuple):
    """One optimizer at its tuned rate: mean steps to tol (inf unless every seed got there)
    and mean final loss (inf if a seed diverged)."""

    steps: float
    final_loss: float


def score(steps: np.ndarray, final_loss: np.ndarray) -> Score:
    """The ``Score`` of per-seed steps to tol (-1: never) and final losses."""
    steps, final_loss = np.asarray(steps), common.finite_or_inf(final_loss)
    return Score(float(steps.mean()) if (steps >= 0).all() else math.inf, float(final_loss.mean()))


def edge(diagonal: Score, invariant: Score) -> tuple[float, str]:
    """log₁₀(invariant / diagonal) in steps to tol if either reached it, else in final loss.

    Positive: the diagonal method got there faster (or ended lower). Losses are floored at
    ``FLOOR`` so two converged runs tie.
    """
    if math.isfinite(diagonal.steps) or math.isfinite(invariant.steps):
        return _log_ratio(max(invariant.steps, 1), max(diagonal.steps, 1)), "steps to tol"
    return _log_ratio(max(invariant.final_loss, FLOOR), max(diagonal.final_loss, FLOOR)), (
        "final loss"
    )


def _log_ratio(a: float, b: float) -> float:
    """log₁₀(a / b) for positive a, b that may be inf (inf/inf counts as a tie)."""
    if math.isinf(a) and math.isinf(b):
        return 0.0
    return math.inf if math.isinf(a) else -math.inf if math.isinf(b) else math.log10(a / b)


def verdict(scores: dict[str, dict[str, Score]]) -> tuple[bool, str]:
    """Do diagonal preconditioners win when aligned and lose the edge when rotated?

    ``scores[frame][optimizer]`` for frame "aligned" and "rotated". In each frame the best
    diagonal method (fewest steps, then lowest final loss) meets the best rotation-invariant
    one; ``edge`` measures the gap in decades. "Win" means an aligned edge above
    ``MARGIN_DECADES``; "lose the edge" means the rotated edge is at least that much smaller.
    """

    def best(frame, group):
        name = min((n for n in group if n in scores[frame]), key=lambda n: scores[frame][n])
        return name, scores[frame][name]

    def describe(score_):
        steps = f"{score_.steps:.4g} steps" if math.isfinite(score_.steps) else "never reached tol"
        return f"{steps}, final loss {common.fmt(score_.final_loss)}"

    edges, lines = {}, []
    for frame in ("aligned", "rotated"):
        diag_name, diag = best(frame, DIAGONAL)
        base_name, base = best(frame, ROTATION_INVARIANT)
        edges[frame], unit = edge(diag, base)
        lines.append(
            f"- {frame}: best diagonal {diag_name} ({describe(diag)}) vs best "
            f"rotation-invariant {base_name} ({describe(base)}): edge {edges[frame]:+.2f} "
            f"decades in {unit}"
        )
    if edges["aligned"] == edges["rotated"] == math.inf:
        detail = unmeasured_edge(scores, best("aligned", DIAGONAL)[0])
        return False, "\n".join([f"**Verdict: not measured** — {detail}", "", *lines])
    wins_aligned = edges["aligned"] > MARGIN_DECADES
    loses_edge = edges["rotated"] < edges["aligned"] - MARGIN_DECADES
    answer = wins_aligned and loses_edge
    gone = " and is gone" if loses_edge and edges["rotated"] <= MARGIN_DECADES else ""
    detail = (
        f"aligned they {'win' if wins_aligned else 'do not win'} (edge "
        f"{edges['aligned']:+.2f} decades, threshold {MARGIN_DECADES}); rotated the edge "
        f"{'shrinks' if loses_edge else 'does not shrink'} to {edges['rotated']:+.2f} "
        f"decades{gone}."
    )
    return answer, "\n".join([f"**Verdict: {'Yes' if answer else 'No'}** — {detail}", "", *lines])


def unmeasured_edge(scores: dict[str, dict[str, Score]], diagonal_name: str) -> str:
    """The verdict's detail when no rotation-invariant method reached the tolerance in either
    frame (both edges +inf, so whether the edge shrinks cannot be measured in steps): what the
    best aligned diagonal method did in each frame, and the rotation's cost in decades,
    log₁₀(steps_rotated / steps_aligned)."""
    aligned, rotated = scores["aligned"][diagonal_name], scores["rotated"].get(diagonal_name)
    invariant = ", ".join(n for n in ROTATION_INVARIANT if n in scores["aligned"])
    if rotated is not None and math.isfinite(rotated.steps):
        cost = _log_ratio(max(rotated.steps, 1), max(aligned.steps, 1))
        rotated_text = f"{rotated.steps:.4g} rotated (the rotation costs it {cost:+.2f} decades)"
    else:
        rotated_text = "never rotated"
    return (
        f"no rotation-invariant method ({invariant}) reached the tolerance in either frame, so "
        f"the edge is +inf in both and whether it shrinks cannot be measured in steps; "
        f"{diagonal_name} reached it in {aligned.steps:.4g} steps aligned and {rotated_text}."
    )


def scores(results: dict, problem: dict, noisy: bool) -> dict[str, dict[str, Score]]:
    """``{frame: {optimizer: Score at the tuned rate}}``."""
    out = {}
    for frame in ("aligned", "rotated"):
        out[frame] = {}
        for name, res in results[(frame, noisy)].items():
            losses = res["losses"][res["rate_index"]]
            steps = common.steps_to_target(losses, target(problem, noisy))
            out[frame][name] = score(steps, losses[:, -1])
    return out


# ----------------------------------------------------------------------------- plots


def plot_curves(results: dict, rates: np.ndarray, names: list[str], problem: dict):
    fig = report.new_figure((13, 9.5))
    axes = fig.subplots(2, 2, sharey="row")
    colors = matplotlib.colormaps["tab10"]
    for ax, (frame, noisy) in zip(axes.T.ravel(), SETTINGS, strict=True):
        for i, name in enumerate(names):
            res = results[(frame, noisy)][name]
            curves = np.clip(res["losses"][res["rate_index"]], 1e-12, 1e12)
            log_curves = np.log10(curves)
            mean, std = log_curves.mean(0), log_curves.std(0)
            steps = np.arange(curves.shape[-1])
            style = "--" if name in ROTATION_INVARIANT else ":" if name == ORACLE else "-"
            ax.plot(
                steps,
                10**mean,
                style,
                color=colors(i),
                lw=1.6,
                label=f"{name} (η={rates[res['rate_index']]:.2g})",
            )
            if noisy:
                ax.fill_between(
                    steps, 10 ** (mean - std), 10 ** (mean + std), color=colors(i), alpha=0.15
                )
        ax.axhline(target(problem, noisy), color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{frame} Q, {'noisy' if noisy else 'exact'} gradients", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("f(θ)")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(
        "Quadratic with the DeepOBS quadratic_deep spectrum: solid = diagonal "
        "(per-coordinate),\ndashed = rotation-invariant, dotted = diag(Q)⁻¹ oracle; "
        "tuned η per setting"
    )
    return fig


def plot_bars(losses_by_noise: dict, names: list[str]):
    fig = report.new_figure((13, 4.5))
    axes = fig.subplots(1, 2)
    x = np.arange(len(names))
    for ax, (noisy, losses) in zip(axes, losses_by_noise.items(), strict=True):
        for offset, frame, color in ((-0.2, "aligned", "tab:blue"), (0.2, "rotated", "tab:orange")):
            values = np.array([losses[frame][name] for name in names])
            ax.bar(
                x + offset,
                np.clip(np.nan_to_num(values, posinf=1e6), 1e-12, 1e6),
                0.4,
                color=color,
                label=frame,
            )
        ax.set_xticks(x, names, rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("final loss at tuned η (floored at 1e-12)")
        ax.set_title(f"{'noisy' if noisy else 'exact'} gradients: aligned vs rotated")
        ax.legend()
    return fig


# ----------------------------------------------------------------------------- run


def run(
    out=None, quick: bool = False, seeds: int | None = None, optimizers: Sequence[str] = ()
) -> dict:
    """Run the study and write the run folder; returns the numbers and the verdicts."""
    started = time.perf_counter()
    size = sizes(quick, seeds)
    names = common.optimizer_names(quick, optimizers)
    rates = tuning.log_range(1e-4, 10.0, size["num_rates"])
    run_dir = report.make_run_dir(out, "study-conditioning")
    results, problem = run_optimizers(names, size, rates)
    all_names = names + [ORACLE]
    eig = problem["eigenvalues"]
    report.write_config(
        run_dir,
        dict(
            study="conditioning",
            quick=quick,
            optimizers=all_names,
            learning_rates=rates,
            **size,
            spectrum_seed=42,
            eigenvalues=eig,
            settings=SETTINGS,
            margin_decades=MARGIN_DECADES,
            machine=report.machine(),
        ),
    )
    sections = [
        f"f(θ) = ½ θᵀQθ in {size['dim']} dimensions, eigenvalues 90 ~ U(0, 1) and 10 ~ "
        f"U(30, 60) (seed 42): λ_min = {eig.min():.3g}, λ_max = {eig.max():.3g}, condition "
        f"number {eig.max() / eig.min():.3g}. Aligned: Q = diag(λ); rotated: Q = R diag(λ) Rᵀ "
        f"with a random rotation R, start θ₀ = R 1. {size['steps']} steps; learning rate per "
        f"optimizer and setting from {len(rates)} log-spaced values in [{rates[0]:g}, "
        f"{rates[-1]:g}] (fewest steps after which f stays ≤ tol, else the lowest final loss). "
        "tol = 10⁻⁶ f(θ₀) with exact gradients, 10⁻² f(θ₀) with noisy ones "
        f"(noise σQξ, σ = {size['noise_std']:g}, {size['seeds']} seeds, mean ± std). "
        f"`{ORACLE}` is the oracle θ ← θ − η diag(Q)⁻¹ g.",
    ]
    verdicts, losses_by_noise = {}, {}
    with report.MetricsWriter(run_dir) as metrics:
        for noisy in (False, True):
            rows = [
                [
                    name,
                    *(
                        cell
                        for frame in ("aligned", "rotated")
                        for cell in _log_setting(
                            metrics, results, problem, size, frame, noisy, name, rates
                        )
                    ),
                ]
                for name in all_names
            ]
            scores_ = scores(results, problem, noisy)
            losses_by_noise[noisy] = {
                frame: {name: sc.final_loss for name, sc in by_name.items()}
                for frame, by_name in scores_.items()
            }
            verdicts[noisy] = verdict(scores_)
            sections += [
                f"## {'noisy' if noisy else 'exact'} gradients",
                report.markdown_table(
                    [
                        "optimizer",
                        "η aligned",
                        "final loss aligned",
                        "steps to tol aligned",
                        "η rotated",
                        "final loss rotated",
                        "steps to tol rotated",
                    ],
                    rows,
                ),
                "Do diagonal preconditioners (Adagrad, RMSProp, Adam) win when aligned and "
                "lose the edge when rotated?",
                verdicts[noisy][1],
            ]
    report.save_figure(
        plot_curves(results, rates, all_names, problem), run_dir / "loss_curves.png", dpi=110
    )
    report.save_figure(
        plot_bars(losses_by_noise, all_names), run_dir / "final_loss_bars.png", dpi=110
    )
    sections += [
        "![loss curves](loss_curves.png)\n![final losses](final_loss_bars.png)",
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: ill-conditioned quadratic, aligned vs rotated", sections)
    for noisy, (_, text) in verdicts.items():
        print(f"[{'noisy' if noisy else 'exact'} gradients] {text.splitlines()[0]}")
    return dict(
        folder=run_dir,
        results=results,
        rates=rates,
        verdicts=verdicts,
        final_losses=losses_by_noise,
        problem=problem,
    )


def _log_setting(metrics, results, problem, size, frame, noisy, name, rates) -> list[str]:
    """Write one record per (learning rate, seed); return the table cells of the tuned rate."""
    res = results[(frame, noisy)][name]
    losses = res["losses"]
    steps = common.steps_to_target(losses, target(problem, noisy))
    for li, rate in enumerate(rates):
        for seed in range(losses.shape[1]):
            metrics.write(
                dict(
                    study="conditioning",
                    frame=frame,
                    noise_std=size["noise_std"] if noisy else 0.0,
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
    final = losses[best, :, -1]
    if len(reached) < len(final):
        steps_cell = f"never ({len(reached)}/{len(final)})"
    else:
        steps_cell = common.mean_std(reached, 4) if noisy else str(reached[0])
    return [
        f"{rates[best]:.2g}",
        common.mean_std(final) if noisy else common.fmt(final[0]),
        steps_cell,
    ]
