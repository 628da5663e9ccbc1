"""``optlab benchmark``: end to end on synthetic and embedded problems, the performance
profile against a hand-worked example, the verdict rule, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from optlab.experiments import cli, report
from optlab.experiments import data as datasets
from optlab.experiments.benchmark import baselines, problems, profiles, protocol
from optlab.optimizers import registry


def test_benchmark_runs_end_to_end_and_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["benchmark", "--quick", "--problems", "quadratic_deep,digits", "--optimizers",
            "sgd,adam", "--epochs", "2", "--grid-size", "2", "--seeds", "2",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0

    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "lr_sensitivity_accuracy.png", "lr_sensitivity_loss.png",
                     "metrics.jsonl", "profiles.png", "summary.md"]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["optimizers"] == ["sgd", "adam"] and config["grid_size"] == 2
    assert config["epochs"] == {"quadratic_deep": 2, "digits": 2}
    records = report.read_metrics(out / "metrics.jsonl")
    # per problem and optimizer: 2 rates × 1 seed × 2 epochs tuning, 1 rate × 2 seeds × 2 re-run
    # (two members each, so tuning and re-run share one compilation)
    assert len(records) == 2 * 2 * (2 * 2 + 2 * 2)
    tune = [r for r in records if r["phase"] == "tune"]
    rates = sorted({r["learning_rate"] for r in tune})  # the ends of DeepOBS's grid
    np.testing.assert_allclose(rates, [1e-5, 1e2], rtol=1e-6)
    rerun = [r for r in records if r["phase"] == "rerun"]
    for problem in ("quadratic_deep", "digits"):
        for name in ("sgd", "adam"):
            rows = [r for r in rerun if r["problem"] == problem and r["optimizer"] == name]
            assert {r["seed"] for r in rows} == {0, 1}
            assert len({r["learning_rate"] for r in rows}) == 1
            chosen = [r for r in tune if r["problem"] == problem and r["optimizer"] == name
                      and r["selected"]]  # fmt: skip
            assert {r["learning_rate"] for r in chosen} == {rows[0]["learning_rate"]}
    digits = [r for r in rerun if r["problem"] == "digits"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["test_loss"] > 0 for r in digits)

    summary = (out / "summary.md").read_text()
    for heading in ("## quadratic_deep", "## digits", "## Performance profiles",
                    "## Comparison with DeepOBS's baselines"):  # fmt: skip
        assert heading in summary
    # quadratic_deep has DeepOBS baselines for sgd and adam; a 2-epoch run is indicative only
    verdict_rows = [line for line in summary.splitlines() if line.startswith("| quadratic_deep |")]
    assert len(verdict_rows) == 2 and all("indicative:" in row for row in verdict_rows)
    assert "github.com/fsschneider/DeepOBS/blob/" in summary
    for png in ("profiles.png", "lr_sensitivity_loss.png", "lr_sensitivity_accuracy.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    err = capsys.readouterr().err
    assert "tune: compiling" in err and "re-run: training" in err  # the progress bar's phases


def test_performance_profile_matches_a_hand_worked_example():
    # 3 problems × 2 optimizers; problem 3 is never solved by optimizer 0.
    costs = np.array([[1.0, 2.0], [4.0, 2.0], [np.inf, 3.0]])
    # best per problem: 1, 2, 3 -> ratios: optimizer 0: 1, 2, inf; optimizer 1: 2, 1, 1
    ratios = profiles.performance_ratios(costs)
    np.testing.assert_array_equal(ratios, [[1.0, 2.0], [2.0, 1.0], [np.inf, 1.0]])
    rho = profiles.performance_profile(costs, np.array([1.0, 1.5, 2.0, 100.0]))
    np.testing.assert_allclose(rho[0], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(rho[1], [2 / 3, 2 / 3, 1.0, 1.0])


def test_a_problem_nobody_solves_counts_as_unsolved_for_everyone():
    costs = np.array([[5.0, np.nan], [np.inf, np.inf]])
    rho = profiles.performance_profile(costs, np.array([1.0, 1e9]))
    np.testing.assert_allclose(rho, [[0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="positive"):
        profiles.performance_ratios(np.array([[0.0, 1.0]]))


def test_verdict_rule():
    # accuracy: d = 0.935 − 0.92 = 0.015; 2·SE = 2·√(0.01²/2 / 2) = 0.01 > tolerance 0.005
    better = baselines.verdict([0.93, 0.94], [0.92, 0.92], "test_accuracy")
    assert better.label == "better" and better.describe() == "better than DeepOBS"
    assert better.difference == pytest.approx(0.015) and better.margin == pytest.approx(0.01)
    # loss: lower is better, so a higher loss is worse
    assert baselines.verdict([90.0, 90.2], [87.52, 87.53], "test_loss").label == "worse"
    # one seed of ours: no spread, so the margin is the tolerance, 0.5 % of 87.525
    one_seed = baselines.verdict([87.5], [87.52, 87.53], "test_loss")
    assert one_seed.label == "consistent" and one_seed.margin == pytest.approx(0.005 * 87.525)
    # a run smaller than DeepOBS's says so
    small = baselines.verdict([87.5], [87.52, 87.53], "test_loss", ["20 epochs (DeepOBS 100)"])
    assert small.describe() == "indicative: consistent with DeepOBS"
    diverged = baselines.verdict([math.nan, 0.5], [0.92, 0.92], "test_accuracy")
    assert diverged.label == "diverged" and diverged.describe() == "diverged"


def test_smaller_than_deepobs_names_each_reason():
    full = {"epochs": 100, "batch_size": 128, "grid_size": 36, "seeds": 10, "train_size": None}
    assert baselines.smaller_than_deepobs(full) == []
    reasons = baselines.smaller_than_deepobs({**full, "epochs": 20, "seeds": 3, "batch_size": 64,
                                              "train_size": 5000})  # fmt: skip
    assert reasons == [
        "20 epochs (DeepOBS 100)",
        "3 seeds (DeepOBS 10)",
        "batch size 64 (DeepOBS 128)",
        "a training subset of 5000 examples",
    ]


def test_the_grid_is_deepobs_s_36_rates_and_coarser_grids_keep_its_values():
    grid = protocol.deepobs_grid()
    assert len(grid) == 36 and grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e2)
    # the rates DeepOBS's baselines chose are grid points
    for rate in (1.5848931925e-02, 2.5118864315e-03, 3.9810717055e-02, 2.5118864315e-04):
        assert np.min(np.abs(grid / rate - 1)) < 1e-9
    np.testing.assert_allclose(protocol.deepobs_grid(8), 10.0 ** np.arange(-5, 3))
    with pytest.raises(ValueError, match="grid-size"):
        protocol.deepobs_grid(37)


def test_optimizer_specs_fix_hyperparameters_of_registered_optimizers():
    spec = protocol.parse_optimizer("momentum:momentum=0.99")
    assert spec.label == "momentum:momentum=0.99" and dict(spec.fixed) == {"momentum": 0.99}
    assert ("quadratic_deep", spec.label) in baselines.BASELINES
    with pytest.raises(ValueError, match="bogus"):
        protocol.parse_optimizer("adam:bogus=1")
    with pytest.raises(ValueError, match="nonexistent.*valid"):
        protocol.parse_optimizer("nonexistent")


def test_a_researchers_own_optimizer_goes_through_the_same_spec(tmp_path, monkeypatch):
    # its registration stays in this test: the registry's table is a copy here
    monkeypatch.setattr(registry, "_TABLE", dict(registry._TABLE))  # noqa: SLF001
    module = tmp_path / "bench_own_optimizer.py"
    module.write_text(
        "import optax\n\n"
        "def scaled_sgd(learning_rate, scale=1.0):\n"
        "    return optax.sgd(learning_rate * scale)\n"
    )
    spec = protocol.parse_optimizer(f"{module}:scaled_sgd:scale=0.5")
    assert spec.name == "scaled_sgd" and dict(spec.fixed) == {"scale": 0.5}
    assert spec.label == "scaled_sgd:scale=0.5"
    assert callable(spec.factory()(learning_rate=0.1).update)


def test_quadratic_deep_has_deepobs_s_spectrum():
    eigenvalues = np.linalg.eigvalsh(problems.deepobs_hessian().astype(np.float64))
    assert np.sum(eigenvalues < 1.0 + 1e-4) == 90 and eigenvalues.min() > -1e-4
    assert np.sum((eigenvalues > 30.0 - 1e-3) & (eigenvalues < 60.0 + 1e-3)) == 10


def test_a_problem_without_its_data_is_skipped_with_the_reason(tmp_path):
    with pytest.raises(problems.Unavailable, match="cifar10") as caught:
        problems.build(problems.PROBLEMS["cifar10_3c3d"], data_dir=tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["mnist_logreg", "mnist_mlp", "fmnist_mlp", "fmnist_2c2d"])
def test_mnist_problems_are_skipped_with_one_line_where_the_files_are_absent(monkeypatch, name):
    def no_files(dataset, **options):
        raise datasets.DataError(f"{dataset}: files missing and download=False.\nPut them in ...")

    monkeypatch.setattr(problems.datasets, "load", no_files)
    with pytest.raises(problems.Unavailable) as caught:
        problems.build(problems.PROBLEMS[name])
    reason = str(caught.value)
    assert problems.PROBLEMS[name].needs in reason and "files missing" in reason
    assert "\n" not in reason


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("--optimizers", "adam,bogus", "bogus"),
        ("--problems", "imagenet_resnet", "imagenet_resnet"),
        ("--epochs", "digits=x", "digits=x"),
        ("--grid-size", "40", "grid-size"),
        ("--seeds", "0", "seeds"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, capsys, flag, value, named):
    out = tmp_path / "run"
    status = cli.main(["benchmark", "--quick", flag, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and named in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
