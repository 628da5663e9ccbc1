"""Datasets for optlab: ``load(name)`` returns a verified :class:`Dataset`.

``digits`` (embedded in scikit-learn), ``mnist`` and ``fashion_mnist`` (original IDX
files) and ``cifar10`` (its Python pickles), each checked against its published SHA-256
(CIFAR-10 extracted batches: MD5); plus synthetic data in :mod:`experiments.data.synthetic`
and the one seeded, stratified way to hold out a validation set or take a subset
(:func:`split_validation`, :func:`stratified_subset`).
See :mod:`experiments.data.loading` for where files are looked for and downloaded to.
"""

from optlab.experiments.data.dataset import DataError, Dataset
from optlab.experiments.data.loading import available, load, resolve_data_dir
from optlab.experiments.data.split import split_validation, stratified_subset
from optlab.experiments.data.synthetic import (
    add_label_noise,
    duplicate,
    ill_conditioned_quadratic,
    make_classification,
    make_regression,
)

__all__ = [
    "DataError",
    "Dataset",
    "add_label_noise",
    "available",
    "duplicate",
    "ill_conditioned_quadratic",
    "load",
    "make_classification",
    "make_regression",
    "resolve_data_dir",
    "split_validation",
    "stratified_subset",
]
