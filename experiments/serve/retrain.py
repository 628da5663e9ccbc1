"""Retraining in a separate worker process; the trained version enters as the next canary.

The server starts :func:`run_job` in a fresh process (``multiprocessing``, spawn) and never
waits for it. The job trains a challenger on the validated feedback (ids ≤ the job's
``max_id``) plus the replay buffer, with the continual loop's search (an optimizer ×
learning-rate population warm-started from the stable weights, ``engine.fit_population``;
the best on held-out feedback wins, ``tuning.choose``), writes its weights file, and then in
ONE transaction records the model (``candidate``), its runs, the feedback it consumed
(``trained``), the new replay buffer and the rollout of the new version at the first stage.
A failed job records ``retrain_job.status = "failed"`` and an ``events`` row.

Fault injection (tests, demos): ``fault="random"`` registers a model with random weights
instead of training one, the deliberately worse canary the rollout must roll back.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np
from optlab.experiments import engine
from optlab.experiments.continual import strategies, trainer
from optlab.experiments.continual.loop import Loop, LoopConfig
from optlab.experiments.continual.registry import load_npz, save_npz
from optlab.experiments.data import split_validation
from optlab.experiments.report import peak_memory_mb

from . import rollout as rollouts
from .store import ServeStore

FAULTS = ("random",)
MIN_FEEDBACK_FOR_VALIDATION = 10


def replay_buffer(store: ServeStore, loop: Loop) -> strategies.ReplayBuffer:
    """The serving buffer if a retrain saved one, else the continual run's last buffer."""
    name = store.get_state("serve_buffer") or store.get_state("checkpoint")["file"]
    arrays = load_npz(store.root / name)
    return strategies.ReplayBuffer(
        arrays["buffer_x"], arrays["buffer_y"], int(arrays["buffer_seen"]),
        loop.config.buffer_size,
    )  # fmt: skip


def split_feedback(x, y, seed: int, fraction: float):
    """``(train_x, train_y, val_x, val_y)``: a ``fraction`` of the feedback held out to pick
    the challenger (none below :data:`MIN_FEEDBACK_FOR_VALIDATION` samples)."""
    count = round(fraction * len(y)) if len(y) >= MIN_FEEDBACK_FOR_VALIDATION else 0
    if count == 0:
        return x, y, x[:0], y[:0]
    idx = np.arange(len(y))
    kept, _, held, _ = split_validation(idx, idx, count, seed=seed, stratify=False)
    return x[kept], y[kept], x[held], y[held]


def run_job(run_dir: str, job: dict) -> None:
    """Train, register and start the rollout of one challenger (see the module docstring)."""
    run = Path(run_dir)
    store = ServeStore(run)
    try:
        _train_and_register(run, store, job)
    except Exception as err:
        with store.transaction():
            store.set_state("retrain_job", {**job, "status": "failed", "error": str(err)})
            store.add_event(
                None,
                "retrain_failed",
                {"job": job["id"], "error": str(err), "traceback": traceback.format_exc()},
            )
        raise
    finally:
        store.close()


def _train_and_register(run: Path, store: ServeStore, job: dict) -> None:
    config = LoopConfig.from_json(run / "config.json")
    loop = Loop(config, run)
    try:
        current = rollouts.Rollout.from_dict(store.get_state("rollout"))
        stable_weights = loop.load_weights(current.stable)
        shape = loop.reference[0].shape[1:]
        x, y = store.arrays("validated", job["max_id"], shape)
        buffer = replay_buffer(store, loop)
        start = time.perf_counter()
        if job.get("fault") == "random":
            model = trainer.make_model(
                shape, loop.num_classes, config.widths, config.dropout, seed=config.seed + 999
            )
            weights, optimizer, hparams, metrics, runs = (
                trainer.weights_of(model), "none", {"fault": "random weights"}, {}, []
            )  # fmt: skip
        else:
            train_x, train_y, val_x, val_y = split_feedback(x, y, config.seed + job["id"], 0.2)
            if len(val_y) == 0:  # too little feedback: pick on the continual run's canary set
                val_x, val_y = loop.canary_set
            data_x, data_y = strategies.training_set(config.strategy, train_x, train_y, buffer)
            if len(data_y) == 0:
                raise ValueError("nothing to train on: no validated feedback and no buffer")
            best, runs = loop._search(  # noqa: SLF001 - the continual loop's one search
                10_000 + job["id"], stable_weights, data_x, data_y, val_x, val_y,
                epochs=config.epochs, loss=engine.Classification(),
            )  # fmt: skip
            _, optimizer, hparams, metrics, weights, _ = best
        wall = time.perf_counter() - start
        metrics = {
            **metrics,
            "feedback_samples": len(y),
            "canary_set_accuracy": trainer.accuracy(loop.graphdef, weights, *loop.canary_set),
        }
        version = store.next_version()
        save_npz(store.weights_path(version), trainer.flatten(weights))
        buffer = buffer.add(x, y, np.random.default_rng([config.seed, 5, job["id"]]))
        buffer_file = f"state/serve-buffer-{job['id']}.npz"
        save_npz(
            run / buffer_file,
            {"buffer_x": buffer.x, "buffer_y": buffer.y, "buffer_seen": np.int64(buffer.seen)},
        )
        with store.transaction():
            current = rollouts.Rollout.from_dict(store.get_state("rollout"))
            store.add_model(
                version,
                parent=current.stable,
                user=None,
                status="candidate",
                optimizer=optimizer,
                hparams=hparams,
                metrics=metrics,
                wall_time_s=wall,
                peak_memory_mb=peak_memory_mb(),
                reason=f"serve retrain {job['id']}: {job['reason']}",
            )
            for method, args in runs:
                getattr(store, method)(*args)
            store.conn.execute(
                "UPDATE feedback SET status = 'trained' WHERE status = 'validated' AND id <= ?",
                (job["max_id"],),
            )
            new = rollouts.start(current, version, store.max_feedback_id())
            store.set_state("rollout", new.to_dict())
            store.set_state("serve_buffer", buffer_file)
            store.set_state("retrain_job", {**job, "status": "done", "version": version})
            store.add_event(
                None,
                "rollout",
                {"action": "start", "rollout": new.id, "stable": new.stable, "canary": version,
                 "from_share": 0.0, "to_share": new.share, "reason": job["reason"]},
            )  # fmt: skip
    finally:
        loop.registry.close()
