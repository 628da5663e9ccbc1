"""The published numbers the reproductions compare against, as data, with their source.

Transcribed from ``../shared/reference/papers.md`` (values read off the papers' figures are
digitized estimates, marked ``≈`` there; tables are exact). ``tests/experiments/
test_papers.py`` re-reads that file and checks every number here against it.

A :class:`PublishedTable` is one figure or table: rows are curves (or optimizers), columns
are the x values (epochs, or learning rates for ADADELTA's Table 1). A cell is a float,
``None`` (no number given), or :class:`Above` (the paper says only "above this value").
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Above:
    """A bound read off a figure: the curve lies above ``value`` at this x."""

    value: float

    def __str__(self) -> str:
        return f">{self.value:g}"


Cell = float | Above | None


@dataclasses.dataclass(frozen=True)
class PublishedTable:
    """Numbers from one figure or table of a paper.

    Attributes:
      key: short identifier, e.g. ``"adam-fig1"``.
      source: paper, figure/table and how the numbers were obtained.
      metric: what the numbers measure, e.g. ``"training NLL"``.
      x_label: what the columns are (``"epoch"``, ``"learning rate"``, ...).
      x: the column values.
      rows: curve label → one cell per column.
      digitized: True when the values were read off a plot (estimates).
    """

    key: str
    source: str
    metric: str
    x_label: str
    x: tuple
    rows: dict[str, tuple[Cell, ...]]
    digitized: bool = True

    def __post_init__(self):
        for label, cells in self.rows.items():
            if len(cells) != len(self.x):
                raise ValueError(f"{self.key}: row {label!r} has {len(cells)} cells for {self.x}")

    def value(self, label: str, x) -> Cell:
        """The cell of curve ``label`` at column ``x`` (None when the paper gives none)."""
        return self.rows[label][self.x.index(x)] if x in self.x else None

    def points(self, label: str) -> list[tuple[object, float]]:
        """``(x, value)`` of the finite numeric cells of ``label`` (bounds left out)."""
        return [
            (x, v)
            for x, v in zip(self.x, self.rows[label], strict=True)
            if isinstance(v, float) and math.isfinite(v)
        ]


def format_cell(cell: Cell) -> str:
    """``0.257``, ``>0.7`` or ``–`` (no number)."""
    if cell is None:
        return "–"
    return str(cell) if isinstance(cell, Above) else f"{cell:.3g}"


_ADAM = "Kingma & Ba, Adam, ICLR 2015 (arXiv:1412.6980v9)"

ADAM_FIG1 = PublishedTable(
    key="adam-fig1",
    source=f"{_ADAM}, Fig. 1 left: L2-regularised logistic regression on MNIST, digitized",
    metric="training NLL",
    x_label="epoch",
    x=(1, 5, 10, 20, 30, 45),
    rows={
        "Adam": (0.384, 0.299, 0.280, 0.263, 0.257, 0.257),
        "SGD Nesterov": (0.380, 0.314, 0.294, 0.275, 0.267, 0.265),
        # "> 0.7 until ≈ epoch 8"
        "AdaGrad": (Above(0.7), Above(0.7), 0.646, 0.542, 0.492, 0.459),
    },
)

ADAM_FIG2A = PublishedTable(
    key="adam-fig2a",
    source=f"{_ADAM}, Fig. 2a: MLP 784-1000-1000-10 ReLU with dropout on MNIST, digitized",
    metric="training cost",
    x_label="epoch",
    x=(5, 10, 25, 50, 100, 150, 200),
    rows={
        "Adam": (0.116, 0.072, 0.036, 0.021, 0.013, 0.0082, 0.0068),
        "SGD Nesterov": (0.128, 0.086, 0.047, 0.030, 0.019, 0.013, 0.011),
        "RMSProp": (0.107, 0.068, 0.039, 0.027, 0.020, 0.016, 0.014),
        "AdaDelta": (Above(0.1), 0.111, 0.061, 0.038, 0.023, 0.016, 0.013),
        "AdaGrad": (0.114, 0.073, 0.046, 0.033, 0.026, 0.021, 0.018),
    },
)

ADAM_FIG2B = PublishedTable(
    key="adam-fig2b",
    source=f"{_ADAM}, Fig. 2b: the same MLP without dropout, cross-entropy + L2, digitized",
    metric="training cost",
    x_label="epoch",
    x=(1, 5, 10, 15, 20, 25),
    rows={"Adam": (0.125, 0.014, 1.0e-4, 1.5e-5, 8e-6, 5.8e-6)},
)

ADAM_FIG3 = PublishedTable(
    key="adam-fig3",
    source=f"{_ADAM}, Fig. 3: CNN c64-c64-c128-1000 on CIFAR-10, digitized",
    metric="training cost",
    x_label="epoch",
    x=(1, 2, 3, 10, 15, 20, 45),
    rows={
        "Adam": (1.16, 0.80, 0.63, 0.049, 1.2e-3, 6.9e-4, 4.0e-4),
        "SGD Nesterov": (2.07, 1.16, 0.76, 0.108, 3.2e-3, 1.0e-3, 5.4e-4),
        "Adam+dropout": (1.24, 0.87, 0.70, 0.27, 0.15, 0.091, 0.024),
        "SGDN+dropout": (1.72, 1.20, 0.92, 0.39, 0.24, 0.15, 0.034),
        "AdaGrad": (1.58, 1.36, 1.22, 0.91, 0.83, 0.77, 0.62),
        "AdaGrad+dropout": (1.73, 1.58, 1.50, 1.19, 1.06, 0.99, 0.79),
    },
)

ADAM_FIG4 = PublishedTable(
    key="adam-fig4",
    source=(
        f"{_ADAM}, Fig. 4 / Sec. 6.4: VAE (500 softplus, 50-d latent) on MNIST, "
        "β1 = 0.9, β2 = 0.9999, α = 1e-3, loss after 100 epochs, digitized"
    ),
    metric="training loss (−ELBO, nats)",
    x_label="bias correction",
    x=("with", "without"),
    rows={"β1=0.9, β2=0.9999, α=1e-3": (99.0, 111.0)},
)

_ZEILER = "Zeiler, ADADELTA, arXiv:1212.5701, 2012"

ADADELTA_FIG1 = PublishedTable(
    key="adadelta-fig1",
    source=f"{_ZEILER}, Fig. 1: MNIST, ReLU 500-300 MLP, minibatch 100, digitized",
    metric="test error (%)",
    x_label="epoch",
    x=(1, 6, 10, 20, 50),
    rows={
        "SGD": (5.95, 2.51, 2.06, 1.92, 1.78),
        "Momentum": (3.76, 2.03, 1.68, 1.76, 1.41),
        "Adagrad": (3.11, 1.79, 1.67, 1.64, 1.60),
        "ADADELTA": (3.47, 1.83, 1.71, 1.48, 1.50),
    },
)

ADADELTA_TABLE1 = PublishedTable(
    key="adadelta-table1",
    source=f"{_ZEILER}, Table 1: test error (%) after 6 epochs by learning rate",
    metric="test error (%)",
    x_label="learning rate",
    x=(1e0, 1e-1, 1e-2, 1e-3, 1e-4),
    rows={
        "SGD": (2.26, 2.51, 7.02, 17.01, 58.10),
        "Momentum": (89.68, 2.03, 2.68, 6.98, 16.98),
        "Adagrad": (43.76, 2.82, 1.79, 5.21, 12.59),
    },
    digitized=False,
)

ADADELTA_TABLE2 = PublishedTable(
    key="adadelta-table2",
    source=f"{_ZEILER}, Table 2: ADADELTA test error (%) after 6 epochs, best (ε, ρ)",
    metric="test error (%)",
    x_label="(ε, ρ)",
    x=((1e-6, 0.95),),
    rows={"ADADELTA": (1.83,)},
    digitized=False,
)

ALL: dict[str, PublishedTable] = {
    table.key: table
    for table in (
        ADAM_FIG1,
        ADAM_FIG2A,
        ADAM_FIG2B,
        ADAM_FIG3,
        ADAM_FIG4,
        ADADELTA_FIG1,
        ADADELTA_TABLE1,
        ADADELTA_TABLE2,
    )
}
