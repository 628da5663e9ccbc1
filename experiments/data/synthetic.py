"""Synthetic datasets and dataset transformations, all deterministic given ``seed``.

``make_classification`` and ``make_regression`` wrap scikit-learn's generators into a
:class:`Dataset` with a train/test split; ``ill_conditioned_quadratic`` builds the
DeepOBS ``quadratic_deep`` Hessian; ``add_label_noise`` and ``duplicate`` derive a new
training set from an existing ``Dataset`` (its test set is kept as is).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import sklearn.datasets
from optlab.experiments.data.dataset import Dataset
from scipy.stats import special_ortho_group
from sklearn.model_selection import train_test_split


def make_classification(
    n: int,
    d: int,
    num_classes: int,
    *,
    seed: int,
    separation: float = 1.0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Gaussian clusters, one per class, at the vertices of a hypercube of side ``2·separation``.

    ``sklearn.datasets.make_classification`` with all ``d`` features informative, one cluster
    per class and no label flips; larger ``separation`` makes the classes easier to tell
    apart. Features are float32 ``(n, d)``; ``test_fraction`` of ``n`` (stratified) is the
    test split.
    """
    x, y = sklearn.datasets.make_classification(
        n_samples=n,
        n_features=d,
        n_informative=d,
        n_redundant=0,
        n_repeated=0,
        n_classes=num_classes,
        n_clusters_per_class=1,
        class_sep=separation,
        flip_y=0.0,
        random_state=seed,
    )
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32),
        y.astype(np.int32),
        test_size=test_fraction,
        stratify=y,
        random_state=seed,
    )
    return Dataset(
        f"classification_{d}d_{num_classes}c",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=num_classes,
        meta={
            "source": "sklearn.datasets.make_classification",
            "seed": seed,
            "separation": separation,
            "split": f"test_fraction={test_fraction}",
        },
    )


def make_regression(
    n: int, d: int, *, seed: int, noise: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """A linear model ``y = x·w + b + ε``, ``ε ~ N(0, noise²)``, with ``x ~ N(0, I)``.

    ``sklearn.datasets.make_regression``; targets are float32 and ``num_classes == 0``.
    ``meta["coef"]`` holds the true ``w`` (a list, so ``meta`` stays JSON-serialisable).
    """
    x, y, coef = sklearn.datasets.make_regression(
        n_samples=n, n_features=d, noise=noise, coef=True, random_state=seed
    )
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.float32), test_size=test_fraction, random_state=seed
    )
    return Dataset(
        f"regression_{d}d",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=0,
        meta={
            "source": "sklearn.datasets.make_regression",
            "seed": seed,
            "noise": noise,
            "coef": coef.tolist(),
            "split": f"test_fraction={test_fraction}",
        },
    )


class Quadratic(NamedTuple):
    """The loss ``f(θ) = ½ θᵀ H θ`` with ``H = Qᵀ diag(λ) Q``; its minimum is ``f(0) = 0``."""

    hessian: np.ndarray
    eigenvalues: np.ndarray

    @property
    def condition_number(self) -> float:
        return float(self.eigenvalues.max() / self.eigenvalues.min())

    def loss(self, theta):
        """``½ θᵀ H θ`` (JAX, differentiable)."""
        return 0.5 * theta @ (jnp.asarray(self.hessian) @ theta)


def ill_conditioned_quadratic(
    dim: int = 100, condition: float | None = None, *, rotate: bool = True, seed: int = 0
) -> Quadratic:
    """An ill-conditioned quadratic as in DeepOBS's ``quadratic_deep``.

    Spectrum: with ``condition=None``, the DeepOBS one: 90 % of the eigenvalues from
    ``U(0, 1)`` and 10 % from ``U(30, 60)`` (90 and 10 for ``dim=100``), so a few steep
    directions and many flat ones. With ``condition=κ``, eigenvalues log-spaced in
    ``[1, κ]``. ``rotate`` applies a random rotation ``Q`` (Haar measure on SO(dim)) so the
    axes are not the eigenvectors; without it ``H`` is diagonal.

    Reference: Schneider, Balles, Hennig, "DeepOBS: A Deep Learning Optimizer Benchmark
    Suite", ICLR 2019.
    """
    rng = np.random.default_rng(seed)
    if condition is None:
        n_steep = max(dim // 10, 1)
        eigenvalues = np.concatenate(
            [rng.uniform(0.0, 1.0, dim - n_steep), rng.uniform(30.0, 60.0, n_steep)]
        )
    else:
        if condition < 1:
            raise ValueError(f"condition must be >= 1, got {condition}")
        eigenvalues = np.geomspace(1.0, condition, dim)
    q = special_ortho_group.rvs(dim, random_state=rng) if rotate and dim > 1 else np.eye(dim)
    hessian = q.T @ np.diag(eigenvalues) @ q
    return Quadratic(((hessian + hessian.T) / 2).astype(np.float32), eigenvalues.astype(np.float32))


def add_label_noise(ds: Dataset, fraction: float, *, seed: int) -> Dataset:
    """Give ``fraction`` of the training examples a different, uniformly drawn wrong label.

    The test set is unchanged. ``meta["label_noise"]`` records the fraction, the seed and
    how many labels were changed (the same seed changes the same examples).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if ds.num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, {ds.name} has {ds.num_classes}")
    rng = np.random.default_rng(seed)
    n = len(ds.y_train)
    changed = rng.choice(n, size=round(fraction * n), replace=False)
    # Adding 1..K-1 modulo K always gives a different class, uniformly.
    shift = rng.integers(1, ds.num_classes, size=changed.size)
    y_train = ds.y_train.copy()
    y_train[changed] = (y_train[changed] + shift) % ds.num_classes
    return ds.replace(
        name=f"{ds.name}+noise{fraction:g}",
        y_train=y_train.astype(np.int32),
        meta={**ds.meta, "label_noise": dict(fraction=fraction, seed=seed, changed=changed.size)},
    )


def duplicate(ds: Dataset, factor: float, *, seed: int) -> Dataset:
    """Repeat the training set ``factor`` times (a fractional part repeats a random subset).

    The result holds every training example ``⌊factor⌋`` times plus a random
    ``(factor − ⌊factor⌋)`` share of them once more, shuffled. The test set is unchanged.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    rng = np.random.default_rng(seed)
    n = len(ds.y_train)
    whole = int(factor)
    extra = rng.choice(n, size=round((factor - whole) * n), replace=False)
    order = rng.permutation(np.concatenate([np.tile(np.arange(n), whole), extra]))
    return ds.replace(
        name=f"{ds.name}+dup{factor:g}",
        x_train=ds.x_train[order],
        y_train=ds.y_train[order],
        meta={**ds.meta, "duplicate": {"factor": factor, "seed": seed}},
    )
