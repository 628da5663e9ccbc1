"""Verdict rules: each claim's measured figures → a verdict, by an explicit rule.

A rule reads only the figures recorded in the ledger (JSON values: numbers, booleans,
lists, dicts; ``None`` where a run never reached its target), so anyone can re-apply it to
``ledger.json``. It returns an :class:`Outcome`: one of

* ``supported``: every part of the claim holds in the measurements;
* ``not supported``: no part holds (or the measurement contradicts it);
* ``conditions``: it holds only in part, or only for some settings: ``conditions`` says which;
* ``indicative``: the figures cannot decide (e.g. a difference within the seed spread).

Then :func:`verdict` says only what the run can show: when the run is smaller than the claim
is about (``figures["small_run"]``: a ``--quick`` run, or network training on subsets where
the claim concerns real-size training), the verdict is ``indicative`` whatever the rule
found; the rule's outcome is kept beside it ("leans").

Thresholds (one place): a factor of :data:`FASTER` in steps is "much faster"; a claim over
several problems holds when it holds on ≥ :data:`MOST` of them and fails on ≤
:data:`FEW`; a cost "grows with N" when its log-log slope is ≥ :data:`GROWS`, and is
"constant" when |slope| < :data:`FLAT`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

SUPPORTED, NOT_SUPPORTED, CONDITIONS, INDICATIVE = (
    "supported",
    "not supported",
    "conditions",
    "indicative",
)
VERDICTS = (SUPPORTED, NOT_SUPPORTED, CONDITIONS, INDICATIVE)

FASTER = 2.0  # "much faster": at least this factor in steps to the target
MOST, FEW = 0.75, 0.25  # share of problems for "holds" / "does not hold"
GROWS, FLAT = 0.5, 0.2  # log-log slopes: grows with N / independent of N
TRAINS = 0.9  # batch GD "trains": final loss ≤ TRAINS · ln K (a fresh classifier's loss)
MATCHES = 1.5  # batch GD "trains as well": final loss ≤ MATCHES · the best regime's
ESCAPE_GAIN = 0.1  # a real gain in the share of runs that reach the global minimum
POOR_PP = 5.0  # "very poor accuracy at 32": at least this many points below the best batch
SHRINKS = 0.1  # Adagrad's effective rate "shrinks markedly": last / early ≤ this
LEVEL = (0.5, 2.0)  # RMSProp's effective rate "stays level": last / early within this
WORSE = 2.0  # RMSProp decay: "slower" / "noisier" by at least this factor
ALIKE_DECADES = 0.3  # Adam "alike" on aligned and rotated: within a factor 2
ONE_DECADE = 1.0  # Adagrad "needs no tuning": its best rates span at most one decade
MUCH_MEMORY = 1.5  # Adam "uses much memory": step memory above this × SGD's
SADDLE_CURVATURE = 1e-2  # a saddle: λ_min < −SADDLE_CURVATURE · λ_max


class Outcome(NamedTuple):
    verdict: str
    conditions: str


def parts(named: dict[str, bool]) -> Outcome:
    """A claim of several parts: all hold → supported, none → not supported, else conditions
    (naming the parts that hold and those that do not)."""
    held = [name for name, ok in named.items() if ok]
    failed = [name for name, ok in named.items() if not ok]
    if not failed:
        return Outcome(SUPPORTED, "every part holds: " + "; ".join(held))
    if not held:
        return Outcome(NOT_SUPPORTED, "no part holds: " + "; ".join(failed))
    return Outcome(CONDITIONS, f"holds: {'; '.join(held)} — does not hold: {'; '.join(failed)}")


def share(named: dict[str, bool], what: str, unit: str = "problems") -> Outcome:
    """A claim over several problems (or settings, plateaus …): holds on ≥ MOST of them →
    supported, ≤ FEW → not supported, else conditions (naming where it holds)."""
    if not named:
        return Outcome(INDICATIVE, f"nothing where {what} could be measured")
    held = [name for name, ok in named.items() if ok]
    fraction = len(held) / len(named)
    text = f"{what} on {len(held)} of {len(named)} {unit}" + (
        f" ({', '.join(held)})" if held and len(held) < len(named) else ""
    )
    if fraction >= MOST:
        return Outcome(SUPPORTED, text)
    if fraction <= FEW:
        return Outcome(NOT_SUPPORTED, text)
    return Outcome(CONDITIONS, text)


def settings_where(gains: dict[str, float], what: str) -> Outcome:
    """A claim over settings (noise levels, learning rates): a gain ≥ ESCAPE_GAIN at every
    setting → supported, at none → not supported, else conditions (naming the settings)."""
    helped = [name for name, gain in gains.items() if gain is not None and gain >= ESCAPE_GAIN]
    text = f"{what} at {len(helped)} of {len(gains)} settings" + (
        f" ({', '.join(helped)})" if helped and len(helped) < len(gains) else ""
    )
    if len(helped) == len(gains):
        return Outcome(SUPPORTED, text)
    if not helped:
        return Outcome(NOT_SUPPORTED, text)
    return Outcome(CONDITIONS, text)


def reached_faster(fast: int | None, slow: int | None, factor: float) -> bool:
    """``fast`` reached the target, and ``slow`` never did or took ≥ ``factor`` × as many
    steps (``None``: never reached)."""
    return fast is not None and (slow is None or slow >= factor * max(fast, 1))


# ----------------------------------------------------------------------------- the rules


def c1(f) -> Outcome:
    """Batch GD trains (final loss ≤ TRAINS · ln K for every optimizer) and trains as well as
    the others at equal epochs (≤ MATCHES × the best batch size's final loss)."""
    bgd, best, initial = f["batch_gd_final"], f["best_final"], f["initial_loss"]
    return parts({
        "batch GD lowers the loss below 0.9 ln K for every optimizer":
            all(v is not None and v <= TRAINS * initial for v in bgd.values()),
        "at equal epochs it ends within 1.5× the best batch size's loss":
            all(v is not None and v <= MATCHES * best[n] for n, v in bgd.items()),
    })  # fmt: skip


def c2(f) -> Outcome:
    """A batch-GD step's time and working memory grow with N (log-log slope ≥ GROWS)."""
    return parts({
        f"time per step grows with N (slope {f['time_slope']:.2f})": f["time_slope"] >= GROWS,
        f"working memory grows with N (slope {f['memory_slope']:.2f})":
            f["memory_slope"] >= GROWS,
    })  # fmt: skip


def c3(f) -> Outcome:
    """An SGD step's time and working memory do not depend on N (|slope| < FLAT)."""
    return parts({
        f"time per step independent of N (slope {f['time_slope']:.2f})":
            abs(f["time_slope"]) < FLAT,
        f"working memory independent of N (slope {f['memory_slope']:.2f})":
            abs(f["memory_slope"]) < FLAT,
    })  # fmt: skip


def c4(f) -> Outcome:
    """Oscillation: with gradient noise ≥ 20 % of SGD's late steps raise the loss, 4× the
    exact-gradient share; many iterations: B = 1 needs ≥ FASTER × the iterations of the
    fewest-iteration batch size that reaches the target (or never reaches it)."""
    ratio = f["iterations_ratio"]
    many = not f["sgd_reached"] or (ratio is not None and ratio >= FASTER)
    return parts({
        f"the loss oscillates ({f['noisy_up_fraction']:.0%} of late steps go up with noise, "
        f"{f['exact_up_fraction']:.0%} without)":
            f["noisy_up_fraction"] >= 0.2 and f["noisy_up_fraction"] > 4 * f["exact_up_fraction"],
        "B = 1 needs many more iterations than larger batches": many,
    })  # fmt: skip


def c5(f) -> Outcome:
    """Share of seeds that end in the global basin, noisy minus exact gradients, per σ."""
    gains = {f"σ={s:g}": e - f["exact_escape"] for s, e in
             zip(f["noise_stds"], f["escape_fraction"], strict=True)}  # fmt: skip
    return settings_where(gains, "gradient noise lets SGD escape the local minimum")


def c6(f) -> Outcome:
    """Heavy ball reaches the target ≥ FASTER × sooner than SGD (both tuned) per problem."""
    return share(
        {p: reached_faster(r["momentum"], r["sgd"], FASTER) for p, r in f["steps"].items()
         if r["momentum"] is not None or r["sgd"] is not None},
        "momentum is at least 2× faster than SGD",
    )  # fmt: skip


def c7(f) -> Outcome:
    """No endless speed-up: the largest β is not the fastest (slower by ≥ 1.5× than the best
    β, or never reaches the target); lower η at high β: among the β that reach the target,
    the fastest η at the largest is below the fastest η at the smallest."""
    steps = [s for s in f["fastest_steps"] if s is not None]
    top = f["fastest_steps"][-1]
    no_endless = bool(steps) and (top is None or top >= 1.5 * min(steps))
    rates = [r for r in f["fastest_rate"] if r is not None]
    lower = len(rates) >= 2 and rates[-1] < rates[0]
    return parts({
        "raising β does not keep speeding it up (the largest β is not the fastest)": no_endless,
        "the fastest learning rate falls as β rises (largest vs smallest β that converge)":
            lower,
    })  # fmt: skip


def c8(f) -> Outcome:
    """Per optimizer: the best mini-batch costs less time per epoch than B = 1, ends lower
    than batch GD (beyond the seed spread), and reaches the target first in wall time."""
    rows = f["optimizers"].values()
    return parts({
        "cheaper per epoch than SGD (B = 1)":
            all(r["minibatch_s_per_epoch"] < r["sgd_s_per_epoch"] for r in rows),
        "lower loss than batch GD at equal epochs (beyond the seed spread)":
            all(r["minibatch_beats_batch_gd"] for r in rows),
        "first to the target loss in wall time": all(r["fastest_is_minibatch"] for r in rows),
    })  # fmt: skip


def c9(f) -> Outcome:
    """Tuned per problem: the best batch size differs between problems; poor at 32: on some
    problem the batch size nearest 32 tests ≥ POOR_PP points below the best, beyond the
    seed spread."""
    drops = f["drop_at_32_pp"]
    return parts({
        "the best batch size differs between problems": len(set(f["best_batch"].values())) > 1,
        f"some problem tests ≥ {POOR_PP:g} pp worse at B={f['batch_near_32']}":
            any(d is not None and d >= POOR_PP and f["drop_beyond_spread"][p]
                for p, d in drops.items()),
    })  # fmt: skip


def c10(f) -> Outcome:
    """One Adagrad rate serves every problem: its best rates span ≤ ONE_DECADE."""
    spread = f["adagrad_spread_decades"]
    text = (
        f"Adagrad's best learning rates span {spread:.2f} decades over "
        f"{len(f['adagrad_best_rates'])} problems (SGD's: {f['sgd_spread_decades']:.2f})"
    )
    return Outcome(SUPPORTED if spread <= ONE_DECADE else NOT_SUPPORTED, text)  # fmt: skip


def c11(f) -> Outcome:
    """Adagrad reaches the target in fewer steps than SGD (both tuned), per problem."""
    return share(
        {p: reached_faster(r["adagrad"], r["sgd"], 1.0 + 1e-9) for p, r in f["steps"].items()
         if r["adagrad"] is not None or r["sgd"] is not None},
        "Adagrad is faster than gradient descent",
    )  # fmt: skip


def c12(f) -> Outcome:
    """Adagrad's effective rate at the last step ≤ SHRINKS × its value early on."""
    ratio = f["adagrad_ratio"]
    text = f"Adagrad's effective rate falls to {ratio:.3g}× its early value over the run"
    return Outcome(SUPPORTED if ratio <= SHRINKS else NOT_SUPPORTED, text)


def c13(f) -> Outcome:
    """RMSProp's effective rate stays level (last / early within LEVEL) where Adagrad's
    shrinks (≤ SHRINKS)."""
    rms, ada = f["rmsprop_ratio"], f["adagrad_ratio"]
    level = LEVEL[0] <= rms <= LEVEL[1]
    text = f"effective rate last/early: RMSProp {rms:.3g}, Adagrad {ada:.3g}"
    if not level:
        return Outcome(NOT_SUPPORTED, text)
    return Outcome(SUPPORTED if ada <= SHRINKS else CONDITIONS,
                   text + ("" if ada <= SHRINKS else " (Adagrad did not shrink here)"))  # fmt: skip


def c14(f) -> Outcome:
    """Too large slows: the largest β needs ≥ WORSE × the best β's steps (or never gets
    there); too small is noisy: the smallest β's late-loss fluctuation or final loss is
    ≥ WORSE × the best β's."""
    i = f["decays"].index(f["best_decay"])
    steps, fluct, final = f["steps_to_tol"], f["tail_fluctuation"], f["final_loss"]
    slow = steps[i] is not None and (steps[-1] is None or steps[-1] >= WORSE * steps[i])
    noisy = (
        None in (fluct[0], final[0]) or fluct[0] >= WORSE * fluct[i] or final[0] >= WORSE * final[i]
    )
    return parts({
        f"β={f['decays'][-1]:g} converges slower than β={f['best_decay']:g}": slow,
        f"β={f['decays'][0]:g} is noisier or ends higher than β={f['best_decay']:g}": noisy,
    })  # fmt: skip


def c15(f) -> Outcome:
    """Data set part: Adam's extra step memory over SGD's grows by > 10 % from the smallest
    to the largest N; model part: Adam and RMSProp keep ≥ 4 B of
    state per parameter and their training step takes ≥ 1.3 × SGD's memory on the largest
    model."""
    by_n = list(f["adam_extra_bytes_by_n"].values())  # in increasing N
    state = f["state_bytes_per_param"]
    return parts({
        "Adam's extra memory over SGD grows with the data set size": by_n[-1] > 1.1 * by_n[0],
        "memory grows with the model (per-parameter state, ≥ 1.3× SGD's step memory)":
            state["adam"] >= 4 and state["rmsprop"] >= 4
            and f["step_bytes_over_sgd"]["adam"] >= 1.3,
    })  # fmt: skip


def c17(f) -> Outcome:
    """Adam's step memory ≤ MUCH_MEMORY × SGD's in every setting measured."""
    return share(
        {s: r <= MUCH_MEMORY for s, r in f["adam_over_sgd"].items()},
        f"Adam's training-step memory is within {MUCH_MEMORY:g}× SGD's",
        "settings",
    )


def c16(f) -> Outcome:
    """Adam is in the faster half of the optimizers (steps to target; never = last)."""
    return share(
        {p: r["adam_rank"] <= r["num_optimizers"] / 2 for p, r in f["ranks"].items()},
        "Adam is in the faster half",
    )


def c18(f) -> Outcome:
    """Adam's good learning-rate range is wider than every other optimizer's, beyond the seed
    spread (wider: supported; narrower: not supported; within the spread: indicative)."""
    text = (f"good range: Adam {f['adam_width']:.2f} decades, widest other ({f['other']}) "
            f"{f['other_width']:.2f}; difference {'beyond' if f['beyond_spread'] else 'within'}"
            " the seed spread")  # fmt: skip
    if not f["beyond_spread"]:
        return Outcome(INDICATIVE, text)
    return Outcome(SUPPORTED if f["adam_width"] > f["other_width"] else NOT_SUPPORTED, text)


def c19(f) -> Outcome:
    """Per task: the best SGD-momentum method tests better than Adam beyond the seed spread
    (+), worse (−), or within it (0). All + → supported, all − → not supported, all 0 →
    indicative, a mix → conditions."""
    signs = {t: (r["beyond_spread"] and (1 if r["sgd_minus_adam_pp"] > 0 else -1)) or 0
             for t, r in f["tasks"].items()}  # fmt: skip
    text = "; ".join(f"{t}: SGD-momentum − Adam {f['tasks'][t]['sgd_minus_adam_pp']:+.2f} pp "
                     f"({'beyond' if f['tasks'][t]['beyond_spread'] else 'within'} the spread)"
                     for t in signs)  # fmt: skip
    values = set(signs.values())
    if values == {1}:
        return Outcome(SUPPORTED, text)
    if values == {-1}:
        return Outcome(NOT_SUPPORTED, text)
    if values == {0}:
        return Outcome(INDICATIVE, text)
    return Outcome(CONDITIONS, text)


def c20(f) -> Outcome:
    """Share of starts that end in the global basin, Adam (β₁ = 0.9) minus Adam without
    momentum (β₁ = 0), per learning rate."""
    gains = {f"η={r:g}": a - b for r, a, b in
             zip(f["rates"], f["with_momentum"], f["without_momentum"], strict=True)}  # fmt: skip
    return settings_where(gains, "momentum helps Adam reach the global minimum")


def c21(f) -> Outcome:
    """Of the plateaus examined (slow stretches of training far from its end), the share at
    a saddle, λ_min < −SADDLE_CURVATURE · λ_max, rather than near a minimum."""
    curvature = f["plateau_curvature"]
    if not curvature:
        return Outcome(INDICATIVE, "no plateau found in these runs")
    return share(
        {f"plateau {i}": low < -SADDLE_CURVATURE * high
         for i, (low, high) in enumerate(curvature)},
        "the plateau sits at a saddle (negative curvature)",
        "plateaus examined",
    )  # fmt: skip


def c22(f) -> Outcome:
    """Adam alike: |log₁₀(rotated / aligned)| ≤ ALIKE_DECADES in steps (or final loss), exact
    and noisy; diagonal methods lose their edge: the conditioning study's verdict ("yes" in
    both). Where that study could not measure the edge, the claim is indicative."""
    edge = f["diagonal_edge_verdict"]
    if "not measured" in edge.values():
        return Outcome(
            INDICATIVE,
            "the conditioning study could not measure the diagonal "
            "methods' edge: " + ", ".join(f"{k} {v}" for k, v in edge.items()),
        )
    return parts({
        "Adam performs alike on aligned and rotated (within a factor 2)":
            all(v is not None and abs(v) <= ALIKE_DECADES
                for v in f["adam_rotated_vs_aligned_decades"].values()),
        "diagonal methods win aligned and lose their edge rotated (exact and noisy gradients)":
            all(v == "yes" for v in edge.values()),
    })  # fmt: skip


def c23(f) -> Outcome:
    """Noise: Adam loses no more test accuracy to label noise than the median other optimizer;
    redundancy: duplicated data does not raise Adam's final loss beyond the seed spread."""
    return parts({
        f"label noise costs Adam ({f['adam_noise_drop_pp']:.1f} pp) no more than the median "
        f"other optimizer ({f['others_median_noise_drop_pp']:.1f} pp)":
            f["adam_noise_drop_pp"] <= f["others_median_noise_drop_pp"],
        "duplicated data does not hurt Adam": not any(f["adam_duplicate_worse"].values()),
    })  # fmt: skip


RULES: dict[str, Callable[[dict], Outcome]] = {
    f"C{i}": rule
    for i, rule in enumerate(
        (c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19,
         c20, c21, c22, c23), start=1)
}  # fmt: skip


def verdict(claim_id: str, figures: dict) -> tuple[str, Outcome]:
    """``(verdict, outcome)``: the rule's outcome, and the verdict the run can carry —
    ``indicative`` when ``figures["small_run"]``, else the outcome's."""
    outcome = RULES[claim_id](figures)
    return (INDICATIVE if figures["small_run"] else outcome.verdict), outcome
