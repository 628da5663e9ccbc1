"""The engine's checkpoint I/O: what identifies a run, and opening its checkpoint folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from optlab.experiments import checkpoint
from optlab.experiments.engine import splits as splits_lib
from optlab.experiments.engine.config import TrainConfig


def objective_fingerprint(objective) -> dict[str, Any]:
    """The objective's type and static fields (its array fields are data, not identity)."""
    static = {
        field.name: getattr(objective, field.name)
        for field in dataclasses.fields(objective)
        if not field.metadata.get("pytree_node", True)
    }
    return {"type": type(objective).__name__, **static}


def run_fingerprint(model_name: str, splits, config: TrainConfig, objective, on_non_finite: str,
                    extra: Mapping[str, Any] | None = None) -> dict:  # fmt: skip
    """What must match to resume: model class, config, objective, data, policy, ``extra``.

    ``extra`` is the caller's description of what the engine cannot see inside ``tx``
    (optimizer name and hyperparameters) or the model (its options). ``data_parallel`` is
    left out: a run may resume on another number of devices.
    """
    train = {k: v for k, v in dataclasses.asdict(config).items() if k != "data_parallel"}
    return checkpoint.fingerprint(
        model=model_name, train=train, objective=objective_fingerprint(objective),
        data=splits_lib.fingerprint(splits), on_non_finite=on_non_finite, user=dict(extra or {}),
    )  # fmt: skip


def open_checkpointer(checkpoint_dir, checkpoint_every: int, keep: int, resume: bool):
    """The :class:`~experiments.checkpoint.Checkpointer` (None without a folder), checked
    before any compilation: a folder holding checkpoints needs ``resume``."""
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume needs a checkpoint folder to resume from")
        return None
    checkpointer = checkpoint.Checkpointer(
        checkpoint.CheckpointConfig(checkpoint_dir, every=checkpoint_every, keep=keep)
    )
    if not resume and (saved := checkpointer.steps()):
        checkpointer.close()
        raise ValueError(
            f"checkpoint folder {checkpointer.directory} already holds checkpoints (epochs "
            f"{saved}); resume to continue that run (--resume), or use an empty folder"
        )
    return checkpointer
