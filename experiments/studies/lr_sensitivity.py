"""Is Adam really less sensitive to its learning rate than SGD?

Every optimizer trains the same model from the same initialisations over one log-spaced grid
of learning rates η_1 < … < η_L (all rates × seeds in one ``engine.fit_population``). For each
rate the final validation loss L(η) (seed mean, a diverged run counts as +∞) is compared with
the best one, L* = min_η L(η). A rate is *good* when

    L(η) ≤ (1 + TOLERANCE) · L*,     TOLERANCE = 0.1 (within 10 % of the best loss),

and the *width* of an optimizer's good range is log₁₀(η_hi / η_lo) in decades, where
[η_lo, η_hi] is the contiguous good interval around the best grid rate, its ends found by
interpolating L linearly in log₁₀ η between the last good and the first bad grid rate (a
diverged neighbour puts the end at the last good rate), so the width does not jump with
the grid spacing.
The same rule is applied to the final training loss, and per seed (mean ± std of the widths).
A range that touches an end of the grid is a lower bound and is flagged.

Sizes: ``--quick`` is digits, an MLP 64-10, 5 optimizers, 13 rates in [10⁻⁴, 10⁰], 3 seeds,
6 epochs (about 15 s on 2 CPU cores). The full study is MNIST, an MLP 784-256-10,
the 7 course-notes optimizers, 25 rates in [10⁻⁵, 10¹], 3 seeds, 20 epochs, batch 128
(expected on one GPU: about 5 minutes, estimate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from optlab import models
from optlab.experiments import engine, report, tuning
from optlab.experiments.studies import _common as common

TOLERANCE = 0.1
STUDY = "lr-sensitivity"

SIZES = {
    "test": dict(
        dataset="digits", widths=(32,), optimizers=("sgd", "adam"), low=1e-3, high=1.0,
        per_decade=2, epochs=2, batch_size=64, seeds=2, num_train=None,
    ),
    "quick": dict(
        dataset="digits", widths=(64,), optimizers=common.QUICK_OPTIMIZERS, low=1e-4,
        high=1.0, per_decade=3, epochs=6, batch_size=32, seeds=3, num_train=None,
    ),
    "cpu": dict(
        dataset="mnist", widths=(64,), optimizers=common.COURSE_OPTIMIZERS, low=1e-5,
        high=10.0, per_decade=3, epochs=8, batch_size=64, seeds=2, num_train=8000,
    ),
    "full": dict(
        dataset="mnist", widths=(256,), optimizers=common.COURSE_OPTIMIZERS, low=1e-5,
        high=10.0, per_decade=4, epochs=20, batch_size=128, seeds=3, num_train=None,
    ),
}  # fmt: skip


def good_range(losses: np.ndarray, tolerance: float = TOLERANCE) -> tuple[int, int, int]:
    """``(best, lo, hi)`` grid indices: the best rate and the contiguous run of rates around it
    with ``L(η) ≤ (1 + tolerance) L*``. ``losses`` is (L,), NaN/inf meaning diverged."""
    losses = common.finite_or_inf(losses)
    best = int(np.argmin(losses))
    if not np.isfinite(losses[best]):  # every rate diverged: no good range
        return best, best, best
    good = losses <= (1.0 + tolerance) * losses[best]
    lo = hi = best
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(losses) - 1 and good[hi + 1]:
        hi += 1
    return best, lo, hi


def crossing(rates: np.ndarray, losses: np.ndarray, good: int, bad: int, level: float) -> float:
    """log₁₀ η where L crosses ``level`` between grid points ``good`` (L ≤ level) and ``bad``,
    interpolating L linearly in log₁₀ η; the good point itself if ``bad`` diverged."""
    log_good, log_bad = math.log10(rates[good]), math.log10(rates[bad])
    if not np.isfinite(losses[bad]):
        return log_good
    fraction = (level - losses[good]) / (losses[bad] - losses[good])
    return log_good + fraction * (log_bad - log_good)


def interval(rates: np.ndarray, losses: np.ndarray, tolerance: float = TOLERANCE):
    """``(best, η_lo, η_hi)``: the best grid index and the interpolated good interval."""
    losses = common.finite_or_inf(losses)
    best, lo, hi = good_range(losses, tolerance)
    level = (1.0 + tolerance) * losses[best]
    log_lo = crossing(rates, losses, lo, lo - 1, level) if lo > 0 else math.log10(rates[lo])
    last = len(rates) - 1
    log_hi = crossing(rates, losses, hi, hi + 1, level) if hi < last else math.log10(rates[hi])
    return best, 10.0**log_lo, 10.0**log_hi


def width_decades(low: float, high: float) -> float:
    """log₁₀(η_hi / η_lo)."""
    return float(math.log10(high / low))


def sensitivity(rates: np.ndarray, final: np.ndarray) -> dict:
    """The good range of ``final`` (L, S) losses: on the seed mean, and per seed."""
    mean = common.finite_or_inf(final).mean(axis=1)
    best, low, high = interval(rates, mean)
    _, lo, hi = good_range(mean)
    per_seed = [width_decades(*interval(rates, final[:, s])[1:]) for s in range(final.shape[1])]
    return dict(
        best_rate=float(rates[best]),
        best_loss=float(mean[best]),
        low=low,
        high=high,
        width=width_decades(low, high),
        seed_widths=np.asarray(per_seed),
        at_edge=lo == 0 or hi == len(rates) - 1,
    )


def answer(widths: dict[str, dict]) -> str:
    """The paragraph: is Adam's good range wider than the SGD family's? From the numbers."""
    ranked = sorted(widths, key=lambda n: -widths[n]["width"])
    order = ", ".join(f"{n} {widths[n]['width']:.2f}" for n in ranked)
    parts = [f"Widths of the good range (decades, widest first): {order}."]
    if "adam" in widths:
        adam = widths["adam"]
        sgd_like = [n for n in widths if n in common.SGD_FAMILY]
        if sgd_like:
            best_sgd = max(sgd_like, key=lambda n: widths[n]["width"])
            other = widths[best_sgd]
            wider = adam["width"] > other["width"]
            real = common.spread_differs(adam["seed_widths"], other["seed_widths"])
            verdict = "Yes" if wider and real else "No" if not wider and real else "Not clearly"
            parts.append(
                f"**{verdict}**: Adam's good range spans {adam['width']:.2f} decades "
                f"({adam['low']:.2g}–{adam['high']:.2g}), the widest of the SGD family "
                f"({best_sgd}) {other['width']:.2f} decades ({other['low']:.2g}–"
                f"{other['high']:.2g}); per seed {common.mean_std(adam['seed_widths'])} vs "
                f"{common.mean_std(other['seed_widths'])} decades, a difference "
                f"{'beyond' if real else 'within'} the seed spread (rule: |Δmean| > std₁ + "
                "std₂)."
            )
        rank = ranked.index("adam") + 1
        parts.append(f"Adam ranks {rank} of {len(ranked)} by width.")
    edge = [n for n in widths if widths[n]["at_edge"]]
    if edge:
        parts.append(
            f"The range of {', '.join(edge)} touches the end of the grid, so its width is a "
            "lower bound."
        )
    return " ".join(parts)


def plot(path, rates, finals: dict[str, np.ndarray], widths: dict[str, dict], title: str):
    figure = report.new_figure((8, 4.8))
    ax = figure.add_subplot()
    for name, final in finals.items():
        final = common.finite_or_inf(final)
        mean = np.where(np.isfinite(final).all(1), final.mean(1), np.nan)
        (line,) = ax.plot(rates, mean, marker="o", ms=3, label=name)
        w = widths[name]
        ax.axvspan(w["low"], w["high"], color=line.get_color(), alpha=0.08)
        ax.plot([w["low"], w["high"]], [w["best_loss"]] * 2, color=line.get_color(), lw=4)
    ax.set(xscale="log", yscale="log", xlabel="learning rate η", ylabel="final validation loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    report.save_figure(figure, path, dpi=90)


def run(
    out=None,
    quick: bool = False,
    seeds: int | None = None,
    size: str | None = None,
    optimizers: Sequence[str] = (),
) -> dict:
    """Run the study and write the run folder; ``size`` (test, quick, cpu, full) overrides
    ``quick``; ``optimizers`` are added to the study's own set."""
    started = time.perf_counter()
    size_name, cfg = common.pick_size(SIZES, size, quick, optimizers)
    seed_ids = common.seed_list(seeds, cfg["seeds"])
    splits = common.load_splits(cfg["dataset"], num_train=cfg["num_train"])
    decades = math.log10(cfg["high"] / cfg["low"])
    rates = tuning.log_range(cfg["low"], cfg["high"], round(decades * cfg["per_decade"]) + 1)
    config = engine.TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], eval_train=True)
    run_dir = report.make_run_dir(out, f"study-{STUDY}")
    report.write_config(
        run_dir,
        dict(study=STUDY, quick=quick, size=size_name, **cfg, seed_ids=seed_ids,
             learning_rates=rates, tolerance=TOLERANCE, train=config, data=splits.sizes(),
             machine=report.machine()),
    )  # fmt: skip

    def make_model(key):
        return models.build(
            "mlp", splits.input_shape, splits.num_classes, seed=key, widths=cfg["widths"]
        )

    finals, train_finals, widths, train_widths = {}, {}, {}, {}
    with report.MetricsWriter(run_dir) as metrics:
        for name in cfg["optimizers"]:
            tuned = tuning.tune_rates(name, make_model, rates, seed_ids, splits, config)
            for record in tuning.records(tuned, study=STUDY):
                record["final_loss"] = record["val_loss"]
                metrics.write(record)
            finals[name] = tuned.population.histories["val_loss"][..., -1]
            train_finals[name] = tuned.population.histories["train_loss"][..., -1]
            widths[name] = sensitivity(rates, finals[name])
            train_widths[name] = sensitivity(rates, train_finals[name])

    def table(results):
        return report.markdown_table(
            ["optimizer", "best η", "best loss", "good range of η", "width (decades)",
             "per seed (mean ± std)"],
            [[n, f"{w['best_rate']:.3g}", common.fmt(w["best_loss"]),
              f"{w['low']:.3g} – {w['high']:.3g}" + (" (grid edge)" if w["at_edge"] else ""),
              f"{w['width']:.2f}", common.mean_std(w["seed_widths"])]
             for n, w in results.items()],
        )  # fmt: skip

    title = f"{splits.name}: final validation loss vs η (bars: good range, ≤ 1.1 × best)"
    plot(run_dir / "lr_sensitivity.png", rates, finals, widths, title)
    plot(run_dir / "lr_sensitivity_train.png", rates, train_finals, train_widths,
         title.replace("validation", "training"))  # fmt: skip
    text = answer(widths)
    sections = [
        f"{splits.name} ({splits.sizes()}), MLP {cfg['widths']}, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, {len(rates)} learning rates log-spaced in "
        f"[{rates[0]:g}, {rates[-1]:g}] ({cfg['per_decade']} per decade), seeds {seed_ids}. "
        f"Good rate: seed-mean final loss ≤ {1 + TOLERANCE:g} × the best; width = "
        "log₁₀(η_hi/η_lo) of the contiguous good interval around the best rate, its ends "
        "interpolated (linearly in log η) between the last good and the first bad grid rate.",
        "## Is Adam less sensitive to the learning rate?",
        text,
        "## Final validation loss",
        table(widths),
        "## Final training loss (full pass, same rule)",
        table(train_widths),
        "![validation loss vs learning rate](lr_sensitivity.png)\n"
        "![training loss vs learning rate](lr_sensitivity_train.png)",
        f"Hardware: {report.describe_machine(report.machine())}. "
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: learning-rate sensitivity", sections)
    print(text)
    return dict(folder=run_dir, rates=rates, widths=widths, train_widths=train_widths,
                finals=finals, answer=text)  # fmt: skip
