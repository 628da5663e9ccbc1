"""``optlab claims``: the verdict rules on hand-made figures (each outcome), and a ``--quick``
run end to end: 23 ledger rows whose verdicts follow from their recorded figures."""

import json

import numpy as np
import pytest
from optlab.experiments import cli, data
from optlab.experiments.claims import catalogue, ledger, rules
from optlab.experiments.claims import experiments as ex

S, N, C, I = rules.SUPPORTED, rules.NOT_SUPPORTED, rules.CONDITIONS, rules.INDICATIVE


def steps(**per_problem):
    return {"steps": per_problem}


# (claim, hand-made figures, the verdict its rule must give)
CASES = [
    ("C1", dict(initial_loss=2.3, batch_gd_final={"sgd": 0.5}, best_final={"sgd": 0.4}), S),
    ("C1", dict(initial_loss=2.3, batch_gd_final={"sgd": 1.0}, best_final={"sgd": 0.1}), C),
    ("C1", dict(initial_loss=2.3, batch_gd_final={"sgd": 2.2}, best_final={"sgd": 0.1}), N),
    ("C2", dict(time_slope=0.9, memory_slope=1.0), S),
    ("C2", dict(time_slope=0.1, memory_slope=1.0), C),
    ("C2", dict(time_slope=0.1, memory_slope=0.0), N),
    ("C3", dict(time_slope=0.05, memory_slope=0.0), S),
    ("C3", dict(time_slope=0.8, memory_slope=1.0), N),
    ("C4", dict(noisy_up_fraction=0.4, exact_up_fraction=0.01, sgd_reached=True,
                iterations_ratio=10.0), S),
    ("C4", dict(noisy_up_fraction=0.1, exact_up_fraction=0.01, sgd_reached=True,
                iterations_ratio=1.0), N),
    ("C5", dict(noise_stds=[1, 10], escape_fraction=[0.5, 0.9], exact_escape=0.0), S),
    ("C5", dict(noise_stds=[1, 10], escape_fraction=[0.0, 0.9], exact_escape=0.0), C),
    ("C5", dict(noise_stds=[1, 10], escape_fraction=[0.0, 0.05], exact_escape=0.0), N),
    ("C6", steps(a={"momentum": 10, "sgd": 100}, b={"momentum": 5, "sgd": None}), S),
    ("C6", steps(a={"momentum": 90, "sgd": 100}, b={"momentum": None, "sgd": 5}), N),
    ("C7", dict(fastest_steps=[100, 50, 200], fastest_rate=[0.02, 0.01, 0.005]), S),
    ("C7", dict(fastest_steps=[100, 50, 20], fastest_rate=[0.02, 0.03, 0.04]), N),
    ("C7", dict(fastest_steps=[100, 50, None], fastest_rate=[0.02, 0.03, None]), C),
    ("C8", dict(optimizers={"sgd": dict(minibatch_s_per_epoch=1, sgd_s_per_epoch=5,
                                        minibatch_beats_batch_gd=True,
                                        fastest_is_minibatch=True)}), S),
    ("C8", dict(optimizers={"sgd": dict(minibatch_s_per_epoch=6, sgd_s_per_epoch=5,
                                        minibatch_beats_batch_gd=False,
                                        fastest_is_minibatch=False)}), N),
    ("C9", dict(best_batch={"sgd": 1, "adam": 16}, batch_near_32=32,
                drop_at_32_pp={"sgd": 8.0, "adam": 0.0},
                drop_beyond_spread={"sgd": True, "adam": False}), S),
    ("C9", dict(best_batch={"sgd": 16, "adam": 16}, batch_near_32=32,
                drop_at_32_pp={"sgd": 8.0, "adam": 0.0},
                drop_beyond_spread={"sgd": False, "adam": False}), N),
    ("C10", dict(adagrad_spread_decades=0.5, adagrad_best_rates={"a": 0.1},
                 sgd_spread_decades=2.0), S),
    ("C10", dict(adagrad_spread_decades=1.5, adagrad_best_rates={"a": 0.1},
                 sgd_spread_decades=2.0), N),
    ("C11", steps(a={"adagrad": 10, "sgd": 100}, b={"adagrad": 5, "sgd": 6}), S),
    ("C11", steps(a={"adagrad": 10, "sgd": 9}, b={"adagrad": None, "sgd": 6}), N),
    ("C12", dict(adagrad_ratio=0.03), S),
    ("C12", dict(adagrad_ratio=0.5), N),
    ("C13", dict(rmsprop_ratio=0.9, adagrad_ratio=0.03), S),
    ("C13", dict(rmsprop_ratio=0.9, adagrad_ratio=0.9), C),
    ("C13", dict(rmsprop_ratio=0.05, adagrad_ratio=0.03), N),
    ("C14", dict(decays=[0.5, 0.9, 0.999], best_decay=0.9, steps_to_tol=[50, 40, None],
                 tail_fluctuation=[0.5, 0.1, 0.1], final_loss=[1.0, 1.0, 2.0]), S),
    ("C14", dict(decays=[0.5, 0.9, 0.999], best_decay=0.9, steps_to_tol=[50, 40, 45],
                 tail_fluctuation=[0.1, 0.1, 0.1], final_loss=[1.0, 1.0, 1.0]), N),
    ("C15", dict(adam_extra_bytes_by_n={"small": 100, "large": 300},
                 state_bytes_per_param={"adam": 8, "rmsprop": 4},
                 step_bytes_over_sgd={"adam": 2.0}), S),
    ("C15", dict(adam_extra_bytes_by_n={"small": 100, "large": 100},
                 state_bytes_per_param={"adam": 8, "rmsprop": 4},
                 step_bytes_over_sgd={"adam": 2.0}), C),
    ("C16", dict(ranks={"a": dict(adam_rank=1, num_optimizers=5)}), S),
    ("C16", dict(ranks={"a": dict(adam_rank=5, num_optimizers=5)}), N),
    ("C17", dict(adam_over_sgd={"a": 1.1, "b": 1.2}), S),
    ("C17", dict(adam_over_sgd={"a": 1.1, "b": 2.2}), C),
    ("C17", dict(adam_over_sgd={"a": 2.1, "b": 2.2}), N),
    ("C18", dict(adam_width=1.0, other="sgd", other_width=0.4, beyond_spread=True), S),
    ("C18", dict(adam_width=0.2, other="sgd", other_width=0.4, beyond_spread=True), N),
    ("C18", dict(adam_width=1.0, other="sgd", other_width=0.4, beyond_spread=False), I),
    ("C19", dict(tasks={"m": dict(sgd_minus_adam_pp=1.0, beyond_spread=True)}), S),
    ("C19", dict(tasks={"m": dict(sgd_minus_adam_pp=-1.0, beyond_spread=True)}), N),
    ("C19", dict(tasks={"m": dict(sgd_minus_adam_pp=1.0, beyond_spread=True),
                        "f": dict(sgd_minus_adam_pp=-1.0, beyond_spread=True)}), C),
    ("C19", dict(tasks={"m": dict(sgd_minus_adam_pp=1.0, beyond_spread=False)}), I),
    ("C20", dict(rates=[0.1, 0.3], with_momentum=[0.5, 0.7], without_momentum=[0.0, 0.0]), S),
    ("C20", dict(rates=[0.1, 0.3], with_momentum=[0.0, 0.0], without_momentum=[0.0, 0.0]), N),
    ("C21", dict(plateau_checkpoints=2, plateau_curvature=[[-0.3, 1.0], [-0.2, 1.0]]), S),
    ("C21", dict(plateau_checkpoints=2, plateau_curvature=[[-1e-4, 1.0], [0.0, 1.0]]), N),
    ("C21", dict(plateau_checkpoints=0, plateau_curvature=[]), I),
    ("C22", dict(adam_rotated_vs_aligned_decades={"exact": 0.1, "noisy": -0.2},
                 diagonal_edge_verdict={"exact": "yes", "noisy": "yes"}), S),
    ("C22", dict(adam_rotated_vs_aligned_decades={"exact": None, "noisy": -0.2},
                 diagonal_edge_verdict={"exact": "yes", "noisy": "no"}), N),
    ("C22", dict(adam_rotated_vs_aligned_decades={"exact": 0.1, "noisy": -0.2},
                 diagonal_edge_verdict={"exact": "yes", "noisy": "not measured"}), I),
    ("C23", dict(adam_noise_drop_pp=3.0, others_median_noise_drop_pp=6.0,
                 adam_duplicate_worse={"×2": False}), S),
    ("C23", dict(adam_noise_drop_pp=9.0, others_median_noise_drop_pp=6.0,
                 adam_duplicate_worse={"×2": False}), C),
]  # fmt: skip


@pytest.mark.parametrize(("claim", "figures", "expected"), CASES)
def test_rule_gives_the_verdict_its_figures_call_for(claim, figures, expected):
    assert rules.RULES[claim](figures).verdict == expected


def test_every_claim_has_a_rule_and_each_rule_is_tested_both_ways():
    assert [c.id for c in catalogue.CLAIMS] == [f"C{i}" for i in range(1, 24)]
    assert set(rules.RULES) == set(catalogue.BY_ID)
    for claim in rules.RULES:
        outcomes = {expected for c, _, expected in CASES if c == claim}
        assert S in outcomes and len(outcomes) >= 2, claim


def test_a_small_run_is_only_indicative_but_keeps_what_the_rule_found():
    figures = dict(adagrad_ratio=0.03)
    assert rules.verdict("C12", {**figures, "small_run": False})[0] == S
    verdict, outcome = rules.verdict("C12", {**figures, "small_run": True})
    assert (verdict, outcome.verdict) == (I, S)


def test_the_conditioning_verdict_is_read_from_its_text():
    assert ledger.study_verdict("**Verdict: Yes** — aligned they win") == "yes"
    assert ledger.study_verdict("**Verdict: not measured** — no method") == "not measured"


def test_plateau_and_double_well_helpers():
    loss = [2.3, 2.29, 2.28, 1.0, 0.2, 0.1, 0.09, 0.085]
    assert list(ex.plateau_checkpoints(np.array(loss))) == [0, 1]
    assert ex.is_saddle(-0.5, 1.0) and not ex.is_saddle(-1e-4, 1.0)
    assert ex.double_well_loss([-1.04, 0.0]) < ex.double_well_loss([0.96, 0.0])
    assert ex.log_slope([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)


def test_empty_out_is_refused_in_one_line(capsys):
    assert cli.main(["claims", "--quick", "--out", " "]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def mnist_here() -> bool:
    try:
        data.load("mnist", download=False)
    except data.DataError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_ledger(tmp_path_factory):
    if not mnist_here():
        pytest.skip("needs the MNIST files: set OPTLAB_DATA_DIR, or put them in ../shared/data")
    out = tmp_path_factory.mktemp("claims")
    assert cli.main(["claims", "--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "ledger.json").read_text())


@pytest.mark.slow
def test_quick_run_writes_a_ledger_row_per_claim(quick_ledger):
    out, ledger = quick_ledger
    assert [e["id"] for e in ledger["claims"]] == [c.id for c in catalogue.CLAIMS]
    table = (out / "ledger.md").read_text()
    assert sum(line.startswith("| C") for line in table.splitlines()) == 23
    for entry in ledger["claims"]:
        assert entry["verdict"] in rules.VERDICTS
        assert entry["leans"] in rules.VERDICTS
        assert entry["claim"] == catalogue.BY_ID[entry["id"]].text
        figure = out / entry["figure"]
        assert figure.suffix == ".png" and figure.stat().st_size > 1000, entry["figure"]
        assert f"[figure]({entry['figure']})" in table


@pytest.mark.slow
def test_quick_verdicts_follow_from_the_recorded_figures(quick_ledger):
    _, ledger = quick_ledger
    for entry in ledger["claims"]:
        verdict, outcome = rules.verdict(entry["id"], entry["figures"])
        assert (verdict, outcome.verdict, outcome.conditions) == (
            entry["verdict"], entry["leans"], entry["conditions"]), entry["id"]  # fmt: skip
        # A quick run is smaller than any claim is about: it can only indicate.
        assert entry["figures"]["small_run"] is True and verdict == rules.INDICATIVE
