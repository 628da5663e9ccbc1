"""The benchmark's run folder: ``metrics.jsonl``, ``summary.md`` (a table per problem,
performance profiles, the comparison with DeepOBS), ``profiles.png`` and the
learning-rate sensitivity curves ``lr_sensitivity_loss.png`` / ``lr_sensitivity_accuracy.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from optlab.experiments import report, tuning
from optlab.experiments.benchmark import baselines, profiles
from optlab.experiments.benchmark.problems import PROBLEMS
from optlab.experiments.benchmark.protocol import Outcome

PROFILE_TAUS = (1.0, 2.0, 4.0, 10.0)
COSTS = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


def write_metrics(run_dir: Path, outcomes: Sequence[Outcome]) -> None:
    """One ``metrics.jsonl`` row per (problem, optimizer, phase, rate, seed, epoch)."""
    with report.MetricsWriter(run_dir) as metrics:
        for o in outcomes:
            for phase, tuned in (("tune", o.tuned), ("rerun", o.chosen)):
                for record in tuning.records(tuned, problem=o.problem, phase=phase):
                    metrics.write(record)


# --------------------------------------------------------------------------- tables


def percent(values: np.ndarray) -> str:
    return report.format_mean_std(values, scale=100.0)


def problem_rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        flags = (" (grid edge)" if o.at_grid_edge else "") + (
            " (diverged)" if o.tuned.diverged else ""
        )
        accuracy = percent(o.final["test_accuracy"]) if "test_accuracy" in o.final else report.DASH
        rows.append([
            o.optimizer,
            f"{o.learning_rate:.3g}{flags}",
            report.format_mean_std(o.final["test_loss"]),
            accuracy,
            report.DASH if o.steps_to_target is None else f"{o.steps_to_target:,}",
            report.DASH if o.seconds_to_target is None else f"{o.seconds_to_target:.3g}",
            f"{o.diverged_in_grid}/{o.tuning['runs']}",
            f"{o.tuning['runs']} runs, {o.tuning['steps']:,} steps, {o.tuning['seconds']:.3g} s "
            f"({o.tuning['compile_s']:.2g} s compile)",
        ])  # fmt: skip
    return rows


def problem_headers(seeds: int) -> list[str]:
    return ["optimizer", "chosen lr", f"test loss ({seeds} seeds)", "test accuracy (%)",
            "steps to target", f"wall time to target (s, {seeds} seeds vmapped)",
            "diverged in grid", "tuning cost"]  # fmt: skip


def cost_matrix(outcomes: Sequence[Outcome], problems: Sequence[str], optimizers: Sequence[str],
                cost: str) -> np.ndarray:  # fmt: skip
    """``(problems, optimizers)`` of ``steps_to_target`` or ``seconds_to_target``, inf where
    the target was not reached."""
    by_key = {(o.problem, o.optimizer): getattr(o, COSTS[cost]) for o in outcomes}
    return np.array([[np.inf if by_key.get((p, s)) is None else by_key[(p, s)]
                      for s in optimizers] for p in problems], np.float64)  # fmt: skip


def profile_rows(costs: np.ndarray, optimizers: Sequence[str]) -> list[list[str]]:
    """Per optimizer: ρ(τ) at :data:`PROFILE_TAUS`, and the fraction of problems solved."""
    rho = profiles.performance_profile(costs, np.array(PROFILE_TAUS))
    solved = np.isfinite(profiles.performance_ratios(costs)).mean(axis=0)
    return [[name, *(f"{value:.2f}" for value in rho[s]), f"{solved[s]:.2f}"]
            for s, name in enumerate(optimizers)]  # fmt: skip


def baseline_rows(outcomes: Sequence[Outcome], smaller: dict[str, list[str]]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        baseline = baselines.BASELINES.get((o.problem, o.optimizer))
        if baseline is None:
            continue
        metric = baseline.metric
        scale = 100.0 if "accuracy" in metric else 1.0
        reasons = [*smaller.get(o.problem, ())]
        if o.problem in baselines.DIFFERENT_INSTANCE:
            reasons.append("another problem instance (see below)")
        verdict = baselines.verdict(o.final[metric], baseline.values, metric, reasons)
        seeds = ", ".join(str(run.seed) for run in baseline.runs)
        rows.append([
            o.problem, o.optimizer, metric + (" (%)" if scale == 100.0 else ""),
            f"{report.format_mean_std(o.final[metric], scale=scale)} (lr {o.learning_rate:.3g})",
            f"{report.format_mean_std(baseline.values, scale=scale)} (lr "
            f"{baseline.learning_rate:.3g}, seeds {seeds})",
            verdict.describe(),
        ])  # fmt: skip
    return rows


def baseline_sources() -> list[str]:
    return [
        f"- `{problem}` / `{key}`: " + "; ".join(
            f"[seed {run.seed}]({baselines.REPOSITORY}/blob/{run.commit}/{run.path})"
            for run in baseline.runs)
        for (problem, key), baseline in baselines.BASELINES.items()
    ]  # fmt: skip


# --------------------------------------------------------------------------- plots


def plot_profiles(path: Path, costs: dict[str, np.ndarray], optimizers: Sequence[str]) -> Path:
    """ρ_s(τ) step curves, one panel per cost (steps, seconds)."""
    figure = report.new_figure((5.0 * len(costs), 4.0))
    for axes, (cost, matrix) in zip(figure.subplots(1, len(costs), squeeze=False)[0],
                                    costs.items(), strict=True):  # fmt: skip
        taus = profiles.tau_grid(matrix)
        rho = profiles.performance_profile(matrix, taus)
        for s, name in enumerate(optimizers):
            axes.step(taus, rho[s], where="post", label=name, lw=1.5)
        axes.set_ylim(-0.02, 1.02)
        report.style_axes(axes, xlabel="τ (within a factor τ of the best)",
                          ylabel="fraction of problems ρ(τ)", logx=True,
                          title=f"performance profile: {cost} to target")  # fmt: skip
    return report.save_figure(figure, path)


def plot_sensitivity(run_dir: Path, outcomes: Sequence[Outcome]) -> list[Path]:
    """Final validation value against the learning rate, a panel per problem, one figure for
    the problems chosen on a loss (log scale) and one for those chosen on accuracy."""
    written = []
    for kind, logy in (("loss", True), ("accuracy", False)):
        panels: dict[str, dict] = {}
        for o in outcomes:
            select = PROBLEMS[o.problem].select
            if not select.endswith(kind):
                continue
            grid, values = o.search
            panels.setdefault(f"{o.problem} ({select})", {})[o.optimizer] = (grid, values, None)
        if panels:
            path = run_dir / f"lr_sensitivity_{kind}.png"
            written.append(report.plot_panels(
                path, panels, xlabel="learning rate", ylabel=f"final validation {kind}",
                logx=True, logy=logy, suptitle="learning-rate sensitivity (tuning runs, seed 0)",
            ))  # fmt: skip
    return written


# --------------------------------------------------------------------------- summary


def write_summary(run_dir: Path, cfg: dict, outcomes: Sequence[Outcome], skipped: dict[str, str],
                  meta: dict) -> None:  # fmt: skip
    optimizers = cfg["optimizers"]
    solved_problems = list(dict.fromkeys(o.problem for o in outcomes))
    smaller = {name: why for name, why in cfg["smaller_than_deepobs"].items()
               if name in solved_problems}  # fmt: skip
    size_line = (
        f"Learning-rate grid: {cfg['grid_size']} of DeepOBS's 36 rates 10⁻⁵…10²; "
        f"{cfg['seeds']} seeds for the chosen rate; epochs "
        + ", ".join(f"{p} {cfg['epochs'][p]}" for p in solved_problems)
        + f"; batch size {cfg['batch_size'] or 'DeepOBS (128)'}"
        + (f"; training subsets of {cfg['train_size']} examples" if cfg["train_size"] else "")
        + "."
    )
    sections = [
        "The DeepOBS protocol (Schneider, Balles & Hennig, ICLR 2019): only the learning rate "
        "is tuned, every grid trained as one vmapped population, chosen on the final "
        "validation value (never the test set), re-run with several seeds; mean ± std over "
        "seeds.",
        size_line,
        (
            "**Smaller than DeepOBS's protocol** on these problems, so what they show about "
            "DeepOBS's results is indicative only: "
            + "; ".join(f"{name}: {', '.join(why)}" for name, why in smaller.items())
            + "."
        )
        if smaller
        else "Every DeepOBS problem of this run ran at DeepOBS's size.",
    ]
    if skipped:
        sections.append(
            "## Skipped problems\n\n"
            + "\n".join(f"- `{name}`: {reason}" for name, reason in skipped.items())
        )
    for name in solved_problems:
        problem = PROBLEMS[name]
        rows = problem_rows([o for o in outcomes if o.problem == name])
        sections += [
            f"## {name}\n\n{problem.description}; target {problem.target.describe()}; "
            f"{cfg['epochs'][name]} epochs; learning rate chosen on {problem.select}.",
            report.markdown_table(problem_headers(cfg["seeds"]), rows),
        ]
    if solved_problems:
        headers = ["optimizer", *(f"ρ({tau:g})" for tau in PROFILE_TAUS), "solved"]
        costs = {cost: cost_matrix(outcomes, solved_problems, optimizers, cost) for cost in COSTS}
        sections += [
            "## Performance profiles (Dolan & Moré 2002)\n\n"
            f"Over {len(solved_problems)} problems: ρ(τ) is the fraction of problems on which "
            "an optimizer reached the target within τ times the best optimizer's cost "
            "(`profiles.png`). Steps are hardware independent; seconds are the re-run "
            "population's wall time on a shared machine (noisy).",
            "### Steps to target\n\n" + report.markdown_table(
                headers, profile_rows(costs["steps"], optimizers)),
            "### Wall time to target\n\n" + report.markdown_table(
                headers, profile_rows(costs["seconds"], optimizers)),
        ]  # fmt: skip
        plot_profiles(run_dir / "profiles.png", costs, optimizers)
        plot_sensitivity(run_dir, outcomes)
    rows = baseline_rows(outcomes, smaller)
    sections.append("## Comparison with DeepOBS's baselines\n\n" + (
        report.markdown_table(["problem", "optimizer", "metric", "ours", "DeepOBS", "verdict"],
                              rows) if rows else
        "No problem and optimizer of this run has a DeepOBS baseline (they exist for "
        "`quadratic_deep` and `fmnist_2c2d` with `sgd`, `momentum:momentum=0.99`, `adam`)."
    ) + "".join(f"\n\n`{name}`: {why}." for name, why in baselines.DIFFERENT_INSTANCE.items()
              if any(o.problem == name for o in outcomes))
    + "\n\nVerdict rule and sources: `optlab.experiments.benchmark.baselines`. DeepOBS's "
        "values are final test values after 100 epochs, from these files of its baseline "
        "release:\n\n" + "\n".join(baseline_sources()))  # fmt: skip
    sections.append(
        f"## Measurement\n\nWall time {meta['wall_time_s']:.1f} s in all, compilation included; "
        f"{report.describe_machine(meta['machine'])}."
    )
    report.write_summary(run_dir, "Optimizer benchmark (DeepOBS protocol)", sections)
