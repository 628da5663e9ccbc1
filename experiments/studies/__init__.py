"""``optlab study NAME``: small, self-contained studies of how optimizers behave.

Each study is one module with ``run(out=None, quick=False, seeds=None) -> dict`` that writes a
run folder (config.json, metrics.jsonl, summary.md, PNG plots) and returns its numbers.
Adding a study is one line in ``STUDIES``; :mod:`experiments.studies.cli` is the command line.
"""

from __future__ import annotations

import importlib

SIZES = ("test", "quick", "cpu", "full")  # the training studies' sizes (``--size``)

# study name -> (module, one-line description)
STUDIES: dict[str, tuple[str, str]] = {
    "surfaces": (
        "optlab.experiments.studies.surfaces",
        "paths on Rosenbrock, Beale, a saddle and a ravine; momentum and learning rate sweep",
    ),
    "conditioning": (
        "optlab.experiments.studies.conditioning",
        "ill-conditioned quadratic, axis-aligned vs rotated: do diagonal preconditioners win?",
    ),
    "noise-redundancy": (
        "optlab.experiments.studies.noise_redundancy",
        "label noise and duplicated data: convergence and train-test gap per optimizer",
    ),
    "batch-regimes": (
        "optlab.experiments.studies.batch_regimes",
        "batch GD vs SGD vs mini-batches: loss against epochs and against wall time",
    ),
    "lr-sensitivity": (
        "optlab.experiments.studies.lr_sensitivity",
        "final loss over a log learning-rate grid: is Adam less sensitive to tuning?",
    ),
    "generalisation": (
        "optlab.experiments.studies.generalisation",
        "train-test gap of adaptive methods vs SGD with momentum on MNIST/Fashion-MNIST",
    ),
    "architectures": (
        "optlab.experiments.studies.architectures",
        "the optimizer comparison on VGG16, LSTM/GRU (sequential MNIST) and a Transformer",
    ),
}


def load(name: str):
    """The module of study ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid studies: {', '.join(sorted(STUDIES))}")
    return importlib.import_module(STUDIES[name][0])
