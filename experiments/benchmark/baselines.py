"""DeepOBS's published baselines on the problems we share, and the verdict rule.

Source: the baseline release inside the DeepOBS repository,
``github.com/fsschneider/DeepOBS``, folder ``deepobs/baselines/<problem>/<optimizer>/``
(TensorFlow runs of 13–15 Feb 2019, the ones the ICLR 2019 paper's figures show). Each
JSON file is one run: 100 epochs, batch 128, at the learning rate DeepOBS's tuning chose
from its 36-point grid 10⁻⁵…10²; the chosen rate is the folder with the re-run seeds
(DeepOBS re-ran it with seeds 42–51). The number kept here is the last entry of the file's
``test_losses`` (``quadratic_deep``) or ``test_accuracies`` (``fmnist_2c2d``): the final
test performance after epoch 100. Only the seeds whose files we could read are listed
(two per optimizer, of the ten DeepOBS ran), each with its file and commit, so
every number can be checked; the paper's own tables were not available to us, and no
number here comes from anywhere else. ``mnist_logreg``, ``mnist_mlp``, ``fmnist_mlp``
and the 2-D problems have no baseline in that release.

Verdict (:func:`verdict`): with d the difference of the seed means, signed so that d > 0
means ours is better, and a margin m::

    m = max(2·√(s²_ours/n_ours + s²_DeepOBS/n_DeepOBS), tolerance)   when both ran ≥ 2 seeds
    m = tolerance                                                     otherwise
    "better" if d > m, "worse" if d < −m, else "consistent"

(s: seed standard deviations, ddof 1; ``tolerance``: a practical-equivalence margin per
metric, 0.5 percentage points of accuracy or 0.5 % of the loss). A run smaller than
DeepOBS's (fewer epochs or seeds, a coarser grid, a training subset) can only be
"indicative", and the verdict says so with the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

REPOSITORY = "https://github.com/fsschneider/DeepOBS"
PROTOCOL = {"epochs": 100, "batch_size": 128, "grid_size": 36, "seeds": 10}
ACCURACY_TOLERANCE = 0.005  # 0.5 percentage points
RELATIVE_LOSS_TOLERANCE = 0.005  # 0.5 % of the loss


class SeedResult(NamedTuple):
    """One DeepOBS run: its seed, final test value and where it is."""

    seed: int
    value: float
    path: str
    commit: str


class Baseline(NamedTuple):
    """DeepOBS's tuned runs of one optimizer on one problem."""

    optimizer: str  # DeepOBS's (TensorFlow's) optimizer class
    learning_rate: float
    hyperparameters: Mapping[str, float]
    metric: str  # test_loss or test_accuracy
    runs: tuple[SeedResult, ...]

    @property
    def values(self) -> np.ndarray:
        return np.array([run.value for run in self.runs])


def _runs(folder: str, commits_and_values: Mapping[str, tuple[str, float]]):
    return tuple(
        SeedResult(int(name.split("__")[1]), value, f"deepobs/baselines/{folder}/{name}.json",
                   commit)
        for name, (commit, value) in commits_and_values.items()
    )  # fmt: skip


A = "af662ac6e7b3825e8d154e678e7c5ba79da4fa9e"
B = "26c0ff7c70c48f684609fe48b1f8b32a76a4be38"
ADAM_FOLDER = "AdamOptimizer/num_epochs__100__batch_size__128__beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-08__lr__"  # noqa: E501
MOMENTUM_FOLDER = "MomentumOptimizer/num_epochs__100__batch_size__128__momentum__9.9e-01__use_nesterov__False__lr__"  # noqa: E501
SGD_FOLDER = "GradientDescentOptimizer/num_epochs__100__batch_size__128__lr__"

# (problem, our optimizer key) -> Baseline. Our key: the registry name and the fixed
# hyperparameters that make our optimizer DeepOBS's (TensorFlow's defaults for Adam are
# optax's: b1 0.9, b2 0.999, eps 1e-8; DeepOBS's momentum is heavy ball with μ = 0.99).
BASELINES: dict[tuple[str, str], Baseline] = {
    ("quadratic_deep", "sgd"): Baseline("GradientDescentOptimizer", 1.5848931925e-02, {},
        "test_loss", _runs(f"quadratic_deep/{SGD_FOLDER}1.5848931925e-02", {
            "random_seed__43__2019-02-15-16-57-33": (B, 87.52840859549386),
            "random_seed__45__2019-02-15-16-57-33": (A, 87.52428436279297)})),
    ("quadratic_deep", "momentum:momentum=0.99"): Baseline("MomentumOptimizer", 2.5118864315e-03,
        {"momentum": 0.99}, "test_loss",
        _runs(f"quadratic_deep/{MOMENTUM_FOLDER}2.5118864315e-03", {
            "random_seed__45__2019-02-15-16-57-33": (B, 87.0701174054827),
            "random_seed__46__2019-02-15-16-57-33": (B, 87.04070063999721)})),
    ("quadratic_deep", "adam"): Baseline("AdamOptimizer", 3.9810717055e-02, {}, "test_loss",
        _runs(f"quadratic_deep/{ADAM_FOLDER}3.9810717055e-02", {
            "random_seed__48__2019-02-15-16-57-33": (A, 87.12100219726562),
            "random_seed__51__2019-02-15-16-58-04": (B, 87.12828935895648)})),
    ("fmnist_2c2d", "sgd"): Baseline("GradientDescentOptimizer", 1.5848931925e-01, {},
        "test_accuracy", _runs(f"fmnist_2c2d/{SGD_FOLDER}1.5848931925e-01", {
            "random_seed__45__2019-02-15-16-58-34": (A, 0.9263822115384616),
            "random_seed__47__2019-02-15-16-59-04": (B, 0.9202724358974359)})),
    ("fmnist_2c2d", "momentum:momentum=0.99"): Baseline("MomentumOptimizer", 2.5118864315e-03,
        {"momentum": 0.99}, "test_accuracy",
        _runs(f"fmnist_2c2d/{MOMENTUM_FOLDER}2.5118864315e-03", {
            "random_seed__45__2019-02-15-16-58-43": (A, 0.9241786858974359),
            "random_seed__50__2019-02-15-17-00-22": (B, 0.9215745192307693)})),
    ("fmnist_2c2d", "adam"): Baseline("AdamOptimizer", 2.5118864315e-04, {}, "test_accuracy",
        _runs(f"fmnist_2c2d/{ADAM_FOLDER}2.5118864315e-04", {
            "random_seed__45__2019-02-15-16-58-48": (B, 0.9220753205128205),
            "random_seed__47__2019-02-15-16-59-05": (B, 0.9227764423076923)})),
}  # fmt: skip


# Problems whose instance here is not DeepOBS's own: their absolute values are indicative.
DIFFERENT_INSTANCE = {
    "quadratic_deep": "Q has DeepOBS's eigenvalues and the data DeepOBS's seeds, but another Haar "
    "rotation, which moves the test loss at the optimum by about ±1 (sample noise of ½xᵀQx "
    "over 1000 test points)",
}


def tolerance(metric: str, reference: float) -> float:
    """The practical-equivalence margin of ``metric`` around ``reference``."""
    return ACCURACY_TOLERANCE if "accuracy" in metric else RELATIVE_LOSS_TOLERANCE * abs(reference)


def smaller_than_deepobs(size: Mapping[str, int | None],
                         reference: Mapping[str, int] = PROTOCOL) -> list[str]:  # fmt: skip
    """Why a run of ``size`` (epochs, batch_size, grid_size, seeds, train_size) is smaller
    than DeepOBS's protocol (``reference``, by default :data:`PROTOCOL`); empty when it is
    not."""
    reasons = [
        f"{size[key]} {key.replace('_', ' ')} (DeepOBS {value})"
        for key, value in reference.items()
        if key != "batch_size" and size[key] < value
    ]
    if size["batch_size"] != reference["batch_size"]:
        reasons.append(f"batch size {size['batch_size']} (DeepOBS {reference['batch_size']})")
    if size.get("train_size") is not None:
        reasons.append(f"a training subset of {size['train_size']} examples")
    return reasons


class Verdict(NamedTuple):
    label: str  # "better", "worse", "consistent", or "diverged"
    difference: float  # ours − DeepOBS (mean), in the metric's own direction of "better"
    margin: float
    indicative: bool
    reasons: tuple[str, ...]

    def describe(self) -> str:
        text = (
            self.label
            if self.label == "diverged"
            else f"{self.label} than DeepOBS"
            if (self.label != "consistent")
            else "consistent with DeepOBS"
        )
        return f"indicative: {text}" if self.indicative else text


def verdict(ours: np.ndarray, theirs: np.ndarray, metric: str,
            smaller: list[str] | tuple[str, ...] = ()) -> Verdict:  # fmt: skip
    """The rule of the module docstring. ``ours`` and ``theirs``: final test values per
    seed; ``smaller``: why our run is smaller than DeepOBS's (:func:`smaller_than_deepobs`)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.size == 0 or theirs.size == 0:
        raise ValueError("a verdict needs at least one value on each side")
    indicative = bool(smaller)
    if not np.all(np.isfinite(ours)):
        return Verdict("diverged", math.nan, math.nan, indicative, tuple(smaller))
    sign = 1.0 if "accuracy" in metric else -1.0
    difference = sign * (ours.mean() - theirs.mean())
    margin = tolerance(metric, theirs.mean())
    if ours.size >= 2 and theirs.size >= 2:
        standard_error = math.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
        margin = max(2.0 * standard_error, margin)
    label = "better" if difference > margin else "worse" if difference < -margin else "consistent"
    return Verdict(label, float(difference), float(margin), indicative, tuple(smaller))
