"""Monitoring: accuracy and drift over time, alerts, and the plots of a run.

Per user the loop records the deployed model's *prequential* accuracy on the user's held-out
samples (measured before anything trains on that user), its accuracy on the fixed canary set,
and the drift test's smallest corrected p-value. Alerts:

* ``quarantine``     the batch failed validation
* ``drift``          drift detected (corrected p < alpha)
* ``accuracy_drop``  prequential accuracy < accuracy at deployment − ``max_drop``
* ``canary_drop``    canary accuracy < the first model's canary accuracy − ``max_drop``
"""

from __future__ import annotations

import numpy as np
from optlab.experiments import report


def alerts(
    *,
    quarantined: bool,
    drift: bool,
    accuracy: float | None,
    deployed_accuracy: float | None,
    canary_accuracy: float,
    baseline_canary_accuracy: float,
    max_drop: float,
) -> list[str]:
    out = []
    if quarantined:
        out.append("quarantine")
    if drift:
        out.append("drift")
    if accuracy is not None and deployed_accuracy is not None:
        if accuracy < deployed_accuracy - max_drop:
            out.append("accuracy_drop")
    if canary_accuracy < baseline_canary_accuracy - max_drop:
        out.append("canary_drop")
    return out


def plot_timeline(records: list[dict], events: list[dict], path) -> None:
    """Canary and prequential accuracy, and drift p-values, over users; retrains marked."""
    users = [r["user"] for r in records]
    figure = report.new_figure((8, 5.5))
    ax, bx = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    ax.plot(users, [r["canary_accuracy"] for r in records], "o-", label="canary set (fixed)")
    stream = [
        (r["user"], r["stream_accuracy"]) for r in records if r["stream_accuracy"] is not None
    ]
    if stream:
        ax.plot(*zip(*stream, strict=True), "s--", label="new user's held-out (before training)")
    style = {"promoted": ("g", "promoted"), "rolled_back": ("r", "rolled back")}
    labelled = set()
    for ev in events:
        if ev["kind"] == "canary":
            color, label = style["promoted" if ev["promote"] else "rolled_back"]
            ax.axvline(
                ev["user"], color=color, alpha=0.4, label=None if label in labelled else label
            )
            labelled.add(label)
        if ev["kind"] == "quarantine":
            ax.axvline(
                ev["user"], color="k", ls=":", label=None if "q" in labelled else "quarantined"
            )
            labelled.add("q")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("deployed model over the stream")
    p = [(r["user"], max(r["min_p_value"], 1e-12)) for r in records if r["min_p_value"] is not None]
    if p:
        bx.semilogy(*zip(*p, strict=True), "o-")
    bx.set_ylabel("drift p (Holm)")
    bx.set_xlabel("user")
    report.save_figure(figure, path, dpi=110)


def plot_accuracy_matrix(R: np.ndarray, task_names: list[str], path, title: str = "") -> None:
    figure = report.new_figure((1.2 + 0.7 * len(R), 1.0 + 0.6 * len(R)))
    ax = figure.add_subplot()
    image = report.annotated_heatmap(ax, R, fontsize=7)
    ax.set_xticks(range(len(task_names)), task_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(R)), [f"after {t}" for t in task_names], fontsize=7)
    ax.set_xlabel("evaluated on task i")
    ax.set_title(title or "R[j, i]", fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046)
    report.save_figure(figure, path, dpi=110)
