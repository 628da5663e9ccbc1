"""``optlab study``: quick runs write every promised file, and the numbers show known facts."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest

from experiments import cli, report
from experiments.studies import STUDIES, conditioning, surfaces
from experiments.studies import _common as common


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
