"""``optlab study``: quick runs write every promised file, and the numbers show known facts."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from optlab.experiments import cli, data, report
from optlab.experiments.studies import STUDIES, conditioning, surfaces
from optlab.experiments.studies import _common as common


@pytest.fixture(scope="module")
def surfaces_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("surfaces")
    assert cli.main(["study", "surfaces", "--quick", "--seeds", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def conditioning_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditioning")
    assert cli.main(["study", "conditioning", "--quick", "--seeds", "2", "--out", str(out)]) == 0
    return out


def _check_run_folder(out, pngs):
    config = json.loads((out / "config.json").read_text())
    assert config["quick"] is True
    records = report.read_metrics(out / "metrics.jsonl")
    assert records and all(record["optimizer"] for record in records)
    assert {"learning_rate", "seed", "final_loss"} <= set(records[0])
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"({png})" in (out / "summary.md").read_text()
    return config, records


def test_surfaces_writes_every_file(surfaces_run):
    pngs = [f"{kind}_{s.name}.png" for s in surfaces.SURFACES for kind in ("paths", "noisy")]
    config, records = _check_run_folder(surfaces_run, pngs + ["ravine_sweep.png"])
    assert set(config["optimizers"]) == {r["optimizer"] for r in records if "start" in r}
    selected = [r for r in records if r.get("selected")]
    # One tuned rate per (surface, start, noise, optimizer), every seed of it logged.
    settings = {(r["surface"], r["start"], r["noise_std"], r["optimizer"]) for r in selected}
    assert len(settings) == len(surfaces.problems()) * len(config["optimizers"])
    assert {r["seed"] for r in selected if r["noise_std"] > 0} == {0, 1}
    assert "mean ± std" in (surfaces_run / "summary.md").read_text()


def test_ravine_momentum_diverges_at_large_rate_and_converges_at_small(surfaces_run):
    sweep = defaultdict(dict)
    for r in report.read_metrics(surfaces_run / "metrics.jsonl"):
        if r.get("sweep") == "momentum":
            sweep[r["momentum"]][r["learning_rate"]] = r
    start = float(surfaces.ravine(np.array([-9.0, 1.0])))
    for beta in (0.0, 0.9):
        limit = surfaces.stability_limit(beta)
        too_large = [r for lr, r in sweep[beta].items() if lr > 1.2 * limit]
        small = [r for lr, r in sweep[beta].items() if 1e-3 <= lr < 0.5 * limit]
        assert too_large and small
        assert all(r["diverged"] for r in too_large)
        assert not any(r["diverged"] for r in small)
        assert all(r["final_loss"] < 0.5 * start for r in small)
    # With momentum a small rate gets close to the minimum within the quick run's steps.
    assert min(r["final_loss"] for lr, r in sweep[0.9].items() if lr < 0.02) < 1e-4 * start
    # Momentum lifts the edge of stability from 2/λ_max towards 2(1+β)/λ_max.
    stable_edge = {
        beta: max(lr for lr, r in sweep[beta].items() if not r["diverged"]) for beta in (0.0, 0.9)
    }
    assert stable_edge[0.9] > 1.5 * stable_edge[0.0]


def test_conditioning_writes_every_file(conditioning_run):
    config, records = _check_run_folder(
        conditioning_run, ["loss_curves.png", "final_loss_bars.png"]
    )
    assert conditioning.ORACLE in config["optimizers"]
    assert {r["frame"] for r in records} == {"aligned", "rotated"}


def _tuned_scores(records, noisy):
    """{frame: {optimizer: Score at the tuned rate}} from metrics.jsonl alone."""
    runs = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["selected"] and (r["noise_std"] > 0) == noisy:
            final = math.inf if r["final_loss"] is None else r["final_loss"]
            runs[r["frame"]][r["optimizer"]].append((r["steps_to_tol"], final))
    return {
        frame: {name: conditioning.score(*zip(*seeds, strict=True)) for name, seeds in d.items()}
        for frame, d in runs.items()
    }


def test_conditioning_verdict_is_derived_from_the_metrics(conditioning_run):
    records = report.read_metrics(conditioning_run / "metrics.jsonl")
    summary = (conditioning_run / "summary.md").read_text()
    for noisy in (False, True):
        _, text = conditioning.verdict(_tuned_scores(records, noisy))
        assert text in summary


def test_verdict_follows_the_numbers():
    S, inf = conditioning.Score, math.inf
    fast_diagonal = {"sgd": S(inf, 1.0), "momentum": S(400, 1e-8), "adam": S(20, 0.0)}
    same = {"aligned": fast_diagonal, "rotated": dict(fast_diagonal)}
    assert conditioning.verdict(same)[0] is False  # wins aligned, but keeps the edge rotated
    slow_diagonal = {"sgd": S(inf, 1.0), "momentum": S(400, 1e-8), "adam": S(inf, 1e-3)}
    answer, text = conditioning.verdict({"aligned": fast_diagonal, "rotated": slow_diagonal})
    assert answer is True and text.startswith("**Verdict: Yes**")
    no_win = {"sgd": S(inf, 1.0), "momentum": S(30, 0.0), "adam": S(25, 0.0)}
    assert conditioning.verdict({"aligned": no_win, "rotated": slow_diagonal})[0] is False
    # Neither momentum method reaches the tolerance in either frame: both edges are +inf.
    never_invariant = {"sgd": S(inf, 1.0), "momentum": S(inf, 0.5), "nesterov": S(inf, 0.4)}
    answer, text = conditioning.verdict(
        {
            "aligned": {**never_invariant, "adagrad": S(9, 0.0), "adam": S(40, 0.0)},
            "rotated": {**never_invariant, "adagrad": S(194, 0.0), "adam": S(inf, 1e-3)},
        }
    )
    assert answer is False and text.startswith("**Verdict: not measured**")
    assert "no rotation-invariant method (sgd, momentum, nesterov) reached the tolerance" in text
    assert "adagrad reached it in 9 steps aligned and 194 rotated" in text
    assert f"{math.log10(194 / 9):+.2f} decades" in text and "shrink to +inf" not in text
    # Nobody reaches the tolerance: final losses decide.
    unreached = {"sgd": S(inf, 1.0), "momentum": S(inf, 0.5), "adam": S(inf, 1e-3)}
    assert conditioning.edge(unreached["adam"], unreached["momentum"]) == (
        pytest.approx(math.log10(500)),
        "final loss",
    )


def test_exact_diagonal_preconditioning_beats_sgd_when_aligned(conditioning_run):
    records = report.read_metrics(conditioning_run / "metrics.jsonl")

    def tuned(frame, name):
        (r,) = [
            r
            for r in records
            if r["selected"]
            and r["noise_std"] == 0
            and r["frame"] == frame
            and r["optimizer"] == name
        ]
        return r

    oracle, sgd = tuned("aligned", conditioning.ORACLE), tuned("aligned", "sgd")
    assert 0 <= oracle["steps_to_tol"] < 20 and sgd["steps_to_tol"] == -1
    assert oracle["final_loss"] < 1e-6 * sgd["final_loss"]


def test_rotation_invariant_methods_do_not_notice_the_rotation(conditioning_run):
    finals = defaultdict(dict)
    for r in report.read_metrics(conditioning_run / "metrics.jsonl"):
        if r["noise_std"] == 0 and r["optimizer"] in ("sgd", "momentum"):
            finals[(r["optimizer"], r["learning_rate"])][r["frame"]] = r["final_loss"]
    converged = [f for f in finals.values() if f["aligned"] is not None and f["aligned"] < 1e3]
    assert converged
    for f in converged:
        np.testing.assert_allclose(f["rotated"], f["aligned"], rtol=1e-3, atol=1e-6)


def test_steps_to_target_needs_the_run_to_stay_below():
    losses = np.array([[5.0, 0.5, 3.0, 0.5, 0.1], [5.0, 0.1, 0.1, 0.1, 0.1], [5, 4, 3, 2, 1.0]])
    np.testing.assert_array_equal(common.steps_to_target(losses, 1.0), [3, 1, 4])
    np.testing.assert_array_equal(common.steps_to_target(losses, 0.5), [3, 1, -1])
    assert common.steps_to_target(np.array([0.1, np.nan]), 1.0) == -1


def test_unknown_study_lists_the_valid_ones(capsys):
    assert cli.main(["study", "nonsense", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and all(name in err for name in STUDIES)


# ----------------------------------------------------------------------------- training studies
# The studies that train networks run at their internal "test" size (smaller than --quick).

from optlab.experiments.studies import (  # noqa: E402
    architectures,
    batch_regimes,
    generalisation,
    lr_sensitivity,
    noise_redundancy,
)

TRAINING_STUDIES = {
    "noise-redundancy": noise_redundancy,
    "batch-regimes": batch_regimes,
    "lr-sensitivity": lr_sensitivity,
    "generalisation": generalisation,
    "architectures": architectures,
}


def _pngs_in_summary(out):
    summary = (out / "summary.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"({png})" in summary, png
    return summary


def run_and_check(name, tmp_path):
    """Run study ``name`` at its test size and check what every training study promises.

    One test per study calls this (not a shared fixture), so that under ``pytest -n`` each
    study runs once, in one worker.
    """
    module = TRAINING_STUDIES[name]
    result = module.run(out=tmp_path, size="test")
    out = tmp_path
    config = json.loads((out / "config.json").read_text())
    assert config["size"] == "test" and config["study"] == name
    summary = _pngs_in_summary(out)
    # The answer paragraph is computed and written, and the tables give mean ± std.
    assert result["answer"] and result["answer"] in summary
    assert "±" in summary and "Hardware:" in summary
    records = report.read_metrics(out / "metrics.jsonl")
    size = module.SIZES["test"]
    assert {r["optimizer"] for r in records} == set(size["optimizers"])
    assert {r["seed"] for r in records} == set(range(size["seeds"]))
    selected = [r for r in records if r["selected"]]
    assert selected and all(r["study"] == name for r in records)
    for r in selected:
        for key in ("train_loss", "test_loss", "val_loss", "final_loss"):
            assert r[key] is not None and math.isfinite(r[key]) and r[key] >= 0, (key, r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
    return out, result, records


def test_lr_sensitivity_run_records_every_rate_and_derives_the_answer(tmp_path):
    out, result, records = run_and_check("lr-sensitivity", tmp_path)
    size = lr_sensitivity.SIZES["test"]
    rates = result["rates"]
    assert len(records) == len(size["optimizers"]) * len(rates) * size["seeds"] * size["epochs"]
    # Rebuild the (rates, seeds) final validation losses from metrics.jsonl alone.
    widths = {}
    for name in size["optimizers"]:
        final = np.full((len(rates), size["seeds"]), np.nan)
        for r in records:
            if r["optimizer"] == name and r["epoch"] == size["epochs"]:
                i = int(np.argmin(abs(np.log(rates) - math.log(r["learning_rate"]))))
                final[i, r["seed"]] = np.nan if r["val_loss"] is None else r["val_loss"]
        widths[name] = lr_sensitivity.sensitivity(rates, final)
        assert widths[name]["width"] == pytest.approx(result["widths"][name]["width"], abs=1e-6)
        assert widths[name]["low"] <= widths[name]["best_rate"] <= widths[name]["high"]
    assert lr_sensitivity.answer(widths) == result["answer"]


def test_good_range_interpolates_and_stops_at_divergence():
    rates = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    losses = np.array([5.0, 1.2, 1.0, 1.05, np.nan])
    assert lr_sensitivity.good_range(losses) == (2, 2, 3)
    assert lr_sensitivity.good_range(np.full(3, np.nan)) == (0, 0, 0)
    best, low, high = lr_sensitivity.interval(rates, losses)
    assert best == 2 and high == pytest.approx(1.0)  # a diverged neighbour: end at the last good
    # L = 1.1 halfway (in log η) from η = 0.1 (L = 1.0) to η = 0.01 (L = 1.2).
    assert math.log10(low) == pytest.approx(-1.0 - 0.5)
    wide = {"adam": dict(width=3.0, seed_widths=np.array([3.0, 3.1]), low=1e-4, high=0.1,
                         at_edge=False),
            "sgd": dict(width=1.0, seed_widths=np.array([1.0, 1.1]), low=0.1, high=1.0,
                        at_edge=True)}  # fmt: skip
    text = lr_sensitivity.answer(wide)
    assert "**Yes**" in text and "sgd touches the end of the grid" in text
    wide["adam"].update(width=0.5, seed_widths=np.array([0.5, 0.5]))
    assert "**No**" in lr_sensitivity.answer(wide)


def test_noise_redundancy_run_keeps_the_step_budget(tmp_path):
    out, result, records = run_and_check("noise-redundancy", tmp_path)
    size = noise_redundancy.SIZES["test"]
    last_steps = defaultdict(set)
    for r in records:
        if r["epoch"] == size["epochs"] // r["copies"]:
            last_steps[r["setting"]].add(r["gradient_steps"])
    assert set(last_steps) == {"clean", "label noise 40%", "duplicated ×2"}
    # Duplicating ×k and running E/k epochs takes the same number of gradient steps.
    assert len(set.union(*last_steps.values())) == 1
    noisy = result["results"]["label noise 40%"]
    clean = result["results"]["clean"]
    for name in size["optimizers"]:
        # 40% wrong labels: training accuracy on them cannot match the clean run's.
        assert noisy[name]["train_accuracy"].mean() < clean[name]["train_accuracy"].mean()
        assert noisy[name]["gap_accuracy"].shape == (size["seeds"],)


def test_noise_redundancy_settings_and_derived_data():
    with pytest.raises(ValueError, match="multiple of copies"):
        noise_redundancy.settings(dict(noise=(0.0,), copies=(3,), epochs=4))
    splits = common.make_splits(data.load("digits"), num_train=500)
    assert splits.sizes() == {"train": 400, "val": 100, "test": 360}
    assert np.bincount(splits.y_val).tolist() == [10] * 10  # stratified: 20% of 50 per class
    noisy = noise_redundancy.derive(splits, noise_redundancy.Setting("n", 0.4, 1))
    assert np.mean(noisy.y_train != splits.y_train) == pytest.approx(0.4, abs=0.01)
    np.testing.assert_array_equal(noisy.y_val, splits.y_val)  # validation stays clean
    doubled = noise_redundancy.derive(splits, noise_redundancy.Setting("d", 0.0, 2))
    assert len(doubled.y_train) == 2 * len(splits.y_train)
    assert np.bincount(doubled.y_train).tolist() == (2 * np.bincount(splits.y_train)).tolist()


def test_batch_regimes_run_covers_sgd_to_batch_gd(tmp_path):
    out, result, records = run_and_check("batch-regimes", tmp_path)
    num_train = json.loads((out / "config.json").read_text())["num_train"]
    steps = {r["batch_size"]: r["steps_per_epoch"] for r in records}
    assert steps[1] == num_train and steps[num_train] == 1  # SGD and batch GD
    timed = [r for r in records if r["selected"]]
    assert all(r["wall_time_s"] > 0 for r in timed)
    for by_batch in result["results"].values():
        for r in by_batch.values():
            assert np.all(np.diff(r["seconds"]) > 0)  # cumulative wall time
            assert r["curve"].shape == (2, batch_regimes.SIZES["test"]["epochs"])


def test_time_to_target():
    curve, seconds = np.array([3.0, 1.0, 0.5]), np.array([0.1, 0.2, 0.3])
    assert batch_regimes.time_to_target(curve, seconds, 1.0) == (2, 0.2)
    assert batch_regimes.time_to_target(curve, seconds, 0.1) == (None, None)


def locally_available(name: str) -> bool:
    """Whether dataset ``name``'s files are here ($OPTLAB_DATA_DIR, the user cache or
    ../shared/data), without trying the network."""
    try:
        data.load(name, download=False)
    except data.DataError:
        return False
    return True


@pytest.mark.parametrize("name", ["generalisation", "architectures"])
def test_comparison_run_tunes_on_validation(tmp_path, name):
    if not locally_available("mnist"):
        pytest.skip("needs the MNIST files: set OPTLAB_DATA_DIR, or put them in ../shared/data")
    _, result, records = run_and_check(name, tmp_path)
    for task, by_name in result["results"].items():
        for optimizer, r in by_name.items():
            assert r["gap_accuracy"].shape == (TRAINING_STUDIES[name].SIZES["test"]["seeds"],)
            assert np.allclose(r["gap_accuracy"], r["train_accuracy"] - r["test_accuracy"])
            chosen = {
                x["learning_rate"] for x in records if x["optimizer"] == optimizer
                and x["selected"] and x.get("task") in (task, task.split(" on ")[0])
            }  # fmt: skip
            assert len(chosen) == 1 and chosen.pop() == pytest.approx(r["rate"])


def test_family_verdict_follows_the_numbers():
    def result(test_acc, gap):
        return dict(test_accuracy=np.array(test_acc), gap_accuracy=np.array(gap))

    better_sgd = {"momentum": result([0.95, 0.96], [0.01, 0.01]),
                  "adam": result([0.90, 0.91], [0.05, 0.06])}  # fmt: skip
    assert "yes, SGD with momentum tests better" in generalisation.family_verdict(better_sgd, "t")
    tie = {"momentum": result([0.90, 0.95], [0.0, 0.1]), "adam": result([0.92, 0.93], [0, 0])}
    assert "no measurable difference" in generalisation.family_verdict(tie, "t")
    assert "needs" in generalisation.family_verdict({"adam": tie["adam"]}, "t")


def test_spread_differs_only_beyond_the_sum_of_the_stds():
    assert common.spread_differs([1.0, 1.1], [2.0, 2.1])
    assert not common.spread_differs([1.0, 2.0], [1.5, 2.5])


def test_size_is_checked_before_any_work(capsys):
    with pytest.raises(ValueError, match="valid sizes: test, quick, cpu, full"):
        common.pick_size(lr_sensitivity.SIZES, "huge", quick=False)
    assert common.pick_size(lr_sensitivity.SIZES, None, quick=True)[0] == "quick"
    # The analytic studies have no --size: a clear error, exit status 2.
    assert cli.main(["study", "surfaces", "--size", "test"]) == 2
    assert "no --size" in capsys.readouterr().err
    for module in TRAINING_STUDIES.values():
        assert set(module.SIZES) == {"test", "quick", "cpu", "full"}


def test_batch_regimes_target_is_halfway_on_the_log_scale():
    finals = [np.array([0.01, 0.01]), np.array([1.0, 1.0]), np.array([np.nan, 1.0])]
    assert batch_regimes.common_target(finals) == pytest.approx(0.1)
