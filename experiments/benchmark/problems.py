"""The benchmark's test problems: DeepOBS's (Schneider, Balles & Hennig, ICLR 2019), plus
two embedded ones, each as data (``engine.Splits``), a model, an objective and a target.

Every problem is built by :func:`build` into a :class:`Built` the engine trains directly;
a problem whose data files are missing raises :class:`Unavailable` (a one-line reason),
and the benchmark skips it. Validation splits are held out of the training data (never
the test set), so the learning rate is chosen without looking at the test set.

Synthetic problems (θ the parameters, x a data point, the loss averaged over a minibatch)::

    quadratic_deep     ℓ(θ; x) = ½ (θ − x)ᵀ Q (θ − x),  θ ∈ ℝ¹⁰⁰, θ₀ = 1,
                       Q = Rᵀ diag(λ) R, λ: 90 draws of U(0, 1) and 10 of U(30, 60)
                       (NumPy RandomState(42), as DeepOBS), R a Haar rotation;
                       x ~ N(0, 0.6² I): 1000 train (RandomState 42), 1000 test (43),
                       1000 validation (44)
    two_d_rosenbrock   ℓ(u, v; x, y) = (1 − u)² + 100 (v − u²)² + u x + v y,  (u, v)₀ = (−0.5, 1.5)
    two_d_beale        ℓ(u, v; x, y) = beale(u, v) + u x + v y,               (u, v)₀ = (−4.5, 4.5)
                       (x, y) ~ N(0, 1): 10000 train (RandomState 42), 10000
                       validation (44); the test set is all zeros, so the test loss is
                       the noise-free function itself.

DeepOBS draws its rotation with its own subgroup algorithm from the same RandomState
stream; here it is ``scipy.stats.special_ortho_group`` from that stream, so λ (and the
data) are DeepOBS's but R is another Haar draw: the test loss near the optimum,
≈ ½ σ² tr(Q), depends on λ only, not on R.

Classifiers (softmax cross-entropy, ``engine.Classification``; data from
``experiments.data.load``, never downloaded here):

    mnist_logreg    MNIST, logistic regression, zero init                 (DeepOBS)
    mnist_mlp       MNIST, MLP 784-1000-500-100-10, truncated normal 3e-2 (DeepOBS)
    fmnist_mlp      Fashion-MNIST, the same MLP                           (DeepOBS)
    fmnist_2c2d     Fashion-MNIST, 2 conv + 2 dense (``models.CNN2C2D``)  (DeepOBS)
    cifar10_3c3d    CIFAR-10, 3 conv + 3 dense, L2 0.002                  (DeepOBS)
    digits          scikit-learn's 8×8 digits (embedded), MLP 64-100-10   (ours)
    digits_lstm     the digits read row by row (8 steps of 8 pixels) by an LSTM with 64
                    hidden units: the sequence problem                    (ours)

``cifar10_3c3d`` needs a 3c3d network, which ``optlab.models`` does not have yet: it is
skipped with that reason even where the CIFAR-10 files are present.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from optlab import models
from optlab.experiments import data as datasets
from optlab.experiments import engine
from optlab.experiments.studies.surfaces import beale, rosenbrock
from scipy.stats import special_ortho_group


class Unavailable(Exception):
    """A problem cannot run here (its data files are missing); the message says why."""


@dataclasses.dataclass(frozen=True)
class Target:
    """``metric`` (a history metric, e.g. ``test_accuracy``) reaching ``value``: at least it
    for accuracies, at most it for losses."""

    metric: str
    value: float

    @property
    def higher_is_better(self) -> bool:
        return "accuracy" in self.metric

    def reached(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` meet the target (NaN never does)."""
        values = np.asarray(values, np.float64)
        with np.errstate(invalid="ignore"):
            return values >= self.value if self.higher_is_better else values <= self.value

    def describe(self) -> str:
        return f"{self.metric} {'≥' if self.higher_is_better else '≤'} {self.value:g}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One test problem.

    Attributes:
      name: DeepOBS's name where it is one of theirs.
      description: one line for the summary.
      epochs: DeepOBS's number of epochs (ours for the embedded problems).
      batch_size: DeepOBS's batch size (128 throughout).
      quick_epochs: epochs under ``--quick``.
      target: what "reached the target" means (steps and time to target).
      select: the validation metric the learning rate is chosen on.
      deepobs: whether DeepOBS defines this problem (its sizes are then the reference).
      needs: the dataset files it needs (``None``: synthetic or embedded).
    """

    name: str
    description: str
    epochs: int
    batch_size: int
    quick_epochs: int
    target: Target
    select: str
    deepobs: bool
    needs: str | None = None

    @property
    def final_metrics(self) -> tuple[str, ...]:
        """The test metrics the tables report."""
        return ("test_loss", "test_accuracy") if self.select == "val_accuracy" else ("test_loss",)


@dataclasses.dataclass(frozen=True)
class Built:
    """A problem ready for ``engine.fit_population``: ``make_model(key)``, the data
    (train, val, test), the objective and facts for ``config.json``."""

    make_model: Callable[[Any], nnx.Module]
    splits: engine.Splits
    loss: engine.Objective
    meta: dict


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        Problem("quadratic_deep", "100-d noisy quadratic, DeepOBS eigenvalues", 100, 128, 20,
                Target("test_loss", 90.0), "val_loss", True),
        Problem("two_d_rosenbrock", "2-D noisy Rosenbrock from (−0.5, 1.5)", 100, 128, 10,
                Target("test_loss", 0.1), "val_loss", True),
        Problem("two_d_beale", "2-D noisy Beale from (−4.5, 4.5)", 100, 128, 10,
                Target("test_loss", 0.1), "val_loss", True),
        Problem("mnist_logreg", "MNIST, logistic regression (zero init)", 50, 128, 2,
                Target("test_accuracy", 0.90), "val_accuracy", True, "mnist"),
        Problem("mnist_mlp", "MNIST, MLP 1000-500-100", 100, 128, 2,
                Target("test_accuracy", 0.97), "val_accuracy", True, "mnist"),
        Problem("fmnist_mlp", "Fashion-MNIST, MLP 1000-500-100", 100, 128, 2,
                Target("test_accuracy", 0.85), "val_accuracy", True, "fashion_mnist"),
        Problem("fmnist_2c2d", "Fashion-MNIST, 2 conv + 2 dense", 100, 128, 2,
                Target("test_accuracy", 0.90), "val_accuracy", True, "fashion_mnist"),
        Problem("cifar10_3c3d", "CIFAR-10, 3 conv + 3 dense", 100, 128, 2,
                Target("test_accuracy", 0.80), "val_accuracy", True, "cifar10"),
        Problem("digits", "8×8 digits (embedded), MLP 64-100-10", 50, 128, 8,
                Target("test_accuracy", 0.95), "val_accuracy", False),
        Problem("digits_lstm", "8×8 digits row by row, LSTM 64", 50, 128, 8,
                Target("test_accuracy", 0.90), "val_accuracy", False),
    )
}  # fmt: skip
QUICK = ("quadratic_deep", "two_d_rosenbrock", "two_d_beale", "digits", "digits_lstm")
NOT_YET_MODELLED = {"cifar10_3c3d": "the 3c3d network is not in optlab.models yet"}
MNIST_VALIDATION = 10_000  # DeepOBS holds 10 000 training images out for validation
DIGITS_VALIDATION = 360


def resolve(spec: str | None, quick: bool) -> list[Problem]:
    """The problems named in ``spec`` (comma-separated), else all (``--quick``: :data:`QUICK`)."""
    if spec is None:
        return [PROBLEMS[name] for name in (QUICK if quick else PROBLEMS)]
    names = list(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))
    unknown = [name for name in names if name not in PROBLEMS]
    if not names or unknown:
        raise ValueError(
            f"unknown problem(s) {', '.join(unknown) or '(none given)'}; valid: "
            f"{', '.join(PROBLEMS)}"
        )
    return [PROBLEMS[name] for name in names]


# --------------------------------------------------------------------------- synthetic


class Point(nnx.Module):
    """The parameters of a synthetic problem: one vector θ, the same start for every seed
    (DeepOBS: seeds change only the data order)."""

    def __init__(self, start):
        self.theta = nnx.Param(jnp.asarray(start, jnp.float32))


def deepobs_hessian(dim: int = 100, seed: int = 42) -> np.ndarray:
    """``Q = Rᵀ diag(λ) R`` with DeepOBS's eigenvalues (see the module docstring)."""
    rng = np.random.RandomState(seed)
    num_steep = dim // 10
    flat, steep = rng.uniform(0.0, 1.0, dim - num_steep), rng.uniform(30.0, 60.0, num_steep)
    eigenvalues = np.concatenate([flat, steep])
    rotation = special_ortho_group.rvs(dim, random_state=rng)
    hessian = rotation.T @ np.diag(eigenvalues) @ rotation
    return ((hessian + hessian.T) / 2).astype(np.float32)


def normal_rows(seed: int, shape: tuple[int, ...], std: float) -> np.ndarray:
    return np.random.RandomState(seed).normal(0.0, std, shape).astype(np.float32)


def synthetic(per_example: Callable, start, train, val, test) -> tuple:
    """``(make_model, splits, objective)`` of ``loss = mean_b per_example(θ, x_b)``."""
    per_batch = jax.vmap(per_example, in_axes=(None, 0))  # over the rows of x

    def loss_fn(model, batch, key):
        del key
        return per_batch(model.theta[...], batch["x"]).mean(), {}

    def metrics_fn(model, batch):
        return {"loss": per_batch(model.theta[...], batch["x"])}

    splits = engine.Splits({"x": train}, {"val": {"x": val}, "test": {"x": test}})
    objective = engine.FunctionObjective(loss_fn, metrics_fn)
    return (lambda key: Point(start)), splits, objective


def quadratic_deep() -> Built:
    hessian = jnp.asarray(deepobs_hessian())
    dim = hessian.shape[0]

    def per_example(theta, x):
        return 0.5 * (theta - x) @ hessian @ (theta - x)

    make_model, splits, objective = synthetic(
        per_example, np.ones(dim), normal_rows(42, (1000, dim), 0.6),
        normal_rows(44, (1000, dim), 0.6), normal_rows(43, (1000, dim), 0.6),
    )  # fmt: skip
    meta = {"trace_Q": float(np.trace(np.asarray(hessian))), "train": 1000, "val": 1000,
            "test": 1000}  # fmt: skip
    return Built(make_model, splits, objective, meta)


def two_d(surface: Callable, start: tuple[float, float]) -> Built:
    def per_example(theta, noise):
        return surface(theta) + theta @ noise

    make_model, splits, objective = synthetic(
        per_example, start, normal_rows(42, (10_000, 2), 1.0), normal_rows(44, (10_000, 2), 1.0),
        np.zeros((10_000, 2), np.float32),
    )  # fmt: skip
    return Built(make_model, splits, objective, {"train": 10_000, "val": 10_000, "test": 10_000})


# --------------------------------------------------------------------------- classifiers


def unavailable(name: str, err: Exception) -> Unavailable:
    """The one-line reason a dataset cannot be used (the loader's first line: which files,
    and where they were looked for)."""
    return Unavailable(f"{name} files are not available: {str(err).splitlines()[0]}")


def classification_splits(name: str, data_dir, validation: int, train_size: int | None):
    """``(Splits, Dataset)``: ``validation`` training examples held out (stratified, fixed
    seed), the official test set, and at most ``train_size`` training examples left
    (a stratified subset) when given."""
    try:
        full = datasets.load(name, data_dir=data_dir, download=False)
        held_out = datasets.load(name, data_dir=data_dir, download=False, validation=validation)
    except datasets.DataError as err:
        raise unavailable(name, err) from None
    x_train, y_train = held_out.x_train, held_out.y_train
    if train_size is not None and train_size < len(y_train):
        x_train, y_train = datasets.stratified_subset(x_train, y_train, train_size, seed=0)
    splits = engine.Splits(
        {"x": x_train, "y": y_train},
        {"val": {"x": held_out.x_test, "y": held_out.y_test},
         "test": {"x": full.x_test, "y": full.y_test}},
    )  # fmt: skip
    meta = {"train": len(y_train), "val": len(held_out.y_test), "test": len(full.y_test),
            "data": full.meta}  # fmt: skip
    return splits, full, meta


MODELS = {
    "mnist_logreg": ("mnist", "logreg", {"zero_init": True}, MNIST_VALIDATION),
    "mnist_mlp": ("mnist", "mlp", {"widths": (1000, 500, 100), "init_std": 3e-2},
                  MNIST_VALIDATION),
    "fmnist_mlp": ("fashion_mnist", "mlp", {"widths": (1000, 500, 100), "init_std": 3e-2},
                   MNIST_VALIDATION),
    "fmnist_2c2d": ("fashion_mnist", "cnn_2c2d", {}, MNIST_VALIDATION),
    "digits": ("digits", "mlp", {"widths": (100,)}, DIGITS_VALIDATION),
    "digits_lstm": ("digits", "lstm", {"hidden": 64}, DIGITS_VALIDATION),
}  # fmt: skip


def classifier(name: str, data_dir, train_size: int | None) -> Built:
    dataset, model, options, validation = MODELS[name]
    splits, full, meta = classification_splits(dataset, data_dir, validation, train_size)

    def make_model(key):
        return models.build(model, full.input_shape, full.num_classes, seed=key, **options)

    meta["model"] = {"name": model, **options}
    return Built(make_model, splits, engine.Classification(), meta)


def build(problem: Problem, data_dir=None, train_size: int | None = None) -> Built:
    """The problem's model, data and objective.

    Raises:
      Unavailable: its data files are missing, or its network is not modelled yet.
    """
    if problem.name == "quadratic_deep":
        return quadratic_deep()
    if problem.name == "two_d_rosenbrock":
        return two_d(rosenbrock, (-0.5, 1.5))
    if problem.name == "two_d_beale":
        return two_d(beale, (-4.5, 4.5))
    if problem.name in NOT_YET_MODELLED:
        try:
            datasets.load(problem.needs, data_dir=data_dir, download=False)
        except datasets.DataError as err:
            raise unavailable(problem.needs, err) from None
        raise Unavailable(NOT_YET_MODELLED[problem.name])
    return classifier(problem.name, data_dir, train_size)
