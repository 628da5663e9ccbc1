"""``optlab claims``: run, for every claim of the course notes, the experiment that tests it,
and write the ledger (``ledger.md``, ``ledger.json``) in the run folder.

The studies are reused as they are (each writes its own folder under ``studies/``); the
experiments they lack are in :mod:`experiments.claims.experiments` (figures under
``figures/``). For every claim a ``measure_*`` function reads the numbers it needs from those
results into *figures* (JSON values), the claim's rule (:mod:`experiments.claims.rules`)
turns them into a verdict, and the ledger records the claim, the experiment, the figures,
the verdict, the conditions and the PNG that shows it.

Sizes: ``quick`` runs the studies at their ``--quick`` (surfaces, conditioning) and ``test``
(training studies) sizes and the new experiments on digits (a few minutes on 2 CPU cores);
``full`` runs the analytic studies at full size, the training studies at their ``quick``
size (what a shared 2-core machine allows in about 25 minutes; their ``cpu`` and ``full``
sizes are for ``optlab study``), the cost experiment on MNIST up to all 60 000 images and the
new experiments with more seeds and steps.
A quick run's verdicts are all ``indicative``; so are, at full size, the claims about
training networks, which a CPU-sized run on subsets can only indicate.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from optlab.experiments import report
from optlab.experiments.claims import catalogue, rules
from optlab.experiments.claims import experiments as ex
from optlab.experiments.studies import _common as common
from optlab.experiments.studies import (
    batch_regimes,
    conditioning,
    generalisation,
    lr_sensitivity,
    noise_redundancy,
    surfaces,
)
from tqdm.auto import tqdm

SIZES = {
    "quick": dict(
        study_quick=True,
        study_size="test",
        seeds=2,
        cost=dict(
            dataset="digits", sizes=(180, 360, 720, 1437), batch_size=1, widths=(64,), repeats=5
        ),
        memory={
            "N=256, MLP 64": ((64,), 256),
            "N=2048, MLP 64": ((64,), 2048),
            "MLP 1000-1000, batch 32": ((1000, 1000), 32),
        },
        rmsprop=dict(decays=(0.5, 0.9, 0.99, 0.999, 0.9999), num_rates=9, steps=500, seeds=3),
        effective=dict(steps=2000),
        escape=dict(noise_stds=(1.0, 3.0, 10.0, 30.0), learning_rate=0.01, steps=1000, seeds=20),
        momentum=dict(num_starts=10, rates=(0.01, 0.03, 0.1, 0.3), steps=1000),
        plateaus=dict(
            num_train=300,
            widths=(8, 8),
            init_std=0.02,
            learning_rate=0.5,
            steps=1000,
            interval=20,
            seeds=(0, 1),
        ),
    ),
    "full": dict(
        study_quick=False,
        study_size="quick",
        seeds=5,
        cost=dict(
            dataset="mnist",
            sizes=(1875, 3750, 7500, 15000, 30000, 60000),
            batch_size=1,
            widths=(64,),
            repeats=10,
        ),
        memory={
            "N=1000, MLP 256": ((256,), 1000),
            "N=10000, MLP 256": ((256,), 10000),
            "MLP 1000-1000, batch 32": ((1000, 1000), 32),
        },
        rmsprop=dict(decays=(0.5, 0.9, 0.99, 0.999, 0.9999), num_rates=13, steps=2000, seeds=5),
        effective=dict(steps=10000),
        escape=dict(noise_stds=(1.0, 3.0, 10.0, 30.0), learning_rate=0.01, steps=3000, seeds=100),
        momentum=dict(num_starts=20, rates=(0.003, 0.01, 0.03, 0.1, 0.3), steps=3000),
        plateaus=dict(
            num_train=500,
            widths=(8, 8),
            init_std=0.02,
            learning_rate=0.5,
            steps=3000,
            interval=20,
            seeds=(0, 1, 2, 3, 4),
        ),
    ),
}

# Claims about training networks: a CPU-sized run on subsets can only indicate them.
TRAINING_CLAIMS = ("C1", "C4", "C8", "C9", "C10", "C18", "C19", "C21", "C23")
NUM_CLASSES = 10


# ----------------------------------------------------------------------------- experiments


def experiments(cfg: dict, run_dir: Path) -> dict[str, Callable[[], object]]:
    """name -> a thunk that runs one experiment (studies write under ``run_dir/studies``)."""
    studies_dir = run_dir / "studies"
    quick, size, seeds = cfg["study_quick"], cfg["study_size"], cfg["seeds"]

    def study(module, name, **kwargs):
        return lambda: module.run(out=studies_dir / name, **kwargs)

    def figure_run(name, measure, plot, *plot_extra):
        def thunk():
            result = measure()
            plot(run_dir / "figures" / f"{name}.png", result, *plot_extra)
            return result

        return thunk

    rm, esc, mom, pl, cost = (cfg[k] for k in ("rmsprop", "escape", "momentum", "plateaus", "cost"))
    return {
        "surfaces": study(surfaces, "surfaces", quick=quick, seeds=seeds),
        "conditioning": study(conditioning, "conditioning", quick=quick, seeds=seeds),
        "batch-regimes": study(batch_regimes, "batch-regimes", size=size),
        "lr-sensitivity": study(lr_sensitivity, "lr-sensitivity", size=size),
        "noise-redundancy": study(noise_redundancy, "noise-redundancy", size=size),
        "generalisation": study(generalisation, "generalisation", size=size),
        "step-cost": figure_run(
            "step_cost",
            lambda: ex.step_cost(
                ex.load_dataset(cost["dataset"]),
                cost["sizes"],
                cost["batch_size"],
                cost["widths"],
                cost["repeats"],
            ),
            ex.plot_step_cost,
        ),
        "step-memory": figure_run(
            "step_memory", lambda: ex.step_memory(cfg["memory"], (28, 28, 1)), ex.plot_step_memory
        ),
        "rmsprop-decay": figure_run(
            "rmsprop_decay",
            lambda: ex.rmsprop_decay(
                rm["decays"], np.logspace(-4, 0, rm["num_rates"]), rm["steps"], rm["seeds"]
            ),
            ex.plot_rmsprop_decay,
        ),
        "effective-rates": figure_run(
            "effective_rates",
            lambda: ex.effective_rates(cfg["effective"]["steps"]),
            ex.plot_effective_rates,
        ),
        "double-well": figure_run(
            "double_well",
            lambda: dict(
                escape=ex.noisy_escape(
                    esc["noise_stds"], esc["learning_rate"], esc["steps"], esc["seeds"]
                ),
                momentum=ex.momentum_escape(
                    np.linspace(1.2, 3.0, mom["num_starts"]), mom["rates"], mom["steps"]
                ),
            ),
            lambda path, r: ex.plot_double_well(path, r["escape"], r["momentum"]),
        ),
        "plateaus": figure_run(
            "plateaus",
            lambda: ex.plateaus(ex.load_dataset("digits"), **{**pl, "seeds": list(pl["seeds"])}),
            ex.plot_plateaus,
        ),
    }


# ----------------------------------------------------------------------------- measurements


def exact_steps(r: dict) -> dict[str, dict[str, int | None]]:
    """Steps to the tolerance with exact gradients, per analytic problem and optimizer (at its
    tuned rate; None: never), from the surfaces and conditioning studies."""
    out = {}
    for (name, start, noisy), by_opt in r["surfaces"]["results"].items():
        if noisy:
            continue
        surface = next(s for s in surfaces.SURFACES if s.name == name)
        out[f"{name} from {start.split(' (')[0]}"] = {
            o: first_seed_steps(res, surface.target(noisy=False)) for o, res in by_opt.items()
        }
    problem = r["conditioning"]["problem"]
    for (frame, noisy), by_opt in r["conditioning"]["results"].items():
        if not noisy:
            out[f"quadratic {frame}"] = {
                o: first_seed_steps(res, conditioning.target(problem, False))
                for o, res in by_opt.items()
                if o != conditioning.ORACLE
            }
    return out


def first_seed_steps(res: dict, target: float) -> int | None:
    steps = int(common.steps_to_target(res["losses"][res["rate_index"]][0], target))
    return steps if steps >= 0 else None


def exact_rates(r: dict, optimizer: str) -> dict[str, float]:
    """The tuned learning rate of ``optimizer`` per analytic problem (exact gradients), and
    its best rate in the learning-rate study when it ran there."""
    rates = {}
    for (name, start, noisy), by_opt in r["surfaces"]["results"].items():
        if not noisy and optimizer in by_opt:
            rates[f"{name} from {start.split(' (')[0]}"] = float(
                r["surfaces"]["rates"][by_opt[optimizer]["rate_index"]]
            )
    for (frame, noisy), by_opt in r["conditioning"]["results"].items():
        if not noisy and optimizer in by_opt:
            rates[f"quadratic {frame}"] = float(
                r["conditioning"]["rates"][by_opt[optimizer]["rate_index"]]
            )
    widths = r["lr-sensitivity"]["widths"]
    if optimizer in widths:
        rates["MLP (lr-sensitivity study)"] = widths[optimizer]["best_rate"]
    return rates


def spread_decades(rates: dict[str, float]) -> float:
    return float(math.log10(max(rates.values()) / min(rates.values())))


def regimes(by_batch: dict) -> tuple[str, str, list[str]]:
    """(SGD label, batch-GD label, mini-batch labels) of a batch-regimes result."""
    sgd = next(label for label in by_batch if label.startswith("B=1 "))
    full = next(label for label in by_batch if "batch GD" in label)
    return sgd, full, [label for label in by_batch if label not in (sgd, full)]


def final_mean(result: dict) -> float:
    return float(common.finite_or_inf(result["curve"][:, -1]).mean())


def batch_size_of(label: str) -> int:
    """B from a batch-regimes label (``B=1 (SGD)``, ``B=64``, ``B=N=1150 (batch GD)``)."""
    return int(re.match(r"B=(?:N=)?(\d+)", label).group(1))


def measure_c1(r):
    batch = r["batch-regimes"]["results"]
    bgd = {o: final_mean(b[regimes(b)[1]]) for o, b in batch.items()}
    best = {o: min(final_mean(x) for x in b.values()) for o, b in batch.items()}
    figures = dict(initial_loss=math.log(NUM_CLASSES), batch_gd_final=bgd, best_final=best)
    summary = (
        "; ".join(f"{o}: batch GD ends at {bgd[o]:.3g}, best batch size {best[o]:.3g}" for o in bgd)
        + f" (ln 10 = {math.log(10):.3g})"
    )
    return (
        figures,
        summary,
        "studies/batch-regimes/loss_vs_epochs.png",
        ("batch-regimes study: final training loss of B = N against ln K and the best B"),
    )


def measure_cost(r, which: str):
    cost = r["step-cost"]
    key = "batch_gd" if which == "C2" else "sgd"
    figures = dict(
        sizes=cost["sizes"],
        seconds=cost[f"{key}_s"],
        bytes=cost[f"{key}_bytes"],
        time_slope=ex.log_slope(cost["sizes"], cost[f"{key}_s"]),
        memory_slope=ex.log_slope(cost["sizes"], cost[f"{key}_bytes"]),
        batch_size=cost["batch_size"],
    )
    label = "batch GD" if which == "C2" else f"SGD (B = {cost['batch_size']})"
    summary = (
        f"{label}, N {cost['sizes'][0]} → {cost['sizes'][-1]}: "
        f"{1e3 * figures['seconds'][0]:.3g} → {1e3 * figures['seconds'][-1]:.3g} ms per "
        f"step (slope {figures['time_slope']:.2f}), {figures['bytes'][0] / 2**20:.3g} → "
        f"{figures['bytes'][-1] / 2**20:.3g} MiB working memory (slope "
        f"{figures['memory_slope']:.2f})"
    )
    return (
        figures,
        summary,
        "figures/step_cost.png",
        (
            "one engine training step timed (median, interleaved) and its XLA working memory, "
            "against the data set size N"
        ),
    )


def measure_c2(r):
    return measure_cost(r, "C2")


def measure_c3(r):
    return measure_cost(r, "C3")


def measure_c4(r):
    up = {True: [], False: []}
    for (_name, _start, noisy), by_opt in r["surfaces"]["results"].items():
        res = by_opt["sgd"]
        losses = res["losses"][res["rate_index"]]
        late = np.diff(losses[:, losses.shape[-1] // 2 :], axis=-1)
        up[noisy].append(float((late > 0).mean()))
    sgd_batch = r["batch-regimes"]["results"]["sgd"]
    sgd, _, _ = regimes(sgd_batch)

    def iterations(label):
        res = sgd_batch[label]
        return None if res["target_epochs"] is None else res["target_epochs"] * res["steps"]

    others = [iterations(label) for label in sgd_batch if label != sgd]
    others = [i for i in others if i is not None]
    ratio = None if iterations(sgd) is None or not others else iterations(sgd) / min(others)
    figures = dict(
        noisy_up_fraction=float(np.mean(up[True])),
        exact_up_fraction=float(np.mean(up[False])),
        iterations_to_target={label: iterations(label) for label in sgd_batch},
        sgd_reached=iterations(sgd) is not None,
        iterations_ratio=ratio,
    )
    summary = (
        f"late steps that raise the loss: {figures['noisy_up_fraction']:.0%} with "
        f"gradient noise, {figures['exact_up_fraction']:.0%} exact (surfaces, SGD); "
        "iterations to the target loss (batch-regimes, SGD): "
        + ", ".join(
            f"{label} {'never' if i is None else i}"
            for label, i in figures["iterations_to_target"].items()
        )
    )
    return (
        figures,
        summary,
        "studies/surfaces/noisy_rosenbrock.png",
        (
            "surfaces study (noisy vs exact gradients) and batch-regimes study (iterations to the "
            "target loss per batch size)"
        ),
    )


def speed_claim(r, optimizer: str, figure: str):
    steps = exact_steps(r)
    figures = dict(steps={p: {o: s[o] for o in ("sgd", optimizer)} for p, s in steps.items()})
    summary = "; ".join(
        f"{p}: {optimizer} {s[optimizer] or 'never'} vs SGD {s['sgd'] or 'never'}"
        for p, s in steps.items()
    )
    return (
        figures,
        "steps to the tolerance, exact gradients, tuned η: " + summary,
        figure,
        (
            "surfaces and conditioning studies: steps to the tolerance at each optimizer's tuned "
            "learning rate, exact gradients"
        ),
    )


def measure_c5(r):
    e = r["double-well"]["escape"]
    figures = {k: e[k] for k in ("noise_stds", "escape_fraction", "exact_escape", "learning_rate")}
    figures["seeds"] = e["seeds"]
    summary = (
        f"SGD (η={e['learning_rate']:g}) from the local minimum, share of "
        f"{figures['seeds']} seeds ending in the global basin: exact "
        f"{e['exact_escape']:.0%}; "
        + ", ".join(
            f"σ={s:g} {f:.0%}" for s, f in zip(e["noise_stds"], e["escape_fraction"], strict=True)
        )
    )
    return (
        figures,
        summary,
        "figures/double_well.png",
        (
            "tilted double well (x²−1)² + 0.3x + y²/2, SGD started in the shallow minimum, "
            "gradient noise σξ"
        ),
    )


def measure_c6(r):
    return speed_claim(r, "momentum", "studies/surfaces/paths_rosenbrock.png")


def measure_c7(r):
    grid = ex.momentum_map(r["surfaces"]["sweep"])
    ex.plot_momentum_map(r["_dir"] / "figures" / "momentum_map.png", grid)
    fastest_steps, fastest_rate, stable = [], [], []
    for i in range(len(grid["momenta"])):
        steps = grid["steps"][i]
        reached = steps >= 0
        fastest_steps.append(int(steps[reached].min()) if reached.any() else None)
        fastest_rate.append(
            float(grid["rates"][reached][np.argmin(steps[reached])]) if reached.any() else None
        )
        ok = ~grid["diverged"][i]
        stable.append(float(grid["rates"][ok].max()) if ok.any() else None)
    figures = dict(
        momenta=grid["momenta"],
        fastest_steps=fastest_steps,
        fastest_rate=fastest_rate,
        largest_stable_rate=stable,
    )
    summary = "; ".join(
        f"β={m:g}: fastest {s if s is not None else 'never'} steps at "
        f"η={'—' if fr is None else f'{fr:.3g}'}, "
        f"largest stable η {st:.3g}"
        for m, s, fr, st in zip(grid["momenta"], fastest_steps, fastest_rate, stable, strict=True)
    )
    return (
        figures,
        summary,
        "figures/momentum_map.png",
        (
            "surfaces study's ravine sweep ½(x² + 100y²), heavy ball over (β, η): steps to "
            "f ≤ 10⁻⁴ and divergence"
        ),
    )


def measure_c8(r):
    rows = {}
    for o, b in r["batch-regimes"]["results"].items():
        sgd, full, minis = regimes(b)
        best = min(minis, key=lambda label: final_mean(b[label]))
        reached = [label for label in b if b[label]["target_seconds"] is not None]
        fastest = min(reached, key=lambda label: b[label]["target_seconds"]) if reached else None
        rows[o] = dict(
            minibatch=best,
            minibatch_s_per_epoch=float(b[best]["seconds"][-1] / len(b[best]["seconds"])),
            sgd_s_per_epoch=float(b[sgd]["seconds"][-1] / len(b[sgd]["seconds"])),
            minibatch_final=final_mean(b[best]),
            batch_gd_final=final_mean(b[full]),
            minibatch_beats_batch_gd=final_mean(b[best]) < final_mean(b[full])
            and common.spread_differs(b[best]["curve"][:, -1], b[full]["curve"][:, -1]),
            fastest_to_target=fastest,
            fastest_is_minibatch=fastest in minis,
        )
    summary = "; ".join(
        f"{o}: {x['minibatch']} {x['minibatch_s_per_epoch']:.3g} s/epoch vs SGD "
        f"{x['sgd_s_per_epoch']:.3g}, final loss {x['minibatch_final']:.3g} vs batch GD "
        f"{x['batch_gd_final']:.3g}, first to target: {x['fastest_to_target']}"
        for o, x in rows.items()
    )
    return (
        dict(optimizers=rows),
        summary,
        "studies/batch-regimes/loss_vs_time.png",
        ("batch-regimes study: time per epoch, final loss and wall time to the target loss"),
    )


def measure_c9(r):
    best, drops, beyond, accuracy = {}, {}, {}, {}
    near = None
    for o, b in r["batch-regimes"]["results"].items():
        sizes = {label: batch_size_of(label) for label in b}
        acc = {label: b[label]["test_accuracy"] for label in b}
        top = max(acc, key=lambda label: acc[label].mean())
        near = min(sizes, key=lambda label: abs(math.log(sizes[label] / 32)))
        best[o] = sizes[top]
        accuracy[o] = {str(sizes[label]): float(100 * a.mean()) for label, a in acc.items()}
        drops[o] = float(100 * (acc[top].mean() - acc[near].mean()))
        beyond[o] = common.spread_differs(acc[top], acc[near])
    near_size = batch_size_of(near)
    figures = dict(
        best_batch=best,
        test_accuracy_pct=accuracy,
        batch_near_32=near_size,
        drop_at_32_pp=drops,
        drop_beyond_spread=beyond,
    )
    summary = (
        "; ".join(
            f"{o}: best B={best[o]}, at B={near_size} {drops[o]:.1f} pp below it" for o in best
        )
        + " (problems: the optimizers on one data set)"
    )
    return (
        figures,
        summary,
        "studies/batch-regimes/loss_vs_epochs.png",
        ("batch-regimes study: test accuracy per batch size, per optimizer"),
    )


def measure_c10(r):
    ada, sgd = exact_rates(r, "adagrad"), exact_rates(r, "sgd")
    figures = dict(
        adagrad_best_rates=ada,
        sgd_best_rates=sgd,
        adagrad_spread_decades=spread_decades(ada),
        sgd_spread_decades=spread_decades(sgd),
    )
    summary = "Adagrad's tuned η: " + ", ".join(f"{p} {v:.2g}" for p, v in ada.items())
    return (
        figures,
        summary,
        "studies/conditioning/loss_curves.png",
        (
            "tuned learning rates of Adagrad (and SGD) across the analytic problems and the "
            "learning-rate study's MLP"
        ),
    )


def measure_c11(r):
    return speed_claim(r, "adagrad", "studies/surfaces/paths_ravine.png")


def measure_rates(r, which):
    rates = r["effective-rates"]
    figures = {f"{n}_ratio": ex.early_late_ratio(c) for n, c in rates["curves"].items()}
    figures["steps"] = int(rates["steps"][-1])
    summary = (
        f"effective rate at steps {figures['steps'] - 9}–{figures['steps']} over steps "
        f"10–19: Adagrad {figures['adagrad_ratio']:.3g}×, RMSProp "
        f"{figures['rmsprop_ratio']:.3g}×"
    )
    return (
        figures,
        summary,
        "figures/effective_rates.png",
        (
            "Adagrad and RMSProp (registry defaults) fed a stationary gradient stream g ~ N(0, I): "
            "median per-coordinate |u| / (η |g|)"
        ),
    )


def measure_c12(r):
    return measure_rates(r, "C12")


def measure_c13(r):
    return measure_rates(r, "C13")


def measure_c14(r):
    s = r["rmsprop-decay"]
    steps = [s["steps_to_tol"][i] for i in range(len(s["decays"]))]
    best = min(
        range(len(steps)),
        key=lambda i: (steps[i] is None, steps[i] or 0, s["final_loss"][i] or math.inf),
    )
    figures = dict(
        decays=s["decays"],
        rate=s["rate"],
        steps_to_tol=steps,
        tail_fluctuation=s["tail_fluctuation"],
        final_loss=s["final_loss"],
        best_decay=s["decays"][best],
    )
    summary = f"η = {s['rate']:.3g}: " + "; ".join(
        f"β={d:g}: {'never' if st is None else f'{st:.4g}'} steps, late loss "
        f"{common.fmt(fl)}, fluctuation {common.fmt(fu)}"
        for d, st, fl, fu in zip(
            s["decays"], steps, s["final_loss"], s["tail_fluctuation"], strict=True
        )
    )
    return (
        figures,
        summary,
        "figures/rmsprop_decay.png",
        (
            "RMSProp on the noisy quadratic (DeepOBS spectrum, aligned, noise σQξ), η tuned at "
            "β = 0.9 then fixed, β swept"
        ),
    )


def measure_memory(r):
    rows = r["step-memory"]
    settings = list(rows)
    state = {
        o: rows[settings[0]][o]["state_bytes"] / rows[settings[0]][o]["params"]
        for o in ex.MEMORY_OPTIMIZERS
    }
    over = {s: rows[s]["adam"]["step_bytes"] / rows[s]["sgd"]["step_bytes"] for s in settings}
    by_n = {
        s: rows[s]["adam"]["step_bytes"] - rows[s]["sgd"]["step_bytes"]
        for s in settings
        if s.startswith("N=")
    }
    largest = settings[-1]
    figures = dict(
        state_bytes_per_param=state,
        adam_over_sgd=over,
        adam_extra_bytes_by_n=by_n,
        step_bytes_over_sgd={
            o: rows[largest][o]["step_bytes"] / rows[largest]["sgd"]["step_bytes"]
            for o in ex.MEMORY_OPTIMIZERS
        },
        step_bytes={s: {o: v["step_bytes"] for o, v in b.items()} for s, b in rows.items()},
    )
    summary = (
        "state bytes per parameter: "
        + ", ".join(f"{o} {v:.3g}" for o, v in state.items())
        + "; Adam's training-step memory / SGD's: "
        + ", ".join(f"{s} {v:.2f}×" for s, v in over.items())
    )
    return (
        figures,
        summary,
        "figures/step_memory.png",
        (
            "compiled training step (arguments + XLA temporaries) and optimizer state per "
            "optimizer, from shapes (memory_analysis)"
        ),
    )


def measure_c15(r):
    figures, summary, figure, experiment = measure_memory(r)
    summary += "; Adam's extra bytes over SGD at " + ", ".join(
        f"{s}: {v / 2**20:.3g} MiB" for s, v in figures["adam_extra_bytes_by_n"].items()
    )
    return figures, summary, figure, experiment


def measure_c16(r):
    ranks = {}
    for p, s in exact_steps(r).items():
        if all(v is None for v in s.values()):
            continue
        adam = s["adam"] if s["adam"] is not None else math.inf
        faster = sum((v if v is not None else math.inf) < adam for v in s.values())
        ranks[p] = dict(
            adam_rank=faster + 1 if s["adam"] is not None else len(s), num_optimizers=len(s)
        )
    summary = "Adam's rank by steps to the tolerance: " + ", ".join(
        f"{p} {x['adam_rank']}/{x['num_optimizers']}" for p, x in ranks.items()
    )
    return (
        dict(ranks=ranks),
        summary,
        "studies/surfaces/paths_beale.png",
        (
            "surfaces and conditioning studies: Adam's rank among the optimizers by steps to "
            "the tolerance (exact gradients, tuned η)"
        ),
    )


def measure_c17(r):
    return measure_memory(r)


def measure_c18(r):
    widths = r["lr-sensitivity"]["widths"]
    other = max((n for n in widths if n != "adam"), key=lambda n: widths[n]["width"])
    a, o = widths["adam"], widths[other]
    beyond = len(a["seed_widths"]) >= 2 and common.spread_differs(
        a["seed_widths"], o["seed_widths"]
    )
    figures = dict(
        adam_width=a["width"],
        other=other,
        other_width=o["width"],
        adam_seed_widths=a["seed_widths"],
        other_seed_widths=o["seed_widths"],
        beyond_spread=bool(beyond),
        widths={n: w["width"] for n, w in widths.items()},
    )
    summary = "good learning-rate range (decades, ≤ 1.1 × best loss): " + ", ".join(
        f"{n} {w['width']:.2f} ({common.mean_std(w['seed_widths'])} per seed)"
        for n, w in widths.items()
    )
    return (
        figures,
        summary,
        "studies/lr-sensitivity/lr_sensitivity.png",
        ("lr-sensitivity study: width of the good learning-rate range on an MLP"),
    )


def measure_c19(r):
    tasks = {}
    for task, by_opt in r["generalisation"]["results"].items():
        sgd = max(
            (n for n in by_opt if n in common.SGD_FAMILY),
            key=lambda n: by_opt[n]["test_accuracy"].mean(),
        )
        s, a = by_opt[sgd]["test_accuracy"], by_opt["adam"]["test_accuracy"]
        tasks[task] = dict(
            sgd=sgd,
            sgd_test_accuracy=s,
            adam_test_accuracy=a,
            sgd_minus_adam_pp=float(100 * (s.mean() - a.mean())),
            beyond_spread=common.spread_differs(s, a),
        )
    summary = "; ".join(
        f"{t}: {x['sgd']} {common.mean_std_pct(x['sgd_test_accuracy'])} % vs Adam "
        f"{common.mean_std_pct(x['adam_test_accuracy'])} % test accuracy"
        for t, x in tasks.items()
    )
    return (
        dict(tasks=tasks),
        summary,
        "studies/generalisation/test_accuracy.png",
        (
            "generalisation study: test accuracy at the rate tuned on validation, best "
            "SGD-momentum method vs Adam"
        ),
    )


def measure_c20(r):
    m = r["double-well"]["momentum"]
    figures = {k: m[k] for k in ("rates", "with_momentum", "without_momentum", "starts")}
    summary = f"share of {len(m['starts'])} starts ending in the global basin, β₁=0.9 vs 0: " + (
        ", ".join(
            f"η={x:g} {a:.0%} vs {b:.0%}"
            for x, a, b in zip(m["rates"], m["with_momentum"], m["without_momentum"], strict=True)
        )
    )
    return (
        figures,
        summary,
        "figures/double_well.png",
        (
            "tilted double well, Adam with and without momentum (β₁ = 0.9 / 0), exact gradients, "
            "starts on the shallow minimum's side"
        ),
    )


def measure_c21(r):
    result = r["plateaus"]
    curvature = [list(c) for run in result["runs"] for c in run["curvature"]]
    found = sum(len(run["plateau"]) for run in result["runs"])
    figures = dict(
        plateau_checkpoints=found,
        plateau_curvature=curvature,
        final_curvature=[list(run["final_curvature"]) for run in result["runs"]],
        seeds=len(result["runs"]),
        params=result["runs"][0]["params"],
    )
    summary = (
        f"{found} plateau checkpoints in {len(result['runs'])} runs; λ_min/λ_max at the "
        "examined ones: "
        + ", ".join(f"{lo / hi:.2g}" for lo, hi in curvature)
        + "; at the end: "
        + ", ".join(f"{lo / hi:.2g}" for lo, hi in figures["final_curvature"])
    )
    return (
        figures,
        summary,
        "figures/plateaus.png",
        (
            f"full-batch GD on a tanh MLP 64-{'-'.join(map(str, result['widths']))}-10 "
            f"({figures['params']} parameters) from N(0, {result['init_std']:g}²) weights on "
            f"{result['num_train']} digits; dense Hessian at the slow stretches"
        ),
    )


def study_verdict(text: str) -> str:
    """``yes``, ``no`` or ``not measured``: the conditioning study's ``**Verdict: …**``."""
    return re.search(r"\*\*Verdict: ([^*]+)\*\*", text).group(1).strip().lower()


def measure_c22(r):
    c = r["conditioning"]
    decades, loses = {}, {}
    for noisy in (False, True):
        scores = conditioning.scores(c["results"], c["problem"], noisy)
        value, _ = conditioning.edge(scores["rotated"]["adam"], scores["aligned"]["adam"])
        label = "noisy" if noisy else "exact"
        decades[label] = value if math.isfinite(value) else None
        loses[label] = study_verdict(c["verdicts"][noisy][1])
    figures = dict(adam_rotated_vs_aligned_decades=decades, diagonal_edge_verdict=loses)
    summary = (
        "Adam, log₁₀(aligned / rotated) in steps (or final loss): "
        + ", ".join(f"{k} {'±∞' if v is None else f'{v:+.2f}'}" for k, v in decades.items())
        + "; conditioning study's verdict (diagonal methods win aligned, lose the edge rotated): "
        + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in loses.items()))
    )
    return (
        figures,
        summary,
        "studies/conditioning/final_loss_bars.png",
        ("conditioning study: ill-conditioned quadratic, aligned vs rotated"),
    )


def measure_c23(r):
    n = r["noise-redundancy"]["results"]
    worst = [label for label in n if label.startswith("label noise")][-1]
    drops = {
        o: float(
            100 * (n["clean"][o]["test_accuracy"].mean() - n[worst][o]["test_accuracy"].mean())
        )
        for o in n["clean"]
    }
    dup_worse = {}
    for label in (label for label in n if label.startswith("duplicated")):
        clean, dup = n["clean"]["adam"]["train_loss"], n[label]["adam"]["train_loss"]
        dup_worse[label] = bool(dup.mean() > clean.mean() and common.spread_differs(clean, dup))
    others = [v for o, v in drops.items() if o != "adam"]
    figures = dict(
        noise_drop_pp=drops,
        adam_noise_drop_pp=drops["adam"],
        others_median_noise_drop_pp=float(np.median(others)),
        adam_duplicate_worse=dup_worse,
        worst_noise=worst,
    )
    summary = (
        f"test accuracy lost to {worst}: "
        + ", ".join(f"{o} {v:.1f} pp" for o, v in drops.items())
        + "; duplicated data raises Adam's final loss beyond the spread: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in dup_worse.items())
    )
    return (
        figures,
        summary,
        "studies/noise-redundancy/accuracy_gap.png",
        ("noise-redundancy study: label noise and duplicated data at equal gradient steps"),
    )


MEASURES = {f"C{i}": globals()[f"measure_c{i}"] for i in range(1, 24)}


# ----------------------------------------------------------------------------- the ledger


def ledger_entry(claim: catalogue.Claim, measured, small: bool) -> dict:
    """One row: the claim, its experiment and figures, and the verdict of its rule applied
    to the figures as recorded (JSON values)."""
    figures, summary, figure, experiment = measured
    figures = report.to_jsonable({**figures, "small_run": small})
    verdict, outcome = rules.verdict(claim.id, figures)
    return dict(
        id=claim.id,
        optimizer=claim.optimizer,
        claim=claim.text,
        source=claim.source,
        experiment=experiment,
        measured=summary,
        figures=figures,
        rule=rules.RULES[claim.id].__doc__.split("\n\n")[0].strip(),
        verdict=verdict,
        leans=outcome.verdict,
        conditions=outcome.conditions,
        figure=figure,
    )


def verdict_cell(entry: dict) -> str:
    cell = f"**{entry['verdict']}**"
    if entry["verdict"] != entry["leans"]:
        cell += f" (leans: {entry['leans']})"
    return f"{cell} [figure]({entry['figure']})"


def ledger_markdown(entries: list[dict], header: str) -> str:
    rows = [
        [
            e["id"],
            f"{e['optimizer']}: {e['claim']} ({e['source']})",
            e["experiment"],
            e["measured"],
            verdict_cell(e),
            e["conditions"],
        ]
        for e in entries
    ]
    counts = {v: sum(e["verdict"] == v for e in entries) for v in rules.VERDICTS}
    return (
        "\n\n".join(
            [
                "# Ledger: the course notes' claims, tested",
                header,
                "Verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.items()) + ". A verdict is "
                "computed from the figures in `ledger.json` by the claim's rule "
                "(`optlab.experiments.claims.rules`); `indicative` where the run is smaller "
                'than the claim is about, with the rule\'s outcome as "leans".',
                report.markdown_table(
                    ["id", "claim", "experiment", "measured", "verdict", "conditions"], rows
                ),
            ]
        )
        + "\n"
    )


def run(out=None, quick: bool = False) -> dict:
    """Run every experiment and write ``ledger.md`` and ``ledger.json``; returns the ledger."""
    started = time.perf_counter()
    size = "quick" if quick else "full"
    cfg = SIZES[size]
    run_dir = report.make_run_dir(out, "claims")
    with report.RunFolderLock(run_dir):
        (run_dir / "figures").mkdir(exist_ok=True)
        results: dict = {"_dir": run_dir}
        tasks = experiments(cfg, run_dir)
        seconds = {}
        with tqdm(tasks.items(), desc="claims", unit="experiment", file=sys.stderr) as bar:
            for name, thunk in bar:
                bar.set_postfix_str(name)
                began = time.perf_counter()
                results[name] = thunk()
                seconds[name] = time.perf_counter() - began
        entries = []
        for claim in tqdm(catalogue.CLAIMS, desc="verdicts", unit="claim", file=sys.stderr):
            small = quick or claim.id in TRAINING_CLAIMS
            entries.append(ledger_entry(claim, MEASURES[claim.id](results), small))
        machine = report.machine()
        command = "optlab claims" + (" --quick" if quick else "") + f" --out {run_dir}"
        header = (
            f"Size **{size}** (`{command}`), {report.describe_machine(machine)}; "
            f"{time.perf_counter() - started:.0f} s. Studies: "
            + ", ".join(f"`{n}`" for n in tasks if (run_dir / "studies" / n).is_dir())
            + f" (sizes: {'quick' if cfg['study_quick'] else 'full'} for the analytic "
            f"ones, {cfg['study_size']} for the training ones)."
        )
        ledger = dict(
            size=size,
            command=command,
            config=cfg,
            machine=machine,
            seconds=time.perf_counter() - started,
            claims=entries,
        )
        report.atomic_write_text(
            run_dir / "ledger.json", json.dumps(report.to_jsonable(ledger), indent=1) + "\n"
        )
        report.atomic_write_text(run_dir / "ledger.md", ledger_markdown(entries, header))
    return dict(folder=run_dir, ledger=ledger, command=shlex.join(sys.argv))
